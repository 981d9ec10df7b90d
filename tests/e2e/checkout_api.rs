//! The checkout API against the real broker and PostgreSQL: what each route appends, what
//! it refuses, and how Idempotency-Keys behave.
use crate::common;

use std::time::Duration;

use schemas::{Codec, Event, EventKind};
use serde_json::{json, Value};

fn order_body() -> Value {
    json!({"customer_id":"c-1","currency":"EUR",
           "lines":[{"sku":"SKU-1","quantity":2,"unit_price_minor":1999},{"sku":"SKU-2","quantity":1,"unit_price_minor":500}],
           "ship_to":{"country":"DE","postal_code":"10115"}})
}

async fn checkout() -> common::TestCheckout {
    let topic = common::fresh_topic("checkout", 4).await;
    common::TestCheckout::spawn(&common::kafka(), &topic, Duration::from_secs(5)).await
}

fn position(answer: &Value) -> (String, i32, i64) {
    (
        answer["position"]["topic"].as_str().expect("topic").to_string(),
        answer["position"]["partition"].as_i64().expect("partition") as i32,
        answer["position"]["offset"].as_i64().expect("offset"),
    )
}

#[tokio::test]
async fn each_route_appends_its_event_keyed_and_placed_where_the_answer_says() {
    let app = checkout().await;
    let (status, placed) = app.post("/orders", &order_body(), None).await;
    assert_eq!(status, 202, "{placed}");
    let order_id = placed["order_id"].as_str().expect("order_id").to_string();
    let order = format!("/orders/{order_id}");
    let steps = [
        (
            format!("{order}/payments"),
            json!({"status":"authorized","amount_minor":4498,"provider_ref":"psp-1"}),
            EventKind::PaymentAuthorized,
        ),
        (
            format!("{order}/payments"),
            json!({"status":"captured","amount_minor":4498,"provider_ref":"psp-1"}),
            EventKind::PaymentCaptured,
        ),
        (
            format!("{order}/payments"),
            json!({"status":"failed","amount_minor":1,"provider_ref":"psp-2"}),
            EventKind::PaymentFailed,
        ),
        (
            format!("{order}/payments"),
            json!({"status":"refunded","amount_minor":500,"provider_ref":"psp-1"}),
            EventKind::PaymentRefunded,
        ),
        (format!("{order}/shipments"), json!({"status":"packed","warehouse":"BER-1"}), EventKind::ShipmentPacked),
        (
            format!("{order}/shipments"),
            json!({"status":"shipped","warehouse":"BER-1","carrier":"DHL","tracking":"T1"}),
            EventKind::ShipmentShipped,
        ),
        (format!("{order}/shipments"), json!({"status":"delivered","warehouse":"BER-1"}), EventKind::ShipmentDelivered),
        (format!("{order}/cancel"), json!({"reason":"test"}), EventKind::OrderCancelled),
    ];
    let mut expected = vec![(EventKind::OrderPlaced, order_id.clone(), position(&placed), placed["event_id"].clone())];
    for (path, body, kind) in steps {
        let (status, answer) = app.post(&path, &body, None).await;
        assert_eq!(status, 202, "{path}: {answer}");
        assert_eq!(answer["order_id"], json!(order_id));
        expected.push((kind, order_id.clone(), position(&answer), answer["event_id"].clone()));
    }
    let (status, stock) = app
        .post("/inventory/SKU-1/adjustments", &json!({"warehouse":"BER-1","delta":40,"reason":"received"}), None)
        .await;
    assert_eq!(status, 202, "{stock}");
    expected.push((EventKind::StockAdjusted, "sku:SKU-1".to_string(), position(&stock), stock["event_id"].clone()));

    // Order events on the orders topic, the adjustment on the adjustments topic.
    let stock_topic = schemas::adjustments_topic(&app.topic);
    let mut records = common::read_topic(&common::kafka(), &app.topic, expected.len() - 1);
    let adjustments = common::read_topic(&common::kafka(), &stock_topic, 1);
    assert_eq!((records.len(), adjustments.len()), (expected.len() - 1, 1), "exactly one record per accepted request");
    let codec = Codec::builtin();
    let on = |topic: &str, kind: EventKind| {
        assert_eq!(topic, if kind == EventKind::StockAdjusted { stock_topic.as_str() } else { app.topic.as_str() })
    };
    let orders_records = records.len();
    records.extend(adjustments);
    for (kind, key, (topic, partition, offset), event_id) in expected {
        on(&topic, kind);
        let candidates = if topic == app.topic { &records[..orders_records] } else { &records[orders_records..] };
        let record = candidates
            .iter()
            .find(|r| r.partition == partition && r.offset == offset)
            .unwrap_or_else(|| panic!("{kind:?} not at {topic}/{partition}/{offset}"));
        assert_eq!(record.key.as_deref(), Some(key.as_str()), "{kind:?} key");
        let event = codec.decode(&record.payload).expect("decode");
        assert_eq!(event.kind(), kind);
        assert_eq!(json!(event.envelope().event_id), event_id);
    }
    // All events of the order share one partition.
    let order_partitions: std::collections::HashSet<i32> =
        records.iter().filter(|r| r.key.as_deref() == Some(order_id.as_str())).map(|r| r.partition).collect();
    assert_eq!(order_partitions.len(), 1);
}

#[tokio::test]
async fn placed_order_carries_the_validated_content() {
    let app = checkout().await;
    let (status, placed) = app.post("/orders", &order_body(), None).await;
    assert_eq!(status, 202);
    let records = common::read_topic(&common::kafka(), &app.topic, 1);
    let Event::OrderPlaced(event) = Codec::builtin().decode(&records[0].payload).expect("decode") else {
        panic!("not placed")
    };
    assert_eq!(json!(event.order_id), placed["order_id"]);
    assert_eq!((event.customer_id.as_str(), event.currency.as_str()), ("c-1", "EUR"));
    assert_eq!(event.total_minor(), Some(2 * 1999 + 500));
    assert_eq!(event.ship_to.postal_code.as_deref(), Some("10115"));
}

#[tokio::test]
async fn every_invalid_request_is_refused_and_appends_nothing() {
    let app = checkout().await;
    let order_id = uuid::Uuid::new_v4();
    let with = |patch: Value| {
        let mut body = order_body();
        for (k, v) in patch.as_object().expect("object") {
            body[k] = v.clone();
        }
        body
    };
    let line =
        |sku: &str, quantity: i64, price: i64| json!({"sku": sku, "quantity": quantity, "unit_price_minor": price});
    let cases: Vec<(&str, String, Value, u16, &str)> = vec![
        ("no lines", "/orders".into(), with(json!({"lines": []})), 422, "lines"),
        ("101 lines", "/orders".into(), with(json!({"lines": vec![line("SKU-1", 1, 1); 101]})), 422, "lines"),
        ("quantity 0", "/orders".into(), with(json!({"lines": [line("SKU-1", 0, 1)]})), 422, "lines[0].quantity"),
        (
            "quantity 10001",
            "/orders".into(),
            with(json!({"lines": [line("SKU-1", 10_001, 1)]})),
            422,
            "lines[0].quantity",
        ),
        ("lower-case sku", "/orders".into(), with(json!({"lines": [line("sku-1", 1, 1)]})), 422, "lines[0].sku"),
        ("33-char sku", "/orders".into(), with(json!({"lines": [line(&"A".repeat(33), 1, 1)]})), 422, "lines[0].sku"),
        (
            "negative price",
            "/orders".into(),
            with(json!({"lines": [line("SKU-1", 1, -1)]})),
            422,
            "lines[0].unit_price_minor",
        ),
        (
            "fractional price",
            "/orders".into(),
            with(json!({"lines": [{"sku":"SKU-1","quantity":1,"unit_price_minor":19.99}]})),
            422,
            "lines[0].unit_price_minor",
        ),
        (
            "total overflows i64",
            "/orders".into(),
            with(json!({"lines": vec![line("SKU-1", 10_000, 100_000_000_000_000); 10]})),
            422,
            "lines",
        ),
        ("unknown currency", "/orders".into(), with(json!({"currency": "XYZ"})), 422, "currency"),
        ("bad country", "/orders".into(), with(json!({"ship_to": {"country": "Germany"}})), 422, "ship_to.country"),
        ("unknown field", "/orders".into(), with(json!({"coupon": "FREE"})), 422, "coupon"),
        (
            "unknown nested field",
            "/orders".into(),
            with(json!({"ship_to": {"country": "DE", "city": "Berlin"}})),
            422,
            "ship_to.city",
        ),
        (
            "missing field",
            "/orders".into(),
            json!({"currency":"EUR","lines":[line("SKU-1",1,1)],"ship_to":{"country":"DE"}}),
            422,
            "body",
        ),
        ("body is an array", "/orders".into(), json!([1, 2]), 422, "body"),
        (
            "payment status unknown",
            format!("/orders/{order_id}/payments"),
            json!({"status":"pending","amount_minor":1,"provider_ref":"p"}),
            422,
            "status",
        ),
        (
            "payment negative",
            format!("/orders/{order_id}/payments"),
            json!({"status":"captured","amount_minor":-5,"provider_ref":"p"}),
            422,
            "amount_minor",
        ),
        (
            "payment bad order id",
            "/orders/not-a-uuid/payments".into(),
            json!({"status":"captured","amount_minor":5,"provider_ref":"p"}),
            422,
            "order_id",
        ),
        (
            "shipment status unknown",
            format!("/orders/{order_id}/shipments"),
            json!({"status":"lost","warehouse":"W"}),
            422,
            "status",
        ),
        (
            "shipment blank warehouse",
            format!("/orders/{order_id}/shipments"),
            json!({"status":"packed","warehouse":" "}),
            422,
            "warehouse",
        ),
        (
            "stock delta zero",
            "/inventory/SKU-1/adjustments".into(),
            json!({"warehouse":"W","delta":0,"reason":"counted"}),
            422,
            "delta",
        ),
        (
            "stock bad sku",
            "/inventory/sku%20x/adjustments".into(),
            json!({"warehouse":"W","delta":1,"reason":"counted"}),
            422,
            "sku",
        ),
        (
            "stock bad reason",
            "/inventory/SKU-1/adjustments".into(),
            json!({"warehouse":"W","delta":1,"reason":"stolen"}),
            422,
            "reason",
        ),
        (
            "stock delta huge",
            "/inventory/SKU-1/adjustments".into(),
            json!({"warehouse":"W","delta":2_000_000,"reason":"received"}),
            422,
            "delta",
        ),
    ];
    for (name, path, body, status, field) in cases {
        let (got, answer) = app.post(&path, &body, None).await;
        assert_eq!(got, status, "{name}: {answer}");
        assert_eq!(answer["field"], json!(field), "{name}: {answer}");
    }

    // Bodies that are not JSON at all, or not JSON we accept.
    let raw_cases: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        ("malformed json", "application/json", b"{\"customer_id\": ".to_vec(), 400),
        (
            "deeply nested json",
            "application/json",
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
            413,
        ),
        (
            "nested within the limit but too deep",
            "application/json",
            format!("{}{}", "[".repeat(5_000), "]".repeat(5_000)).into_bytes(),
            400,
        ),
        ("oversized body", "application/json", vec![b' '; 65 * 1024], 413),
        ("wrong content type", "text/plain", order_body().to_string().into_bytes(), 415),
        ("form content type", "application/x-www-form-urlencoded", b"a=b".to_vec(), 415),
        ("not utf-8", "application/json", vec![0xff, 0xfe, 0x00], 400),
    ];
    for (name, content_type, body, status) in raw_cases {
        let (got, answer) = app.post_raw("/orders", content_type, body).await;
        assert_eq!(got, status, "{name}: {answer}");
        assert!(answer["error"].is_string(), "{name}: JSON error body expected, got {answer}");
    }

    // A valid request afterwards is the only record in the log.
    let (status, _) = app.post("/orders", &order_body(), None).await;
    assert_eq!(status, 202);
    let records = common::read_topic(&common::kafka(), &app.topic, 1);
    assert_eq!(records.len(), 1, "rejected requests appended records");
}

#[tokio::test]
async fn idempotent_retries_return_the_first_answer_and_append_nothing() {
    let app = checkout().await;
    let (first_status, first) = app.post("/orders", &order_body(), Some("retry-1")).await;
    assert_eq!(first_status, 202);
    for _ in 0..3 {
        let (status, again) = app.post("/orders", &order_body(), Some("retry-1")).await;
        assert_eq!((status, &again), (202, &first), "a retry returns the first response");
    }
    // Same meaning spelled differently (field order, whitespace) is the same request.
    let reordered = serde_json::from_str::<Value>(
        r#"{ "ship_to":{"postal_code":"10115","country":"DE"}, "lines":[{"unit_price_minor":1999,"quantity":2,"sku":"SKU-1"},{"sku":"SKU-2","quantity":1,"unit_price_minor":500}], "currency":"EUR", "customer_id":"c-1" }"#,
    )
    .expect("json");
    let (status, again) = app.post("/orders", &reordered, Some("retry-1")).await;
    assert_eq!((status, &again), (202, &first));

    let mut changed = order_body();
    changed["customer_id"] = json!("c-2");
    let (status, answer) = app.post("/orders", &changed, Some("retry-1")).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"], json!("idempotency_key_reused"));

    // The same key on another route is another request.
    let order = first["order_id"].as_str().expect("order id");
    let (status, _) = app.post(&format!("/orders/{order}/cancel"), &json!({}), Some("retry-1")).await;
    assert_eq!(status, 202);

    let (status, answer) = app.post("/orders", &order_body(), Some(&"k".repeat(300))).await;
    assert_eq!(status, 400, "{answer}");

    let records = common::read_topic(&common::kafka(), &app.topic, 2);
    assert_eq!(records.len(), 2, "one order placed, one cancelled: retries appended nothing");
}

#[tokio::test]
async fn health_readiness_metrics_openapi_and_the_topics_asyncapi_are_served() {
    let app = checkout().await;
    assert_eq!(app.get("/healthz").await.0, 200);
    assert_eq!(app.get("/readyz").await.0, 200);
    let _ = app.post("/orders", &order_body(), None).await;
    let (status, metrics) = app.get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "orderflow_checkout_requests_total",
        "orderflow_checkout_produce_seconds_bucket",
        "orderflow_checkout_produces_in_flight",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&doc).expect("openapi is JSON");
    for path in [
        "/orders",
        "/orders/{order_id}/cancel",
        "/orders/{order_id}/payments",
        "/orders/{order_id}/shipments",
        "/inventory/{sku}/adjustments",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/asyncapi.json",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing from openapi.json");
    }
    // The topic's document names this checkout's topic and gives every event's schema.
    let (status, doc) = app.get("/asyncapi.json").await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&doc).expect("asyncapi is JSON");
    assert_eq!(doc["channels"]["orders"]["address"], json!(app.topic));
    assert_eq!(doc["components"]["messages"]["PaymentCaptured"]["payload"]["schema"]["name"], json!("PaymentCaptured"));
    assert_eq!(app.get("/nope").await.0, 404);
}

#[tokio::test]
async fn expired_idempotency_keys_are_purged_through_an_index_and_recent_ones_are_kept() {
    use producers::idempotency::{IdempotencyStore, RETENTION};
    use sqlx::Connection;
    let url = common::fresh_database().await;
    let store = IdempotencyStore::connect(&url, Duration::from_secs(3)).await.expect("store");
    // A week and more of keys: 3,000 recent, 20 past the retention.
    let now = schemas::clock::now_ms();
    let old = now - i64::try_from(RETENTION.as_millis()).expect("ms") - 60_000;
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    sqlx::query(
        "INSERT INTO checkout_keys (scope, idempotency_key, request_hash, state, epoch_ms, lease_until_ms)
         SELECT '#', md5(i::text), 'h', 'done', CASE WHEN i <= 20 THEN $1 ELSE $2 END, 0 FROM generate_series(1, 3020) i",
    )
    .bind(old)
    .bind(now)
    .execute(&mut conn)
    .await
    .expect("keys");
    // What autovacuum does as the table grows: the planner learns how old its keys are.
    sqlx::query("ANALYZE checkout_keys").execute(&mut conn).await.expect("analyze");
    let plan: Vec<String> = sqlx::query_scalar("EXPLAIN DELETE FROM checkout_keys WHERE epoch_ms < $1")
        .bind(now - i64::try_from(RETENTION.as_millis()).expect("ms"))
        .fetch_all(&mut conn)
        .await
        .expect("plan");
    assert!(plan.iter().any(|line| line.contains("checkout_keys_by_epoch")), "{plan:#?}");
    assert_eq!(store.purge_expired().await.expect("purge"), 20);
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM checkout_keys").fetch_one(&mut conn).await.expect("count");
    assert_eq!(left, 3_000);
}

#[tokio::test]
async fn idempotency_store_tells_in_flight_completed_mismatched_and_released_keys_apart() {
    use producers::idempotency::{Claim, IdempotencyStore};
    let lease = Duration::from_secs(3);
    let store = IdempotencyStore::connect(&common::fresh_database().await, lease).await.expect("store");
    let scope = "POST /orders";
    let Claim::Claimed { epoch_ms } = store.claim(scope, "k", "h1").await.expect("claim") else { panic!("claimed") };
    // A second instance sees the first still working on it: the API answers 409.
    let Claim::InFlight { retry_after } = store.claim(scope, "k", "h1").await.expect("claim") else {
        panic!("in flight")
    };
    assert!(retry_after <= lease && retry_after > Duration::ZERO, "{retry_after:?}: the rest of the lease");
    assert_eq!(store.claim(scope, "k", "h2").await.expect("claim"), Claim::Mismatch);
    // After an unknown outcome the key is released, so the client's retry may run, under
    // the key's first epoch (so with the same ids); another body is still refused.
    store.release(scope, "k").await.expect("release");
    assert_eq!(store.claim(scope, "k", "h2").await.expect("claim"), Claim::Mismatch);
    assert_eq!(store.claim(scope, "k", "h1").await.expect("claim"), Claim::Claimed { epoch_ms });
    store.complete(scope, "k", 202, r#"{"ok":1}"#).await.expect("complete");
    assert_eq!(
        store.claim(scope, "k", "h1").await.expect("claim"),
        Claim::Completed { status: 202, response: r#"{"ok":1}"#.into() }
    );
    // Releasing a completed key does nothing: a replay stays a replay.
    store.release(scope, "k").await.expect("release");
    assert!(matches!(store.claim(scope, "k", "h1").await.expect("claim"), Claim::Completed { .. }));
    assert!(matches!(store.claim("POST /orders/x/cancel", "k", "h1").await.expect("claim"), Claim::Claimed { .. }));
    // A dead instance's claim is taken over once its lease has run out, not before.
    let Claim::Claimed { epoch_ms } = store.claim(scope, "dead", "h1").await.expect("claim") else { panic!() };
    assert!(matches!(store.claim(scope, "dead", "h1").await.expect("claim"), Claim::InFlight { .. }));
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    assert_eq!(store.claim(scope, "dead", "h1").await.expect("claim"), Claim::Claimed { epoch_ms });
}
