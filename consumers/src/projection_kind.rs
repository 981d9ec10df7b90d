//! Which projection a group builds: the one switch from a name to typed code.
use std::collections::BTreeMap;
use std::str::FromStr;

use projections::model::fulfilment::Fulfilment;
use projections::model::history::History;
use projections::model::inventory::Inventory;
use projections::model::payment::Payment;
use projections::model::Projection;
use projections::store::{BatchOutcome, DeadLetterSelection, LogRecord, RetryOutcome, Store, StoreError};
use schemas::Codec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProjectionKind {
    Inventory,
    Payment,
    Fulfilment,
    /// Every event of every order with its log position: the query API's timeline.
    History,
}

impl ProjectionKind {
    pub const ALL: [ProjectionKind; 4] =
        [ProjectionKind::Inventory, ProjectionKind::Payment, ProjectionKind::Fulfilment, ProjectionKind::History];

    pub fn name(self) -> &'static str {
        match self {
            ProjectionKind::Inventory => Inventory::NAME,
            ProjectionKind::Payment => Payment::NAME,
            ProjectionKind::Fulfilment => Fulfilment::NAME,
            ProjectionKind::History => History::NAME,
        }
    }

    /// Whether this projection reads events of `kind`.
    pub fn wants(self, kind: schemas::EventKind) -> bool {
        match self {
            ProjectionKind::Inventory => Inventory::wants(kind),
            ProjectionKind::Payment => Payment::wants(kind),
            ProjectionKind::Fulfilment => Fulfilment::wants(kind),
            ProjectionKind::History => History::wants(kind),
        }
    }

    /// The consumer group of this projection's first generation.
    pub fn default_group(self) -> String {
        projections::store::default_group(self.name())
    }

    pub async fn retry_dead_letters(
        self,
        store: &Store,
        group: &str,
        selection: &DeadLetterSelection,
        codec: &Codec,
    ) -> Result<RetryOutcome, StoreError> {
        match self {
            ProjectionKind::Inventory => store.retry_dead_letters::<Inventory>(group, selection, codec).await,
            ProjectionKind::Payment => store.retry_dead_letters::<Payment>(group, selection, codec).await,
            ProjectionKind::Fulfilment => store.retry_dead_letters::<Fulfilment>(group, selection, codec).await,
            ProjectionKind::History => store.retry_dead_letters::<History>(group, selection, codec).await,
        }
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
            ProjectionKind::History => store.apply_batch::<History>(group, topic, records, read_from, codec).await,
        }
    }
}

impl FromStr for ProjectionKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ProjectionKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown projection {s:?}; expected inventory, payment, fulfilment or history"))
    }
}

impl std::fmt::Display for ProjectionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
