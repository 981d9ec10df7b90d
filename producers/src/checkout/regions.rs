//! A checkout in one of several regions. Each order is written by its home region's
//! checkout alone (one writer per order's stream, whatever region a client reaches): a
//! request about an order homed elsewhere, and a retry of `POST /orders` that names the
//! region which first answered it, is forwarded to that region's checkout and its answer
//! passed back. When the home cannot be reached the answer is `503
//! home_region_unavailable` and nothing is appended anywhere: appending here would make a
//! second writer of the order, and the home may be up and appending meanwhile.
use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use schemas::Region;
use uuid::Uuid;

use super::api_error::{malformed, ApiError};
use crate::error::CheckoutError;

/// A request header: the region a client's earlier attempt of this `POST /orders` was
/// answered by (its `202` or `503` body's `region`). The retry goes there, so one
/// Idempotency-Key never creates orders in two regions.
pub const REGION_HEADER: &str = "orderflow-region";
/// Set on a forwarded request: the checkout that forwarded it. A checkout never forwards a
/// forwarded request again (no loops between misconfigured regions).
pub const FORWARDED_FROM_HEADER: &str = "orderflow-forwarded-from";
/// Set on the answer to a forwarded request: the region that answered it.
pub const ANSWERED_BY_HEADER: &str = "orderflow-answered-by";

/// The request headers that go with a forwarded request: what the home checkout reads.
const FORWARDED_HEADERS: [&str; 5] =
    ["authorization", "content-type", "idempotency-key", "x-correlation-id", "x-causation-id"];
/// The answer headers that come back.
const RETURNED_HEADERS: [&str; 3] = ["content-type", "idempotent-replay", "retry-after"];

/// This checkout's region and how to reach the others.
#[derive(Clone)]
pub struct Regions {
    pub here: Region,
    /// Each other region's checkout base URL (`http://host:port`).
    checkouts: BTreeMap<Region, String>,
    /// Which region serves each destination country; empty: orders stay where placed.
    destinations: BTreeMap<String, Region>,
    client: reqwest::Client,
    /// Who writes each region's orders now (handovers: takeovers, failbacks).
    owners: tokio::sync::watch::Receiver<schemas::Owners>,
}

impl Regions {
    /// `timeout` bounds a whole forwarded request; it should exceed the home checkout's
    /// publish timeout, so its answer (not ours) decides.
    pub fn new(here: Region, checkouts: BTreeMap<Region, String>, timeout: Duration) -> Result<Self, CheckoutError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(CheckoutError::Forwarder)?;
        let checkouts = checkouts.into_iter().filter(|(region, _)| *region != here).collect();
        let (_, owners) = tokio::sync::watch::channel(schemas::Owners::default());
        Ok(Regions { here, checkouts, destinations: BTreeMap::new(), client, owners })
    }

    /// Whether `region` is this one or one whose checkout this one knows.
    pub fn knows(&self, region: &Region) -> bool {
        *region == self.here || self.checkouts.contains_key(region)
    }

    /// Follows the handovers `owners` sees: a region taken over is written by its new
    /// owner, and requests for its orders go there.
    pub fn with_owners(mut self, owners: tokio::sync::watch::Receiver<schemas::Owners>) -> Self {
        self.owners = owners;
        self
    }

    /// The handovers as this checkout knows them now.
    pub fn owners(&self) -> tokio::sync::watch::Receiver<schemas::Owners> {
        self.owners.clone()
    }

    /// The region other than this one that should write this request, if any: whoever
    /// writes the order's home's orders now (the home, or the region that took it over),
    /// or the region a retry of `POST /orders` names. A new order goes to whoever writes
    /// this region's orders (this region, unless it was taken over). A request another
    /// checkout forwarded is never forwarded again. While the order's home is handed back
    /// (a failback's drain), writes about its orders are `503 region_draining`.
    pub fn elsewhere(&self, order_id: Option<&Uuid>, headers: &HeaderMap) -> Result<Option<Region>, ApiError> {
        let owners = self.owners.borrow().clone();
        let home = match order_id {
            Some(id) => Region::home_of(id),
            None => Some(region_header(headers)?.unwrap_or_else(|| self.here.clone())),
        };
        if let Some(home) = home.as_ref().filter(|home| order_id.is_some() && owners.is_draining(home)) {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "region_draining",
                format!("the orders of region {home} are being handed back to it; nothing was appended, retry shortly"),
            )
            .with("region", self.here.as_str())
            .with("home_region", home.as_str())
            .retry_after(Duration::from_secs(2)));
        }
        let target = home.map(|home| owners.owner_of(&home).0);
        let Some(target) = target.filter(|t| *t != self.here) else { return Ok(None) };
        if headers.contains_key(FORWARDED_FROM_HEADER) {
            return Err(ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "not_home_region",
                format!("this request belongs to region {target}, and was forwarded here; nothing was appended"),
            )
            .with("region", self.here.as_str())
            .with("home_region", target.as_str()));
        }
        Ok(Some(target))
    }

    /// Sends the request to `home`'s checkout and returns its answer as it is. `503
    /// home_region_unavailable` when the request did not reach it (nothing appended
    /// anywhere); `503 outcome_unknown` when it was sent but no answer came.
    #[tracing::instrument(skip_all, fields(home = %home, path))]
    pub async fn forward(
        &self,
        home: &Region,
        path: &str,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Response, ApiError> {
        let unavailable = || {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "home_region_unavailable",
                format!("this order belongs to region {home}, whose checkout cannot be reached; nothing was appended anywhere, retry later"),
            )
            .with("region", self.here.as_str())
            .with("home_region", home.as_str())
            .retry_after(Duration::from_secs(5))
        };
        let Some(base) = self.checkouts.get(home) else {
            tracing::warn!(%home, "A request names a region this checkout has no URL for. Answering 503.");
            return Err(unavailable());
        };
        let body = axum::body::to_bytes(body, super::MAX_BODY_BYTES).await.map_err(|_| body_too_large())?;
        let mut request = self.client.post(format!("{}{path}", base.trim_end_matches('/'))).body(body);
        for name in FORWARDED_HEADERS {
            for value in headers.get_all(name) {
                request = request.header(name, value.as_bytes());
            }
        }
        let request = request.header(FORWARDED_FROM_HEADER, self.here.as_str());
        let started = std::time::Instant::now();
        let answer = match request.send().await {
            Ok(answer) => answer,
            Err(e) if e.is_connect() || e.is_builder() => {
                tracing::warn!(error = %e, %home, "The home region's checkout cannot be reached. Answering 503; nothing appended.");
                return Err(unavailable());
            }
            Err(e) => {
                tracing::warn!(error = %e, %home, "The home region's checkout did not answer a forwarded request. Its outcome is unknown.");
                return Err(super::api_error::outcome_unknown()
                    .with("region", self.here.as_str())
                    .with("home_region", home.as_str()));
            }
        };
        metrics::histogram!("orderflow_checkout_forward_seconds", "home" => home.to_string())
            .record(started.elapsed().as_secs_f64());
        let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut returned = HeaderMap::new();
        for name in RETURNED_HEADERS {
            if let Some(value) = answer.headers().get(name).and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok()) {
                returned.insert(HeaderName::from_static(name), value);
            }
        }
        if let Ok(value) = HeaderValue::from_str(home.as_str()) {
            returned.insert(HeaderName::from_static(ANSWERED_BY_HEADER), value);
        }
        let bytes = match answer.bytes().await {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(error = %e, %home, "The home region's answer broke off. Its outcome is unknown.");
                return Err(super::api_error::outcome_unknown().with("region", self.here.as_str()));
            }
        };
        Ok((status, returned, bytes).into_response())
    }
}

/// The region a request's `Orderflow-Region` header names, if it has one; a value that
/// is no region name is `400 malformed_request`.
pub fn region_header(headers: &HeaderMap) -> Result<Option<Region>, ApiError> {
    headers
        .get(REGION_HEADER)
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|v| Region::parse(v).ok())
                .ok_or_else(|| malformed(format!("{REGION_HEADER} must be a region name such as eu")))
        })
        .transpose()
}

fn body_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("body exceeds {} bytes", super::MAX_BODY_BYTES),
    )
}

impl Regions {
    /// The region that serves each destination country (`ship_to.country`, ISO 3166-1
    /// alpha-2): a new order is homed there, decided on that region's stock and shipped
    /// from its warehouses.
    pub fn with_destinations(mut self, destinations: BTreeMap<String, Region>) -> Self {
        self.destinations = destinations;
        self
    }

    /// Where a new order should be placed, by its destination: `Some(region)` when another
    /// region serves it. Not for a retry naming its region, nor a forwarded request.
    fn serving(&self, headers: &HeaderMap, body: &[u8]) -> Option<Region> {
        if self.destinations.is_empty()
            || headers.contains_key(REGION_HEADER)
            || headers.contains_key(FORWARDED_FROM_HEADER)
        {
            return None;
        }
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        let country = value.get("ship_to")?.get("country")?.as_str()?.to_ascii_uppercase();
        self.destinations.get(&country).filter(|region| **region != self.here).cloned()
    }

    /// A new order placed here whose destination another region serves goes there. If that
    /// region cannot be reached the order is placed here (a region down must not stop the
    /// shop; it ships from farther away), with a WARN. `None`: place it here.
    pub async fn place_by_destination(&self, request: &mut super::Publish) -> Result<Option<Response>, ApiError> {
        if self.destinations.is_empty() {
            return Ok(None);
        }
        let body = std::mem::take(&mut request.body);
        let bytes = axum::body::to_bytes(body, super::MAX_BODY_BYTES).await.map_err(|_| body_too_large())?;
        request.body = Body::from(bytes.clone());
        let Some(region) = self.serving(&request.headers, &bytes) else { return Ok(None) };
        match self.forward(&region, &request.path, &request.headers, Body::from(bytes)).await {
            Err(e) if e.code() == "home_region_unavailable" => {
                tracing::warn!(serving = %region, "The region serving this order's destination cannot be reached. Placing it here.");
                Ok(None)
            }
            answer => answer.map(Some),
        }
    }
}

/// Parses `--country-region` entries: `<country>=<region>` (`DE=eu`).
pub fn parse_destination(entry: &str) -> Result<(String, Region), String> {
    let (country, region) =
        entry.split_once('=').ok_or_else(|| format!("{entry:?} is not <country>=<region>, e.g. DE=eu"))?;
    let country = country.trim();
    if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!("{country:?} is not an ISO 3166-1 alpha-2 country code such as DE"));
    }
    Ok((country.to_string(), Region::parse(region.trim())?))
}

/// Parses `--region-checkout` entries: `<region>=<base URL>`.
pub fn parse_checkout(entry: &str) -> Result<(Region, String), String> {
    let (region, url) = entry
        .split_once('=')
        .ok_or_else(|| format!("{entry:?} is not <region>=<checkout URL>, e.g. us=http://10.0.0.7:8080"))?;
    let region = Region::parse(region.trim())?;
    let url = url.trim();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("{url:?} is not an http:// or https:// URL"));
    }
    Ok((region, url.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regions() -> Regions {
        let checkouts = [(Region::parse("us").expect("a region name"), "http://127.0.0.1:1".to_string())].into();
        Regions::new(Region::parse("eu").expect("a region name"), checkouts, Duration::from_secs(1)).expect("accepted")
    }

    #[test]
    fn requests_about_orders_homed_elsewhere_go_to_their_home() {
        let regions = regions();
        let us = Region::parse("us").expect("a region name");
        let here = regions.here.order_id([1; 16]);
        let there = us.order_id([1; 16]);
        let none = HeaderMap::new();
        assert_eq!(regions.elsewhere(Some(&here), &none).expect("accepted"), None);
        assert_eq!(regions.elsewhere(Some(&there), &none).expect("accepted"), Some(us.clone()));
        assert_eq!(regions.elsewhere(Some(&Uuid::new_v4()), &none).expect("accepted"), None, "no home: this log's");
        let mut retry = HeaderMap::new();
        retry.insert(REGION_HEADER, HeaderValue::from_static("us"));
        assert_eq!(regions.elsewhere(None, &retry).expect("accepted"), Some(us));
        retry.insert(REGION_HEADER, HeaderValue::from_static("eu"));
        assert_eq!(regions.elsewhere(None, &retry).expect("accepted"), None);
        retry.insert(REGION_HEADER, HeaderValue::from_static("Mars!"));
        assert_eq!(regions.elsewhere(None, &retry).expect_err("refused").status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_forwarded_request_is_never_forwarded_again() {
        let regions = regions();
        let mut headers = HeaderMap::new();
        headers.insert(FORWARDED_FROM_HEADER, HeaderValue::from_static("us"));
        let there = Region::parse("us").expect("a region name").order_id([2; 16]);
        let refused = regions.elsewhere(Some(&there), &headers).expect_err("refused");
        assert_eq!((refused.status, refused.code()), (StatusCode::MISDIRECTED_REQUEST, "not_home_region"));
    }

    #[tokio::test]
    async fn an_unreachable_home_is_503_home_region_unavailable() {
        let regions = regions();
        let us = Region::parse("us").expect("a region name");
        let refused = regions.forward(&us, "/orders", &HeaderMap::new(), Body::from("{}")).await.expect_err("refused");
        assert_eq!((refused.status, refused.code()), (StatusCode::SERVICE_UNAVAILABLE, "home_region_unavailable"));
        let unknown = Region::parse("ap").expect("a region name");
        let refused =
            regions.forward(&unknown, "/orders", &HeaderMap::new(), Body::from("{}")).await.expect_err("refused");
        assert_eq!(refused.code(), "home_region_unavailable");
    }

    #[test]
    fn a_new_order_goes_to_the_region_serving_its_destination_unless_a_retry_names_one() {
        let us = Region::parse("us").expect("a region name");
        let regions = regions().with_destinations(
            [("US".to_string(), us.clone()), ("DE".to_string(), Region::parse("eu").expect("a region name"))].into(),
        );
        let to = |country: &str| format!(r#"{{"ship_to":{{"country":"{country}"}}}}"#).into_bytes();
        let none = HeaderMap::new();
        assert_eq!(regions.serving(&none, &to("US")), Some(us));
        assert_eq!(regions.serving(&none, &to("DE")), None, "served here");
        assert_eq!(regions.serving(&none, &to("FR")), None, "no entry: here");
        assert_eq!(regions.serving(&none, b"not json"), None, "refused later, by the usual checks");
        let mut retry = HeaderMap::new();
        retry.insert(REGION_HEADER, HeaderValue::from_static("eu"));
        assert_eq!(regions.serving(&retry, &to("US")), None, "a retry goes where its first attempt went");
        assert_eq!(
            parse_destination("DE=eu").expect("entry"),
            ("DE".into(), Region::parse("eu").expect("a region name"))
        );
        assert!(
            parse_destination("de=eu").is_err()
                && parse_destination("DEU=eu").is_err()
                && parse_destination("DE").is_err()
        );
    }

    #[test]
    fn checkout_entries_name_a_region_and_a_url() {
        assert_eq!(
            parse_checkout("us=http://10.0.0.7:8080").expect("accepted"),
            (Region::parse("us").expect("a region name"), "http://10.0.0.7:8080".into())
        );
        assert!(parse_checkout("us").is_err());
        assert!(parse_checkout("US=http://x").is_err());
        assert!(parse_checkout("us=ftp://x").is_err());
    }
}
