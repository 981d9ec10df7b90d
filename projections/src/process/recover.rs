//! The processes' state recovered from the log, emitting nothing that is already there.
//!
//! The decided state (stock levels and holds, order flows and their timers) is a fold of
//! the processes' inputs *and* of what they published. The inputs are replayed through
//! the same pure decisions the live groups take; wherever a decision's event is already on
//! the log, the log's copy is what counts:
//!
//! - its time is the decision's time, so a confirmed order's payment timer comes back due
//!   at its confirmation plus the timeout, and re-derived events are the same events;
//! - for the stock group, the levels of the decision with the highest version are the
//!   SKU's levels and its outcome is the hold: which of two inputs on different topics
//!   (an adjustment and a request) the live group decided first is what the log says, not
//!   what the replay's merge happens to guess;
//! - for the order process, an `OrderExpired` on the log is the payment timer having
//!   fired: it fires in the replay right after the order's confirmation, before any later
//!   input of the order. A capture or a cancellation decided before the timer would have
//!   kept the order from expiring, so none was, and nothing else changes a confirmed order.
//!
//! Decisions the replay takes that are *not* on the log are the old outbox's unpublished
//! tail (lost with the database): they are re-derived with the same ids (v5 of their
//! causes) and returned as `missing`, for the outbox. A reader that already has a copy
//! drops it by its id.
use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use schemas::Event;
use uuid::Uuid;

use super::order::{self, Input, OrderFlow, OrderStatus};
use super::stock::{self, Hold, SkuStock};
use super::{derived_id, Context};

/// One input of a process as the log holds it.
#[derive(Debug, Clone)]
pub struct LoggedInput {
    pub partition: i32,
    pub timestamp_ms: i64,
    pub event: Event,
}

/// Merges each partition's inputs from several topics into one sequence: partition by
/// partition, by record time (a stable sort, so one topic's records keep their log order).
/// The live member interleaves co-partitioned topics as their records arrive, which is
/// close to their append order; where the interleaving matters, the log's decisions decide.
pub fn merge_by_time(mut inputs: Vec<LoggedInput>) -> Vec<LoggedInput> {
    inputs.sort_by_key(|i| (i.partition, i.timestamp_ms));
    inputs
}

/// What the processes published, by event id: the decisions, the stock requests and the
/// forwarded adjustments found on the log.
#[derive(Debug, Default)]
pub struct Published {
    events: HashMap<Uuid, Event>,
}

impl Published {
    pub fn insert(&mut self, event: Event) {
        self.events.insert(event.envelope().event_id, event);
    }

    fn get(&self, id: Uuid) -> Option<&Event> {
        self.events.get(&id)
    }

    fn contains(&self, id: Uuid) -> bool {
        self.events.contains_key(&id)
    }

    /// The time the first of `emitted` that is on the log was decided at.
    fn decided_at(&self, emitted: &[Event]) -> Option<DateTime<Utc>> {
        emitted.iter().find_map(|e| self.get(e.envelope().event_id)).map(|e| e.envelope().occurred_at)
    }
}

/// The stock group's state, recovered.
#[derive(Debug, Default, PartialEq)]
pub struct StockState {
    pub skus: BTreeMap<String, SkuStock>,
    pub holds: BTreeMap<(String, Uuid), Hold>,
    /// Decisions taken in the replay and not found on the log.
    pub missing: Vec<Event>,
    /// Input event ids applied (the group's dedupe memory).
    pub applied: Vec<Uuid>,
}

fn ctx_at(now: DateTime<Utc>, payment_timeout: std::time::Duration) -> Context {
    Context { now, payment_timeout }
}

fn record_time(input: &LoggedInput) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(input.timestamp_ms).unwrap_or_default()
}

/// Recovers the stock group's state from its inputs (merged, see [`merge_by_time`]) and
/// what is published.
pub fn recover_stock(inputs: &[LoggedInput], published: &Published) -> StockState {
    let mut state = StockState::default();
    let mut seen = HashSet::new();
    for input in inputs {
        let event = &input.event;
        let Some(sku) = stock::sku_of(event).map(str::to_string) else { continue };
        if !stock::wants(event.kind()) || !seen.insert(event.envelope().event_id) {
            continue;
        }
        let current = state.skus.get(&sku).cloned().unwrap_or_else(|| SkuStock::empty(&sku));
        let hold_key = stock::hold_id(event).map(|id| (sku.clone(), id));
        let hold = hold_key.as_ref().and_then(|k| state.holds.get(k));
        let id = derived_id(event.envelope().event_id, "decided");
        let now = published.get(id).map_or_else(|| record_time(input), |e| e.envelope().occurred_at);
        let Ok(decision) = stock::decide(&current, hold, event, &ctx_at(now, std::time::Duration::ZERO)) else {
            // Refused by the live group as well (a dead letter there): nothing changes.
            continue;
        };
        state.applied.push(event.envelope().event_id);
        match published.get(id) {
            Some(Event::StockDecided(logged)) => {
                if logged.version > current.version {
                    let levels = SkuStock {
                        sku: sku.clone(),
                        on_hand: logged.on_hand,
                        reserved: logged.reserved,
                        shipped: logged.shipped,
                        version: logged.version,
                    };
                    state.skus.insert(sku.clone(), levels);
                }
                if let Some(hold) = stock::hold_decided(event, logged) {
                    state.holds.insert((sku.clone(), hold.order_id), hold);
                }
            }
            _ => {
                if let Some(next) = decision.sku {
                    state.skus.insert(sku.clone(), next);
                }
                if let Some(hold) = decision.hold {
                    state.holds.insert((hold.sku.clone(), hold.order_id), hold);
                }
                state.missing.extend(decision.emit);
            }
        }
    }
    state
}

/// The order process's state, recovered.
#[derive(Debug, Default, PartialEq)]
pub struct OrdersState {
    /// Each order's flow and the partition its events are on.
    pub flows: BTreeMap<Uuid, (OrderFlow, i32)>,
    pub missing: Vec<Event>,
    pub applied: Vec<Uuid>,
}

impl OrdersState {
    fn apply(&mut self, decision: order::Decision, partition: i32, published: &Published) {
        if let Some(flow) = decision.state {
            let partition = self.flows.get(&flow.order_id).map_or(partition, |(_, p)| *p);
            self.flows.insert(flow.order_id, (flow, partition));
        }
        self.missing.extend(decision.emit.into_iter().filter(|e| !published.contains(e.envelope().event_id)));
    }
}

/// Recovers the order process's state from its inputs (merged, see [`merge_by_time`]) and
/// what is published.
pub fn recover_orders(
    inputs: &[LoggedInput],
    published: &Published,
    payment_timeout: std::time::Duration,
) -> OrdersState {
    let mut state = OrdersState::default();
    let mut seen = HashSet::new();
    for input in inputs {
        let event = &input.event;
        if !order::wants(event.kind()) || !seen.insert(event.envelope().event_id) {
            continue;
        }
        let order_id = event.order_id();
        let current = order_id.and_then(|id| state.flows.get(&id)).map(|(flow, _)| flow);
        let first_try = ctx_at(record_time(input), payment_timeout);
        let Ok(decision) = order::decide(current, Input::Event(event), &first_try) else { continue };
        // Decided again at the time the log says it was, so its events and its timer are
        // the ones the live process wrote.
        let decision = match published.decided_at(&decision.emit) {
            Some(at) if at != first_try.now => {
                match order::decide(current, Input::Event(event), &ctx_at(at, payment_timeout)) {
                    Ok(again) => again,
                    Err(_) => decision,
                }
            }
            _ => decision,
        };
        if decision.refused.is_some() {
            continue;
        }
        state.applied.push(event.envelope().event_id);
        state.apply(decision, input.partition, published);
        let Some(id) = order_id else { continue };
        let Some((flow, _)) = state.flows.get(&id) else { continue };
        if flow.status != OrderStatus::Confirmed {
            continue;
        }
        let expired = derived_id(derived_id(id, "payment-due"), "expired");
        if let Some(logged) = published.get(expired) {
            let at = ctx_at(logged.envelope().occurred_at, payment_timeout);
            if let Ok(mut fired) = order::decide(Some(flow), Input::PaymentDue, &at) {
                // In the log's words (the timeout may have been another then).
                if let (Some(flow), Event::OrderExpired(logged)) = (fired.state.as_mut(), logged) {
                    flow.reason = Some(logged.reason.clone());
                }
                state.apply(fired, input.partition, published);
            }
        }
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::order::LineStatus;
    use crate::process::stock::HoldStatus;
    use chrono::TimeZone;
    use schemas::samples::sample;
    use schemas::{EventKind, PaymentFact, StockAction, StockOutcome, StockRequested};
    use std::time::Duration;

    const TIMEOUT: Duration = Duration::from_secs(60);

    fn at(s: i64) -> Context {
        Context { now: Utc.timestamp_opt(1_800_000_000 + s, 0).single().expect("time"), payment_timeout: TIMEOUT }
    }

    fn input(event: &Event, s: i64) -> LoggedInput {
        LoggedInput { partition: 0, timestamp_ms: at(s).now.timestamp_millis(), event: event.clone() }
    }

    fn request(order: u128, action: StockAction, quantity: i32) -> Event {
        let Event::StockRequested(mut r) = sample(EventKind::StockRequested) else { unreachable!() };
        r.order_id = Uuid::from_u128(order);
        r.envelope.event_id = Uuid::from_u128(0x5000 + order * 10 + action as u128);
        Event::StockRequested(StockRequested { action, quantity, ..r })
    }

    fn adjusted(delta: i32, n: u128) -> Event {
        let Event::StockAdjusted(mut a) = sample(EventKind::StockAdjusted) else { unreachable!() };
        a.envelope.event_id = Uuid::from_u128(0xa000 + n);
        a.sku = "SKU-1".into();
        a.delta = delta;
        Event::StockAdjusted(a)
    }

    type Holds = BTreeMap<(String, Uuid), Hold>;

    /// Runs the live stock group over `inputs` in this order; returns its state and
    /// everything it published.
    fn live_stock(inputs: &[(Event, i64)]) -> (BTreeMap<String, SkuStock>, Holds, Published) {
        let (mut skus, mut holds, mut published) = (BTreeMap::new(), BTreeMap::new(), Published::default());
        for (event, s) in inputs {
            let sku = stock::sku_of(event).expect("sku").to_string();
            let current = skus.get(&sku).cloned().unwrap_or_else(|| SkuStock::empty(&sku));
            let hold = stock::hold_id(event).and_then(|id| holds.get(&(sku.clone(), id)));
            let d = stock::decide(&current, hold, event, &at(*s)).expect("decides");
            if let Some(next) = d.sku {
                skus.insert(sku.clone(), next);
            }
            if let Some(h) = d.hold {
                holds.insert((h.sku.clone(), h.order_id), h);
            }
            d.emit.into_iter().for_each(|e| published.insert(e));
        }
        (skus, holds, published)
    }

    #[test]
    fn stock_recovered_from_a_complete_log_with_orders_and_transfers_equals_the_live_state_and_emits_nothing() {
        let mut dispatch = sample(EventKind::StockTransferRequested);
        if let Event::StockTransferRequested(t) = &mut dispatch {
            t.transfer_id = Uuid::from_u128(0x7b);
        }
        let inputs = vec![
            (adjusted(3, 1), 0),
            (request(1, StockAction::Reserve, 2), 1),
            (request(2, StockAction::Reserve, 2), 2),
            (request(3, StockAction::Release, 1), 3),
            (request(1, StockAction::Ship, 2), 4),
            (request(3, StockAction::Reserve, 1), 5),
            (sample(EventKind::StockTransferReceived), 6),
            (dispatch, 7),
        ];
        let (skus, holds, published) = live_stock(&inputs);
        let transfers: Vec<HoldStatus> =
            holds.values().filter(|h| h.sku == "SKU-1" && h.quantity == 4).map(|h| h.status).collect();
        assert_eq!(transfers.len(), 2, "{holds:?}");
        assert!(transfers.contains(&HoldStatus::Received) && transfers.contains(&HoldStatus::Dispatched));
        let logged: Vec<LoggedInput> = inputs.iter().map(|(e, s)| input(e, *s)).collect();
        let recovered = recover_stock(&merge_by_time(logged), &published);
        assert_eq!((recovered.skus, recovered.holds), (skus, holds));
        assert!(recovered.missing.is_empty(), "{:?}", recovered.missing);
    }

    #[test]
    fn stock_follows_the_logged_decisions_where_the_replay_would_order_two_topics_otherwise() {
        // Live: the reservation was decided before the restock (rejected); the restock's
        // record carries the earlier time, so the replay sees it first.
        let (reserve, restock) = (request(1, StockAction::Reserve, 2), adjusted(5, 1));
        let (skus, holds, published) = live_stock(&[(reserve.clone(), 1), (restock.clone(), 2)]);
        let recovered = recover_stock(&merge_by_time(vec![input(&reserve, 1), input(&restock, 0)]), &published);
        assert_eq!(holds.values().next().map(|h| h.status), Some(HoldStatus::Rejected));
        assert_eq!((recovered.skus, recovered.holds), (skus, holds));
        assert!(recovered.missing.is_empty());
    }

    #[test]
    fn a_stock_decision_missing_from_the_log_is_re_derived_with_its_id() {
        let inputs = [(adjusted(3, 1), 0), (request(1, StockAction::Reserve, 2), 1)];
        let (skus, _, mut published) = live_stock(&inputs);
        let lost = derived_id(inputs[1].0.envelope().event_id, "decided");
        published.events.remove(&lost);
        let logged: Vec<LoggedInput> = inputs.iter().map(|(e, s)| input(e, *s)).collect();
        let recovered = recover_stock(&logged, &published);
        assert_eq!(recovered.skus["SKU-1"].reserved, skus["SKU-1"].reserved);
        let ids: Vec<Uuid> = recovered.missing.iter().map(|e| e.envelope().event_id).collect();
        assert_eq!(ids, vec![lost]);
    }

    fn decided(order: &Event, sku: &str, quantity: i32, n: u128) -> Event {
        let Event::StockDecided(mut d) = sample(EventKind::StockDecided) else { unreachable!() };
        d.envelope.event_id = Uuid::from_u128(0xd000 + n);
        d.order_id = order.order_id();
        d.sku = sku.into();
        d.outcome = StockOutcome::Reserved;
        d.quantity = quantity;
        Event::StockDecided(d)
    }

    fn captured(n: u128) -> Event {
        let Event::PaymentCaptured(mut p) = sample(EventKind::PaymentCaptured) else { unreachable!() };
        p.envelope.event_id = Uuid::from_u128(0xc000 + n);
        Event::PaymentCaptured(PaymentFact { amount_minor: 4_497, ..p })
    }

    /// Runs the live order process: `Some(event)` at its second, `None` a timer firing.
    fn live_orders(inputs: &[(Option<Event>, i64)]) -> (Option<OrderFlow>, Published) {
        let (mut flow, mut published) = (None, Published::default());
        for (event, s) in inputs {
            let input = event.as_ref().map_or(Input::PaymentDue, Input::Event);
            let d = order::decide(flow.as_ref(), input, &at(*s)).expect("decides");
            if let Some(next) = d.state {
                flow = Some(next);
            }
            d.emit.into_iter().for_each(|e| published.insert(e));
        }
        (flow, published)
    }

    fn without_time(flow: &OrderFlow) -> OrderFlow {
        OrderFlow { updated_at_us: 0, ..flow.clone() }
    }

    #[test]
    fn a_confirmed_order_comes_back_with_its_timer_due_at_confirmation_plus_the_timeout() {
        let placed = sample(EventKind::OrderPlaced);
        let (one, two) = (decided(&placed, "SKU-1", 2, 1), decided(&placed, "SKU-2", 1, 2));
        // Decided a few seconds after each record was appended.
        let (flow, published) =
            live_orders(&[(Some(placed.clone()), 1), (Some(one.clone()), 5), (Some(two.clone()), 9)]);
        let logged = vec![input(&placed, 0), input(&one, 3), input(&two, 7)];
        let recovered = recover_orders(&merge_by_time(logged), &published, TIMEOUT);
        let flow = flow.expect("flow");
        assert_eq!(flow.payment_due_us, Some(at(69).now.timestamp_micros()));
        assert_eq!(without_time(&recovered.flows[&flow.order_id].0), without_time(&flow));
        assert!(recovered.missing.is_empty(), "{:?}", recovered.missing);
    }

    #[test]
    fn an_expiry_on_the_log_fires_before_a_capture_that_the_live_process_decided_after_it() {
        let placed = sample(EventKind::OrderPlaced);
        let (one, two, paid) = (decided(&placed, "SKU-1", 2, 1), decided(&placed, "SKU-2", 1, 2), captured(1));
        let (flow, published) = live_orders(&[
            (Some(placed.clone()), 0),
            (Some(one.clone()), 1),
            (Some(two.clone()), 2),
            (None, 63),
            (Some(paid.clone()), 64),
        ]);
        let flow = flow.expect("flow");
        assert_eq!((flow.status, flow.refund_requested_minor), (OrderStatus::Expired, 4_497));
        // The capture was appended before the expiry was published: the log alone would
        // have made the order paid.
        let logged = vec![input(&placed, 0), input(&one, 1), input(&two, 2), input(&paid, 62)];
        let recovered = recover_orders(&merge_by_time(logged), &published, TIMEOUT);
        assert_eq!(without_time(&recovered.flows[&flow.order_id].0), without_time(&flow));
        assert!(recovered.missing.is_empty(), "{:?}", recovered.missing);
    }

    #[test]
    fn an_order_whose_decisions_were_never_published_gets_them_re_derived() {
        let placed = sample(EventKind::OrderPlaced);
        let recovered = recover_orders(&[input(&placed, 0)], &Published::default(), TIMEOUT);
        let (flow, _) = &recovered.flows[&placed.order_id().expect("order")];
        assert!(flow.lines.iter().all(|l| l.status == LineStatus::Requested));
        let live = order::decide(None, Input::Event(&placed), &at(0)).expect("decides");
        let ids = |events: &[Event]| events.iter().map(|e| e.envelope().event_id).collect::<Vec<_>>();
        assert_eq!(ids(&recovered.missing), ids(&live.emit));
    }
}
