//! C1: the history projection against what a user would otherwise run for it, Kafka
//! Connect with Debezium's JDBC sink connector reading our records through Apicurio's Avro
//! converter, side by side on one topic. Both drain the same backlog (framed with the
//! registry's ids, as services publishing straight to Kafka frame theirs) into a fresh
//! database each, timed alike: from the first row committed until the last record is in.
//!
//! The sink is set up as its documentation has it for an event log: upsert on the event
//! id (a redelivered record is no second row), batches of 2,000, one task (one writing
//! connection, as one orderflow member has), the envelope and order id flattened into
//! columns with the record's partition and offset beside them (Kafka's stock transforms).
//! Connect runs standalone from the broker's own jars; `infra/local/up --connect-sink`
//! fetches the two plugins and exports where everything is.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use projections::store::LogRecord;
use projections::ProjectionKind;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use super::projector_bench::{append_backlog_framed, drain, lifecycle_events};
use super::stats::{machine_cpu_seconds, process_cpu_seconds, ratio, Figure, Samples};
use super::BenchContext;
use crate::kit::TempDatabases;

/// Where Kafka Connect and the sink's plugins are (`infra/local/up --connect-sink`
/// exports all three). Without them C1 is left out.
#[derive(Debug, Clone, Args)]
pub struct ConnectSinkArgs {
    /// Kafka Connect's classpath (connect-runtime and the stock transforms), e.g. the
    /// broker's `lib/*`.
    #[arg(long, env = "ORDERFLOW_BENCH_CONNECT_CLASSPATH")]
    connect_classpath: Option<String>,
    /// Connect's `plugin.path`: a directory holding the Debezium JDBC sink connector's
    /// plugin directory and Apicurio's converter's.
    #[arg(long, env = "ORDERFLOW_BENCH_CONNECT_PLUGINS")]
    connect_plugins: Option<PathBuf>,
    /// The registry's Apicurio v2 API, which the converter reads schemas through (the same
    /// registry as `--schema-registry-url`).
    #[arg(long, env = "ORDERFLOW_BENCH_CONNECT_REGISTRY")]
    connect_registry: Option<String>,
    /// The sink's tasks (each with its own connection). One matches one orderflow member.
    #[arg(long, env = "ORDERFLOW_BENCH_CONNECT_TASKS", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    connect_tasks: u32,
    /// The Java that runs Connect (17 or newer).
    #[arg(long, env = "ORDERFLOW_BENCH_CONNECT_JAVA", default_value = "java")]
    connect_java: String,
    /// The registry the backlog is framed with; its ids are what the converter looks up.
    #[command(flatten)]
    registry: crate::args::SchemaRegistryArgs,
}

/// Everything C1 needs, checked.
pub struct ConnectSink {
    classpath: String,
    plugins: PathBuf,
    converter_registry: String,
    java: String,
    tasks: u32,
    registry: crate::args::SchemaRegistryArgs,
}

impl ConnectSinkArgs {
    /// The sink, or why C1 cannot run (`Ok(None)`: nothing set, so it is left out).
    pub fn sink(&self) -> anyhow::Result<Option<ConnectSink>> {
        let (Some(classpath), Some(plugins), Some(converter_registry)) =
            (&self.connect_classpath, &self.connect_plugins, &self.connect_registry)
        else {
            return Ok(None);
        };
        anyhow::ensure!(
            self.registry.schema_registry_url.is_some(),
            "C1 frames its backlog with a registry's ids: set --schema-registry-url (infra/local/up --connect-sink \
             exports it)"
        );
        anyhow::ensure!(plugins.is_dir(), "--connect-plugins {} is not a directory", plugins.display());
        Ok(Some(ConnectSink {
            classpath: classpath.clone(),
            plugins: plugins.clone(),
            converter_registry: converter_registry.clone(),
            java: self.connect_java.clone(),
            tasks: self.connect_tasks,
            registry: self.registry.clone(),
        }))
    }
}

/// The table the sink writes (created by the connector from the records' schema).
const SINK_TABLE: &str = "history_connect";

/// What one side's run measured.
struct Side {
    per_second: f64,
    /// CPU seconds per event of the process that consumes and writes.
    cpu_us: f64,
    /// CPU seconds per event of the whole machine (broker and database too).
    machine_cpu_us: f64,
}

pub async fn c1_history_vs_connect(
    ctx: &BenchContext,
    databases: &TempDatabases,
    sink: &ConnectSink,
) -> anyhow::Result<Figure> {
    let contract = sink.registry.contract().await?;
    let topic = ctx.fresh_topic("bench-connect").await?;
    let events = lifecycle_events(ctx.events * 5);
    let records = append_backlog_framed(ctx, &topic, &events, contract.codec()).await?;
    let connector = connector_jar(&sink.plugins)?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..ctx.repeats {
        let store = databases.fresh().await?;
        let group = format!("bench-connect-history-{}", uuid::Uuid::new_v4().simple());
        let mut config = ctx.member_config(ProjectionKind::History, &topic, &group)?;
        config.contract = contract.clone();
        let cpu = (process_cpu_seconds("self"), machine_cpu_seconds());
        let per_second = drain(ctx, &store, config, &topic, &records).await?;
        ours.push(Side {
            per_second,
            cpu_us: per_event_us(process_cpu_seconds("self") - cpu.0, records.len()),
            machine_cpu_us: per_event_us(machine_cpu_seconds() - cpu.1, records.len()),
        });
        drop(store);
        let url = databases.fresh_url().await?;
        theirs.push(connect_side(ctx, sink, &url, &topic, &records, contract.codec()).await?);
        ctx.tick();
    }
    let rates = |sides: &[Side]| Samples { runs: sides.iter().map(|s| s.per_second).collect() };
    let (ours_rate, theirs_rate) = (rates(&ours), rates(&theirs));
    Ok(ratio(
        "C1",
        "history ÷ Kafka Connect JDBC sink",
        &ours_rate,
        &theirs_rate,
        3.0,
        format!(
            "{} events, {} partitions, same topic: orderflow history {}; {connector} in Kafka Connect standalone \
             (upsert on the event id, batch 2000, {} task(s), Apicurio converter) {}; CPU per event, consumer / \
             machine: orderflow {}, Connect {}",
            records.len(),
            ctx.partitions,
            super::stats::describe(&ours_rate, "events/s"),
            sink.tasks,
            super::stats::describe(&theirs_rate, "events/s"),
            cpu_summary(&ours),
            cpu_summary(&theirs),
        ),
    ))
}

fn per_event_us(seconds: f64, events: usize) -> f64 {
    seconds * 1e6 / events.max(1) as f64
}

fn cpu_summary(sides: &[Side]) -> String {
    let median = |f: fn(&Side) -> f64| Samples { runs: sides.iter().map(f).collect() }.median();
    format!("{:.1} / {:.1} µs", median(|s| s.cpu_us), median(|s| s.machine_cpu_us))
}

/// The connector's jar name (it carries the version), for the report.
fn connector_jar(plugins: &Path) -> anyhow::Result<String> {
    let dir = plugins.join("debezium-connector-jdbc");
    std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|name| name.starts_with("debezium-connector-jdbc-") && name.ends_with(".jar"))
        .map(|name| name.trim_end_matches(".jar").to_string())
        .with_context(|| format!("no debezium-connector-jdbc-*.jar in {}", dir.display()))
}

/// Kafka Connect standalone with the sink, killed when dropped.
struct ConnectProcess {
    child: Child,
    log: PathBuf,
}

impl ConnectProcess {
    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// The end of its log, for an error.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for ConnectProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One run of the sink draining `records` into the database at `url`.
async fn connect_side(
    ctx: &BenchContext,
    sink: &ConnectSink,
    url: &str,
    topic: &str,
    records: &[LogRecord],
    codec: &schemas::Codec,
) -> anyhow::Result<Side> {
    let options = PgConnectOptions::from_str(url).context("the bench's database URL")?;
    let dir = std::env::temp_dir().join(format!("orderflow-bench-connect-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let worker = dir.join("worker.properties");
    let connector = dir.join("history-sink.properties");
    std::fs::write(&worker, worker_properties(ctx, sink, &dir))?;
    std::fs::write(&connector, connector_properties(&options, topic, sink.tasks))?;
    let log = dir.join("connect.log");
    let child = Command::new(&sink.java)
        .args(["-Xms512m", "-Xmx1g", "-cp", &sink.classpath, "org.apache.kafka.connect.cli.ConnectStandalone"])
        .arg(&worker)
        .arg(&connector)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(dir.join("connect.err"))?)
        .spawn()
        .with_context(|| format!("starting Kafka Connect with {}", sink.java))?;
    let mut connect = ConnectProcess { child, log };
    let result = watch_sink(&mut connect, url, records, codec).await;
    drop(connect);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Waits for the sink's first row, then until the last record of every partition is in
/// (one task writes its batches in order, so then every record is), and checks the count.
async fn watch_sink(
    connect: &mut ConnectProcess,
    url: &str,
    records: &[LogRecord],
    codec: &schemas::Codec,
) -> anyhow::Result<Side> {
    let mut db = PgConnection::connect(url).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut lasts = std::collections::BTreeMap::new();
    for r in records {
        lasts.insert(r.partition, r);
    }
    let last_ids: Vec<String> = lasts
        .values()
        .map(|r| {
            let event = r.payload.as_deref().map(|p| codec.decode(p)).transpose()?;
            Ok(event.map(|e| e.envelope().event_id.to_string()).unwrap_or_default())
        })
        .collect::<anyhow::Result<_>>()?;
    let wait = |what: &str, connect: &mut ConnectProcess| -> anyhow::Result<()> {
        anyhow::ensure!(!connect.exited(), "Kafka Connect exited while {what}:\n{}", connect.log_tail());
        anyhow::ensure!(Instant::now() < deadline, "Kafka Connect: timed out {what}:\n{}", connect.log_tail());
        Ok(())
    };
    // The table is the connector's to create; until then the query fails.
    let (t0, at_t0, cpu0) = loop {
        wait("waiting for its first row", connect)?;
        let count: Result<i64, _> =
            sqlx::query_scalar(&format!("SELECT count(*) FROM {SINK_TABLE}")).fetch_one(&mut db).await;
        if let Ok(n) = count {
            if n > 0 {
                break (Instant::now(), n, (process_cpu_seconds(&connect.pid()), machine_cpu_seconds()));
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let present = format!("SELECT count(*) FROM {SINK_TABLE} WHERE envelope_event_id = ANY($1)");
    loop {
        let n: i64 = sqlx::query_scalar(&present).bind(&last_ids).fetch_one(&mut db).await?;
        if n as usize == last_ids.len() {
            break;
        }
        wait("draining the backlog", connect)?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = t0.elapsed().as_secs_f64().max(1e-6);
    let cpu = (process_cpu_seconds(&connect.pid()) - cpu0.0, machine_cpu_seconds() - cpu0.1);
    let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {SINK_TABLE}")).fetch_one(&mut db).await?;
    anyhow::ensure!(
        rows as usize == records.len(),
        "the sink wrote {rows} rows for {} records, each with its own event id",
        records.len()
    );
    let timed = (records.len() as i64 - at_t0).max(1) as usize;
    Ok(Side {
        per_second: timed as f64 / elapsed,
        cpu_us: per_event_us(cpu.0, timed),
        machine_cpu_us: per_event_us(cpu.1, timed),
    })
}

fn worker_properties(ctx: &BenchContext, sink: &ConnectSink, dir: &Path) -> String {
    let converter = "io.apicurio.registry.utils.converter.AvroConverter";
    format!(
        "bootstrap.servers={brokers}\n\
         plugin.path={plugins}\n\
         offset.storage.file.filename={offsets}\n\
         offset.flush.interval.ms=10000\n\
         key.converter=org.apache.kafka.connect.storage.StringConverter\n\
         value.converter={converter}\n\
         value.converter.apicurio.registry.url={registry}\n\
         value.converter.apicurio.registry.as-confluent=true\n\
         value.converter.apicurio.registry.use-id=contentId\n\
         value.converter.apicurio.registry.headers.enabled=false\n\
         consumer.auto.offset.reset=earliest\n\
         consumer.isolation.level=read_committed\n\
         consumer.max.poll.records=2000\n\
         listeners=http://127.0.0.1:0\n",
        brokers = ctx.kafka.brokers,
        plugins = sink.plugins.display(),
        offsets = dir.join("connect.offsets").display(),
        registry = sink.converter_registry,
    )
}

fn connector_properties(db: &PgConnectOptions, topic: &str, tasks: u32) -> String {
    let host = db.get_host();
    let port = db.get_port();
    let database = db.get_database().unwrap_or("postgres");
    format!(
        "name=history-jdbc-sink-{id}\n\
         connector.class=io.debezium.connector.jdbc.JdbcSinkConnector\n\
         tasks.max={tasks}\n\
         topics={topic}\n\
         connection.url=jdbc:postgresql://{host}:{port}/{database}\n\
         connection.username={user}\n\
         connection.password=\n\
         insert.mode=upsert\n\
         primary.key.mode=record_value\n\
         primary.key.fields=envelope_event_id\n\
         batch.size=2000\n\
         schema.evolution=basic\n\
         table.name.format={SINK_TABLE}\n\
         transforms=keep,flat,position\n\
         transforms.keep.type=org.apache.kafka.connect.transforms.ReplaceField$Value\n\
         transforms.keep.include=envelope,order_id\n\
         transforms.flat.type=org.apache.kafka.connect.transforms.Flatten$Value\n\
         transforms.flat.delimiter=_\n\
         transforms.position.type=org.apache.kafka.connect.transforms.InsertField$Value\n\
         transforms.position.partition.field=partition_id\n\
         transforms.position.offset.field=record_offset\n",
        id = uuid::Uuid::new_v4().simple(),
        user = db.get_username(),
    )
}
