//! `[imap]` (how every watcher behaves) and `[[tenants.mailboxes]]` (what to watch).

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Timing and limits of the IMAP watchers; each has a default (README, "IMAP intake").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImapConfig {
    /// A folder is read again this often even while IDLE (a safety net); also the polling
    /// interval of servers without IDLE. IDLE is re-issued at least this often.
    pub poll_seconds: u64,
    /// Longest wait for any one network step (connect, TLS, a command's answer).
    pub timeout_seconds: u64,
    /// First wait after a failed connection; doubled per failure up to `backoff_max_seconds`,
    /// with jitter.
    pub backoff_base_seconds: u64,
    pub backoff_max_seconds: u64,
    /// Wait after the server refused the username or password.
    pub auth_retry_seconds: u64,
    /// How often a daemon asks for a mailbox another daemon watches (PostgreSQL).
    pub lease_retry_seconds: u64,
    /// Most messages fetched and committed in one transaction.
    pub fetch_batch: usize,
}

impl Default for ImapConfig {
    fn default() -> Self {
        Self {
            poll_seconds: 120,
            timeout_seconds: 60,
            backoff_base_seconds: 1,
            backoff_max_seconds: 300,
            auth_retry_seconds: 600,
            lease_retry_seconds: 15,
            fetch_batch: 50,
        }
    }
}

/// IDLE is re-issued at most this long after it began (RFC 2177 asks for under 29 minutes).
pub const MAX_IDLE_SECONDS: u64 = 25 * 60;

impl ImapConfig {
    /// Checks the ranges; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        let ranges: [(&str, u64, u64, u64); 7] = [
            ("imap.poll_seconds", self.poll_seconds, 1, MAX_IDLE_SECONDS),
            ("imap.timeout_seconds", self.timeout_seconds, 1, 3600),
            ("imap.backoff_base_seconds", self.backoff_base_seconds, 1, 3600),
            ("imap.backoff_max_seconds", self.backoff_max_seconds, self.backoff_base_seconds, 86_400),
            ("imap.auth_retry_seconds", self.auth_retry_seconds, 1, 86_400),
            // Takeover within a minute when a daemon dies (issue #8).
            ("imap.lease_retry_seconds", self.lease_retry_seconds, 1, 60),
            ("imap.fetch_batch", self.fetch_batch as u64, 1, 1000),
        ];
        for (key, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(format!("`{key}`: {value} is outside {min}..={max}"));
            }
        }
        Ok(())
    }
}

/// How the connection to the IMAP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImapTls {
    /// TLS from the first byte (port 993).
    Implicit,
    /// Plain connection upgraded with STARTTLS before login (port 143); refused if the
    /// server does not offer it.
    Starttls,
    /// No TLS: loopback hosts only.
    None,
}

/// One mailbox a tenant's assistant reads.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MailboxConfig {
    pub host: String,
    /// Default: 993 with implicit TLS, else 143.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default = "default_tls")]
    pub tls: ImapTls,
    pub username: String,
    /// The password itself (development only: prefer `password_env`). Never logged.
    #[serde(default, skip_serializing)]
    pub password: Option<String>,
    /// The environment variable holding the password, read at load.
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default = "default_folder")]
    pub folder: String,
    /// Where a message is moved once stored; empty or absent: it is flagged `\Seen` instead.
    #[serde(default)]
    pub processed_folder: Option<String>,
    /// A PEM file of certificates to trust besides the public roots (a self-signed server).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The value of `password_env`, read at load.
    #[serde(skip)]
    pub env_password: Option<String>,
}

fn default_tls() -> ImapTls {
    ImapTls::Implicit
}

fn default_folder() -> String {
    "INBOX".into()
}

impl std::fmt::Debug for MailboxConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailboxConfig")
            .field("host", &self.host)
            .field("port", &self.port())
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password_env", &self.password_env)
            .field("folder", &self.folder)
            .field("processed_folder", &self.processed_folder)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl MailboxConfig {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(if self.tls == ImapTls::Implicit { 993 } else { 143 })
    }

    /// The password to log in with (from `password` or `password_env`).
    pub fn secret(&self) -> Option<&str> {
        self.password.as_deref().or(self.env_password.as_deref())
    }

    /// Where stored messages go, if they are moved rather than flagged.
    pub fn move_to(&self) -> Option<&str> {
        self.processed_folder.as_deref().filter(|f| !f.is_empty())
    }

    /// The trusted PEM file, if one is set.
    pub fn ca_path(&self) -> Option<&std::path::Path> {
        self.ca_file.as_deref().filter(|p| !p.as_os_str().is_empty())
    }

    /// The mailbox's identity in the store and in logs: `tenant/username@host:port/folder`.
    pub fn key(&self, tenant: &str) -> String {
        format!("{tenant}/{}@{}:{}/{}", self.username, self.host.to_ascii_lowercase(), self.port(), self.folder)
    }

    /// Reads `password_env`; a missing variable is an error naming the key.
    pub fn resolve_password(&mut self, key: &str) -> Result<(), String> {
        if let Some(var) = &self.password_env {
            let value = std::env::var(var)
                .map_err(|_| format!("`{key}.password_env`: environment variable {var:?} is not set"))?;
            self.env_password = Some(value);
        }
        Ok(())
    }

    /// Checks what serde cannot; `key` names the mailbox in the message
    /// (`tenants[0].mailboxes[1]`).
    pub fn validate(&self, key: &str) -> Result<(), String> {
        let bad = |k: &str, what: &str| Err(format!("`{key}.{k}`: {what}"));
        if self.host.trim().is_empty() {
            return bad("host", "must not be empty");
        }
        if self.port() == 0 {
            return bad("port", "must not be 0");
        }
        if self.tls == ImapTls::None && !is_loopback(&self.host) {
            return bad(
                "tls",
                &format!(
                    "\"none\" sends the password in clear and is allowed only for loopback hosts \
                     (127.0.0.0/8, ::1, localhost), not {:?}; use \"implicit\" or \"starttls\"",
                    self.host
                ),
            );
        }
        if self.username.trim().is_empty() {
            return bad("username", "must not be empty");
        }
        if self.password.is_some() == self.password_env.is_some() {
            return bad("password", "give exactly one of `password` and `password_env`");
        }
        if self.secret().is_none_or(str::is_empty) {
            return bad(if self.password.is_some() { "password" } else { "password_env" }, "the password is empty");
        }
        if self.folder.trim().is_empty() {
            return bad("folder", "must not be empty");
        }
        if self.move_to() == Some(self.folder.as_str()) {
            return bad("processed_folder", "must differ from `folder`");
        }
        if let Some(path) = self.ca_path() {
            if !path.is_file() {
                return bad("ca_file", &format!("{} is not a readable file", path.display()));
            }
        }
        Ok(())
    }
}

/// 127.0.0.0/8, ::1 or `localhost`.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(host: &str, tls: ImapTls) -> MailboxConfig {
        MailboxConfig {
            host: host.into(),
            port: None,
            tls,
            username: "assistant@acme.com".into(),
            password: Some("secret-password".into()),
            password_env: None,
            folder: "INBOX".into(),
            processed_folder: None,
            ca_file: None,
            env_password: None,
        }
    }

    #[test]
    fn plain_imap_only_on_loopback() {
        for host in ["127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost"] {
            assert_eq!(mailbox(host, ImapTls::None).validate("m"), Ok(()), "{host}");
        }
        for host in ["imap.acme.com", "10.0.0.1", "0.0.0.0"] {
            let e = mailbox(host, ImapTls::None).validate("m").unwrap_err();
            assert!(e.contains("`m.tls`") && e.contains("loopback"), "{e}");
        }
        assert_eq!(mailbox("imap.acme.com", ImapTls::Starttls).validate("m"), Ok(()));
    }

    #[test]
    fn default_ports_follow_tls() {
        assert_eq!(mailbox("h", ImapTls::Implicit).port(), 993);
        assert_eq!(mailbox("h", ImapTls::Starttls).port(), 143);
    }

    #[test]
    fn the_password_is_not_in_debug_output() {
        let text = format!("{:?}", mailbox("imap.acme.com", ImapTls::Implicit));
        assert!(!text.contains("secret-password"), "{text}");
        assert!(text.contains("assistant@acme.com"));
    }

    #[test]
    fn one_password_source() {
        let mut m = mailbox("imap.acme.com", ImapTls::Implicit);
        m.password_env = Some("X".into());
        assert!(m.validate("m").unwrap_err().contains("exactly one"));
        m.password = None;
        m.password_env = None;
        assert!(m.validate("m").unwrap_err().contains("exactly one"));
    }
}
