//! How a member is configured: what its group does, where it reads, how it batches and
//! joins its group. One default per setting ([`defaults`]), shown and used by the CLI.
use std::sync::Arc;
use std::time::Duration;

use projections::registry::GroupKind;
use projections::store::ProcessSettings;

#[derive(Debug, Clone)]
pub struct MemberConfig {
    /// What the group does: a projection that describes, or a process that decides.
    pub kind: GroupKind,
    /// What a process's batches need besides the records (projections ignore it).
    pub decisions: ProcessSettings,
    /// The schema ids records are read (and decisions written) with: the embedded
    /// manifest, or a schema registry's, learned as records name them.
    pub contract: infra::schema_registry::Contract,
    /// Woken after every batch that may have put decisions into the outbox, so a relay in
    /// this process publishes them at once instead of at its next look.
    pub outbox_written: Option<Arc<tokio::sync::Notify>>,
    pub group: String,
    /// The region whose log this member reads, from its copies in this region's cluster
    /// (`<source>.<topic>`, made by MirrorMaker 2); `None` for this region's own topics.
    /// Only projections read copies: a process decides on its own region's log alone.
    pub source: Option<schemas::Region>,
    /// Other regions whose logs a projection's member also reads from their copies, each
    /// in its own group ([`MemberConfig::mirroring`]), so this region's views show their
    /// orders too. Ignored for a process.
    pub mirrors: Vec<schemas::Region>,
    /// The topic this consumer of the member reads: set per consumer by
    /// [`super::run_member`], one for each topic the group reads (the first by default).
    pub topic: String,
    /// Records per batch at most.
    pub batch_max: usize,
    /// How long to wait for a batch to fill before applying what there is.
    pub batch_wait: Duration,
    /// Which consumer group protocol the member speaks.
    pub group_protocol: GroupProtocol,
    /// `range`, `roundrobin` or `cooperative-sticky` (classic protocol only: under the
    /// consumer protocol the broker assigns).
    pub assignment_strategy: String,
    /// Classic protocol only: under the consumer protocol the broker's
    /// `group.consumer.session.timeout.ms` applies.
    pub session_timeout: Duration,
    pub max_poll_interval: Duration,
    /// librdkafka's `fetch.wait.max.ms`: how long the broker may hold a fetch with no new
    /// data. Kafka answers as soon as data arrives, so this only bounds idle fetches.
    pub fetch_wait: Duration,
    /// How long shutdown may take before the member gives up on a clean leave.
    pub shutdown_deadline: Duration,
    /// Static group membership (`group.instance.id`, classic protocol): a member restarted
    /// under the same id takes its partitions back at once instead of after the dead
    /// one's session expires. Each of the member's consumers gets its own id from it
    /// ([`MemberConfig::group_instance_id`]).
    pub instance_id: Option<String>,
}

/// The one default of each member setting (the CLI shows and uses these too).
pub mod defaults {
    use std::time::Duration;

    /// A batch is cut when it is full or `BATCH_WAIT` after its first record: far behind,
    /// batches are this large (per-batch costs spread over more records: measured 5,000
    /// ≈ 1.05× 2,000 on a backlog); caught up, they hold what a few milliseconds bring.
    pub const BATCH_MAX: usize = 5_000;
    pub const BATCH_WAIT: Duration = Duration::from_millis(5);
    pub const ASSIGNMENT_STRATEGY: &str = "cooperative-sticky";
    /// The classic protocol's assignors, for validating the setting.
    pub const ASSIGNMENT_STRATEGIES: [&str; 3] = ["range", "roundrobin", "cooperative-sticky"];
    pub const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
    pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(60);
    pub const FETCH_WAIT: Duration = Duration::from_millis(10);
    pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
}

impl MemberConfig {
    /// Which of the pipeline's topics this consumer reads: what it trusts from there.
    /// A topic that is none of the pipeline's is trusted as the orders topic, the least.
    /// A copy is trusted as the topic it copies: MirrorMaker 2 writes the copies (no caller
    /// may, see the README's ACLs) and keeps each record's bytes and headers.
    pub fn role(&self) -> schemas::TopicRole {
        let topic = match &self.source {
            Some(source) => source.source_topic(&self.topic).unwrap_or(&self.topic),
            None => &self.topic,
        };
        schemas::TopicRole::of_topic(topic, &self.decisions.orders_topic).unwrap_or(schemas::TopicRole::Orders)
    }

    /// The topics this member reads: its group's, or their copies from `source`.
    pub fn topics(&self) -> Vec<String> {
        let topics = self.kind.topics(&self.decisions.orders_topic);
        match &self.source {
            Some(source) => topics.iter().map(|t| source.mirrored(t)).collect(),
            None => topics,
        }
    }

    /// The `group.instance.id` of this consumer of the member: the member's instance id and
    /// the topic it reads (a member runs one consumer per topic, each a member of the group
    /// in its own right).
    pub fn group_instance_id(&self) -> Option<String> {
        let id = self.instance_id.as_ref()?;
        let role = match self.role() {
            schemas::TopicRole::Orders => "orders",
            schemas::TopicRole::Adjustments => "adjustments",
            schemas::TopicRole::Stock => "stock",
            schemas::TopicRole::Decisions => "decisions",
        };
        Some(match &self.source {
            Some(source) => format!("{id}.{source}.{role}"),
            None => format!("{id}.{role}"),
        })
    }

    /// Whether `id` can be an instance id: 1 to 200 letters, digits, `.`, `_` or `-` (what
    /// Kafka takes, with room for the suffixes).
    pub fn valid_instance_id(id: &str) -> bool {
        !id.is_empty() && id.len() <= 200 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    }

    /// The same member, reading `source`'s log from its copies, in its own group.
    pub fn mirroring(&self, source: schemas::Region) -> Self {
        let group = projections::registry::mirror_group(&self.group, &source);
        let mut config = MemberConfig { group, source: Some(source), mirrors: Vec::new(), ..self.clone() };
        config.topic = config.topics().swap_remove(0);
        config
    }

    /// A member of `kind`'s default group in a pipeline on `orders_topic` (a process reads
    /// the topic the registry names for it, e.g. the stock topic).
    pub fn new(kind: impl Into<GroupKind>, orders_topic: &str) -> Self {
        let kind = kind.into();
        MemberConfig {
            kind,
            decisions: ProcessSettings::new(orders_topic),
            contract: infra::schema_registry::Contract::embedded(),
            outbox_written: None,
            group: projections::registry::default_group(kind),
            source: None,
            mirrors: Vec::new(),
            topic: kind.topics(orders_topic).swap_remove(0),
            batch_max: defaults::BATCH_MAX,
            batch_wait: defaults::BATCH_WAIT,
            group_protocol: GroupProtocol::Classic,
            assignment_strategy: defaults::ASSIGNMENT_STRATEGY.into(),
            session_timeout: defaults::SESSION_TIMEOUT,
            max_poll_interval: defaults::MAX_POLL_INTERVAL,
            shutdown_deadline: defaults::SHUTDOWN_DEADLINE,
            fetch_wait: defaults::FETCH_WAIT,
            instance_id: None,
        }
    }
}

/// The consumer group protocol (`group.protocol`): `classic` (the join/sync protocol, with a
/// client-side assignor) or `consumer` (KIP-848: the broker assigns and reconciles
/// incrementally, and owns the session timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupProtocol {
    #[default]
    Classic,
    Consumer,
}

impl GroupProtocol {
    pub fn name(self) -> &'static str {
        match self {
            GroupProtocol::Classic => "classic",
            GroupProtocol::Consumer => "consumer",
        }
    }
}

impl std::str::FromStr for GroupProtocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "classic" => Ok(GroupProtocol::Classic),
            "consumer" => Ok(GroupProtocol::Consumer),
            other => Err(format!("unknown group protocol {other:?}; use classic or consumer")),
        }
    }
}

impl std::fmt::Display for GroupProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use projections::registry::{GroupKind, ProcessKind, ProjectionKind};

    use super::*;

    #[test]
    fn a_process_member_reads_the_topics_the_registry_names_and_decides_for_the_orders_topic() {
        let stock = MemberConfig::new(ProcessKind::Stock, "shop");
        assert_eq!((stock.topic.as_str(), stock.group.as_str()), ("stock-requests-shop", "orderflow-stock"));
        assert_eq!(stock.decisions.orders_topic, "shop");
        let payment = MemberConfig::new(ProjectionKind::Payment, "shop");
        assert_eq!((payment.topic.as_str(), payment.kind), ("shop", GroupKind::Projection(ProjectionKind::Payment)));
    }

    #[test]
    fn a_mirror_member_reads_the_copies_in_its_own_group_and_trusts_them_as_the_originals() {
        let eu = schemas::Region::parse("eu").expect("a region name");
        let history = MemberConfig::new(ProjectionKind::History, "orders").mirroring(eu);
        assert_eq!(history.group, "orderflow-history@eu");
        assert_eq!(history.topics(), ["eu.orders", "eu.decisions-orders"]);
        let decisions = MemberConfig { topic: "eu.decisions-orders".into(), ..history.clone() };
        assert_eq!(decisions.role(), schemas::TopicRole::Decisions);
        // A local topic named like a copy is no copy for a member of this region's log.
        let local = MemberConfig {
            topic: "eu.decisions-orders".into(),
            ..MemberConfig::new(ProjectionKind::History, "orders")
        };
        assert_eq!(local.role(), schemas::TopicRole::Orders);
        assert_eq!(projections::registry::generation_group(&history.group), "orderflow-history");
    }

    #[test]
    fn each_consumer_of_a_static_member_has_an_instance_id_of_its_own() {
        let mut fulfilment = MemberConfig::new(ProjectionKind::Fulfilment, "orders");
        assert_eq!(fulfilment.group_instance_id(), None, "dynamic unless asked");
        fulfilment.instance_id = Some("fulfilment-0".into());
        let ids: Vec<Option<String>> = fulfilment
            .topics()
            .into_iter()
            .map(|topic| MemberConfig { topic, ..fulfilment.clone() }.group_instance_id())
            .collect();
        assert_eq!(ids, [Some("fulfilment-0.orders".to_string()), Some("fulfilment-0.decisions".to_string())]);
        let copy = fulfilment.mirroring(schemas::Region::parse("eu").expect("a region name"));
        assert_eq!(copy.group_instance_id().as_deref(), Some("fulfilment-0.eu.orders"));
        assert!(MemberConfig::valid_instance_id("orderflow-consume-payment-7d9f-x2"));
        assert!(!MemberConfig::valid_instance_id("") && !MemberConfig::valid_instance_id("a b"));
    }
}
