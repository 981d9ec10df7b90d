//! One order's trace, end to end, as an operator finds it in a real Jaeger: the services
//! run as the operator runs them (child processes exporting OTLP to the Jaeger
//! `infra/local/up --tracing` started), and the trace is read back through Jaeger's own
//! query API.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common;

const GROUPS: [&str; 6] = ["inventory", "payment", "fulfilment", "history", "order-process", "stock"];

/// One span as Jaeger's query API returns it.
#[derive(Debug, Clone)]
struct Span {
    id: String,
    parent: Option<String>,
    operation: String,
    service: String,
    start_us: i64,
    tags: BTreeMap<String, String>,
}

fn spans_of(trace: &Value) -> Vec<Span> {
    let processes = &trace["processes"];
    trace["spans"]
        .as_array()
        .map(|spans| {
            spans
                .iter()
                .map(|s| Span {
                    id: s["spanID"].as_str().unwrap_or_default().to_string(),
                    parent: s["references"]
                        .as_array()
                        .and_then(|r| r.iter().find(|r| r["refType"] == "CHILD_OF"))
                        .and_then(|r| r["spanID"].as_str())
                        .map(String::from),
                    operation: s["operationName"].as_str().unwrap_or_default().to_string(),
                    service: processes[s["processID"].as_str().unwrap_or_default()]["serviceName"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    start_us: s["startTime"].as_i64().unwrap_or_default(),
                    tags: s["tags"]
                        .as_array()
                        .map(|tags| {
                            tags.iter()
                                .map(|t| {
                                    let value =
                                        t["value"].as_str().map_or_else(|| t["value"].to_string(), String::from);
                                    (t["key"].as_str().unwrap_or_default().to_string(), value)
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The path from the checkout's request to a decision the projections applied, each step
/// the child of the one before: every hop of the pipeline, in order.
fn expected_path(topic: &str) -> Vec<String> {
    [
        "POST /orders".to_string(),
        format!("publish {topic}"),
        "decide order-process".into(),
        format!("relay stock-requests-{topic}"),
        "decide stock".into(),
        format!("relay decisions-{topic}"),
        "decide order-process".into(),
        format!("relay decisions-{topic}"),
        "apply fulfilment".into(),
    ]
    .to_vec()
}

/// Whether `spans` hold a chain of parent → child steps named as in `path`.
fn chain<'a>(spans: &'a [Span], path: &[String]) -> Option<Vec<&'a Span>> {
    fn extend<'a>(spans: &'a [Span], path: &[String], from: &'a Span, found: &mut Vec<&'a Span>) -> bool {
        let Some((next, rest)) = path.split_first() else { return true };
        for child in spans.iter().filter(|s| s.parent.as_deref() == Some(&from.id) && &s.operation == next) {
            found.push(child);
            if extend(spans, rest, child, found) {
                return true;
            }
            found.pop();
        }
        false
    }
    let (first, rest) = path.split_first()?;
    for root in spans.iter().filter(|s| &s.operation == first) {
        let mut found = vec![root];
        if extend(spans, rest, root, &mut found) {
            return Some(found);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_orders_trace_in_jaeger_follows_it_from_the_request_through_every_hop_to_the_views() {
    let jaeger = std::env::var("ORDERFLOW_JAEGER_URL")
        .expect("ORDERFLOW_JAEGER_URL is not set: run `eval \"$(infra/local/up --tracing)\"` before the tests");
    let otlp =
        std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").expect("OTEL_EXPORTER_OTLP_ENDPOINT (infra/local/up --tracing)");
    let topic = common::fresh_topic("traced", 2).await;
    let database_url = common::fresh_database().await;
    let port = common::free_port();
    let env = [
        ("ORDERFLOW_BROKERS", common::kafka().brokers.clone()),
        ("ORDERFLOW_DATABASE_URL", database_url.clone()),
        ("ORDERFLOW_TOPIC", topic.clone()),
        ("ORDERFLOW_GROUP_PREFIX", common::fresh_group_prefix()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp),
        // Spans leave each process within 100 ms instead of the default 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    common::run_orderflow_with(&["migrate"], &env);
    let tokens = common::tokens_file();
    let listen = format!("127.0.0.1:{port}");
    let _checkout = common::Child::spawn(&["checkout", "--listen", &listen, "--auth-tokens", &tokens], &env);
    let _members: Vec<common::Child> =
        GROUPS.iter().map(|g| common::Child::spawn(&["consume", g, "--session-timeout", "6s"], &env)).collect();

    let base = format!("http://{listen}");
    let client = orderflow::load::http_client_with(Some(&common::token(common::ALL_SCOPES)));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = json!({"warehouse": "BER-1", "delta": 5, "reason": "received"});
        match orderflow::load::post_json(&client, &format!("{base}/inventory/SKU-T/adjustments"), &body, None).await {
            Ok((202, _)) => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("the checkout did not take the adjustment: {other:?}"),
        }
    }

    // The caller's own trace: the checkout continues it.
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let traceparent = format!("00-{trace_id}-{}-01", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let body = json!({"customer_id": "c-traced", "currency": "EUR", "ship_to": {"country": "DE"},
                      "lines": [{"sku": "SKU-T", "quantity": 1, "unit_price_minor": 500}]});
    let answer = client
        .post(format!("{base}/orders"))
        .header("traceparent", &traceparent)
        .json(&body)
        .send()
        .await
        .expect("place the order");
    assert_eq!(answer.status().as_u16(), 202);
    let order_id = answer.json::<Value>().await.expect("json")["order_id"].as_str().expect("order id").to_string();

    // Jaeger holds the whole path once every hop exported its spans.
    let path = expected_path(&topic);
    let deadline = Instant::now() + Duration::from_secs(90);
    let spans = loop {
        let trace: Value = match client.get(format!("{jaeger}/api/traces/{trace_id}")).send().await {
            Ok(r) if r.status().is_success() => r.json().await.unwrap_or(Value::Null),
            _ => Value::Null,
        };
        let spans = spans_of(&trace["data"][0]);
        let applied = ["payment", "history", "inventory"]
            .iter()
            .all(|p| spans.iter().any(|s| s.operation == format!("apply {p}")));
        if chain(&spans, &path).is_some() && applied {
            break spans;
        }
        let names: Vec<(&str, &str)> = spans.iter().map(|s| (s.service.as_str(), s.operation.as_str())).collect();
        assert!(Instant::now() < deadline, "the trace never held every hop; it holds: {names:#?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    let found = chain(&spans, &path).expect("the path");
    let services: Vec<&str> = found.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(services[0], "orderflow-checkout", "{services:?}");
    assert_eq!(services[1], "orderflow-checkout", "{services:?}");
    assert_eq!(services[2], "orderflow-order-process", "{services:?}");
    assert_eq!(services[4], "orderflow-stock", "{services:?}");
    assert_eq!(services[6], "orderflow-order-process", "{services:?}");
    assert_eq!(services[8], "orderflow-fulfilment", "{services:?}");
    for pair in found.windows(2) {
        assert!(
            pair[1].start_us >= pair[0].start_us,
            "{} starts before its cause {}",
            pair[1].operation,
            pair[0].operation
        );
    }
    for step in [found[1], found[2], found[6], found[8]] {
        assert_eq!(step.tags.get("order.id"), Some(&order_id), "{} names the order: {:?}", step.operation, step.tags);
    }
    // The payment projection applied the order placed, straight from the checkout's record.
    let publish = found[1];
    assert!(
        spans.iter().any(|s| s.operation == "apply payment" && s.parent.as_deref() == Some(&publish.id)),
        "apply payment continues the checkout's publish"
    );

    // An operator who knows only the order id finds the same trace by its attribute.
    let search = format!(
        "{jaeger}/api/traces?service=orderflow-checkout&tags={}&lookback=1h&limit=20",
        urlencode(&json!({"order.id": order_id}).to_string())
    );
    let found_by_id: Value = client.get(&search).send().await.expect("search").json().await.expect("json");
    let ids: Vec<&str> =
        found_by_id["data"].as_array().expect("traces").iter().filter_map(|t| t["traceID"].as_str()).collect();
    assert_eq!(ids, [trace_id.as_str()], "{found_by_id}");
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
