//! A streaming replica of PostgreSQL (a pair of servers of the test's own, made by
//! `infra/local/pg-pair`, the replica applying WAL 200 ms late): the query API served from
//! it answers `after=` only once the replica holds the rows (the offsets replicate with
//! them), reports its lag, and, promoted after the primary stops, carries the pipeline on
//! with every view exact.
use crate::common;

use std::time::{Duration, Instant};

use projections::store::Store;
use projections::ProjectionKind;
use serde_json::json;

fn pg_pair(args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/infra/local/pg-pair");
    let output = std::process::Command::new(script).args(args).output().expect("run pg-pair");
    assert!(output.status.success(), "pg-pair {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Two free consecutive ports (the pair's primary and replica).
fn two_free_ports() -> u16 {
    loop {
        let port = common::free_port();
        if port < 65_000 && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

struct Pair(String);

impl Drop for Pair {
    fn drop(&mut self) {
        pg_pair(&["down", &self.0]);
    }
}

fn start_members(kafka: &infra::KafkaSettings, store: &Store, topic: &str) -> Vec<consumers::MemberHandle> {
    ProjectionKind::ALL
        .into_iter()
        .map(|kind| {
            let config = common::member_config(kind, topic, &store.group(kind));
            consumers::member::run_member(config, kafka, store.clone()).expect("member")
        })
        .collect()
}

fn projection_groups(store: &Store, topic: &str) -> Vec<(String, String)> {
    ProjectionKind::ALL.into_iter().flat_map(|kind| orderflow::kit::reading(kind, &store.group(kind), topic)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_on_a_replica_answers_only_once_it_holds_the_rows_and_the_promoted_replica_carries_on_exactly() {
    let name = format!("r{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let port = two_free_ports();
    let exports = pg_pair(&["up", &name, &port.to_string(), "-c", "recovery_min_apply_delay=200ms"]);
    let _pair = Pair(name.clone());
    let url = |var: &str| {
        exports.lines().find_map(|l| l.strip_prefix(&format!("export {var}="))).expect("exported").to_string()
    };
    let (primary_url, replica_url) = (url("ORDERFLOW_PAIR_PRIMARY_URL"), url("ORDERFLOW_PAIR_REPLICA_URL"));

    let kafka = common::kafka();
    let topic = common::fresh_topic("replica", 3).await;
    let prefix = common::fresh_group_prefix();
    let primary = Store::connect(&primary_url).await.expect("primary").with_group_prefix(&prefix).expect("prefix");
    let mut members = start_members(&kafka, &primary, &topic);
    let processes = common::Processes::start(&primary, &topic, Duration::from_secs(900));
    let checkout = common::TestCheckout::spawn(&kafka, &topic, Duration::from_secs(5)).await;

    // The replica gets the catalog from the primary; the API reads it, never migrating.
    let deadline = Instant::now() + Duration::from_secs(30);
    let replica = loop {
        match Store::connect(&replica_url).await {
            Ok(store) => break store.with_group_prefix(&prefix).expect("prefix"),
            Err(e) => assert!(Instant::now() < deadline, "the replica never had the catalog: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let api = common::ServeApi::spawn(&replica_url, &topic, &prefix, Duration::from_secs(10)).await;
    let lag = replica.reads().replica_lag().await.expect("lag");
    assert!(lag.is_some(), "a replica reports its lag");
    assert_eq!(primary.reads().replica_lag().await.expect("lag"), None, "the primary is no replica");

    let (status, answer) = checkout
        .post("/inventory/SKU-R/adjustments", &json!({"warehouse": "BER-1", "delta": 1000, "reason": "received"}), None)
        .await;
    assert_eq!(status, 202, "{answer}");
    let place = || async {
        let body = json!({"customer_id": "c-r", "currency": "EUR", "ship_to": {"country": "DE"},
            "lines": [{"sku": "SKU-R", "quantity": 1, "unit_price_minor": 900}]});
        let (status, answer) = checkout.post("/orders", &body, None).await;
        assert_eq!(status, 202, "{answer}");
        (answer["order_id"].as_str().expect("id").to_string(), answer["after"].as_str().expect("after").to_string())
    };

    // Under load: every read with after= shows the order it was given; the same read
    // without after= finds it missing at once (the replica is behind).
    let (mut read_back, mut missing_without_after, mut slowest) = (0, 0, Duration::ZERO);
    for _ in 0..20 {
        let placed = futures::future::join_all((0..10).map(|_| place())).await;
        let api = &api;
        let reads = futures::future::join_all(placed.iter().map(|(order, after)| async move {
            let (status, _) = api.get(&format!("/orders/{order}")).await;
            let started = Instant::now();
            let (with_after, body) = api.get(&format!("/orders/{order}?after={after}")).await;
            (status, with_after, body, started.elapsed())
        }))
        .await;
        for ((order, _), (without, with_after, body, took)) in placed.iter().zip(reads) {
            assert_eq!(with_after, 200, "{order}: {body}");
            assert_eq!(body["order_id"].as_str(), Some(order.as_str()), "{body}");
            read_back += 1;
            missing_without_after += usize::from(without == 404);
            slowest = slowest.max(took);
        }
    }
    eprintln!(
        "replica: {read_back} reads with after= exact; {missing_without_after} missing without it; slowest {slowest:?}"
    );
    assert!(missing_without_after > 0, "the replica was never behind: the test proves nothing");
    // Analysts log in to the replica under their own role and read the views there.
    let analyst_url = replica_url.replacen("postgres@", "orderflow_analyst@", 1);
    let mut analyst = <sqlx::PgConnection as sqlx::Connection>::connect(&analyst_url).await.expect("analyst logs in");
    let paid: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM order_payments").fetch_one(&mut analyst).await.expect("view");
    assert!(paid > 0, "the analyst sees the replica's rows");
    let refused = sqlx::query("SELECT COUNT(*) FROM consumer_offsets").fetch_one(&mut analyst).await;
    assert!(refused.is_err(), "and nothing but the views");

    // The primary stops; the replica is promoted and the members move to it.
    processes.settle(&primary, &projection_groups(&primary, &topic)).await;
    processes.stop().await;
    for member in members.drain(..) {
        member.stop().await.expect("stop");
    }
    pg_pair(&["promote", &name]);
    let promoted = Store::connect(&replica_url).await.expect("promoted").with_group_prefix(&prefix).expect("prefix");
    assert_eq!(promoted.reads().replica_lag().await.expect("lag"), None);
    members = start_members(&kafka, &promoted, &topic);
    let processes = common::Processes::start(&promoted, &topic, Duration::from_secs(900));
    let after: Vec<(String, String)> = futures::future::join_all((0..50).map(|_| place())).await;
    processes.settle(&promoted, &projection_groups(&promoted, &topic)).await;
    let (status, body) = api.get(&format!("/orders/{}?after={}", after[49].0, after[49].1)).await;
    assert_eq!(status, 200, "the API reads the promoted server: {body}");
    let calm = common::calm_rebuild(&kafka, &topic).await.reads().snapshot().await.expect("calm");
    let got = promoted.reads().snapshot().await.expect("promoted");
    common::assert_same_projection(&got, &calm, "after the promotion");
    assert_eq!(got.payments.len(), 250);
    processes.stop().await;
    for member in members {
        member.stop().await.expect("stop");
    }
}
