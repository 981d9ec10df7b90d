//! The names the contract fixes besides the schemas: the topics, which kind of event goes
//! to which, and the record header that names who published an event.
use crate::event::EventKind;

/// The topic every order event is appended to, and the processes' decisions.
pub const ORDERS_TOPIC: &str = "orders";

/// The stock topic's name for an orders topic: `<orders>-stock`. The order process
/// repartitions each order's lines onto it by SKU, so one SKU's requests are decided in
/// log order whichever partitions their orders live on.
pub fn stock_topic(orders_topic: &str) -> String {
    format!("{orders_topic}-stock")
}

/// Whether events of `kind` are appended to the stock topic (keyed `sku:<SKU>`) rather than
/// the orders topic: the stock requests, and the stock adjustments. The checkout appends an
/// adjustment straight there, so one acknowledged before an order is placed precedes, in
/// its SKU's one partition, every stock request that order causes: the stock group decides
/// them in the order the caller saw (restock, then sell). The one rule every publisher,
/// the processes and the AsyncAPI document follow.
pub fn on_stock_topic(kind: EventKind) -> bool {
    matches!(kind, EventKind::StockRequested | EventKind::StockAdjusted)
}

/// The topic events of `kind` go to in a pipeline on `orders_topic`.
pub fn topic_of(kind: EventKind, orders_topic: &str) -> String {
    if on_stock_topic(kind) {
        stock_topic(orders_topic)
    } else {
        orders_topic.to_string()
    }
}

/// The record header naming the principal that published an event (the checkout sets it
/// from the caller's credentials). A header, not a field of the Avro envelope, so every
/// schema and every reader of the payload is unchanged; readers treat a missing or
/// unreadable header as "unknown publisher", since producers we did not write may send
/// straight to the topic.
pub const PRINCIPAL_HEADER: &str = "orderflow-principal";

/// The longest principal name: it travels in every event's headers.
pub const MAX_PRINCIPAL_LEN: usize = 128;

/// A principal name is 1 to [`MAX_PRINCIPAL_LEN`] visible ASCII characters, so it reads
/// unambiguously in logs, headers and the timeline.
pub fn valid_principal_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_PRINCIPAL_LEN && name.bytes().all(|b| b.is_ascii_graphic())
}

/// The publisher a record's [`PRINCIPAL_HEADER`] names, if it names one validly (a foreign
/// producer may send anything there, or nothing).
pub fn principal_of_header(value: Option<&[u8]>) -> Option<String> {
    let name = std::str::from_utf8(value?).ok()?;
    valid_principal_name(name).then(|| name.to_string())
}

/// The principals the processes publish their decisions as. Reserved: no credential from
/// outside (an identity provider's token) may name itself one of them.
pub const ORDER_PROCESS_PRINCIPAL: &str = "order-process";
pub const STOCK_PRINCIPAL: &str = "stock";
pub const DECIDING_PRINCIPALS: [&str; 2] = [ORDER_PROCESS_PRINCIPAL, STOCK_PRINCIPAL];
