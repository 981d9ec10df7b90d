//! Which table generation a group writes and which one the views show, and the shadow
//! rebuild's steps: prepare a fresh generation, switch the views once it has caught up,
//! drop the old one.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use sqlx::any::AnyRow;
use sqlx::{Executor, Row};

use super::connection::{Dialect, Store};
use super::error::StoreError;
use super::offsets::{self, Lock};
use super::roles::{Operations, Reads};
use super::schema::{self, table_name};
use crate::registry::ProjectionKind;

/// The generation of a projection that the views show, and the group that builds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LiveProjection {
    pub projection: ProjectionKind,
    pub generation: i64,
    pub group: String,
}

impl LiveProjection {
    pub fn table(&self, base: &str) -> String {
        table_name(base, self.generation)
    }
}

impl Store {
    /// The live generation of `projection` (generation 1 and the first group until a
    /// rebuild switched it).
    pub(super) async fn live_projection(&self, projection: ProjectionKind) -> Result<LiveProjection, StoreError> {
        let row = sqlx::query("SELECT generation, group_id FROM projection_live WHERE projection = $1")
            .bind(projection.name())
            .fetch_optional(&self.pool)
            .await?;
        self.live_from(projection, row.as_ref())
    }

    /// Every projection's live generation, in one query.
    pub(super) async fn live_projections(&self) -> Result<Vec<LiveProjection>, StoreError> {
        let rows =
            sqlx::query("SELECT projection, generation, group_id FROM projection_live").fetch_all(&self.pool).await?;
        ProjectionKind::ALL
            .into_iter()
            .map(|p| {
                let row = rows.iter().find(|r| r.try_get::<String, _>("projection").is_ok_and(|name| name == p.name()));
                self.live_from(p, row)
            })
            .collect()
    }

    fn live_from(&self, projection: ProjectionKind, row: Option<&AnyRow>) -> Result<LiveProjection, StoreError> {
        Ok(match row {
            Some(r) => {
                LiveProjection { projection, generation: r.try_get("generation")?, group: r.try_get("group_id")? }
            }
            None => LiveProjection { projection, generation: 1, group: self.group(projection) },
        })
    }

    /// The generation `group` writes. Cached: a group never changes generation.
    pub(super) async fn generation_of(&self, group: &str) -> Result<i64, StoreError> {
        if let Some(g) = self.generations.lock().unwrap_or_else(|e| e.into_inner()).get(group) {
            return Ok(*g);
        }
        let generation: Option<i64> = sqlx::query("SELECT generation FROM projection_groups WHERE group_id = $1")
            .bind(crate::registry::generation_group(group))
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get("generation"))
            .transpose()?;
        let generation = generation.unwrap_or(1);
        self.generations.lock().unwrap_or_else(|e| e.into_inner()).insert(group.to_string(), generation);
        Ok(generation)
    }
}

impl Operations {
    /// The groups of generations of `projection` newer than the live one: rebuilds that
    /// are running, or were abandoned. Whether one is running is the broker's to say (its
    /// group has members); the caller asks it before [`Store::prepare_rebuild`].
    pub async fn unfinished_rebuilds(&self, projection: ProjectionKind) -> Result<Vec<String>, StoreError> {
        let live = self.store.live_projection(projection).await?;
        let rows = sqlx::query(
            "SELECT group_id FROM projection_groups WHERE projection = $1 AND generation > $2 ORDER BY generation",
        )
        .bind(projection.name())
        .bind(live.generation)
        .fetch_all(&self.store.pool)
        .await?;
        Ok(rows.iter().map(|r| r.try_get("group_id")).collect::<Result<_, sqlx::Error>>()?)
    }

    /// Creates empty tables for the next generation of `projection` and registers a fresh
    /// group to build them from offset 0. Leftovers of an abandoned rebuild are dropped.
    /// Two rebuilds of one projection would wipe each other's progress: the caller makes
    /// sure none of [`Store::unfinished_rebuilds`] is still running.
    #[tracing::instrument(skip(self))]
    pub async fn prepare_rebuild(&self, projection: ProjectionKind) -> Result<LiveProjection, StoreError> {
        let live = self.store.live_projection(projection).await?;
        let newest: Option<i64> =
            sqlx::query("SELECT MAX(generation) AS g FROM projection_groups WHERE projection = $1")
                .bind(projection.name())
                .fetch_one(&self.store.pool)
                .await?
                .try_get("g")?;
        let generation = newest.unwrap_or(1).max(live.generation) + 1;
        let group = format!("{}-g{generation}", self.store.group(projection));
        let mut tx = self.store.begin_write().await?;
        for statement in schema::drop_statements(projection, generation).into_iter().chain(schema::table_statements(
            self.store.dialect,
            projection,
            generation,
        )) {
            tx.execute(statement.as_str()).await?;
        }
        if self.store.dialect == Dialect::Postgres && self.store.manages_catalog().await? {
            // Run by the owner: the consumers' role must own the new tables too.
            tx.execute(schema::hand_over_statement().as_str()).await?;
        }
        for table in ["consumer_offsets", "processed_events", "dead_letters", "projection_groups"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE group_id = $1")).bind(&group).execute(&mut *tx).await?;
        }
        sqlx::query(
            "INSERT INTO projection_groups (group_id, projection, generation, created_at_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(&group)
        .bind(projection.name())
        .bind(generation)
        .bind(schemas::clock::now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.store.generations.lock().unwrap_or_else(|e| e.into_inner()).insert(group.clone(), generation);
        Ok(LiveProjection { projection, generation, group })
    }

    /// Points the views of `next.projection` at `next`'s tables, in one transaction, but
    /// only once `next`'s groups have applied at least everything the live ones have on
    /// every log in `logs` (a topic of this region, or with its source region a copy read
    /// by the mirror group), so a reader never sees rows disappear. On PostgreSQL the live
    /// groups' offset rows are locked (their members wait) while `next` catches up, for at
    /// most `wait`. Returns whether it switched; if not, call again.
    #[tracing::instrument(skip(self))]
    pub async fn try_switch(
        &self,
        next: &LiveProjection,
        logs: &[(Option<schemas::Region>, String)],
        wait: Duration,
    ) -> Result<Option<LiveProjection>, StoreError> {
        let live = self.store.live_projection(next.projection).await?;
        let group_of = |group: &str, source: &Option<schemas::Region>| match source {
            Some(region) => crate::registry::mirror_group(group, region),
            None => group.to_string(),
        };
        let mut tx = self.store.begin_write().await?;
        // On SQLite BEGIN IMMEDIATE took the write lock: nobody applies a batch until we
        // are done.
        if self.store.dialect == Dialect::Postgres {
            tx.execute(format!("SELECT pg_advisory_xact_lock({})", schema::CATALOG_LOCK).as_str()).await?;
        }
        let mut old = Vec::with_capacity(logs.len());
        for (source, topic) in logs {
            let group = group_of(&live.group, source);
            old.push(offsets::read(&mut tx, self.store.dialect, &group, topic, None, Lock::ForUpdate).await?);
        }
        let deadline = Instant::now() + wait;
        loop {
            let mut caught_up = true;
            for ((source, topic), old) in logs.iter().zip(&old) {
                let group = group_of(&next.group, source);
                let new: HashMap<i32, i64> = offsets::read(&mut tx, self.store.dialect, &group, topic, None, Lock::No)
                    .await?
                    .into_iter()
                    .collect();
                caught_up &= old.iter().all(|(p, o)| new.get(p).is_some_and(|n| n >= o));
            }
            if caught_up {
                break;
            }
            // SQLite: the builder cannot write while we hold the lock; let it go on.
            if self.store.dialect == Dialect::Sqlite || Instant::now() >= deadline {
                tx.rollback().await?;
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for statement in schema::view_statements(self.store.dialect, next.projection, next.generation) {
            tx.execute(statement.as_str()).await?;
        }
        sqlx::query(
            "INSERT INTO projection_live (projection, generation, group_id, switched_at_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (projection) DO UPDATE SET generation = excluded.generation, group_id = excluded.group_id,
             switched_at_ms = excluded.switched_at_ms",
        )
        .bind(next.projection.name())
        .bind(next.generation)
        .bind(&next.group)
        .bind(schemas::clock::now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(live))
    }

    /// Generations of `projection` that the views no longer show (their tables may already
    /// be gone: dropping is idempotent).
    pub async fn retired_generations(&self, projection: ProjectionKind) -> Result<Vec<LiveProjection>, StoreError> {
        let live = self.store.live_projection(projection).await?;
        let rows = sqlx::query("SELECT group_id, generation FROM projection_groups WHERE projection = $1")
            .bind(projection.name())
            .fetch_all(&self.store.pool)
            .await?;
        let mut all = vec![LiveProjection { projection, generation: 1, group: self.store.group(projection) }];
        for r in &rows {
            all.push(LiveProjection {
                projection,
                generation: r.try_get("generation")?,
                group: r.try_get("group_id")?,
            });
        }
        all.retain(|g| g.generation != live.generation);
        Ok(all)
    }

    /// Drops a generation's tables and its group's offsets and dedupe ids (dead letters
    /// stay for the record). Refuses the live generation.
    #[tracing::instrument(skip(self))]
    pub async fn drop_generation(&self, old: &LiveProjection) -> Result<(), StoreError> {
        if self.store.live_projection(old.projection).await?.generation == old.generation {
            return Err(StoreError::Invalid(format!(
                "generation {} of {} is live; switch to another one first",
                old.generation, old.projection
            )));
        }
        let mut tx = self.store.begin_write().await?;
        for statement in schema::drop_statements(old.projection, old.generation) {
            tx.execute(statement.as_str()).await?;
        }
        for table in ["consumer_offsets", "processed_events"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE group_id = $1")).bind(&old.group).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

impl Reads {
    /// The group that runs `process` (a process has no generations: one group for ever).
    pub fn process_group(&self, process: crate::registry::ProcessKind) -> String {
        self.store.group(process)
    }

    /// The live generation of `projection` and the group that builds it.
    pub async fn live_projection(&self, projection: ProjectionKind) -> Result<LiveProjection, StoreError> {
        self.store.live_projection(projection).await
    }

    /// Every projection's live generation, in one query.
    pub async fn live_projections(&self) -> Result<Vec<LiveProjection>, StoreError> {
        self.store.live_projections().await
    }
}
