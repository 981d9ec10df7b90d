//! HTTPS on a service's listener (rustls): a certificate chain and its private key from
//! PEM files, taken up again when either file changes, so a renewed certificate (cert-manager,
//! an ACME client) is served from the next connection on without a restart. A pair that does
//! not load (the key written before its certificate, a typo) is refused with an error in the
//! log and the pair served before stays: a half-finished renewal never takes the listener
//! down. TLS 1.2 and 1.3 with rustls' safe defaults; HTTP/1.1 only, as the listener speaks.
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::watch::{Files, RELOAD_EVERY};

/// Where a listener's certificate chain and key are (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate first, then its intermediates.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no usable PEM {what}: {reason}")]
    Pem { path: PathBuf, what: &'static str, reason: String },
    #[error("the certificate in {cert} and the key in {key} cannot be served together")]
    Config {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// A listener's TLS settings as they are now.
pub struct Tls {
    config: RwLock<Arc<ServerConfig>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the pair (a service with an unusable one does not start) and watches both
    /// files for as long as the returned value lives. Needs a tokio runtime.
    pub fn load(files: &TlsFiles) -> Result<Arc<Tls>, TlsError> {
        let paths = [files.cert.clone(), files.key.clone()];
        let read = Files::read(&paths).map_err(|(path, source)| TlsError::Read { path, source })?;
        let tls = Arc::new(Tls { config: RwLock::new(Arc::new(server_config(&read)?)) });
        let watched = Arc::downgrade(&tls);
        read.watch(RELOAD_EVERY, move |files| {
            let Some(tls) = watched.upgrade() else { return false };
            match server_config(files) {
                Ok(config) => {
                    tracing::info!(cert = %files.path(0).display(), "The TLS certificate changed. New connections get the new one.");
                    *tls.config.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(config);
                }
                Err(e) => tracing::error!(
                    error = &e as &dyn std::error::Error,
                    "The TLS certificate or key changed but the pair cannot be served. The pair before stays in use."
                ),
            }
            true
        });
        Ok(tls)
    }

    /// An acceptor with the pair in force now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
    }
}

fn pem_error(path: &Path, what: &'static str, reason: impl std::fmt::Display) -> TlsError {
    TlsError::Pem { path: path.to_path_buf(), what, reason: reason.to_string() }
}

fn server_config(files: &Files) -> Result<ServerConfig, TlsError> {
    let (cert_path, key_path) = (files.path(0), files.path(1));
    let chain = CertificateDer::pem_slice_iter(&files.contents[0])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert_path, "certificate", e))?;
    if chain.is_empty() {
        return Err(pem_error(cert_path, "certificate", "no CERTIFICATE block"));
    }
    let key = PrivateKeyDer::from_pem_slice(&files.contents[1]).map_err(|e| pem_error(key_path, "private key", e))?;
    let config_error = |source| TlsError::Config { cert: cert_path.to_path_buf(), key: key_path.to_path_buf(), source };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(config_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
