//! The names the contract fixes besides the schemas: the topics, which kind of event goes
//! to which, and the record header that names who published an event.
use crate::event::EventKind;

/// The orders topic's name unless configured otherwise: the callers' facts. The other
/// topics of a pipeline are named after it ([`TopicRole::name`]).
pub const ORDERS_TOPIC: &str = "orders";

/// The topics of a pipeline, each written by one kind of author, so that a reader can
/// trust a kind of event only from the topic whose ACL names that kind's author
/// ("authority follows the credential"): a record's header naming its publisher is
/// information, the topic it was read from is proof. Callers' facts and adjustments go to
/// topics the checkout and the services may write (`<orders>`, `<orders>-adjustments`: a
/// prefixed ACL on the orders topic's name covers both); stock requests and decisions to
/// topics only the process principals may write, named so that no prefix of the orders
/// topic's name covers them (`stock-requests-<orders>`, `decisions-<orders>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TopicRole {
    /// `<orders>`: every order's facts, keyed by order id. Written by callers.
    Orders,
    /// `<orders>-adjustments`: stock adjustments, keyed `sku:<SKU>`. Written by callers.
    Adjustments,
    /// `stock-requests-<orders>`: the order process's stock requests, keyed `sku:<SKU>`.
    /// Written by the order process only.
    Stock,
    /// `decisions-<orders>`: the processes' decisions, keyed by order id (`sku:<SKU>` for
    /// the decision on an adjustment). Written by the order process and the stock group only.
    Decisions,
}

impl TopicRole {
    pub const ALL: [TopicRole; 4] = [TopicRole::Orders, TopicRole::Adjustments, TopicRole::Stock, TopicRole::Decisions];

    /// This topic's name in a pipeline on `orders_topic`.
    pub fn name(self, orders_topic: &str) -> String {
        match self {
            TopicRole::Orders => orders_topic.to_string(),
            TopicRole::Adjustments => format!("{orders_topic}-adjustments"),
            TopicRole::Stock => format!("stock-requests-{orders_topic}"),
            TopicRole::Decisions => format!("decisions-{orders_topic}"),
        }
    }

    /// Which of the pipeline's topics `topic` is.
    pub fn of_topic(topic: &str, orders_topic: &str) -> Option<TopicRole> {
        TopicRole::ALL.into_iter().find(|role| role.name(orders_topic) == topic)
    }

    /// Which topic `topic` is by its name alone, for a reader that does not know the
    /// pipeline's orders topic (an operator retrying a dead letter); a name that is none of
    /// the others' is an orders topic, the least trusted. A region's copy
    /// (`<region>.<topic>`, see [`crate::Region::mirrored`]) is the topic it copies.
    pub fn by_name(topic: &str) -> TopicRole {
        let topic = match topic.split_once('.') {
            Some((region, copied)) if crate::Region::parse(region).is_ok() => copied,
            _ => topic,
        };
        if topic.starts_with("decisions-") {
            TopicRole::Decisions
        } else if topic.starts_with("stock-requests-") {
            TopicRole::Stock
        } else if topic.ends_with("-adjustments") {
            TopicRole::Adjustments
        } else {
            TopicRole::Orders
        }
    }

    /// Whether the callers (the checkout, services publishing straight to Kafka) write it.
    pub fn written_by_callers(self) -> bool {
        matches!(self, TopicRole::Orders | TopicRole::Adjustments)
    }

    /// Where events of `kind` are published. The one rule every publisher, the processes'
    /// outbox and the AsyncAPI document follow.
    pub fn of(kind: EventKind) -> TopicRole {
        match kind {
            EventKind::StockAdjusted | EventKind::StockTransferRequested | EventKind::StockTransferReceived => {
                TopicRole::Adjustments
            }
            EventKind::StockRequested => TopicRole::Stock,
            k if k.is_decision() => TopicRole::Decisions,
            _ => TopicRole::Orders,
        }
    }

    /// Whether a reader applies an event of `kind` read from this topic. Besides the kinds
    /// published here: an adjustment on the orders topic (the earlier contract; the order
    /// process forwards it) and on the stock topic (where an earlier checkout appended
    /// it, before that topic was the order process's alone). A decision or a stock request
    /// is trusted only from the topic its author alone writes: found anywhere else it is
    /// refused and recorded.
    pub fn trusts(self, kind: EventKind) -> bool {
        TopicRole::of(kind) == self
            || (kind == EventKind::StockAdjusted && matches!(self, TopicRole::Orders | TopicRole::Stock))
    }
}

/// The decisions topic's name for an orders topic: `decisions-<orders>`.
pub fn decisions_topic(orders_topic: &str) -> String {
    TopicRole::Decisions.name(orders_topic)
}

/// The adjustments topic's name for an orders topic: `<orders>-adjustments`.
pub fn adjustments_topic(orders_topic: &str) -> String {
    TopicRole::Adjustments.name(orders_topic)
}

/// The topic events of `kind` go to in a pipeline on `orders_topic`.
pub fn topic_of(kind: EventKind, orders_topic: &str) -> String {
    TopicRole::of(kind).name(orders_topic)
}

/// Every topic of the pipeline on `orders_topic`, the orders topic first.
pub fn pipeline_topics(orders_topic: &str) -> Vec<String> {
    TopicRole::ALL.iter().map(|role| role.name(orders_topic)).collect()
}

/// The record header naming the principal that published an event (the checkout sets it
/// from the caller's credentials). A header, not a field of the Avro envelope, so every
/// schema and every reader of the payload is unchanged; readers treat a missing or
/// unreadable header as "unknown publisher", since producers we did not write may send
/// straight to the topic.
/// W3C trace context (`00-<trace id>-<span id>-<flags>`) of the step that appended the
/// record: the checkout's request, or the decision that emitted it. Optional; a record
/// without it, or with one that is not valid trace context, starts a new trace.
pub const TRACE_HEADER: &str = "traceparent";

pub const PRINCIPAL_HEADER: &str = "orderflow-principal";

/// The record header carrying the event's id (the checkout sets it): how a region finds
/// its copy of a record in another region's mirror, whose offsets differ from the
/// original's, without decoding payloads. Information only, like the principal header.
pub const EVENT_ID_HEADER: &str = "orderflow-event-id";

/// The record header the checkout sets on an event appended under an Idempotency-Key:
/// `v1 <key digest> <request hash> <epoch ms>`, digests of the key and of the request
/// (never the key itself), so the checkout's key store can be rebuilt from the log and a
/// retry after its loss still gets its first answer. Information only.
pub const REQUEST_HEADER: &str = "orderflow-request";

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_and_stock_requests_are_trusted_only_from_the_topics_their_authors_alone_write() {
        for kind in EventKind::ALL {
            let home = TopicRole::of(kind);
            assert!(home.trusts(kind), "{kind:?} on its own topic");
            if kind.is_decision() || kind == EventKind::StockRequested {
                assert!(!home.written_by_callers(), "{kind:?} must live where callers cannot write");
                for role in TopicRole::ALL.into_iter().filter(|r| *r != home) {
                    assert!(!role.trusts(kind), "{kind:?} must not be trusted on {role:?}");
                }
            }
        }
        assert_eq!(topic_of(EventKind::StockDecided, "shop"), "decisions-shop");
        assert_eq!(topic_of(EventKind::StockAdjusted, "shop"), "shop-adjustments");
        assert_eq!(topic_of(EventKind::StockRequested, "shop"), "stock-requests-shop");
        assert_eq!(topic_of(EventKind::PaymentCaptured, "shop"), "shop");
        assert_eq!(TopicRole::of_topic("decisions-shop", "shop"), Some(TopicRole::Decisions));
        assert_eq!(TopicRole::of_topic("other", "shop"), None);
        for role in TopicRole::ALL {
            assert_eq!(TopicRole::by_name(&role.name("shop")), role);
            assert_eq!(TopicRole::by_name(&format!("eu.{}", role.name("shop"))), role, "a region's copy");
            // A prefixed ACL on the orders topic's name covers exactly the callers' topics.
            assert_eq!(role.name("shop").starts_with("shop"), role.written_by_callers(), "{role:?}");
        }
    }
}
