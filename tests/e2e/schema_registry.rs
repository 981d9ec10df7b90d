//! `orderflow schemas register|check` against a real Confluent-compatible registry
//! (Apicurio Registry 3.x, started by `infra/local/up --schema-registry`): the contract
//! registers under the FULL rule, registering again finds the same ids, and a schema that
//! breaks compatibility is refused by the registry and reported by `schemas check`.
use crate::common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use infra::schema_registry::{RegistryClient, RegistryError};

/// The registry's URL, starting it (once per test binary) if it does not run yet.
fn registry_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let up = Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/local/up");
        let output = std::process::Command::new(up).arg("--schema-registry").output().expect("run infra/local/up");
        assert!(
            output.status.success(),
            "infra/local/up --schema-registry: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("export ORDERFLOW_SCHEMA_REGISTRY_URL="))
            .expect("the registry's URL is exported")
            .to_string()
    })
}

fn schemas(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(["schemas"])
        .args(args)
        .env("ORDERFLOW_SCHEMA_REGISTRY_URL", registry_url())
        .env("RUST_LOG", "error")
        .output()
        .expect("run orderflow schemas")
}

/// A copy of the contract with `v2` added as version 2 of OrderCancelled.
fn contract_with_order_cancelled_v2(v2: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let dir = std::env::temp_dir().join(format!("orderflow-contract-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for entry in std::fs::read_dir(root.join("avro")).expect("avro dir") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, dir.join(path.file_name().expect("name"))).expect("copy");
    }
    std::fs::copy(root.join("tests/fixtures").join(v2), dir.join("order_cancelled.v2.avsc")).expect("copy v2");
    let mut manifest: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).expect("manifest")).expect("json");
    manifest.push(serde_json::json!({"subject": "com.orderflow.events.OrderCancelled", "version": 2, "id": 99,
        "file": "order_cancelled.v2.avsc"}));
    std::fs::write(dir.join("manifest.json"), serde_json::to_string_pretty(&manifest).expect("json")).expect("write");
    dir
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_registers_once_under_the_full_rule_and_an_incompatible_schema_is_refused_and_reported() {
    common::init_logs();
    let first = schemas(&["register"]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let again = schemas(&["register"]);
    assert_eq!(stdout(&again), stdout(&first), "registering again finds the same ids");
    assert_eq!(stdout(&first).lines().count(), schemas::EventKind::ALL.len(), "one line per schema");

    let checked = schemas(&["check"]);
    assert!(checked.status.success(), "{}{}", stdout(&checked), String::from_utf8_lossy(&checked.stderr));
    assert!(stdout(&checked).lines().all(|l| l.contains("compatible with the registry")), "{}", stdout(&checked));

    // A required field without a default: old records cannot be read. The registry
    // refuses to register it, and `schemas check` says so (as the gate does for the files).
    let client = RegistryClient::new(registry_url(), Duration::from_secs(10)).expect("client");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/tests/fixtures");
    let incompatible = std::fs::read_to_string(root.join("order_cancelled.v2.incompatible.avsc")).expect("fixture");
    let refused = client.register("com.orderflow.events.OrderCancelled", &incompatible).await;
    assert!(matches!(refused, Err(RegistryError::Refused { status: 409, .. })), "{refused:?}");
    let dir = contract_with_order_cancelled_v2("order_cancelled.v2.incompatible.avsc");
    let checked = schemas(&["check", "--dir", dir.to_str().expect("utf-8")]);
    assert!(!checked.status.success(), "an incompatible schema must fail the check: {}", stdout(&checked));
    assert!(
        stdout(&checked).contains("OrderCancelled v2 (order_cancelled.v2.avsc): INCOMPATIBLE with the registry"),
        "{}",
        stdout(&checked)
    );

    // An added optional field is compatible both ways: checked, then registered as v2.
    let dir = contract_with_order_cancelled_v2("order_cancelled.v2.compatible.avsc");
    let dir = dir.to_str().expect("utf-8");
    let checked = schemas(&["check", "--dir", dir]);
    assert!(checked.status.success(), "{}", stdout(&checked));
    let registered = schemas(&["register", "--dir", dir]);
    assert!(registered.status.success(), "{}", String::from_utf8_lossy(&registered.stderr));
    assert!(
        stdout(&registered).contains("OrderCancelled v2 (order_cancelled.v2.avsc) → id"),
        "{}",
        stdout(&registered)
    );
}

#[test]
fn a_registry_that_does_not_answer_is_a_transient_error_naming_it() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let client = RegistryClient::new("http://127.0.0.1:1", Duration::from_secs(2)).expect("client");
    let err = runtime.block_on(client.schema(1)).expect_err("nothing listens there");
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("http://127.0.0.1:1"), "{err}");
    assert!(matches!(RegistryClient::new("ftp://x", Duration::from_secs(1)), Err(RegistryError::BadUrl(_))));
}
