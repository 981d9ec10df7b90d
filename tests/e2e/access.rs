//! Every caller is somebody: each route of both services refuses a request without a
//! token (401) or without the route's scope (403) and takes one with it; OIDC tokens are
//! checked for signature, expiry and audience; idempotency keys are per principal; a burst
//! past the rate limit is answered 429 and then served again; a cross-site form post
//! cannot publish anything; one principal's slow bodies hold at most its share of the
//! in-flight pool, never the health checks, and a body that arrives too slowly is 408.
use crate::common;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use infra::auth::{AuthConfig, Authenticator, JwksSource, OidcConfig, Scope};
use infra::http::{Access, Limits, Need};
use serde_json::{json, Value};

const ORDER: &str = "5d2c7c0e-8a3b-4c1d-9e2f-0a1b2c3d4e5f";

/// A valid body for each publishing route, and the path with its parameters filled in.
fn publishing_request(template: &str) -> (String, Value) {
    let path = template.replace("{order_id}", ORDER).replace("{sku}", "SKU-ACCESS");
    let body = match template {
        "/orders" => json!({"customer_id": "c-1", "currency": "EUR",
            "lines": [{"sku": "SKU-1", "quantity": 1, "unit_price_minor": 100}], "ship_to": {"country": "DE"}}),
        "/orders/{order_id}/cancel" => json!({}),
        "/orders/{order_id}/payments" => json!({"status": "captured", "amount_minor": 100, "provider_ref": "p"}),
        "/orders/{order_id}/shipments" => json!({"status": "packed", "warehouse": "BER-1"}),
        "/inventory/{sku}/adjustments" => json!({"warehouse": "BER-1", "delta": 3, "reason": "received"}),
        "/inventory/{sku}/transfers" => json!({"transfer_id": ORDER, "units": 1, "to_region": "us", "warehouse": "W"}),
        "/inventory/{sku}/transfer-receipts" => {
            json!({"transfer_id": ORDER, "units": 1, "from_region": "us", "warehouse": "W"})
        }
        _ => json!({}),
    };
    (path, body)
}

/// A principal without `scope` (the one-scope principal of another scope).
fn other_than(scope: Scope) -> String {
    let other = Scope::ALL.into_iter().find(|s| *s != scope).expect("another scope");
    format!("only-{other}")
}

async fn send(
    method: &str,
    url: &str,
    principal: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let client = reqwest::Client::new();
    let mut request = if method == "POST" { client.post(url) } else { client.get(url) };
    if let Some(principal) = principal {
        request = request.bearer_auth(common::token(principal));
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("http");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), headers)
}

/// For each route of a service: no token 401, a token without the route's scope 403 (both
/// JSON naming the scope), the route's scope accepted; public routes need nothing.
async fn every_route_is_guarded(base: &str, routes: &[infra::http::RouteAccess]) {
    for route in routes {
        let method = route.method.as_str();
        let (path, body) = publishing_request(&route.path);
        let body = (method == "POST").then_some(&body);
        let url = format!("{base}{path}");
        match route.need {
            Need::Public => {
                let (status, answer, _) = send(method, &url, None, body).await;
                assert!(status != 401 && status != 403, "{method} {path} is public: {status} {answer}");
            }
            Need::Authenticated => {
                let (status, answer, _) = send(method, &url, None, body).await;
                assert_eq!(status, 401, "{method} {path} without a token: {answer}");
            }
            Need::Scope(scope) => {
                let (status, answer, headers) = send(method, &url, None, body).await;
                assert_eq!(status, 401, "{method} {path} without a token: {answer}");
                assert_eq!(answer["error"], "unauthenticated", "{answer}");
                assert_eq!(answer["scope"], scope.as_str(), "the 401 names the scope needed: {answer}");
                assert!(headers.contains_key("www-authenticate"), "{method} {path}: no WWW-Authenticate");

                let (status, answer, _) = send(method, &url, Some(&other_than(scope)), body).await;
                assert_eq!(status, 403, "{method} {path} with another scope: {answer}");
                assert_eq!(answer["error"], "forbidden", "{answer}");
                assert_eq!(answer["scope"], scope.as_str(), "the 403 names the scope needed: {answer}");

                let (status, answer, _) = send(method, &url, Some(&format!("only-{scope}")), body).await;
                assert!(
                    status < 400 || status == 404,
                    "{method} {path} with scope {scope} must be served, got {status} {answer}"
                );
            }
        }
    }
    let (status, _, _) = send("GET", &format!("{base}/healthz"), Some("nobody-knows-me"), None).await;
    assert_eq!(status, 200, "a health check ignores credentials");
    let (status, answer, _) = send("GET", &format!("{base}/metrics"), None, None).await;
    assert_eq!((status, answer["scope"].as_str()), (401, Some("ops")), "/metrics needs ops");
    let client = reqwest::Client::new();
    let response = client.get(format!("{base}/metrics")).bearer_auth("not-a-token").send().await.expect("http");
    assert_eq!(response.status().as_u16(), 401, "an unknown token is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_checkout_route_refuses_no_token_and_the_wrong_scope_and_serves_the_right_one() {
    let kafka = common::kafka();
    let topic = common::fresh_topic("access-checkout", 2).await;
    let app = common::TestCheckout::spawn(&kafka, &topic, Duration::from_secs(10)).await;
    every_route_is_guarded(&app.base_url, producers::checkout::routes().access()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_api_route_refuses_no_token_and_the_wrong_scope_and_serves_the_right_one() {
    let topic = common::fresh_topic("access-api", 2).await;
    let database_url = common::fresh_database().await;
    let api =
        common::ServeApi::spawn(&database_url, &topic, &common::fresh_group_prefix(), Duration::from_secs(1)).await;
    every_route_is_guarded(&api.base_url, orderflow::query_api::routes().access()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_from_two_principals_places_two_orders() {
    let kafka = common::kafka();
    let topic = common::fresh_topic("access-keys", 2).await;
    let app = common::TestCheckout::spawn(&kafka, &topic, Duration::from_secs(10)).await;
    let (_, body) = publishing_request("/orders");
    let url = format!("{}/orders", app.base_url);
    let place = |principal: &'static str| {
        let (url, body) = (url.clone(), body.clone());
        async move {
            let response = reqwest::Client::new()
                .post(&url)
                .bearer_auth(common::token(principal))
                .header("idempotency-key", "shared-key-1")
                .json(&body)
                .send()
                .await
                .expect("http");
            assert_eq!(response.status().as_u16(), 202);
            response.json::<Value>().await.expect("json")
        }
    };
    let first = place("only-orders:write").await;
    let again = place("only-orders:write").await;
    let other = place(common::ALL_SCOPES).await;
    assert_eq!(first["order_id"], again["order_id"], "the same principal's retry is the same order");
    assert_ne!(first["order_id"], other["order_id"], "another principal's key is another order");
    let records = common::read_topic(&kafka, &topic, 2);
    assert_eq!(records.len(), 2, "two orders in the log, not one and not three");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_past_the_rate_limit_is_answered_429_with_retry_after_and_then_served_again() {
    let kafka = common::kafka();
    let topic = common::fresh_topic("access-rate", 1).await;
    let limits = Limits { per_principal_per_second: std::num::NonZeroU32::new(5), ..Limits::default() };
    let app =
        common::TestCheckout::spawn_with(&kafka, &topic, Duration::from_secs(10), common::test_access_with(limits))
            .await;
    let url = format!("{}/openapi.json", app.base_url);
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..20 {
        let (status, _, headers) = send("GET", &url, Some(common::ALL_SCOPES), None).await;
        if status == 429 {
            retry_after = headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        }
        statuses.push(status);
    }
    assert!(statuses.iter().take(5).all(|s| *s == 200), "the burst allowance is served: {statuses:?}");
    assert!(statuses.contains(&429), "a burst of 20 at 5/s must be limited: {statuses:?}");
    let wait = retry_after.expect("429 carries Retry-After");
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    let (status, _, _) = send("GET", &url, Some("only-read"), None).await;
    assert_eq!(status, 200, "the limit is per principal: another one is served meanwhile");
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let (status, _, _) = send("GET", &url, Some(common::ALL_SCOPES), None).await;
    assert_eq!(status, 200, "served again after Retry-After");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_form_post_cannot_cancel_an_order() {
    let kafka = common::kafka();
    let topic = common::fresh_topic("access-csrf", 1).await;
    let app = common::TestCheckout::spawn(&kafka, &topic, Duration::from_secs(10)).await;
    let url = format!("{}/orders/{ORDER}/cancel", app.base_url);
    let client = reqwest::Client::new();
    // What a page on another site can make a browser send: a form post, no custom headers.
    for content_type in ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x"] {
        let response = client.post(&url).header("content-type", content_type).send().await.expect("http");
        assert_eq!(response.status().as_u16(), 401, "{content_type}: a browser sends no bearer token");
        // Even with a token (a script that somehow holds one) the body type is refused.
        let response = client
            .post(&url)
            .bearer_auth(common::token(common::ALL_SCOPES))
            .header("content-type", content_type)
            .send()
            .await
            .expect("http");
        assert_eq!(response.status().as_u16(), 415, "{content_type}: only JSON is published");
    }
    let response = client.post(&url).bearer_auth(common::token(common::ALL_SCOPES)).send().await.expect("http");
    assert_eq!(response.status().as_u16(), 415, "an empty POST without a content type is refused too");
    let records = common::read_topic(&kafka, &topic, 0);
    assert!(records.is_empty(), "nothing was published: {records:?}");
}

/// An ES256 signing key of a made-up identity provider and its JWKS.
struct Provider {
    key: jsonwebtoken::EncodingKey,
    jwks: Value,
}

impl Provider {
    fn new(kid: &str) -> Provider {
        use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("pair");
        // An uncompressed P-256 point: 0x04, then x and y, 32 bytes each.
        let point = pair.public_key().as_ref();
        let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])}]});
        Provider { key: jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()), jwks }
    }

    fn token(&self, kid: &str, claims: Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(kid.to_string());
        jsonwebtoken::encode(&header, &claims, &self.key).expect("sign")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_tokens_are_accepted_only_when_signed_by_the_jwks_unexpired_and_for_our_audience() {
    let provider = Provider::new("k1");
    let forger = Provider::new("k1");
    // The JWKS served over HTTP, as an identity provider does.
    let jwks = provider.jwks.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let jwks_url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
    let idp = tokio::spawn(async move {
        let app = axum::Router::new().route("/jwks.json", axum::routing::get(move || async move { axum::Json(jwks) }));
        let _ = axum::serve(listener, app).await;
    });
    let issuer = "https://idp.example";
    let config = AuthConfig {
        tokens_file: None,
        oidc: Some(OidcConfig { jwks: JwksSource::Url(jwks_url), issuer: issuer.into(), audience: "orderflow".into() }),
        insecure_no_auth: false,
    };
    let access = Access::new(Authenticator::from_config(&config).await.expect("oidc"), Limits::default());
    let kafka = common::kafka();
    let topic = common::fresh_topic("access-oidc", 1).await;
    let app = common::TestCheckout::spawn_with(&kafka, &topic, Duration::from_secs(10), access).await;

    let now = chrono::Utc::now().timestamp();
    let claims = |aud: &str, exp: i64, scope: &str| json!({"iss": issuer, "aud": aud, "sub": "payment-provider", "exp": exp, "iat": now, "scope": scope});
    let good = provider.token("k1", claims("orderflow", now + 300, "openid payments:write"));
    let cases = [
        ("a forged signature", forger.token("k1", claims("orderflow", now + 300, "payments:write")), 401),
        ("an expired token", provider.token("k1", claims("orderflow", now - 600, "payments:write")), 401),
        ("another audience", provider.token("k1", claims("billing", now + 300, "payments:write")), 401),
        ("an unknown key id", provider.token("k2", claims("orderflow", now + 300, "payments:write")), 401),
        ("a token without the scope", provider.token("k1", claims("orderflow", now + 300, "orders:write")), 403),
        (
            "a token not valid yet (nbf)",
            provider.token("k1", {
                let mut c = claims("orderflow", now + 900, "payments:write");
                c["nbf"] = json!(now + 600);
                c
            }),
            401,
        ),
        (
            "a sub naming the order process",
            provider.token("k1", {
                let mut c = claims("orderflow", now + 300, "payments:write");
                c["sub"] = json!("order-process");
                c
            }),
            401,
        ),
        ("a valid token", good.clone(), 202),
    ];
    let (path, body) = publishing_request("/orders/{order_id}/payments");
    for (what, token, want) in cases {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", app.base_url))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .expect("http");
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, want, "{what}: {answer}");
    }
    let mut tampered = good.clone();
    tampered.insert(good.find('.').expect("jwt") + 2, 'x');
    let response =
        reqwest::Client::new().get(format!("{}/openapi.json", app.base_url)).bearer_auth(&tampered).send().await;
    assert_eq!(response.expect("http").status().as_u16(), 401, "a tampered token");
    idp.abort();
}

/// Sends a POST's headers and the first bytes of a body it promises to be longer, then
/// holds the connection: a slow client.
async fn slow_body(base: &str, principal: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    let head = format!(
        "POST /orders HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\n\
         idempotency-key: {}\r\ncontent-length: 400\r\n\r\n{{\"customer_id\":",
        common::token(principal),
        uuid::Uuid::new_v4()
    );
    stream.write_all(head.as_bytes()).await.expect("send the head");
    stream
}

/// What the server answered on a raw connection within `wait`, if anything: the status line.
async fn answered(stream: &mut tokio::net::TcpStream, wait: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(wait, stream.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => String::from_utf8_lossy(&buf[..n]).lines().next().map(str::to_string),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_principal_holding_slow_bodies_leaves_another_principal_and_the_health_checks_served() {
    let kafka = common::kafka();
    let topic = common::fresh_topic("access-share", 1).await;
    let limits = Limits {
        max_in_flight: 8,
        body_timeout: Duration::from_secs(30),
        per_principal_per_second: None,
        ..Limits::default()
    };
    let app =
        common::TestCheckout::spawn_with(&kafka, &topic, Duration::from_secs(10), common::test_access_with(limits))
            .await;
    let (path, body) = publishing_request("/orders");
    // `--max-in-flight` (8) slow bodies from one principal: half are held, half refused.
    let mut slow = Vec::new();
    for _ in 0..8 {
        slow.push(slow_body(&app.base_url, "only-orders:write").await);
    }
    let mut refused = 0;
    for stream in &mut slow {
        if let Some(status) = answered(stream, Duration::from_millis(300)).await {
            assert!(status.contains(" 503 "), "a request past the principal's share is 503 at once: {status}");
            refused += 1;
        }
    }
    assert_eq!(refused, 4, "the principal holds its share (half the pool), the rest is refused");
    let (status, answer, _) =
        send("POST", &format!("{}{path}", app.base_url), Some(common::ALL_SCOPES), Some(&body)).await;
    assert_eq!(status, 202, "another principal is served meanwhile: {answer}");
    for health in ["/healthz", "/readyz"] {
        let (status, answer, _) = send("GET", &format!("{}{health}", app.base_url), None, None).await;
        assert_eq!(status, 200, "{health} is answered outside the pool: {answer}");
    }
    drop(slow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_arrives_too_slowly_is_answered_408_within_the_body_timeout() {
    let kafka = common::kafka();
    let topic = common::fresh_topic("access-body", 1).await;
    let limits = Limits { body_timeout: Duration::from_secs(1), ..Limits::default() };
    let app =
        common::TestCheckout::spawn_with(&kafka, &topic, Duration::from_secs(10), common::test_access_with(limits))
            .await;
    let mut stream = slow_body(&app.base_url, common::ALL_SCOPES).await;
    let status = answered(&mut stream, Duration::from_secs(10)).await.expect("an answer before the request timeout");
    assert!(status.contains(" 408 "), "{status}");
}

/// Whether the server closed `stream` within `wait` (end of stream or a reset), reading
/// and dropping whatever it sent before closing.
async fn closed_within(stream: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = vec![0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// A checkout with these connection limits on a fresh topic, and its address.
async fn checkout_with_connection_limits(
    prefix: &str,
    header_timeout: Duration,
    max_connections: usize,
) -> (common::TestCheckout, String) {
    let connections =
        infra::serve::ConnectionLimits { header_timeout, max_connections, ..infra::serve::ConnectionLimits::default() };
    let access = common::test_access_with(Limits { connections, ..Limits::default() });
    let topic = common::fresh_topic(prefix, 1).await;
    let app = common::TestCheckout::spawn_with(&common::kafka(), &topic, Duration::from_secs(10), access).await;
    let address = app.base_url.trim_start_matches("http://").to_string();
    (app, address)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_headers_and_idle_connections_are_closed_within_the_header_timeout() {
    use tokio::io::AsyncWriteExt;
    let (app, address) = checkout_with_connection_limits("access-headers", Duration::from_secs(1), 4_096).await;
    let mut held = Vec::new();
    for i in 0..300 {
        let mut stream = tokio::net::TcpStream::connect(&address).await.expect("connect");
        if i % 2 == 0 {
            // A head that never ends: 8 KiB of one header, no blank line.
            let head = format!("GET /openapi.json HTTP/1.1\r\nhost: x\r\nx-pad: {}", "a".repeat(8 * 1024));
            stream.write_all(head.as_bytes()).await.expect("send a partial head");
        }
        held.push(stream);
    }
    for (i, stream) in held.iter_mut().enumerate() {
        assert!(closed_within(stream, Duration::from_secs(10)).await, "connection {i} is still open");
    }
    // A head over the size limit is refused with 431, and the service still serves.
    let mut stream = tokio::net::TcpStream::connect(&address).await.expect("connect");
    let head = format!("GET /healthz HTTP/1.1\r\nhost: x\r\nx-pad: {}\r\n\r\n", "a".repeat(32 * 1024));
    stream.write_all(head.as_bytes()).await.expect("send a large head");
    let status = answered(&mut stream, Duration::from_secs(5)).await.unwrap_or_default();
    assert!(status.contains(" 431 ") || status.is_empty(), "{status}");
    let (status, answer, _) = send("GET", &format!("{}/healthz", app.base_url), None, None).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed_as_they_arrive_and_served_again_once_others_close() {
    let (app, address) = checkout_with_connection_limits("access-connections", Duration::from_secs(30), 4).await;
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(tokio::net::TcpStream::connect(&address).await.expect("connect"));
    }
    // Give the server the moment it takes to accept them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut fifth = tokio::net::TcpStream::connect(&address).await.expect("connect");
    assert!(closed_within(&mut fifth, Duration::from_secs(5)).await, "the fifth connection is closed at once");
    drop(open);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, answer, _) = send("GET", &format!("{}/healthz", app.base_url), None, None).await;
    assert_eq!(status, 200, "served again once the others closed: {answer}");
}

/// A self-signed certificate for 127.0.0.1 named `name`, made by openssl and moved into
/// `dir/cert.pem` and `dir/key.pem` whole (a watcher never reads half a pair); its PEM.
fn issue_certificate(dir: &std::path::Path, name: &str) -> Vec<u8> {
    let (cert, key) = (dir.join(format!("{name}.cert")), dir.join(format!("{name}.key")));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", &format!("/CN={name}"), "-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(made.status.success(), "openssl: {}", String::from_utf8_lossy(&made.stderr));
    let pem = std::fs::read(&cert).expect("certificate");
    std::fs::rename(&key, dir.join("key.pem")).expect("key in place");
    std::fs::rename(&cert, dir.join("cert.pem")).expect("certificate in place");
    pem
}

/// The status of `GET url` from a client that trusts only `root`, on a new connection.
async fn https_status(url: &str, root: &[u8]) -> Result<u16, String> {
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(root).expect("certificate"))
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    client.get(url).send().await.map(|r| r.status().as_u16()).map_err(|e| infra::error_chain(&e))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_services_serve_https_with_a_generated_certificate_and_take_a_renewed_one_without_a_restart() {
    let dir = std::env::temp_dir().join(format!("orderflow-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let first = issue_certificate(&dir, "first");
    let files = infra::tls::TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem") };
    let tls = infra::tls::Tls::load(&files).expect("the pair loads");
    let access = common::test_access().with_tls(tls.clone());
    let topic = common::fresh_topic("access-tls", 1).await;
    let checkout =
        common::TestCheckout::spawn_with(&common::kafka(), &topic, Duration::from_secs(10), access.clone()).await;
    let database_url = common::fresh_database().await;
    let api = common::ServeApi::spawn_with_access(
        &common::kafka(),
        &database_url,
        &topic,
        &common::fresh_group_prefix(),
        Duration::from_secs(1),
        access,
    )
    .await;
    let https = |base: &str| format!("{}/healthz", base.replacen("http://", "https://", 1));
    for base in [&checkout.base_url, &api.base_url] {
        assert_eq!(https_status(&https(base), &first).await, Ok(200), "{base} over https");
        let plain = reqwest::get(format!("{base}/healthz")).await.map(|r| r.status().as_u16());
        assert!(!matches!(plain, Ok(200)), "{base}: plain http is not served: {plain:?}");
    }

    // Renewed in place: new connections get the new certificate within the reload interval.
    let second = issue_certificate(&dir, "second");
    for base in [&checkout.base_url, &api.base_url] {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while https_status(&https(base), &second).await != Ok(200) {
            assert!(std::time::Instant::now() < deadline, "{base} still serves the first certificate");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(https_status(&https(base), &first).await.is_err(), "{base}: the first certificate is no longer served");
    }

    // A broken pair (a key without its certificate) changes nothing: the second stays.
    std::fs::write(dir.join("cert.pem"), b"-----BEGIN CERTIFICATE-----\nnot base64\n").expect("break");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(https_status(&https(&api.base_url), &second).await, Ok(200));
    drop(tls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_shop_that_placed_an_order_may_cancel_it_and_a_refused_cancel_appends_nothing() {
    let topic = common::fresh_topic("access-owner", 1).await;
    let app = common::TestCheckout::spawn(&common::kafka(), &topic, Duration::from_secs(10)).await;
    let (shop, rival) = (common::ALL_SCOPES, "only-orders:write");
    let body = json!({"customer_id": "c-1", "currency": "EUR",
        "lines": [{"sku": "SKU-1", "quantity": 1, "unit_price_minor": 500}], "ship_to": {"country": "DE"}});
    let (status, placed, _) = send("POST", &format!("{}/orders", app.base_url), Some(shop), Some(&body)).await;
    assert_eq!(status, 202, "{placed}");
    let order = placed["order_id"].as_str().expect("order id").to_string();
    let cancel = format!("{}/orders/{order}/cancel", app.base_url);

    // Another shop, with the scope to cancel its own orders, may not cancel this one.
    let (status, refused, _) = send("POST", &cancel, Some(rival), Some(&json!({"reason": "rival"}))).await;
    assert_eq!((status, refused["error"].as_str()), (403, Some("not_owner")), "{refused}");
    let upper = format!("{}/orders/{}/cancel", app.base_url, order.to_uppercase());
    let (status, _, _) = send("POST", &upper, Some(rival), Some(&json!({"reason": "rival"}))).await;
    assert_eq!(status, 403, "the same order however its id is cased");
    assert_eq!(common::log_ends(&common::kafka(), &topic).await.values().sum::<i64>(), 1, "only the placement");

    // The owner may; an order this checkout never placed is left to the consumers.
    let (status, answer, _) = send("POST", &cancel, Some(shop), Some(&json!({"reason": "changed mind"}))).await;
    assert_eq!(status, 202, "{answer}");
    let unknown = format!("{}/orders/{}/cancel", app.base_url, uuid::Uuid::new_v4());
    let (status, answer, _) = send("POST", &unknown, Some(rival), Some(&json!({}))).await;
    assert_eq!(status, 202, "{answer}");
}
