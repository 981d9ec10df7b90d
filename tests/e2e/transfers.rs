//! Stock moved between two regions' pools while both sell it and their stock groups are
//! SIGKILLed: every unit is in one pool, in transit, or shipped, and none is sold twice.
use crate::common;
use crate::regions::{fresh_topic_in_both, regions, ProcessRegion, MIRROR};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

const SKUS: [&str; 3] = ["SKU-TA", "SKU-TB", "SKU-TC"];
/// Units received into each pool per SKU before the load: (eu, us).
const RESTOCK: (i64, i64) = (120, 80);
const ORDERS_PER_REGION: usize = 120;
const TRANSFERS_PER_DIRECTION: usize = 30;
const STOCK_KILLS: usize = 8;

/// One region as the test drives it: its checkout's URL and its database.
#[derive(Clone)]
struct Side {
    name: &'static str,
    url: String,
    pool: sqlx::PgPool,
}

impl Side {
    /// POSTs `body` to `path` with `key` until the checkout gives an answer other than
    /// 503 (a stock member's restart makes none; the checkout's broker may lag).
    async fn post(&self, http: &reqwest::Client, path: &str, body: &serde_json::Value, key: &str) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let sent = http.post(format!("{}{path}", self.url)).header("Idempotency-Key", key).json(body).send().await;
            match sent {
                Ok(r) if r.status().as_u16() != 503 => return r.status().as_u16(),
                _ => assert!(Instant::now() < deadline, "{} {path}: no answer within 60 s", self.name),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The status of the hold `id` (an order's or a transfer's) on `sku` in this pool.
    async fn hold(&self, sku: &str, id: Uuid) -> Option<String> {
        sqlx::query_scalar("SELECT status FROM stock_holds WHERE sku = $1 AND order_id = $2")
            .bind(sku)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .expect("read stock_holds")
    }

    /// The order process's status of `order` once it is no longer pending.
    async fn status_when_decided(&self, order: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let status: Option<String> = sqlx::query_scalar("SELECT status FROM process_orders WHERE order_id = $1")
                .bind(order)
                .fetch_optional(&self.pool)
                .await
                .expect("read process_orders");
            match status {
                Some(status) if status != "pending" => return status,
                _ => assert!(Instant::now() < deadline, "{}: order {order} undecided after 90 s", self.name),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the hold `id` on `sku` (a stock member may be restarting).
    async fn decided(&self, sku: &str, id: Uuid) -> String {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = self.hold(sku, id).await {
                return status;
            }
            assert!(Instant::now() < deadline, "{}: transfer {id} of {sku} undecided after 90 s", self.name);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// What the transfers of one direction came to.
#[derive(Default)]
struct Moved {
    /// (SKU, units) dispatched and received.
    delivered: Vec<(String, i64)>,
    /// (SKU, units) dispatched and, on purpose, never received.
    in_transit: Vec<(String, i64)>,
    refused: usize,
}

/// Transfers from `from` to `to`: each requested (every third twice, under two keys),
/// one of them for more units than any pool has,
/// decided by `from`'s stock group, then received in `to` (every third receipt reported
/// twice) except every fifth, left in transit.
async fn transfer(from: Side, to: Side) -> Moved {
    let http = orderflow::load::http_client_with(Some(&common::token(common::ALL_SCOPES)));
    let mut moved = Moved::default();
    for n in 0..TRANSFERS_PER_DIRECTION {
        // The eighth asks for more than any pool has: refused, nothing moves.
        let (sku, units) = (SKUS[n % SKUS.len()], if n == 7 { 5_000 } else { 1 + (n % 6) as i64 });
        let id = Uuid::new_v4();
        let request = serde_json::json!({"transfer_id": id, "units": units, "to_region": to.name, "warehouse": "W-1"});
        let path = format!("/inventory/{sku}/transfers");
        for copy in 0..if n % 3 == 0 { 2 } else { 1 } {
            let status = from.post(&http, &path, &request, &format!("t-{id}-{copy}")).await;
            assert_eq!(status, 202, "transfer {id} requested in {}", from.name);
        }
        match from.decided(sku, id).await.as_str() {
            "rejected" => moved.refused += 1,
            "dispatched" if n % 5 == 4 => moved.in_transit.push((sku.to_string(), units)),
            "dispatched" => {
                let receipt = serde_json::json!({"transfer_id": id, "units": units, "from_region": from.name, "warehouse": "W-2"});
                let path = format!("/inventory/{sku}/transfer-receipts");
                for copy in 0..if n % 3 == 1 { 2 } else { 1 } {
                    let status = to.post(&http, &path, &receipt, &format!("r-{id}-{copy}")).await;
                    assert_eq!(status, 202, "transfer {id} received in {}", to.name);
                }
                moved.delivered.push((sku.to_string(), units));
            }
            other => panic!("transfer {id}: hold {other:?} in {}", from.name),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    moved
}

/// Orders placed in `side`; every other one, once confirmed, paid and shipped (the order
/// process ships only what was confirmed and paid).
async fn shop(side: Side) -> usize {
    let http = orderflow::load::http_client_with(Some(&common::token(common::ALL_SCOPES)));
    let mut accepted = 0;
    let mut to_ship = std::collections::VecDeque::new();
    for n in 0..ORDERS_PER_REGION {
        let (sku, quantity) = (SKUS[n % SKUS.len()], 1 + (n % 2) as i64);
        let order = serde_json::json!({"customer_id": format!("c-{n}"), "currency": "EUR",
            "lines": [{"sku": sku, "quantity": quantity, "unit_price_minor": 500}], "ship_to": {"country": "DE"}});
        let key = format!("o-{}-{n}-{}", side.name, Uuid::new_v4());
        let Ok(response) =
            http.post(format!("{}/orders", side.url)).header("Idempotency-Key", &key).json(&order).send().await
        else {
            continue;
        };
        if response.status().as_u16() != 202 {
            continue;
        }
        accepted += 1;
        let answer: serde_json::Value = response.json().await.expect("a 202 body");
        if n % 2 == 0 {
            to_ship.push_back((answer["order_id"].as_str().expect("order id").to_string(), quantity, key));
        }
        // Orders placed a while ago are decided by now (or soon: a stock member may be
        // restarting).
        while to_ship.len() > 5 || (n + 1 == ORDERS_PER_REGION && !to_ship.is_empty()) {
            let (id, quantity, key) = to_ship.pop_front().expect("an order to ship");
            if side.status_when_decided(&id).await == "confirmed" {
                let paid =
                    serde_json::json!({"status": "captured", "amount_minor": 500 * quantity, "provider_ref": "p"});
                side.post(&http, &format!("/orders/{id}/payments"), &paid, &format!("{key}-paid")).await;
                let shipped = serde_json::json!({"status": "shipped", "warehouse": "W-1"});
                side.post(&http, &format!("/orders/{id}/shipments"), &shipped, &format!("{key}-shipped")).await;
            }
        }
    }
    accepted
}

/// (on hand, reserved, shipped) per SKU of a pool, as its stock group keeps them.
async fn levels(pool: &sqlx::PgPool) -> BTreeMap<String, (i64, i64, i64)> {
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as("SELECT sku, on_hand, reserved, shipped FROM stock_levels")
        .fetch_all(pool)
        .await
        .expect("levels");
    rows.into_iter().map(|(sku, on_hand, reserved, shipped)| (sku, (on_hand, reserved, shipped))).collect()
}

/// Units per SKU of the holds in `status` of a pool.
async fn held(pool: &sqlx::PgPool, status: &str) -> BTreeMap<String, i64> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT sku, CAST(SUM(quantity) AS BIGINT) FROM stock_holds WHERE status = $1 GROUP BY sku")
            .bind(status)
            .fetch_all(pool)
            .await
            .expect("holds");
    rows.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_moved_between_regions_under_stock_member_kills_are_each_in_one_pool_in_transit_or_shipped() {
    common::init_logs();
    // Alone with the regions' clusters: other tests kill their brokers and the mirror.
    let _clusters = MIRROR.lock().await;
    let env = regions();
    let brokers = |r: &str| env[&format!("ORDERFLOW_REGION_{}_BROKERS", r.to_uppercase())].clone();
    let (eu_kafka, us_kafka) = (infra::KafkaSettings::new(brokers("eu")), infra::KafkaSettings::new(brokers("us")));
    let topic = fresh_topic_in_both(&eu_kafka, &us_kafka, "transfers", 3).await;
    let (eu_db, us_db) = (common::fresh_database().await, common::fresh_database().await);
    let (eu_port, us_port) = (common::free_port(), common::free_port());
    let url = |port: u16| format!("http://127.0.0.1:{port}");
    let mut eu = ProcessRegion::on_port(eu_port, "eu", &brokers("eu"), &eu_db, &topic, ("us", &url(us_port)));
    let mut us = ProcessRegion::on_port(us_port, "us", &brokers("us"), &us_db, &topic, ("eu", &url(eu_port)));
    let groups = ["order-process", "stock", "inventory"];
    eu.start_with(&groups).await;
    us.start_with(&groups).await;
    let connect = |db: String| async move { sqlx::PgPool::connect(&db).await.expect("database") };
    let eu_side = Side { name: "eu", url: eu.url.clone(), pool: connect(eu_db.clone()).await };
    let us_side = Side { name: "us", url: us.url.clone(), pool: connect(us_db.clone()).await };

    let http = orderflow::load::http_client_with(Some(&common::token(common::ALL_SCOPES)));
    for (side, units) in [(&eu_side, RESTOCK.0), (&us_side, RESTOCK.1)] {
        for sku in SKUS {
            let body = serde_json::json!({"warehouse": "W-1", "delta": units, "reason": "received"});
            let key = format!("restock-{}-{sku}", side.name);
            assert_eq!(side.post(&http, &format!("/inventory/{sku}/adjustments"), &body, &key).await, 202);
        }
    }
    // A transfer moves units between two regions: one to the region itself is refused.
    let body = serde_json::json!({"transfer_id": Uuid::new_v4(), "units": 1, "to_region": "eu", "warehouse": "W"});
    let status = eu_side.post(&http, "/inventory/SKU-TA/transfers", &body, "to-itself").await;
    assert_eq!(status, 422, "a transfer from eu to eu");

    // Readers sample both regions' inventory views (and the stock groups' own levels).
    let done = Arc::new(AtomicBool::new(false));
    let lowest = Arc::new(AtomicI64::new(i64::MAX));
    let samples = Arc::new(AtomicUsize::new(0));
    let sampler = tokio::spawn({
        let pools = [eu_side.pool.clone(), us_side.pool.clone()];
        let (done, lowest, samples) = (done.clone(), lowest.clone(), samples.clone());
        async move {
            while !done.load(Ordering::SeqCst) {
                for pool in &pools {
                    for query in [
                        "SELECT MIN(available) FROM inventory_levels",
                        "SELECT MIN(on_hand - reserved) FROM stock_levels",
                    ] {
                        let min: Option<i64> = sqlx::query_scalar(query).fetch_one(pool).await.expect("sample");
                        lowest.fetch_min(min.unwrap_or(i64::MAX), Ordering::SeqCst);
                    }
                }
                samples.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });

    let load = tokio::spawn({
        let (eu_side, us_side) = (eu_side.clone(), us_side.clone());
        async move {
            futures::join!(
                shop(eu_side.clone()),
                shop(us_side.clone()),
                transfer(eu_side.clone(), us_side.clone()),
                transfer(us_side, eu_side)
            )
        }
    });
    let mut kills = 0;
    while kills < STOCK_KILLS && !load.is_finished() {
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        if kills % 2 == 0 {
            eu.kill_and_restart("stock")
        } else {
            us.kill_and_restart("stock")
        }
        kills += 1;
    }
    let (eu_orders, us_orders, eu_to_us, us_to_eu) = load.await.expect("load");
    eprintln!(
        "{eu_orders} + {us_orders} orders; eu→us {} delivered, {} in transit, {} refused; us→eu {} delivered, {} in transit, {} refused; {kills} stock members SIGKILLed",
        eu_to_us.delivered.len(),
        eu_to_us.in_transit.len(),
        eu_to_us.refused,
        us_to_eu.delivered.len(),
        us_to_eu.in_transit.len(),
        us_to_eu.refused
    );
    assert!(kills >= STOCK_KILLS / 2, "the load ended after {kills} kills");
    assert!(eu_orders > ORDERS_PER_REGION / 2 && us_orders > ORDERS_PER_REGION / 2, "{eu_orders} / {us_orders} orders");
    let refused = eu_to_us.refused + us_to_eu.refused;
    assert!((2..TRANSFERS_PER_DIRECTION).contains(&refused), "{refused} transfers refused");

    // Every receipt reported is counted in once (its hold), whatever was killed.
    let expected_in_transit = |sku: &str| -> i64 {
        [&eu_to_us, &us_to_eu].iter().flat_map(|m| &m.in_transit).filter(|(s, _)| s == sku).map(|(_, u)| u).sum()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (eu_levels, us_levels) = (levels(&eu_side.pool).await, levels(&us_side.pool).await);
        let mut off = Vec::new();
        for sku in SKUS {
            let dispatched: i64 = held(&eu_side.pool, "dispatched").await.get(sku).copied().unwrap_or(0)
                + held(&us_side.pool, "dispatched").await.get(sku).copied().unwrap_or(0);
            let received: i64 = held(&eu_side.pool, "received").await.get(sku).copied().unwrap_or(0)
                + held(&us_side.pool, "received").await.get(sku).copied().unwrap_or(0);
            let in_transit = dispatched - received;
            let (eu_l, us_l) = (eu_levels[sku], us_levels[sku]);
            let receipts = RESTOCK.0 + RESTOCK.1;
            // Σ pools on hand + in transit = receipts − shipments.
            if eu_l.0 + us_l.0 + in_transit != receipts - (eu_l.2 + us_l.2) || in_transit != expected_in_transit(sku) {
                off.push(format!(
                    "{sku}: eu {eu_l:?} us {us_l:?} in transit {in_transit} (expected {})",
                    expected_in_transit(sku)
                ));
            }
        }
        if off.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "units unaccounted for after 90 s: {off:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The operators' view of the same: `orderflow region transfers` over both databases.
    let report = common::run_orderflow_with(
        &["region", "transfers", "--database-url", &format!("eu={eu_db}"), "--database-url", &format!("us={us_db}")],
        &[],
    );
    let report: serde_json::Value = serde_json::from_str(&report).expect("JSON");
    for sku in SKUS {
        assert_eq!(
            report["in_transit"][sku].as_i64(),
            Some(expected_in_transit(sku)),
            "{sku}: {}",
            report["in_transit"]
        );
    }
    done.store(true, Ordering::SeqCst);
    sampler.await.expect("sampler");
    assert!(samples.load(Ordering::SeqCst) > 20, "the readers sampled too little");
    assert!(lowest.load(Ordering::SeqCst) >= 0, "a reader saw available {} units", lowest.load(Ordering::SeqCst));

    // No unit reserved twice: each pool's reserved and shipped units are exactly those its
    // orders' holds name, and never more than it has.
    for side in [&eu_side, &us_side] {
        let pool_levels = levels(&side.pool).await;
        let (reserved, shipped) = (held(&side.pool, "reserved").await, held(&side.pool, "shipped").await);
        for sku in SKUS {
            let (on_hand, r, s) = pool_levels[sku];
            assert_eq!(r, reserved.get(sku).copied().unwrap_or(0), "{} {sku}: reserved vs holds", side.name);
            assert_eq!(s, shipped.get(sku).copied().unwrap_or(0), "{} {sku}: shipped vs holds", side.name);
            assert!(r <= on_hand, "{} {sku}: {r} reserved of {on_hand}", side.name);
        }
    }
    let shipped: i64 = levels(&eu_side.pool).await.values().map(|l| l.2).sum::<i64>()
        + levels(&us_side.pool).await.values().map(|l| l.2).sum::<i64>();
    assert!(shipped > 0, "nothing was shipped: the identity was tested without shipments");
    eu.kill();
    us.kill();
}
