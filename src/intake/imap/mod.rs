//! The IMAP intake: `serve` watches each `[[tenants.mailboxes]]` folder and takes in every
//! message exactly once.
//!
//! - `config`: the `[imap]` timings and the mailbox entries.
//! - `connect`: TCP, TLS (implicit, STARTTLS, or none on loopback), greeting, LOGIN, each
//!   under a deadline.
//! - `watcher`: one task per mailbox: lease, SELECT, fetch what is new, commit it with the
//!   mailbox's last UID, then flag or MOVE it; IDLE (or sleep) until the next round;
//!   reconnect with capped, jittered backoff.

mod config;
mod connect;
mod watcher;

pub use config::{is_loopback, ImapConfig, ImapTls, MailboxConfig, MAX_IDLE_SECONDS};
pub use watcher::{content_key, spawn_watchers, MailboxWatcher};

use crate::store::StoreError;

/// Why a watcher lost its connection or could not use the mailbox.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("the server closed the connection {0}")]
    Closed(&'static str),
    #[error("network error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Tls(String),
    /// The server answered NO to LOGIN.
    #[error("the server refused the username or password: {0}")]
    AuthFailed(String),
    #[error("IMAP error: {0}")]
    Protocol(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The PostgreSQL session holding the mailbox's lease failed: another daemon may be
    /// watching the mailbox now.
    #[error("lost the lease on the mailbox: {0}")]
    LeaseLost(StoreError),
    /// After a reload the mailbox's address (its tenant's first assistant address at
    /// start-up) belongs to no tenant, or to another one: its mail would be lost.
    #[error("the mailbox's address {0} belongs to no tenant since the last reload")]
    NoTenant(String),
}

impl ImapError {
    /// Stable code for logs.
    pub fn code(&self) -> &'static str {
        match self {
            ImapError::Timeout(_) => "timeout",
            ImapError::Closed(_) => "connection_closed",
            ImapError::Io(_) => "io_error",
            ImapError::Tls(_) => "tls_error",
            ImapError::AuthFailed(_) => "auth_failed",
            ImapError::Protocol(_) => "imap_error",
            ImapError::Store(e) => e.code(),
            ImapError::LeaseLost(_) => "lease_lost",
            ImapError::NoTenant(_) => "no_tenant",
        }
    }
}

impl From<async_imap::error::Error> for ImapError {
    fn from(e: async_imap::error::Error) -> Self {
        match e {
            async_imap::error::Error::Io(e) => ImapError::Io(e),
            async_imap::error::Error::ConnectionLost => ImapError::Closed("unexpectedly"),
            other => ImapError::Protocol(other.to_string()),
        }
    }
}
