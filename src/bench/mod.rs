//! `orderflow bench`: the benchmark harness (figures and goals: `src/DESIGN.md`). Every figure
//! that matters is a ratio of two things measured in the same run against the same broker
//! and database; absolute numbers are printed with the machine they came from.
mod checkout_bench;
mod connect_bench;
mod copy_ceiling;
mod decision_bench;
mod growth_bench;
mod pipeline_bench;
mod projector_bench;
mod region_bench;
mod restart_bench;
mod stats;

use std::time::Duration;

use clap::Args;
use infra::KafkaSettings;
use serde_json::json;

use crate::args::{parse_duration, KafkaArgs};
use stats::Figure;

use crate::kit::TempDatabases;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// The PostgreSQL server the figures that need a database run on (checkout idempotency,
    /// projections): a fresh database is created there for each run. `infra/local/up`
    /// exports one.
    #[command(flatten)]
    database: crate::args::DatabaseUrlArgs,
    /// Events per producer measurement.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1_000..=10_000_000))]
    events: u64,
    /// Partitions of each benchmark topic.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(i32).range(1..=1_000))]
    partitions: i32,
    /// Runs per side of each ratio (median and spread are reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    repeats: u32,
    /// Length of each timed HTTP run.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    run_duration: Duration,
    /// Concurrent HTTP clients in the checkout benchmark (both sides of P3).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=4_096))]
    http_clients: u32,
    /// What the broker is, for the report; `infra/local/up` exports it (e.g. "Apache Kafka
    /// 4.1.1, KRaft, 1 node").
    #[arg(long, env = "ORDERFLOW_BENCH_BROKER_LABEL", default_value = "unlabelled Kafka-protocol broker")]
    broker_label: String,
    /// Also write the report as JSON to this path.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Only these figures, comma separated (e.g. `P4` or `P1,P2`); default: all.
    #[arg(long, value_delimiter = ',', value_parser = ["P1", "P1h", "C1", "P2", "P3", "P3b", "P4", "P5", "P6", "P7", "R1", "S1", "G1"])]
    only: Vec<String>,
    /// G1's log sizes (events), each drained by 1, 2 and 4 member processes. G1 runs only
    /// when named in `--only` (it takes minutes).
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000,5000000",
          value_parser = clap::value_parser!(u64).range(1_000..=100_000_000))]
    growth_sizes: Vec<u64>,
    /// Two regions for R1 (202 in one → visible in the other), `<region>=<brokers>` each,
    /// the placing region first (more are ignored); `infra/local/up --regions eu,us` exports them. Without
    /// them R1 is left out.
    #[arg(long, env = "ORDERFLOW_BENCH_REGIONS", value_delimiter = ',', value_parser = parse_region_brokers)]
    regions: Vec<(schemas::Region, String)>,
    /// The measured members' settings (as for `orderflow consume`).
    #[command(flatten)]
    member: crate::args::MemberArgs,
    /// P4 and P6 at this many orders/s instead of 50% of the measured max sustainable rate, to
    /// compare builds at the same load.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    latency_rate: Option<u32>,
    /// C1's Kafka Connect sink; without it C1 is left out.
    #[command(flatten)]
    connect: connect_bench::ConnectSinkArgs,
}

/// What each benchmark needs.
pub struct BenchContext {
    pub kafka: KafkaSettings,
    pub database_url: String,
    pub events: usize,
    pub partitions: i32,
    pub repeats: u32,
    pub run_duration: Duration,
    pub http_clients: usize,
    /// P4's fixed rate, if given.
    pub latency_rate: Option<f64>,
    member: crate::args::MemberArgs,
    progress: indicatif::ProgressBar,
    /// The bench's checkouts authenticate like production ones (a hashed static token),
    /// without a rate limit: the bench measures what the service can take.
    pub access: infra::http::Access,
    pub token: String,
    /// The topics made by [`BenchContext::fresh_topic`], to delete at the end.
    topics: std::sync::Mutex<Vec<String>>,
}

impl BenchContext {
    /// A fresh pipeline of topics (see [`crate::kit::fresh_topic`]), deleted when the bench ends.
    pub async fn fresh_topic(&self, prefix: &str) -> anyhow::Result<String> {
        let topic = crate::kit::fresh_topic(&self.kafka, prefix, self.partitions).await?;
        self.topics.lock().unwrap_or_else(|e| e.into_inner()).extend(schemas::pipeline_topics(&topic));
        Ok(topic)
    }

    /// Deletes the topics this run made: a bench run writes millions of records into
    /// hundreds of partitions, which would otherwise stay on the broker (and slow every later
    /// run) until deleted by hand.
    async fn delete_topics(&self) {
        let topics = std::mem::take(&mut *self.topics.lock().unwrap_or_else(|e| e.into_inner()));
        if let Err(e) = infra::topics::delete_topics(&self.kafka, &topics, Duration::from_secs(30)).await {
            eprintln!("could not delete the bench's {} topics: {e}", topics.len());
        }
    }

    /// A measured member of `group` of `kind` (a projection, a process) in a pipeline on
    /// `orders_topic`.
    pub fn member_config(
        &self,
        kind: impl Into<projections::registry::GroupKind>,
        orders_topic: &str,
        group: &str,
    ) -> anyhow::Result<consumers::MemberConfig> {
        let mut config = self.member.config(kind, orders_topic)?;
        config.group = group.to_string();
        Ok(config)
    }

    /// One measurement run done.
    pub fn tick(&self) {
        self.progress.inc(1);
    }
}

impl BenchArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.database.database_url.starts_with("postgres"),
            "orderflow bench needs a PostgreSQL server (--database-url postgres://…, or ORDERFLOW_DATABASE_URL, \
             which `infra/local/up` exports): each run creates fresh databases there"
        );
        let figures_planned = 6 * u64::from(self.repeats) + 6;
        let progress = indicatif::ProgressBar::new(figures_planned);
        progress.set_style(
            indicatif::ProgressStyle::with_template("bench {bar:30} {pos}/{len} runs {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let (token, entry) = infra::auth::new_token("bench", infra::auth::Scope::ALL.to_vec())?;
        let limits = infra::http::Limits { per_principal_per_second: None, ..Default::default() };
        let access = infra::http::Access::new(infra::auth::Authenticator::from_tokens(vec![entry])?, limits);
        let ctx = BenchContext {
            access,
            token,
            kafka: self.kafka.settings()?,
            database_url: self.database.database_url.clone(),
            events: self.events as usize,
            partitions: self.partitions,
            repeats: self.repeats,
            run_duration: self.run_duration,
            http_clients: self.http_clients as usize,
            latency_rate: self.latency_rate.map(f64::from),
            member: self.member.clone(),
            progress,
            topics: std::sync::Mutex::new(Vec::new()),
        };
        let databases = TempDatabases::new(&self.database.database_url, "bench");
        // Whatever the figures end in, the databases and topics the run made go.
        let figures = self.figures(&ctx, &databases).await;
        databases.drop_all().await;
        ctx.delete_topics().await;
        let figures = figures?;
        ctx.progress.finish_and_clear();

        let machine = machine_description(&self.broker_label, &self.database.database_url);
        print_table(&machine, &figures);
        if let Some(path) = &self.json {
            let report = json!({ "machine": machine, "figures": figures });
            std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
            println!("report written to {}", path.display());
        }
        Ok(())
    }

    /// The figures asked for, in the order the report lists them.
    async fn figures(&self, ctx: &BenchContext, databases: &TempDatabases) -> anyhow::Result<Vec<Figure>> {
        let wanted = |id: &str| self.only.is_empty() || self.only.iter().any(|o| o == id);
        let mut figures = Vec::new();
        if wanted("P3") {
            ctx.progress.set_message("P3 checkout vs HTTP ceiling");
            figures.extend(checkout_bench::p3_checkout_vs_http(ctx).await?);
        }
        if wanted("P3b") {
            ctx.progress.set_message("P3b publisher vs raw producer");
            figures.push(checkout_bench::p3b_publisher_vs_raw(ctx).await?);
        }
        if wanted("P1") || wanted("P2") {
            ctx.progress.set_message("P1/P2 projector on PostgreSQL");
            let pg =
                projector_bench::p1_p2(ctx, "PostgreSQL", async || databases.fresh().await, Some(databases)).await?;
            figures.push(pg.p1);
            figures.extend(pg.p2);
        }
        if wanted("P1h") {
            ctx.progress.set_message("P1h history on PostgreSQL");
            figures.push(projector_bench::p1_history(ctx, databases).await?);
        }
        if wanted("C1") {
            match self.connect.sink()? {
                Some(sink) => {
                    ctx.progress.set_message("C1 history vs Kafka Connect JDBC sink");
                    figures.push(connect_bench::c1_history_vs_connect(ctx, databases, &sink).await?);
                }
                None => eprintln!(
                    "C1 left out: no Kafka Connect sink (eval \"$(infra/local/up --connect-sink)\" exports it)"
                ),
            }
        }
        if wanted("P1") {
            ctx.progress.set_message("P1 projector on SQLite");
            let lite = projector_bench::p1_p2(
                ctx,
                "SQLite",
                async || {
                    let path =
                        std::env::temp_dir().join(format!("orderflow-bench-{}.db", uuid::Uuid::new_v4().simple()));
                    Ok(projections::store::Store::connect(&format!("sqlite://{}?mode=rwc", path.display())).await?)
                },
                None,
            )
            .await?;
            figures.push(lite.p1);
        }
        if wanted("P5") {
            ctx.progress.set_message("P5 replay vs live");
            figures.push(pipeline_bench::p5_replay(ctx, databases).await?);
        }
        if wanted("P4") {
            ctx.progress.set_message("P4 202 → visible latency");
            figures.extend(pipeline_bench::p4_latency(ctx, databases).await?);
        }
        if wanted("P6") {
            ctx.progress.set_message("P6 202 → decision latency");
            figures.extend(decision_bench::p6_decision_latency(ctx, databases).await?);
        }
        if wanted("R1") {
            match self.regions.as_slice() {
                [(from, from_brokers), (to, to_brokers), ..] => {
                    ctx.progress.set_message("R1 202 in one region → visible in another");
                    let pair = region_bench::RegionPair {
                        from: (from.clone(), KafkaSettings::new(from_brokers).with_env_overrides()?),
                        to: (to.clone(), KafkaSettings::new(to_brokers).with_env_overrides()?),
                    };
                    figures.extend(region_bench::r1_cross_region_visibility(ctx, &pair, databases).await?);
                }
                [] => eprintln!("R1 left out: no --regions (infra/local/up --regions eu,us exports them)"),
                [_] => anyhow::bail!("--regions takes two regions, e.g. eu=127.0.0.1:19392,us=127.0.0.1:19492"),
            }
        }
        if wanted("S1") {
            ctx.progress.set_message("S1 decider stall after SIGKILL");
            figures.extend(restart_bench::s1_restart_stall(ctx, databases).await?);
        }
        if self.only.iter().any(|o| o == "G1") {
            ctx.progress.set_message("G1 growth with log size and members");
            let sizes: Vec<usize> = self.growth_sizes.iter().map(|s| *s as usize).collect();
            figures.extend(growth_bench::g1_growth(ctx, databases, &sizes).await?);
        }
        if wanted("P7") {
            ctx.progress.set_message("P7 consumer memory");
            figures.push(pipeline_bench::p7_memory(ctx, databases).await?);
        }
        Ok(figures)
    }
}

/// `<region>=<bootstrap servers>`.
fn parse_region_brokers(entry: &str) -> Result<(schemas::Region, String), String> {
    let (region, brokers) = entry.split_once('=').ok_or_else(|| format!("{entry:?} is not <region>=<brokers>"))?;
    Ok((schemas::Region::parse(region)?, brokers.to_string()))
}

fn machine_description(broker: &str, database_url: &str) -> serde_json::Value {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let database = database_url.split("://").next().unwrap_or("?");
    json!({
        "cores": cores,
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "broker": broker,
        "database": database,
        "durability": "producers: acks=all, idempotent; PostgreSQL synchronous_commit as configured on the server",
    })
}

fn print_table(machine: &serde_json::Value, figures: &[Figure]) {
    println!(
        "orderflow bench — {} cores, {} {}, broker: {}, database: {}",
        machine["cores"],
        machine["os"].as_str().unwrap_or(""),
        machine["arch"].as_str().unwrap_or(""),
        machine["broker"].as_str().unwrap_or(""),
        machine["database"].as_str().unwrap_or("")
    );
    println!("{:<5} {:<40} {:>10} {:<6} {:<8} {:<5}", "id", "figure", "value", "unit", "target", "met");
    for f in figures {
        let met = match f.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        println!(
            "{:<5} {:<40} {:>10.2} {:<6} {:<8} {:<5}",
            f.id,
            f.name,
            f.value,
            f.unit,
            f.target.as_deref().unwrap_or(""),
            met
        );
        println!("      {}", f.detail);
    }
}
