//! `orderflow dead-letters list|retry|skip`: the records a group parked, with why, and
//! what an operator does about them.
use anyhow::Context;
use clap::{Args, Subcommand};
use projections::store::DeadLetterSelection;
use projections::ProjectionKind;
use serde_json::json;
use uuid::Uuid;

#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// List parked records, oldest first.
    List(ListArgs),
    /// Apply parked records now (after fixing their cause). Retrying a record of an order
    /// retries all of that order's parked records in log order.
    Retry(ActionArgs),
    /// Give up on parked records: never apply them, and stop them holding back their
    /// order's later records (retry those afterwards).
    Skip(ActionArgs),
}

#[derive(Debug, Args)]
pub struct ActionArgs {
    #[command(flatten)]
    database: crate::args::DatabaseArgs,
    /// The consumer group that parked the records.
    #[arg(long)]
    group: String,
    /// Dead letter ids, as `list` shows them.
    #[arg(required_unless_present = "order", conflicts_with = "order")]
    ids: Vec<i64>,
    /// Every parked record of this order instead of ids.
    #[arg(long)]
    order: Option<Uuid>,
    /// The projection the group builds, if the database cannot tell (a custom group name).
    #[arg(long, value_parser = clap::value_parser!(ProjectionKind))]
    projection: Option<ProjectionKind>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    operator: crate::args::OperatorArgs,
    /// Retry: the registry the parked records' schema ids are learned from, if they were
    /// written with its ids.
    #[command(flatten)]
    schemas: crate::args::SchemaRegistryArgs,
}

impl ActionArgs {
    fn arguments(&self) -> serde_json::Value {
        json!({"group": self.group, "ids": self.ids, "order": self.order, "projection": self.projection.map(|p| p.name())})
    }

    fn selection(&self) -> DeadLetterSelection {
        match self.order {
            Some(order) => DeadLetterSelection::Order(order),
            None => DeadLetterSelection::Ids(self.ids.clone()),
        }
    }

    async fn retry(&self) -> anyhow::Result<()> {
        let store = self.database.connect().await?;
        if let Some(process) =
            projections::registry::ProcessKind::ALL.into_iter().find(|p| store.group(*p) == self.group)
        {
            // Deciding a parked record again later would decide it out of log order.
            anyhow::bail!(
                "group {:?} is the {process} process: its parked records cannot be retried, only skipped                  (`orderflow dead-letters skip`) once their cause is understood",
                self.group
            );
        }
        let projection =
            match self.projection {
                Some(p) => p,
                None => store.operations().projection_of_group(&self.group).await?.with_context(|| {
                    format!("which projection does group {:?} build? pass --projection", self.group)
                })?,
            };
        let contract = self.schemas.contract().await?;
        contract.resolve(store.operations().parked_payloads(&self.group).await?.iter().map(Vec::as_slice)).await?;
        let retry = async {
            let outcome = store
                .operations()
                .retry_dead_letters(projection, &self.group, &self.selection(), contract.codec())
                .await?;
            anyhow::ensure!(
                !(outcome.applied.is_empty() && outcome.still_parked.is_empty()),
                "no parked record matched in group {:?}",
                self.group
            );
            Ok(outcome)
        };
        let outcome =
            self.operator.audited(&store, "dead-letters retry", self.arguments(), retry, |o| json!(o)).await?;
        if self.json {
            println!("{}", json!(outcome));
        } else {
            println!("applied {} record(s): {:?}", outcome.applied.len(), outcome.applied);
            for (id, reason) in &outcome.still_parked {
                println!("still parked: {id}: {reason}");
            }
        }
        Ok(())
    }

    async fn skip(&self) -> anyhow::Result<()> {
        let store = self.database.connect().await?;
        let skip = async {
            let skipped = store.operations().skip_dead_letters(&self.group, &self.selection()).await?;
            anyhow::ensure!(!skipped.is_empty(), "no parked record matched in group {:?}", self.group);
            Ok(skipped)
        };
        let skipped = self
            .operator
            .audited(&store, "dead-letters skip", self.arguments(), skip, |s| json!({"skipped": s}))
            .await?;
        if self.json {
            println!("{}", json!({"skipped": skipped}));
        } else {
            println!("skipped {} record(s): {skipped:?}", skipped.len());
        }
        Ok(())
    }
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    database: crate::args::DatabaseArgs,
    /// Only this consumer group.
    #[arg(long)]
    group: Option<String>,
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
    limit: i64,
    /// Also records already retried or skipped (with their status).
    #[arg(long)]
    all: bool,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

impl DeadLettersCommand {
    pub async fn run(self) -> anyhow::Result<()> {
        let args = match self {
            DeadLettersCommand::List(args) => args,
            DeadLettersCommand::Retry(args) => return args.retry().await,
            DeadLettersCommand::Skip(args) => return args.skip().await,
        };
        let store = args.database.connect().await?;
        let rows = store.reads().list_dead_letters_with(args.group.as_deref(), None, !args.all, args.limit).await?;
        if args.json {
            for r in &rows {
                let line = json!({"id": r.id, "group": r.group_id, "partition": r.partition, "offset": r.offset,
                                  "order_id": r.order_id, "reason": r.reason, "created_at_ms": r.created_at_ms, "status": r.status});
                println!("{line}");
            }
            return Ok(());
        }
        println!("{:<6} {:<28} {:>4} {:>8}  {:<36}  {:<8} reason", "id", "group", "part", "offset", "order", "status");
        for r in &rows {
            println!(
                "{:<6} {:<28} {:>4} {:>8}  {:<36}  {:<8} {}",
                r.id,
                r.group_id,
                r.partition,
                r.offset,
                r.order_id.as_deref().unwrap_or("-"),
                r.status,
                r.reason
            );
        }
        let what = if args.all { "dead letter(s)" } else { "parked record(s)" };
        println!("{} {what}", rows.len());
        Ok(())
    }
}
