//! Fresh databases for one test each: a SQLite file, or a database of its own on the
//! PostgreSQL server `ORDERFLOW_DATABASE_URL` names (left behind for investigating a
//! failure; the end-to-end tests drop them once they are six hours old).
use sqlx::Connection;

/// A new SQLite database file.
pub fn fresh_sqlite_url() -> String {
    let path = std::env::temp_dir().join(format!("orderflow-store-{}.db", uuid::Uuid::new_v4().simple()));
    format!("sqlite://{}?mode=rwc", path.display())
}

/// The PostgreSQL server to make databases on, if one is named.
fn postgres_admin_url() -> Option<String> {
    std::env::var("ORDERFLOW_DATABASE_URL").ok().filter(|url| url.starts_with("postgres"))
}

/// A fresh PostgreSQL database, or `None` (and a notice) where no server is named outside
/// CI. Under CI a missing server fails the test: CI always starts one.
pub async fn postgres_database() -> Option<String> {
    let Some(admin_url) = postgres_admin_url() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "ORDERFLOW_DATABASE_URL is not set: run `eval \"$(infra/local/up)\"`"
        );
        eprintln!("skipped on PostgreSQL: ORDERFLOW_DATABASE_URL names no PostgreSQL server");
        return None;
    };
    let name = format!("store_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.expect("connecting to PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("creating a database");
    let base = admin_url.rsplit_once('/').map_or(admin_url.as_str(), |(base, _)| base);
    Some(format!("{base}/{name}"))
}

/// A fresh database: on PostgreSQL where a server is named, else a SQLite file.
pub async fn fresh_database() -> String {
    match postgres_database().await {
        Some(url) => url,
        None => fresh_sqlite_url(),
    }
}

/// Two tests of one behaviour, `<name>::postgres` and `<name>::sqlite`: `$body(url)` on a
/// fresh database of each (PostgreSQL where a server is named).
macro_rules! on_each_database {
    ($name:ident => $body:ident) => {
        mod $name {
            #[tokio::test]
            async fn postgres() {
                let Some(url) = crate::support::postgres_database().await else { return };
                super::$body(&url).await;
            }

            #[tokio::test]
            async fn sqlite() {
                super::$body(&crate::support::fresh_sqlite_url()).await;
            }
        }
    };
}
