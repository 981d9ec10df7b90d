//! A checkout SIGKILLed under load, with clients that retry every request under its
//! Idempotency-Key until it is accepted (as the API tells them to): a key the dead
//! instance had claimed blocks its retries at most for the claim's lease (publish deadline
//! plus margin), and the log holds exactly the events of the accepted requests — each
//! once, whether the dead instance had published it or not (a republished copy carries the
//! same event id).
use crate::common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use schemas::Codec;
use serde_json::{json, Value};

const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

fn spawn_checkout(port: u16, topic: &str, database_url: &str) -> common::Child {
    let brokers = common::kafka().brokers;
    let listen = format!("127.0.0.1:{port}");
    common::Child::spawn(
        &[
            "checkout",
            "--listen",
            &listen,
            "--topic",
            topic,
            "--database-url",
            database_url,
            "--publish-timeout",
            "2s",
            "--auth-tokens",
            &common::tokens_file(),
        ],
        &[("ORDERFLOW_BROKERS", &brokers)],
    )
}

async fn wait_healthy(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/healthz")).send().await.map(|r| r.status().as_u16()).ok() != Some(200) {
        assert!(Instant::now() < deadline, "the checkout did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_killed_under_load_blocks_retries_at_most_its_lease_and_leaves_one_event_per_accepted_request() {
    let topic = common::fresh_topic("checkout-crash", 3).await;
    let database_url = common::fresh_database().await;
    let port = common::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = orderflow::load::http_client_with(Some(&common::token(common::ALL_SCOPES)));
    let mut checkout = spawn_checkout(port, &topic, &database_url);
    wait_healthy(&client, &base).await;

    // (event id, when accepted) per accepted request; the most any 409 asked to wait.
    let accepted: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let longest_retry_after: Arc<Mutex<u64>> = Arc::default();
    // Per key that was answered 409 at least once: from its first 409 to its 202.
    let blocked: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let stop_at = Instant::now() + Duration::from_secs(6);
    let mut clients = Vec::new();
    for c in 0..8 {
        let (client, base, accepted, longest) =
            (client.clone(), base.clone(), accepted.clone(), longest_retry_after.clone());
        let blocked = blocked.clone();
        clients.push(tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < stop_at {
                n += 1;
                let key = format!("client-{c}-order-{n}");
                let body = json!({"customer_id": key, "currency": "EUR",
                    "lines": [{"sku": "SKU-1", "quantity": 1, "unit_price_minor": 100}], "ship_to": {"country": "DE"}});
                let give_up = Instant::now() + Duration::from_secs(60);
                let mut first_409: Option<Instant> = None;
                loop {
                    assert!(Instant::now() < give_up, "{key} was never accepted");
                    let sent =
                        client.post(format!("{base}/orders")).header("idempotency-key", &key).json(&body).send().await;
                    let Ok(response) = sent else {
                        tokio::time::sleep(Duration::from_millis(50)).await; // the checkout is down
                        continue;
                    };
                    let status = response.status().as_u16();
                    let retry_after =
                        response.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                    let answer: Value = response.json().await.unwrap_or(Value::Null);
                    match status {
                        202 => {
                            let id = answer["event_id"].as_str().expect("event id").to_string();
                            accepted.lock().expect("accepted").push((id, Instant::now()));
                            if let Some(at) = first_409 {
                                blocked.lock().expect("blocked").push(at.elapsed());
                            }
                            break;
                        }
                        409 => {
                            first_409.get_or_insert_with(Instant::now);
                            let wait = retry_after.expect("a 409 says when to retry");
                            {
                                let mut longest = longest.lock().expect("longest");
                                *longest = (*longest).max(wait);
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        503 => tokio::time::sleep(Duration::from_millis(100)).await,
                        other => panic!("{key}: unexpected {other}: {answer}"),
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = checkout.0.kill(); // SIGKILL: requests in flight die with it
    let _ = checkout.0.wait();
    let mut checkout = spawn_checkout(port, &topic, &database_url);
    wait_healthy(&client, &base).await;
    for c in clients {
        c.await.expect("client");
    }
    let _ = checkout.0.kill();

    let accepted = accepted.lock().expect("accepted").clone();
    let lease = PUBLISH_TIMEOUT + producers::idempotency::LEASE_MARGIN;
    // A key the dead instance held answers 409 until its lease ends, then is taken over.
    let blocked = blocked.lock().expect("blocked").clone();
    let slowest = blocked.iter().max().copied().unwrap_or_default();
    // The slack covers the clients' 200 ms pacing and a loaded machine; the bound is the lease,
    // not the 60 s a dead claim used to hold.
    assert!(slowest <= lease + Duration::from_secs(2), "a key was blocked {slowest:?} (lease {lease:?})");
    let longest_retry_after = *longest_retry_after.lock().expect("longest");
    assert!(longest_retry_after <= lease.as_secs(), "Retry-After {longest_retry_after} s exceeds the lease");

    let ids: BTreeSet<String> = accepted.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids.len(), accepted.len(), "an event id was answered twice");
    let codec = Codec::builtin();
    let records = common::read_topic(&common::kafka(), &topic, ids.len());
    let logged: BTreeSet<String> =
        records.iter().map(|r| codec.decode(&r.payload).expect("decodes").envelope().event_id.to_string()).collect();
    assert_eq!(logged, ids, "the log holds exactly the accepted requests' events");
    eprintln!(
        "{} requests accepted, {} records in the log ({} republished copies); {} keys answered 409 after the crash, the longest blocked {slowest:?}; longest Retry-After {longest_retry_after} s",
        ids.len(),
        records.len(),
        records.len() - logged.len(),
        blocked.len()
    );
}
