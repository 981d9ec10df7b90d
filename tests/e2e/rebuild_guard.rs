//! A second rebuild of a projection is refused while the first one's group has members at
//! the broker, and allowed once they are gone (an abandoned rebuild is started over).
use crate::common;

use std::time::Duration;

use consumers::member::run_member;
use projections::store::Store;
use projections::ProjectionKind;

fn rebuild(projection: &str, topic: &str, database_url: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(["rebuild", projection, "--topic", topic, "--database-url", database_url, "--timeout", "60s", "--json"])
        .env("RUST_LOG", "error")
        .output()
        .expect("run orderflow rebuild")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_rebuild_is_refused_while_the_first_is_running_and_allowed_after_it_stopped() {
    let kafka = common::kafka();
    let topic = common::fresh_topic("guard", 2).await;
    let database_url = common::fresh_database().await;
    let store = Store::connect(&database_url).await.expect("store");
    let first = store.operations().prepare_rebuild(ProjectionKind::Payment).await.expect("first rebuild");
    assert_eq!((first.generation, first.group.as_str()), (2, "orderflow-payment-g2"));
    // The first rebuild's member, alive in its group.
    let member =
        run_member(common::member_config(ProjectionKind::Payment, &topic, &first.group), &kafka, store.clone())
            .expect("member");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while member.stats.owned.lock().expect("owned").is_empty() {
        assert!(std::time::Instant::now() < deadline, "the member never got its partitions");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let refused = rebuild("payment", &topic, &database_url);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("already running"), "{stderr}");
    assert_eq!(
        store.operations().unfinished_rebuilds(ProjectionKind::Payment).await.expect("unfinished"),
        vec![first.group.clone()]
    );

    member.stop().await.expect("member leaves");
    let allowed = rebuild("payment", &topic, &database_url);
    assert!(allowed.status.success(), "{}", String::from_utf8_lossy(&allowed.stderr));
    let live = store.reads().live_projection(ProjectionKind::Payment).await.expect("live");
    assert_eq!(live.generation, 3, "a fresh generation, never the abandoned one's");
}
