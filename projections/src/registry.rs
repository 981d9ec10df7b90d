//! The one list of consumer groups: the projections that describe and the processes that
//! decide ([`GroupKind`]). Everything that differs between them and is not their pure
//! logic is here: the name (consumer groups, tables, CLI), the topic each reads, the tables
//! of one generation, the analyst views over them, and which events each reads. The store,
//! the consumer runtime, the query API and the commands take all of it from here, so
//! adding a projection is a model file, an entry below and a migration, and adding a
//! process is its decision module, an entry in [`ProcessKind`] and its batch in the store
//! (see `DESIGN.md`).
//!
//! This file is a leaf: it imports the models, the processes and `schemas`, never the
//! store, which turns a kind into typed code on its side (`store::dispatch`).
//!
//! Table and view text is written once for both databases. `{t:base}` stands for the table
//! `base` of the generation being created or shown (`payment_orders`, `payment_orders_g3`),
//! `{ts:column}` for a microsecond column rendered as a timestamp in the database's way.
use std::str::FromStr;

use schemas::{EventKind, TopicRole};

use crate::model::Projection;
use crate::process::{order, stock, ORDER_PROCESS_PRINCIPAL, STOCK_PRINCIPAL};

/// Which projection a group builds: the one switch from a name to typed code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProjectionKind {
    Inventory,
    Payment,
    Fulfilment,
    /// Every event of every order with its log position: the query API's timeline.
    History,
}

/// What the store needs to create and show one generation of a projection.
#[derive(Debug)]
pub struct ProjectionSpec {
    /// The base names of the tables one generation owns.
    pub tables: &'static [&'static str],
    /// `CREATE TABLE` / `CREATE INDEX` statements for one generation, in order.
    pub ddl: &'static [&'static str],
    /// The analyst views: name and the `SELECT` behind it.
    pub views: &'static [(&'static str, &'static str)],
    /// Tables of an earlier release's shape of this projection, and how their rows move
    /// into the current tables of the same generation at start-up.
    pub upgrades: &'static [Upgrade],
    /// Columns a later release added to a table of this projection (base name, column
    /// definition): added at start-up to the live generation's table where it lacks them
    /// (SQLite cannot add a column only if it is missing in a migration).
    pub added_columns: &'static [(&'static str, &'static str)],
}

/// An earlier release's table of a projection and the copy of its rows into the current
/// tables (PostgreSQL, SQLite); the old table is dropped once the views read the new ones.
#[derive(Debug)]
pub struct Upgrade {
    pub old_table: &'static str,
    pub copy: [&'static str; 2],
}

// Stock levels per pool: each region's stock group decides its own region's pool (`pool`
// is its name, '' with one region), so a region that reads another's decisions from the
// mirror keeps both pools' levels apart.
const INVENTORY: ProjectionSpec = ProjectionSpec {
    tables: &["inventory_pools", "inventory_orders"],
    ddl: &[
        "CREATE TABLE IF NOT EXISTS {t:inventory_pools} (
            pool TEXT NOT NULL, sku TEXT NOT NULL, on_hand BIGINT NOT NULL, reserved BIGINT NOT NULL,
            shipped BIGINT NOT NULL, version BIGINT NOT NULL, PRIMARY KEY (pool, sku))",
        "CREATE TABLE IF NOT EXISTS {t:inventory_orders} (
            order_id TEXT PRIMARY KEY, status TEXT NOT NULL, lines TEXT NOT NULL, event_ids TEXT, region TEXT)",
    ],
    views: &[
        (
            "inventory_levels",
            "SELECT sku, on_hand, reserved, shipped, on_hand - reserved AS available, NULLIF(pool, '') AS region
             FROM {t:inventory_pools}",
        ),
        ("inventory_reservations", "SELECT order_id, status, lines, region FROM {t:inventory_orders}"),
    ],
    // Earlier releases summed stock from the orders themselves (`inventory_sku`, no
    // version): its rows are kept, at version 0, until the stock group's first decision
    // about each SKU replaces them. Then one pool (`inventory_stock`): its rows are the
    // pool of a single region.
    upgrades: &[
        Upgrade { old_table: "inventory_sku", copy: [INVENTORY_SKU_COPY, INVENTORY_SKU_COPY] },
        Upgrade { old_table: "inventory_stock", copy: [INVENTORY_STOCK_COPY, INVENTORY_STOCK_COPY] },
    ],
    added_columns: &[("inventory_orders", "event_ids TEXT"), ("inventory_orders", "region TEXT")],
};

const INVENTORY_SKU_COPY: &str = "INSERT INTO {t:inventory_pools} (pool, sku, on_hand, reserved, shipped, version)
     SELECT '', sku, on_hand, reserved, shipped, 0 FROM {t:inventory_sku} WHERE true ON CONFLICT DO NOTHING";

const INVENTORY_STOCK_COPY: &str = "INSERT INTO {t:inventory_pools} (pool, sku, on_hand, reserved, shipped, version)
     SELECT '', sku, on_hand, reserved, shipped, version FROM {t:inventory_stock} WHERE true ON CONFLICT DO NOTHING";

const PAYMENT: ProjectionSpec = ProjectionSpec {
    tables: &["payment_orders"],
    ddl: &[
        "CREATE TABLE IF NOT EXISTS {t:payment_orders} (
            order_id TEXT PRIMARY KEY, currency TEXT NOT NULL, order_total_minor BIGINT NOT NULL,
            authorized_minor BIGINT NOT NULL, captured_minor BIGINT NOT NULL, refunded_minor BIGINT NOT NULL,
            status TEXT NOT NULL, placed_at_us BIGINT NOT NULL, captured_at_us BIGINT, event_ids TEXT, region TEXT)",
        "CREATE INDEX IF NOT EXISTS {t:payment_orders}_by_capture ON {t:payment_orders} (captured_at_us)",
    ],
    views: &[(
        "order_payments",
        "SELECT order_id, currency, order_total_minor, authorized_minor, captured_minor, refunded_minor, status,
         {ts:placed_at_us} AS placed_at, {ts:captured_at_us} AS captured_at, placed_at_us, captured_at_us, region
         FROM {t:payment_orders}",
    )],
    upgrades: &[],
    added_columns: &[("payment_orders", "event_ids TEXT"), ("payment_orders", "region TEXT")],
};

const FULFILMENT: ProjectionSpec = ProjectionSpec {
    tables: &["fulfilment_orders"],
    ddl: &[
        "CREATE TABLE IF NOT EXISTS {t:fulfilment_orders} (
            order_id TEXT PRIMARY KEY, status TEXT NOT NULL, warehouse TEXT, placed_at_us BIGINT NOT NULL,
            paid_at_us BIGINT, shipped_at_us BIGINT, delivered_at_us BIGINT, event_ids TEXT, region TEXT)",
        "CREATE INDEX IF NOT EXISTS {t:fulfilment_orders}_by_status ON {t:fulfilment_orders} (status, placed_at_us)",
    ],
    views: &[(
        "order_fulfilment",
        "SELECT order_id, status, warehouse, {ts:placed_at_us} AS placed_at, {ts:paid_at_us} AS paid_at,
         {ts:shipped_at_us} AS shipped_at, {ts:delivered_at_us} AS delivered_at,
         placed_at_us, paid_at_us, shipped_at_us, delivered_at_us, region FROM {t:fulfilment_orders}",
    )],
    upgrades: &[],
    added_columns: &[("fulfilment_orders", "event_ids TEXT"), ("fulfilment_orders", "region TEXT")],
};

// One row per event, only ever added to; the view puts each order's events together as
// the JSON array analysts read.
const HISTORY: ProjectionSpec = ProjectionSpec {
    tables: &["history_entries"],
    ddl: &["CREATE TABLE IF NOT EXISTS {t:history_entries} (
            order_id TEXT NOT NULL, event_id TEXT NOT NULL, kind TEXT NOT NULL, occurred_at_us BIGINT NOT NULL,
            partition_id BIGINT NOT NULL, record_offset BIGINT NOT NULL, summary TEXT NOT NULL, published_by TEXT,
            region TEXT, PRIMARY KEY (order_id, event_id))"],
    views: &[
        (
            "order_history",
            "SELECT order_id, {json:event_id=event_id;kind=kind;occurred_at_us=occurred_at_us;partition=partition_id;\
         offset=record_offset;summary=summary;published_by=published_by|occurred_at_us, event_id} AS events,
         MAX(region) AS region FROM {t:history_entries} GROUP BY order_id",
        ),
        // One row per event, for reading an order's history a page at a time.
        (
            "order_history_events",
            "SELECT order_id, event_id, kind, occurred_at_us, partition_id, record_offset, summary, published_by,
             region FROM {t:history_entries}",
        ),
    ],
    // Earlier releases: each order's history as one JSON row, rewritten on every event
    // (`history_orders`); then one row per event without its publisher (`history_events`).
    upgrades: &[
        Upgrade {
            old_table: "history_orders",
            copy: [
                "INSERT INTO {t:history_entries}
                 (order_id, event_id, kind, occurred_at_us, partition_id, record_offset, summary)
                 SELECT h.order_id, e->>'event_id', e->>'kind', CAST(e->>'occurred_at_us' AS BIGINT),
                 CAST(e->>'partition' AS BIGINT), CAST(e->>'offset' AS BIGINT), e->>'summary'
                 FROM {t:history_orders} h, json_array_elements(CAST(h.events AS json)) e ON CONFLICT DO NOTHING",
                "INSERT INTO {t:history_entries}
                 (order_id, event_id, kind, occurred_at_us, partition_id, record_offset, summary)
                 SELECT h.order_id, json_extract(e.value, '$.event_id'), json_extract(e.value, '$.kind'),
                 json_extract(e.value, '$.occurred_at_us'), json_extract(e.value, '$.partition'),
                 json_extract(e.value, '$.offset'), json_extract(e.value, '$.summary')
                 FROM {t:history_orders} h, json_each(h.events) e WHERE true ON CONFLICT DO NOTHING",
            ],
        },
        Upgrade { old_table: "history_events", copy: [HISTORY_EVENTS_COPY, HISTORY_EVENTS_COPY] },
    ],
    added_columns: &[("history_entries", "region TEXT")],
};

const HISTORY_EVENTS_COPY: &str = "INSERT INTO {t:history_entries}
     (order_id, event_id, kind, occurred_at_us, partition_id, record_offset, summary)
     SELECT order_id, event_id, kind, occurred_at_us, partition_id, record_offset, summary
     FROM {t:history_events} WHERE true ON CONFLICT DO NOTHING";

/// Runs `$body` with `$p` bound to the model type of `$kind`: the only place a kind
/// becomes a type (used here and by the store's dispatch). Each variant is named like its
/// model type.
macro_rules! with_model {
    ($kind:expr, $p:ident => $body:expr) => {
        match $kind {
            $crate::registry::ProjectionKind::Inventory => {
                type $p = $crate::model::inventory::Inventory;
                $body
            }
            $crate::registry::ProjectionKind::Payment => {
                type $p = $crate::model::payment::Payment;
                $body
            }
            $crate::registry::ProjectionKind::Fulfilment => {
                type $p = $crate::model::fulfilment::Fulfilment;
                $body
            }
            $crate::registry::ProjectionKind::History => {
                type $p = $crate::model::history::History;
                $body
            }
        }
    };
}
pub(crate) use with_model;

impl ProjectionKind {
    /// Every projection, in the order tools list them.
    pub const ALL: [ProjectionKind; 4] =
        [ProjectionKind::Inventory, ProjectionKind::Payment, ProjectionKind::Fulfilment, ProjectionKind::History];

    /// The projections that describe an order's state (the history only records events).
    pub const ORDER_STATE: [ProjectionKind; 3] =
        [ProjectionKind::Inventory, ProjectionKind::Payment, ProjectionKind::Fulfilment];

    pub fn name(self) -> &'static str {
        with_model!(self, P => P::NAME)
    }

    pub fn spec(self) -> &'static ProjectionSpec {
        match self {
            ProjectionKind::Inventory => &INVENTORY,
            ProjectionKind::Payment => &PAYMENT,
            ProjectionKind::Fulfilment => &FULFILMENT,
            ProjectionKind::History => &HISTORY,
        }
    }

    /// The topics this projection reads: those where the kinds it reads are published.
    pub fn reads(self) -> &'static [TopicRole] {
        match self {
            ProjectionKind::Inventory => &[TopicRole::Decisions],
            ProjectionKind::Payment => &[TopicRole::Orders],
            ProjectionKind::Fulfilment | ProjectionKind::History => &[TopicRole::Orders, TopicRole::Decisions],
        }
    }

    /// Whether this projection reads events of `kind`.
    pub fn wants(self, kind: EventKind) -> bool {
        with_model!(self, P => P::wants(kind))
    }

    /// Every view name of every projection.
    pub fn all_views() -> impl Iterator<Item = &'static str> {
        Self::ALL.into_iter().flat_map(|k| k.spec().views.iter().map(|(name, _)| *name))
    }
}

impl FromStr for ProjectionKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ProjectionKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<&str> = ProjectionKind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown projection {s:?}; expected one of {}", names.join(", "))
        })
    }
}

impl serde::Serialize for ProjectionKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl utoipa::PartialSchema for ProjectionKind {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(ProjectionKind::ALL.iter().map(|k| k.name())))
            .into()
    }
}

impl utoipa::ToSchema for ProjectionKind {}

impl std::fmt::Display for ProjectionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The two groups that decide rather than describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProcessKind {
    /// Reads the orders topic; one state per order.
    OrderProcess,
    /// Reads the stock topic; one state per SKU.
    Stock,
}

impl ProcessKind {
    pub const ALL: [ProcessKind; 2] = [ProcessKind::OrderProcess, ProcessKind::Stock];

    /// The CLI name and the consumer group's suffix.
    pub fn name(self) -> &'static str {
        match self {
            ProcessKind::OrderProcess => "order-process",
            ProcessKind::Stock => "stock",
        }
    }

    /// Who its decisions are published as.
    pub fn principal(self) -> &'static str {
        match self {
            ProcessKind::OrderProcess => ORDER_PROCESS_PRINCIPAL,
            ProcessKind::Stock => STOCK_PRINCIPAL,
        }
    }

    /// The topics its members read: the order process the orders' facts and the stock
    /// group's decisions; the stock group the requests and the adjustments.
    pub fn reads(self) -> &'static [TopicRole] {
        match self {
            ProcessKind::OrderProcess => &[TopicRole::Orders, TopicRole::Decisions],
            ProcessKind::Stock => &[TopicRole::Stock, TopicRole::Adjustments],
        }
    }

    pub fn wants(self, kind: EventKind) -> bool {
        match self {
            ProcessKind::OrderProcess => order::wants(kind),
            ProcessKind::Stock => stock::wants(kind),
        }
    }

    /// Whether its members fire timers between batches (the order process's payment
    /// timeouts). The member asks this, never which process it runs.
    pub fn fires_timers(self) -> bool {
        matches!(self, ProcessKind::OrderProcess)
    }
}

impl FromStr for ProcessKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ProcessKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| format!("unknown process {s:?}"))
    }
}

impl std::fmt::Display for ProcessKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a consumer group does with its records: describe (a projection) or decide (a
/// process, whose decisions go to the outbox). The one "projection or process" type of
/// the CLI, the member and the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupKind {
    Projection(ProjectionKind),
    Process(ProcessKind),
}

impl GroupKind {
    /// Every group, projections first, in the order tools list them.
    pub fn all() -> impl Iterator<Item = GroupKind> {
        ProjectionKind::ALL.into_iter().map(GroupKind::Projection).chain(ProcessKind::ALL.map(GroupKind::Process))
    }

    pub fn name(self) -> &'static str {
        match self {
            GroupKind::Projection(kind) => kind.name(),
            GroupKind::Process(kind) => kind.name(),
        }
    }

    /// The topics the group reads, each for the kinds of event trusted there
    /// ([`TopicRole::trusts`]); the first is the one its timers belong to.
    pub fn reads(self) -> &'static [TopicRole] {
        match self {
            GroupKind::Projection(kind) => kind.reads(),
            GroupKind::Process(kind) => kind.reads(),
        }
    }

    /// The names of the topics the group reads, for a pipeline on `orders_topic`.
    pub fn topics(self, orders_topic: &str) -> Vec<String> {
        self.reads().iter().map(|role| role.name(orders_topic)).collect()
    }

    /// Whether the group's state is read, changed and written back by batches of more
    /// than one topic: such batches are serialized per partition number (an order's or a
    /// SKU's records share one across the pipeline's co-partitioned topics), or, for the
    /// batches of the order process and the fulfilment, per order
    /// (`store::batch::lock_orders_of_batch`). An append-only projection (the history)
    /// needs no such care.
    pub fn shares_state_across_topics(self) -> bool {
        self.reads().len() > 1 && self != GroupKind::Projection(ProjectionKind::History)
    }

    /// The topic of this group a batch read from `role`'s topic waits for: the stock
    /// group decides a SKU's requests only after the adjustments of that SKU the
    /// adjustments topic held when the batch was cut (restock, then sell; see the
    /// consumers' `causal` rule).
    pub fn waits_for(self, role: TopicRole) -> Option<TopicRole> {
        match (self, role) {
            (GroupKind::Process(ProcessKind::Stock), TopicRole::Stock) => Some(TopicRole::Adjustments),
            _ => None,
        }
    }

    /// Whether events of `kind` read from `role`'s topic are applied by this group: it
    /// reads them, and that topic is trusted for them. A wanted kind read from a topic not
    /// trusted for it is refused and recorded.
    pub fn wants(self, kind: EventKind) -> bool {
        match self {
            GroupKind::Projection(p) => p.wants(kind),
            GroupKind::Process(p) => p.wants(kind),
        }
    }

    /// Whether its members fire timers between batches.
    pub fn fires_timers(self) -> bool {
        matches!(self, GroupKind::Process(kind) if kind.fires_timers())
    }
}

impl From<ProjectionKind> for GroupKind {
    fn from(kind: ProjectionKind) -> Self {
        GroupKind::Projection(kind)
    }
}

impl From<ProcessKind> for GroupKind {
    fn from(kind: ProcessKind) -> Self {
        GroupKind::Process(kind)
    }
}

impl FromStr for GroupKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        GroupKind::all().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<&str> = GroupKind::all().map(GroupKind::name).collect();
            format!("unknown projection or process {s:?}; expected one of {}", names.join(", "))
        })
    }
}

impl std::fmt::Display for GroupKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The group-name prefix unless configured otherwise.
pub const DEFAULT_GROUP_PREFIX: &str = "orderflow";

/// The consumer group of a projection's first generation or of a process:
/// `<prefix>-<name>`. The one place a group is named.
pub fn group_name(prefix: &str, kind: impl Into<GroupKind>) -> String {
    format!("{prefix}-{}", kind.into().name())
}

/// [`group_name`] with the default prefix.
pub fn default_group(kind: impl Into<GroupKind>) -> String {
    group_name(DEFAULT_GROUP_PREFIX, kind)
}

/// The group that reads `source` region's mirrored log (`<source>.<topic>`, copied by
/// MirrorMaker 2) into the same tables as `group` reads its own region's: one group per
/// source log, so each has its offsets, its lag and its dead letters, and a region's views
/// show every region's orders. `@` joins them: no prefix or projection name contains it.
pub fn mirror_group(group: &str, source: &schemas::Region) -> String {
    format!("{group}@{source}")
}

/// The region whose mirrored log `group` reads, for a mirror group.
pub fn source_of(group: &str) -> Option<&str> {
    group.split_once('@').map(|(_, source)| source)
}

/// Whether `group` is one of the processes' groups (the order process, the stock group),
/// whatever its prefix.
pub fn is_process_group(group: &str) -> bool {
    ProcessKind::ALL.iter().any(|kind| group.ends_with(&format!("-{}", GroupKind::from(*kind).name())))
}

/// The group whose tables (generation) `group` writes: itself, or for a mirror group the
/// group of this region's own log it was named after.
pub fn generation_group(group: &str) -> &str {
    group.split_once('@').map_or(group, |(own, _)| own)
}

/// Whether `prefix` can start a consumer group name: letters, digits, `.`, `_`, `-`.
pub fn valid_group_prefix(prefix: &str) -> bool {
    !prefix.is_empty() && prefix.len() <= 200 && prefix.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_projection_parses_from_its_own_name_and_unknown_names_list_the_known_ones() {
        for kind in ProjectionKind::ALL {
            assert_eq!(kind.name().parse::<ProjectionKind>(), Ok(kind));
        }
        let err = "stock".parse::<ProjectionKind>().expect_err("unknown");
        assert!(err.contains("inventory, payment, fulfilment, history"), "{err}");
    }

    #[test]
    fn every_group_parses_from_its_name_and_is_named_with_the_prefix() {
        for kind in GroupKind::all() {
            assert_eq!(kind.name().parse::<GroupKind>(), Ok(kind));
            assert_eq!(group_name("shop", kind), format!("shop-{}", kind.name()));
        }
        assert_eq!(default_group(ProcessKind::OrderProcess), "orderflow-order-process");
        let err = "nothing".parse::<GroupKind>().expect_err("unknown");
        assert!(err.contains("history, order-process, stock"), "{err}");
        assert!(GroupKind::from(ProcessKind::OrderProcess).fires_timers());
        assert!(
            !GroupKind::from(ProcessKind::Stock).fires_timers()
                && !GroupKind::from(ProjectionKind::Payment).fires_timers()
        );
    }

    #[test]
    fn every_group_reads_each_kind_it_wants_from_the_topic_where_it_is_published() {
        for group in GroupKind::all() {
            for kind in EventKind::ALL.into_iter().filter(|k| group.wants(*k)) {
                let home = TopicRole::of(kind);
                // The order process forwards adjustments found on the orders topic (the
                // earlier contract); it does not read the adjustments topic.
                if kind == EventKind::StockAdjusted && group == GroupKind::Process(ProcessKind::OrderProcess) {
                    continue;
                }
                assert!(group.reads().contains(&home), "{group} wants {kind:?} but does not read {home:?}");
            }
            for role in group.reads() {
                assert!(
                    EventKind::ALL.into_iter().any(|k| group.wants(k) && TopicRole::of(k) == *role),
                    "{group} reads {role:?} for nothing"
                );
            }
        }
        assert_eq!(GroupKind::from(ProcessKind::Stock).topics("shop"), vec!["stock-requests-shop", "shop-adjustments"]);
        assert!(GroupKind::from(ProjectionKind::Fulfilment).shares_state_across_topics());
        assert!(!GroupKind::from(ProjectionKind::History).shares_state_across_topics());
        assert!(!GroupKind::from(ProjectionKind::Payment).shares_state_across_topics());
    }

    #[test]
    fn every_table_a_projection_owns_is_created_by_its_ddl_and_every_placeholder_names_one() {
        for kind in ProjectionKind::ALL {
            let spec = kind.spec();
            let text: String = spec.ddl.iter().chain(spec.views.iter().map(|(_, s)| s)).copied().collect();
            for table in spec.tables {
                assert!(spec.ddl.iter().any(|d| d.contains(&format!("CREATE TABLE IF NOT EXISTS {{t:{table}}}"))));
            }
            for placeholder in text.split("{t:").skip(1) {
                let name = placeholder.split('}').next().unwrap_or_default();
                assert!(spec.tables.contains(&name), "{kind}: {{t:{name}}} is not one of its tables");
            }
        }
    }
}
