//! `orderflow rebuild <projection>`: a shadow rebuild. A fresh consumer group fills a
//! new generation of the projection's tables from offset 0 while the views keep showing
//! the old one; once the new group has applied at least everything the old group has,
//! the views switch in one transaction. Readers never see a half-built projection.
//!
//! `orderflow rebuild stock|order-process|checkout-keys` rebuilds the state that is not a
//! projection from the log instead ([`crate::recover_cmd`]).
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use consumers::member::run_member;
use projections::registry::{GroupKind, ProcessKind};
use projections::store::{ProcessSettings, Store};
use projections::ProjectionKind;

use crate::args::parse_duration;

#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// What to rebuild: a projection (inventory, payment, fulfilment, history), a
    /// process's decided state (stock, order-process; its members must be stopped), or
    /// the checkout's idempotency keys and order owners (checkout-keys).
    #[arg(value_parser = parse_target)]
    target: Target,
    #[command(flatten)]
    pipeline: crate::args::PipelineArgs,
    /// After the switch, drop the tables of every generation the views no longer show
    /// (default: keep them, to compare or switch back by hand).
    #[arg(long)]
    drop_old: bool,
    /// Do not rebuild: only drop the generations the views no longer show.
    #[arg(long, requires = "drop_old")]
    no_rebuild: bool,
    /// Give up if the new generation has not caught up within this time.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    timeout: Duration,
    /// The rebuilding member's settings (as for `orderflow consume`).
    #[command(flatten)]
    member: crate::args::MemberArgs,
    #[command(flatten)]
    schemas: crate::args::SchemaRegistryArgs,
    /// Print JSON lines of progress instead of a progress bar.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    operator: crate::args::OperatorArgs,
    /// Order process: the payment timeout its members run with (the recovered timers are
    /// due at each order's confirmation plus this).
    #[arg(long, env = "ORDERFLOW_PAYMENT_TIMEOUT", default_value_t = ProcessSettings::PAYMENT_TIMEOUT.into(),
          value_parser = crate::args::duration)]
    payment_timeout: humantime::Duration,
    /// Processes: how long to wait for the group's members to leave it (a killed member
    /// stays listed until its session times out) before refusing.
    #[arg(long, default_value = "60s", value_parser = crate::args::duration)]
    stopped_within: humantime::Duration,
}

/// What `orderflow rebuild` rebuilds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Projection(ProjectionKind),
    Process(ProcessKind),
    CheckoutKeys,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Projection(p) => p.name(),
            Target::Process(p) => p.name(),
            Target::CheckoutKeys => "checkout-keys",
        }
    }
}

fn parse_target(raw: &str) -> Result<Target, String> {
    if raw == Target::CheckoutKeys.name() {
        return Ok(Target::CheckoutKeys);
    }
    match raw.parse::<GroupKind>() {
        Ok(GroupKind::Projection(p)) => Ok(Target::Projection(p)),
        Ok(GroupKind::Process(p)) => Ok(Target::Process(p)),
        Err(e) => Err(format!("{e}, or checkout-keys")),
    }
}

impl RebuildArgs {
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let store = self.pipeline.database.connect().await?;
        let arguments = serde_json::json!({"projection": self.target.name(), "topic": self.pipeline.topic.topic,
            "drop_old": self.drop_old, "no_rebuild": self.no_rebuild});
        let operator = self.operator.clone();
        if !matches!(self.target, Target::Projection(_)) {
            if self.drop_old || self.no_rebuild {
                anyhow::bail!(
                    "--drop-old and --no-rebuild are for projections: {} keeps no generations",
                    self.target.name()
                );
            }
            return operator
                .audited(&store, "rebuild", arguments, self.recover(&store), |report| report.clone())
                .await
                .map(|_| ());
        }
        let action = if self.no_rebuild { "rebuild --no-rebuild" } else { "rebuild" };
        operator
            .audited(&store, action, arguments, self.rebuild(&store, shutdown), |()| serde_json::json!("done"))
            .await
    }

    /// Rebuilds a process's state or the checkout's keys; prints and returns the report.
    async fn recover(&self, store: &Store) -> anyhow::Result<serde_json::Value> {
        let kafka = self.pipeline.kafka.checked_settings(Some(&self.pipeline.topic.topic)).await?;
        let contract = self.schemas.contract().await?;
        let topic = &self.pipeline.topic.topic;
        let report = match self.target {
            Target::Process(kind) => {
                let settings =
                    ProcessSettings { payment_timeout: *self.payment_timeout, ..ProcessSettings::new(topic) };
                crate::recover_cmd::rebuild_process(kind, store, &kafka, &contract, &settings, *self.stopped_within)
                    .await?
            }
            Target::CheckoutKeys => {
                let home = self.pipeline.database.region.region.as_ref();
                let url = &self.pipeline.database.url.database_url;
                crate::recover_cmd::rebuild_checkout_keys(url, &kafka, &contract, topic, home).await?
            }
            Target::Projection(_) => unreachable!("projections take the shadow rebuild"),
        };
        self.report(&report);
        Ok(report)
    }

    async fn rebuild(
        self,
        store: &projections::store::Store,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Target::Projection(projection) = self.target else {
            anyhow::bail!("{} is not a projection", self.target.name())
        };
        let store = store.clone();
        let kafka = self.pipeline.kafka.checked_settings(Some(&self.pipeline.topic.topic)).await?;
        let name = projection.name();
        if self.no_rebuild {
            return self.drop_retired(&store).await;
        }
        let live = store.reads().live_projection(projection).await?;
        refuse_if_running(&kafka, &store, projection, &self.pipeline.topic.topic).await?;
        let next = store.operations().prepare_rebuild(projection).await?;
        self.report(&serde_json::json!({"event": "started", "projection": name, "from_generation": live.generation,
            "to_generation": next.generation, "group": next.group}));
        let mut config = self.member.config(projection, &self.pipeline.topic.topic)?;
        config.group = next.group.clone();
        // In a region, the new generation holds the other regions' orders too.
        config.mirrors = self.pipeline.database.region.mirrors();
        let logs: Vec<(Option<schemas::Region>, String)> = std::iter::once(None)
            .chain(config.mirrors.iter().cloned().map(Some))
            .flat_map(|source| {
                let topics = projections::registry::GroupKind::from(projection).topics(&self.pipeline.topic.topic);
                topics.into_iter().map(move |topic| match &source {
                    Some(region) => (source.clone(), region.mirrored(&topic)),
                    None => (None, topic),
                })
            })
            .collect();
        config.contract = self.schemas.contract().await?;
        let member = run_member(config, &kafka, store.clone())?;
        let bar = self.progress_bar();
        let started = Instant::now();
        tokio::pin!(shutdown);
        let switched_from = loop {
            tokio::select! {
                _ = &mut shutdown => {
                    bar.abandon_with_message("interrupted; the views still show the old generation");
                    member.stop().await?;
                    anyhow::bail!("rebuild interrupted; run it again to start over");
                }
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            let applied: i64 = member.stats.positions.lock().unwrap_or_else(|e| e.into_inner()).values().sum();
            let ends: i64 = member.stats.log_ends.lock().unwrap_or_else(|e| e.into_inner()).values().sum();
            bar.set_length(ends.max(applied) as u64);
            bar.set_position(applied as u64);
            let lag = member.stats.lag();
            if lag.is_some_and(|l| l <= 5_000) || (lag.is_none() && member.stats.batches.load(Ordering::Relaxed) > 0) {
                if let Some(old) = store.operations().try_switch(&next, &logs, Duration::from_secs(5)).await? {
                    break old;
                }
            }
            if started.elapsed() > self.timeout {
                member.stop().await?;
                anyhow::bail!("the new generation did not catch up within {:?}; the views are unchanged", self.timeout);
            }
        };
        bar.finish_with_message("switched");
        member.stop().await?;
        self.report(&serde_json::json!({"event": "switched", "projection": name, "generation": next.generation,
            "group": next.group, "seconds": started.elapsed().as_secs_f64()}));
        if self.drop_old {
            self.drop_retired(&store).await?;
        } else {
            eprintln!(
                "kept generation {} ({}); drop it with `orderflow rebuild {name} --drop-old --no-rebuild`",
                switched_from.generation, switched_from.group
            );
        }
        Ok(())
    }

    async fn drop_retired(&self, store: &Store) -> anyhow::Result<()> {
        let Target::Projection(projection) = self.target else { return Ok(()) };
        for old in store.operations().retired_generations(projection).await? {
            store.operations().drop_generation(&old).await?;
            self.report(&serde_json::json!({"event": "dropped", "projection": old.projection,
                "generation": old.generation, "group": old.group}));
        }
        Ok(())
    }

    fn report(&self, line: &serde_json::Value) {
        if self.json {
            println!("{line}");
        } else {
            eprintln!("{}", line["event"].as_str().unwrap_or_default().to_string() + ": " + &line.to_string());
        }
    }

    fn progress_bar(&self) -> indicatif::ProgressBar {
        if self.json {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} {bar:30} {human_pos}/{human_len} events  {per_sec}  ETA {eta}  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    }
}

/// Two rebuilds of one projection would build the same generation and wipe each other's
/// progress: refuse while the group of an unfinished one has members at the broker.
async fn refuse_if_running(
    kafka: &infra::KafkaSettings,
    store: &Store,
    projection: ProjectionKind,
    topic: &str,
) -> anyhow::Result<()> {
    let groups = store.operations().unfinished_rebuilds(projection).await?;
    if groups.is_empty() {
        return Ok(());
    }
    let mut busy = None;
    for group in groups {
        let members = crate::kit::members_at_broker(kafka, &group, &[topic.to_string()]).await?;
        if members > 0 {
            busy = Some((group, members));
            break;
        }
    }
    if let Some((group, members)) = busy {
        anyhow::bail!(
            "a rebuild of {projection} is already running (group {group} has {members} member(s) at the broker); \
             let it finish or stop it"
        );
    }
    Ok(())
}
