//! A member killed at each point of its batch (before the transaction, after the
//! projection write, after the offset update, after commit) and restarted leaves the views
//! exactly as a calm rebuild produces them: no lost and no doubled effect. The member runs
//! as a real child process built with the `fault-injection` feature.
use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use consumers::member::run_member;
use consumers::GroupProtocol;
use orderflow::load::{self, LoadConfig};
use projections::store::Store;
use projections::ProjectionKind;

fn spawn_member(
    topic: &str,
    database_url: &str,
    group: &str,
    protocol: GroupProtocol,
    fault: Option<(&str, &str)>,
) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_orderflow"));
    command.args(["consume", "payment", "--topic", topic, "--group", group, "--batch-max", "40"]).args([
        "--group-protocol",
        protocol.name(),
        "--max-poll-interval",
        "10s",
    ]);
    if protocol == GroupProtocol::Classic {
        // Under the consumer protocol the broker's group.consumer.session.timeout.ms rules.
        command.args(["--session-timeout", "6s"]);
    }
    command
        .env("ORDERFLOW_BROKERS", common::kafka().brokers)
        .env("ORDERFLOW_DATABASE_URL", database_url)
        .env("RUST_LOG", "info")
        .env_remove("ORDERFLOW_FAULT_POINT")
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(format!("/tmp/orderflow-test-{group}-{}.log", fault.is_some()))
                .map_or(Stdio::null(), Stdio::from),
        );
    if let Some((point, action)) = fault {
        command
            .env("ORDERFLOW_FAULT_POINT", point)
            .env("ORDERFLOW_FAULT_ACTION", action)
            .env("ORDERFLOW_FAULT_AFTER_BATCHES", "3");
    }
    command.spawn().expect("start orderflow consume")
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// SIGTERM, then the member must leave and exit 0 within its shutdown deadline.
fn terminate(child: &mut Child) {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    let status = wait_exit(child, Duration::from_secs(20)).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("member did not stop within 20 s of SIGTERM")
    });
    assert!(status.success(), "member exited with {status} after SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_crashed_at_any_point_of_its_batch_and_restarted_leaves_exact_views() {
    crash_at_every_point_then_compare(GroupProtocol::Classic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_consumer_protocol_a_member_crashed_at_any_point_and_restarted_leaves_exact_views() {
    crash_at_every_point_then_compare(GroupProtocol::Consumer).await;
}

async fn crash_at_every_point_then_compare(protocol: GroupProtocol) {
    let topic = common::fresh_topic("crash", 3).await;
    let kafka = common::kafka();
    let app = common::TestCheckout::spawn(&kafka, &topic, Duration::from_secs(5)).await;
    let report = load::run(LoadConfig {
        target: app.base_url.clone(),
        rate: 400,
        duration: Duration::from_secs(3),
        workers: 16,
        skus: 4,
        show_progress: false,
        token: Some(common::token(common::ALL_SCOPES)),
        decisions: None,
        initial_stock: 0,
        limited_edition: None,
    })
    .await;
    assert!(report.accepted > 300, "{}", report.summary());

    // The reference: a calm rebuild in-process.
    let reference = Store::connect(&common::fresh_database().await).await.expect("store");
    let group = format!("payment-reference-{topic}");
    let member = run_member(common::member_config(ProjectionKind::Payment, &topic, &group), &kafka, reference.clone())
        .expect("member");
    common::wait_caught_up(&reference, &kafka, &group, &topic).await;
    member.stop().await.expect("stop");
    let expected = reference.reads().snapshot().await.expect("snapshot");
    assert!(!expected.payments.is_empty());

    for point in ["before_transaction", "after_projection_write", "after_offset_update", "after_commit"] {
        let database_url = common::fresh_database().await;
        let group = format!("payment-crash-{protocol}-{point}");
        let mut crashing = spawn_member(&topic, &database_url, &group, protocol, Some((point, "crash")));
        let status = wait_exit(&mut crashing, Duration::from_secs(60)).unwrap_or_else(|| {
            let _ = crashing.kill();
            panic!("{point}: the member never crashed; is the binary built with --features fault-injection?")
        });
        assert!(!status.success(), "{point}: expected a crash, got {status}");

        let store = Store::connect(&database_url).await.expect("store");
        let mut restarted = spawn_member(&topic, &database_url, &group, protocol, None);
        common::wait_caught_up(&store, &kafka, &group, &topic).await;
        terminate(&mut restarted);
        common::assert_same_projection(&store.reads().snapshot().await.expect("snapshot"), &expected, point);
    }
}

/// A topic with two seconds of order lifecycles on it, and the payment projection of it
/// built calmly (the reference for "exactly right"). The checkout stays up while returned.
async fn loaded_topic_and_payment_reference(
    prefix: &str,
    partitions: i32,
) -> (String, infra::KafkaSettings, common::TestCheckout, Store) {
    let topic = common::fresh_topic(prefix, partitions).await;
    let kafka = common::kafka();
    let app = common::TestCheckout::spawn(&kafka, &topic, Duration::from_secs(5)).await;
    let load = LoadConfig {
        target: app.base_url.clone(),
        rate: 300,
        duration: Duration::from_secs(2),
        workers: 8,
        skus: 3,
        show_progress: false,
        token: Some(common::token(common::ALL_SCOPES)),
        decisions: None,
        initial_stock: 0,
        limited_edition: None,
    };
    load::run(load).await;
    let reference = Store::connect(&common::fresh_database().await).await.expect("store");
    let group = format!("inv-ref-{prefix}");
    let member = run_member(common::member_config(ProjectionKind::Payment, &topic, &group), &kafka, reference.clone())
        .expect("member");
    common::wait_caught_up(&reference, &kafka, &group, &topic).await;
    member.stop().await.expect("stop");
    (topic, kafka, app, reference)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_stalled_past_max_poll_interval_is_fenced_when_it_wakes() {
    let (topic, kafka, _app, reference) = loaded_topic_and_payment_reference("stall", 2).await;

    // The staller holds a batch without touching the database for 16 s, past its 10 s
    // max.poll.interval; a second member takes its partitions and applies those records.
    let database_url = common::fresh_database().await;
    let store = Store::connect(&database_url).await.expect("store");
    let mut staller = spawn_member(
        &topic,
        &database_url,
        "inv-stall",
        GroupProtocol::Classic,
        Some(("before_transaction", "pause:16000")),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let other = run_member(common::member_config(ProjectionKind::Payment, &topic, "inv-stall"), &kafka, store.clone())
        .expect("member");
    common::wait_caught_up(&store, &kafka, "inv-stall", &topic).await;
    // Let the staller wake and try its stale batch, then stop both.
    tokio::time::sleep(Duration::from_secs(16)).await;
    terminate(&mut staller);
    other.stop().await.expect("stop");
    common::assert_same_projection(
        &store.reads().snapshot().await.expect("snapshot"),
        &reference.reads().snapshot().await.expect("snapshot"),
        "zombie",
    );
}

/// A member frozen inside its batch transaction (paused at a fault point while holding its
/// offset rows, then SIGSTOPped) stalls the partition's next owner only until PostgreSQL
/// ends the frozen session's idle transaction (`idle_in_transaction_session_timeout`);
/// meanwhile the next owner's lock waits give up after `lock_timeout` and retry. The views
/// end exactly as a calm rebuild leaves them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_frozen_holding_its_offset_rows_stalls_the_next_owner_only_until_its_session_is_ended() {
    let (topic, kafka, _app, reference) = loaded_topic_and_payment_reference("frozen", 1).await;

    let database_url = common::fresh_database().await;
    let store = Store::connect(&database_url).await.expect("store");
    let mut frozen = spawn_member(
        &topic,
        &database_url,
        "inv-frozen",
        GroupProtocol::Classic,
        Some(("after_projection_write", "pause:600000")),
    );
    // Until it holds the rows of its third batch, then freeze it for real.
    let deadline = Instant::now() + Duration::from_secs(30);
    while store
        .reads()
        .stored_offsets("inv-frozen", &topic, &[0])
        .await
        .expect("offsets")
        .first()
        .is_none_or(|(_, o)| *o < 80)
    {
        assert!(Instant::now() < deadline, "the member did not apply its first batches");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    Command::new("kill").args(["-STOP", &frozen.id().to_string()]).status().expect("SIGSTOP");
    let frozen_at = Instant::now();
    let other = run_member(common::member_config(ProjectionKind::Payment, &topic, "inv-frozen"), &kafka, store.clone())
        .expect("member");
    let ends = common::log_ends(&kafka, &topic).await;
    let caught_up = orderflow::kit::wait_caught_up(
        &store,
        "inv-frozen",
        &topic,
        &ends,
        Duration::from_secs(60),
        Duration::from_millis(100),
    )
    .await
    .expect("offsets");
    let stalled = frozen_at.elapsed();
    assert!(caught_up, "the next owner was still stalled {stalled:?} after the freeze");
    let _ = frozen.kill();
    let _ = frozen.wait();
    other.stop().await.expect("stop");
    common::assert_same_projection(
        &store.reads().snapshot().await.expect("snapshot"),
        &reference.reads().snapshot().await.expect("snapshot"),
        "frozen member",
    );
    // Expulsion (max.poll.interval 10 s) and the session's end (idle in transaction
    // 10 s) overlap; the bound is theirs plus a lock wait, never "until the member wakes".
    assert!(stalled < Duration::from_secs(40), "stalled {stalled:?}");
    eprintln!("a frozen member held up the partition's next owner {stalled:?}");
}

/// `orderflow consume payment` as a static member (`--instance-id`), for the restart test.
fn spawn_static_member(topic: &str, database_url: &str, group: &str, instance: Option<&str>) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_orderflow"));
    command
        .args(["consume", "payment", "--topic", topic, "--group", group, "--batch-max", "40"])
        .args(["--session-timeout", "30s", "--max-poll-interval", "30s"])
        .env("ORDERFLOW_BROKERS", common::kafka().brokers)
        .env("ORDERFLOW_DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .env_remove("ORDERFLOW_FAULT_POINT")
        .stdout(Stdio::null());
    if let Some(instance) = instance {
        command.args(["--instance-id", instance]);
    }
    command.spawn().expect("start orderflow consume")
}

/// How many records `group` has applied on `topic` (the sum of its stored offsets).
async fn applied(store: &Store, group: &str, topic: &str) -> i64 {
    store.reads().stored_offsets(group, topic, &[0, 1, 2]).await.expect("offsets").iter().map(|(_, o)| o).sum()
}

/// A member SIGKILLed and started again at once under its instance id takes its partitions
/// back without waiting for the dead member's session (30 s here) to expire; without an
/// instance id the group waits for it. Orders keep arriving throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_killed_and_restarted_at_once_resumes_without_waiting_out_the_dead_session() {
    let topic = common::fresh_topic("static", 3).await;
    let kafka = common::kafka();
    let app = common::TestCheckout::spawn(&kafka, &topic, Duration::from_secs(5)).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let placing = {
        let (client, url, stop) = (app.client.clone(), format!("{}/orders", app.base_url), stop.clone());
        tokio::spawn(async move {
            let body = serde_json::json!({"customer_id": "c", "currency": "EUR",
                "lines": [{"sku": "S", "quantity": 1, "unit_price_minor": 100}], "ship_to": {"country": "DE"}});
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = load::post_json(&client, &url, &body, None).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut stalls = Vec::new();
    for instance in [Some("payment-0"), None] {
        let database_url = common::fresh_database().await;
        let store = Store::connect(&database_url).await.expect("store");
        let group = format!("payment-static-{}-{}", instance.is_some(), uuid::Uuid::new_v4().simple());
        let mut member = spawn_static_member(&topic, &database_url, &group, instance);
        common::wait_caught_up(&store, &kafka, &group, &topic).await;
        member.kill().expect("SIGKILL");
        let _ = member.wait();
        let killed_at = Instant::now();
        let before = applied(&store, &group, &topic).await;
        let mut restarted = spawn_static_member(&topic, &database_url, &group, instance);
        let deadline = killed_at + Duration::from_secs(90);
        while applied(&store, &group, &topic).await <= before {
            assert!(Instant::now() < deadline, "the restarted member never applied anything");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stalls.push(killed_at.elapsed());
        terminate(&mut restarted);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    placing.await.expect("placing");
    eprintln!(
        "static membership: SIGKILL → applying again {:?} with --instance-id, {:?} without",
        stalls[0], stalls[1]
    );
    assert!(
        stalls[0] < Duration::from_secs(10),
        "a static member resumes well within the dead one's 30 s session: {stalls:?}"
    );
    assert!(stalls[1] > stalls[0], "without an instance id the group waits for the dead member: {stalls:?}");
}
