//! `orderflow dead-letters list`: the records a group parked, with why.
use clap::{Args, Subcommand};
use projections::store::Store;
use serde_json::json;

#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// List parked records, oldest first.
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// The projection database.
    #[arg(long, env = "ORDERFLOW_DATABASE_URL", default_value = "sqlite://orderflow.db?mode=rwc")]
    database_url: String,
    /// Only this consumer group.
    #[arg(long)]
    group: Option<String>,
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
    limit: i64,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

impl DeadLettersCommand {
    pub async fn run(self) -> anyhow::Result<()> {
        let DeadLettersCommand::List(args) = self;
        let store = Store::connect(&args.database_url).await?;
        let rows = store.list_dead_letters(args.group.as_deref(), args.limit).await?;
        if args.json {
            for r in &rows {
                let line = json!({"id": r.id, "group": r.group_id, "partition": r.partition, "offset": r.offset,
                                  "order_id": r.order_id, "reason": r.reason, "created_at_ms": r.created_at_ms});
                println!("{line}");
            }
            return Ok(());
        }
        println!("{:<6} {:<28} {:>4} {:>8}  {:<36}  reason", "id", "group", "part", "offset", "order");
        for r in &rows {
            println!(
                "{:<6} {:<28} {:>4} {:>8}  {:<36}  {}",
                r.id,
                r.group_id,
                r.partition,
                r.offset,
                r.order_id.as_deref().unwrap_or("-"),
                r.reason
            );
        }
        println!("{} parked record(s)", rows.len());
        Ok(())
    }
}
