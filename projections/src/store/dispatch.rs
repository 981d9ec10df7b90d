//! A group kind turned into typed code: the member's door applies a batch of any group
//! (projection or process) and fires a group's timers without knowing which it is. The
//! only place outside the registry that matches on kinds.
use schemas::{Codec, TopicRole};

use super::batch::DecodedRecords;
use super::error::StoreError;
use super::records::{Batch, BatchOutcome, LogRecord};
use super::roles::Batches;
use crate::registry::{with_model, GroupKind, ProjectionKind};

impl Batches {
    /// The records decoded as `kind` reads them (pure, so a member decodes the next batch
    /// while the one before is written); `None` for a process, which decodes inside its
    /// batch.
    pub fn decode(
        kind: impl Into<GroupKind>,
        role: TopicRole,
        codec: &Codec,
        records: &[LogRecord],
    ) -> Option<DecodedRecords> {
        match kind.into() {
            GroupKind::Projection(projection) => Some(decode_for(projection, role, codec, records)),
            GroupKind::Process(_) => None,
        }
    }

    /// Applies a batch of `kind`'s records in one transaction with its offsets: exactly
    /// once, whichever member applies it and however often it is tried.
    pub async fn apply(
        &self,
        kind: impl Into<GroupKind>,
        batch: &Batch<'_>,
        codec: &Codec,
    ) -> Result<BatchOutcome, StoreError> {
        let kind = kind.into();
        self.apply_decoded(kind, batch, codec, Self::decode(kind, batch.role, codec, batch.records)).await
    }

    /// [`Batches::apply`] with the records decoded beforehand ([`Batches::decode`]).
    pub async fn apply_decoded(
        &self,
        kind: impl Into<GroupKind>,
        batch: &Batch<'_>,
        codec: &Codec,
        decoded: Option<DecodedRecords>,
    ) -> Result<BatchOutcome, StoreError> {
        match (kind.into(), decoded) {
            (GroupKind::Projection(projection), Some(decoded)) => {
                with_model!(projection, P => self.store.apply_decoded_batch::<P>(batch, decoded).await)
            }
            (GroupKind::Projection(projection), None) => {
                with_model!(projection, P => self.store.apply_batch::<P>(batch, codec).await)
            }
            (GroupKind::Process(process), _) => {
                self.store.apply_process_batch(process, batch, codec, &self.decisions).await
            }
        }
    }

    /// Parks the records of `batch` with the database's `reason` and moves the offsets
    /// past them, in one transaction (a record the database refuses must not stop its
    /// partition).
    pub async fn park_refused(
        &self,
        batch: &Batch<'_>,
        codec: &Codec,
        reason: &str,
    ) -> Result<BatchOutcome, StoreError> {
        self.store.park_refused(batch, codec, reason).await
    }

    /// Fires the due timers of `kind` on these partitions of `topic` (a group without
    /// timers fires none). Returns how many fired.
    pub async fn fire_due_timers(
        &self,
        kind: impl Into<GroupKind>,
        group: &str,
        topic: &str,
        partitions: &[i32],
        codec: &Codec,
    ) -> Result<usize, StoreError> {
        if !kind.into().fires_timers() {
            return Ok(0);
        }
        self.store.fire_due_timers(group, topic, partitions, codec, &self.decisions).await
    }
}

fn decode_for(projection: ProjectionKind, role: TopicRole, codec: &Codec, records: &[LogRecord]) -> DecodedRecords {
    with_model!(projection, P => DecodedRecords::for_projection::<P>(codec, records, role))
}
