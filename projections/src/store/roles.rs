//! The doors to the store, one per kind of caller, each with only that caller's
//! operations (their methods live beside the statements they run: `batch`, `process`,
//! `offsets`, `dead_letters`, `generations`, `reads`, `retention`, `audit`). A door is a
//! cheap clone of the store; holding one does not open the others.
use super::connection::Store;
use crate::process::ProcessSettings;

impl Store {
    /// The member's door: batches, refused records, timers, its stored offsets.
    pub fn batches(&self) -> Batches {
        Batches::new(self.clone())
    }

    /// The relay's door: the outbox lease, its rows, deleting what was published.
    pub fn outbox(&self) -> Outbox {
        Outbox { store: self.clone() }
    }

    /// The readers' door (query API, dashboard, tools): views, statuses, counts, offsets.
    pub fn reads(&self) -> Reads {
        Reads { store: self.clone() }
    }

    /// The operators' door (the CLI): dead letters, offset resets, rebuilds, pruning, audit.
    pub fn operations(&self) -> Operations {
        Operations { store: self.clone() }
    }
}

/// The consumer group member's door: apply batches (projections and processes), park a
/// record the database refuses, fire timers, read and guard its stored offsets.
#[derive(Debug, Clone)]
pub struct Batches {
    pub(super) store: Store,
    /// What a process batch needs besides its records (ignored by projections).
    pub(super) decisions: ProcessSettings,
}

impl Batches {
    pub(super) fn new(store: Store) -> Self {
        Batches { store, decisions: ProcessSettings::default() }
    }

    /// What a member reads besides its batches (its stored offsets on assignment): the
    /// readers' door, which writes nothing.
    pub fn reads(&self) -> Reads {
        Reads { store: self.store.clone() }
    }

    /// This door with a process's settings (the pipeline's orders topic, the payment
    /// timeout).
    pub fn deciding(mut self, decisions: ProcessSettings) -> Self {
        self.decisions = decisions;
        self
    }
}

/// The relay's door: the outbox lease, the next rows, deleting what was published.
#[derive(Debug, Clone)]
pub struct Outbox {
    pub(super) store: Store,
}

/// The readers' door: the analyst views, the order process's statuses, dead letters and
/// offsets as the query API, the dashboard and the tools show them.
#[derive(Debug, Clone)]
pub struct Reads {
    pub(super) store: Store,
}

/// The operators' door: dead-letter actions, offset resets, rebuilds and generations,
/// pruning, and the audit trail of all of them.
#[derive(Debug, Clone)]
pub struct Operations {
    pub(super) store: Store,
}
