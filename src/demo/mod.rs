//! `orderflow demo`: the whole pipeline in one process with zero setup — librdkafka's
//! in-process mock cluster, SQLite projections in a file under the working directory, the
//! checkout on a free port, all four projection groups and the two process groups (order
//! process, stock) with two members each, the outbox relay, the query API, and the load
//! generator, which waits for each order's decision before paying for it. `--brokers` and `--database-url` point the same run at real services.
mod summary;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::load::{self, LoadConfig};
use anyhow::Context;
use clap::Args;
use consumers::member::{run_member, MemberConfig, MemberHandle};
use infra::auth::{new_token, Authenticator, Scope};
use infra::http::{Access, Limits};
use infra::topics::{create_topics, TopicSpec};
use infra::KafkaSettings;
use producers::checkout::{self, AppState};
use producers::publisher::PublisherConfig;
use projections::registry::{ProcessKind, ProjectionKind};
use projections::store::Store;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use crate::args::parse_duration;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How long the load generator runs.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Requests per second the load generator sends.
    #[arg(long, default_value_t = 150, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    rate: u32,
    /// Use this Kafka-protocol broker instead of the embedded mock cluster.
    #[arg(long)]
    brokers: Option<String>,
    /// Use this database instead of a fresh `orderflow-demo.db` in the working directory.
    #[arg(long)]
    database_url: Option<String>,
    /// Partitions of the demo topic.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(i32).range(1..=64))]
    partitions: i32,
    /// Also serve the query API and dashboard on this address (e.g. 127.0.0.1:8081) while
    /// the demo runs, and keep serving after the summary until Ctrl-C.
    #[arg(long)]
    serve: Option<String>,
    /// How long a confirmed order may stay unpaid before the order process expires it
    /// (short here, so the demo shows expiries).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    payment_timeout: Duration,
}

const MEMBERS_PER_GROUP: usize = 2;

impl DemoArgs {
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        let topic = format!("orders-demo-{run_id}");
        // The mock cluster lives as long as this function.
        let (_mock, kafka) = self.broker_with_topic(&topic).await?;
        let database_url = self.database_url();
        let store = Store::connect(&database_url)
            .await
            .context("opening the projection database")?
            .with_group_prefix(&format!("demo-{run_id}"))?;
        println!(
            "orderflow demo: broker {}, database {}, topic {topic}",
            broker_label(&self.brokers),
            database_label(&database_url)
        );

        // The demo's own principal: one fresh token with every scope, for its load and for
        // whoever opens the dashboard; it lives as long as this run.
        let (token, entry) = new_token("demo", Scope::ALL.to_vec())?;
        let access = Access::new(Authenticator::from_tokens(vec![entry])?, Limits::default());
        println!("demo token (every scope, this run only): {token}");
        let publisher = PublisherConfig {
            topic: topic.clone(),
            deadline: Duration::from_secs(5),
            linger_ms: 2,
            codec: schemas::Codec::builtin(),
        };
        let state =
            AppState::connect(&kafka, &database_url, publisher, access.clone()).await.context("starting checkout")?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let target = format!("http://{}", listener.local_addr()?);
        println!("checkout listening on {target}");
        let (stop_checkout, checkout_stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(checkout::run(listener, state, async {
            let _ = checkout_stopped.await;
        }));
        let wake = Arc::new(tokio::sync::Notify::new());
        let groups = start_groups(&store, &kafka, &topic, self.payment_timeout, &wake)?;
        let relay = consumers::spawn_relay(store.outbox(), &kafka, wake);
        let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
        let (query_url, api) = self.serve_dashboard(&store, &kafka, &topic, &access, &token, api_stopped).await?;

        // The load's clock starts once every group, processes included, owns its partitions:
        // an order placed while a group still joins would wait for the join, not the pipeline.
        wait_joined(&kafka, &groups, JOIN_WITHIN).await?;
        let load = tokio::spawn(load::run(self.load_config(target, query_url, token.clone())));
        let interrupted = Arc::new(tokio::sync::Notify::new());
        let on_signal = interrupted.clone();
        tokio::spawn(async move {
            shutdown.await;
            on_signal.notify_one();
        });

        let bar = indicatif::ProgressBar::new(self.duration.as_secs());
        bar.set_style(
            indicatif::ProgressStyle::with_template("{elapsed_precise} {bar:20} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let started = Instant::now();
        let mut stopped_early = false;
        let report = loop {
            if load.is_finished() {
                break Some(load.await?);
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = interrupted.notified() => { stopped_early = true; load.abort(); break None; }
            }
            bar.set_position(started.elapsed().as_secs().min(self.duration.as_secs()));
            bar.set_message(progress_line(&groups));
        };

        let mut lags_zero = BTreeMap::new();
        if !stopped_early {
            bar.set_message("load done; waiting for every group to catch up");
            let settle = settle(&store, &kafka, &groups, self.payment_timeout, &bar, &mut lags_zero);
            tokio::select! {
                r = settle => r?,
                _ = interrupted.notified() => stopped_early = true,
            }
        }
        bar.finish_and_clear();
        for group in groups {
            for member in group.members {
                member.stop().await?;
            }
        }
        relay.stop().await?;
        let _ = stop_checkout.send(());
        server.await??;

        if stopped_early {
            let _ = stop_api.send(());
            println!("interrupted: stopped the load, the consumer groups and the checkout cleanly");
            return Ok(());
        }
        let report = report.context("the load generator did not report")?;
        println!("load: {}", report.summary());
        let summary = summary::Summary::read(&store).await?;
        let limited =
            format!("SKU-{} is a limited edition: {LIMITED_EDITION_UNITS} units, never restocked", load::LIMITED_SKU);
        summary.print(&report, &lags_zero, Some(&limited));
        if self.serve.is_some() {
            println!("the dashboard keeps serving the final numbers; Ctrl-C to stop");
            interrupted.notified().await;
        }
        let _ = stop_api.send(());
        api.await??;
        anyhow::ensure!(lags_zero.values().all(|z| *z), "a consumer group did not catch up");
        anyhow::ensure!(summary.agrees(), "the views disagree (see the agreement line above)");
        Ok(())
    }
}

/// How long the demo waits for its groups to join before it gives up.
const JOIN_WITHIN: Duration = Duration::from_secs(60);

/// Units of the demo's limited edition.
const LIMITED_EDITION_UNITS: u32 = 10;

/// Load requests per order, roughly: place, pay twice, three shipment steps, now and then a
/// cancellation, a refund or a restock.
const REQUESTS_PER_ORDER: f64 = 6.0;
/// Units an order takes on average: 1–3 lines of 1–3 units each.
const UNITS_PER_ORDER: f64 = 4.0;

impl DemoArgs {
    /// A healthy shop: every SKU opens with twice the units the run is expected to sell of
    /// it, except one limited edition of a few units, never restocked — the few orders
    /// that want it once it is gone are the demo's rejections (a few percent).
    fn load_config(&self, target: String, query_url: String, token: String) -> LoadConfig {
        let base = LoadConfig::new(target, self.rate, self.duration);
        let orders = f64::from(self.rate) * self.duration.as_secs_f64() / REQUESTS_PER_ORDER;
        let per_sku = orders * UNITS_PER_ORDER / f64::from(base.skus.max(1));
        LoadConfig {
            token: Some(token),
            decisions: Some(query_url),
            initial_stock: (2.0 * per_sku).ceil() as u32 + 20,
            limited_edition: Some(LIMITED_EDITION_UNITS),
            ..base
        }
    }

    /// The embedded mock cluster (kept alive by the caller) or the given broker, with the
    /// demo topic created on it.
    async fn broker_with_topic(
        &self,
        topic: &str,
    ) -> anyhow::Result<(Option<MockCluster<'static, DefaultProducerContext>>, KafkaSettings)> {
        match &self.brokers {
            Some(brokers) => {
                let kafka = KafkaSettings::new(brokers).with_env_overrides()?;
                let specs: Vec<TopicSpec> = schemas::pipeline_topics(topic)
                    .into_iter()
                    .map(|name| TopicSpec {
                        name,
                        partitions: self.partitions,
                        replication_factor: Some(1),
                        configs: Vec::new(),
                    })
                    .collect();
                create_topics(&kafka, &specs, Duration::from_secs(30)).await?;
                Ok((None, kafka))
            }
            None => {
                let mock = MockCluster::new(1).context("starting the embedded broker")?;
                // The mock cluster creates topics through its own call (its admin API is limited).
                for name in schemas::pipeline_topics(topic) {
                    mock.create_topic(&name, self.partitions, 1)
                        .with_context(|| format!("creating the demo's {name}"))?;
                }
                let kafka = KafkaSettings::new(mock.bootstrap_servers());
                Ok((Some(mock), kafka))
            }
        }
    }

    /// The given database, or a fresh `orderflow-demo.db` in the working directory.
    fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("orderflow-demo.db{suffix}"));
                }
                "sqlite://orderflow-demo.db?mode=rwc".to_string()
            }
        }
    }

    /// The query API and dashboard, on `--serve` (announced) or a free loopback port (for
    /// the load's decision waits only), until `stop` fires. Returns its base URL.
    async fn serve_dashboard(
        &self,
        store: &Store,
        kafka: &KafkaSettings,
        topic: &str,
        access: &Access,
        token: &str,
        stop: tokio::sync::oneshot::Receiver<()>,
    ) -> anyhow::Result<(String, tokio::task::JoinHandle<std::io::Result<()>>)> {
        let addr = self.serve.as_deref().unwrap_or("127.0.0.1:0");
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        let url = format!("http://{}", listener.local_addr()?);
        if self.serve.is_some() {
            // The fragment never reaches the server; the page moves it into the tab's storage.
            println!("dashboard on {url}/#token={token}");
        }
        let state =
            crate::query_api::ApiState::new(store.reads(), kafka, topic, Duration::from_secs(2), 10, access.clone());
        let server = tokio::spawn(crate::query_api::run(listener, state, async {
            let _ = stop.await;
        }));
        Ok((url, server))
    }
}

/// One consumer group of the demo and the topics it reads.
struct Group {
    label: String,
    group: String,
    /// `(group, topic)` per topic it reads.
    reading: Vec<(String, String)>,
    members: Vec<MemberHandle>,
}

/// Every projection's group and both process groups, `MEMBERS_PER_GROUP` members each.
fn start_groups(
    store: &Store,
    kafka: &KafkaSettings,
    topic: &str,
    payment_timeout: Duration,
    wake: &Arc<tokio::sync::Notify>,
) -> anyhow::Result<Vec<Group>> {
    let mut configs: Vec<(String, MemberConfig)> = Vec::new();
    for kind in ProjectionKind::ALL {
        let mut config = MemberConfig::new(kind, topic);
        config.group = store.group(kind);
        configs.push((kind.name().to_string(), config));
    }
    for process in ProcessKind::ALL {
        let mut config = MemberConfig::new(process, topic);
        config.decisions.payment_timeout = payment_timeout;
        config.group = store.group(process);
        config.outbox_written = Some(wake.clone());
        configs.push((process.name().to_string(), config));
    }
    let mut groups = Vec::new();
    for (label, mut config) in configs {
        config.session_timeout = Duration::from_secs(6);
        let members = (0..MEMBERS_PER_GROUP)
            .map(|_| run_member(config.clone(), kafka, store.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let reading = crate::kit::reading(config.kind, &config.group, &config.decisions.orders_topic);
        groups.push(Group { label, group: config.group.clone(), reading, members });
    }
    Ok(groups)
}

/// Waits until every member of every group has been given its partitions: together the
/// members of a group own every partition of every topic it reads.
async fn wait_joined(kafka: &KafkaSettings, groups: &[Group], within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    let mut expected = BTreeMap::new();
    for group in groups {
        for (_, topic) in &group.reading {
            if !expected.contains_key(topic) {
                expected.insert(topic.clone(), crate::kit::log_ends(kafka, topic).await?.len());
            }
        }
    }
    loop {
        let waiting: Vec<&str> = groups
            .iter()
            .filter(|group| {
                let mut owned = std::collections::BTreeSet::new();
                for member in &group.members {
                    owned.extend(member.stats.owned.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned());
                }
                group
                    .reading
                    .iter()
                    .any(|(_, topic)| owned.iter().filter(|(t, _)| t == topic).count() < expected[topic])
            })
            .map(|group| group.label.as_str())
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "groups did not join within {within:?}: {}", waiting.join(", "));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the whole pipeline is quiet (see [`crate::kit::wait_settled`]) and no order
/// is left for the order process to decide: every order is decided, and every confirmed
/// order the load did not pay has met its payment timer (the load stops mid-lifecycle, and
/// leaves some unpaid on purpose), its expiry applied by every group.
async fn settle(
    store: &Store,
    kafka: &KafkaSettings,
    groups: &[Group],
    payment_timeout: Duration,
    bar: &indicatif::ProgressBar,
    lags_zero: &mut BTreeMap<String, bool>,
) -> anyhow::Result<()> {
    let pairs: Vec<(String, String)> = groups.iter().flat_map(|g| g.reading.clone()).collect();
    // The timers fire a little after they are due (members look every few seconds).
    let deadline = Instant::now() + payment_timeout + Duration::from_secs(120);
    let reached = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let reached = crate::kit::wait_settled(store, kafka, &pairs, left).await?;
        let open = store.reads().open_orders().await?;
        if open == 0 || Instant::now() >= deadline {
            break reached;
        }
        bar.set_message(format!(
            "load done; {open} orders undecided or unpaid: waiting for their decisions and payment timers ({payment_timeout:?})"
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for group in groups {
        lags_zero.insert(group.label.clone(), reached.get(&group.group).copied().unwrap_or(false));
    }
    Ok(())
}

fn broker_label(brokers: &Option<String>) -> String {
    brokers.clone().unwrap_or_else(|| "embedded mock cluster".into())
}

pub(crate) fn database_label(url: &str) -> String {
    // Never print credentials.
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", rest.rsplit('@').next().unwrap_or(rest)),
        None => url.to_string(),
    }
}

fn progress_line(groups: &[Group]) -> String {
    let appended: i64 = groups
        .iter()
        .map(|Group { members, .. }| {
            let mut ends = BTreeMap::new();
            for m in members {
                ends.extend(m.stats.log_ends.lock().unwrap_or_else(|e| e.into_inner()).clone());
            }
            ends.values().sum::<i64>()
        })
        .max()
        .unwrap_or(0);
    let mut line = format!("appended {appended}");
    for Group { label: kind, members, .. } in groups {
        let applied: u64 = members.iter().map(|m| m.stats.applied.load(std::sync::atomic::Ordering::Relaxed)).sum();
        let lag: i64 = members.iter().filter_map(|m| m.stats.lag()).sum();
        line.push_str(&format!(" | {kind}: applied {applied}, lag {lag}"));
    }
    line
}
