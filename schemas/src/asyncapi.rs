//! The AsyncAPI 3.1 document of the log, generated from the `.avsc` files built into this
//! binary: which events travel on which topic, under which key, who may publish them, and
//! their Avro schemas. A service that publishes straight to Kafka reads it beside the
//! checkout's OpenAPI document; the schema registry holds the same schemas under the
//! subjects named here.
use serde_json::{json, Map, Value};

use crate::event::EventKind;
use crate::names::{TopicRole, EVENT_ID_HEADER, PRINCIPAL_HEADER, REQUEST_HEADER, TRACE_HEADER};
use crate::ownership::EPOCH_HEADER;
use crate::registry::{builtin_contract, ContractFile};

/// The key a kind of event is published under.
fn key_of(kind: EventKind) -> &'static str {
    const ORDER_KEY: &str = "the order id (UUID text): every event of one order in one partition, in order";
    const SKU_KEY: &str = "`sku:<SKU>`: every event of one SKU in one partition, in order";
    match kind {
        EventKind::StockAdjusted
        | EventKind::StockRequested
        | EventKind::StockTransferRequested
        | EventKind::StockTransferReceived => SKU_KEY,
        EventKind::StockDecided => "the order id (UUID text), or `sku:<SKU>` for the decision on a stock adjustment",
        _ => ORDER_KEY,
    }
}

/// What the document says of one topic: its channel, and the operation that publishes to it.
struct Channel {
    id: &'static str,
    title: &'static str,
    description: &'static str,
    operation: &'static str,
    op_title: &'static str,
    op_description: &'static str,
}

fn channel_of(role: TopicRole) -> Channel {
    let (id, title, description, operation, op_title, op_description) = match role {
        TopicRole::Orders => (
            "orders",
            "the orders topic",
            "Every order's facts, keyed by its order id. Written by callers: the checkout and the services that publish straight to Kafka.",
            "publishFacts",
            "Services publish what happened",
            "The checkout, payment and warehouse services publish these, over the checkout's HTTP API or straight to the topic with the schemas here. Set the record header `orderflow-principal` to the publishing service's name. A decision or a stock request found on this topic is refused and recorded by every reader, never applied.",
        ),
        TopicRole::Adjustments => (
            "adjustments",
            "the adjustments topic",
            "Stock adjustments keyed by SKU. Written by callers. The stock group decides every stock request after the adjustments its SKU's partition held when the request was read, so an adjustment acknowledged before an order was placed comes before that order's requests (restock, then sell).",
            "publishAdjustments",
            "The warehouse adjusts stock",
            "Through the checkout's HTTP API (which appends here), or straight to this topic keyed `sku:<SKU>`. An adjustment on the orders topic (the earlier contract) is still taken, forwarded by the order process, without that ordering guarantee.",
        ),
        TopicRole::Stock => (
            "stock",
            "the stock topic",
            "The order process's stock requests, keyed by SKU, so the stock group decides one SKU's requests in log order. Written by the order process only (Kafka principal `order-process`).",
            "requestStock",
            "The order process asks the stock group",
            "Only the order process (Kafka principal `order-process`) publishes these.",
        ),
        TopicRole::Decisions => (
            "decisions",
            "the decisions topic",
            "The processes' decisions, keyed by order id like the order's facts (same partition count, so an order's facts and decisions share a partition number). Written by the order process and the stock group only.",
            "publishDecisions",
            "orderflow's processes publish their decisions",
            "Only the order process and the stock group (Kafka principals `order-process`, `stock`) publish these; other services read them.",
        ),
    };
    Channel { id, title, description, operation, op_title, op_description }
}

/// The document for an orders topic named `orders_topic` (the other topics follow from it).
pub fn document(orders_topic: &str) -> Value {
    let files = builtin_contract().unwrap_or_default();
    let mut messages = Map::new();
    let mut channels = Map::new();
    let mut operations = Map::new();
    for role in TopicRole::ALL {
        let Channel { id, title, description, operation, op_title, op_description } = channel_of(role);
        let address = role.name(orders_topic);
        let mut on_channel = Map::new();
        let mut published = Vec::new();
        for kind in EventKind::ALL.into_iter().filter(|k| TopicRole::of(*k) == role) {
            let name = kind.record_name();
            messages.insert(name.to_string(), message(kind, newest(&files, kind)));
            on_channel.insert(name.to_string(), json!({ "$ref": format!("#/components/messages/{name}") }));
            published.push(json!({ "$ref": format!("#/channels/{id}/messages/{name}") }));
        }
        operations.insert(
            operation.to_string(),
            json!({
                "action": "send",
                "channel": { "$ref": format!("#/channels/{id}") },
                "title": op_title,
                "description": op_description,
                "messages": published,
            }),
        );
        if matches!(role, TopicRole::Orders | TopicRole::Decisions) {
            let read = if role == TopicRole::Orders { "readFacts" } else { "readDecisions" };
            operations.insert(
                read.to_string(),
                json!({
                    "action": "receive",
                    "channel": { "$ref": format!("#/channels/{id}") },
                    "title": "Anyone with read access may read it",
                    "messages": published,
                }),
            );
        }
        channels.insert(
            id.to_string(),
            json!({
                "address": address,
                "title": title,
                "description": description,
                "messages": on_channel,
                "bindings": { "kafka": { "topic": address, "bindingVersion": "0.5.0" } },
            }),
        );
    }
    json!({
        "asyncapi": "3.1.0",
        "info": {
            "title": "orderflow events",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The order log: four topics, each written by one kind of author, so a reader trusts a kind of event only from its topic (authority follows the credential). Every event is Avro in the Confluent wire format (byte 0, the schema id as 4 bytes big-endian, the Avro binary body). With a schema registry the ids are its own, under the record-name subjects given here (`x-subject`); register with `orderflow schemas register`, which sets each subject's compatibility to FULL. A newer version of a schema must keep both directions readable: add fields only as optional with a default.",
        },
        "defaultContentType": "application/octet-stream",
        "channels": channels,
        "operations": operations,
        "components": { "messages": messages },
    })
}

fn newest(files: &[ContractFile], kind: EventKind) -> Option<&ContractFile> {
    let subject = kind.subject();
    files.iter().filter(|f| f.subject == subject).max_by_key(|f| f.version)
}

fn message(kind: EventKind, file: Option<&ContractFile>) -> Value {
    let schema: Value = file.and_then(|f| serde_json::from_str(&f.text).ok()).unwrap_or(Value::Null);
    let summary = schema.get("doc").cloned().unwrap_or(Value::Null);
    json!({
        "name": kind.record_name(),
        "title": kind.record_name(),
        "summary": summary,
        "x-subject": kind.subject(),
        "x-schema-version": file.map(|f| f.version),
        "headers": {
            "type": "object",
            "properties": {
                PRINCIPAL_HEADER: {
                    "type": "string",
                    "description": "The principal that published the event (1 to 128 visible ASCII characters); informational.",
                },
                EVENT_ID_HEADER: {
                    "type": "string",
                    "format": "uuid",
                    "description": "The event's id, as in its envelope; the checkout sets it. Another region finds the record's copy by it; informational.",
                },
                REQUEST_HEADER: {
                    "type": "string",
                    "pattern": "^v1 [0-9a-f]{64} [0-9a-f]{64} -?[0-9]+$",
                    "description": "Set by the checkout on an event appended under an Idempotency-Key: `v1 <SHA-256 of scope and key> <SHA-256 of the request> <epoch ms of the key's first claim>`, digests only. `orderflow rebuild checkout-keys` restores the key store from it.",
                },
                TRACE_HEADER: {
                    "type": "string",
                    "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
                    "description": "W3C trace context of the step that appended the record (the checkout's request, or the decision that emitted it); consumers continue its trace. Absent or invalid: a new trace starts. Optional.",
                },
                EPOCH_HEADER: {
                    "type": "string",
                    "pattern": "^[0-9]+$",
                    "description": "The ownership epoch under which a region that took over the order's home region appended the event (`orderflow region takeover`); absent: 1, the home itself. Readers apply an event of a taken-over region's order from the new owner's log only under the handover's epoch.",
                },
            },
        },
        "payload": {
            "schemaFormat": "application/vnd.apache.avro+json;version=1.9.0",
            "schema": schema,
        },
        "bindings": {
            "kafka": {
                "key": { "type": "string", "description": key_of(kind) },
                "schemaIdLocation": "payload",
                "schemaIdPayloadEncoding": "confluent",
                "schemaLookupStrategy": "RecordNameStrategy",
                "bindingVersion": "0.5.0",
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_is_a_message_with_its_schema_subject_and_key_on_its_topic() {
        let doc = document("shop");
        assert_eq!(doc["channels"]["orders"]["address"], "shop");
        assert_eq!(doc["channels"]["stock"]["address"], "stock-requests-shop");
        assert_eq!(doc["channels"]["decisions"]["address"], "decisions-shop");
        assert_eq!(doc["channels"]["adjustments"]["address"], "shop-adjustments");
        for kind in EventKind::ALL {
            let name = kind.record_name();
            let message = &doc["components"]["messages"][name];
            assert_eq!(message["x-subject"], kind.subject());
            assert_eq!(message["payload"]["schema"]["name"], name, "{name}'s Avro schema");
            assert!(message["bindings"]["kafka"]["key"]["description"].is_string());
            let channel = channel_of(TopicRole::of(kind)).id;
            assert!(doc["channels"][channel]["messages"][name].is_object(), "{name} on {channel}");
        }
    }

    #[test]
    fn services_may_publish_facts_and_only_the_processes_publish_decisions() {
        let doc = document("orders");
        let names = |operation: &str| -> Vec<String> {
            doc["operations"][operation]["messages"]
                .as_array()
                .expect("messages")
                .iter()
                .map(|m| m["$ref"].as_str().expect("ref").rsplit('/').next().expect("name").to_string())
                .collect()
        };
        assert!(names("publishFacts").contains(&"PaymentCaptured".to_string()));
        assert!(!names("publishFacts").contains(&"OrderConfirmed".to_string()));
        assert!(names("publishDecisions").contains(&"StockDecided".to_string()));
        assert_eq!(names("requestStock"), vec!["StockRequested".to_string()]);
        assert_eq!(
            names("publishAdjustments"),
            ["StockAdjusted", "StockTransferRequested", "StockTransferReceived"].map(String::from).to_vec()
        );
        let all = names("publishFacts").len()
            + names("publishDecisions").len()
            + names("requestStock").len()
            + names("publishAdjustments").len();
        assert_eq!(all, EventKind::ALL.len());
    }
}
