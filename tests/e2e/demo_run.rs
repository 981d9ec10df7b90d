//! `orderflow demo` with nothing running beforehand: embedded broker, SQLite in the working
//! directory, checkout, three groups of two members, load; the summary it prints agrees with
//! what the load appended.
use std::process::Command;

fn field(summary: &str, name: &str) -> u64 {
    summary
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from: {summary}"))
}

#[test]
fn the_demo_runs_with_no_services_and_its_summary_matches_what_was_appended() {
    let dir = std::env::temp_dir().join(format!("orderflow-demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let output = Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(["demo", "--duration", "4s", "--rate", "120"])
        .current_dir(&dir)
        // Nothing from the surrounding environment may point it at real services.
        .env_remove("ORDERFLOW_BROKERS")
        .env_remove("ORDERFLOW_DATABASE_URL")
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(dir.join("orderflow-demo.db").exists(), "SQLite file not in the working directory");
    for group in ["inventory", "payment", "fulfilment"] {
        assert!(stdout.contains(&format!("group {group}: lag reached zero")), "{stdout}");
    }
    let summary = stdout.lines().find(|l| l.starts_with("summary:")).expect("summary line");
    let placed = field(summary, "orders_placed");
    assert!(placed > 10, "the load barely ran: {summary}");
    assert_eq!(field(summary, "payment_rows"), placed, "every placed order has a payment row");
    assert_eq!(field(summary, "fulfilment_rows"), placed, "every placed order has a fulfilment row");
    assert_eq!(field(summary, "dead_letters"), 0, "a clean load parks nothing");
    let section_sum = |header: &str| -> u64 {
        stdout
            .lines()
            .skip_while(|l| !l.starts_with(header))
            .skip(1)
            .take_while(|l| l.starts_with("  ") && !l.starts_with("  the load"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(section_sum("orders by fulfilment status:"), placed, "orders by status add up to the orders placed");
    assert_eq!(section_sum("order process decisions"), placed, "the order process has a status for every order");
    assert!(stdout.contains("rejected") && stdout.contains("delivered"), "the demo shows decisions: {stdout}");
    let lowest: i64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("lowest available stock of any SKU: "))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no stock line: {stdout}"));
    assert!(lowest >= 0, "stock went negative: {stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
