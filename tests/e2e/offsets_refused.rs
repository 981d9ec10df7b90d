//! Stored offsets that lie outside the log are refused loudly, never followed: beyond its
//! end (the topic was deleted and recreated under the group) or below its start (the
//! database restored to an older point while retention deleted records it had not
//! applied). The member records why and consumes nothing of the partition;
//! read-your-writes answers 503 with the reason instead of a 404 for an order that is on
//! the log; `orderflow offsets reset` (a dry run first, then `--execute`, once the members
//! are stopped) moves the offsets, and the new events are applied exactly once.
use crate::common;

use std::time::{Duration, Instant};

use consumers::member::run_member;
use projections::store::{OffsetFault, Store};
use projections::ProjectionKind;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use serde_json::{json, Value};

fn order_body(customer: &str) -> Value {
    json!({"customer_id": customer, "currency": "EUR",
           "lines": [{"sku": "SKU-1", "quantity": 1, "unit_price_minor": 100}], "ship_to": {"country": "DE"}})
}

/// Places an order through the checkout, retrying while its producer finds a recreated
/// topic again; returns (order id, `after`).
async fn place(checkout: &common::TestCheckout, customer: &str) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, answer) = checkout.post("/orders", &order_body(customer), None).await;
        if status == 202 {
            let id = answer["order_id"].as_str().expect("order id").to_string();
            return (id, answer["after"].as_str().expect("after").to_string());
        }
        assert!(Instant::now() < deadline, "the checkout did not accept: {answer}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn wait_fault(store: &Store, group: &str, topic: &str) -> OffsetFault {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(fault) =
            store.reads().offset_faults(group, topic, Some(0)).await.expect("faults").into_iter().next()
        {
            return fault;
        }
        assert!(Instant::now() < deadline, "the member did not refuse the partition");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Deletes the one-partition `topic` and creates it again, empty.
async fn recreate(kafka: &infra::KafkaSettings, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = kafka.client_config().create().expect("admin");
    admin.delete_topics(&[topic], &AdminOptions::new()).await.expect("delete topic");
    let deadline = Instant::now() + Duration::from_secs(60);
    let spec = infra::topics::TopicSpec {
        name: topic.to_string(),
        partitions: 1,
        replication_factor: None,
        configs: Vec::new(),
    };
    // Deletion completes in the background: creating fails until it has.
    while infra::topics::create_topics(kafka, std::slice::from_ref(&spec), Duration::from_secs(10)).await.is_err()
        || common::log_ends(kafka, topic).await.is_empty()
    {
        assert!(Instant::now() < deadline, "the topic could not be recreated");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A one-partition topic with `orders` orders placed through a checkout, applied by a
/// payment group of its own, whose member has stopped again.
struct Applied {
    kafka: infra::KafkaSettings,
    topic: String,
    checkout: common::TestCheckout,
    store: Store,
    group: String,
    config: consumers::MemberConfig,
}

async fn orders_applied(prefix: &str, orders: usize) -> Applied {
    let kafka = common::kafka();
    let topic = common::fresh_topic(prefix, 1).await;
    let checkout = common::TestCheckout::spawn(&kafka, &topic, Duration::from_secs(5)).await;
    for i in 0..orders {
        place(&checkout, &format!("{prefix}-{i}")).await;
    }
    let store = Store::connect(&common::fresh_database().await).await.expect("store");
    let group = format!("{}-payment", common::fresh_group_prefix());
    let config = common::member_config(ProjectionKind::Payment, &topic, &group);
    let member = run_member(config.clone(), &kafka, store.clone()).expect("member");
    common::wait_caught_up(&store, &kafka, &group, &topic).await;
    member.stop().await.expect("stop");
    Applied { kafka, topic, checkout, store, group, config }
}

fn reset(database_url: &str, group: &str, topic: &str, execute: bool) -> String {
    let brokers = common::kafka().brokers;
    let mut args = vec!["offsets", "reset", "--group", group, "--topic", topic, "--to-earliest"];
    args.extend(["--database-url", database_url, "--brokers", &brokers]);
    if execute {
        args.push("--execute");
    }
    common::run_orderflow(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_topic_is_refused_answered_503_and_applied_exactly_once_after_a_reset() {
    let kafka = common::kafka();
    let topic = common::fresh_topic("recreated", 1).await;
    let checkout = common::TestCheckout::spawn(&kafka, &topic, Duration::from_secs(5)).await;
    for i in 0..3 {
        place(&checkout, &format!("before-{i}")).await;
    }
    let database_url = common::fresh_database().await;
    let prefix = common::fresh_group_prefix();
    let store = Store::connect(&database_url).await.and_then(|s| s.with_group_prefix(&prefix)).expect("store");
    let group = store.group(ProjectionKind::Payment);
    let config = || common::member_config(ProjectionKind::Payment, &topic, &group);
    let member = run_member(config(), &kafka, store.clone()).expect("member");
    common::wait_caught_up(&store, &kafka, &group, &topic).await;

    // Deleted and recreated under the running group.
    recreate(&kafka, &topic).await;
    let (order, after) = place(&checkout, "after-recreate").await;
    let fault = wait_fault(&store, &group, &topic).await;
    assert_eq!((fault.stored_offset, fault.log_start), (3, 0), "{fault:?}");
    assert!(fault.log_end < 3, "{fault:?}");
    let api = common::ServeApi::spawn(&database_url, &topic, &prefix, Duration::from_millis(500)).await;
    // The payment summary reads the payment projection alone, the one this group builds.
    let (status, body) = api.get(&format!("/payments/summary?after={after}")).await;
    assert_eq!((status, &body["error"]), (503, &json!("offsets_refused")), "{body}");
    assert!(body["message"].as_str().expect("message").contains("beyond the log's end"), "{body}");
    member.stop().await.expect("stop");

    let dry = reset(&database_url, &group, &topic, false);
    assert!(dry.contains("3 -> 0"), "{dry}");
    let stored = store.reads().stored_offsets(&group, &topic, &[0]).await.expect("offsets");
    assert_eq!(stored, vec![(0, 3)], "a dry run moves nothing");
    reset(&database_url, &group, &topic, true);
    assert_eq!(store.reads().stored_offsets(&group, &topic, &[0]).await.expect("offsets"), vec![(0, 0)]);
    assert!(
        store.reads().offset_faults(&group, &topic, None).await.expect("faults").is_empty(),
        "the reset clears the fault"
    );
    let pg = sqlx::PgPool::connect(&database_url).await.expect("pg");
    let audit: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM offset_resets WHERE group_id = $1")
        .bind(&group)
        .fetch_one(&pg)
        .await
        .expect("audit");
    assert_eq!(audit, 1, "the reset is recorded");

    let member = run_member(config(), &kafka, store.clone()).expect("member");
    common::wait_caught_up(&store, &kafka, &group, &topic).await;
    member.stop().await.expect("stop");
    let payments = store.reads().snapshot().await.expect("snapshot").payments;
    assert_eq!(payments.len(), 4, "the three earlier orders and the new one");
    assert_eq!(payments.iter().filter(|p| p.order_id.to_string() == order).count(), 1, "applied once");
    let (status, body) = api.get(&format!("/payments/summary?after={after}")).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_offset_below_the_retained_log_is_refused_rather_than_skipping_what_was_deleted() {
    let Applied { kafka, topic, store, group, config, .. } = orders_applied("retention", 4).await;
    // The database goes back to a point when only the first record was applied, and
    // retention has meanwhile deleted the log's first three records.
    sqlx::query("UPDATE consumer_offsets SET next_offset = 1 WHERE group_id = $1")
        .bind(&group)
        .execute(store.pool())
        .await
        .expect("restore");
    let admin: AdminClient<DefaultClientContext> = kafka.client_config().create().expect("admin");
    let mut upto = rdkafka::TopicPartitionList::new();
    upto.add_partition_offset(&topic, 0, rdkafka::Offset::Offset(3)).expect("partition");
    admin.delete_records(&upto, &AdminOptions::new()).await.expect("delete records");

    let member = run_member(config, &kafka, store.clone()).expect("member");
    let fault = wait_fault(&store, &group, &topic).await;
    assert_eq!((fault.stored_offset, fault.log_start, fault.log_end), (1, 3, 4), "{fault:?}");
    assert!(fault.reason().contains("below the log's start"), "{}", fault.reason());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        store.reads().stored_offsets(&group, &topic, &[0]).await.expect("offsets"),
        vec![(0, 1)],
        "nothing consumed"
    );
    member.stop().await.expect("stop");
}

/// A recreated topic that has grown past the stored offset by the time the member looks is
/// still told apart: the record before the stored offset is not the one the group applied
/// (its timestamp, stored with the offset, differs), so the partition is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_topic_that_grew_past_the_stored_offset_is_recognised_by_its_records() {
    let Applied { kafka, topic, checkout, store, group, config } = orders_applied("regrown", 3).await;

    recreate(&kafka, &topic).await;
    for i in 0..5 {
        place(&checkout, &format!("second-{i}")).await;
    }

    let member = run_member(config, &kafka, store.clone()).expect("member");
    let fault = wait_fault(&store, &group, &topic).await;
    assert_eq!(fault.stored_offset, 3);
    assert!(fault.log_end >= 5 && fault.other_log.is_some(), "{fault:?}");
    assert!(fault.reason().contains("not the one the group applied"), "{}", fault.reason());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        store.reads().stored_offsets(&group, &topic, &[0]).await.expect("offsets"),
        vec![(0, 3)],
        "nothing consumed"
    );
    member.stop().await.expect("stop");
}
