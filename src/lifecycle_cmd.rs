//! `orderflow region start|stop|lift <here>`: a region that stopped uncleanly starts fenced.
//!
//! With two regions, a region coming back cannot know whether another took its orders
//! over while it was gone (the takeover's fence at its brokers is pending while they are
//! down, and the handover reaches it through a mirror that may not run yet). So its start
//! procedure runs `region start` before its writers: a run that ended with `region stop`
//! (a planned stop) starts as usual; one that did not (a crash, a lost machine, a database
//! restored from a backup of a running region) puts the fence up at the region's own
//! brokers: its writers are refused until an operator, having checked that no other region
//! writes its orders, runs `region lift`. A region taken over is not lifted: it fails back
//! (`region failback`, run in the region that took it over).
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use infra::fence;
use schemas::Region;

use crate::args::{OperatorArgs, PipelineArgs};
use crate::region_io::lost_region_fence;

/// The states `region_runs` records.
const RUNNING: &str = "running";
const STOPPED: &str = "stopped";
const FENCED: &str = "fenced";

#[derive(Debug, Args)]
pub struct LifecycleArgs {
    /// This region.
    #[arg(value_name = "REGION")]
    this: Region,
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// The principals a fence denies Write at this region's brokers (repeat for several).
    #[arg(long = "fence-principal", default_value = fence::EVERYONE)]
    fence_principals: Vec<String>,
    #[command(flatten)]
    operator: OperatorArgs,
}

impl LifecycleArgs {
    fn fence(&self) -> fence::Fence {
        lost_region_fence(&self.pipeline.topic.topic, &self.fence_principals)
    }

    /// Before the region's writers start: fenced if its last run did not end cleanly.
    pub async fn start(self) -> anyhow::Result<serde_json::Value> {
        let store = self.pipeline.database.connect().await?;
        let last = store.operations().region_run(&self.this).await?;
        let unclean = matches!(last.as_ref().map(|(state, _)| state.as_str()), Some(RUNNING | FENCED));
        if unclean {
            let kafka = self.pipeline.kafka.settings()?;
            fence::put_up(&kafka, &self.fence(), Duration::from_secs(30))
                .await
                .context("putting the fence up at this region's brokers")?;
            store.operations().set_region_run(&self.this, FENCED).await?;
            tracing::warn!(region = %self.this, "The region's last run did not end with `region stop`: it starts fenced. Lift it with `orderflow region lift` once no other region writes its orders.");
            return Ok(serde_json::json!({"event": "started_fenced", "region": self.this.as_str(),
                "last_run": last.map(|(state, since_ms)| serde_json::json!({"state": state, "since_ms": since_ms}))}));
        }
        store.operations().set_region_run(&self.this, RUNNING).await?;
        Ok(serde_json::json!({"event": "started", "region": self.this.as_str()}))
    }

    /// After the region's writers stopped: its next start is a clean one.
    pub async fn stop(self) -> anyhow::Result<serde_json::Value> {
        let store = self.pipeline.database.connect().await?;
        let last = store.operations().region_run(&self.this).await?;
        anyhow::ensure!(
            last.as_ref().is_none_or(|(state, _)| state != FENCED),
            "region {} is fenced: lift it (or fail it back) first; a fenced region's stop is not a clean one",
            self.this
        );
        store.operations().set_region_run(&self.this, STOPPED).await?;
        Ok(serde_json::json!({"event": "stopped", "region": self.this.as_str()}))
    }

    /// The operator's word that no other region writes this region's orders.
    pub async fn lift(self) -> anyhow::Result<serde_json::Value> {
        let store = self.pipeline.database.connect().await?;
        let owners = store.operations().owners().await?;
        let (owner, epoch) = owners.owner_of(&self.this);
        anyhow::ensure!(
            owner == self.this,
            "region {} was taken over by {owner} (epoch {epoch}): it takes its orders back with \
             `orderflow region failback {} --by {owner}`, run in {owner}, which lifts the fence",
            self.this,
            self.this
        );
        let arguments = serde_json::json!({"region": self.this.as_str(), "topic": self.pipeline.topic.topic});
        let lifted = async {
            let kafka = self.pipeline.kafka.settings()?;
            fence::take_down(&kafka, &self.fence(), Duration::from_secs(30))
                .await
                .context("lifting the fence at this region's brokers")?;
            store.operations().set_region_run(&self.this, RUNNING).await?;
            anyhow::Ok(serde_json::json!({"event": "lifted", "region": self.this.as_str()}))
        };
        self.operator.audited(&store, "region lift", arguments, lifted, |r| r.clone()).await
    }
}
