//! decode → apply → merge → write: what a live batch and a dead-letter retry both do with
//! records once they know which ones to apply. The touched orders' rows are loaded once,
//! events are folded through the pure projection in memory, and each changed row and each
//! SKU's summed stock change is written once at the end.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use schemas::{Codec, Event, TopicRole};
use sqlx::any::AnyRow;
use uuid::Uuid;

use super::error::StoreError;
use super::records::LogRecord;
use super::rows::StoredState;
use super::schema::table_name;
use super::sql::{text_array, Binder, Columns, Exec, Sql};
use crate::model::{LogPosition, Projection, Rejection, SkuLevel};

/// Rows per multi-row statement; keeps every statement under both databases' bind limits.
pub(super) const CHUNK: usize = 500;

/// A projection whose state can be stored.
pub trait StoredProjection: Projection<State: StoredState> {}
impl<P: Projection<State: StoredState>> StoredProjection for P {}

/// What a record's payload is to projection `P`.
pub(super) enum Decoded {
    /// An event of a kind `P` does not read.
    Ignored,
    Event(Event),
    /// Bytes no schema reads; the reason goes into `dead_letters`.
    Undecodable(String),
    /// A kind the reader reads, found on a topic not trusted for it (a decision on a
    /// callers' topic): recorded with the reason, already resolved, holding nothing back.
    Refused(String),
}

/// Decodes only the records `P` reads: the kind is peeked from the header first, so an
/// ignored record costs no full decode. An event must be keyed as the contract says (its
/// order id; `sku:<sku>` for stock): the key decides the partition, so a wrong key would
/// let one order's events overtake each other.
pub(super) fn decode<P: Projection>(
    codec: &Codec,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    role: TopicRole,
) -> Decoded {
    decode_with(codec, key, payload, P::wants, role)
}

/// [`decode`] for a reader that reads the kinds `wants` accepts, of records read from
/// `role`'s topic.
pub(super) fn decode_with(
    codec: &Codec,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    wants: impl Fn(schemas::EventKind) -> bool,
    role: TopicRole,
) -> Decoded {
    let Some(payload) = payload else { return Decoded::Undecodable("record has no payload".into()) };
    match codec.peek_kind(payload) {
        Ok(kind) if !wants(kind) => Decoded::Ignored,
        // Refused before it is decoded: nothing of an untrusted record is looked at.
        Ok(kind) if !role.trusts(kind) => Decoded::Refused(format!(
            "refused: a {} is trusted only from the {:?} topic, whose ACL names its author; this record came \
             from the {role:?} topic",
            kind.record_name(),
            TopicRole::of(kind)
        )),
        Ok(_) => match codec.decode(payload) {
            Ok(event) if key == Some(event.key().as_bytes()) => Decoded::Event(event),
            Ok(event) => Decoded::Undecodable(format!(
                "key {:?} is not the event's key {:?}: an order's events must all be keyed by its order id",
                key.map(String::from_utf8_lossy).unwrap_or_default(),
                event.key()
            )),
            Err(e) => Decoded::Undecodable(format!("undecodable: {e}")),
        },
        Err(e) => Decoded::Undecodable(format!("undecodable: {e}")),
    }
}

/// The column of an order row that keeps the ids of the events applied to it, newest
/// last, as 32-digit hex separated by spaces; NULL on a row written by an earlier release,
/// whose ids are in `processed_events` (see [`RowIds::Elsewhere`]).
pub(super) const EVENT_IDS: &str = "event_ids";

/// How many event ids an order row remembers: far more than an order's lifecycle has
/// events, so a retried publish is always recognised; an order with more events forgets
/// its oldest ids, as `processed_events` forgets ids past the dedupe window.
pub(super) const IDS_PER_ROW: usize = 64;

/// The event ids applied to one order's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RowIds {
    /// Kept on the row, newest last.
    Kept(Vec<Uuid>),
    /// The row is from before rows kept ids: its events' ids are (and stay) in
    /// `processed_events`.
    Elsewhere,
}

impl RowIds {
    fn parse(text: Option<&str>) -> Result<Self, String> {
        let Some(text) = text else { return Ok(RowIds::Elsewhere) };
        text.split_whitespace()
            .map(|id| Uuid::try_parse(id).map_err(|e| format!("event id {id:?}: {e}")))
            .collect::<Result<_, _>>()
            .map(RowIds::Kept)
    }

    fn text(&self) -> Option<String> {
        let RowIds::Kept(ids) = self else { return None };
        let mut out = String::with_capacity(ids.len() * 33);
        for id in ids {
            if !out.is_empty() {
                out.push(' ');
            }
            let _ = write!(out, "{}", id.simple());
        }
        Some(out)
    }
}

/// What folding one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Folded {
    Applied,
    /// Its id is on its order's row: a copy of an event applied before.
    Duplicate,
}

/// An append-only projection's rows, one per record that adds one, built from the record
/// alone before its batch's transaction (they depend on no stored state), in binary
/// `COPY` form. The batch decides in its transaction which records it applies; each
/// applied one's prebuilt row is then taken as it is.
///
/// The rows sit one after the other in one buffer, already framed as a `COPY` stream
/// (header first), so a batch that applies every one of them (the usual case) sends the
/// buffer as it is; otherwise the taken rows are copied out by their ranges.
#[derive(Default)]
pub(super) struct AppendedRows {
    /// The `COPY` header, then each row's tuple; empty when no row was built.
    bytes: Vec<u8>,
    /// Per (partition, offset), the range of its row in `bytes`, and whether it was taken.
    rows: HashMap<(i32, i64), (std::ops::Range<usize>, bool)>,
    /// Rows taken so far, and whether they were taken in the order they were built (so
    /// that, all taken, `bytes` is the stream as is).
    taken: usize,
    in_order: bool,
    /// The end of the last row taken.
    last_end: usize,
}

impl AppendedRows {
    /// Appends `other`'s rows after this one's (the slices of a batch decoded apart).
    pub fn extend(&mut self, other: AppendedRows) {
        if other.rows.is_empty() {
            return;
        }
        if self.bytes.is_empty() {
            *self = other;
            return;
        }
        let header = Columns::copy_header_len();
        let shift = self.bytes.len() - header;
        self.bytes.extend_from_slice(&other.bytes[header..]);
        self.rows.extend(
            other.rows.into_iter().map(|(at, (range, taken))| (at, (range.start + shift..range.end + shift, taken))),
        );
    }

    pub fn build<P: StoredProjection>(records: &[LogRecord], decoded: &[Decoded]) -> Self {
        let mut rows = HashMap::with_capacity(records.len());
        let mut bytes = Vec::with_capacity(records.len() * 160);
        Columns::copy_header(&mut bytes);
        // One set of columns for every row of the batch, emptied after each.
        let mut columns = Columns::new();
        for (r, d) in records.iter().zip(decoded) {
            let Decoded::Event(event) = d else { continue };
            let at = LogPosition { partition: r.partition, offset: r.offset };
            let Ok(Some(state)) = P::apply_at(None, event, at, r.published_by.as_deref()).map(|e| e.order) else {
                continue;
            };
            if state.row_count() != 1 {
                continue;
            }
            bind_row::<P::State, _>(&(&state, None), 0, columns.row());
            let start = bytes.len();
            columns.copy_tuples(&mut bytes);
            columns.clear();
            rows.insert((r.partition, r.offset), (start..bytes.len(), false));
        }
        if rows.is_empty() {
            bytes.clear();
        }
        let header = bytes.len().min(Columns::copy_header_len());
        AppendedRows { bytes, rows, taken: 0, in_order: true, last_end: header }
    }

    /// Takes the prebuilt row of the record at (`partition`, `offset`), if there is one.
    fn take(&mut self, partition: i32, offset: i64) -> bool {
        let Some((range, taken)) = self.rows.get_mut(&(partition, offset)) else { return false };
        if *taken {
            return false;
        }
        *taken = true;
        self.in_order &= range.start == self.last_end;
        self.last_end = range.end;
        self.taken += 1;
        true
    }

    /// The taken rows as one framed `COPY` stream, and how many they are.
    fn into_stream(self) -> (Vec<u8>, usize) {
        let AppendedRows { mut bytes, rows, taken, in_order, .. } = self;
        if taken == 0 {
            return (Vec::new(), 0);
        }
        if in_order && taken == rows.len() {
            bytes.extend_from_slice(&(-1i16).to_be_bytes());
            return (bytes, taken);
        }
        let mut ranges: Vec<std::ops::Range<usize>> =
            rows.into_values().filter(|(_, taken)| *taken).map(|(range, _)| range).collect();
        ranges.sort_by_key(|r| r.start);
        let mut tuples = Vec::with_capacity(ranges.iter().map(|r| r.len()).sum());
        for range in ranges {
            tuples.extend_from_slice(&bytes[range]);
        }
        (Columns::copy_framed(&tuples), taken)
    }
}

/// The state of the orders a set of records touches, as it is folded.
pub(super) struct Fold<P: StoredProjection> {
    generation: i64,
    /// Prebuilt rows to take ([`AppendedRows`]).
    appended: Option<AppendedRows>,
    states: HashMap<Uuid, P::State>,
    /// Per order with a row (loaded or new), the event ids it keeps
    /// ([`StoredState::KEEPS_EVENT_IDS`] only).
    ids: HashMap<Uuid, RowIds>,
    dirty: BTreeSet<Uuid>,
    sku: BTreeMap<String, SkuLevel>,
}

impl<P: StoredProjection> Fold<P> {
    /// Loads the stored rows of `orders` from the tables of `generation`.
    pub async fn load<C: Exec>(conn: &mut C, generation: i64, orders: &[Uuid]) -> Result<Self, StoreError> {
        let table = table_name(<P::State as StoredState>::TABLE, generation);
        use sqlx::Row;
        let mut states = HashMap::with_capacity(orders.len());
        let mut ids = HashMap::new();
        if <P::State as StoredState>::APPEND_ONLY {
            // Earlier entries are never needed: the batch appends its own.
            return Ok(Fold { generation, appended: None, states, ids, dirty: BTreeSet::new(), sku: BTreeMap::new() });
        }
        let mut columns: Vec<String> = <P::State>::COLUMNS.iter().map(|c| format!("t.{c}")).collect();
        if <P::State as StoredState>::KEEPS_EVENT_IDS {
            columns.push(format!("t.{EVENT_IDS}"));
        }
        let columns = columns.join(", ");
        // PostgreSQL: one statement of fixed text whatever the number of orders, one index
        // probe per order. A plain join of the keys to the table was planned once per
        // connection while the table was small (a fresh generation, a new deployment) as a
        // hash join over a sequential scan, and the cached plan kept scanning the whole
        // table on every batch as it grew: 1.4 ms a batch at 10,000 rows, against 0.1–0.2 ms
        // for the probes. The `LIMIT 1` (the key is unique) keeps the lookup a probe per key
        // whatever the planner thinks of the table's size.
        let postgres = conn.is_postgres();
        let chunk_size = if postgres { orders.len().max(1) } else { CHUNK };
        for chunk in orders.chunks(chunk_size) {
            let mut q = Sql::new(format!("SELECT {columns} FROM "));
            if postgres {
                q.push("unnest(").bind(text_array(chunk.iter().map(Uuid::to_string))).push("::text[]) AS k(order_id)");
                q.push(&format!(
                    " CROSS JOIN LATERAL (SELECT * FROM {table} t WHERE t.order_id = k.order_id LIMIT 1) t"
                ));
            } else {
                q.push(&format!("{table} t WHERE t.order_id IN ")).list(chunk.iter().map(Uuid::to_string));
            }
            let rows: Vec<AnyRow> = q.rows(conn).await?;
            for row in &rows {
                let state = <P::State as StoredState>::from_row(row)?;
                if <P::State as StoredState>::KEEPS_EVENT_IDS {
                    let text: Option<String> = row.try_get(EVENT_IDS)?;
                    let kept = RowIds::parse(text.as_deref())
                        .map_err(|reason| StoreError::CorruptRow { table: <P::State as StoredState>::TABLE, reason })?;
                    ids.insert(state.order_id(), kept);
                }
                states.insert(state.order_id(), state);
            }
        }
        Ok(Fold { generation, appended: None, states, ids, dirty: BTreeSet::new(), sku: BTreeMap::new() })
    }

    /// Takes an append-only projection's prebuilt rows (written by `COPY`, so only on a
    /// connection that has it).
    pub fn with_appended(mut self, rows: Option<AppendedRows>) -> Self {
        self.appended = rows.filter(|_| <P::State as StoredState>::APPEND_ONLY);
        self
    }

    /// Whether `event`'s id must be looked up in `processed_events`: it has no order row
    /// to keep it (no order, an append-only projection) or its row is an earlier
    /// release's.
    pub fn needs_claim(&self, event: &Event) -> bool {
        if !<P::State as StoredState>::KEEPS_EVENT_IDS {
            return true;
        }
        match event.order_id() {
            None => true,
            Some(order) => self.ids.get(&order) == Some(&RowIds::Elsewhere),
        }
    }

    /// Applies one event at its log position; on success its effect is merged into the
    /// folded state and its id kept on its order's row, on rejection nothing changes. An
    /// event whose id its order's row keeps is not applied again.
    pub fn apply(&mut self, event: &Event, at: LogPosition, published_by: Option<&str>) -> Result<Folded, Rejection> {
        let order = event.order_id();
        let event_id = event.envelope().event_id;
        let keeps = <P::State as StoredState>::KEEPS_EVENT_IDS;
        if keeps
            && order
                .and_then(|o| self.ids.get(&o))
                .is_some_and(|k| matches!(k, RowIds::Kept(ids) if ids.contains(&event_id)))
        {
            return Ok(Folded::Duplicate);
        }
        if let Some(rows) = &mut self.appended {
            // An append-only state's earlier entries change nothing of its next one: the
            // row built from the record alone is the row.
            if rows.take(at.partition, at.offset) {
                return Ok(Folded::Applied);
            }
        }
        let current = order.and_then(|id| self.states.get(&id));
        let effect = P::apply_at(current, event, at, published_by)?;
        if let Some(state) = effect.order {
            let id = state.order_id();
            self.states.insert(id, state);
            self.dirty.insert(id);
        }
        // The id goes on the order's row whether or not the event changed it; an event
        // that leaves no row behind changed only versioned stock levels, which a copy
        // cannot move again.
        if let Some(order) = order.filter(|o| keeps && self.states.contains_key(o)) {
            if let RowIds::Kept(ids) = self.ids.entry(order).or_insert_with(|| RowIds::Kept(Vec::new())) {
                if ids.len() == IDS_PER_ROW {
                    ids.remove(0);
                }
                ids.push(event_id);
                self.dirty.insert(order);
            }
        }
        for (sku, level) in effect.sku_levels {
            let newest = self.sku.entry(sku).or_default();
            if level.version > newest.version {
                *newest = level;
            }
        }
        Ok(Folded::Applied)
    }

    /// Writes each changed row once (in order-id order) and the newest SKU levels, in
    /// `pool` (the region whose stock group decided them). Returns how many of an
    /// append-only state's entries the table already held (copies of events recorded
    /// before: the table's key is their duplicate guard); 0 for any other state.
    pub async fn write<C: Exec>(self, conn: &mut C, pool: &str) -> Result<u64, StoreError> {
        let changed: Vec<(&P::State, Option<String>)> = self
            .dirty
            .iter()
            .filter_map(|id| Some((self.states.get(id)?, self.ids.get(id).and_then(RowIds::text))))
            .collect();
        let mut rows: usize = changed.iter().map(|s| s.0.row_count()).sum();
        let table = table_name(<P::State as StoredState>::TABLE, self.generation);
        let mut written = write_states(conn, &table, &changed).await?;
        if let Some((stream, count)) = self.appended.map(AppendedRows::into_stream).filter(|(_, count)| *count > 0) {
            let pg = conn.bulk().ok_or_else(|| StoreError::Invalid("prebuilt rows need COPY".into()))?;
            rows += count;
            written += append_copy(pg, &table, &written_columns::<P::State>(), stream).await?;
        }
        write_sku_levels(conn, &table_name("inventory_pools", self.generation), pool, &self.sku).await?;
        Ok(if <P::State as StoredState>::APPEND_ONLY { (rows as u64).saturating_sub(written) } else { 0 })
    }
}

/// A row to write and, for a state that keeps them, its event ids.
type Changed<'s, S> = (&'s S, Option<String>);

/// The columns a state's rows are written with: its own, then `event_ids` if it keeps them.
fn written_columns<S: StoredState>() -> Vec<&'static str> {
    let mut columns = S::COLUMNS.to_vec();
    if S::KEEPS_EVENT_IDS {
        columns.push(EVENT_IDS);
    }
    columns
}

/// Binds row `index` of `state`, then its event ids if the state keeps them.
fn bind_row<S: StoredState, B: Binder>(row: &Changed<'_, S>, index: usize, values: &mut B) {
    row.0.push_binds(index, values);
    if S::KEEPS_EVENT_IDS {
        values.cell(row.1.clone());
    }
}

fn conflict_clause<S: StoredState>(columns: &[&str]) -> String {
    if S::APPEND_ONLY {
        // Each entry once: a copy (same order and event id) is left as it is.
        return " ON CONFLICT DO NOTHING".into();
    }
    let updates: Vec<String> = columns[1..].iter().map(|c| format!("{c} = excluded.{c}")).collect();
    format!(" ON CONFLICT (order_id) DO UPDATE SET {}", updates.join(", "))
}

/// Writes `states`; returns the rows inserted or updated.
async fn write_states<S: StoredState, C: Exec>(
    conn: &mut C,
    table: &str,
    states: &[Changed<'_, S>],
) -> Result<u64, StoreError> {
    let rows: usize = states.iter().map(|s| s.0.row_count()).sum();
    if rows >= COPY_MIN_ROWS {
        if let Some(pg) = conn.bulk() {
            return write_states_copy(pg, table, states).await;
        }
    }
    if conn.is_postgres() {
        return write_states_unnest(conn, table, states).await;
    }
    let columns = written_columns::<S>();
    let rows: Vec<(&Changed<'_, S>, usize)> =
        states.iter().flat_map(|s| (0..s.0.row_count()).map(move |i| (s, i))).collect();
    let mut written = 0;
    for chunk in rows.chunks(CHUNK) {
        let mut q = Sql::new(format!("INSERT INTO {table} ({}) ", columns.join(", ")));
        q.values(chunk, |v, (s, i)| bind_row(s, *i, v));
        q.push(&conflict_clause::<S>(&columns));
        written += q.execute(&mut *conn).await?;
    }
    Ok(written)
}

/// PostgreSQL: every row of the batch in one statement, its columns as arrays
/// (`INSERT … SELECT * FROM unnest(…)`), the same text for any number of rows.
async fn write_states_unnest<S: StoredState, C: Exec>(
    conn: &mut C,
    table: &str,
    states: &[Changed<'_, S>],
) -> Result<u64, StoreError> {
    let arrays = columns_of(states);
    if arrays.rows() == 0 {
        return Ok(0);
    }
    let columns = written_columns::<S>();
    let mut q = Sql::new(format!("INSERT INTO {table} ({}) SELECT * FROM ", columns.join(", ")));
    arrays.unnest_into(&mut q);
    q.push(&conflict_clause::<S>(&columns));
    Ok(q.execute(&mut *conn).await?)
}

/// From this many rows a batch's rows go by `COPY` (where the connection has it): below it
/// one statement (`unnest` of binary arrays) costs fewer round trips than three (staging
/// table, `COPY`, merge), which is what a caught-up member's small batches wait for.
pub(super) const COPY_MIN_ROWS: usize = 500;

/// Every row of `states`, by column.
fn columns_of<S: StoredState>(states: &[Changed<'_, S>]) -> Columns {
    let mut columns = Columns::new();
    for state in states {
        for i in 0..state.0.row_count() {
            bind_row(state, i, columns.row());
        }
    }
    columns
}

/// PostgreSQL's bulk path: the rows by binary `COPY` into a temporary staging table (of
/// this session, emptied at each commit), then merged into the table with one statement.
/// No text is parsed on the way; the merge enforces the table's constraints, so a row the
/// table refuses fails the batch as the `unnest` statement would.
///
/// An append-only state's rows are new but for a copy of an event recorded before (a
/// retried publish; a replay is stopped earlier, by the offsets): they go straight into
/// the table, once, under a savepoint. Only when the table's key refuses one (SQLSTATE
/// 23505) is the savepoint rolled back and the batch merged through the staging table,
/// which leaves the copies out.
async fn write_states_copy<S: StoredState>(
    conn: &mut sqlx::PgConnection,
    table: &str,
    states: &[Changed<'_, S>],
) -> Result<u64, StoreError> {
    let rows = columns_of(states);
    if rows.rows() == 0 {
        return Ok(0);
    }
    let columns = written_columns::<S>();
    let names = columns.join(", ");
    let data = rows.copy_binary();
    if S::APPEND_ONLY {
        return append_copy(conn, table, &columns, data).await;
    }
    let staging = format!("staging_{table}");
    // The staging table's columns are the ones written, named here rather than copied from
    // the table (`LIKE`), so a column added to the table later cannot make a session's
    // staging table stale.
    Sql::new(format!(
        "CREATE TEMPORARY TABLE IF NOT EXISTS {staging} ({}) ON COMMIT DELETE ROWS",
        rows.column_definitions(&columns)
    ))
    .execute(&mut *conn)
    .await?;
    copy_in(conn, &format!("COPY {staging} ({names}) FROM STDIN (FORMAT binary)"), &data).await?;
    let mut merge = Sql::new(format!("INSERT INTO {table} ({names}) SELECT {names} FROM {staging}"));
    merge.push(&conflict_clause::<S>(&columns));
    Ok(merge.execute(conn).await?)
}

/// An append-only table's new rows (`data`, binary `COPY` with header and trailer): straight
/// into the table under a savepoint, or, when its key refuses one (SQLSTATE 23505: a copy of
/// an event recorded before), merged through a staging table of this transaction that
/// leaves the copies out. Returns the rows stored.
async fn append_copy(
    conn: &mut sqlx::PgConnection,
    table: &str,
    columns: &[&str],
    data: Vec<u8>,
) -> Result<u64, StoreError> {
    let names = columns.join(", ");
    Sql::new("SAVEPOINT append_rows").execute(&mut *conn).await?;
    match copy_in(conn, &format!("COPY {table} ({names}) FROM STDIN (FORMAT binary)"), &data).await {
        Ok(written) => return Ok(written),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
            Sql::new("ROLLBACK TO SAVEPOINT append_rows").execute(&mut *conn).await?;
        }
        Err(e) => return Err(e.into()),
    }
    let staging = format!("appended_{table}");
    // Dropped at commit: made from the table as it is now, never stale.
    Sql::new(format!("CREATE TEMPORARY TABLE {staging} (LIKE {table}) ON COMMIT DROP")).execute(&mut *conn).await?;
    copy_in(conn, &format!("COPY {staging} ({names}) FROM STDIN (FORMAT binary)"), &data).await?;
    let merge = Sql::new(format!("INSERT INTO {table} ({names}) SELECT {names} FROM {staging} ON CONFLICT DO NOTHING"));
    Ok(merge.execute(conn).await?)
}

/// One `COPY … FROM STDIN` of `data`; the rows it stored.
async fn copy_in(conn: &mut sqlx::PgConnection, statement: &str, data: &[u8]) -> Result<u64, sqlx::Error> {
    let mut copy = conn.copy_in_raw(statement).await?;
    copy.send(data).await?;
    copy.finish().await
}

/// A SKU's row takes a level only when it is newer than the one stored, so members
/// projecting different partitions may write the same SKU in any order and the row still
/// ends at the newest. Rows are written in SKU order, so concurrent batches lock them in
/// the same order and cannot deadlock.
async fn write_sku_levels<C: Exec>(
    conn: &mut C,
    table: &str,
    pool: &str,
    sku: &BTreeMap<String, SkuLevel>,
) -> Result<(), StoreError> {
    let rows: Vec<(&String, &SkuLevel)> = sku.iter().collect();
    for chunk in rows.chunks(CHUNK) {
        let mut q = Sql::new(format!("INSERT INTO {table} (pool, sku, on_hand, reserved, shipped, version) "));
        q.values(chunk, |v, (s, l)| {
            v.bind(pool.to_string())
                .bind((*s).clone())
                .bind(l.on_hand)
                .bind(l.reserved)
                .bind(l.shipped)
                .bind(l.version);
        });
        q.push(&format!(
            " ON CONFLICT (pool, sku) DO UPDATE SET on_hand = excluded.on_hand, reserved = excluded.reserved,
              shipped = excluded.shipped, version = excluded.version WHERE excluded.version > {table}.version"
        ));
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Claims event ids for `group` in `processed_events`; returns the ids not claimed before
/// (a retried publish that landed twice is applied once).
pub(super) async fn claim_event_ids<C: Exec>(
    conn: &mut C,
    group: &str,
    ids: &[String],
) -> Result<std::collections::HashSet<String>, StoreError> {
    use sqlx::Row;
    let mut new_ids = std::collections::HashSet::with_capacity(ids.len());
    if conn.is_postgres() && !ids.is_empty() {
        let now_ms = schemas::clock::now_ms();
        let mut q = Sql::new("INSERT INTO processed_events (group_id, event_id, applied_at_ms) SELECT ");
        q.bind(group.to_string()).push(", id, ").bind(now_ms).push(" FROM unnest(");
        q.bind(text_array(ids.iter().cloned())).push("::text[]) AS id");
        q.push(" ON CONFLICT (group_id, event_id) DO NOTHING RETURNING event_id");
        for row in q.rows(conn).await? {
            new_ids.insert(row.try_get::<String, _>("event_id")?);
        }
        return Ok(new_ids);
    }
    for chunk in ids.chunks(CHUNK) {
        let now_ms = schemas::clock::now_ms();
        let mut q = Sql::new("INSERT INTO processed_events (group_id, event_id, applied_at_ms) ");
        q.values(chunk, |v, id| {
            v.bind(group.to_string()).bind(id.clone()).bind(now_ms);
        });
        q.push(" ON CONFLICT (group_id, event_id) DO NOTHING RETURNING event_id");
        for row in q.rows(&mut *conn).await? {
            new_ids.insert(row.try_get::<String, _>("event_id")?);
        }
    }
    Ok(new_ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::history::History;
    use schemas::samples::{lifecycle, LIFECYCLE};

    fn records_and_events() -> (Vec<LogRecord>, Vec<Decoded>) {
        let events = lifecycle(Uuid::new_v4());
        let records = (0..events.len() as i64)
            .map(|offset| LogRecord {
                partition: 0,
                offset,
                key: None,
                payload: None,
                timestamp_ms: None,
                published_by: None,
                epoch: 1,
                trace_parent: None,
            })
            .collect();
        (records, events.into_iter().map(Decoded::Event).collect())
    }

    #[test]
    fn every_row_taken_in_order_is_the_prebuilt_stream_and_a_subset_is_framed_from_its_rows() {
        let (records, decoded) = records_and_events();
        assert_eq!(records.len(), LIFECYCLE.len());
        let mut all = AppendedRows::build::<History>(&records, &decoded);
        for r in &records {
            assert!(all.take(r.partition, r.offset), "offset {} has a row", r.offset);
        }
        assert!(!all.take(0, 0), "a row is taken once");
        let (whole, count) = all.into_stream();
        assert_eq!(count, records.len());
        assert!(whole.starts_with(b"PGCOPY\n\xff\r\n\0") && whole.ends_with(&(-1i16).to_be_bytes()));

        // Every other row, taken out of order: the same rows' bytes, in the built order.
        let mut some = AppendedRows::build::<History>(&records, &decoded);
        let ranges: BTreeMap<i64, std::ops::Range<usize>> =
            some.rows.iter().map(|((_, offset), (range, _))| (*offset, range.clone())).collect();
        for offset in [2, 0] {
            assert!(some.take(0, offset));
        }
        let (partial, count) = some.into_stream();
        assert_eq!(count, 2);
        let mut expected = Vec::new();
        for offset in [0, 2] {
            expected.extend_from_slice(&whole[ranges[&offset].clone()]);
        }
        assert_eq!(partial, Columns::copy_framed(&expected));

        // Built in two slices and joined: the same stream as built whole.
        let mut first = AppendedRows::build::<History>(&records[..3], &decoded[..3]);
        first.extend(AppendedRows::build::<History>(&records[3..], &decoded[3..]));
        for r in &records {
            assert!(first.take(r.partition, r.offset));
        }
        assert_eq!(first.into_stream(), (whole, records.len()));
    }
}
