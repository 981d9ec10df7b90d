//! `orderflow serve-api` against the real broker and PostgreSQL: read-your-writes with
//! `after=`, the timeline, every list and lookup, bad parameters, and the dashboard in a
//! real headless Chromium.
use crate::common;

use std::time::Duration;

use consumers::member::run_member;
use consumers::MemberHandle;
use projections::store::Store;
use projections::ProjectionKind;
use serde_json::{json, Value};

struct ReadSide {
    checkout: common::TestCheckout,
    api: common::ServeApi,
    store: Store,
    topic: String,
    database_url: String,
    prefix: String,
    members: Vec<MemberHandle>,
    processes: Option<common::Processes>,
}

impl ReadSide {
    async fn start(with_members: bool) -> ReadSide {
        let kafka = common::kafka();
        let topic = common::fresh_topic("query", 3).await;
        let checkout = common::TestCheckout::spawn(&kafka, &topic, Duration::from_secs(5)).await;
        let database_url = common::fresh_database().await;
        let prefix = common::fresh_group_prefix();
        let store = Store::connect(&database_url).await.expect("store").with_group_prefix(&prefix).expect("prefix");
        let api = common::ServeApi::spawn(&database_url, &topic, &prefix, Duration::from_secs(2)).await;
        let mut side =
            ReadSide { checkout, api, store, topic, database_url, prefix, members: Vec::new(), processes: None };
        if with_members {
            side.start_members();
            // Joining a group takes seconds; tests measure the pipeline, not the join.
            side.post(
                "/inventory/SKU-WARMUP/adjustments",
                json!({"warehouse": "BER-1", "delta": 1000, "reason": "counted"}),
            )
            .await;
            side.all_caught_up().await;
        }
        side
    }

    fn group(&self, kind: ProjectionKind) -> String {
        self.store.group(kind)
    }

    /// One member per projection, in the groups the views are built by, and the order
    /// process and stock group.
    fn start_members(&mut self) {
        for kind in ProjectionKind::ALL {
            let config = common::member_config(kind, &self.topic, &self.group(kind));
            self.members.push(run_member(config, &common::kafka(), self.store.clone()).expect("member"));
        }
        self.processes = Some(common::Processes::start(&self.store, &self.topic, Duration::from_secs(900)));
    }

    /// Every group has applied everything, the processes' decisions included.
    async fn all_caught_up(&self) {
        let groups: Vec<(String, String)> = ProjectionKind::ALL
            .iter()
            .flat_map(|k| orderflow::kit::reading(*k, &self.group(*k), &self.topic))
            .collect();
        match &self.processes {
            Some(processes) => processes.settle(&self.store, &groups).await,
            None => {
                for (group, topic) in &groups {
                    common::wait_caught_up(&self.store, &common::kafka(), group, topic).await;
                }
            }
        }
    }

    /// POSTs to the checkout, expects 202, returns the answer.
    async fn post(&self, path: &str, body: Value) -> Value {
        let (status, answer) = self.checkout.post(path, &body, None).await;
        assert_eq!(status, 202, "{path}: {answer}");
        answer
    }

    async fn place(&self, lines: Value) -> (String, String) {
        let answer = self
            .post(
                "/orders",
                json!({"customer_id": "c-9", "currency": "EUR", "lines": lines, "ship_to": {"country": "DE"}}),
            )
            .await;
        (answer["order_id"].as_str().expect("order_id").to_string(), position(&answer))
    }
}

fn position(answer: &Value) -> String {
    format!("{}:{}", answer["position"]["partition"], answer["position"]["offset"])
}

fn lines(sku: &str, quantity: i64) -> Value {
    json!([{"sku": sku, "quantity": quantity, "unit_price_minor": 1000}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_waits_until_the_new_order_is_applied_and_answers_503_with_the_position_past_the_bound() {
    let mut side = ReadSide::start(false).await;
    let (order, placed_at) = side.place(lines("SKU-1", 1)).await;

    // Nothing consumes yet: past the bound the answer says where the projection is.
    let (status, body) = side.api.get(&format!("/orders/{order}?after={placed_at}")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "not_caught_up");
    assert_eq!(body["wanted_offset"].to_string(), placed_at.split(':').nth(1).expect("offset"));
    assert_eq!(body["partition"].to_string(), placed_at.split(':').next().expect("partition"));
    assert_eq!(body["applied_up_to"], Value::Null, "nothing applied yet: {body}");

    side.start_members();
    side.all_caught_up().await; // joined and running: from here on, latency is the pipeline's
    let authorized = side
        .post(
            &format!("/orders/{order}/payments"),
            json!({"status": "authorized", "amount_minor": 1000, "provider_ref": "p"}),
        )
        .await;
    // Asked right after the write: the answer waits for it instead of showing stale data.
    let (status, body) = side.api.get(&format!("/orders/{order}?after={}", position(&authorized))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["payment"]["authorized_minor"], 1000, "{body}");
    assert_eq!(body["payment"]["status"], "authorized");
    // SKU-1 was never stocked: the order process may have rejected it already.
    let fulfilment = body["fulfilment"]["status"].as_str().unwrap_or_default();
    assert!(["awaiting_payment", "rejected"].contains(&fulfilment), "{body}");
    // SKU-1 was never stocked: once decided, the order is rejected and says why.
    let (status, body) = side.api.get(&format!("/orders/{order}?decided=true")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"]["status"], "rejected", "{body}");
    assert!(body["status"]["reason"].as_str().is_some_and(|r| r.contains("out of stock: SKU-1")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeline_shows_every_event_with_its_position_and_what_each_projection_made_of_it() {
    let side = ReadSide::start(true).await;
    let (order, placed) = side.place(lines("SKU-1", 2)).await;
    let mut positions = vec![placed];
    for (path, body) in [
        ("payments", json!({"status": "authorized", "amount_minor": 2000, "provider_ref": "p"})),
        ("payments", json!({"status": "captured", "amount_minor": 2000, "provider_ref": "p"})),
        ("shipments", json!({"status": "packed", "warehouse": "BER-1"})),
    ] {
        positions.push(position(&side.post(&format!("/orders/{order}/{path}"), body).await));
    }
    let last = positions.last().expect("last").clone();
    let (status, _) = side.api.get(&format!("/orders/{order}?after={last}")).await;
    assert_eq!(status, 200);
    side.all_caught_up().await; // the processes' decisions too
    let (status, timeline) = side.api.get(&format!("/orders/{order}/timeline?after={last}")).await;
    assert_eq!(status, 200, "{timeline}");
    let all = timeline["events"].as_array().expect("events");
    let events: Vec<&Value> = all.iter().filter(|e| e["published_by"] == common::ALL_SCOPES).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().expect("kind")).collect();
    assert_eq!(kinds, ["OrderPlaced", "PaymentAuthorized", "PaymentCaptured", "ShipmentPacked"]);
    let seen: Vec<&str> = events.iter().map(|e| e["position"].as_str().expect("position")).collect();
    assert_eq!(seen, positions, "positions are the ones the checkout returned");
    assert!(all.iter().all(|e| e["occurred_at"].as_str().is_some_and(|t| t.ends_with('Z'))));
    assert_eq!(events[0]["applied"], json!({"inventory": "not_read", "payment": "applied", "fulfilment": "applied"}));
    assert_eq!(events[1]["applied"], json!({"inventory": "not_read", "payment": "applied", "fulfilment": "not_read"}));
    assert_eq!(events[3]["applied"]["payment"], "not_read");
    assert_eq!(events[3]["applied"]["fulfilment"], "applied");
    // Packed before the decision came; the rejection then ends it for the warehouse too.
    assert_eq!(timeline["projections"]["fulfilment"]["status"], "rejected");
    // Who decided what and why: SKU-1 was never stocked, so the stock group rejected the
    // line, the order process rejected the order and asked back the captured money.
    let decided = |kind: &str, by: &str| all.iter().find(|e| e["kind"] == kind && e["published_by"] == by).cloned();
    let rejected = decided("OrderRejected", "order-process").unwrap_or_else(|| panic!("{timeline}"));
    assert!(rejected["summary"].as_str().is_some_and(|s| s.contains("out of stock: SKU-1")), "{rejected}");
    assert!(decided("StockDecided", "stock").is_some(), "{timeline}");
    assert!(decided("RefundRequested", "order-process").is_some(), "{timeline}");
    // The process refused the shipment of an order it rejected: recorded, holding nothing.
    let dead = timeline["dead_letters"].as_array().expect("dead letters");
    assert!(dead.iter().all(|d| d["status"] == "skipped"), "{timeline}");
    assert!(
        dead.iter().any(|d| d["reason"].as_str().is_some_and(|r| r.contains("ShipmentPacked refused"))),
        "{timeline}"
    );

    // An event the payment projection refuses shows as skipped, with its recorded reason;
    // it holds nothing back.
    let (bad, _) = side.place(lines("SKU-2", 1)).await;
    let over = side
        .post(
            &format!("/orders/{bad}/payments"),
            json!({"status": "captured", "amount_minor": 999_999, "provider_ref": "p"}),
        )
        .await;
    let (status, _) = side.api.get(&format!("/orders/{bad}?after={}", position(&over))).await;
    assert_eq!(status, 200);
    let (_, timeline) = side.api.get(&format!("/orders/{bad}/timeline?after={}", position(&over))).await;
    let all = timeline["events"].as_array().expect("events");
    let events: Vec<&Value> = all.iter().filter(|e| e["published_by"] == common::ALL_SCOPES).collect();
    assert_eq!(events.len(), 2, "{timeline}");
    assert_eq!(events[1]["applied"]["payment"], "skipped", "{timeline}");
    assert_eq!(events[1]["applied"]["fulfilment"], "applied", "fulfilment does not check amounts: {timeline}");
    let dead = timeline["dead_letters"].as_array().expect("dead letters");
    let payment_group = side.group(ProjectionKind::Payment);
    assert!(
        dead.iter().any(|d| d["group"] == payment_group
            && d["status"] == "skipped"
            && d["reason"].as_str().is_some_and(|r| r.starts_with("refused: "))),
        "{timeline}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_lists_and_summaries_match_the_projections_paginate_and_refuse_bad_parameters() {
    let side = ReadSide::start(true).await;
    for (sku, delta) in [("SKU-A", 5), ("SKU-B", 50), ("SKU-C", 1)] {
        side.post(
            &format!("/inventory/{sku}/adjustments"),
            json!({"warehouse": "BER-1", "delta": delta, "reason": "received"}),
        )
        .await;
    }
    side.all_caught_up().await;
    let (paid, _) = side.place(lines("SKU-A", 2)).await;
    side.place(lines("SKU-A", 2)).await;
    side.place(lines("SKU-Z", 1)).await; // never stocked: oversold
    side.post(
        &format!("/orders/{paid}/payments"),
        json!({"status": "captured", "amount_minor": 2000, "provider_ref": "p"}),
    )
    .await;
    side.all_caught_up().await;
    let levels = side.store.reads().inventory_levels().await.expect("levels");

    // Kafka's own tooling sees the same positions: each commit is copied to the group.
    for kind in ProjectionKind::ALL {
        let group = side.group(kind);
        let stored: std::collections::BTreeMap<i32, i64> = side
            .store
            .reads()
            .stored_offsets(&group, &side.topic, &[0, 1, 2])
            .await
            .expect("stored")
            .into_iter()
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let committed = common::kafka_committed(&common::kafka(), &group, &side.topic, &[0, 1, 2]);
            if committed == stored {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{group}: Kafka has {committed:?}, the database {stored:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    let (status, a) = side.api.get("/inventory/SKU-A").await;
    assert_eq!(status, 200);
    assert_eq!((a["on_hand"].as_i64(), a["reserved"].as_i64(), a["available"].as_i64()), (Some(5), Some(4), Some(1)));

    let (_, low) = side.api.get("/inventory?below=2").await;
    let low_skus: Vec<&str> =
        low["items"].as_array().expect("items").iter().map(|l| l["sku"].as_str().expect("sku")).collect();
    let want: Vec<&str> = levels.iter().filter(|l| l.available < 2).map(|l| l.sku.as_str()).collect();
    assert_eq!(low_skus, want);
    assert!(low_skus.contains(&"SKU-Z") && low_skus.contains(&"SKU-A") && !low_skus.contains(&"SKU-B"));

    // Walking the pages one item at a time yields every SKU once, in order.
    let mut walked = Vec::new();
    let mut path = "/inventory?limit=1".to_string();
    loop {
        let (status, page) = side.api.get(&path).await;
        assert_eq!(status, 200, "{page}");
        walked.extend(
            page["items"].as_array().expect("items").iter().map(|l| l["sku"].as_str().expect("sku").to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/inventory?limit=1&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(walked, levels.iter().map(|l| l.sku.clone()).collect::<Vec<_>>());

    let (status, summary) = side.api.get("/payments/summary?currency=EUR").await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(
        summary["currencies"],
        json!([{"currency": "EUR", "orders": 3, "authorized_minor": 0,
        "captured_minor": 2000, "refunded_minor": 0, "net_captured_minor": 2000}])
    );
    let (_, later) = side.api.get("/payments/summary?from=2999-01-01").await;
    assert_eq!(later["currencies"], json!([]));

    // The SKU-Z order was rejected (no stock): two orders wait for the warehouse.
    let (_, backlog) = side.api.get("/fulfilment/backlog?limit=1").await;
    assert_eq!(backlog["items"].as_array().expect("items").len(), 1);
    let cursor = backlog["next_cursor"].as_str().expect("a next page").to_string();
    let (_, rest) = side.api.get(&format!("/fulfilment/backlog?limit=2&cursor={cursor}")).await;
    assert_eq!(rest["items"].as_array().expect("items").len(), 1, "{rest}");
    assert_eq!(rest["next_cursor"], Value::Null);
    let (_, elsewhere) = side.api.get("/fulfilment/backlog?warehouse=NOWHERE").await;
    assert_eq!(elsewhere["items"], json!([]));

    for (path, status) in [
        ("/orders/not-a-uuid".to_string(), 400),
        (format!("/orders/{}", uuid::Uuid::new_v4()), 404),
        (format!("/orders/{}/timeline", uuid::Uuid::new_v4()), 404),
        (format!("/orders/{paid}?after=soon"), 400),
        ("/inventory/NOPE".to_string(), 404),
        ("/inventory?belo=2".to_string(), 400),
        ("/inventory?below=two".to_string(), 400),
        ("/inventory?limit=0".to_string(), 400),
        ("/inventory?limit=5000".to_string(), 400),
        ("/payments/summary?currency=eur".to_string(), 400),
        ("/payments/summary?from=yesterday".to_string(), 400),
        ("/fulfilment/backlog?cursor=zzz".to_string(), 400),
        ("/no/such/thing".to_string(), 404),
    ] {
        let (got, body) = side.api.get(&path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert!(body["error"].is_string() && body["message"].is_string(), "{path}: {body}");
    }

    let (status, empty) = side.api.get("/payments/summary?from=2026-02-01&to=2026-01-01").await;
    assert_eq!((status, &empty["currencies"]), (200, &json!([])), "a period ending before it starts is empty");

    let (_, metrics) = side.api.get_text("/metrics").await;
    assert!(
        metrics.contains(r#"orderflow_api_requests_total{route="/inventory/{sku}",status="404"}"#),
        "requests are counted per route template and status: {metrics}"
    );

    let (status, spec) = side.api.get("/openapi.json").await;
    assert_eq!(status, 200);
    for path in [
        "/orders/{order_id}",
        "/orders/{order_id}/timeline",
        "/inventory",
        "/inventory/{sku}",
        "/payments/summary",
        "/fulfilment/backlog",
    ] {
        assert!(spec["paths"][path]["get"].is_object(), "{path} missing from the OpenAPI document");
    }
    let _ = (&side.database_url, &side.prefix);
}

/// The number in the `td.n` cell of the row with `data-<attribute>="<value>"`.
fn row_number(dom: &str, attribute: &str, value: &str) -> String {
    let marker = format!("data-{attribute}=\"{value}\"");
    let at = dom.find(&marker).unwrap_or_else(|| panic!("no row {marker} in the page"));
    let cell = at + dom[at..].find("class=\"n\">").expect("number cell") + "class=\"n\">".len();
    dom[cell..cell + dom[cell..].find('<').expect("cell end")].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_asks_for_a_token_then_renders_in_headless_chromium_the_numbers_the_api_returns() {
    let side = ReadSide::start(true).await;
    side.post("/inventory/SKU-A/adjustments", json!({"warehouse": "BER-1", "delta": 3, "reason": "received"})).await;
    // Stocked before the orders: adjustments and orders are on different partitions.
    side.all_caught_up().await;
    let (paid, _) = side.place(lines("SKU-A", 2)).await;
    side.place(lines("SKU-Z", 1)).await;
    side.post(
        &format!("/orders/{paid}/payments"),
        json!({"status": "captured", "amount_minor": 2000, "provider_ref": "p"}),
    )
    .await;
    let (bad, _) = side.place(lines("SKU-A", 1)).await;
    side.post(
        &format!("/orders/{bad}/payments"),
        json!({"status": "refunded", "amount_minor": 5, "provider_ref": "p"}),
    )
    .await;
    side.all_caught_up().await;
    let (status, data) = side.api.get("/dashboard.json").await;
    assert_eq!(status, 200, "{data}");
    assert_eq!(data["orders_total"], 3);
    // The SKU-Z order found no stock: rejected, so nothing is oversold.
    assert_eq!(data["inventory"]["oversold"], 0, "{data}");
    // The refund of an uncaptured order is refused and recorded: nothing waits for an operator.
    assert_eq!(data["dead_letters_total"], 0, "{data}");

    // Without a token the page asks for one and shows nothing.
    let (dom, console) = common::chromium_dom(&format!("{}/", side.api.base_url)).await;
    assert!(console.is_empty(), "the page wrote to the console: {console:#?}");
    assert!(dom.contains("data-state=\"login\""), "no token: the page must ask for one: {dom}");
    assert!(dom.contains("<form id=\"login\">"), "the login form is shown: {dom}");
    assert_eq!(common::text_of(&dom, "orders-total"), "–", "no data without a token");
    assert!(!dom.contains("data-sku="), "no data without a token");

    // A link carrying a read token in its fragment signs the tab in.
    let reader = common::token("only-read");
    let (dom, console) = common::chromium_dom(&format!("{}/#token={reader}", side.api.base_url)).await;
    assert!(console.is_empty(), "the page wrote to the console: {console:#?}");
    assert!(dom.contains("data-state=\"ready\""), "the page did not load its data: {dom}");
    assert!(!dom.contains(&reader), "the token is not left in the page");

    assert_eq!(common::text_of(&dom, "orders-total"), data["orders_total"].to_string());
    assert_eq!(common::text_of(&dom, "dead-letters-total"), data["dead_letters_total"].to_string());
    assert_eq!(common::text_of(&dom, "lag-total"), data["lag_total"].to_string());
    assert_eq!(common::text_of(&dom, "low-count"), data["inventory"]["low"].to_string());
    assert_eq!(common::text_of(&dom, "oversold-count"), data["inventory"]["oversold"].to_string());
    for s in data["orders_by_status"].as_array().expect("statuses") {
        assert_eq!(row_number(&dom, "status", s["status"].as_str().expect("status")), s["orders"].to_string());
    }
    assert!(dom.contains("data-sku=\"SKU-Z\""), "the empty SKU is listed as low");
    assert!(!dom.contains("class=\"oversold\" data-sku"), "no SKU is oversold");
    let decisions = data["decisions"].as_array().expect("decisions");
    let rejected = decisions.iter().find(|d| d["status"] == "rejected").expect("the SKU-Z order was rejected");
    assert_eq!(rejected["orders"], 1, "{data}");
    for d in decisions {
        assert_eq!(row_number(&dom, "decision", d["status"].as_str().expect("status")), d["orders"].to_string());
    }
    let revenue = &data["revenue_per_day"][0];
    assert_eq!(revenue["net_captured_minor"], 2000, "{data}");
    assert!(dom.contains(&format!("data-minor=\"{}\"", revenue["net_captured_minor"])), "revenue row shown");
    assert!(dom.contains("<svg"), "the revenue chart is drawn");
}

/// The transactions committed in the database `url` names, as PostgreSQL counts them. A
/// backend reports its counts when it goes idle, at the latest 10 s later: wait that long.
async fn committed_transactions(url: &str) -> i64 {
    use sqlx::Connection;
    tokio::time::sleep(Duration::from_secs(11)).await;
    let name = url.rsplit('/').next().unwrap_or_default().to_string();
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = $1")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .expect("xact_commit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_on_a_partition_the_topic_lacks_is_refused_at_once_and_fifty_waiters_cost_the_database_what_one_costs() {
    let topic = common::fresh_topic("api-after", 2).await;
    let database_url = common::fresh_database().await;
    let read_wait = Duration::from_secs(3);
    let api = common::ServeApi::spawn(&database_url, &topic, &common::fresh_group_prefix(), read_wait).await;
    let waiters = |n: usize, after: &'static str| {
        let api = &api;
        futures::future::join_all((0..n).map(move |_| api.get(after)))
    };

    // 404 unknown_partition, not 503 not_caught_up: refused before any wait.
    let answers = waiters(50, "/payments/summary?after=99999:1").await;
    assert!(answers.iter().all(|(status, body)| *status == 404 && body["error"] == "unknown_partition"), "{answers:?}");

    // Partition 0 exists but nothing is applied there: each waiter waits the read wait.
    let before = committed_transactions(&database_url).await;
    let one = waiters(1, "/payments/summary?after=0:1000").await;
    assert!(one.iter().all(|(status, body)| *status == 503 && body["error"] == "not_caught_up"), "{one:?}");
    let after_one = committed_transactions(&database_url).await;
    let fifty = waiters(50, "/payments/summary?after=0:1000").await;
    assert!(fifty.iter().all(|(status, body)| *status == 503 && body["error"] == "not_caught_up"), "{fifty:?}");
    let after_fifty = committed_transactions(&database_url).await;
    let (cost_of_one, cost_of_fifty) = (after_one - before, after_fifty - after_one);
    assert!(
        cost_of_fifty < 2 * cost_of_one,
        "fifty waiters committed {cost_of_fifty} transactions, one waiter {cost_of_one}: they share one poller"
    );
}

/// Runs `statements` on the database `url` names, as an operator's hand would.
async fn write_rows(url: &str, statements: &[String]) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    for statement in statements {
        sqlx::query(statement).execute(&mut conn).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sums_past_bigint_are_exact_a_row_the_code_cannot_read_is_500_and_control_characters_are_400() {
    let topic = common::fresh_topic("api-data", 1).await;
    let database_url = common::fresh_database().await;
    let api =
        common::ServeApi::spawn(&database_url, &topic, &common::fresh_group_prefix(), Duration::from_secs(1)).await;
    // Three captures a PSP token can reach, each near i64::MAX: their sum needs 65 bits.
    let now_us = chrono::Utc::now().timestamp_micros();
    let big: i64 = 9_000_000_000_000_000_000;
    let rows: Vec<String> = (0..3)
        .map(|i| {
            format!(
                "INSERT INTO payment_orders (order_id, currency, order_total_minor, authorized_minor, captured_minor,
                 refunded_minor, status, placed_at_us, captured_at_us)
                 VALUES ('00000000-0000-4000-8000-00000000000{i}', 'EUR', {big}, {big}, {big}, {}, 'captured', {now_us}, {now_us})",
                i
            )
        })
        .collect();
    write_rows(&database_url, &rows).await;
    let (status, summary) = api.get("/payments/summary").await;
    assert_eq!(status, 200, "{summary}");
    let eur = &summary["currencies"][0];
    assert_eq!(eur["captured_minor"], json!("27000000000000000000"), "{summary}");
    assert_eq!(eur["refunded_minor"], json!(3), "a total JSON holds exactly stays a number: {summary}");
    assert_eq!(eur["net_captured_minor"], json!("26999999999999999997"), "{summary}");
    let (status, dashboard) = api.get("/dashboard.json").await;
    assert_eq!(status, 200, "{dashboard}");
    assert_eq!(dashboard["revenue_per_day"][0]["net_captured_minor"], json!("26999999999999999997"), "{dashboard}");

    // A value the code cannot read (a status edited by hand): 500, logged, not "did not answer".
    write_rows(
        &database_url,
        &["INSERT INTO fulfilment_orders (order_id, status, placed_at_us) VALUES ('00000000-0000-4000-8000-0000000000ff', 'lost-in-space', 0)".to_string()],
    )
    .await;
    let (status, answer) = api.get("/dashboard.json").await;
    assert_eq!((status, answer["error"].as_str()), (500, Some("internal")), "{answer}");
    assert!(
        !answer["message"].as_str().unwrap_or_default().contains("lost-in-space"),
        "no stored text is sent: {answer}"
    );

    // A control character in any text parameter is the caller's mistake, named.
    for (path, parameter) in [
        ("/inventory?cursor=A%00B", "cursor"),
        ("/inventory/A%00B", "sku"),
        ("/fulfilment/backlog?warehouse=%01", "warehouse"),
    ] {
        let (status, answer) = api.get(path).await;
        assert_eq!((status, answer["parameter"].as_str()), (400, Some(parameter)), "{path}: {answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_timeline_is_read_a_page_at_a_time_in_log_order() {
    let topic = common::fresh_topic("api-pages", 1).await;
    let database_url = common::fresh_database().await;
    let api =
        common::ServeApi::spawn(&database_url, &topic, &common::fresh_group_prefix(), Duration::from_secs(1)).await;
    let order = "00000000-0000-4000-8000-000000000042";
    let rows: Vec<String> = (0..5)
        .map(|offset| {
            format!(
                "INSERT INTO history_entries (order_id, event_id, kind, occurred_at_us, partition_id, record_offset, summary)
                 VALUES ('{order}', '00000000-0000-4000-8000-0000000001{offset:02}', 'OrderCancelled', 0, 0, {offset}, 'cancel')"
            )
        })
        .collect();
    write_rows(&database_url, &rows).await;
    let mut offsets = Vec::new();
    let mut path = format!("/orders/{order}/timeline?limit=2");
    let mut pages = 0;
    loop {
        let (status, page) = api.get(&path).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        let events = page["events"].as_array().expect("events");
        assert!(events.len() <= 2, "{page}");
        offsets.extend(events.iter().map(|e| e["offset"].as_i64().expect("offset")));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/orders/{order}/timeline?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!((offsets, pages), ((0..5).collect::<Vec<i64>>(), 3));
    let (status, answer) = api.get(&format!("/orders/{order}/timeline?cursor=0")).await;
    assert_eq!((status, answer["parameter"].as_str()), (400, Some("cursor")), "{answer}");
}
