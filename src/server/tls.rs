//! `[server.tls]`: HTTPS with rustls. ALPN offers `h2` and `http/1.1`, so browsers
//! speak HTTP/2 and many `EventSource`s to one origin share one connection (past
//! HTTP/1.1's six connections per host). The certificate and key are read again on
//! SIGHUP: new handshakes use the new pair, open connections (and their event
//! streams) go on; a pair that cannot be read is logged and the old one kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// Why the certificate or key cannot be used; names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("server.tls: cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("server.tls: {path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("server.tls: the key in {path} is not usable: {reason}")]
    Key { path: PathBuf, reason: String },
}

/// The certificate in use, replaced on reload.
#[derive(Debug)]
pub struct Certificates {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certificates {
    /// Reads `[server.tls]`.
    ///
    /// # Errors
    /// [`TlsError`] naming the file that cannot be used.
    pub fn load(config: &TlsConfig) -> Result<Arc<Self>, TlsError> {
        let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) else {
            unreachable!("only called when TLS is enabled");
        };
        let current = read_pair(cert_file, key_file)?;
        Ok(Arc::new(Self {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            current: RwLock::new(Arc::new(current)),
        }))
    }

    /// Reads the files again; on failure the pair in use stays.
    ///
    /// # Errors
    /// [`TlsError`] naming the file that cannot be used.
    pub fn reload(&self) -> Result<(), TlsError> {
        let pair = read_pair(&self.cert_file, &self.key_file)?;
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(pair);
        Ok(())
    }

    /// The acceptor for this listener: HTTP/2 and HTTP/1.1 by ALPN.
    pub fn acceptor(self: &Arc<Self>) -> TlsAcceptor {
        // rustls needs one process-wide crypto provider; a second install is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner),
        ))
    }
}

fn read_pair(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    let read_error = |path: &Path, error: &dyn std::fmt::Display| TlsError::Read {
        path: path.to_owned(),
        reason: error.to_string(),
    };
    let chain = CertificateDer::pem_file_iter(cert_file)
        .map_err(|error| read_error(cert_file, &error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| read_error(cert_file, &error))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_file.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|error| read_error(key_file, &error))?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|error| TlsError::Key {
        path: key_file.to_owned(),
        reason: error.to_string(),
    })?;
    let pair = CertifiedKey::new(chain, signing_key);
    pair.keys_match().map_err(|error| TlsError::Key {
        path: key_file.to_owned(),
        reason: format!("it does not match the certificate ({error})"),
    })?;
    Ok(pair)
}
