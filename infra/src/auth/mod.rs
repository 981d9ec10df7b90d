//! Who a caller is and what it may do. Every HTTP route but the health checks wants
//! `Authorization: Bearer <token>`; the token is either one of a file of static service
//! tokens (stored as SHA-256 digests, never in clear) or an OAuth2/OIDC access token (a
//! JWT checked against a JWKS, an issuer and an audience). Both end in a [`Principal`]: a
//! name and its [`Scope`]s.
mod oidc;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::{header, HeaderMap};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use oidc::{JwksSource, OidcConfig};

/// What a principal may do. Each write scope covers one kind of event, so a leaked token
/// of the warehouse can report shipments but never capture a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Place and cancel orders.
    #[serde(rename = "orders:write")]
    OrdersWrite,
    #[serde(rename = "payments:write")]
    PaymentsWrite,
    #[serde(rename = "shipments:write")]
    ShipmentsWrite,
    #[serde(rename = "inventory:write")]
    InventoryWrite,
    /// The query API and dashboard.
    #[serde(rename = "read")]
    Read,
    /// `/metrics` on a service's public port.
    #[serde(rename = "ops")]
    Ops,
}

impl Scope {
    pub const ALL: [Scope; 6] = [
        Scope::OrdersWrite,
        Scope::PaymentsWrite,
        Scope::ShipmentsWrite,
        Scope::InventoryWrite,
        Scope::Read,
        Scope::Ops,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::OrdersWrite => "orders:write",
            Scope::PaymentsWrite => "payments:write",
            Scope::ShipmentsWrite => "shipments:write",
            Scope::InventoryWrite => "inventory:write",
            Scope::Read => "read",
            Scope::Ops => "ops",
        }
    }

    pub fn parse(raw: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The tokens file's `principal`, or the JWT's `sub`.
    pub name: String,
    pub scopes: BTreeSet<Scope>,
}

impl Principal {
    pub fn new(name: impl Into<String>, scopes: impl IntoIterator<Item = Scope>) -> Self {
        Principal { name: name.into(), scopes: scopes.into_iter().collect() }
    }

    pub fn may(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

pub use schemas::{valid_principal_name, MAX_PRINCIPAL_LEN};

/// Why a request is refused before it reaches its handler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No `Authorization: Bearer` header (401).
    #[error("this route needs a bearer token")]
    Missing,
    /// A token nobody issued, or a JWT that is forged, expired or for someone else (401).
    #[error("the bearer token is not valid: {0}")]
    Invalid(String),
    /// A valid token without the scope the route needs (403).
    #[error("principal {principal} lacks scope {needed}")]
    Forbidden { principal: String, needed: Scope },
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a tokens file")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A setting or an entry that cannot be used; the message says which and why.
    #[error("{0}")]
    Invalid(String),
    #[error("cannot fetch the JWKS from {url}")]
    Fetch {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the JWKS from {from} is not a JSON Web Key Set")]
    Jwks {
        from: String,
        #[source]
        source: serde_json::Error,
    },
}

/// One line of the tokens file. The token itself is never stored: only its digest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub principal: String,
    pub scopes: Vec<Scope>,
    /// Lower-case hex SHA-256 of the token.
    pub token_sha256: String,
    /// When the token stops being accepted (RFC 3339); without it, until the entry is
    /// removed from the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

struct StoredToken {
    digest: [u8; 32],
    principal: Arc<Principal>,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The static tokens in force: replaced whole when the tokens file changes, so a request
/// sees the old set or the new one, never a mix.
type Tokens = Arc<std::sync::RwLock<Arc<[StoredToken]>>>;

/// How a service tells callers apart.
pub struct Authenticator {
    tokens: Tokens,
    oidc: Option<oidc::Oidc>,
    /// `--insecure-no-auth`: every caller is [`Authenticator::ANONYMOUS`] with every scope.
    insecure: bool,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("tokens", &self.current_tokens().len())
            .field("oidc", &self.oidc.is_some())
            .field("insecure", &self.insecure)
            .finish()
    }
}

/// What a service is told about authentication (flags or `ORDERFLOW_*` variables).
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    pub tokens_file: Option<PathBuf>,
    pub oidc: Option<OidcConfig>,
    pub insecure_no_auth: bool,
}

impl Authenticator {
    /// Who every caller is without authentication.
    pub const ANONYMOUS: &'static str = "anonymous";

    /// The authenticator `config` describes. Nothing configured is an error: a service
    /// never answers everyone by accident.
    pub async fn from_config(config: &AuthConfig) -> Result<Self, AuthError> {
        if config.insecure_no_auth {
            if config.tokens_file.is_some() || config.oidc.is_some() {
                return Err(AuthError::Invalid(
                    "--insecure-no-auth cannot be combined with --auth-tokens or --oidc-*".into(),
                ));
            }
            tracing::warn!("Authentication is OFF (--insecure-no-auth). Every caller may do everything.");
            return Ok(Self::insecure());
        }
        let (tokens, tokens_file) = match &config.tokens_file {
            Some(path) => {
                let files = crate::watch::Files::read(std::slice::from_ref(path))
                    .map_err(|(path, source)| AuthError::Read { path, source })?;
                (parse_tokens_file(path, &files.contents[0])?, Some(files))
            }
            None => (Vec::new(), None),
        };
        let oidc = match &config.oidc {
            Some(oidc) => Some(oidc::Oidc::load(oidc.clone()).await?),
            None => None,
        };
        if config.tokens_file.is_none() && oidc.is_none() {
            return Err(AuthError::Invalid(
                "no authentication configured: give --auth-tokens FILE and/or --oidc-jwks/--oidc-issuer/--oidc-audience \
                 (or --insecure-no-auth for a local experiment)"
                    .into(),
            ));
        }
        let mut auth = Self::from_tokens(tokens)?;
        auth.oidc = oidc;
        if let Some(files) = tokens_file {
            reload_on_change(files, Arc::downgrade(&auth.tokens));
        }
        Ok(auth)
    }

    /// Every caller is anonymous and may do everything.
    pub fn insecure() -> Self {
        Authenticator { tokens: Default::default(), oidc: None, insecure: true }
    }

    /// Static tokens only (never reloaded).
    pub fn from_tokens(entries: Vec<TokenEntry>) -> Result<Self, AuthError> {
        let tokens = Self::stored_tokens(entries)?;
        Ok(Authenticator { tokens: Arc::new(std::sync::RwLock::new(tokens.into())), oidc: None, insecure: false })
    }

    fn current_tokens(&self) -> Arc<[StoredToken]> {
        // A panic while the lock was held cannot leave a half-replaced set: replacing is
        // one assignment, so a poisoned lock still holds a whole one.
        self.tokens.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The entries of a tokens file, checked: valid principal names, digests, no token twice.
    fn stored_tokens(entries: Vec<TokenEntry>) -> Result<Vec<StoredToken>, AuthError> {
        let mut tokens = Vec::with_capacity(entries.len());
        for (i, entry) in entries.into_iter().enumerate() {
            let at = format!("tokens file entry {}", i + 1);
            if !valid_principal_name(&entry.principal) {
                return Err(AuthError::Invalid(format!(
                    "{at}: principal must be 1 to {MAX_PRINCIPAL_LEN} visible ASCII characters"
                )));
            }
            let digest = parse_digest(&entry.token_sha256)
                .ok_or_else(|| AuthError::Invalid(format!("{at}: token_sha256 must be 64 hex digits")))?;
            if tokens.iter().any(|t: &StoredToken| t.digest == digest) {
                return Err(AuthError::Invalid(format!("{at}: the same token is listed twice")));
            }
            tokens.push(StoredToken {
                digest,
                principal: Arc::new(Principal::new(entry.principal, entry.scopes)),
                expires_at: entry.expires_at,
            });
        }
        Ok(tokens)
    }

    /// Who sent `headers`. Scopes are checked by the caller ([`Principal::may`]).
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Principal>, Denied> {
        if self.insecure {
            return Ok(Arc::new(Principal::new(Self::ANONYMOUS, Scope::ALL)));
        }
        let token = bearer(headers)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every entry is compared, in constant time, so timing tells nothing about which
        // digest is close.
        let mut found = None;
        for stored in self.current_tokens().iter() {
            if bool::from(stored.digest.ct_eq(&digest)) {
                found = Some((stored.principal.clone(), stored.expires_at));
            }
        }
        if let Some((principal, expires_at)) = found {
            if expires_at.is_some_and(|at| at <= chrono::Utc::now()) {
                return Err(Denied::Invalid("the token has expired".into()));
            }
            return Ok(principal);
        }
        match &self.oidc {
            Some(oidc) if looks_like_jwt(token) => {
                let principal = oidc.verify(token).await?;
                self.outside_our_own(&principal)?;
                Ok(Arc::new(principal))
            }
            _ => Err(Denied::Invalid("unknown token".into())),
        }
    }

    /// An identity provider's principals live beside this service's own (its tokens' and
    /// the processes'), never on top of them: a `sub` naming one of those is refused, so a
    /// token from outside cannot speak as the order process or as another service.
    fn outside_our_own(&self, principal: &Principal) -> Result<(), Denied> {
        let name = principal.name.as_str();
        if schemas::DECIDING_PRINCIPALS.contains(&name)
            || self.current_tokens().iter().any(|t| t.principal.name == name)
        {
            return Err(Denied::Invalid(format!(
                "the token's sub {name:?} names one of this service's own principals; an identity provider cannot speak for it"
            )));
        }
        Ok(())
    }
}

fn bearer(headers: &HeaderMap) -> Result<&str, Denied> {
    // Two credentials are no credential: which one counts must never depend on a proxy's
    // or a library's choice.
    if headers.get_all(header::AUTHORIZATION).iter().count() > 1 {
        return Err(Denied::Invalid("more than one Authorization header".into()));
    }
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Err(Denied::Missing) };
    let value = value.to_str().map_err(|_| Denied::Invalid("the Authorization header is not ASCII".into()))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Denied::Invalid("the Authorization scheme must be Bearer".into()));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(Denied::Missing);
    }
    Ok(token)
}

fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(digest)
}

fn parse_tokens_file(path: &Path, content: &[u8]) -> Result<Vec<TokenEntry>, AuthError> {
    serde_json::from_slice(content).map_err(|source| AuthError::Parse { path: path.into(), source })
}

/// Takes the tokens file up again whenever it changes, for as long as the authenticator
/// lives: a token removed from it (or past its `expires_at`) is refused from the next
/// check on, with no restart. A file that does not read as a whole tokens file (being
/// written, or wrong) changes nothing: everybody keeps working with the tokens before.
fn reload_on_change(files: crate::watch::Files, tokens: std::sync::Weak<std::sync::RwLock<Arc<[StoredToken]>>>) {
    files.watch(crate::watch::RELOAD_EVERY, move |files| {
        let Some(tokens) = tokens.upgrade() else { return false };
        let path = files.path(0);
        match parse_tokens_file(path, &files.contents[0]).and_then(Authenticator::stored_tokens) {
            Ok(new) => {
                tracing::info!(path = %path.display(), tokens = new.len(), "The tokens file changed. Its tokens are now the ones accepted.");
                *tokens.write().unwrap_or_else(std::sync::PoisonError::into_inner) = new.into();
            }
            Err(e) => tracing::error!(
                path = %path.display(),
                error = &e as &dyn std::error::Error,
                "The tokens file changed but cannot be used. The tokens read before stay in force."
            ),
        }
        true
    });
}

/// The hex SHA-256 of a token: what the tokens file stores.
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh random token (256 bits from the OS) and the tokens-file entry for it.
pub fn new_token(principal: &str, scopes: Vec<Scope>) -> Result<(String, TokenEntry), AuthError> {
    if !valid_principal_name(principal) {
        return Err(AuthError::Invalid(format!("principal must be 1 to {MAX_PRINCIPAL_LEN} visible ASCII characters")));
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| AuthError::Invalid(format!("no randomness from the OS: {e}")))?;
    let token = format!("of_{}", hex::encode(bytes));
    let entry =
        TokenEntry { principal: principal.to_string(), scopes, token_sha256: token_digest(&token), expires_at: None };
    Ok((token, entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().expect("header"));
        h
    }

    #[tokio::test]
    async fn a_listed_token_is_its_principal_and_nothing_else_is_anybody() {
        let (token, entry) = new_token("shop", vec![Scope::OrdersWrite]).expect("token");
        let auth = Authenticator::from_tokens(vec![entry]).expect("auth");
        let shop = auth.authenticate(&headers(&format!("Bearer {token}"))).await.expect("shop");
        assert_eq!(shop.name, "shop");
        assert!(shop.may(Scope::OrdersWrite) && !shop.may(Scope::PaymentsWrite));
        assert_eq!(auth.authenticate(&HeaderMap::new()).await, Err(Denied::Missing));
        assert!(matches!(auth.authenticate(&headers("Bearer of_nope")).await, Err(Denied::Invalid(_))));
        assert!(matches!(auth.authenticate(&headers(&format!("Basic {token}"))).await, Err(Denied::Invalid(_))));
    }

    #[tokio::test]
    async fn two_authorization_headers_are_refused_whichever_comes_first() {
        let (token, entry) = new_token("shop", vec![Scope::OrdersWrite]).expect("token");
        let auth = Authenticator::from_tokens(vec![entry]).expect("auth");
        for pair in [
            [format!("Bearer {token}"), "Bearer of_nope".to_string()],
            ["Bearer of_nope".to_string(), format!("Bearer {token}")],
        ] {
            let mut h = HeaderMap::new();
            for value in &pair {
                h.append(header::AUTHORIZATION, value.parse().expect("header"));
            }
            assert!(matches!(auth.authenticate(&h).await, Err(Denied::Invalid(_))), "{pair:?}");
        }
    }

    #[test]
    fn the_tokens_file_holds_digests_only_and_refuses_bad_entries() {
        let (token, entry) = new_token("shop", vec![Scope::OrdersWrite]).expect("token");
        let line = serde_json::to_string(&entry).expect("json");
        assert!(!line.contains(&token), "the token must never be stored in clear");
        let bad = TokenEntry { token_sha256: "abc".into(), ..entry.clone() };
        assert!(Authenticator::from_tokens(vec![bad]).is_err());
        assert!(Authenticator::from_tokens(vec![entry.clone(), entry]).is_err(), "a token listed twice");
        assert!(new_token("has space", vec![]).is_err());
        let unknown_scope = r#"[{"principal":"x","scopes":["admin"],"token_sha256":"00"}]"#;
        assert!(serde_json::from_str::<Vec<TokenEntry>>(unknown_scope).is_err());
    }

    #[tokio::test]
    async fn a_token_past_its_expiry_is_refused_and_one_removed_from_the_file_is_refused_without_a_restart() {
        let (kept, kept_entry) = new_token("shop", vec![Scope::OrdersWrite]).expect("token");
        let (revoked, revoked_entry) = new_token("warehouse", vec![Scope::ShipmentsWrite]).expect("token");
        let (expired, mut expired_entry) = new_token("old-shop", vec![Scope::OrdersWrite]).expect("token");
        expired_entry.expires_at = Some(chrono::Utc::now() - chrono::Duration::seconds(1));
        let dir = std::env::temp_dir().join(format!("orderflow-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("tokens.json");
        let write = |entries: &[&TokenEntry]| {
            let staged = dir.join("tokens.json.new");
            std::fs::write(&staged, serde_json::to_vec(entries).expect("json")).expect("write");
            std::fs::rename(&staged, &path).expect("in place");
        };
        write(&[&kept_entry, &revoked_entry, &expired_entry]);
        let config = AuthConfig { tokens_file: Some(path.clone()), ..AuthConfig::default() };
        let auth = Authenticator::from_config(&config).await.expect("auth");
        let bearer = |token: &str| headers(&format!("Bearer {token}"));
        assert_eq!(auth.authenticate(&bearer(&revoked)).await.expect("listed").name, "warehouse");
        assert_eq!(
            auth.authenticate(&bearer(&expired)).await.map(|p| p.name.clone()),
            Err(Denied::Invalid("the token has expired".into()))
        );

        // A file that is not a tokens file (half written) changes nothing.
        std::fs::write(&path, b"[{\"principal\": ").expect("write");
        tokio::time::sleep(crate::watch::RELOAD_EVERY * 2).await;
        assert!(auth.authenticate(&bearer(&revoked)).await.is_ok(), "the tokens before stay in force");

        write(&[&kept_entry]);
        let deadline = std::time::Instant::now() + crate::watch::RELOAD_EVERY * 4;
        while auth.authenticate(&bearer(&revoked)).await.is_ok() {
            assert!(std::time::Instant::now() < deadline, "the removed token is still accepted");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(auth.authenticate(&bearer(&kept)).await.expect("kept").name, "shop");
    }

    #[tokio::test]
    async fn no_configuration_refuses_to_start() {
        let err = Authenticator::from_config(&AuthConfig::default()).await.expect_err("must refuse");
        assert!(err.to_string().contains("--insecure-no-auth"), "{err}");
    }
}
