//! The audit trail of operator actions (dead-letter retry and skip, rebuilds, offset
//! resets): who, what, with which arguments, how it ended, when. Only ever appended to.
use serde::Serialize;
use sqlx::Row;

use super::connection::Dialect;
use super::error::StoreError;
use super::roles::Operations;

/// One entry of `operator_actions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperatorAction {
    pub id: i64,
    /// The operator's name and, on PostgreSQL, the database role they acted as
    /// (`alice as orderflow_consumer`).
    pub actor: String,
    /// The command, e.g. `dead-letters retry`.
    pub action: String,
    /// Its arguments, as JSON.
    pub arguments: String,
    /// `ok: …` or `failed: …`.
    pub outcome: String,
    pub at_ms: i64,
}

impl Operations {
    /// Appends an action to the audit trail. `operator` is who says they act (flag,
    /// environment or login name); on PostgreSQL the session's role is added, which the
    /// operator cannot choose without its credentials.
    #[tracing::instrument(skip(self, arguments))]
    pub async fn record_operator_action(
        &self,
        operator: &str,
        action: &str,
        arguments: &serde_json::Value,
        outcome: &str,
    ) -> Result<(), StoreError> {
        let actor = match self.store.dialect {
            Dialect::Postgres => "$1 || ' as ' || CAST(current_user AS TEXT)",
            Dialect::Sqlite => "$1",
        };
        let sql = format!(
            "INSERT INTO operator_actions (actor, action, arguments, outcome, at_ms) VALUES ({actor}, $2, $3, $4, $5)"
        );
        sqlx::query(&sql)
            .bind(operator)
            .bind(action)
            .bind(arguments.to_string())
            .bind(outcome)
            .bind(schemas::clock::now_ms())
            .execute(&self.store.pool)
            .await?;
        Ok(())
    }

    /// The newest `limit` actions, newest first.
    pub async fn operator_actions(&self, limit: i64) -> Result<Vec<OperatorAction>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, actor, action, arguments, outcome, at_ms FROM operator_actions ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.store.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OperatorAction {
                    id: r.try_get("id")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    arguments: r.try_get("arguments")?,
                    outcome: r.try_get("outcome")?,
                    at_ms: r.try_get("at_ms")?,
                })
            })
            .collect()
    }
}
