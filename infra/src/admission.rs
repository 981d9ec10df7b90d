//! Who is let in, and for how long: the in-flight pool shared by a service's requests, each
//! principal's share of it, the deadline on reading a request's body, and the request
//! timeout. Health and readiness checks are answered outside all of it (a liveness probe
//! must not fail because a client is slow), and no principal can hold more than its share
//! of the pool, so one slow or abusive credential cannot starve the others.
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api_error::ApiError;

/// Abuse limits of one service.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests per second each principal may make (bursts up to one second's worth);
    /// `None` is unlimited.
    pub per_principal_per_second: Option<NonZeroU32>,
    /// A request still unanswered after this is answered `503`.
    pub request_timeout: Duration,
    /// A request body not read whole within this is answered `408` (far shorter than the
    /// request timeout: a slow body holds its place for seconds, not for the whole timeout).
    pub body_timeout: Duration,
    /// The largest request body; a larger one is answered `413`.
    pub max_body_bytes: usize,
    /// Limits of each connection: head timeout (and idle), head size, connections open.
    pub connections: crate::serve::ConnectionLimits,
    /// Requests served at once; more are answered `503` at once rather than queued. One
    /// principal may hold half of them ([`crate::admission::principal_share`]); health and
    /// readiness checks are answered outside the pool.
    pub max_in_flight: usize,
}

/// One default per setting; the binary's flags take theirs from here.
pub mod limit_defaults {
    pub const PER_PRINCIPAL_PER_SECOND: u32 = 2_000;
    pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
    pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
    pub const MAX_BODY_BYTES: usize = 64 * 1024;
    pub const MAX_IN_FLIGHT: usize = 1_024;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_principal_per_second: NonZeroU32::new(limit_defaults::PER_PRINCIPAL_PER_SECOND),
            request_timeout: limit_defaults::REQUEST_TIMEOUT,
            body_timeout: limit_defaults::BODY_TIMEOUT,
            max_body_bytes: limit_defaults::MAX_BODY_BYTES,
            connections: crate::serve::ConnectionLimits::default(),
            max_in_flight: limit_defaults::MAX_IN_FLIGHT,
        }
    }
}

/// The routes answered outside the pool, the rate limiter and authentication.
pub const HEALTH_PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// How much of a pool of `max_in_flight` one principal may hold: half, at least one. Two
/// principals at their share fill the pool; a third waits only for them, never for one
/// principal's backlog alone.
pub fn principal_share(max_in_flight: usize) -> usize {
    max_in_flight.max(1).div_ceil(2)
}

/// One service's admission state.
pub struct Admission {
    slots: Arc<Semaphore>,
    share: usize,
    /// Requests in flight per principal.
    held: Mutex<HashMap<String, usize>>,
    limits: Limits,
}

/// A request's place in the pool (and in its principal's share), given back when it is
/// dropped.
pub struct Ticket {
    _slot: OwnedSemaphorePermit,
    _share: Option<Share>,
}

/// One place of a principal's share.
struct Share {
    admission: Arc<Admission>,
    principal: String,
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut held = self.admission.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.principal) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.principal);
            }
        }
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The pool is full.
    Overloaded,
    /// This principal holds its whole share.
    PrincipalOverloaded { share: usize },
}

impl Refused {
    pub fn into_response(self, principal: Option<&str>) -> Response {
        let error = match self {
            Refused::Overloaded => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "too many requests in flight")
            }
            Refused::PrincipalOverloaded { share } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "principal_overloaded",
                format!("this principal already has {share} requests in flight, its share of the service"),
            )
            .with("principal", principal.unwrap_or_default()),
        };
        error.retry_after(Duration::from_secs(1)).into_response()
    }
}

impl Admission {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Admission {
            slots: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
            share: principal_share(limits.max_in_flight),
            held: Mutex::default(),
            limits,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A place in the pool for a request of `principal` (`None`: a public route), or why
    /// there is none. Never waits: a full pool answers at once.
    pub fn admit(self: &Arc<Self>, principal: Option<&str>) -> Result<Ticket, Refused> {
        let share = match principal {
            None => None,
            Some(name) => {
                let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
                let n = held.entry(name.to_string()).or_default();
                if *n >= self.share {
                    return Err(Refused::PrincipalOverloaded { share: self.share });
                }
                *n += 1;
                Some(Share { admission: self.clone(), principal: name.to_string() })
            }
        };
        // A full pool drops `share` here, giving the principal's place back.
        let slot = self.slots.clone().try_acquire_owned().map_err(|_| Refused::Overloaded)?;
        Ok(Ticket { _slot: slot, _share: share })
    }

    /// The request with its body read whole within the body-read timeout and the size limit:
    /// a client that sends its body slowly is answered `408` long before the request
    /// timeout, holding its place for seconds, not for the whole request timeout.
    pub async fn read_body(&self, request: Request) -> Result<Request, Response> {
        let (parts, mut body) = request.into_parts();
        let deadline = tokio::time::Instant::now() + self.limits.body_timeout;
        let mut bytes: Vec<u8> = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => {
                    return Err(ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "body_timeout",
                        format!("the request body did not arrive within {:?}", self.limits.body_timeout),
                    )
                    .into_response())
                }
                Ok(None) => break,
                Ok(Some(Err(_))) => {
                    return Err(ApiError::new(StatusCode::BAD_REQUEST, "body_unreadable", "the request body broke off")
                        .into_response())
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        if bytes.len() + data.len() > self.limits.max_body_bytes {
                            return Err(ApiError::new(
                                StatusCode::PAYLOAD_TOO_LARGE,
                                "body_too_large",
                                format!("body exceeds {} bytes", self.limits.max_body_bytes),
                            )
                            .into_response());
                        }
                        bytes.extend_from_slice(&data);
                    }
                }
            }
        }
        Ok(Request::from_parts(parts, Body::from(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max_in_flight: usize) -> Arc<Admission> {
        Admission::new(Limits { max_in_flight, ..Limits::default() })
    }

    #[test]
    fn a_principal_may_hold_half_the_pool_and_at_least_one_place() {
        assert_eq!([1, 2, 3, 8, 1024].map(principal_share), [1, 1, 2, 4, 512]);
        assert_eq!(principal_share(0), 1);
    }

    #[test]
    fn a_principal_at_its_share_is_refused_while_another_is_admitted_and_a_finished_request_frees_its_place() {
        let pool = admission(8);
        let held: Vec<Ticket> = (0..4).map(|_| pool.admit(Some("slow")).expect("within its share")).collect();
        assert_eq!(pool.admit(Some("slow")).err(), Some(Refused::PrincipalOverloaded { share: 4 }));
        let other = pool.admit(Some("other")).expect("another principal is served");
        drop(held);
        drop(other);
        let again: Vec<Ticket> = (0..4).map(|_| pool.admit(Some("slow")).expect("places given back")).collect();
        assert_eq!(again.len(), 4);
    }

    #[test]
    fn a_full_pool_refuses_everyone_and_gives_the_principals_share_back() {
        let pool = admission(2);
        let _a = pool.admit(Some("a")).expect("a");
        let _public = pool.admit(None).expect("a public route takes a place too");
        assert_eq!(pool.admit(Some("b")).err(), Some(Refused::Overloaded));
        // b's refused attempt did not keep b's share.
        assert_eq!(pool.held.lock().map(|h| h.get("b").copied()).ok().flatten(), None);
    }
}
