//! Members joining and leaving a group repeatedly while orders flow in leave the views
//! exactly as a calm rebuild from offset 0 into empty tables produces them — with eager
//! (range) and cooperative-sticky assignment under the classic protocol, and under the
//! consumer protocol (KIP-848), where the broker assigns incrementally.
use crate::common;

use std::time::Duration;

use consumers::member::{run_member, MemberHandle};
use consumers::GroupProtocol;
use orderflow::load::{self, LoadConfig};
use projections::store::Store;
use projections::ProjectionKind;

async fn churn_then_compare(protocol: GroupProtocol, strategy: &str) {
    let topic = common::fresh_topic("churn", 6).await;
    let kafka = common::kafka();
    let app = common::TestCheckout::spawn(&kafka, &topic, Duration::from_secs(5)).await;
    let store = Store::connect(&common::fresh_database().await).await.expect("store");
    let config = |kind: ProjectionKind| {
        let mut c = common::member_config(kind, &topic, &format!("{}-churn-{topic}", kind.name()));
        c.group_protocol = protocol;
        c.assignment_strategy = strategy.to_string();
        c
    };
    let steady: Vec<MemberHandle> =
        ProjectionKind::ALL.iter().map(|k| run_member(config(*k), &kafka, store.clone()).expect("member")).collect();

    let load = tokio::spawn(load::run(LoadConfig {
        target: app.base_url.clone(),
        rate: 250,
        duration: Duration::from_secs(10),
        workers: 16,
        skus: 5,
        show_progress: false,
        token: Some(common::token(common::ALL_SCOPES)),
        decisions: None,
        initial_stock: 0,
        limited_edition: None,
    }));
    // A second member per group joins and leaves every 1.5 s while the load runs.
    let mut joins = 0;
    while !load.is_finished() {
        let extra: Vec<MemberHandle> = ProjectionKind::ALL
            .iter()
            .map(|k| run_member(config(*k), &kafka, store.clone()).expect("member"))
            .collect();
        joins += 1;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        for member in extra {
            member.stop().await.expect("clean leave");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let report = load.await.expect("load");
    assert!(report.accepted > 500, "the load barely ran: {}", report.summary());
    assert!(joins >= 3, "membership changed only {joins} times");
    for kind in ProjectionKind::ALL {
        common::wait_group_caught_up(&store, &kafka, kind, &format!("{}-churn-{topic}", kind.name()), &topic).await;
    }
    for member in steady {
        member.stop().await.expect("stop");
    }

    // The reference: one calm member per group, from offset 0 into empty tables.
    let rebuilt = Store::connect(&common::fresh_database().await).await.expect("store");
    let calm: Vec<(String, MemberHandle)> = ProjectionKind::ALL
        .iter()
        .map(|k| {
            let group = format!("{}-calm-{topic}", k.name());
            let mut c = config(*k);
            c.group = group.clone();
            (group, run_member(c, &kafka, rebuilt.clone()).expect("member"))
        })
        .collect();
    for ((group, _), kind) in calm.iter().zip(ProjectionKind::ALL) {
        common::wait_group_caught_up(&rebuilt, &kafka, kind, group, &topic).await;
    }
    for (_, member) in calm {
        member.stop().await.expect("stop");
    }
    let churned = store.reads().snapshot().await.expect("snapshot");
    assert!(!churned.payments.is_empty());
    common::assert_same_projection(&churned, &rebuilt.reads().snapshot().await.expect("snapshot"), strategy);
    for kind in ProjectionKind::ALL {
        let churned_dead =
            store.reads().dead_letters(&format!("{}-churn-{topic}", kind.name())).await.expect("dl").len();
        let calm_dead = rebuilt.reads().dead_letters(&format!("{}-calm-{topic}", kind.name())).await.expect("dl").len();
        assert_eq!(churned_dead, calm_dead, "{kind} dead letters differ");
    }
    // Conservation per SKU: what is on hand plus what shipped is what was received.
    for level in &churned.inventory_levels {
        assert_eq!(level.available, level.on_hand - level.reserved);
        assert!(level.reserved >= 0 && level.shipped >= 0, "{level:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_joining_and_leaving_with_cooperative_sticky_leave_views_exact() {
    churn_then_compare(GroupProtocol::Classic, "cooperative-sticky").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_joining_and_leaving_under_the_consumer_protocol_leave_views_exact() {
    churn_then_compare(GroupProtocol::Consumer, "broker-assigned").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_joining_and_leaving_with_eager_range_leave_views_exact() {
    churn_then_compare(GroupProtocol::Classic, "range").await;
}
