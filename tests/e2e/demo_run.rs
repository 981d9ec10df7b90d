//! `orderflow demo` with nothing running beforehand: embedded broker, SQLite in the working
//! directory, checkout, every group with two members, load; the summary it prints agrees with
//! what the load appended and with itself, and the dashboard it keeps serving afterwards
//! shows every group, processes included, caught up.
use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common;

fn field(summary: &str, name: &str) -> u64 {
    summary
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from: {summary}"))
}

/// The `  name  count` lines under `header`, as a map.
fn section(stdout: &str, header: &str) -> BTreeMap<String, u64> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with(header))
        .skip(1)
        .take_while(|l| l.starts_with("  ") && !l.starts_with("  the load"))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some((words.next()?.to_string(), words.next_back()?.parse().ok()?))
        })
        .collect()
}

/// The demo's process, killed if the test ends before it asked it to stop (a failed
/// assertion must not leave a demo serving for ever).
struct Demo(Option<std::process::Child>);

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the demo with `--serve` and reads its output up to the line saying the dashboard
/// keeps serving (or to its end, if it stopped first). Returns the child, still running,
/// and what it printed.
fn run_demo(dir: &std::path::Path) -> (Demo, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(["demo", "--duration", "4s", "--rate", "120", "--serve", "127.0.0.1:0"])
        .current_dir(dir)
        // Nothing from the surrounding environment may point it at real services.
        .env_remove("ORDERFLOW_BROKERS")
        .env_remove("ORDERFLOW_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run the demo");
    let stdout = child.stdout.take().expect("stdout");
    let (lines, printed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let last = line.starts_with("the dashboard keeps serving");
            if lines.send(line).is_err() || last {
                break;
            }
        }
    });
    let mut out = String::new();
    // The demo runs 4 s, then settles, payment timers (10 s) included.
    while let Ok(line) = printed.recv_timeout(Duration::from_secs(300)) {
        out.push_str(&line);
        out.push('\n');
        if line.starts_with("the dashboard keeps serving") {
            break;
        }
    }
    (Demo(Some(child)), out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_with_no_services_its_counts_agree_and_its_dashboard_shows_every_group_caught_up() {
    let dir = std::env::temp_dir().join(format!("orderflow-demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (mut demo, stdout) = run_demo(&dir);
    assert!(stdout.contains("the dashboard keeps serving"), "the demo stopped or hung before its summary:\n{stdout}");
    let dashboard = stdout
        .lines()
        .find_map(|l| l.strip_prefix("dashboard on "))
        .unwrap_or_else(|| panic!("no dashboard address: {stdout}"))
        .to_string();

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
    let process = section(&stdout, "order process decisions");
    let fulfilment = section(&stdout, "orders by fulfilment status:");
    let logged = section(&stdout, "decisions on the log");
    assert_eq!(fulfilment.values().sum::<u64>(), placed, "orders by status add up to the orders placed");
    assert_eq!(process.values().sum::<u64>(), placed, "the order process has a status for every order");
    assert!(stdout.contains("rejected") && stdout.contains("delivered"), "the demo shows decisions: {stdout}");
    let lowest: i64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("lowest available stock of any SKU: "))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no stock line: {stdout}"));
    assert!(lowest >= 0, "stock went negative: {stdout}");

    // Settled means every order decided and every payment timer fired and applied: the
    // order process's statuses, the fulfilment view and the decisions on the log tell one
    // story, checked here from the printed sections themselves.
    let of = |map: &BTreeMap<String, u64>, names: &[&str]| {
        names.iter().map(|n| map.get(*n).copied().unwrap_or(0)).sum::<u64>()
    };
    assert_eq!(of(&process, &["pending", "confirmed"]), 0, "an order was left undecided or before its timer: {stdout}");
    assert_eq!(of(&fulfilment, &["awaiting_payment"]), 0, "{stdout}");
    assert_eq!(of(&process, &["paid"]), of(&fulfilment, &["ready_to_ship", "packed"]), "{stdout}");
    for same in ["shipped", "delivered", "cancelled", "rejected", "expired"] {
        assert_eq!(of(&process, &[same]), of(&fulfilment, &[same]), "{same}: {stdout}");
    }
    assert_eq!(of(&process, &["rejected"]), of(&logged, &["OrderRejected"]), "{stdout}");
    assert_eq!(of(&process, &["expired"]), of(&logged, &["OrderExpired"]), "{stdout}");
    assert!(of(&process, &["expired"]) > 0, "orders left unpaid expire before the demo ends: {stdout}");
    assert!(stdout.contains("agreement: order_status, fulfilment and the decisions on the log agree"), "{stdout}");
    // The shop stays stocked: only the limited edition runs out.
    let rejected = of(&process, &["rejected"]);
    assert!(rejected * 10 < placed, "{rejected} of {placed} rejected: {stdout}");

    // The dashboard after the run: one lag row per group, the processes' groups among them,
    // every one at lag 0; and a screenshot of it.
    let (dom, console) = common::chromium_dom(&dashboard).await;
    assert!(console.is_empty(), "the page wrote to the console: {console:#?}");
    assert!(dom.contains("data-state=\"ready\""), "the page did not load its data: {dom}");
    let lag_table = &dom[dom.find("id=\"lag\"").expect("lag table")..];
    // Up to the next panel (each group's partitions are a table inside its own row).
    let lag_table = &lag_table[..lag_table.find("<section").expect("the panel after the lag")];
    let rows: Vec<&str> = lag_table.split("<tr ").filter(|r| r.contains("data-runs=")).collect();
    let runs: Vec<String> =
        rows.iter().filter_map(|r| r.split("data-runs=\"").nth(1)?.split('"').next().map(String::from)).collect();
    let mut sorted = runs.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["fulfilment", "history", "inventory", "order-process", "payment", "stock"],
        "one row per group, processes included: {lag_table}"
    );
    assert!(rows.iter().all(|r| r.contains("data-lag=\"0\"")), "every group caught up: {lag_table}");
    assert_eq!(common::text_of(&dom, "lag-total"), "0", "{lag_table}");
    // Kept after the run (target/tmp), for a reader to look at.
    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("demo-dashboard.png");
    common::chromium_screenshot(&dashboard, &screenshot, 1400, 1000).await;

    let mut child = demo.0.take().expect("the demo runs");
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let status = tokio::task::spawn_blocking(move || child.wait()).await.expect("join").expect("wait for the demo");
    assert!(status.success(), "the demo ends cleanly on Ctrl-C: {status}");
    let _ = std::fs::remove_dir_all(&dir);
}
