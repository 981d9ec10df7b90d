//! A second rebuild of a projection is refused while the first one's members are alive,
//! and allowed once they are gone (an abandoned rebuild is started over).
mod common;

use projections::store::Store;

#[tokio::test]
async fn a_second_rebuild_is_refused_while_the_first_is_running_and_allowed_after_it_stopped() {
    let store = Store::connect(&common::fresh_database().await).await.expect("store");
    let first = store.prepare_rebuild("payment").await.expect("first rebuild");
    assert_eq!((first.generation, first.group.as_str()), (2, "orderflow-payment-g2"));
    store.report_member(&first.group, "member-1", "host-a", &[0, 1]).await.expect("member reports");

    let refused = store.prepare_rebuild("payment").await.expect_err("a concurrent rebuild");
    assert!(refused.to_string().contains("already running"), "{refused}");
    assert!(store.prepare_rebuild("inventory").await.is_ok(), "other projections are not blocked");

    store.remove_member(&first.group, "member-1").await.expect("member leaves");
    let second = store.prepare_rebuild("payment").await.expect("after the first stopped");
    assert_eq!(second.generation, 3, "a fresh generation, never the abandoned one's");
    assert_eq!(store.live_projection("payment").await.expect("live").generation, 1, "nothing switched");
}
