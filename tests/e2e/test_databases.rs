//! The tests' own databases: kept for investigating a failure, dropped by a later run once
//! they are older than `common::STALE_AFTER` ([`kit::TempDatabases::drop_stale`]).
use std::time::Duration;

use orderflow::kit;

async fn exists(admin_url: &str, name: &str) -> bool {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(admin_url).await.expect("connect");
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut admin)
        .await
        .expect("look up");
    found.is_some()
}

#[tokio::test]
async fn databases_older_than_the_age_with_the_prefix_are_dropped_and_others_kept() {
    let admin_url = std::env::var("ORDERFLOW_DATABASE_URL").expect("ORDERFLOW_DATABASE_URL");
    // A prefix of this run alone, so no other test's database can be swept here.
    let prefix: &'static str = format!("sweep{}", &uuid::Uuid::new_v4().simple().to_string()[..8]).leak();
    let other: &'static str = format!("{prefix}x").leak();
    let ours = kit::TempDatabases::new(&admin_url, prefix);
    let theirs = kit::TempDatabases::new(&admin_url, other);
    let name_of = |url: String| url.rsplit_once('/').map(|(_, name)| name.to_string()).expect("name");
    let (first, second) = (name_of(ours.fresh_url().await.expect("db")), name_of(ours.fresh_url().await.expect("db")));
    let unrelated = name_of(theirs.fresh_url().await.expect("db"));
    // `PG_VERSION`'s time has whole seconds.
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    let kept = kit::TempDatabases::drop_stale(&admin_url, &[prefix], Duration::from_secs(3_600)).await.expect("sweep");
    assert_eq!(kept, 0, "databases younger than the age are kept");
    assert!(exists(&admin_url, &first).await && exists(&admin_url, &second).await);

    let dropped = kit::TempDatabases::drop_stale(&admin_url, &[prefix], Duration::ZERO).await.expect("sweep");
    assert_eq!(dropped, 2, "both databases of the prefix are older than no time");
    assert!(!exists(&admin_url, &first).await && !exists(&admin_url, &second).await);
    assert!(exists(&admin_url, &unrelated).await, "a name that only starts like the prefix is not the prefix's");
    theirs.drop_all().await;
}
