//! Helpers shared by the end-to-end tests: each test gets its own topic (and later its
//! own group and database) on the real broker named by `ORDERFLOW_BROKERS`. What the bench
//! and the demo need too (fresh topics and databases, log ends, waiting until a group has
//! caught up) is `orderflow::kit`; these wrappers only add the tests' environment and
//! panics.
#![allow(dead_code)]

use std::time::Duration;

use infra::KafkaSettings;
use orderflow::kit;

/// Sends this test binary's logs to `$ORDERFLOW_TEST_LOG` when that is set (for
/// investigating a failure); otherwise logs are off.
pub fn init_logs() {
    if let Ok(path) = std::env::var("ORDERFLOW_TEST_LOG") {
        if let Ok(file) = std::fs::File::create(path) {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_writer(std::sync::Mutex::new(file))
                .with_ansi(false)
                .try_init();
        }
    }
}

/// The real broker. Tests of real paths never fall back to a mock: without a broker
/// they fail and say how to start one.
pub fn kafka() -> KafkaSettings {
    init_logs();
    let brokers = std::env::var("ORDERFLOW_BROKERS")
        .expect("ORDERFLOW_BROKERS is not set: run `eval \"$(infra/local/up)\"` before the tests");
    KafkaSettings::new(brokers)
}

/// A fresh topic with a unique name, so tests never see each other's records.
pub async fn fresh_topic(prefix: &str, partitions: i32) -> String {
    kit::fresh_topic(&kafka(), prefix, partitions).await.expect("create topic")
}

/// A database of its own for one test, on the PostgreSQL named by `ORDERFLOW_DATABASE_URL`
/// (left behind for investigating a failure, until a run [`STALE_AFTER`] later).
pub async fn fresh_database() -> String {
    let admin_url = std::env::var("ORDERFLOW_DATABASE_URL")
        .expect("ORDERFLOW_DATABASE_URL is not set: run `eval \"$(infra/local/up)\"` before the tests");
    drop_stale_databases(&admin_url);
    kit::TempDatabases::new(&admin_url, "test").fresh_url().await.expect("create database")
}

/// How long the tests' databases (these and the store tests' `store_test_…`) are kept.
pub const STALE_AFTER: Duration = Duration::from_secs(6 * 3600);

/// Once per run, on a thread of its own (no test waits for it): drops the tests' databases
/// older than [`STALE_AFTER`]. A failure to drop them is only reported: it changes no
/// test's outcome.
fn drop_stale_databases(admin_url: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let admin_url = admin_url.to_string();
        std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            let swept =
                runtime.block_on(kit::TempDatabases::drop_stale(&admin_url, &["test", "store_test"], STALE_AFTER));
            match swept {
                Ok(0) => {}
                Ok(n) => eprintln!("dropped {n} test databases older than {} h", STALE_AFTER.as_secs() / 3600),
                Err(e) => eprintln!("could not drop stale test databases: {e:#}"),
            }
        });
    });
}

/// The principal of the tests' default clients: every scope.
pub const ALL_SCOPES: &str = "test-all";

/// The principals the tests' services know: [`ALL_SCOPES`], and one per scope named
/// `only-<scope>` (`only-orders:write`, `only-read`, …) for the access tests.
pub fn test_principals() -> Vec<(String, Vec<infra::auth::Scope>)> {
    let mut principals = vec![(ALL_SCOPES.to_string(), infra::auth::Scope::ALL.to_vec())];
    principals.extend(infra::auth::Scope::ALL.iter().map(|s| (format!("only-{s}"), vec![*s])));
    principals
}

/// The token of a test principal (fixed, so child processes and clients agree).
pub fn token(principal: &str) -> String {
    format!("of_test_{principal}")
}

fn test_token_entries() -> Vec<infra::auth::TokenEntry> {
    test_principals()
        .into_iter()
        .map(|(principal, scopes)| infra::auth::TokenEntry {
            token_sha256: infra::auth::token_digest(&token(&principal)),
            principal,
            scopes,
            expires_at: None,
        })
        .collect()
}

/// The services' access with the test principals and `limits`.
pub fn test_access_with(limits: infra::http::Limits) -> infra::http::Access {
    let auth = infra::auth::Authenticator::from_tokens(test_token_entries()).expect("test tokens");
    infra::http::Access::new(auth, limits)
}

pub fn test_access() -> infra::http::Access {
    test_access_with(infra::http::Limits::default())
}

/// A tokens file with the test principals, for services started as child processes.
pub fn tokens_file() -> String {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("orderflow-test-tokens-{}.json", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, serde_json::to_vec(&test_token_entries()).expect("json")).expect("write tokens file");
        path.display().to_string()
    })
    .clone()
}

/// A checkout served in-process on a free port, with its own topic and database.
pub struct TestCheckout {
    pub base_url: String,
    /// The checkout's own database (its keys and order owners).
    pub database_url: String,
    pub topic: String,
    pub client: orderflow::load::HttpClient,
    server: tokio::task::JoinHandle<()>,
}

impl TestCheckout {
    pub async fn spawn(kafka: &KafkaSettings, topic: &str, publish_deadline: Duration) -> TestCheckout {
        Self::spawn_with(kafka, topic, publish_deadline, test_access()).await
    }

    /// A checkout with the given access rules and limits.
    pub async fn spawn_with(
        kafka: &KafkaSettings,
        topic: &str,
        publish_deadline: Duration,
        access: infra::http::Access,
    ) -> TestCheckout {
        Self::spawn_with_codec(kafka, topic, publish_deadline, access, schemas::Codec::builtin()).await
    }

    /// A checkout framing events with `codec`'s ids (a schema registry's).
    pub async fn spawn_with_codec(
        kafka: &KafkaSettings,
        topic: &str,
        publish_deadline: Duration,
        access: infra::http::Access,
        codec: schemas::Codec,
    ) -> TestCheckout {
        let database_url = fresh_database().await;
        let config = producers::publisher::PublisherConfig {
            topic: topic.to_string(),
            deadline: publish_deadline,
            linger_ms: 1,
            codec,
        };
        let state =
            producers::checkout::AppState::connect(kafka, &database_url, config, access).await.expect("checkout state");
        let database_url = database_url.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base_url = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            let _ = producers::checkout::run(listener, state, std::future::pending()).await;
        });
        let client = orderflow::load::http_client_with(Some(&token(ALL_SCOPES)));
        TestCheckout { base_url, database_url, topic: topic.to_string(), client, server }
    }

    /// POSTs JSON, optionally with an Idempotency-Key; returns status and JSON answer.
    pub async fn post(&self, path: &str, body: &serde_json::Value, key: Option<&str>) -> (u16, serde_json::Value) {
        orderflow::load::post_json(&self.client, &format!("{}{path}", self.base_url), body, key).await.expect("http")
    }

    /// Sends raw bytes with the given content type.
    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
        let request = self.client.post(format!("{}{path}", self.base_url)).header("content-type", content_type);
        let response = request.body(body).send().await.expect("http");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        get_text(&self.client, &format!("{}{path}", self.base_url)).await.expect("http")
    }
}

impl Drop for TestCheckout {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct LogRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Vec<u8>,
}

/// Reads `topic` from the beginning of every partition until `expected` records have
/// arrived, then half a second more so that any extra record shows up too.
pub fn read_topic(kafka: &KafkaSettings, topic: &str, expected: usize) -> Vec<LogRecord> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning).expect("partition");
    }
    consumer.assign(&assignment).expect("assign");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut complete_at: Option<std::time::Instant> = None;
    let mut records = Vec::new();
    loop {
        let now = std::time::Instant::now();
        if now > deadline || complete_at.is_some_and(|t| now > t + Duration::from_millis(500)) {
            break;
        }
        if complete_at.is_none() && records.len() >= expected {
            complete_at = Some(now);
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => records.push(LogRecord {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                payload: m.payload().unwrap_or_default().to_vec(),
            }),
            // A node of the cluster being down is reported too; the client goes on with the others.
            Some(Err(e))
                if matches!(
                    e.rdkafka_error_code(),
                    Some(
                        rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure
                            | rdkafka::types::RDKafkaErrorCode::AllBrokersDown
                    )
                ) => {}
            Some(Err(e)) => panic!("consume: {e}"),
            None => {}
        }
    }
    records
}

/// A Kafka cluster of the test's own (`infra/local/kafka-node` processes in a temp
/// directory), for tests that kill and restart brokers. Killed and removed when dropped.
pub struct OwnCluster {
    pub base_port: u16,
    nodes: usize,
    dir: std::path::PathBuf,
    children: Vec<Option<std::process::Child>>,
}

impl OwnCluster {
    /// Starts `nodes` combined broker+controller nodes and waits until every broker has
    /// registered (with three nodes, topics default to replication factor 3, min ISR 2).
    pub fn start(nodes: usize) -> OwnCluster {
        let dir = std::env::temp_dir().join(format!("orderflow-kafka-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let mut cluster = OwnCluster { base_port: free_port_run(2 * nodes), nodes, dir, children: Vec::new() };
        cluster.children = (0..nodes).map(|_| None).collect();
        for node in 1..=nodes {
            cluster.start_node(node);
        }
        cluster.wait_for_brokers(nodes);
        cluster
    }

    pub fn brokers(&self) -> String {
        (1..=self.nodes).map(|n| format!("127.0.0.1:{}", self.port_of(n))).collect::<Vec<_>>().join(",")
    }

    pub fn port_of(&self, node: usize) -> u16 {
        self.base_port + 2 * (node as u16 - 1)
    }

    /// Starts node `node` (1-based) again, on its ports and storage.
    pub fn start_node(&mut self, node: usize) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/infra/local/kafka-node");
        let log = std::fs::File::create(self.dir.join(format!("node-{node}.out"))).expect("log");
        let heap = if self.nodes > 1 { "320m" } else { "512m" };
        let child = std::process::Command::new(script)
            .args([self.dir.to_str().expect("utf-8 path"), &node.to_string(), &self.nodes.to_string()])
            .args([&self.base_port.to_string(), heap])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start infra/local/kafka-node");
        self.children[node - 1] = Some(child);
    }

    /// Waits (120 s at most) until `count` brokers answer in the cluster's metadata.
    pub fn wait_for_brokers(&mut self, count: usize) {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = KafkaSettings::new(self.brokers()).client_config().create().expect("client");
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(m) = consumer.fetch_metadata(None, Duration::from_secs(2)) {
                if m.brokers().len() >= count {
                    return;
                }
            }
            for (i, child) in self.children.iter_mut().enumerate() {
                if let Some(Ok(Some(status))) = child.as_mut().map(std::process::Child::try_wait) {
                    let out = std::fs::read_to_string(self.dir.join(format!("node-{}.out", i + 1))).unwrap_or_default();
                    panic!("Kafka node {} exited with {status}:\n{out}", i + 1);
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "own Kafka cluster did not come up; see {}/node-*/server.log",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGKILL of one node: it vanishes without a goodbye.
    pub fn kill(&mut self, node: usize) {
        if let Some(mut child) = self.children[node - 1].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        for node in 1..=self.nodes {
            self.kill(node);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The first of `count` consecutive loopback ports that are free right now, below the
/// kernel's ephemeral range: the nodes bind them a moment later, and a port from that range
/// could meanwhile be handed to another test's `bind(":0")`.
fn free_port_run(count: usize) -> u16 {
    let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| {
            let mut it = r.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    let (first, last) = if low > 12_000 { (10_000, low - 1) } else { (high.saturating_add(1), u16::MAX - 1) };
    for _ in 0..500 {
        let base = first + (uuid::Uuid::new_v4().as_u128() % u128::from(last - first - count as u16)) as u16;
        let all_free = (0..count as u16).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no run of {count} free ports in {first}..{last}");
}

/// The end of every partition of `topic` (the high watermark: one past the last record).
pub async fn log_ends(kafka: &KafkaSettings, topic: &str) -> std::collections::BTreeMap<i32, i64> {
    kit::log_ends(kafka, topic).await.expect("log end offsets")
}

/// Waits (30 s at most) until `group`'s stored offsets reach the log end on every partition
/// that has records.
pub async fn wait_caught_up(store: &projections::store::Store, kafka: &KafkaSettings, group: &str, topic: &str) {
    let ends = log_ends(kafka, topic).await;
    let within = Duration::from_secs(30);
    let caught_up = kit::wait_caught_up(store, group, topic, &ends, within, Duration::from_millis(100)).await;
    if !caught_up.expect("stored offsets") {
        let partitions: Vec<i32> = ends.keys().copied().collect();
        let stored = store.reads().stored_offsets(group, topic, &partitions).await.expect("offsets");
        // A partition the member refused to follow is never read: say so, it is the likely cause.
        let refused = store.reads().offset_faults(group, topic, None).await.expect("offset faults");
        panic!("group {group} did not catch up: stored {stored:?}, log ends {ends:?}, refused partitions {refused:?}");
    }
}

/// [`wait_caught_up`] on every topic a group of `kind` reads in the pipeline on
/// `orders_topic` (the inventory reads only the decisions, the fulfilment both).
pub async fn wait_group_caught_up(
    store: &projections::store::Store,
    kafka: &KafkaSettings,
    kind: impl Into<projections::registry::GroupKind>,
    group: &str,
    orders_topic: &str,
) {
    for topic in kind.into().topics(orders_topic) {
        wait_caught_up(store, kafka, group, &topic).await;
    }
}

/// Member settings for tests: small batches and short timeouts so rebalances are quick.
pub fn member_config(kind: projections::ProjectionKind, topic: &str, group: &str) -> consumers::MemberConfig {
    let mut config = consumers::MemberConfig::new(kind, topic);
    config.group = group.to_string();
    config.batch_max = 200;
    config.session_timeout = Duration::from_secs(6);
    config.max_poll_interval = Duration::from_secs(10);
    config
}

/// A SQLite projection database in a fresh temp file.
pub fn fresh_sqlite_url() -> String {
    kit::fresh_sqlite_url()
}

/// Asserts two snapshots are equal, describing the first difference briefly (a full
/// snapshot is far too long to read in a failure message).
pub fn assert_same_projection(got: &projections::store::Snapshot, want: &projections::store::Snapshot, context: &str) {
    assert_eq!(got.inventory_levels, want.inventory_levels, "{context}: inventory levels differ");
    let ids = |v: &[projections::model::payment::PaymentOrder]| v.iter().map(|p| p.order_id).collect::<Vec<_>>();
    assert_eq!(got.payments.len(), want.payments.len(), "{context}: payment row count differs");
    assert_eq!(ids(&got.payments), ids(&want.payments), "{context}: payment rows differ");
    for (g, w) in got.payments.iter().zip(&want.payments) {
        assert_eq!(g, w, "{context}: payment row differs");
    }
    assert_eq!(got.fulfilment.len(), want.fulfilment.len(), "{context}: fulfilment row count differs");
    for (g, w) in got.fulfilment.iter().zip(&want.fulfilment) {
        assert_eq!(g, w, "{context}: fulfilment row differs");
    }
    assert_eq!(got.inventory_orders.len(), want.inventory_orders.len(), "{context}: inventory order count differs");
    for (g, w) in got.inventory_orders.iter().zip(&want.inventory_orders) {
        assert_eq!(g, w, "{context}: inventory order differs");
    }
}

/// A consumer-group name prefix of its own for one test.
pub fn fresh_group_prefix() -> String {
    kit::fresh_group_prefix()
}

/// A free loopback port (bound, then released for a child process to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// `orderflow <args>` as a child process, killed when dropped.
pub struct Child(pub std::process::Child);

impl Child {
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Child {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"));
        command.args(args).env("RUST_LOG", "warn").stdin(std::process::Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        Child(command.spawn().expect("spawn orderflow"))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GETs `url`; returns the status and the body as text.
async fn get_text(client: &reqwest::Client, url: &str) -> Result<(u16, String), reqwest::Error> {
    let response = client.get(url).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

/// The query API served in-process on a free port against `database_url` and `topic`.
pub struct ServeApi {
    pub base_url: String,
    pub client: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl ServeApi {
    pub async fn spawn(database_url: &str, topic: &str, group_prefix: &str, read_wait: Duration) -> ServeApi {
        Self::spawn_with_kafka(&kafka(), database_url, topic, group_prefix, read_wait).await
    }

    /// A query API reading log ends through `kafka` (other credentials, another broker).
    pub async fn spawn_with_kafka(
        kafka: &KafkaSettings,
        database_url: &str,
        topic: &str,
        group_prefix: &str,
        read_wait: Duration,
    ) -> ServeApi {
        Self::spawn_with_access(kafka, database_url, topic, group_prefix, read_wait, test_access()).await
    }

    /// A query API with the given access rules (and TLS, if they have it); `base_url` is
    /// `http://` whatever the listener speaks.
    pub async fn spawn_with_access(
        kafka: &KafkaSettings,
        database_url: &str,
        topic: &str,
        group_prefix: &str,
        read_wait: Duration,
        access: infra::http::Access,
    ) -> ServeApi {
        let store = projections::store::Store::connect(database_url)
            .await
            .and_then(|s| s.with_group_prefix(group_prefix))
            .expect("query API store");
        let state = orderflow::query_api::ApiState::new(store.reads(), kafka, topic, read_wait, 10, access);
        Self::serve(state).await
    }

    /// A query API of `region` whose projections also read `mirrors`' copies.
    pub async fn spawn_in_region(
        kafka: &KafkaSettings,
        store: &projections::store::Store,
        topic: &str,
        read_wait: Duration,
        region: &schemas::Region,
        mirrors: Vec<schemas::Region>,
    ) -> ServeApi {
        let state = orderflow::query_api::ApiState::new(store.reads(), kafka, topic, read_wait, 10, test_access())
            .in_region(Some(region.clone()), mirrors);
        Self::serve(state).await
    }

    async fn serve(state: orderflow::query_api::ApiState) -> ServeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base_url = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            let _ = orderflow::query_api::run(listener, state, std::future::pending()).await;
        });
        let client = orderflow::load::http_client_with(Some(&token(ALL_SCOPES)));
        ServeApi { base_url, client, server }
    }

    /// GETs `path`; returns the status and the body as JSON (null if it is not JSON).
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, body) = self.get_text(path).await;
        (status, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        get_text(&self.client, &format!("{}{path}", self.base_url)).await.expect("the query API answers")
    }
}

impl Drop for ServeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Runs `orderflow <args>` to completion; panics with its stderr if it fails.
pub fn run_orderflow(args: &[&str]) -> String {
    run_orderflow_with(args, &[])
}

/// `run_orderflow` with these environment variables set.
pub fn run_orderflow_with(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"));
    command.args(args).envs(env.iter().copied()).env("RUST_LOG", "error");
    stdout_of_success(command, &format!("orderflow {args:?}"))
}

/// Runs `command` to completion and returns its stdout; panics with its output if it fails.
fn stdout_of_success(mut command: std::process::Command, what: &str) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The offsets a group has committed to Kafka (what Kafka's own tooling shows as its
/// position), read without joining the group.
pub fn kafka_committed(
    kafka: &KafkaSettings,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> std::collections::BTreeMap<i32, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer =
        kafka.client_config().set("group.id", group).set("enable.auto.commit", "false").create().expect("consumer");
    let mut list = TopicPartitionList::new();
    for p in partitions {
        list.add_partition(topic, *p);
    }
    let committed = consumer.committed_offsets(list, Duration::from_secs(10)).expect("committed offsets");
    committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// Kafka's own command-line tool `kafka-<tool>` (from the same jars as the local broker),
/// run to completion; panics with its stderr if it fails.
pub fn kafka_tool(tool: &str, args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/infra/local/kafka-tool");
    let mut command = std::process::Command::new(script);
    command.arg(tool).args(args);
    stdout_of_success(command, &format!("kafka-{tool} {args:?}"))
}

/// The reference for "exactly right": one calm member per projection, from offset 0 into
/// the empty tables of a fresh database, caught up with the whole topic.
pub async fn calm_rebuild(kafka: &KafkaSettings, topic: &str) -> projections::store::Store {
    let store = projections::store::Store::connect(&fresh_database().await).await.expect("store");
    let mut members = Vec::new();
    for kind in projections::ProjectionKind::ALL {
        let group = format!("{}-calm-{topic}", kind.name());
        let member =
            consumers::member::run_member(member_config(kind, topic, &group), kafka, store.clone()).expect("member");
        members.push((group, member));
    }
    for ((group, _), kind) in members.iter().zip(projections::ProjectionKind::ALL) {
        wait_group_caught_up(&store, kafka, kind, group, topic).await;
    }
    for (_, member) in members {
        member.stop().await.expect("stop");
    }
    store
}

/// The order process and the stock group (one member each, test settings) with an outbox
/// relay, in this process, on the groups `store` names (`<prefix>-order-process`, …).
pub struct Processes {
    pub members: Vec<consumers::MemberHandle>,
    relay: Option<consumers::RelayHandle>,
    /// (group, topic) of each process group.
    pub groups: Vec<(String, String)>,
    kafka: KafkaSettings,
}

impl Processes {
    pub fn start(store: &projections::store::Store, topic: &str, payment_timeout: Duration) -> Processes {
        Self::start_with(store, topic, payment_timeout, &infra::schema_registry::Contract::embedded())
    }

    /// [`Processes::start`] reading and deciding with `contract`'s schema ids.
    pub fn start_with(
        store: &projections::store::Store,
        topic: &str,
        payment_timeout: Duration,
        contract: &infra::schema_registry::Contract,
    ) -> Processes {
        Self::start_in(&kafka(), store, topic, payment_timeout, contract)
    }

    /// [`Processes::start_with`] on the cluster `kafka` (a region's).
    pub fn start_in(
        kafka: &KafkaSettings,
        store: &projections::store::Store,
        topic: &str,
        payment_timeout: Duration,
        contract: &infra::schema_registry::Contract,
    ) -> Processes {
        use projections::registry::ProcessKind;
        let kafka = kafka.clone();
        let wake = std::sync::Arc::new(tokio::sync::Notify::new());
        let mut members = Vec::new();
        let mut groups = Vec::new();
        for process in ProcessKind::ALL {
            let mut config = consumers::MemberConfig::new(process, topic);
            config.decisions.payment_timeout = payment_timeout;
            config.group = store.group(process);
            config.batch_max = 200;
            config.session_timeout = Duration::from_secs(6);
            config.max_poll_interval = Duration::from_secs(10);
            config.outbox_written = Some(wake.clone());
            config.contract = contract.clone();
            groups.extend(kit::reading(process, &config.group, topic));
            members.push(consumers::member::run_member(config, &kafka, store.clone()).expect("process member"));
        }
        let relay = Some(consumers::spawn_relay(store.outbox(), &kafka, wake));
        Processes { members, relay, groups, kafka }
    }

    /// Waits (60 s at most) until these groups and `others` have applied everything and
    /// the outbox is empty.
    pub async fn settle(&self, store: &projections::store::Store, others: &[(String, String)]) {
        let all: Vec<(String, String)> = self.groups.iter().chain(others).cloned().collect();
        let reached = kit::wait_settled(store, &self.kafka, &all, Duration::from_secs(60)).await.expect("settle");
        assert!(reached.values().all(|r| *r), "not settled: {reached:?}");
    }

    pub async fn stop(mut self) {
        for member in std::mem::take(&mut self.members) {
            member.stop().await.expect("process member stops cleanly");
        }
        if let Some(relay) = self.relay.take() {
            relay.stop().await.expect("relay stops cleanly");
        }
    }
}

/// Headless Chromium with a fresh profile, running a page for a few (virtual) seconds;
/// `action` is what it leaves behind (`--dump-dom`, `--screenshot=…`). Returns its stdout
/// and what it wrote to the console.
async fn chromium(url: &str, action: &[&str]) -> (String, Vec<String>) {
    let chromium = std::env::var("ORDERFLOW_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: `infra/local/up` installs Debian's chromium"
    );
    let profile = std::env::temp_dir().join(format!("orderflow-chromium-{}", uuid::Uuid::new_v4().simple()));
    let mut command = std::process::Command::new(&chromium);
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=3000",
        &format!("--user-data-dir={}", profile.display()),
    ]);
    command.args(action).arg(url);
    let output = tokio::task::spawn_blocking(move || command.output()).await.expect("join").expect("run chromium");
    let _ = std::fs::remove_dir_all(&profile);
    let log = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success(), "chromium failed: {log}");
    // A Content-Security-Policy violation is reported on the console too.
    let console =
        log.lines().filter(|l| l.contains(":CONSOLE") || l.contains("Content Security Policy")).map(String::from);
    (String::from_utf8_lossy(&output.stdout).to_string(), console.collect())
}

/// The page's DOM after headless Chromium ran it, and what it wrote to the console.
pub async fn chromium_dom(url: &str) -> (String, Vec<String>) {
    chromium(url, &["--dump-dom"]).await
}

/// A PNG of the page as headless Chromium drew it, `width`×`height`, at `path`.
pub async fn chromium_screenshot(url: &str, path: &std::path::Path, width: u32, height: u32) {
    chromium(url, &[&format!("--screenshot={}", path.display()), &format!("--window-size={width},{height}")]).await;
    let png = std::fs::read(path).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", path.display()));
    assert!(png.starts_with(b"\x89PNG"), "{} is not a PNG", path.display());
}

/// The text of the element with this id in a serialized DOM.
pub fn text_of(dom: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\"");
    let at = dom.find(&marker).unwrap_or_else(|| panic!("no #{id} in the page"));
    let start = at + dom[at..].find('>').expect("tag end") + 1;
    let end = start + dom[start..].find('<').expect("text end");
    dom[start..end].to_string()
}
