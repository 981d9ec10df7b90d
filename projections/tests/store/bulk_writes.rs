//! On PostgreSQL a batch's rows go by binary `COPY` into a staging table and one merge when
//! it has many, by one `unnest` statement when it has few. Both must leave the same rows,
//! event ids included, and a copy of an event must be recognised on a row either wrote.
use crate::dedupe::record;
use crate::support;

use std::collections::BTreeMap;

use projections::store::{Batch, BatchOutcome, LogRecord, Store};
use projections::{ProcessKind, ProjectionKind};
use schemas::samples::{lifecycle, readdressed, sample};
use schemas::{Codec, Event, EventKind, TopicRole};
use uuid::Uuid;

/// Applies `records` to every projection, `per_batch` records at a time, each record from
/// the topic its kind is published to (the offsets of each topic are then not contiguous,
/// which a log may be: each batch says where its topic's reading started).
async fn apply_all(store: &Store, codec: &Codec, records: &[LogRecord], per_batch: usize) -> Vec<BatchOutcome> {
    let role_of = |r: &LogRecord| TopicRole::of(codec.peek_kind(r.payload.as_deref().expect("payload")).expect("kind"));
    let mut outcomes = Vec::new();
    for kind in ProjectionKind::ALL {
        let group = format!("bulk-{}", kind.name());
        let mut total = BatchOutcome::default();
        let mut next: BTreeMap<TopicRole, i64> = BTreeMap::new();
        for chunk in records.chunks(per_batch) {
            for role in kind.reads() {
                let part: Vec<LogRecord> = chunk.iter().filter(|r| role_of(r) == *role).cloned().collect();
                if part.is_empty() {
                    continue;
                }
                // A topic's first batch is trusted to start where it starts.
                let read_from: BTreeMap<i32, i64> =
                    next.get(role).map(|n| BTreeMap::from([(0, *n)])).unwrap_or_default();
                let topic = role.name("t");
                let batch = Batch { group: &group, topic: &topic, role: *role, records: &part, read_from: &read_from };
                let outcome = store.batches().apply(kind, &batch, codec).await.expect("batch");
                next.insert(*role, part.last().map_or(0, |r| r.offset + 1));
                total.applied += outcome.applied;
                total.duplicates += outcome.duplicates;
                total.dead_lettered += outcome.dead_lettered;
            }
        }
        outcomes.push(total);
    }
    outcomes
}

/// Every row of each projection's live table, as text, in a stable order.
async fn tables(store: &Store) -> BTreeMap<String, String> {
    use sqlx::Row;
    let mut out = BTreeMap::new();
    for (kind, base) in [
        (ProjectionKind::Inventory, "inventory_orders"),
        (ProjectionKind::Payment, "payment_orders"),
        (ProjectionKind::Fulfilment, "fulfilment_orders"),
        (ProjectionKind::History, "history_entries"),
    ] {
        let table = store.reads().live_projection(kind).await.expect("live").table(base);
        let sql = format!("SELECT COUNT(*) AS rows, COALESCE(string_agg(t::text, E'\\n' ORDER BY t::text), '') AS body FROM {table} t");
        let row = sqlx::query(&sql).fetch_one(store.pool()).await.expect(&sql);
        let (rows, body): (i64, String) = (row.try_get("rows").expect("rows"), row.try_get("body").expect("body"));
        out.insert(format!("{base} ({rows} rows)"), body);
    }
    out
}

#[tokio::test]
async fn rows_written_by_copy_equal_rows_written_by_one_statement_and_copies_are_recognised_on_them_postgres() {
    let codec = Codec::builtin();
    // 600 orders: each batch of the large side holds far more rows than the COPY threshold.
    let events: Vec<Event> = (0..600).flat_map(|_| lifecycle(Uuid::new_v4())).collect();
    // Lifecycles interleaved across orders, as traffic is: the first events of every order,
    // then the next ones.
    let mut ordered: Vec<&Event> = Vec::with_capacity(events.len());
    for step in 0..6 {
        ordered.extend(events.iter().skip(step).step_by(6));
    }
    let records: Vec<LogRecord> = ordered.iter().zip(0..).map(|(e, offset)| record(&codec, e, offset)).collect();

    let (Some(bulk), Some(small)) = (support::postgres_database().await, support::postgres_database().await) else {
        return;
    };
    let bulk = Store::connect(&bulk).await.expect("store");
    let small = Store::connect(&small).await.expect("store");
    let bulk_outcomes = apply_all(&bulk, &codec, &records, records.len()).await;
    let small_outcomes = apply_all(&small, &codec, &records, 40).await;
    assert_eq!(bulk_outcomes, small_outcomes);
    assert!(bulk_outcomes.iter().all(|o| o.dead_lettered == 0 && o.duplicates == 0), "{bulk_outcomes:?}");
    assert_eq!(bulk_outcomes[1].applied, 1_800, "payment reads placed, authorized, captured");

    let (bulk_rows, small_rows) = (tables(&bulk).await, tables(&small).await);
    assert!(bulk_rows.contains_key("payment_orders (600 rows)"), "{:?}", bulk_rows.keys());
    assert!(bulk_rows.contains_key("history_entries (3600 rows)"), "{:?}", bulk_rows.keys());
    assert_eq!(bulk_rows, small_rows, "the same rows, ids on them included");

    // Every event published again, in one large batch: recognised on the rows COPY wrote.
    let again: Vec<LogRecord> =
        records.iter().map(|r| LogRecord { offset: r.offset + records.len() as i64, ..r.clone() }).collect();
    let copies = apply_all(&bulk, &codec, &again, again.len()).await;
    assert!(copies.iter().all(|o| o.applied == 0), "{copies:?}");
    assert_eq!(copies[1].duplicates, 1_800);
    assert_eq!(copies[3].duplicates, 3_600, "the history's key refuses every copy");
    assert_eq!(tables(&bulk).await, bulk_rows, "nothing changed");

    // One copy among 600 new history entries: the straight COPY is refused by the key, the
    // batch is merged instead, and only the copy is left out.
    let fresh: Vec<Event> = (0..100).flat_map(|_| lifecycle(Uuid::new_v4())).collect();
    let orders = |r: &&LogRecord| {
        codec.peek_kind(r.payload.as_deref().expect("payload")).map(TopicRole::of).ok() == Some(TopicRole::Orders)
    };
    // Where the history's reading of the orders topic stands after the copies.
    let from = again.iter().rfind(|r| orders(r)).expect("an orders record").offset + 1;
    let mut mixed: Vec<LogRecord> = fresh.iter().zip(from..).map(|(e, offset)| record(&codec, e, offset)).collect();
    mixed.push(LogRecord { offset: from + mixed.len() as i64, ..records[0].clone() });
    let read_from = BTreeMap::from([(0, from)]);
    let topic = TopicRole::Orders.name("t");
    let batch =
        Batch { group: "bulk-history", topic: &topic, role: TopicRole::Orders, records: &mixed, read_from: &read_from };
    let outcome = bulk.batches().apply(ProjectionKind::History, &batch, &codec).await.expect("batch");
    assert_eq!((outcome.applied, outcome.duplicates), (600, 1), "{outcome:?}");
    assert!(tables(&bulk).await.contains_key("history_entries (4200 rows)"));
}

/// How many rows PostgreSQL's sequential scans of `table` in database `url` have read, and
/// how many index scans it made. A backend reports its counts when it ends (or when idle, up
/// to ten seconds later): call this once the connections that scanned are closed.
async fn scans(url: &str, table: &str) -> (i64, i64) {
    use sqlx::{Connection, Row};
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connecting");
    let others =
        "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()";
    let counts = "SELECT seq_tup_read AS seq, COALESCE(idx_scan, 0) AS idx FROM pg_stat_user_tables WHERE relname = $1";
    for _ in 0..150 {
        let left: i64 = sqlx::query(others).fetch_one(&mut conn).await.expect("backends").try_get("n").expect("n");
        let row = sqlx::query(counts).bind(table).fetch_one(&mut conn).await.expect("table statistics");
        let (seq, idx): (i64, i64) = (row.try_get("seq").expect("seq"), row.try_get("idx").expect("idx"));
        if left == 0 && idx > 0 {
            return (seq, idx);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the scans of {table} were not reported");
}

/// Applies `records` of `role` to `kind`, `per_batch` at a time, each batch reading on
/// from where the one before ended.
async fn apply_in_batches(
    store: &Store,
    kind: impl Into<projections::GroupKind> + Copy,
    role: TopicRole,
    records: &[LogRecord],
    per_batch: usize,
) {
    let codec = Codec::builtin();
    let topic = role.name("t");
    for chunk in records.chunks(per_batch) {
        let read_from = BTreeMap::from([(0, chunk[0].offset)]);
        let batch = Batch { group: "probes", topic: &topic, role, records: chunk, read_from: &read_from };
        let outcome = store.batches().apply(kind, &batch, &codec).await.expect("batch");
        assert_eq!(outcome.dead_lettered, 0, "{outcome:?}");
    }
}

#[tokio::test]
async fn a_batch_finds_its_orders_rows_by_index_however_small_the_table_was_when_first_planned_postgres() {
    let Some(url) = support::postgres_database().await else { return };
    let store = Store::connect(&url).await.expect("store");
    let codec = Codec::builtin();
    // The table starts empty and grows batch by batch: the lookup of a batch's rows is
    // planned (and its plan cached by the connection) while it holds nothing.
    let events: Vec<Event> = (0..150).flat_map(|_| lifecycle(Uuid::new_v4())).collect();
    let records: Vec<LogRecord> = events.iter().zip(0..).map(|(e, offset)| record(&codec, e, offset)).collect();
    apply_in_batches(&store, ProjectionKind::Payment, TopicRole::Orders, &records, 30).await;
    let table = store.reads().live_projection(ProjectionKind::Payment).await.expect("live").table("payment_orders");
    drop(store);
    // Only the store's start scans the table whole, while it is still empty.
    let (rows_read, index_scans) = scans(&url, &table).await;
    assert_eq!(rows_read, 0, "scans of {table} read {rows_read} rows ({index_scans} index scans)");
}

#[tokio::test]
async fn the_stock_group_finds_a_batchs_holds_without_reading_every_hold_postgres() {
    let Some(url) = support::postgres_database().await else { return };
    let codec = Codec::builtin();
    let request = |offset: i64| LogRecord {
        published_by: Some(schemas::ORDER_PROCESS_PRINCIPAL.into()),
        ..record(&codec, &readdressed(sample(EventKind::StockRequested), Uuid::new_v4()), offset)
    };
    let store = Store::connect(&url).await.expect("store");
    let held: Vec<LogRecord> = (0..3_000).map(request).collect();
    apply_in_batches(&store, ProcessKind::Stock, TopicRole::Stock, &held, 1_000).await;
    drop(store);
    let (read_before, _) = scans(&url, "stock_holds").await;
    // What autovacuum does as a table grows: the planner learns an order has few holds.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.expect("connecting");
    sqlx::query("ANALYZE stock_holds").execute(&mut conn).await.expect("analyze");
    drop(conn);
    // One more batch, of a caught-up group's few orders, against 3,000 holds.
    let store = Store::connect(&url).await.expect("store");
    let more: Vec<LogRecord> = (3_000..3_003).map(request).collect();
    apply_in_batches(&store, ProcessKind::Stock, TopicRole::Stock, &more, 3).await;
    drop(store);
    let (read_after, _) = scans(&url, "stock_holds").await;
    assert!(read_after - read_before < 3_000, "the batch read {} holds", read_after - read_before);
}
