//! A fence at a broker: principals lose Write on some topics, everything else stays as it
//! was. A region taken over is fenced at its own broker (its writers can no longer append
//! to its pipeline's topics, whenever they come back), and the mirror of its log into the
//! region that took it over is fenced at that region's broker (its late tail is not
//! copied in).
//!
//! Kafka's authorizers deny an operation on a resource that has ACLs but none allowing it,
//! whatever `allow.everyone.if.no.acl.found` says. On a cluster that lets everyone in when
//! no ACL is found, a deny alone would therefore also stop every reader of the fenced
//! topics: there the fence adds an allow of every operation to `User:*` beside the deny
//! (the deny wins for Write). On a cluster that grants by ACL, the grants are already
//! there and the fence adds only the deny.
use std::time::Duration;

use rdkafka::admin::{AdminOptions, ResourceSpecifier};

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

/// Whether the cluster lets everyone in when no ACL is found (any broker's setting; they
/// must agree).
async fn open_by_default(settings: &KafkaSettings, timeout: Duration) -> Result<bool, InfraError> {
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        settings.client_config().create().map_err(InfraError::admin("creating the admin client"))?;
    let metadata =
        admin.inner().fetch_metadata(None, timeout).map_err(InfraError::admin("reading the cluster's metadata"))?;
    let broker = metadata
        .brokers()
        .first()
        .map(|b| b.id())
        .ok_or_else(|| InfraError::Config("the cluster named no broker".into()))?;
    let options = AdminOptions::new().request_timeout(Some(timeout));
    let results = tokio::time::timeout(
        timeout + Duration::from_secs(1),
        admin.describe_configs(&[ResourceSpecifier::Broker(broker)], &options),
    )
    .await
    .map_err(|_| InfraError::AdminTimeout(timeout))?
    .map_err(InfraError::admin("describing a broker"))?;
    let resource = results
        .into_iter()
        .next()
        .ok_or_else(|| InfraError::Config("describing a broker: no answer".into()))?
        .map_err(|code| InfraError::Refused { what: "describing a broker".into(), code })?;
    Ok(resource.get("allow.everyone.if.no.acl.found").and_then(|e| e.value.as_deref()) == Some("true"))
}

/// Puts the fence up at the cluster `settings` reaches (putting it up twice changes
/// nothing); the ACLs it created.
#[tracing::instrument(skip_all, fields(brokers = %settings.brokers))]
pub async fn put_up(settings: &KafkaSettings, fence: &Fence, timeout: Duration) -> Result<Vec<TopicAcl>, InfraError> {
    let open = open_by_default(settings, timeout).await?;
    let acls = fence.acls(open);
    let (settings, made) = (settings.clone(), acls.clone());
    tokio::task::spawn_blocking(move || acls::create(&settings, &made, timeout))
        .await
        .map_err(|e| InfraError::Config(format!("the ACL request's thread failed: {e}")))??;
    Ok(acls)
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
            let probe = match deny.pattern {
                Pattern::Literal => deny.name.clone(),
                Pattern::Prefixed => format!("{}x", deny.name),
            };
            if !acls::matching(&settings, &probe, timeout)?.contains(deny) {
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
