//! `[smtp]`: the limits of the SMTP intake. Each has a safe default and its own refusal
//! (see the README, "SMTP intake").

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Largest message accepted (also advertised as `SIZE`); the smaller of this and
    /// `limits.max_message_bytes` applies. Refused with `552 5.3.4`.
    pub max_message_bytes: usize,
    /// Longest command line, CRLF included (RFC 5321 §4.5.3.1.4: 512 at least). `500 5.5.2`.
    pub max_command_line_bytes: usize,
    /// Longest text line of a message, CRLF included (RFC 5322: 1000). `552 5.3.4` after the data.
    pub max_data_line_bytes: usize,
    /// Most recipients of one message (RFC 5321 §4.5.3.1.8: 100 at least). `452 4.5.3`.
    pub max_recipients: usize,
    /// Most commands in one session, then `421 4.7.0` and the connection is closed.
    pub max_commands_per_session: usize,
    /// Refused commands (syntax, sequence, unknown recipient) before `421 4.7.0`.
    pub max_bad_commands: usize,
    /// Longest wait for the client's next bytes, then `421 4.4.2`.
    pub idle_timeout_seconds: u64,
    /// Longest session, then `421 4.4.2`.
    pub max_session_seconds: u64,
    /// Concurrent sessions; one more is answered `421 4.7.0` at connect.
    pub max_sessions: usize,
    /// Concurrent sessions from one client IP; one more is answered `421 4.7.0` at connect.
    pub max_sessions_per_ip: usize,
    /// On shutdown, how long a DATA in flight may take to finish before `421 4.3.0`.
    pub shutdown_grace_seconds: u64,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 25 * 1024 * 1024,
            max_command_line_bytes: 1000,
            max_data_line_bytes: 1000,
            max_recipients: 100,
            max_commands_per_session: 10_000,
            max_bad_commands: 20,
            idle_timeout_seconds: 300,
            max_session_seconds: 1800,
            max_sessions: 100,
            max_sessions_per_ip: 25,
            shutdown_grace_seconds: 30,
        }
    }
}

impl SmtpConfig {
    /// Checks the ranges; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        let ranges: [(&str, u64, u64, u64); 11] = [
            ("smtp.max_message_bytes", self.max_message_bytes as u64, 1024, 1 << 32),
            ("smtp.max_command_line_bytes", self.max_command_line_bytes as u64, 512, 65_536),
            ("smtp.max_data_line_bytes", self.max_data_line_bytes as u64, 1000, 1 << 20),
            ("smtp.max_recipients", self.max_recipients as u64, 1, 10_000),
            ("smtp.max_commands_per_session", self.max_commands_per_session as u64, 10, 10_000_000),
            ("smtp.max_bad_commands", self.max_bad_commands as u64, 1, 1000),
            ("smtp.idle_timeout_seconds", self.idle_timeout_seconds, 1, 3600),
            ("smtp.max_session_seconds", self.max_session_seconds, 1, 86_400),
            ("smtp.max_sessions", self.max_sessions as u64, 1, 100_000),
            ("smtp.max_sessions_per_ip", self.max_sessions_per_ip as u64, 1, 100_000),
            ("smtp.shutdown_grace_seconds", self.shutdown_grace_seconds, 0, 3600),
        ];
        for (key, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(format!("`{key}`: {value} is outside {min}..={max}"));
            }
        }
        Ok(())
    }
}
