//! Events encoded by the contract go through the real broker and come back decoded, each
//! order's events in one partition, in the order they were appended.
use crate::common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use schemas::{Codec, Event};
use uuid::Uuid;

#[tokio::test]
async fn events_of_each_order_come_back_decoded_from_one_partition_in_order() {
    let topic = common::fresh_topic("roundtrip", 6).await;
    let codec = Codec::builtin();
    let producer: FutureProducer = common::kafka()
        .client_config()
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "20000")
        .create()
        .expect("producer");

    let orders: Vec<Uuid> = (0..8).map(|_| Uuid::new_v4()).collect();
    let mut sent: HashMap<Uuid, Vec<Event>> = HashMap::new();
    // Interleave orders so the log mixes them, as real traffic does.
    let lifecycles: Vec<Vec<Event>> = orders.iter().map(|id| schemas::samples::lifecycle(*id)).collect();
    for step in 0..lifecycles[0].len() {
        for events in &lifecycles {
            let event = &events[step];
            let payload = codec.encode(event).expect("encode");
            let key = event.key();
            producer
                .send(FutureRecord::to(&topic).key(&key).payload(&payload), Duration::from_secs(20))
                .await
                .expect("broker acknowledged");
            sent.entry(event.order_id().expect("order event")).or_default().push(event.clone());
        }
    }
    let total: usize = sent.values().map(Vec::len).sum();

    let consumer: BaseConsumer = common::kafka()
        .client_config()
        .set("group.id", format!("roundtrip-{}", Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..6 {
        assignment.add_partition_offset(&topic, partition, Offset::Beginning).expect("partition");
    }
    consumer.assign(&assignment).expect("assign");

    let mut received: HashMap<Uuid, Vec<(i32, Event)>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut count = 0;
    while count < total {
        assert!(Instant::now() < deadline, "only {count} of {total} records came back within 30 s");
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.expect("consume");
        let event = codec.decode(message.payload().expect("payload")).expect("decode");
        let order_id = event.order_id().expect("order event");
        assert_eq!(message.key(), Some(order_id.to_string().as_bytes()), "key is the order id");
        received.entry(order_id).or_default().push((message.partition(), event));
        count += 1;
    }

    let mut partitions_used = std::collections::HashSet::new();
    for (order_id, events) in &sent {
        let got = &received[order_id];
        let partition = got[0].0;
        partitions_used.insert(partition);
        assert!(got.iter().all(|(p, _)| *p == partition), "order {order_id} spread over partitions");
        let got_events: Vec<&Event> = got.iter().map(|(_, e)| e).collect();
        assert_eq!(got_events, events.iter().collect::<Vec<_>>(), "order {order_id} out of order");
    }
    assert!(partitions_used.len() > 1, "8 random keys over 6 partitions used only one partition");
}
