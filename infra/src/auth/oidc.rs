//! OAuth2/OIDC access tokens: a JWT signed RS256 or ES256 by a key of the identity
//! provider's JWKS, for our issuer and audience, not expired. Its `sub` is the principal
//! and its space-separated `scope` claim the scopes (names we do not know are ignored: an
//! identity provider issues scopes for other services too).
//!
//! A JWKS from a URL is fetched at start (a service that cannot fetch it does not start)
//! and again when a token names a key id we do not have, at most once a minute, so a
//! provider's key rotation needs no restart and a flood of made-up key ids costs nothing.
use std::path::PathBuf;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::RwLock;

use super::{valid_principal_name, AuthError, Denied, Principal, Scope};

/// Where the identity provider's public keys are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    File(PathBuf),
    Url(String),
}

impl JwksSource {
    /// `http(s)://…` is a URL, anything else a file path.
    pub fn parse(raw: &str) -> JwksSource {
        if raw.starts_with("https://") || raw.starts_with("http://") {
            JwksSource::Url(raw.to_string())
        } else {
            JwksSource::File(raw.into())
        }
    }

    /// Refuses a URL whose answers anyone on the network path could forge: the keys it
    /// serves decide who is authenticated, so they come over https, or plain http only
    /// from this host (a loopback address or `localhost`: a provider beside the service,
    /// tests).
    pub fn check_transport(&self) -> Result<(), AuthError> {
        let JwksSource::Url(raw) = self else { return Ok(()) };
        let url = reqwest::Url::parse(raw)
            .map_err(|e| AuthError::Invalid(format!("the JWKS URL {raw:?} is not a URL: {e}")))?;
        let host = url.host_str().unwrap_or("");
        let ip = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>();
        let loopback = host.eq_ignore_ascii_case("localhost") || ip.is_ok_and(|ip| ip.is_loopback());
        match url.scheme() {
            "https" => Ok(()),
            "http" if loopback => Ok(()),
            _ => Err(AuthError::Invalid(format!(
                "the JWKS URL {raw:?} is not https: keys fetched over plain http could be replaced on the way \
                 (plain http is accepted from a loopback address only)"
            ))),
        }
    }
}

#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub jwks: JwksSource,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// An `aud` every token must carry.
    pub audience: String,
}

/// The JWKS is fetched again for an unknown key id at most this often.
const REFRESH_AT_MOST_EVERY: Duration = Duration::from_secs(60);
/// Clock difference tolerated on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 30;

pub(super) struct Oidc {
    config: OidcConfig,
    /// [`REFRESH_AT_MOST_EVERY`]; shorter in tests.
    refresh_every: Duration,
    keys: RwLock<Keys>,
    http: reqwest::Client,
}

struct Keys {
    set: JwkSet,
    fetched_at: Instant,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    scope: Option<String>,
}

impl Oidc {
    pub(super) async fn load(config: OidcConfig) -> Result<Self, AuthError> {
        Self::load_refreshing(config, REFRESH_AT_MOST_EVERY).await
    }

    async fn load_refreshing(config: OidcConfig, refresh_every: Duration) -> Result<Self, AuthError> {
        if config.issuer.is_empty() || config.audience.is_empty() {
            return Err(AuthError::Invalid("OIDC needs --oidc-issuer and --oidc-audience".into()));
        }
        config.jwks.check_transport()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|source| AuthError::Fetch { url: "(client)".into(), source })?;
        let set = fetch(&http, &config.jwks).await?;
        if set.keys.is_empty() {
            return Err(AuthError::Invalid(format!("the JWKS at {:?} has no keys", config.jwks)));
        }
        Ok(Oidc { config, refresh_every, keys: RwLock::new(Keys { set, fetched_at: Instant::now() }), http })
    }

    pub(super) async fn verify(&self, token: &str) -> Result<Principal, Denied> {
        let invalid = |why: String| Denied::Invalid(why);
        let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(refusal(&e)))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(invalid(format!("algorithm {:?} is not accepted (RS256 or ES256)", header.alg)));
        }
        let key = self.key_for(header.kid.as_deref()).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECONDS;
        // A token issued for later (`nbf`) is not valid yet.
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| invalid(refusal(&e)))?;
        let claims = data.claims;
        if !valid_principal_name(&claims.sub) {
            return Err(invalid("the token's sub is not a usable principal name".into()));
        }
        let scopes = claims.scope.as_deref().unwrap_or("").split_ascii_whitespace().filter_map(Scope::parse);
        Ok(Principal::new(claims.sub, scopes))
    }

    async fn key_for(&self, kid: Option<&str>) -> Result<DecodingKey, Denied> {
        if let Some(key) = self.lookup(kid).await? {
            return Ok(key);
        }
        let source = &self.config.jwks;
        if matches!(source, JwksSource::Url(_)) {
            // Claim the refresh under the lock, fetch without it: verifications with known
            // keys go on meanwhile, and concurrent unknown ids fetch once.
            let due = {
                let mut keys = self.keys.write().await;
                let due = keys.fetched_at.elapsed() >= self.refresh_every;
                if due {
                    keys.fetched_at = Instant::now();
                }
                due
            };
            if due {
                match fetch(&self.http, source).await {
                    Ok(set) => self.keys.write().await.set = set,
                    Err(e) => tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        "Could not refresh the JWKS. Keys known already still verify."
                    ),
                }
            }
        }
        self.lookup(kid).await?.ok_or_else(|| Denied::Invalid("the token's signing key is not in the JWKS".into()))
    }

    async fn lookup(&self, kid: Option<&str>) -> Result<Option<DecodingKey>, Denied> {
        let keys = self.keys.read().await;
        let jwk = match kid {
            Some(kid) => keys.set.find(kid),
            // Without a key id only a one-key set is unambiguous.
            None if keys.set.keys.len() == 1 => keys.set.keys.first(),
            None => return Err(Denied::Invalid("the token names no key id (kid)".into())),
        };
        jwk.map(|jwk| {
            DecodingKey::from_jwk(jwk).map_err(|e| {
                tracing::warn!(error = %e, kid = ?kid, "A key of the JWKS cannot verify tokens.");
                Denied::Invalid("the token's signing key in the JWKS is unusable".into())
            })
        })
        .transpose()
    }
}

/// Why a token was refused, in our words. The library's own text (parser positions, key
/// parameters) goes to the DEBUG log only: a caller learns what to fix, not how we parse.
fn refusal(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    tracing::debug!(error = %e, "A JWT was refused.");
    match e.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidIssuer => "the token is for another issuer".into(),
        ErrorKind::InvalidAudience => "the token is for another audience".into(),
        ErrorKind::InvalidSignature => "the token's signature does not verify".into(),
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            claim @ ("exp" | "iss" | "aud" | "sub" | "nbf") => format!("the token lacks the {claim} claim"),
            _ => "the token lacks a required claim".into(),
        },
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            "the token's algorithm does not fit its key".into()
        }
        _ => "the token is not a well-formed JWT".into(),
    }
}

/// The largest JWKS accepted from a URL.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

async fn fetch(http: &reqwest::Client, source: &JwksSource) -> Result<JwkSet, AuthError> {
    let (from, text) = match source {
        JwksSource::File(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|source| AuthError::Read { path: path.clone(), source })?;
            (path.display().to_string(), text)
        }
        JwksSource::Url(url) => {
            let fetch_error = |source| AuthError::Fetch { url: url.clone(), source };
            let mut response = http.get(url).send().await.and_then(|r| r.error_for_status()).map_err(fetch_error)?;
            // A key set is a few kilobytes: a provider (or whoever answers in its place)
            // sending more is refused before it can fill memory.
            let too_large = || AuthError::Invalid(format!("the JWKS from {url} is larger than {MAX_JWKS_BYTES} bytes"));
            if response.content_length().is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
                return Err(too_large());
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(fetch_error)? {
                if body.len() + chunk.len() > MAX_JWKS_BYTES {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            (url.clone(), String::from_utf8_lossy(&body).into_owned())
        }
    };
    serde_json::from_str(&text).map_err(|source| AuthError::Jwks { from, source })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use serde_json::{json, Value};

    use super::*;

    /// An ES256 key of a made-up identity provider, its JWK, and a signer.
    fn key(kid: &str) -> (Value, jsonwebtoken::EncodingKey) {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("pair");
        let point = pair.public_key().as_ref();
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])});
        (jwk, jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()))
    }

    fn token(kid: &str, signer: &jsonwebtoken::EncodingKey) -> String {
        let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
        header.kid = Some(kid.into());
        let exp = chrono::Utc::now().timestamp() + 300;
        let claims = json!({"iss": "https://idp", "aud": "orderflow", "sub": "svc", "exp": exp, "scope": "read"});
        jsonwebtoken::encode(&header, &claims, signer).expect("sign")
    }

    #[test]
    fn a_jwks_url_is_https_or_plain_http_on_loopback_only() {
        for ok in ["https://idp.example/jwks", "http://127.0.0.1:8080/jwks", "http://[::1]/k", "http://localhost/k"] {
            assert!(JwksSource::parse(ok).check_transport().is_ok(), "{ok}");
        }
        for refused in ["http://idp.example/jwks", "http://10.0.0.5/jwks", "http://localhost.evil.example/k"] {
            let err = JwksSource::parse(refused).check_transport().expect_err(refused);
            assert!(err.to_string().contains("not https"), "{err}");
        }
    }

    #[tokio::test]
    async fn a_refused_token_is_told_why_in_our_words_not_the_librarys() {
        let (jwk, signer) = key("k");
        let dir = std::env::temp_dir().join(format!("orderflow-jwks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("jwks.json");
        std::fs::write(&path, json!({"keys": [jwk]}).to_string()).expect("write");
        let config =
            OidcConfig { jwks: JwksSource::File(path), issuer: "https://idp".into(), audience: "orderflow".into() };
        let oidc = Oidc::load(config).await.expect("load");
        let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
        header.kid = Some("k".into());
        let expired = json!({"iss": "https://idp", "aud": "orderflow", "sub": "svc", "exp": 1_000_000});
        let expired = jsonwebtoken::encode(&header, &expired, &signer).expect("sign");
        let cases = [
            (expired, "the token has expired"),
            ("not.a.jwt".to_string(), "the token is not a well-formed JWT"),
            ("eyJhbGciOiJFUzI1NiJ9.%%%.x".to_string(), "the token is not a well-formed JWT"),
        ];
        for (token, said) in cases {
            match oidc.verify(&token).await {
                Err(Denied::Invalid(why)) => assert_eq!(why, said, "{token}"),
                other => panic!("{token}: {:?}", other.map(|p| p.name)),
            }
        }
    }

    #[tokio::test]
    async fn a_jwks_larger_than_the_limit_is_refused_without_reading_it_all() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/jwks", listener.local_addr().expect("addr"));
        let huge = format!("{{\"keys\": [], \"pad\": \"{}\"}}", "x".repeat(MAX_JWKS_BYTES + 1));
        let app = axum::Router::new().route("/jwks", axum::routing::get(move || async move { huge }));
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let http = reqwest::Client::new();
        let err = fetch(&http, &JwksSource::Url(url)).await.expect_err("too large");
        assert!(err.to_string().contains("larger than"), "{err}");
        server.abort();
    }

    #[tokio::test]
    async fn a_rotated_key_is_fetched_on_first_use_and_unknown_ids_fetch_at_most_once_per_interval() {
        let (old_jwk, _) = key("old");
        let (new_jwk, new_signer) = key("new");
        let served = Arc::new(Mutex::new(json!({"keys": [old_jwk]})));
        let fetches = Arc::new(Mutex::new(0u32));
        let (jwks, count) = (served.clone(), fetches.clone());
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let (jwks, count) = (jwks.clone(), count.clone());
                async move {
                    *count.lock().expect("count") += 1;
                    axum::Json(jwks.lock().expect("jwks").clone())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/jwks", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let config =
            OidcConfig { jwks: JwksSource::Url(url), issuer: "https://idp".into(), audience: "orderflow".into() };
        let oidc = Oidc::load_refreshing(config, Duration::from_secs(2)).await.expect("load");
        assert_eq!(*fetches.lock().expect("count"), 1);

        // The provider rotates to a new key; a token signed with it arrives.
        *served.lock().expect("jwks") = json!({"keys": [new_jwk]});
        let rotated = token("new", &new_signer);
        // Within the interval the unknown id is refused without a fetch.
        assert!(oidc.verify(&rotated).await.is_err());
        assert_eq!(*fetches.lock().expect("count"), 1, "no fetch inside the interval");
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let principal = oidc.verify(&rotated).await.expect("the rotated key is fetched and accepted");
        assert_eq!(principal.name, "svc");
        assert!(principal.may(Scope::Read));
        assert_eq!(*fetches.lock().expect("count"), 2);
        // A flood of made-up key ids right after costs no fetch.
        for i in 0..5 {
            assert!(oidc.verify(&token(&format!("made-up-{i}"), &new_signer)).await.is_err());
        }
        assert_eq!(*fetches.lock().expect("count"), 2, "unknown ids fetch at most once per interval");
    }
}
