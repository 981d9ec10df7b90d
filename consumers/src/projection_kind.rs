//! Which projection a group builds: the one switch from a name to typed code.
use std::collections::BTreeMap;
use std::str::FromStr;

use projections::model::fulfilment::Fulfilment;
use projections::model::inventory::Inventory;
use projections::model::payment::Payment;
use projections::model::Projection;
use projections::store::{BatchOutcome, LogRecord, Store, StoreError};
use schemas::Codec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProjectionKind {
    Inventory,
    Payment,
    Fulfilment,
}

impl ProjectionKind {
    pub const ALL: [ProjectionKind; 3] =
        [ProjectionKind::Inventory, ProjectionKind::Payment, ProjectionKind::Fulfilment];

    pub fn name(self) -> &'static str {
        match self {
            ProjectionKind::Inventory => Inventory::NAME,
            ProjectionKind::Payment => Payment::NAME,
            ProjectionKind::Fulfilment => Fulfilment::NAME,
        }
    }

    /// The default consumer group of this projection.
    pub fn default_group(self) -> String {
        format!("orderflow-{}", self.name())
    }

    pub async fn apply_batch(
        self,
        store: &Store,
        group: &str,
        topic: &str,
        records: &[LogRecord],
        read_from: &BTreeMap<i32, i64>,
        codec: &Codec,
    ) -> Result<BatchOutcome, StoreError> {
        match self {
            ProjectionKind::Inventory => store.apply_batch::<Inventory>(group, topic, records, read_from, codec).await,
            ProjectionKind::Payment => store.apply_batch::<Payment>(group, topic, records, read_from, codec).await,
            ProjectionKind::Fulfilment => {
                store.apply_batch::<Fulfilment>(group, topic, records, read_from, codec).await
            }
        }
    }
}

impl FromStr for ProjectionKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ProjectionKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown projection {s:?}; expected inventory, payment or fulfilment"))
    }
}

impl std::fmt::Display for ProjectionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
