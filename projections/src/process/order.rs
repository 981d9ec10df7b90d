//! The order process: one state per order, changed by the order's events, the stock
//! group's decisions and the payment timer.
//!
//! pending ─(every line reserved)→ confirmed ─(captured)→ paid → shipped → delivered
//! pending ─(a line rejected)→ rejected (reserved lines released)
//! confirmed ─(timer, not captured)→ expired (released)
//! pending/confirmed/paid ─(cancelled)→ cancelled (released; refund if captured)
//! Money captured for an order that ends rejected, expired or cancelled is asked back
//! (`RefundRequested`). A shipment of an order that is not paid is rejected, not applied.
use std::collections::BTreeMap;

use schemas::{
    Envelope, Event, EventKind, OrderConfirmed, OrderExpired, OrderRejected, RefundRequested, StockAction,
    StockDecided, StockOutcome, StockRequested,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{caused_by, derived_id, Context};
use crate::model::Rejection;

status_enum! {
    /// Where an order stands in the process; the `order_status` view shows it.
    OrderStatus {
        Pending => "pending",
        Confirmed => "confirmed",
        Paid => "paid",
        Shipped => "shipped",
        Delivered => "delivered",
        Rejected => "rejected",
        Expired => "expired",
        Cancelled => "cancelled",
    }
}

impl OrderStatus {
    /// Whether the order will never be fulfilled: its stock goes back, its money too.
    pub fn is_dead(self) -> bool {
        matches!(self, OrderStatus::Rejected | OrderStatus::Expired | OrderStatus::Cancelled)
    }

    /// Whether the process has decided the order (anything but pending).
    pub fn is_decided(self) -> bool {
        self != OrderStatus::Pending
    }
}

status_enum! {
    /// What became of one SKU's units of an order.
    LineStatus {
        Requested => "requested",
        Reserved => "reserved",
        Rejected => "rejected",
        Releasing => "releasing",
        Released => "released",
        Shipping => "shipping",
        Shipped => "shipped",
    }
}

/// One SKU of an order (its lines of that SKU summed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub sku: String,
    pub quantity: i32,
    pub status: LineStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderFlow {
    pub order_id: Uuid,
    pub status: OrderStatus,
    /// Why it was rejected, expired or cancelled.
    pub reason: Option<String>,
    pub correlation_id: Uuid,
    pub lines: Vec<Line>,
    pub captured_minor: i64,
    pub refund_requested_minor: i64,
    /// When the payment timer fires (microseconds), while it runs.
    pub payment_due_us: Option<i64>,
    pub updated_at_us: i64,
}

/// What the process reacts to.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    Event(&'a Event),
    /// The order's payment timer is due.
    PaymentDue,
}

/// The order's next state (if it changed) and the events to publish.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    pub state: Option<OrderFlow>,
    pub emit: Vec<Event>,
    /// The process refused the event by its rules (a shipment of an unpaid order, a
    /// cancellation after shipping): not applied, recorded, and the order goes on. Unlike
    /// a `Rejection` (an event that cannot belong where it is), it holds nothing back.
    pub refused: Option<String>,
}

impl Decision {
    fn refused(reason: String) -> Self {
        Decision { refused: Some(reason), ..Decision::default() }
    }
}

/// The events the order process reads from the orders topic. Its own decisions come back
/// on the topic too; it ignores them.
pub fn wants(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::OrderPlaced
            | EventKind::OrderCancelled
            | EventKind::PaymentCaptured
            | EventKind::ShipmentPacked
            | EventKind::ShipmentShipped
            | EventKind::ShipmentDelivered
            | EventKind::StockDecided
            | EventKind::StockAdjusted
    )
}

/// The envelope of the payment timer of an order: a fixed id per order, so a timer
/// decided twice emits the same events.
fn timer_envelope(flow: &OrderFlow, ctx: &Context) -> Envelope {
    Envelope {
        event_id: derived_id(flow.order_id, "payment-due"),
        occurred_at: ctx.now,
        correlation_id: flow.correlation_id,
        causation_id: None,
    }
}

/// Builds the events one decision emits, all caused by the same input.
struct Emitter<'a> {
    cause: &'a Envelope,
    ctx: &'a Context,
    order_id: Uuid,
    events: Vec<Event>,
}

impl Emitter<'_> {
    fn stock(&mut self, line: &Line, action: StockAction) {
        let what = format!("{action:?}:{}", line.sku);
        self.events.push(Event::StockRequested(StockRequested {
            envelope: caused_by(self.cause, &what, self.ctx.now),
            order_id: self.order_id,
            sku: line.sku.clone(),
            quantity: line.quantity,
            action,
        }));
    }

    fn confirmed(&mut self) {
        let envelope = caused_by(self.cause, "confirmed", self.ctx.now);
        self.events.push(Event::OrderConfirmed(OrderConfirmed { envelope, order_id: self.order_id }));
    }

    fn refund(&mut self, amount_minor: i64, reason: String) {
        let envelope = caused_by(self.cause, "refund", self.ctx.now);
        self.events.push(Event::RefundRequested(RefundRequested {
            envelope,
            amount_minor,
            reason,
            order_id: self.order_id,
        }));
    }
}

/// Ends an order that will not be fulfilled: releases what is reserved, asks back what was
/// captured and not yet asked back.
fn end(flow: &mut OrderFlow, status: OrderStatus, reason: String, out: &mut Emitter<'_>) {
    flow.status = status;
    flow.reason = Some(reason.clone());
    flow.payment_due_us = None;
    for line in &mut flow.lines {
        if line.status == LineStatus::Reserved {
            out.stock(line, StockAction::Release);
            line.status = LineStatus::Releasing;
        }
    }
    refund_uncovered(flow, &reason, out);
}

fn refund_uncovered(flow: &mut OrderFlow, reason: &str, out: &mut Emitter<'_>) {
    let owed = flow.captured_minor - flow.refund_requested_minor;
    if owed > 0 {
        out.refund(owed, format!("{reason}; {owed} (minor units) were captured"));
        flow.refund_requested_minor += owed;
    }
}

/// Confirms a pending order once every line is reserved; a captured order is paid at once.
fn confirm_if_complete(flow: &mut OrderFlow, out: &mut Emitter<'_>) {
    if flow.status != OrderStatus::Pending || flow.lines.iter().any(|l| l.status != LineStatus::Reserved) {
        return;
    }
    out.confirmed();
    if flow.captured_minor > 0 {
        flow.status = OrderStatus::Paid;
    } else {
        flow.status = OrderStatus::Confirmed;
        let timeout = chrono::Duration::from_std(out.ctx.payment_timeout).unwrap_or(chrono::Duration::MAX);
        flow.payment_due_us = out.ctx.now.checked_add_signed(timeout).map(|t| t.timestamp_micros()).or(Some(i64::MAX));
    }
}

fn sum_lines(lines: &[schemas::OrderLine]) -> Result<Vec<Line>, Rejection> {
    let mut by_sku: BTreeMap<&str, i32> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for line in lines {
        if line.quantity <= 0 {
            return Err(Rejection::new(format!("line of {} has quantity {}", line.sku, line.quantity)));
        }
        let sum = by_sku.entry(&line.sku).or_insert_with(|| {
            order.push(&line.sku);
            0
        });
        *sum = sum
            .checked_add(line.quantity)
            .ok_or_else(|| Rejection::new(format!("quantity of {} overflows", line.sku)))?;
    }
    Ok(order
        .into_iter()
        .map(|sku| Line { sku: sku.to_string(), quantity: by_sku[sku], status: LineStatus::Requested })
        .collect())
}

fn payment_due_text(ctx: &Context) -> String {
    format!("{:?}", ctx.payment_timeout)
}

/// Decides what `input` does to the order in `state`.
pub fn decide(state: Option<&OrderFlow>, input: Input<'_>, ctx: &Context) -> Result<Decision, Rejection> {
    let event = match input {
        Input::Event(event) => event,
        Input::PaymentDue => return Ok(payment_due(state, ctx)),
    };
    // Stock adjustments belong to the stock group. The checkout appends them to the stock
    // topic itself; one found here (from an earlier checkout, or a service publishing
    // straight to Kafka by the earlier contract) is repartitioned onto it unchanged (same
    // event id, so a copy that also arrived directly is dropped there).
    if let Event::StockAdjusted(_) = event {
        return Ok(Decision { emit: vec![event.clone()], ..Decision::default() });
    }
    if let Event::StockDecided(StockDecided { order_id: None, .. }) = event {
        return Ok(Decision::default());
    }
    let envelope = event.envelope();
    let Some(current) = state else {
        let Event::OrderPlaced(placed) = event else {
            return Err(Rejection::new(format!("{:?} for an order the process does not know", event.kind())));
        };
        let mut flow = OrderFlow {
            order_id: placed.order_id,
            status: OrderStatus::Pending,
            reason: None,
            correlation_id: envelope.correlation_id,
            lines: sum_lines(&placed.lines)?,
            captured_minor: 0,
            refund_requested_minor: 0,
            payment_due_us: None,
            updated_at_us: ctx.now.timestamp_micros(),
        };
        let mut out = Emitter { cause: envelope, ctx, order_id: flow.order_id, events: Vec::new() };
        for line in &flow.lines {
            out.stock(line, StockAction::Reserve);
        }
        confirm_if_complete(&mut flow, &mut out);
        return Ok(Decision { state: Some(flow), emit: out.events, refused: None });
    };
    let mut flow = current.clone();
    let mut out = Emitter { cause: envelope, ctx, order_id: flow.order_id, events: Vec::new() };
    match event {
        Event::OrderPlaced(_) => return Err(Rejection::new("order placed twice with different event ids")),
        Event::StockDecided(decided) => on_stock_decision(&mut flow, decided, &mut out)?,
        Event::PaymentCaptured(payment) => {
            flow.captured_minor = flow.captured_minor.saturating_add(payment.amount_minor);
            match flow.status {
                OrderStatus::Confirmed => {
                    flow.status = OrderStatus::Paid;
                    flow.payment_due_us = None;
                }
                status if status.is_dead() => {
                    let reason = format!("captured after the order was {status}");
                    refund_uncovered(&mut flow, &reason, &mut out);
                }
                _ => {}
            }
        }
        Event::OrderCancelled(cancelled) => match flow.status {
            OrderStatus::Pending | OrderStatus::Confirmed | OrderStatus::Paid => {
                let reason = format!("cancelled: {}", cancelled.reason.as_deref().unwrap_or("no reason given"));
                end(&mut flow, OrderStatus::Cancelled, reason, &mut out);
            }
            status if status.is_dead() => return Ok(Decision::default()),
            status => return Ok(Decision::refused(format!("cancelled after the order was {status}"))),
        },
        Event::ShipmentPacked(_) | Event::ShipmentShipped(_) | Event::ShipmentDelivered(_) => {
            if let Err(reason) = on_shipment(&mut flow, event, &mut out) {
                return Ok(Decision::refused(reason));
            }
        }
        other => return Err(Rejection::new(format!("the order process does not read {:?}", other.kind()))),
    }
    if flow == *current && out.events.is_empty() {
        return Ok(Decision::default());
    }
    flow.updated_at_us = ctx.now.timestamp_micros();
    Ok(Decision { state: Some(flow), emit: out.events, refused: None })
}

fn on_stock_decision(flow: &mut OrderFlow, decided: &StockDecided, out: &mut Emitter<'_>) -> Result<(), Rejection> {
    let Some(index) = flow.lines.iter().position(|l| l.sku == decided.sku) else {
        return Err(Rejection::new(format!("a stock decision for {}, which the order does not hold", decided.sku)));
    };
    let status = flow.lines[index].status;
    match (decided.outcome, status) {
        (StockOutcome::Reserved, LineStatus::Requested) if flow.status.is_dead() => {
            // Reserved after the order ended (another line was rejected first, or it was
            // cancelled): give the units straight back.
            out.stock(&flow.lines[index], StockAction::Release);
            flow.lines[index].status = LineStatus::Releasing;
        }
        (StockOutcome::Reserved, LineStatus::Requested) => {
            flow.lines[index].status = LineStatus::Reserved;
            confirm_if_complete(flow, out);
        }
        (StockOutcome::Rejected, LineStatus::Requested) => {
            flow.lines[index].status = LineStatus::Rejected;
            if flow.status == OrderStatus::Pending {
                let reason = format!(
                    "out of stock: {} ({} requested, {} available)",
                    decided.sku,
                    decided.quantity,
                    (decided.on_hand - decided.reserved).max(0)
                );
                out.events.push(Event::OrderRejected(OrderRejected {
                    envelope: caused_by(out.cause, "rejected", out.ctx.now),
                    reason: reason.clone(),
                    skus: vec![decided.sku.clone()],
                    order_id: flow.order_id,
                }));
                end(flow, OrderStatus::Rejected, reason, out);
            }
        }
        (StockOutcome::Released, LineStatus::Releasing | LineStatus::Reserved) => {
            flow.lines[index].status = LineStatus::Released
        }
        (StockOutcome::Shipped, LineStatus::Shipping | LineStatus::Reserved) => {
            flow.lines[index].status = LineStatus::Shipped
        }
        // A copy of a decision already taken into account, or one that no longer matters.
        _ => {}
    }
    Ok(())
}

/// Applies a shipment event, or says why the process refuses it.
fn on_shipment(flow: &mut OrderFlow, event: &Event, out: &mut Emitter<'_>) -> Result<(), String> {
    let refuse = |flow: &OrderFlow| format!("{:?} refused: the order is {}, not paid", event.kind(), flow.status);
    match (event, flow.status) {
        (Event::ShipmentPacked(_), OrderStatus::Paid) => {}
        (Event::ShipmentShipped(_), OrderStatus::Paid) => {
            flow.status = OrderStatus::Shipped;
            for line in &mut flow.lines {
                if line.status == LineStatus::Reserved {
                    out.stock(line, StockAction::Ship);
                    line.status = LineStatus::Shipping;
                }
            }
        }
        (Event::ShipmentDelivered(_), OrderStatus::Shipped) => flow.status = OrderStatus::Delivered,
        (Event::ShipmentPacked(_) | Event::ShipmentShipped(_), OrderStatus::Shipped | OrderStatus::Delivered) => {}
        (Event::ShipmentDelivered(_), OrderStatus::Delivered) => {}
        _ => return Err(refuse(flow)),
    }
    Ok(())
}

fn payment_due(state: Option<&OrderFlow>, ctx: &Context) -> Decision {
    let Some(current) = state else { return Decision::default() };
    let mut flow = current.clone();
    let cause = timer_envelope(&flow, ctx);
    let mut out = Emitter { cause: &cause, ctx, order_id: flow.order_id, events: Vec::new() };
    let due = flow.payment_due_us.is_some_and(|due| due <= ctx.now.timestamp_micros());
    if flow.status == OrderStatus::Confirmed && due {
        let reason = format!("not paid within {}", payment_due_text(ctx));
        out.events.push(Event::OrderExpired(OrderExpired {
            envelope: caused_by(&cause, "expired", ctx.now),
            reason: reason.clone(),
            order_id: flow.order_id,
        }));
        end(&mut flow, OrderStatus::Expired, reason, &mut out);
    } else if flow.status != OrderStatus::Confirmed && flow.payment_due_us.is_some() {
        flow.payment_due_us = None;
    } else {
        // Not due yet, or no timer: nothing changes.
        return Decision::default();
    }
    flow.updated_at_us = ctx.now.timestamp_micros();
    Decision { state: Some(flow), emit: out.events, refused: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use schemas::samples::{sample, SAMPLE_ORDER_ID};
    use schemas::{PaymentFact, StockAdjusted};
    use std::time::Duration;

    fn ctx(at_s: i64) -> Context {
        Context {
            now: Utc.timestamp_opt(1_800_000_000 + at_s, 0).single().expect("time"),
            payment_timeout: Duration::from_secs(60),
        }
    }

    fn decided(sku: &str, outcome: StockOutcome, quantity: i32, n: u128) -> Event {
        let Event::StockDecided(mut d) = sample(EventKind::StockDecided) else { unreachable!() };
        d.envelope.event_id = Uuid::from_u128(0xd000 + n);
        d.sku = sku.into();
        d.outcome = outcome;
        d.quantity = quantity;
        d.on_hand = 5;
        d.reserved = 5;
        Event::StockDecided(d)
    }

    fn apply(state: Option<&OrderFlow>, event: &Event, at_s: i64) -> Decision {
        decide(state, Input::Event(event), &ctx(at_s)).expect("decides")
    }

    fn placed() -> (OrderFlow, Vec<Event>) {
        let d = apply(None, &sample(EventKind::OrderPlaced), 0);
        (d.state.expect("state"), d.emit)
    }

    fn requests(events: &[Event]) -> Vec<(String, i32, StockAction)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::StockRequested(r) => Some((r.sku.clone(), r.quantity, r.action)),
                _ => None,
            })
            .collect()
    }

    fn confirmed() -> OrderFlow {
        let (flow, _) = placed();
        let one = apply(Some(&flow), &decided("SKU-1", StockOutcome::Reserved, 2, 1), 1).state.expect("state");
        apply(Some(&one), &decided("SKU-2", StockOutcome::Reserved, 1, 2), 2).state.expect("state")
    }

    fn captured() -> Event {
        Event::PaymentCaptured(PaymentFact { amount_minor: 4_497, ..payment() })
    }

    fn payment() -> PaymentFact {
        let Event::PaymentCaptured(p) = sample(EventKind::PaymentCaptured) else { unreachable!() };
        p
    }

    #[test]
    fn a_placed_order_asks_for_each_skus_units_and_waits() {
        let (flow, emit) = placed();
        assert_eq!(flow.status, OrderStatus::Pending);
        assert_eq!(
            requests(&emit),
            vec![("SKU-1".into(), 2, StockAction::Reserve), ("SKU-2".into(), 1, StockAction::Reserve)]
        );
        assert!(emit
            .iter()
            .all(|e| e.envelope().causation_id == Some(sample(EventKind::OrderPlaced).envelope().event_id)));
    }

    #[test]
    fn lines_of_one_sku_are_asked_for_together() {
        let Event::OrderPlaced(mut e) = sample(EventKind::OrderPlaced) else { unreachable!() };
        e.lines[1].sku = "SKU-1".into();
        let d = apply(None, &Event::OrderPlaced(e), 0);
        assert_eq!(requests(&d.emit), vec![("SKU-1".into(), 3, StockAction::Reserve)]);
    }

    #[test]
    fn every_line_reserved_confirms_and_starts_the_payment_clock() {
        let (flow, _) = placed();
        let one = apply(Some(&flow), &decided("SKU-1", StockOutcome::Reserved, 2, 1), 1);
        let one = one.state.expect("state");
        assert_eq!(one.status, OrderStatus::Pending);
        let both = apply(Some(&one), &decided("SKU-2", StockOutcome::Reserved, 1, 2), 2);
        let state = both.state.expect("state");
        assert_eq!(state.status, OrderStatus::Confirmed);
        assert_eq!(state.payment_due_us, Some(ctx(62).now.timestamp_micros()));
        assert!(matches!(both.emit.as_slice(), [Event::OrderConfirmed(_)]), "{:?}", both.emit);
    }

    #[test]
    fn one_rejected_line_rejects_the_order_and_releases_the_reserved_ones() {
        let (flow, _) = placed();
        let one = apply(Some(&flow), &decided("SKU-1", StockOutcome::Reserved, 2, 1), 1).state.expect("state");
        let d = apply(Some(&one), &decided("SKU-2", StockOutcome::Rejected, 1, 2), 2);
        let state = d.state.expect("state");
        assert_eq!(state.status, OrderStatus::Rejected);
        assert!(state.reason.as_deref().unwrap_or_default().contains("out of stock: SKU-2"), "{:?}", state.reason);
        let Some(Event::OrderRejected(rejected)) = d.emit.first() else { panic!("{:?}", d.emit) };
        assert_eq!(rejected.skus, vec!["SKU-2".to_string()]);
        assert_eq!(requests(&d.emit), vec![("SKU-1".into(), 2, StockAction::Release)]);
    }

    #[test]
    fn a_line_reserved_after_the_order_was_rejected_is_released_at_once() {
        let (flow, _) = placed();
        let rejected = apply(Some(&flow), &decided("SKU-2", StockOutcome::Rejected, 1, 1), 1).state.expect("state");
        let d = apply(Some(&rejected), &decided("SKU-1", StockOutcome::Reserved, 2, 2), 2);
        assert_eq!(requests(&d.emit), vec![("SKU-1".into(), 2, StockAction::Release)]);
        assert_eq!(d.state.expect("state").status, OrderStatus::Rejected);
    }

    #[test]
    fn an_unpaid_confirmed_order_expires_when_its_timer_is_due_and_not_before() {
        let flow = confirmed();
        assert_eq!(decide(Some(&flow), Input::PaymentDue, &ctx(30)).expect("early"), Decision::default());
        let d = decide(Some(&flow), Input::PaymentDue, &ctx(62)).expect("due");
        let state = d.state.expect("state");
        assert_eq!(state.status, OrderStatus::Expired);
        assert_eq!(state.payment_due_us, None);
        assert!(matches!(d.emit.first(), Some(Event::OrderExpired(_))));
        assert_eq!(
            requests(&d.emit),
            vec![("SKU-1".into(), 2, StockAction::Release), ("SKU-2".into(), 1, StockAction::Release)]
        );
        // The same timer decided again (a crash before commit) emits the same event ids.
        let again = decide(Some(&flow), Input::PaymentDue, &ctx(70)).expect("due");
        let ids = |e: &[Event]| e.iter().map(|e| e.envelope().event_id).collect::<Vec<_>>();
        assert_eq!(ids(&again.emit), ids(&d.emit));
    }

    #[test]
    fn a_paid_order_does_not_expire() {
        let paid = apply(Some(&confirmed()), &captured(), 10).state.expect("state");
        assert_eq!(paid.status, OrderStatus::Paid);
        assert_eq!(paid.payment_due_us, None);
        let d = decide(Some(&paid), Input::PaymentDue, &ctx(100)).expect("timer");
        assert_eq!(d, Decision::default());
    }

    #[test]
    fn captured_before_confirmation_makes_the_order_paid_when_confirmed() {
        let (flow, _) = placed();
        let one = apply(Some(&flow), &captured(), 1).state.expect("state");
        let one = apply(Some(&one), &decided("SKU-1", StockOutcome::Reserved, 2, 1), 2).state.expect("state");
        let both = apply(Some(&one), &decided("SKU-2", StockOutcome::Reserved, 1, 2), 3).state.expect("state");
        assert_eq!(both.status, OrderStatus::Paid);
        assert_eq!(both.payment_due_us, None);
    }

    #[test]
    fn cancelled_after_capture_releases_and_asks_for_a_refund_once() {
        let paid = apply(Some(&confirmed()), &captured(), 10).state.expect("state");
        let d = apply(Some(&paid), &sample(EventKind::OrderCancelled), 11);
        let state = d.state.expect("state");
        assert_eq!(state.status, OrderStatus::Cancelled);
        let refunds: Vec<i64> = d
            .emit
            .iter()
            .filter_map(|e| if let Event::RefundRequested(r) = e { Some(r.amount_minor) } else { None })
            .collect();
        assert_eq!(refunds, vec![4_497]);
        assert_eq!(requests(&d.emit).len(), 2);
        let again = apply(Some(&state), &sample(EventKind::OrderCancelled), 12);
        assert_eq!(again, Decision::default(), "a second cancel changes nothing");
    }

    #[test]
    fn money_captured_after_expiry_is_asked_back() {
        let expired = decide(Some(&confirmed()), Input::PaymentDue, &ctx(62)).expect("due").state.expect("state");
        let d = apply(Some(&expired), &captured(), 70);
        assert!(matches!(d.emit.as_slice(), [Event::RefundRequested(r)] if r.amount_minor == 4_497), "{:?}", d.emit);
        assert_eq!(d.state.expect("state").status, OrderStatus::Expired);
    }

    #[test]
    fn a_shipment_of_an_unpaid_order_is_rejected_and_of_a_paid_one_ships_the_reserved_units() {
        let flow = confirmed();
        let early = decide(Some(&flow), Input::Event(&sample(EventKind::ShipmentShipped)), &ctx(5)).expect("decides");
        assert!(early.refused.as_deref().unwrap_or_default().contains("not paid"), "{early:?}");
        assert_eq!((early.state, early.emit.len()), (None, 0), "refused: nothing changes");
        let paid = apply(Some(&flow), &captured(), 10).state.expect("state");
        let d = apply(Some(&paid), &sample(EventKind::ShipmentShipped), 11);
        assert_eq!(
            requests(&d.emit),
            vec![("SKU-1".into(), 2, StockAction::Ship), ("SKU-2".into(), 1, StockAction::Ship)]
        );
        let shipped = d.state.expect("state");
        assert_eq!(shipped.status, OrderStatus::Shipped);
        let delivered = apply(Some(&shipped), &sample(EventKind::ShipmentDelivered), 12).state.expect("state");
        assert_eq!(delivered.status, OrderStatus::Delivered);
        let late =
            decide(Some(&delivered), Input::Event(&sample(EventKind::OrderCancelled)), &ctx(13)).expect("decides");
        assert!(late.refused.is_some() && late.state.is_none(), "{late:?}");
    }

    #[test]
    fn stock_adjustments_are_forwarded_unchanged_and_unknown_orders_refused() {
        let adjusted = sample(EventKind::StockAdjusted);
        let d = apply(None, &adjusted, 0);
        assert_eq!(d.emit, vec![adjusted.clone()]);
        assert!(matches!(&d.emit[0], Event::StockAdjusted(StockAdjusted { .. })));
        assert!(decide(None, Input::Event(&captured()), &ctx(0)).is_err());
        assert_eq!(sample(EventKind::OrderPlaced).order_id(), Some(SAMPLE_ORDER_ID));
    }

    #[test]
    fn a_repeated_decision_changes_nothing() {
        let flow = confirmed();
        let d = apply(Some(&flow), &decided("SKU-1", StockOutcome::Reserved, 2, 9), 20);
        assert_eq!(d, Decision::default());
    }
}
