//! Poison records of every kind land once each in dead_letters, later events of a parked
//! order are parked too, the partition moves on, and valid events keep being applied.
use crate::common;

use std::time::Duration;

use consumers::member::run_member;
use projections::store::Store;
use projections::ProjectionKind;
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::samples::zigzag;
use schemas::{samples::sample, Codec, Event, EventKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_poison_is_parked_once_and_the_group_keeps_going() {
    let topic = common::fresh_topic("poison", 1).await;
    let kafka = common::kafka();
    let producer: FutureProducer = kafka.client_config().create().expect("producer");
    let codec = Codec::builtin();
    let send = |key: String, payload: Vec<u8>| {
        let producer = producer.clone();
        let topic = topic.clone();
        async move {
            producer
                .send(FutureRecord::to(&topic).key(&key).payload(&payload), Duration::from_secs(10))
                .await
                .expect("sent");
        }
    };
    let placed = sample(EventKind::OrderPlaced);
    let order_key = placed.key();
    let good = codec.encode(&placed).expect("encode");
    let placed_id = codec.schema_id(EventKind::OrderPlaced);
    let mut huge_array = vec![0u8];
    huge_array.extend_from_slice(&placed_id.to_be_bytes());
    huge_array.extend_from_slice(&good[5..60]);
    huge_array.extend(zigzag(1 << 40));
    let stock = codec.encode(&sample(EventKind::StockAdjusted)).expect("encode");
    let mut wrong_type = vec![0u8];
    wrong_type.extend_from_slice(&placed_id.to_be_bytes());
    wrong_type.extend_from_slice(&stock[5..]);
    let poison: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("random", (0..64u8).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect()),
        ("truncated", good[..good.len() - 3].to_vec()),
        ("unknown schema id", vec![0, 0, 0, 0x27, 0x0f, 2, 4]),
        ("wrong record type", wrong_type),
        ("huge array length", huge_array),
    ];
    let poison_keys: Vec<String> = (0..poison.len()).map(|i| format!("junk-{i}")).collect();
    for ((_, bytes), key) in poison.iter().zip(&poison_keys) {
        send(key.clone(), bytes.clone()).await;
    }
    // Semantically invalid, a caller's mistake: a capture for an order nobody placed.
    let ghost_capture = sample(EventKind::PaymentCaptured);
    send(ghost_capture.key(), codec.encode(&ghost_capture).expect("encode")).await;
    // A valid order afterwards must still be applied.
    let mut valid = placed.clone();
    if let Event::OrderPlaced(e) = &mut valid {
        e.order_id = uuid::Uuid::new_v4();
        e.envelope.event_id = uuid::Uuid::new_v4();
    }
    send(valid.key(), codec.encode(&valid).expect("encode")).await;
    // The same order id with conflicting content: placed again under another event id.
    let mut conflicting = valid.clone();
    if let Event::OrderPlaced(e) = &mut conflicting {
        e.envelope.event_id = uuid::Uuid::new_v4();
        e.lines[0].quantity = 99;
    }
    send(conflicting.key(), codec.encode(&conflicting).expect("encode")).await;
    // A later event of that order is applied: a refused record holds nothing back.
    let mut later = sample(EventKind::PaymentCaptured);
    if let Event::PaymentCaptured(e) = &mut later {
        e.order_id = valid.order_id().expect("id");
        e.envelope.event_id = uuid::Uuid::new_v4();
    }
    send(later.key(), codec.encode(&later).expect("encode")).await;
    let _ = order_key;

    let database_url = common::fresh_database().await;
    let store = Store::connect(&database_url).await.expect("store");
    let group = "payment-poison";
    let member = run_member(common::member_config(ProjectionKind::Payment, &topic, group), &kafka, store.clone())
        .expect("member");
    common::wait_caught_up(&store, &kafka, group, &topic).await;
    // Stop and start again: nothing is parked twice, and nothing more is applied.
    member.stop().await.expect("stop");
    let member = run_member(common::member_config(ProjectionKind::Payment, &topic, group), &kafka, store.clone())
        .expect("member");
    tokio::time::sleep(Duration::from_secs(2)).await;
    member.stop().await.expect("stop");

    let dead = store.reads().dead_letters(group).await.expect("dead letters");
    let reasons: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(dead.len(), poison.len(), "only what no schema reads is parked: {reasons:#?}");
    for (i, d) in dead.iter().enumerate() {
        assert!(d.reason.starts_with("undecodable"), "{} gave {}", poison[i].0, d.reason);
    }
    let recorded = store.reads().list_dead_letters_with(Some(group), None, false, 100).await.expect("all");
    let refused: Vec<&str> =
        recorded.iter().filter(|d| d.status.as_str() == "skipped").map(|d| d.reason.as_str()).collect();
    assert_eq!(refused.len(), 2, "{refused:#?}");
    assert!(refused[0].starts_with("refused: ") && refused[0].contains("unknown order"), "{}", refused[0]);
    assert!(refused[1].starts_with("refused: ") && refused[1].contains("placed twice"), "{}", refused[1]);
    let snapshot = store.reads().snapshot().await.expect("snapshot");
    assert_eq!(snapshot.payments.len(), 1, "the valid order is applied, once");
    assert_eq!(snapshot.payments[0].order_total_minor, 4497, "the conflicting copy changed nothing");
    let Event::PaymentCaptured(capture) = &later else { unreachable!() };
    assert_eq!(snapshot.payments[0].captured_minor, capture.amount_minor, "the order's later capture was applied");
    let offsets = store.reads().stored_offsets(group, &topic, &[0]).await.expect("offsets");
    assert_eq!(offsets, vec![(0, (poison.len() + 4) as i64)], "the partition moved past every record");

    // Operators see the same parked records through `orderflow dead-letters list`.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(["dead-letters", "list", "--json", "--group", group, "--database-url", &database_url])
        .env("RUST_LOG", "error")
        .output()
        .expect("run dead-letters list");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let listed: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(listed.len(), dead.len());
    for (line, row) in listed.iter().zip(&dead) {
        assert_eq!(line["offset"], serde_json::json!(row.offset));
        assert_eq!(line["reason"], serde_json::json!(row.reason));
    }
}

/// A NUL byte, produced straight to the topic by another producer: in a key, in a header,
/// in an Avro string of an otherwise valid event. The key and the string make the record
/// poison (a key that is not the order id breaks per-order ordering; no orderflow text may
/// hold NUL, and PostgreSQL cannot store it): each is parked once with its reason. A header
/// is metadata no projection reads, so that event is applied. The next valid event of the
/// partition is applied right after.
async fn nul_bytes_from_a_foreign_producer(database_url: &str) {
    use rdkafka::message::{Header, OwnedHeaders};
    let topic = common::fresh_topic("nul", 1).await;
    let kafka = common::kafka();
    let producer: FutureProducer = kafka.client_config().create().expect("producer");
    let codec = Codec::builtin();
    let send = |key: Vec<u8>, payload: Vec<u8>, headers: Option<OwnedHeaders>| {
        let (producer, topic) = (producer.clone(), topic.clone());
        async move {
            let mut record = FutureRecord::to(&topic).key(&key).payload(&payload);
            if let Some(headers) = headers {
                record = record.headers(headers);
            }
            producer.send(record, Duration::from_secs(10)).await.expect("sent");
        }
    };
    let placed = |customer: &str| {
        let mut event = sample(EventKind::OrderPlaced);
        if let Event::OrderPlaced(e) = &mut event {
            e.order_id = uuid::Uuid::new_v4();
            e.envelope.event_id = uuid::Uuid::new_v4();
            e.customer_id = customer.to_string();
        }
        event
    };
    let nul_key = placed("c-1");
    let mut key = nul_key.key().into_bytes();
    key.insert(4, 0);
    send(key, codec.encode(&nul_key).expect("encode"), None).await;
    let nul_header = placed("c-2");
    let header = OwnedHeaders::new().insert(Header { key: "trace\0id", value: Some(&b"a\0b"[..]) });
    send(nul_header.key().into_bytes(), codec.encode(&nul_header).expect("encode"), Some(header)).await;
    let nul_text = placed("c\0-3");
    send(nul_text.key().into_bytes(), codec.encode(&nul_text).expect("encode"), None).await;

    let store = Store::connect(database_url).await.expect("store");
    let group = "payment-nul";
    let member = run_member(common::member_config(ProjectionKind::Payment, &topic, group), &kafka, store.clone())
        .expect("member");
    common::wait_caught_up(&store, &kafka, group, &topic).await;
    let started = std::time::Instant::now();
    let after = placed("c-4");
    send(after.key().into_bytes(), codec.encode(&after).expect("encode"), None).await;
    common::wait_caught_up(&store, &kafka, group, &topic).await;
    let next_valid_applied = started.elapsed();
    member.stop().await.expect("stop");

    let dead = store.reads().dead_letters(group).await.expect("dead letters");
    let reasons: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(dead.len(), 2, "{reasons:#?}");
    assert!(reasons[0].contains("is not the event's key"), "{}", reasons[0]);
    assert!(reasons[1].contains("NUL"), "{}", reasons[1]);
    let text_order = nul_text.order_id().expect("id").to_string();
    assert_eq!(dead[1].order_id.as_deref(), Some(text_order.as_str()), "parked under its key, the order id");
    let paid: Vec<uuid::Uuid> =
        store.reads().snapshot().await.expect("snapshot").payments.iter().map(|p| p.order_id).collect();
    let want = [nul_header.order_id().expect("id"), after.order_id().expect("id")];
    assert_eq!(paid.len(), 2, "{paid:?}");
    assert!(want.iter().all(|id| paid.contains(id)), "the header's event and the next one are applied: {paid:?}");
    assert!(next_valid_applied < Duration::from_secs(10), "the next valid event took {next_valid_applied:?}");
    eprintln!("next valid event applied {next_valid_applied:?} after it was produced");
}

#[tokio::test]
async fn nul_bytes_in_a_key_or_a_text_are_parked_once_and_the_partition_goes_on_postgres() {
    nul_bytes_from_a_foreign_producer(&common::fresh_database().await).await;
}

#[tokio::test]
async fn nul_bytes_in_a_key_or_a_text_are_parked_once_and_the_partition_goes_on_sqlite() {
    nul_bytes_from_a_foreign_producer(&common::fresh_sqlite_url()).await;
}

/// The database refusing one record's value (made to, at one offset, by the
/// fault-injection build): the member halves the batch until it has the record, parks it
/// with the database's own message, and applies the rest; nothing stalls.
async fn a_record_the_database_refuses(database_url: &str) {
    let topic = common::fresh_topic("refused", 1).await;
    let kafka = common::kafka();
    let producer: FutureProducer = kafka.client_config().create().expect("producer");
    let codec = Codec::builtin();
    let mut ids = Vec::new();
    for _ in 0..40 {
        let mut event = sample(EventKind::OrderPlaced);
        if let Event::OrderPlaced(e) = &mut event {
            e.order_id = uuid::Uuid::new_v4();
            e.envelope.event_id = uuid::Uuid::new_v4();
        }
        ids.push(event.order_id().expect("id"));
        let payload = codec.encode(&event).expect("encode");
        let key = event.key();
        producer
            .send(FutureRecord::to(&topic).key(&key).payload(&payload), Duration::from_secs(10))
            .await
            .expect("sent");
    }
    let group = format!("{}-payment", common::fresh_group_prefix());
    let started = std::time::Instant::now();
    let mut child = common::Child::spawn(
        &[
            "consume",
            "payment",
            "--topic",
            &topic,
            "--group",
            &group,
            "--database-url",
            database_url,
            "--batch-max",
            "40",
        ],
        &[("ORDERFLOW_BROKERS", &kafka.brokers), ("ORDERFLOW_FAULT_REFUSE_OFFSET", "17")],
    );
    let store = Store::connect(database_url).await.expect("store");
    common::wait_caught_up(&store, &kafka, &group, &topic).await;
    let parked_within = started.elapsed();
    let _ = child.0.kill();
    let dead = store.reads().dead_letters(&group).await.expect("dead letters");
    assert_eq!(dead.iter().map(|d| d.offset).collect::<Vec<_>>(), vec![17], "{dead:#?}");
    assert!(dead[0].reason.starts_with("the database refused it:"), "{}", dead[0].reason);
    assert_eq!(dead[0].order_id.as_deref(), Some(ids[17].to_string().as_str()), "parked under its order");
    let paid = store.reads().snapshot().await.expect("snapshot").payments;
    assert_eq!(paid.len(), 39, "every other order is applied");
    assert!(!paid.iter().any(|p| p.order_id == ids[17]));
    eprintln!("refused record parked and the partition caught up {parked_within:?} after the member started");
}

#[tokio::test]
async fn a_record_the_database_refuses_is_found_by_halving_and_parked_alone_postgres() {
    a_record_the_database_refuses(&common::fresh_database().await).await;
}

#[tokio::test]
async fn a_record_the_database_refuses_is_found_by_halving_and_parked_alone_sqlite() {
    a_record_the_database_refuses(&common::fresh_sqlite_url()).await;
}
