//! A fence at a broker: principals lose Write on some topics, everything else stays as it
//! was. A region taken over is fenced at its own broker (its writers can no longer append
//! to its pipeline's topics, whenever they come back), and the mirror of its log into the
//! region that took it over is fenced at that region's broker (its late tail is not
//! copied in).
//!
//! Kafka's authorizers deny an operation on a resource that has ACLs but none allowing it,
//! whatever `allow.everyone.if.no.acl.found` says. A topic used under that default (no ACL
//! matched it) would therefore lose its readers to a deny alone: the fence adds an allow
//! of every operation to `User:*` beside the deny there (the deny wins for Write). A topic
//! with grants keeps them, and gets only the deny.
use std::time::Duration;

use crate::acls::{self, Operation, Pattern, Permission, TopicAcl};
use crate::{InfraError, KafkaSettings};

/// Everyone: the principal a fence names unless told otherwise.
pub const EVERYONE: &str = "User:*";

/// Which topics lose Write, and for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub topics: Vec<(String, Pattern)>,
    pub principals: Vec<String>,
}

impl Fence {
    /// The ACLs that make the fence; `open` when the cluster lets everyone in when no ACL
    /// is found (see the module's note).
    pub fn acls(&self, open: bool) -> Vec<TopicAcl> {
        let mut acls = Vec::new();
        for (name, pattern) in &self.topics {
            for principal in &self.principals {
                acls.push(TopicAcl {
                    name: name.clone(),
                    pattern: *pattern,
                    principal: principal.clone(),
                    operation: Operation::Write,
                    permission: Permission::Deny,
                });
            }
            if open {
                acls.push(TopicAcl {
                    name: name.clone(),
                    pattern: *pattern,
                    principal: EVERYONE.to_string(),
                    operation: Operation::All,
                    permission: Permission::Allow,
                });
            }
        }
        acls
    }
}

/// Puts the fence up at the cluster `settings` reaches (putting it up twice changes
/// nothing); the ACLs it created.
///
/// Whether a topic was open to everyone cannot be read from the cluster (the authorizer's
/// settings are not among the configs a broker describes), so it is told from the topic's
/// ACLs: a topic no ACL matched was used under the no-ACL default, and keeps everything but
/// Write open to everyone; a topic with ACLs keeps its grants, and only loses Write.
#[tracing::instrument(skip_all, fields(brokers = %settings.brokers))]
pub async fn put_up(settings: &KafkaSettings, fence: &Fence, timeout: Duration) -> Result<Vec<TopicAcl>, InfraError> {
    let (settings, fence) = (settings.clone(), fence.clone());
    tokio::task::spawn_blocking(move || {
        let mut made = Vec::new();
        for (name, pattern) in &fence.topics {
            let one = Fence { topics: vec![(name.clone(), *pattern)], principals: fence.principals.clone() };
            let open = acls::matching(&settings, &probe(name, *pattern), timeout)?.is_empty();
            made.extend(one.acls(open));
        }
        acls::create(&settings, &made, timeout)?;
        Ok(made)
    })
    .await
    .map_err(|e| InfraError::Config(format!("the ACL request's thread failed: {e}")))?
}

/// A topic name the pattern covers.
fn probe(name: &str, pattern: Pattern) -> String {
    match pattern {
        Pattern::Literal => name.to_string(),
        Pattern::Prefixed => format!("{name}x"),
    }
}

/// Takes the fence down (its deny ACLs and the allows it added).
#[tracing::instrument(skip_all, fields(brokers = %settings.brokers))]
pub async fn take_down(settings: &KafkaSettings, fence: &Fence, timeout: Duration) -> Result<(), InfraError> {
    let acls = fence.acls(true);
    let settings = settings.clone();
    tokio::task::spawn_blocking(move || acls::delete(&settings, &acls, timeout))
        .await
        .map_err(|e| InfraError::Config(format!("the ACL request's thread failed: {e}")))?
}

/// Whether every deny of the fence is in place at the cluster.
#[tracing::instrument(skip_all, fields(brokers = %settings.brokers))]
pub async fn is_up(settings: &KafkaSettings, fence: &Fence, timeout: Duration) -> Result<bool, InfraError> {
    let denies = fence.acls(false);
    let settings = settings.clone();
    tokio::task::spawn_blocking(move || {
        for deny in &denies {
            if !acls::matching(&settings, &probe(&deny.name, deny.pattern), timeout)?.contains(deny) {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await
    .map_err(|e| InfraError::Config(format!("the ACL request's thread failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_denies_write_to_each_principal_and_keeps_reads_open_only_where_everyone_was_let_in() {
        let fence = Fence {
            topics: vec![("orders".into(), Pattern::Literal), ("eu.".into(), Pattern::Prefixed)],
            principals: vec!["User:checkout".into()],
        };
        let open = fence.acls(true);
        assert_eq!(open.len(), 4);
        assert!(open
            .iter()
            .filter(|a| a.permission == Permission::Deny)
            .all(|a| a.operation == Operation::Write && a.principal == "User:checkout"));
        assert!(open.iter().filter(|a| a.permission == Permission::Allow).all(|a| a.principal == EVERYONE));
        let closed = fence.acls(false);
        assert_eq!(closed.len(), 2);
        assert!(closed.iter().all(|a| a.permission == Permission::Deny));
    }
}
