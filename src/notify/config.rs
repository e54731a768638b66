//! `[notify]`: how outcome replies reach the requester (README.md, "Reply mail").

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// How the connection to the relay is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayTls {
    /// Plain SMTP: only to a relay on this machine (loopback), refused at load otherwise.
    None,
    /// SMTP, then STARTTLS before anything else is sent (port 587).
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Implicit,
}

#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Off by default: a daemon sends no mail until the operator names a relay.
    pub enabled: bool,
    /// The SMTP relay (submission server) replies are handed to.
    pub relay_host: String,
    pub relay_port: u16,
    pub relay_tls: RelayTls,
    /// SMTP AUTH user; empty: no authentication.
    pub username: String,
    /// The environment variable holding the SMTP AUTH password, read at load.
    pub password_env: String,
    /// Most replies queued for one requester in any hour; the rest are dropped (`rate_limited`).
    pub max_replies_per_hour: u32,
    /// Wait before the first retry after the relay failed; doubled for each further attempt.
    pub retry_base_seconds: u64,
    /// The longest wait between retries. A reply is retried until the relay takes it or
    /// refuses it for good (a 5xx).
    pub retry_max_seconds: u64,
    /// How often the sender looks for replies that are due.
    pub poll_seconds: u64,
    /// Longest wait for the relay on one SMTP command.
    pub timeout_seconds: u64,
    /// The value of `password_env`, read at load.
    #[serde(skip)]
    pub password: Option<String>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            relay_host: String::new(),
            relay_port: 587,
            relay_tls: RelayTls::Starttls,
            username: String::new(),
            password_env: String::new(),
            max_replies_per_hour: 20,
            retry_base_seconds: 30,
            retry_max_seconds: 3600,
            poll_seconds: 5,
            timeout_seconds: 30,
            password: None,
        }
    }
}

impl std::fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("enabled", &self.enabled)
            .field("relay_host", &self.relay_host)
            .field("relay_port", &self.relay_port)
            .field("relay_tls", &self.relay_tls)
            .field("username", &self.username)
            .field("password_env", &self.password_env)
            .field("max_replies_per_hour", &self.max_replies_per_hour)
            .finish_non_exhaustive()
    }
}

/// Whether `host` names this machine: a loopback IP or `localhost`.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost") || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl NotifyConfig {
    /// Reads `password_env`; a variable that is named but not set is an error naming the key.
    pub(crate) fn resolve_password(&mut self) -> Result<(), ConfigError> {
        if self.password_env.is_empty() {
            return Ok(());
        }
        let value = std::env::var(&self.password_env).map_err(|_| {
            ConfigError::Invalid(format!(
                "`notify.password_env`: environment variable {:?} is not set",
                self.password_env
            ))
        })?;
        self.password = Some(value);
        Ok(())
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, what: String| Err(ConfigError::Invalid(format!("`notify.{key}`: {what}")));
        if !self.enabled {
            return Ok(());
        }
        if self.relay_host.trim().is_empty() {
            return bad("relay_host", "must be set when notify.enabled = true".into());
        }
        if self.relay_port == 0 {
            return bad("relay_port", "must be 1..=65535".into());
        }
        if self.relay_tls == RelayTls::None && !is_loopback_host(&self.relay_host) {
            return bad(
                "relay_tls",
                format!(
                    "\"none\" sends mail and credentials in clear text and is only allowed to a loopback relay, \
                     not {:?}; use \"starttls\" or \"implicit\"",
                    self.relay_host
                ),
            );
        }
        if self.username.is_empty() != self.password_env.is_empty() {
            return bad("username", "`username` and `password_env` must be set together".into());
        }
        let ranges = [
            ("max_replies_per_hour", u64::from(self.max_replies_per_hour), 1, 10_000),
            ("retry_base_seconds", self.retry_base_seconds, 1, 86_400),
            ("retry_max_seconds", self.retry_max_seconds, self.retry_base_seconds, 7 * 86_400),
            ("poll_seconds", self.poll_seconds, 1, 3600),
            ("timeout_seconds", self.timeout_seconds, 1, 600),
        ];
        for (key, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return bad(key, format!("{value} is outside {min}..={max}"));
            }
        }
        Ok(())
    }
}
