//! Topic ACLs through the Kafka admin API (CreateAcls, DescribeAcls, DeleteAcls): what a
//! region's fence is made of. rust-rdkafka does not wrap these calls, so this module
//! calls librdkafka's admin functions itself, through the client every other admin call
//! uses (the same bootstrap servers, TLS and SASL settings). The only unsafe code of the
//! workspace is here; every pointer it creates is destroyed before a function returns.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::bindings as rd;
use rdkafka::client::DefaultClientContext;

use crate::{InfraError, KafkaSettings};

/// Allowed or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Permission {
    Allow,
    Deny,
}

/// Which operations an ACL names (the few a fence uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Operation {
    All,
    Write,
}

/// Whether a topic ACL names one topic or every topic whose name starts with its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Pattern {
    Literal,
    Prefixed,
}

/// One ACL on topics: `principal` (`User:*` for everyone) is `permission`ed `operation`
/// on the topic(s) `name` names, from any host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct TopicAcl {
    pub name: String,
    pub pattern: Pattern,
    pub principal: String,
    pub operation: Operation,
    pub permission: Permission,
}

impl std::fmt::Display for TopicAcl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} {} {:?} on {} topic {}",
            self.permission,
            self.principal,
            self.operation,
            match self.pattern {
                Pattern::Literal => "the",
                Pattern::Prefixed => "every",
            },
            match self.pattern {
                Pattern::Literal => self.name.clone(),
                Pattern::Prefixed => format!("{}*", self.name),
            }
        )
    }
}

impl Permission {
    fn native(self) -> rd::rd_kafka_AclPermissionType_t {
        match self {
            Permission::Allow => rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW,
            Permission::Deny => rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_DENY,
        }
    }
}

impl Operation {
    fn native(self) -> rd::rd_kafka_AclOperation_t {
        match self {
            Operation::All => rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_ALL,
            Operation::Write => rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_WRITE,
        }
    }
}

impl Pattern {
    fn native(self) -> rd::rd_kafka_ResourcePatternType_t {
        match self {
            Pattern::Literal => rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_LITERAL,
            Pattern::Prefixed => rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_PREFIXED,
        }
    }
}

fn client(settings: &KafkaSettings) -> Result<AdminClient<DefaultClientContext>, InfraError> {
    settings.client_config().create().map_err(InfraError::admin("creating the admin client"))
}

fn text(what: &str, value: &str) -> Result<CString, InfraError> {
    CString::new(value).map_err(|_| InfraError::Config(format!("{what} {value:?} holds a NUL byte")))
}

/// A string librdkafka owns, copied.
fn owned(ptr: *const std::os::raw::c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: librdkafka returns NUL-terminated strings that live as long as the object
    // they came from, which the caller still holds.
    unsafe { CStr::from_ptr(ptr) }.to_string_lossy().into_owned()
}

/// The error an `rd_kafka_error_t` carries, if it carries one.
fn refused(what: &str, error: *const rd::rd_kafka_error_t) -> Result<(), InfraError> {
    if error.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null error object owned by the result the caller holds.
    let (code, message) = unsafe { (rd::rd_kafka_error_code(error), owned(rd::rd_kafka_error_string(error))) };
    if code == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        return Ok(());
    }
    Err(denied_or_refused(what, code, message))
}

fn denied_or_refused(what: &str, code: rd::rd_kafka_resp_err_t, message: String) -> InfraError {
    use rd::rd_kafka_resp_err_t as E;
    match code {
        E::RD_KAFKA_RESP_ERR_SECURITY_DISABLED => InfraError::Config(format!(
            "{what}: the cluster has no authorizer, so it cannot fence (set authorizer.class.name on its brokers): {message}"
        )),
        E::RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED
        | E::RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED
        | E::RD_KAFKA_RESP_ERR__AUTHENTICATION => InfraError::Denied(format!("{what}: {message}")),
        other => InfraError::Refused { what: format!("{what}: {message}"), code: other.into() },
    }
}

/// One admin request: `call` sends it on a fresh queue, then the result event is read and
/// handed to `read`, and everything is destroyed.
fn request<T>(
    settings: &KafkaSettings,
    op: rd::rd_kafka_admin_op_t,
    what: &str,
    timeout: Duration,
    call: impl FnOnce(*mut rd::rd_kafka_t, *const rd::rd_kafka_AdminOptions_t, *mut rd::rd_kafka_queue_t),
    read: impl FnOnce(*mut rd::rd_kafka_event_t) -> Result<T, InfraError>,
) -> Result<T, InfraError> {
    let admin = client(settings)?;
    let rk = admin.inner().native_ptr();
    let millis = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `rk` is the admin client's live handle; the options, queue and event are
    // created and destroyed here, and `call`/`read` use them only within this function.
    unsafe {
        let options = rd::rd_kafka_AdminOptions_new(rk, op);
        let mut errstr = [0 as std::os::raw::c_char; 256];
        rd::rd_kafka_AdminOptions_set_request_timeout(options, millis, errstr.as_mut_ptr(), errstr.len());
        let queue = rd::rd_kafka_queue_new(rk);
        call(rk, options, queue);
        let event = rd::rd_kafka_queue_poll(queue, millis.saturating_add(1_000));
        let result = if event.is_null() {
            Err(InfraError::AdminTimeout(timeout))
        } else {
            let code = rd::rd_kafka_event_error(event);
            let outcome = if code != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                Err(denied_or_refused(what, code, owned(rd::rd_kafka_event_error_string(event))))
            } else {
                read(event)
            };
            rd::rd_kafka_event_destroy(event);
            outcome
        };
        rd::rd_kafka_queue_destroy(queue);
        rd::rd_kafka_AdminOptions_destroy(options);
        result
    }
}

/// Whether librdkafka is to make ACL bindings (to create) or filters matching exactly them
/// (to delete).
#[derive(Clone, Copy)]
enum Kind {
    Binding,
    Filter,
}

/// librdkafka's objects for `acls`; the caller destroys them ([`destroy_bindings`]).
fn native_bindings(acls: &[TopicAcl], kind: Kind) -> Result<Vec<*mut rd::rd_kafka_AclBinding_t>, InfraError> {
    let mut made = Vec::with_capacity(acls.len());
    let star = text("host", "*")?;
    for acl in acls {
        let (name, principal) = (text("topic", &acl.name)?, text("principal", &acl.principal)?);
        let mut errstr = [0 as std::os::raw::c_char; 256];
        let new = match kind {
            Kind::Binding => rd::rd_kafka_AclBinding_new,
            Kind::Filter => rd::rd_kafka_AclBindingFilter_new,
        };
        // SAFETY: the strings outlive the call, which copies them.
        let binding = unsafe {
            new(
                rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TOPIC,
                name.as_ptr(),
                acl.pattern.native(),
                principal.as_ptr(),
                star.as_ptr(),
                acl.operation.native(),
                acl.permission.native(),
                errstr.as_mut_ptr(),
                errstr.len(),
            )
        };
        if binding.is_null() {
            destroy_bindings(&mut made);
            return Err(InfraError::Config(format!("ACL {acl}: {}", owned(errstr.as_ptr()))));
        }
        made.push(binding);
    }
    Ok(made)
}

/// Creates `acls` (creating one that exists changes nothing).
#[tracing::instrument(skip_all, fields(brokers = %settings.brokers, acls = acls.len()))]
pub fn create(settings: &KafkaSettings, acls: &[TopicAcl], timeout: Duration) -> Result<(), InfraError> {
    let mut bindings = native_bindings(acls, Kind::Binding)?;
    let what = "creating ACLs";
    let result = request(
        settings,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_CREATEACLS,
        what,
        timeout,
        |rk, options, queue| {
            // SAFETY: the bindings stay alive until destroyed below; librdkafka copies them.
            unsafe { rd::rd_kafka_CreateAcls(rk, bindings.as_mut_ptr(), bindings.len(), options, queue) }
        },
        |event| {
            // SAFETY: the event is a CreateAcls result; its results live as long as it.
            unsafe {
                let result = rd::rd_kafka_event_CreateAcls_result(event);
                let mut count = 0usize;
                let results = rd::rd_kafka_CreateAcls_result_acls(result, &mut count);
                for i in 0..count {
                    refused(what, rd::rd_kafka_acl_result_error(*results.add(i)))?;
                }
            }
            Ok(())
        },
    );
    destroy_bindings(&mut bindings);
    result
}

fn destroy_bindings(bindings: &mut Vec<*mut rd::rd_kafka_AclBinding_t>) {
    for binding in bindings.drain(..) {
        // SAFETY: each was made by rd_kafka_AclBinding_new and is destroyed once.
        unsafe { rd::rd_kafka_AclBinding_destroy(binding) };
    }
}

/// Deletes exactly the ACLs `acls` names (deleting one that is not there changes nothing).
#[tracing::instrument(skip_all, fields(brokers = %settings.brokers, acls = acls.len()))]
pub fn delete(settings: &KafkaSettings, acls: &[TopicAcl], timeout: Duration) -> Result<(), InfraError> {
    let mut filters = native_bindings(acls, Kind::Filter)?;
    let what = "deleting ACLs";
    let result = request(
        settings,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DELETEACLS,
        what,
        timeout,
        |rk, options, queue| {
            // SAFETY: as in `create`.
            unsafe { rd::rd_kafka_DeleteAcls(rk, filters.as_mut_ptr(), filters.len(), options, queue) }
        },
        |event| {
            // SAFETY: the event is a DeleteAcls result; its responses live as long as it.
            unsafe {
                let result = rd::rd_kafka_event_DeleteAcls_result(event);
                let mut count = 0usize;
                let responses = rd::rd_kafka_DeleteAcls_result_responses(result, &mut count);
                for i in 0..count {
                    refused(what, rd::rd_kafka_DeleteAcls_result_response_error(*responses.add(i)))?;
                }
            }
            Ok(())
        },
    );
    destroy_bindings(&mut filters);
    result
}

/// Every topic ACL the cluster holds whose (literal or prefixed) pattern matches `topic`.
#[tracing::instrument(skip(settings), fields(brokers = %settings.brokers))]
pub fn matching(settings: &KafkaSettings, topic: &str, timeout: Duration) -> Result<Vec<TopicAcl>, InfraError> {
    let name = text("topic", topic)?;
    let mut errstr = [0 as std::os::raw::c_char; 256];
    // SAFETY: as in `create`; principal and host NULL match any.
    let filter = unsafe {
        rd::rd_kafka_AclBindingFilter_new(
            rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TOPIC,
            name.as_ptr(),
            rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_MATCH,
            std::ptr::null(),
            std::ptr::null(),
            rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_ANY,
            rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ANY,
            errstr.as_mut_ptr(),
            errstr.len(),
        )
    };
    if filter.is_null() {
        return Err(InfraError::Config(format!("ACL filter for {topic}: {}", owned(errstr.as_ptr()))));
    }
    let result = request(
        settings,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBEACLS,
        "describing ACLs",
        timeout,
        |rk, options, queue| {
            // SAFETY: the filter lives until destroyed below.
            unsafe { rd::rd_kafka_DescribeAcls(rk, filter, options, queue) }
        },
        |event| {
            let mut found = Vec::new();
            // SAFETY: the event is a DescribeAcls result; its bindings live as long as it.
            unsafe {
                let result = rd::rd_kafka_event_DescribeAcls_result(event);
                let mut count = 0usize;
                let acls = rd::rd_kafka_DescribeAcls_result_acls(result, &mut count);
                for i in 0..count {
                    let acl = *acls.add(i);
                    let operation = match rd::rd_kafka_AclBinding_operation(acl) {
                        rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_ALL => Operation::All,
                        rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_WRITE => Operation::Write,
                        _ => continue,
                    };
                    let permission = match rd::rd_kafka_AclBinding_permission_type(acl) {
                        rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_DENY => Permission::Deny,
                        _ => Permission::Allow,
                    };
                    let pattern = match rd::rd_kafka_AclBinding_resource_pattern_type(acl) {
                        rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_PREFIXED => Pattern::Prefixed,
                        _ => Pattern::Literal,
                    };
                    found.push(TopicAcl {
                        name: owned(rd::rd_kafka_AclBinding_name(acl)),
                        pattern,
                        principal: owned(rd::rd_kafka_AclBinding_principal(acl)),
                        operation,
                        permission,
                    });
                }
            }
            Ok(found)
        },
    );
    // SAFETY: made above, destroyed once.
    unsafe { rd::rd_kafka_AclBinding_destroy(filter) };
    result
}
