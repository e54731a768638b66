//! Connecting to an IMAP server: TCP, then implicit TLS, STARTTLS or (loopback only) none,
//! the greeting and LOGIN. Every step runs under the `imap.timeout_seconds` deadline
//! (async-imap has no timeouts of its own).

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_imap::imap_proto::{Response, Status};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::config::{ImapTls, MailboxConfig};
use super::ImapError;

/// Any byte stream an IMAP session runs over (TCP, or TLS over TCP).
pub trait ImapIo: AsyncRead + AsyncWrite + Unpin + Send + Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Debug> ImapIo for T {}

pub type Session = async_imap::Session<Box<dyn ImapIo>>;

/// Runs one network step under the deadline; a timeout is an [`ImapError::Timeout`] naming it.
pub async fn timed<T, E: Into<ImapError>>(
    limit: Duration,
    step: &'static str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, ImapError> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(ImapError::Timeout(step)),
    }
}

/// Connects, secures the connection as configured, reads the greeting and logs in.
pub async fn login(mailbox: &MailboxConfig, limit: Duration) -> Result<Session, ImapError> {
    let host = mailbox.host.trim_start_matches('[').trim_end_matches(']').to_string();
    let tcp = timed(limit, "connect", TcpStream::connect((host.as_str(), mailbox.port()))).await?;
    let stream: Box<dyn ImapIo> = match mailbox.tls {
        ImapTls::None => Box::new(tcp),
        ImapTls::Implicit => Box::new(tls_handshake(mailbox, &host, tcp, limit).await?),
        ImapTls::Starttls => {
            let mut client = async_imap::Client::new(tcp);
            greeting(&mut client, limit).await?;
            timed(limit, "STARTTLS", client.run_command_and_check_ok("STARTTLS", None))
                .await
                .map_err(|e| ImapError::Tls(format!("the server refused STARTTLS: {e}")))?;
            // Whatever the server sent after its OK is dropped with the plain-text client:
            // only bytes read inside TLS count (no STARTTLS response injection).
            Box::new(tls_handshake(mailbox, &host, client.into_inner(), limit).await?)
        }
    };
    let mut client = async_imap::Client::new(stream);
    if mailbox.tls != ImapTls::Starttls {
        greeting(&mut client, limit).await?;
    }
    let password = mailbox.secret().unwrap_or_default();
    match tokio::time::timeout(limit, client.login(&mailbox.username, password)).await {
        Err(_) => Err(ImapError::Timeout("LOGIN")),
        Ok(Ok(session)) => Ok(session),
        Ok(Err((async_imap::error::Error::No(text), _))) => Err(ImapError::AuthFailed(text)),
        Ok(Err((e, _))) => Err(e.into()),
    }
}

/// Reads the server's first line; `* BYE` or a closed connection is an error.
async fn greeting<T: ImapIo>(client: &mut async_imap::Client<T>, limit: Duration) -> Result<(), ImapError> {
    let first = timed(limit, "greeting", client.read_response()).await?;
    let Some(first) = first else { return Err(ImapError::Closed("before its greeting")) };
    match first.parsed() {
        Response::Data { status: Status::Bye, .. } => Err(ImapError::Protocol("the server greeted with BYE".into())),
        _ => Ok(()),
    }
}

async fn tls_handshake(
    mailbox: &MailboxConfig,
    host: &str,
    tcp: TcpStream,
    limit: Duration,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ImapError> {
    let connector = connector(mailbox)?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| ImapError::Tls(format!("{host:?} is not a valid TLS server name")))?;
    timed(limit, "TLS handshake", connector.connect(name, tcp))
        .await
        .map_err(|e| ImapError::Tls(format!("TLS with {host} failed: {e}")))
}

/// The public roots plus `ca_file`'s certificates; a certificate of `ca_file` presented by
/// the server itself is trusted as it is (a self-signed server).
fn connector(mailbox: &MailboxConfig) -> Result<TlsConnector, ImapError> {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let mut pinned = Vec::new();
    if let Some(path) = mailbox.ca_path() {
        let bad = |e: &dyn std::fmt::Display| ImapError::Tls(format!("ca_file {}: {e}", path.display()));
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(&e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&e))?;
        if certs.is_empty() {
            return Err(bad(&"no certificate in the file"));
        }
        for cert in certs {
            // A self-signed end-entity certificate is no CA to webpki; it is pinned below.
            let _ = roots.add(cert.clone());
            pinned.push(cert);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| ImapError::Tls(e.to_string()))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ImapError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedOrWebPki { webpki, pinned }))
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The usual web PKI check; failing that, a server certificate identical to one of
/// `ca_file` is accepted when it names the host.
#[derive(Debug)]
struct PinnedOrWebPki {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for PinnedOrWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Ok(v) => Ok(v),
            Err(e) if self.pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) => {
                let parsed = rustls::server::ParsedCertificate::try_from(end_entity).map_err(|_| e)?;
                rustls::client::verify_server_name(&parsed, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
