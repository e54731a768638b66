//! STARTTLS: a rustls server configuration (ring) from PEM files.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use super::SmtpError;

/// Loads the certificate chain and key; any problem names the file.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, SmtpError> {
    let bad = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        SmtpError::TlsConfig(format!("{what} {}: {e}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad("cannot read server.tls_cert", cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("cannot parse server.tls_cert", cert, &e))?;
    if certs.is_empty() {
        return Err(bad("no certificate in server.tls_cert", cert, &"empty"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("cannot read server.tls_key", key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SmtpError::TlsConfig(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| SmtpError::TlsConfig(format!("server.tls_cert / server.tls_key: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
