//! The pipeline over SASL_SSL with ACLs (`infra/local/up --kafka-security sasl_ssl`): the
//! checkout, every group, a rebuild and the query API each run under their own SCRAM
//! user through the ordinary `ORDERFLOW_KAFKA_*` settings; the checkout's user cannot
//! read, a group's user cannot write, and a wrong password is a clear error at once.
use crate::common;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use consumers::member::run_member;
use consumers::ConsumerError;
use infra::KafkaSettings;
use projections::registry::ProcessKind;
use projections::store::Store;
use projections::ProjectionKind;
use serde_json::json;

/// What `infra/local/up --kafka-security sasl_ssl` exported, and the users' passwords.
struct Secured {
    brokers: String,
    /// The `ORDERFLOW_KAFKA_*` settings every client of the cluster uses (TLS, SASL).
    client: Vec<(String, String)>,
    passwords: BTreeMap<String, String>,
}

fn secured() -> &'static Secured {
    static SECURED: OnceLock<Secured> = OnceLock::new();
    SECURED.get_or_init(|| {
        let up = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/local/up");
        let output =
            std::process::Command::new(up).args(["--kafka-security", "sasl_ssl"]).output().expect("run infra/local/up");
        assert!(
            output.status.success(),
            "infra/local/up --kafka-security sasl_ssl: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let exports: BTreeMap<String, String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect();
        let users = std::fs::read_to_string(&exports["ORDERFLOW_LOCAL_KAFKA_USERS"]).expect("users file");
        let passwords =
            users.lines().filter_map(|l| l.split_once('=')).map(|(u, p)| (u.to_string(), p.to_string())).collect();
        let client = exports
            .iter()
            .filter(|(k, _)| k.starts_with("ORDERFLOW_KAFKA_"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Secured { brokers: exports["ORDERFLOW_BROKERS"].clone(), client, passwords }
    })
}

/// The environment of an orderflow process running as `user`.
fn env_as(user: &str, password: &str) -> Vec<(String, String)> {
    let s = secured();
    let mut env = s.client.clone();
    env.push(("ORDERFLOW_BROKERS".into(), s.brokers.clone()));
    env.push(("ORDERFLOW_KAFKA_SASL_USERNAME".into(), user.into()));
    env.push(("ORDERFLOW_KAFKA_SASL_PASSWORD".into(), password.into()));
    env
}

/// Client settings of `user`, made the way the binary makes them: from those variables.
fn kafka_as(user: &str) -> KafkaSettings {
    let password = secured().passwords[user].clone();
    kafka_with_password(user, &password)
}

fn kafka_with_password(user: &str, password: &str) -> KafkaSettings {
    let mut settings = KafkaSettings::new(secured().brokers.clone());
    settings.overrides = infra::passthrough_from(env_as(user, password)).expect("settings");
    settings
}

/// Why a member running as `user` stopped on its own.
async fn member_refusal(kind: ProjectionKind, topic: &str, user: &str, store: &Store) -> ConsumerError {
    let config = common::member_config(kind, topic, &store.group(kind));
    let mut member = run_member(config, &kafka_as(user), store.clone()).expect("member");
    let ended = tokio::time::timeout(Duration::from_secs(30), member.wait()).await;
    match ended.expect("a refused member stops instead of retrying for ever") {
        Err(e) => e,
        Ok(()) => panic!("a member running as {user} must be refused"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_pipeline_runs_over_sasl_ssl_with_each_service_under_its_own_principal_and_acls_hold() {
    common::init_logs();
    let admin = kafka_as("admin");
    // The ACLs cover the topics named `orders…`.
    let topic = orderflow::kit::fresh_topic(&admin, "orders-sasl", 2).await.expect("the admin creates the topic");

    // The checkout publishes as `checkout`.
    let checkout = common::TestCheckout::spawn(&kafka_as("checkout"), &topic, Duration::from_secs(10)).await;
    let (status, placed) = checkout
        .post(
            "/orders",
            &json!({"customer_id": "c-1", "currency": "EUR",
                "lines": [{"sku": "SKU-S", "quantity": 2, "unit_price_minor": 500}], "ship_to": {"country": "DE"}}),
            None,
        )
        .await;
    assert_eq!(status, 202, "{placed}");
    let order = placed["order_id"].as_str().expect("order id").to_string();
    let (status, paid) = checkout
        .post(
            &format!("/orders/{order}/payments"),
            &json!({"status": "captured", "amount_minor": 1000, "provider_ref": "p"}),
            None,
        )
        .await;
    assert_eq!(status, 202, "{paid}");

    // Every group applies it under its own user (groups `orderflow-<projection>`, which
    // its ACL names).
    let database_url = common::fresh_database().await;
    let store = Store::connect(&database_url).await.expect("store");
    let mut members = Vec::new();
    for kind in ProjectionKind::ALL {
        let group = store.group(kind);
        let member = run_member(common::member_config(kind, &topic, &group), &kafka_as(kind.name()), store.clone())
            .unwrap_or_else(|e| panic!("{group}: {e}"));
        members.push(member);
        common::wait_group_caught_up(&store, &kafka_as(kind.name()), kind, &group, &topic).await;
    }
    let view = store.reads().order_view(&order).await.expect("view").expect("the order is projected");
    assert_eq!(view.payment.as_ref().map(|p| p.captured_minor), Some(1000), "{view:?}");

    // A rebuild of the payment projection runs as the payment group's user.
    let env = env_as("payment", &secured().passwords["payment"]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let rebuilt = common::run_orderflow_with(
        &["rebuild", "payment", "--topic", &topic, "--database-url", &database_url, "--timeout", "90s", "--json"],
        &env,
    );
    assert!(rebuilt.contains("\"switched\""), "{rebuilt}");

    // The query API reads log ends as `query`: the dashboard's lag knows them.
    let api = common::ServeApi::spawn_with_kafka(
        &kafka_as("query"),
        &database_url,
        &topic,
        "orderflow",
        Duration::from_secs(2),
    )
    .await;
    let (status, dashboard) = api.get("/dashboard.json").await;
    assert_eq!(status, 200, "{dashboard}");
    let lag = dashboard["lag"].as_array().expect("lag rows");
    assert!(!lag.is_empty() && lag.iter().all(|r| r["log_end"].is_i64()), "log ends read over SASL_SSL: {dashboard}");
    // The processes decide under their own users (reading every topic, writing the
    // requests and the decisions, their own groups): SKU-S was never stocked, so the order is rejected.
    let mut deciders = Vec::new();
    for process in ProcessKind::ALL {
        let mut config = consumers::MemberConfig::new(process, &topic);
        config.group = store.group(process);
        config.session_timeout = Duration::from_secs(6);
        deciders.push(run_member(config, &kafka_as(process.name()), store.clone()).expect("process member"));
    }
    let relay = consumers::spawn_relay(store.outbox(), &kafka_as("order-process"), Default::default());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let decided = loop {
        let status = store.reads().order_status(order.parse().expect("uuid")).await.expect("status");
        if let Some(status) = status.filter(|s| s.status.is_decided()) {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "the processes did not decide over SASL_SSL");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(decided.status.as_str(), "rejected", "{decided:?}");
    relay.stop().await.expect("relay stops");
    for member in deciders.into_iter().chain(members) {
        member.stop().await.expect("stop");
    }

    // The checkout's user cannot read: a member running as it is refused and stops.
    let fresh = Store::connect(&common::fresh_database().await).await.expect("store");
    let refused = member_refusal(ProjectionKind::Payment, &topic, "checkout", &fresh).await;
    assert!(matches!(refused, ConsumerError::Denied(_)), "{refused}");
    // A group's user cannot use another group's id either.
    let refused = member_refusal(ProjectionKind::Inventory, &topic, "payment", &fresh).await;
    assert!(matches!(refused, ConsumerError::Denied(_)), "{refused}");

    // A group's user cannot write: the checkout answers that the broker refuses it, and
    // nothing is appended.
    let ends_before = orderflow::kit::log_ends(&admin, &topic).await.expect("log ends");
    let impostor = common::TestCheckout::spawn(&kafka_as("payment"), &topic, Duration::from_secs(10)).await;
    let (status, answer) = impostor.post(&format!("/orders/{order}/cancel"), &json!({}), None).await;
    assert_eq!((status, answer["error"].as_str()), (503, Some("broker_refused")), "{answer}");
    assert_eq!(orderflow::kit::log_ends(&admin, &topic).await.expect("log ends"), ends_before, "nothing appended");

    // The checkout's user cannot decide: a stock decision it writes to the decisions topic
    // (or a stock request to the requests topic) is refused by the broker, and nothing is
    // appended there.
    let codec = schemas::Codec::builtin();
    let forged = codec.encode(&schemas::samples::sample(schemas::EventKind::StockDecided)).expect("encode");
    let producer: rdkafka::producer::FutureProducer = kafka_as("checkout").client_config().create().expect("producer");
    for role in [schemas::TopicRole::Decisions, schemas::TopicRole::Stock] {
        let name = role.name(&topic);
        let ends_before = orderflow::kit::log_ends(&admin, &name).await.expect("log ends");
        let record = rdkafka::producer::FutureRecord::to(&name).key("forged").payload(&forged);
        let (err, _) = producer.send(record, Duration::from_secs(30)).await.expect_err("the broker refuses the write");
        assert_eq!(
            err.rdkafka_error_code(),
            Some(rdkafka::types::RDKafkaErrorCode::TopicAuthorizationFailed),
            "{name}: {err}"
        );
        assert_eq!(orderflow::kit::log_ends(&admin, &name).await.expect("log ends"), ends_before, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_a_clear_error_at_once_not_a_hang() {
    common::init_logs();
    let wrong = kafka_with_password("checkout", "not-the-password");
    // Had the refusal gone unseen, the check would end at its timeout with a metadata
    // error, not `Denied`: the variant is the proof that it was recognised, not waited out.
    let err = infra::access_check::check_access(&wrong, None, Duration::from_secs(30)).await.expect_err("refused");
    assert!(matches!(err, infra::InfraError::Denied(_)), "{err}");
    assert!(err.to_string().contains("SASL authentication"), "the broker's reason is named: {err}");

    // The binary says the same and exits non-zero.
    let env = env_as("admin", "not-the-password");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(["topics", "create", "--topic", "orders-never", "--partitions", "1"])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("RUST_LOG", "error")
        .output()
        .expect("run orderflow");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a refused command fails");
    assert!(stderr.contains("kafka refused access") && stderr.contains("SASL authentication"), "{stderr}");
}
