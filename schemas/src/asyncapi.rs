//! The AsyncAPI 3.1 document of the log, generated from the `.avsc` files built into this
//! binary: which events travel on which topic, under which key, who may publish them, and
//! their Avro schemas. A service that publishes straight to Kafka reads it beside the
//! checkout's OpenAPI document; the schema registry holds the same schemas under the
//! subjects named here.
use serde_json::{json, Map, Value};

use crate::event::EventKind;
use crate::names::{on_stock_topic, stock_topic, PRINCIPAL_HEADER};
use crate::registry::{builtin_contract, ContractFile};

/// Where a kind of event is published and by whom.
struct Placement {
    /// On the stock topic (`<orders>-stock`) rather than the orders topic.
    stock_topic: bool,
    key: &'static str,
    /// Decided by orderflow's processes: only their principals may publish it.
    decided: bool,
}

fn placement(kind: EventKind) -> Placement {
    const ORDER_KEY: &str = "the order id (UUID text): every event of one order in one partition, in order";
    const SKU_KEY: &str = "`sku:<SKU>`: every event of one SKU in one partition, in order";
    let stock_topic = on_stock_topic(kind);
    match kind {
        EventKind::StockAdjusted => Placement { stock_topic, key: SKU_KEY, decided: false },
        EventKind::StockRequested => Placement { stock_topic, key: SKU_KEY, decided: true },
        EventKind::StockDecided => Placement {
            stock_topic: false,
            key: "the order id (UUID text), or `sku:<SKU>` for the decision on a stock adjustment",
            decided: true,
        },
        EventKind::OrderConfirmed | EventKind::OrderRejected | EventKind::OrderExpired | EventKind::RefundRequested => {
            Placement { stock_topic, key: ORDER_KEY, decided: true }
        }
        _ => Placement { stock_topic, key: ORDER_KEY, decided: false },
    }
}

/// The document for an orders topic named `orders_topic` (its stock topic follows from it).
pub fn document(orders_topic: &str) -> Value {
    let files = builtin_contract().unwrap_or_default();
    let stock = stock_topic(orders_topic);
    let mut messages = Map::new();
    let (mut on_orders, mut on_stock) = (Map::new(), Map::new());
    let (mut published, mut decided, mut requested, mut adjusted) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for kind in EventKind::ALL {
        let name = kind.record_name();
        let place = placement(kind);
        messages.insert(name.to_string(), message(kind, &place, newest(&files, kind)));
        let reference = json!({ "$ref": format!("#/components/messages/{name}") });
        let channel = if place.stock_topic { &mut on_stock } else { &mut on_orders };
        channel.insert(name.to_string(), reference);
        let channel_ref = if place.stock_topic { "stock" } else { "orders" };
        let operation_ref = json!({ "$ref": format!("#/channels/{channel_ref}/messages/{name}") });
        match (place.stock_topic, place.decided) {
            (true, true) => requested.push(operation_ref),
            (true, false) => adjusted.push(operation_ref),
            (false, true) => decided.push(operation_ref),
            (false, false) => published.push(operation_ref),
        }
    }
    let all: Vec<Value> = EventKind::ALL
        .iter()
        .filter(|k| !placement(**k).stock_topic)
        .map(|k| json!({ "$ref": format!("#/channels/orders/messages/{}", k.record_name()) }))
        .collect();
    json!({
        "asyncapi": "3.1.0",
        "info": {
            "title": "orderflow events",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The order log. Every event is Avro in the Confluent wire format (byte 0, the schema id as 4 bytes big-endian, the Avro binary body). With a schema registry the ids are its own, under the record-name subjects given here (`x-subject`); register with `orderflow schemas register`, which sets each subject's compatibility to FULL. A newer version of a schema must keep both directions readable: add fields only as optional with a default.",
        },
        "defaultContentType": "application/octet-stream",
        "channels": {
            "orders": {
                "address": orders_topic,
                "title": "the orders topic",
                "description": "Every order's events keyed by its order id, and the processes' decisions.",
                "messages": on_orders,
                "bindings": { "kafka": { "topic": orders_topic, "bindingVersion": "0.5.0" } },
            },
            "stock": {
                "address": stock,
                "title": "the stock topic",
                "description": "One SKU's stock adjustments and the order process's stock requests, keyed by SKU, so the stock group decides them in log order: an adjustment acknowledged before an order was placed comes before that order's requests. Written by the order process (requests) and by the checkout (adjustments).",
                "messages": on_stock,
                "bindings": { "kafka": { "topic": stock, "bindingVersion": "0.5.0" } },
            },
        },
        "operations": {
            "publishFacts": {
                "action": "send",
                "channel": { "$ref": "#/channels/orders" },
                "title": "Services publish what happened",
                "description": "The checkout, payment and warehouse services publish these, over the checkout's HTTP API or straight to the topic with the schemas here. Set the record header `orderflow-principal` to the publishing service's name.",
                "messages": published,
            },
            "publishDecisions": {
                "action": "send",
                "channel": { "$ref": "#/channels/orders" },
                "title": "orderflow's processes publish their decisions",
                "description": "Only the order process and the stock group (Kafka principals `order-process`, `stock`) publish these; other services read them.",
                "messages": decided,
            },
            "publishAdjustments": {
                "action": "send",
                "channel": { "$ref": "#/channels/stock" },
                "title": "The warehouse adjusts stock",
                "description": "Through the checkout's HTTP API (which appends here), or straight to the stock topic keyed `sku:<SKU>`. An adjustment on the orders topic (the earlier contract) is still taken, forwarded by the order process, without that ordering guarantee.",
                "messages": adjusted,
            },
            "requestStock": {
                "action": "send",
                "channel": { "$ref": "#/channels/stock" },
                "title": "The order process asks the stock group",
                "description": "Only the order process (Kafka principal `order-process`) publishes these.",
                "messages": requested,
            },
            "readEvents": {
                "action": "receive",
                "channel": { "$ref": "#/channels/orders" },
                "title": "Anyone may read the log",
                "messages": all,
            },
        },
        "components": { "messages": messages },
    })
}

fn newest(files: &[ContractFile], kind: EventKind) -> Option<&ContractFile> {
    let subject = kind.subject();
    files.iter().filter(|f| f.subject == subject).max_by_key(|f| f.version)
}

fn message(kind: EventKind, place: &Placement, file: Option<&ContractFile>) -> Value {
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
            },
        },
        "payload": {
            "schemaFormat": "application/vnd.apache.avro+json;version=1.9.0",
            "schema": schema,
        },
        "bindings": {
            "kafka": {
                "key": { "type": "string", "description": place.key },
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
        assert_eq!(doc["channels"]["stock"]["address"], "shop-stock");
        for kind in EventKind::ALL {
            let name = kind.record_name();
            let message = &doc["components"]["messages"][name];
            assert_eq!(message["x-subject"], kind.subject());
            assert_eq!(message["payload"]["schema"]["name"], name, "{name}'s Avro schema");
            assert!(message["bindings"]["kafka"]["key"]["description"].is_string());
            let channel = if on_stock_topic(kind) { "stock" } else { "orders" };
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
        assert_eq!(names("publishAdjustments"), vec!["StockAdjusted".to_string()]);
        let all = names("publishFacts").len()
            + names("publishDecisions").len()
            + names("requestStock").len()
            + names("publishAdjustments").len();
        assert_eq!(all, EventKind::ALL.len());
    }
}
