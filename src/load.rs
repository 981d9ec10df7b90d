//! `orderflow load`: drives the checkout API with realistic order lifecycles at a target
//! request rate and reports accepted/s and latency percentiles.
//!
//! Each worker plays one order at a time: place it, then (mostly) authorize and capture the
//! payment, pack, ship and deliver, with some cancellations, failed payments and refunds;
//! now and then the warehouse receives stock. A shared token bucket holds the total rate.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Semaphore;

pub type HttpClient = reqwest::Client;

/// The SKU number that is the limited edition when [`LoadConfig::limited_edition`] is set.
pub const LIMITED_SKU: u32 = 0;

#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Base URL of a checkout, e.g. `http://127.0.0.1:8080`.
    pub target: String,
    /// Requests per second, all routes together.
    pub rate: u32,
    pub duration: Duration,
    /// Concurrent lifecycles.
    pub workers: usize,
    /// Number of distinct SKUs orders draw from.
    pub skus: u32,
    pub show_progress: bool,
    /// Bearer token sent with every request.
    pub token: Option<String>,
    /// Base URL of a query API: when given, each order waits for the order process's
    /// decision (`GET /orders/{id}?decided=true`) before it is paid, and a rejected order
    /// goes no further; one in twenty confirmed orders is never paid (it expires).
    pub decisions: Option<String>,
    /// Units of each SKU the warehouse receives before the first order.
    pub initial_stock: u32,
    /// When set, `SKU-0` is a limited edition: it starts with this many units instead and
    /// is never restocked, so once it sells out the orders that want it are rejected —
    /// a few, for a known reason, while the rest of the shop stays stocked.
    pub limited_edition: Option<u32>,
}

impl LoadConfig {
    /// A run against `target` with everything else at its plain default: no initial
    /// stock, no waiting for decisions.
    pub fn new(target: String, rate: u32, duration: Duration) -> Self {
        LoadConfig {
            target,
            rate,
            duration,
            workers: 32,
            skus: 40,
            show_progress: false,
            token: None,
            decisions: None,
            initial_stock: 0,
            limited_edition: None,
        }
    }

    /// What `sku` starts with.
    fn initial_units(&self, sku: u32) -> u32 {
        match self.limited_edition {
            Some(units) if sku == LIMITED_SKU => units,
            _ => self.initial_stock,
        }
    }

    /// The SKUs the warehouse restocks during the run.
    fn restocked(&self) -> std::ops::Range<u32> {
        let first = if self.limited_edition.is_some() { LIMITED_SKU + 1 } else { 0 };
        first..self.skus.max(first + 1)
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub elapsed: Duration,
    pub accepted: u64,
    pub orders_placed: u64,
    pub rejected: u64,
    pub failed: u64,
    /// Orders the order process confirmed, rejected, and left unpaid on purpose (only when
    /// waiting for decisions).
    pub confirmed: u64,
    pub rejected_orders: u64,
    pub left_unpaid: u64,
    /// Latency of accepted requests, sorted ascending.
    pub latencies: Vec<Duration>,
}

impl LoadReport {
    pub fn accepted_per_sec(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * (self.latencies.len() - 1) as f64).round() as usize;
        self.latencies[rank.min(self.latencies.len() - 1)]
    }

    pub fn summary(&self) -> String {
        format!(
            "{} accepted ({:.0}/s, {} orders), {} rejected, {} failed in {:.1}s; latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.accepted,
            self.accepted_per_sec(),
            self.orders_placed,
            self.rejected,
            self.failed,
            self.elapsed.as_secs_f64(),
            ms(self.percentile(50.0)),
            ms(self.percentile(90.0)),
            ms(self.percentile(99.0)),
            ms(self.latencies.last().copied().unwrap_or_default()),
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Shared {
    client: HttpClient,
    config: LoadConfig,
    tokens: Semaphore,
    deadline: Instant,
    accepted: AtomicU64,
    orders: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    confirmed: AtomicU64,
    rejected_orders: AtomicU64,
    left_unpaid: AtomicU64,
    latencies: Mutex<Vec<Duration>>,
}

/// An HTTP client that keeps connections to the checkout open between requests.
pub fn http_client() -> HttpClient {
    http_client_with(None)
}

/// An HTTP client that sends `Authorization: Bearer <token>` with every request.
pub fn http_client_with(token: Option<&str>) -> HttpClient {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(mut value) = token.and_then(|t| reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).ok()) {
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    // Building fails only when the TLS backend or resolver cannot start; the default
    // client is the fallback then (without the token, so requests are refused visibly).
    reqwest::Client::builder().pool_max_idle_per_host(512).default_headers(headers).build().unwrap_or_default()
}

/// POSTs a JSON body; returns the status and the parsed JSON answer (null if the answer
/// is not JSON).
pub async fn post_json(
    client: &HttpClient,
    url: &str,
    body: &Value,
    key: Option<&str>,
) -> Result<(u16, Value), reqwest::Error> {
    let mut request = client.post(url).json(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await?;
    Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

/// Runs the load until the duration is over.
pub async fn run(config: LoadConfig) -> LoadReport {
    // The shop opens stocked: before the clock of the run starts.
    let client = http_client_with(config.token.as_deref());
    stock_up(&client, &config).await;
    if let (Some(base), true) = (&config.decisions, config.initial_stock > 0) {
        wait_stocked(&client, &config, base).await;
    }
    let shared = Arc::new(Shared {
        client,
        tokens: Semaphore::new(0),
        deadline: Instant::now() + config.duration,
        accepted: AtomicU64::new(0),
        orders: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        confirmed: AtomicU64::new(0),
        rejected_orders: AtomicU64::new(0),
        left_unpaid: AtomicU64::new(0),
        latencies: Mutex::new(Vec::new()),
        config,
    });
    let started = Instant::now();
    let progress = shared.config.show_progress.then(|| progress_bar(shared.config.duration));
    let refill = tokio::spawn(refill_tokens(shared.clone()));
    let workers: Vec<_> =
        (0..shared.config.workers.max(1)).map(|i| tokio::spawn(worker(shared.clone(), i as u64))).collect();
    while Instant::now() < shared.deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(bar) = &progress {
            bar.set_position(started.elapsed().as_secs().min(shared.config.duration.as_secs()));
            let accepted = shared.accepted.load(Ordering::Relaxed);
            bar.set_message(format!("{accepted} accepted, {:.0}/s", accepted as f64 / started.elapsed().as_secs_f64()));
        }
    }
    refill.abort();
    shared.tokens.close();
    for w in workers {
        let _ = w.await;
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let mut latencies = std::mem::take(&mut *shared.latencies.lock().unwrap_or_else(|e| e.into_inner()));
    latencies.sort_unstable();
    LoadReport {
        elapsed: started.elapsed(),
        accepted: shared.accepted.load(Ordering::Relaxed),
        orders_placed: shared.orders.load(Ordering::Relaxed),
        rejected: shared.rejected.load(Ordering::Relaxed),
        failed: shared.failed.load(Ordering::Relaxed),
        confirmed: shared.confirmed.load(Ordering::Relaxed),
        rejected_orders: shared.rejected_orders.load(Ordering::Relaxed),
        left_unpaid: shared.left_unpaid.load(Ordering::Relaxed),
        latencies,
    }
}

/// The warehouse receives `initial_stock` units of every SKU, outside the rate limit.
async fn stock_up(client: &HttpClient, config: &LoadConfig) {
    if config.initial_stock == 0 {
        return;
    }
    let base = config.target.trim_end_matches('/');
    for n in 0..config.skus {
        let body = json!({"warehouse": "BER-1", "delta": config.initial_units(n), "reason": "received"});
        let url = format!("{base}/inventory/SKU-{n}/adjustments");
        if let Err(e) = post_json(client, &url, &body, None).await {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "Stocking up the shop failed. The load goes on with the stock there is."
            );
        }
    }
}

/// Waits (at most 30 s) until the query API at `base` shows every SKU stocked. Not for the
/// decisions (an order placed after an adjustment's answer is decided after it), but so the
/// run's clock starts once every group has joined and the pipeline flows end to end: a
/// worker waiting for a decision while the groups still join would measure the join.
async fn wait_stocked(client: &HttpClient, config: &LoadConfig, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in 0..config.skus {
        let url = format!("{}/inventory/SKU-{n}", base.trim_end_matches('/'));
        loop {
            let on_hand = match client.get(&url).send().await {
                Ok(response) if response.status().is_success() => {
                    response.json::<Value>().await.ok().and_then(|v| v["on_hand"].as_i64())
                }
                _ => None,
            };
            if on_hand.is_some_and(|units| units >= i64::from(config.initial_units(n))) {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(sku = n, "The initial stock did not show within 30 s. Starting the load anyway.");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The order process's decision on `order_id` (`confirmed`, `paid`, `rejected`, …), or
/// `None` if it did not come within the query API's read wait.
async fn decision(shared: &Shared, base: &str, order_id: &str) -> Option<String> {
    let url = format!("{}/orders/{order_id}?decided=true", base.trim_end_matches('/'));
    for _ in 0..3 {
        if Instant::now() >= shared.deadline {
            return None;
        }
        match shared.client.get(&url).send().await {
            Ok(response) if response.status().is_success() => {
                let body: Value = response.json().await.ok()?;
                return body["status"]["status"].as_str().map(String::from);
            }
            Ok(_) | Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    None
}

fn progress_bar(duration: Duration) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(duration.as_secs());
    bar.set_style(
        indicatif::ProgressStyle::with_template("load {bar:30} {pos}/{len}s {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

async fn refill_tokens(shared: Arc<Shared>) {
    let tick = Duration::from_millis(10);
    let per_tick = f64::from(shared.config.rate) * tick.as_secs_f64();
    let mut owed = 0.0;
    let mut interval = tokio::time::interval(tick);
    loop {
        interval.tick().await;
        owed += per_tick;
        let whole = owed.floor();
        owed -= whole;
        // Cap the bucket so a stalled server is not hit by a burst afterwards.
        let room = (shared.config.rate as usize).saturating_sub(shared.tokens.available_permits());
        shared.tokens.add_permits((whole as usize).min(room));
    }
}

/// A tiny deterministic generator per worker: repeatable runs, no extra dependency.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

async fn worker(shared: Arc<Shared>, id: u64) {
    let mut dice = Dice(0x2545_f491_4f6c_dd1d ^ (id + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    while Instant::now() < shared.deadline {
        if dice.percent(5) {
            let restocked = shared.config.restocked();
            let sku =
                format!("SKU-{}", restocked.start + dice.below(u64::from(restocked.end - restocked.start)) as u32);
            let body = json!({"warehouse": "BER-1", "delta": 50 + dice.below(200), "reason": "received"});
            if send(&shared, &format!("/inventory/{sku}/adjustments"), &body).await.is_none() {
                return;
            }
            continue;
        }
        if lifecycle(&shared, &mut dice).await.is_none() {
            return;
        }
    }
}

/// Plays one order; `None` when the run is over.
async fn lifecycle(shared: &Shared, dice: &mut Dice) -> Option<()> {
    let lines: Vec<Value> = (0..1 + dice.below(3))
        .map(|_| {
            json!({"sku": format!("SKU-{}", dice.below(u64::from(shared.config.skus))),
                   "quantity": 1 + dice.below(3), "unit_price_minor": 199 + dice.below(9_800)})
        })
        .collect();
    let total: u64 =
        lines.iter().map(|l| l["quantity"].as_u64().unwrap_or(0) * l["unit_price_minor"].as_u64().unwrap_or(0)).sum();
    let currency = ["EUR", "USD", "GBP"][dice.below(3) as usize];
    let body = json!({"customer_id": format!("c-{}", dice.below(10_000)), "currency": currency,
                      "lines": lines, "ship_to": {"country": "DE", "postal_code": "10115"}});
    let placed = send(shared, "/orders", &body).await?;
    let Some(order_id) = placed.get("order_id").and_then(Value::as_str).map(String::from) else {
        return Some(());
    };
    shared.orders.fetch_add(1, Ordering::Relaxed);
    let order = format!("/orders/{order_id}");
    if let Some(base) = &shared.config.decisions {
        match decision(shared, base, &order_id).await.as_deref() {
            Some("confirmed" | "paid") => shared.confirmed.fetch_add(1, Ordering::Relaxed),
            Some("rejected") => {
                shared.rejected_orders.fetch_add(1, Ordering::Relaxed);
                return Some(());
            }
            _ => return Some(()),
        };
        if dice.percent(5) {
            shared.left_unpaid.fetch_add(1, Ordering::Relaxed);
            return Some(());
        }
    }
    if dice.percent(10) {
        send(shared, &format!("{order}/cancel"), &json!({"reason": "changed mind"})).await?;
        return Some(());
    }
    let payment =
        |status: &str| json!({"status": status, "amount_minor": total, "provider_ref": format!("psp-{order_id}")});
    send(shared, &format!("{order}/payments"), &payment("authorized")).await?;
    if dice.percent(5) {
        send(shared, &format!("{order}/payments"), &payment("failed")).await?;
        send(shared, &format!("{order}/cancel"), &json!({})).await?;
        return Some(());
    }
    send(shared, &format!("{order}/payments"), &payment("captured")).await?;
    for status in ["packed", "shipped", "delivered"] {
        let shipment = json!({"status": status, "warehouse": "BER-1", "carrier": "DHL"});
        send(shared, &format!("{order}/shipments"), &shipment).await?;
    }
    if dice.percent(3) {
        send(shared, &format!("{order}/payments"), &payment("refunded")).await?;
    }
    Some(())
}

/// Waits for a rate token, sends, records. `None` when the run is over.
async fn send(shared: &Shared, path: &str, body: &Value) -> Option<Value> {
    shared.tokens.acquire().await.ok()?.forget();
    if Instant::now() >= shared.deadline {
        return None;
    }
    let started = Instant::now();
    let url = format!("{}{}", shared.config.target.trim_end_matches('/'), path);
    match post_json(&shared.client, &url, body, None).await {
        Ok((202, answer)) => {
            shared.accepted.fetch_add(1, Ordering::Relaxed);
            shared.latencies.lock().unwrap_or_else(|e| e.into_inner()).push(started.elapsed());
            Some(answer)
        }
        Ok((status, answer)) => {
            tracing::debug!(status, %answer, path, "Request not accepted.");
            shared.rejected.fetch_add(1, Ordering::Relaxed);
            Some(Value::Null)
        }
        Err(e) => {
            tracing::debug!(error = &e as &dyn std::error::Error, path, "Request failed.");
            shared.failed.fetch_add(1, Ordering::Relaxed);
            Some(Value::Null)
        }
    }
}
