//! `orderflow dead-letters retry|skip` on records the payment group parked, against the
//! real broker and PostgreSQL, with the group running beside the operator.
use crate::common;

use std::time::Duration;

use consumers::member::run_member;
use projections::store::Store;
use projections::ProjectionKind;
use serde_json::{json, Value};

fn orderflow(args: &[&str]) -> (bool, Value, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("run orderflow");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let json = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (output.status.success(), json, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_keeps_a_still_invalid_record_parked_and_skip_unblocks_its_order_so_retry_applies_the_rest_in_order() {
    let kafka = common::kafka();
    let topic = common::fresh_topic("dead-letter-actions", 2).await;
    let checkout = common::TestCheckout::spawn(&kafka, &topic, Duration::from_secs(5)).await;
    let database_url = common::fresh_database().await;
    let prefix = common::fresh_group_prefix();
    let store = Store::connect(&database_url).await.expect("store").with_group_prefix(&prefix).expect("prefix");
    let group = store.group(ProjectionKind::Payment);
    let member = run_member(common::member_config(ProjectionKind::Payment, &topic, &group), &kafka, store.clone())
        .expect("member");

    let post = |path: String, body: Value| {
        let checkout = &checkout;
        async move {
            let (status, answer) = checkout.post(&path, &body, None).await;
            assert_eq!(status, 202, "{answer}");
            answer
        }
    };
    let placed = post(
        "/orders".into(),
        json!({"customer_id": "c", "currency": "EUR", "lines": [{"sku": "S", "quantity": 2, "unit_price_minor": 1000}],
               "ship_to": {"country": "DE"}}),
    )
    .await;
    let order = placed["order_id"].as_str().expect("order id").to_string();
    let payment = |status: &str, amount: i64| json!({"status": status, "amount_minor": amount, "provider_ref": "psp"});
    // A capture above the order total is the caller's mistake: refused and recorded, it
    // parks nothing. Bytes no schema reads, keyed by the order, are parked; the correct
    // capture after them waits behind them.
    post(format!("/orders/{order}/payments"), payment("captured", 999_999)).await;
    let producer: rdkafka::producer::FutureProducer = kafka.client_config().create().expect("producer");
    let unreadable = rdkafka::producer::FutureRecord::to(&topic).key(&order).payload(&[0u8, 0, 0, 0, 99, 1, 2][..]);
    producer.send(unreadable, Duration::from_secs(10)).await.expect("sent");
    post(format!("/orders/{order}/payments"), payment("captured", 2000)).await;
    common::wait_caught_up(&store, &kafka, &group, &topic).await;
    let parked = store.reads().dead_letters(&group).await.expect("dead letters");
    assert_eq!(parked.len(), 2, "{parked:#?}");
    let (bad, blocked) = (parked[0].id, parked[1].id);
    assert!(parked[0].reason.starts_with("undecodable"), "{}", parked[0].reason);
    assert!(parked[1].reason.starts_with("parked"), "{}", parked[1].reason);
    let refused = store.reads().list_dead_letters_with(Some(&group), None, false, 10).await.expect("all");
    assert!(
        refused[0].reason.contains("above the order total") && refused[0].status.as_str() == "skipped",
        "{refused:#?}"
    );

    // `orderflow dead-letters <action> <args…>` for this group and database.
    let dead_letters = |action: &str, args: &[&str]| {
        let mut all =
            vec!["dead-letters", action, "--group", &group, "--database-url", &database_url, "--group-prefix", &prefix];
        all.extend_from_slice(&["--operator", "alice"]);
        all.extend_from_slice(args);
        orderflow(&all)
    };
    let bad_id = bad.to_string();
    // Retrying the unreadable record fails again: it and the order stay parked, nothing changes.
    let (ok, outcome, stderr) = dead_letters("retry", &["--json", &bad_id]);
    assert!(ok, "{stderr}");
    assert_eq!(outcome["applied"], json!([]), "{outcome}");
    assert_eq!(outcome["still_parked"][0][0], bad, "{outcome}");
    let row = |store: &Store| {
        let store = store.clone();
        let order = order.clone();
        async move {
            store
                .reads()
                .snapshot()
                .await
                .expect("snapshot")
                .payments
                .into_iter()
                .find(|p| p.order_id.to_string() == order)
                .expect("row")
        }
    };
    assert_eq!(row(&store).await.captured_minor, 0);
    assert_eq!(store.reads().list_dead_letters(Some(&group), 10).await.expect("list").len(), 2);

    // Skip the unreadable one, then retry the order: the correct capture is applied.
    let (ok, skipped, stderr) = dead_letters("skip", &["--json", &bad_id]);
    assert!(ok, "{stderr}");
    assert_eq!(skipped, json!({"skipped": [bad]}));
    let (ok, outcome, stderr) = dead_letters("retry", &["--json", "--order", &order]);
    assert!(ok, "{stderr}");
    assert_eq!(outcome, json!({"applied": [blocked], "still_parked": []}));
    let paid = row(&store).await;
    assert_eq!((paid.captured_minor, paid.status.as_str()), (2000, "captured"));
    assert!(
        store.reads().list_dead_letters(Some(&group), 10).await.expect("list").is_empty(),
        "nothing is parked any more"
    );
    let all = store.reads().list_dead_letters_with(Some(&group), None, false, 10).await.expect("all");
    let statuses: Vec<&str> = all.iter().map(|d| d.status.as_str()).collect();
    assert_eq!(
        statuses,
        ["skipped", "skipped", "retried"],
        "the history of what was refused and what operators did stays"
    );
    let listed = common::run_orderflow(&[
        "dead-letters",
        "list",
        "--all",
        "--json",
        "--group",
        &group,
        "--database-url",
        &database_url,
    ]);
    let listed: Vec<&str> = listed.lines().filter_map(|l| l.split("\"status\":\"").nth(1)?.split('"').next()).collect();
    assert_eq!(listed, ["skipped", "skipped", "retried"], "`list --all` shows resolved records with their status");

    // The order is no longer held back: the running group applies its next event.
    post(format!("/orders/{order}/payments"), payment("refunded", 500)).await;
    common::wait_caught_up(&store, &kafka, &group, &topic).await;
    let refunded = row(&store).await;
    assert_eq!((refunded.refunded_minor, refunded.status.as_str()), (500, "partially_refunded"));

    // Acting on what is no longer parked, or on nothing, is an error an operator sees.
    let (ok, _, stderr) = dead_letters("skip", &[&bad_id]);
    assert!(!ok && stderr.contains("no parked record"), "{stderr}");
    let (ok, _, stderr) = dead_letters("retry", &[]);
    assert!(!ok && stderr.contains("required arguments"), "{stderr}");

    // Each action an operator took is in the audit trail: who (and as which role), what,
    // with which arguments, how it ended.
    let audit = store.operations().operator_actions(10).await.expect("audit");
    let seen: Vec<(&str, &str, bool)> =
        audit.iter().map(|a| (a.actor.as_str(), a.action.as_str(), a.outcome.starts_with("ok"))).collect();
    assert_eq!(
        seen,
        [
            ("alice as postgres", "dead-letters skip", false),
            ("alice as postgres", "dead-letters retry", true),
            ("alice as postgres", "dead-letters skip", true),
            ("alice as postgres", "dead-letters retry", true),
        ],
        "{audit:#?}"
    );
    assert!(audit[1].arguments.contains(&order), "the arguments are recorded: {}", audit[1].arguments);
    member.stop().await.expect("stop");
}
