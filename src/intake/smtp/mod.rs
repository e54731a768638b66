//! The SMTP intake: an ESMTP server (RFC 5321) that answers `250` only once a message is
//! committed to the store, then processes it in the background.
//!
//! - `listener`: accepts under a global and a per-IP session limit, one task per session.
//! - `session`: the state machine, one handler per verb; I/O only through a boxed stream,
//!   so a session runs as well over `tokio::io::duplex` as over TCP or TLS.
//! - `data`: the DATA receiver (pure): CRLF-only lines, dot-unstuffing, smuggling refused.
//! - `spooler`: group commit, one writer task committing the sessions' messages in batches.
//! - `received`: the `Received:` header of the stored copy.
//! - `tls`: the rustls configuration for STARTTLS.
//! - `config`: the `[smtp]` limits.

mod config;
pub mod data;
mod listener;
pub mod received;
mod session;
pub mod spooler;
mod tls;

pub use config::SmtpConfig;
pub use listener::SmtpServer;
pub use session::{run_session, Intake, SmtpStream, ToProcess};
pub use spooler::{SpoolError, Spooler};

/// What can stop the SMTP intake or a session.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("cannot listen on server.smtp_listen = {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    #[error("TLS handshake failed: {0}")]
    TlsHandshake(#[source] std::io::Error),
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
}

impl SmtpError {
    /// Stable code for logs.
    pub fn code(&self) -> &'static str {
        match self {
            SmtpError::Bind { .. } => "bind_failed",
            SmtpError::TlsConfig(_) => "tls_config",
            SmtpError::TlsHandshake(_) => "tls_handshake_failed",
            SmtpError::Io(_) => "io_error",
        }
    }
}
