//! What the end-to-end tests, the benchmark and the demo do around a pipeline, in one
//! place: fresh topics, databases and group prefixes, the end of the log, and "wait until
//! a group has caught up".
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use infra::topics::{create_topics, TopicSpec};
use infra::KafkaSettings;
use projections::registry::GroupKind;
use projections::store::Store;
use sqlx::Connection;

/// An orders topic with a unique name (`<prefix>-<uuid>`), so runs never see each other's
/// records, and the other topics of its pipeline ([`schemas::pipeline_topics`]).
pub async fn fresh_topic(kafka: &KafkaSettings, prefix: &str, partitions: i32) -> anyhow::Result<String> {
    let name = format!("{prefix}-{}", uuid::Uuid::new_v4().simple());
    let specs: Vec<TopicSpec> = schemas::pipeline_topics(&name)
        .into_iter()
        .map(|name| TopicSpec { name, partitions, replication_factor: None, configs: Vec::new() })
        .collect();
    create_topics(kafka, &specs, Duration::from_secs(30)).await.with_context(|| format!("creating topic {name}"))?;
    Ok(name)
}

/// How many members `group` has at the broker on any of `topics` (the most on one): what
/// commands that must not run beside a group's members check first.
pub async fn members_at_broker(kafka: &KafkaSettings, group: &str, topics: &[String]) -> anyhow::Result<usize> {
    let inspector = infra::group_inspect::Inspector::new(kafka, Duration::from_secs(10))?;
    let (group, topics) = (group.to_string(), topics.to_vec());
    let members = tokio::task::spawn_blocking(move || -> Result<usize, infra::InfraError> {
        let mut most = 0;
        for topic in &topics {
            most = most.max(inspector.members(&group, topic)?.len());
        }
        Ok(most)
    })
    .await??;
    Ok(members)
}

/// A consumer-group name prefix of its own: runs sharing one broker (or a previous run's
/// dead members) must not rebalance each other's groups.
pub fn fresh_group_prefix() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A SQLite database in a fresh temp file.
pub fn fresh_sqlite_url() -> String {
    let path = std::env::temp_dir().join(format!("orderflow-{}.db", uuid::Uuid::new_v4().simple()));
    format!("sqlite://{}?mode=rwc", path.display())
}

/// PostgreSQL databases of their own, created on the server `admin_url` points at and
/// dropped by [`TempDatabases::drop_all`] (tests leave theirs for investigating).
pub struct TempDatabases {
    admin_url: String,
    prefix: &'static str,
    created: std::sync::Mutex<Vec<String>>,
}

impl TempDatabases {
    pub fn new(admin_url: &str, prefix: &'static str) -> Self {
        TempDatabases { admin_url: admin_url.to_string(), prefix, created: std::sync::Mutex::new(Vec::new()) }
    }

    /// The URL of a new, empty database.
    pub async fn fresh_url(&self) -> anyhow::Result<String> {
        let name = format!("{}_{}", self.prefix, uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&self.admin_url).await.context("connecting to PostgreSQL")?;
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.context("creating a database")?;
        self.created.lock().unwrap_or_else(|e| e.into_inner()).push(name.clone());
        let base = self.admin_url.rsplit_once('/').map_or(self.admin_url.as_str(), |(base, _)| base);
        Ok(format!("{base}/{name}"))
    }

    /// A store on a new, empty database.
    pub async fn fresh(&self) -> anyhow::Result<Store> {
        Ok(Store::connect(&self.fresh_url().await?).await?)
    }

    /// Drops the databases named `<prefix>_…`, for each of `prefixes`, that are older than
    /// `age`; returns how many it dropped. The tests keep theirs for investigating a
    /// failure, and a server holding hundreds of them has its autovacuum launcher start a
    /// worker in each in turn (every ~90 ms with 680 of them), noise in every measurement
    /// on that server. A database's age is its `PG_VERSION` file's, written when it is
    /// created; reading that takes a superuser (or `pg_read_server_files`): without it the
    /// listing fails and nothing is dropped.
    pub async fn drop_stale(admin_url: &str, prefixes: &[&str], age: Duration) -> anyhow::Result<usize> {
        let mut admin = sqlx::PgConnection::connect(admin_url).await.context("connecting to PostgreSQL")?;
        let patterns: Vec<String> = prefixes.iter().map(|p| format!("{}\\_%", p.replace('_', "\\_"))).collect();
        let stale: Vec<String> = sqlx::query_scalar(
            "SELECT datname::text FROM pg_database WHERE datname LIKE ANY($1::text[]) \
             AND (pg_stat_file('base/' || oid || '/PG_VERSION', true)).modification < now() - make_interval(secs => $2)",
        )
        .bind(&patterns)
        .bind(age.as_secs_f64())
        .fetch_all(&mut admin)
        .await
        .context("listing stale databases")?;
        for name in &stale {
            drop_database(&mut admin, name).await.with_context(|| format!("dropping database {name}"))?;
        }
        Ok(stale.len())
    }

    pub async fn drop_all(&self) {
        let names = std::mem::take(&mut *self.created.lock().unwrap_or_else(|e| e.into_inner()));
        let Ok(mut admin) = sqlx::PgConnection::connect(&self.admin_url).await else { return };
        for name in names {
            let _ = drop_database(&mut admin, &name).await;
        }
    }
}

/// Drops `name` and ends its sessions (a test may leave a connection behind).
async fn drop_database(admin: &mut sqlx::PgConnection, name: &str) -> sqlx::Result<()> {
    let quoted = name.replace('"', "\"\"");
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{quoted}\" WITH (FORCE)")).execute(admin).await.map(drop)
}

/// The end of every partition of `topic` (the high watermark: one past the last record).
pub async fn log_ends(kafka: &KafkaSettings, topic: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
    let kafka = kafka.clone();
    let topic = topic.to_string();
    // The inspector's requests block; keep them off the async workers.
    tokio::task::spawn_blocking(move || {
        let inspector = infra::group_inspect::Inspector::new(&kafka, Duration::from_secs(10))?;
        inspector.log_ends(&topic)
    })
    .await
    .context("the log-end reader did not finish")?
    .context("reading the log end offsets")
}

/// Whether `group` has applied everything before `ends` on every partition of `topic`.
pub async fn has_caught_up(store: &Store, group: &str, topic: &str, ends: &BTreeMap<i32, i64>) -> anyhow::Result<bool> {
    let partitions: Vec<i32> = ends.iter().filter(|(_, end)| **end > 0).map(|(p, _)| *p).collect();
    let stored: BTreeMap<i32, i64> =
        store.reads().stored_offsets(group, topic, &partitions).await?.into_iter().collect();
    Ok(reached(&stored, ends))
}

/// Whether stored next offsets are at or past `ends` on every partition that has records.
pub fn reached(stored: &BTreeMap<i32, i64>, ends: &BTreeMap<i32, i64>) -> bool {
    ends.iter().all(|(p, end)| *end <= 0 || stored.get(p).copied().unwrap_or(0) >= *end)
}

/// Looks every `poll` whether `group` has caught up with `ends`, for at most `within`;
/// returns whether it did.
pub async fn wait_caught_up(
    store: &Store,
    group: &str,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
    within: Duration,
    poll: Duration,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + within;
    loop {
        if has_caught_up(store, group, topic, ends).await? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(poll).await;
    }
}

/// The `(group, topic)` pairs of a group of `kind` named `group` in a pipeline on
/// `orders_topic`: one per topic it reads, for [`wait_settled`].
pub fn reading(kind: impl Into<GroupKind>, group: &str, orders_topic: &str) -> Vec<(String, String)> {
    kind.into().topics(orders_topic).into_iter().map(|topic| (group.to_string(), topic)).collect()
}

/// Waits until every `(group, topic)` has applied its topic to the end, the outbox is
/// empty, and no topic grew while looking: the processes' decisions feed further decisions
/// (order → stock → order), so one pass is not enough. Returns per group whether it caught
/// up within `within`.
pub async fn wait_settled(
    store: &Store,
    kafka: &KafkaSettings,
    groups: &[(String, String)],
    within: Duration,
) -> anyhow::Result<BTreeMap<String, bool>> {
    let deadline = Instant::now() + within;
    let mut previous: Option<Vec<BTreeMap<i32, i64>>> = None;
    loop {
        let mut ends = Vec::new();
        for (_, topic) in groups {
            ends.push(log_ends(kafka, topic).await?);
        }
        let mut reached = BTreeMap::new();
        for ((group, topic), ends) in groups.iter().zip(&ends) {
            let left = deadline.saturating_duration_since(Instant::now());
            let caught_up = wait_caught_up(store, group, topic, ends, left, Duration::from_millis(50)).await?;
            // A group reading several topics is caught up when it is on all of them.
            *reached.entry(group.clone()).or_insert(true) &= caught_up;
        }
        let quiet = previous.as_ref() == Some(&ends) && store.reads().outbox_len().await? == 0;
        if quiet || Instant::now() >= deadline {
            return Ok(reached);
        }
        previous = Some(ends);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
