//! Configuration: one TOML file (design.md, "Configuration that must stay stable")
//! with `INVITED_<SECTION>__<KEY>` environment overrides for the scalar sections.
//!
//! Unknown keys are errors, and every error names the key and what is wrong with it,
//! because a daemon that silently ignores a misspelt `seat = true` records nothing.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use chrono_tz::Tz;
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::ics::IcsLimits;
use crate::intake::imap::{ImapConfig, MailboxConfig};
use crate::intake::smtp::SmtpConfig;
use crate::mime::MimeLimits;

mod live;
mod masked;
pub use live::LiveConfig;
pub use masked::{mask_url, resolved_toml};

/// The default configuration file, relative to the working directory.
pub const DEFAULT_CONFIG_PATH: &str = "config/invited.toml";

/// Sections whose keys may be overridden from the environment. Tenants are not:
/// they are lists of tables, which environment variables express badly.
const ENV_SECTIONS: [&str; 6] = ["server", "store", "scheduling", "limits", "smtp", "imap"];

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub scheduling: SchedulingConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub smtp: SmtpConfig,
    #[serde(default)]
    pub recorders: RecordersConfig,
    /// Outcome replies to the requester (README.md, "Reply mail").
    #[serde(default)]
    pub notify: crate::notify::NotifyConfig,
    #[serde(default)]
    pub imap: ImapConfig,
    pub tenants: Vec<Tenant>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Where the SMTP intake listens.
    pub smtp_listen: String,
    /// Where health checks and the recorder API listen.
    pub http_listen: String,
    /// Our name in SMTP greetings and `Received:` headers.
    pub hostname: String,
    /// PEM certificate chain for STARTTLS; with `tls_key`, STARTTLS is offered.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            smtp_listen: "127.0.0.1:2525".into(),
            http_listen: "127.0.0.1:8080".into(),
            hostname: "assistant.example.com".into(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://path/to/file.db` (relative paths are relative to the working directory).
    pub url: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { url: "sqlite://data/invited.db".into() }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulingConfig {
    /// A bot joins this long before the start.
    pub join_lead_seconds: i64,
    /// A cloud recording is fetched this long after the end.
    pub cloud_fetch_delay_seconds: i64,
    /// Occurrences of a series are scheduled this far ahead.
    pub horizon_days: i64,
    /// How often `serve` looks for due work.
    pub tick_seconds: u64,
}

impl Default for SchedulingConfig {
    fn default() -> Self {
        Self { join_lead_seconds: 60, cloud_fetch_delay_seconds: 900, horizon_days: 30, tick_seconds: 30 }
    }
}

/// Limits on hostile input. Each has a default; breaking one is a recorded reason, never a panic.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Deepest MIME nesting followed (multiparts and forwarded messages).
    pub max_mime_depth: usize,
    /// Most MIME parts looked at in one message.
    pub max_mime_parts: usize,
    /// Largest calendar object read, in bytes.
    pub max_ics_bytes: usize,
    /// Most VEVENTs read from one calendar object.
    pub max_events_per_calendar: usize,
    /// Most occurrences of one series expanded.
    pub max_occurrences: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 25 * 1024 * 1024,
            max_mime_depth: 16,
            max_mime_parts: 1000,
            max_ics_bytes: 1024 * 1024,
            max_events_per_calendar: 500,
            max_occurrences: 1000,
        }
    }
}

impl LimitsConfig {
    pub fn mime(&self) -> MimeLimits {
        MimeLimits {
            max_depth: self.max_mime_depth,
            max_parts: self.max_mime_parts,
            max_calendar_bytes: self.max_ics_bytes,
        }
    }

    pub fn ics(&self) -> IcsLimits {
        IcsLimits { max_events: self.max_events_per_calendar, ..IcsLimits::default() }
    }
}

/// The recorder API (`/v1/jobs/…`): who may claim jobs, and how leases and retries go.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordersConfig {
    /// Bearer tokens of the recorder fleet; none: every recorder request is refused.
    pub tokens: Vec<RecorderToken>,
    /// A claimed job goes back to the pool when its recorder has not sent a heartbeat for this long.
    pub lease_seconds: u64,
    /// A job is `failed` once it has been claimed this many times.
    pub max_attempts: u32,
    /// Wait before retrying a failed capture; doubled for each further attempt.
    pub retry_base_seconds: u64,
    /// The longest wait between retries.
    pub retry_max_seconds: u64,
    /// Most jobs handed out by one claim.
    pub claim_limit: u32,
}

impl Default for RecordersConfig {
    fn default() -> Self {
        Self {
            tokens: Vec::new(),
            lease_seconds: 120,
            max_attempts: 3,
            retry_base_seconds: 30,
            retry_max_seconds: 900,
            claim_limit: 10,
        }
    }
}

/// One recorder's credential. The recorder is known by `name` in jobs and logs; it cannot
/// choose another.
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RecorderToken {
    pub name: String,
    /// The token itself (development only: prefer `token_env`).
    #[serde(default)]
    pub token: Option<String>,
    /// The environment variable holding the token, read at load.
    #[serde(default)]
    pub token_env: Option<String>,
    /// The value of `token_env`, read at load.
    #[serde(skip)]
    pub env_token: Option<String>,
}

impl std::fmt::Debug for RecorderToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecorderToken").field("name", &self.name).field("token_env", &self.token_env).finish()
    }
}

impl RecorderToken {
    /// A token given in the configuration itself.
    pub fn new(name: &str, token: &str) -> Self {
        Self { name: name.into(), token: Some(token.into()), ..Self::default() }
    }

    /// The bearer token this recorder presents.
    pub fn secret(&self) -> Option<&str> {
        self.token.as_deref().or(self.env_token.as_deref())
    }
}

impl RecordersConfig {
    /// Reads the `token_env` variables; a missing one is an error naming the key.
    fn resolve_tokens(&mut self) -> Result<(), ConfigError> {
        for (i, t) in self.tokens.iter_mut().enumerate() {
            if let Some(var) = &t.token_env {
                let value = std::env::var(var).map_err(|_| {
                    ConfigError::Invalid(format!(
                        "`recorders.tokens[{i}].token_env`: environment variable {var:?} is not set"
                    ))
                })?;
                t.env_token = Some(value);
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: String, what: String| Err(ConfigError::Invalid(format!("`{key}`: {what}")));
        let ranges = [
            ("recorders.lease_seconds", self.lease_seconds, 5, 86_400),
            ("recorders.max_attempts", u64::from(self.max_attempts), 1, 100),
            ("recorders.retry_base_seconds", self.retry_base_seconds, 1, 86_400),
            ("recorders.retry_max_seconds", self.retry_max_seconds, self.retry_base_seconds, 7 * 86_400),
            ("recorders.claim_limit", u64::from(self.claim_limit), 1, 1000),
        ];
        for (key, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return bad(key.into(), format!("{value} is outside {min}..={max}"));
            }
        }
        let mut names = HashSet::new();
        for (i, t) in self.tokens.iter().enumerate() {
            let key = |k: &str| format!("recorders.tokens[{i}].{k}");
            if t.name.trim().is_empty() {
                return bad(key("name"), "must not be empty".into());
            }
            if !names.insert(t.name.as_str()) {
                return bad(key("name"), format!("recorder {:?} appears twice", t.name));
            }
            if t.token.is_some() == t.token_env.is_some() {
                return bad(key("token"), "give exactly one of `token` and `token_env`".into());
            }
            let which = if t.token.is_some() { "token" } else { "token_env" };
            if t.secret().map_or(0, |s| s.trim().len()) < 16 {
                return bad(key(which), "the token must be at least 16 characters".into());
            }
        }
        Ok(())
    }
}

/// How the sender of a mail is authenticated before From is believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum SenderAuth {
    /// Trust the header From as it is. For development and trusted relays only.
    #[serde(rename = "none")]
    None,
    /// Verify DKIM/SPF and require DMARC alignment.
    #[serde(rename = "dmarc")]
    Dmarc,
    /// Believe `Authentication-Results` headers added by `trusted_authserv_ids`.
    #[serde(rename = "authentication-results")]
    AuthenticationResults,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    pub id: String,
    /// The company segment of this tenant's consent links; defaults to `id`.
    #[serde(default)]
    pub company: Option<String>,
    pub assistant_addresses: Vec<String>,
    /// IANA zone for floating times and all-day dates.
    #[serde(default = "default_timezone")]
    pub default_timezone: String,
    #[serde(default = "default_sender_auth")]
    pub sender_auth: SenderAuth,
    #[serde(default)]
    pub trusted_authserv_ids: Vec<String>,
    #[serde(default)]
    pub consent_base_url: Option<String>,
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub providers: Providers,
    #[serde(default)]
    pub consent_profiles: BTreeMap<String, ConsentProfile>,
    /// Outcome replies to this tenant's requesters, when `[notify]` is enabled.
    #[serde(default = "default_replies")]
    pub replies: bool,
    /// IMAP mailboxes `serve` watches for this tenant's mail.
    #[serde(default)]
    pub mailboxes: Vec<MailboxConfig>,
}

fn default_replies() -> bool {
    true
}

fn default_timezone() -> String {
    "UTC".into()
}

fn default_sender_auth() -> SenderAuth {
    SenderAuth::None
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub email: String,
    #[serde(default)]
    pub seat: bool,
    #[serde(default)]
    pub manual_schedule_upload: bool,
    #[serde(default)]
    pub consent_profile: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Providers {
    pub zoom: ZoomSettings,
    pub google_meet: ProviderSettings,
    pub teams: BotProviderSettings,
    pub webex: BotProviderSettings,
}

/// A provider is off until the operator turns it on, as in the product.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderSettings {
    pub enabled: bool,
    /// Non-empty: the provider is misconfigured, and this is shown as the reason.
    pub error: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BotProviderSettings {
    pub enabled: bool,
    pub error: String,
    /// The bot joins as a recognised user and is not held in the lobby.
    pub authenticated_bot: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZoomSettings {
    pub enabled: bool,
    pub error: String,
    pub recording: ZoomRecording,
    /// The Zoom admin lets the bot record without the host granting it.
    pub auto_recording_permission: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ZoomRecording {
    #[default]
    Cloud,
    Local,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsentProfile {
    pub enforce_consent: bool,
    /// The consent-link type each provider must use.
    pub link_type: BTreeMap<String, LinkType>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkType {
    Static,
    Dynamic,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    Missing(String),
    #[error("configuration error: {0}")]
    Invalid(String),
}

/// Provider names as they appear in config and output.
pub const PROVIDERS: [&str; 4] = ["zoom", "google_meet", "teams", "webex"];

impl Config {
    /// Loads `path` with environment overrides and checks it.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        if !path.exists() {
            return Err(ConfigError::Missing(path.display().to_string()));
        }
        let env = Env::prefixed("INVITED_").split("__").filter(|key| {
            let key = key.as_str().to_ascii_lowercase();
            ENV_SECTIONS.iter().any(|s| key.starts_with(&format!("{s}.")))
        });
        let mut config: Config = Figment::new()
            .merge(Toml::file_exact(path))
            .merge(env)
            .extract()
            .map_err(|e| ConfigError::Invalid(figment_message(e)))?;
        config.recorders.resolve_tokens()?;
        config.notify.resolve_password()?;
        config.resolve_mailbox_passwords()?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text without environment overrides (tests, `--config -`).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let mut config: Config =
            Figment::new().merge(Toml::string(text)).extract().map_err(|e| ConfigError::Invalid(figment_message(e)))?;
        config.recorders.resolve_tokens()?;
        config.notify.resolve_password()?;
        config.resolve_mailbox_passwords()?;
        config.validate()?;
        Ok(config)
    }

    /// Reads the mailboxes' `password_env` variables; a missing one is an error naming the key.
    fn resolve_mailbox_passwords(&mut self) -> Result<(), ConfigError> {
        for (i, t) in self.tenants.iter_mut().enumerate() {
            for (j, m) in t.mailboxes.iter_mut().enumerate() {
                m.resolve_password(&format!("tenants[{i}].mailboxes[{j}]")).map_err(ConfigError::Invalid)?;
            }
        }
        Ok(())
    }

    /// Checks what serde cannot: references, uniqueness, zone names.
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: String, what: String| Err(ConfigError::Invalid(format!("`{key}`: {what}")));
        if self.tenants.is_empty() {
            return bad("tenants".into(), "at least one [[tenants]] entry is required".into());
        }
        let s = &self.scheduling;
        let ranges = [
            ("scheduling.horizon_days", s.horizon_days, 1, 3650),
            ("scheduling.join_lead_seconds", s.join_lead_seconds, 0, 86_400),
            ("scheduling.cloud_fetch_delay_seconds", s.cloud_fetch_delay_seconds, 0, 30 * 86_400),
            ("scheduling.tick_seconds", i64::try_from(s.tick_seconds).unwrap_or(i64::MAX), 1, 3600),
        ];
        for (key, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return bad(key.into(), format!("{value} is outside {min}..={max}"));
            }
        }
        let l = &self.limits;
        for (key, value) in [
            ("limits.max_message_bytes", l.max_message_bytes),
            ("limits.max_mime_depth", l.max_mime_depth),
            ("limits.max_mime_parts", l.max_mime_parts),
            ("limits.max_ics_bytes", l.max_ics_bytes),
            ("limits.max_events_per_calendar", l.max_events_per_calendar),
            ("limits.max_occurrences", l.max_occurrences),
        ] {
            if value == 0 {
                return bad(key.into(), "must be at least 1".into());
            }
        }
        self.smtp.validate().map_err(ConfigError::Invalid)?;
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return bad("server.tls_cert".into(), "`tls_cert` and `tls_key` must be set together".into());
        }
        self.recorders.validate()?;
        self.notify.validate()?;
        self.imap.validate().map_err(ConfigError::Invalid)?;
        let mut mailboxes = HashSet::new();
        let mut ids = HashSet::new();
        let mut addresses = HashSet::new();
        for (i, t) in self.tenants.iter().enumerate() {
            let key = |k: &str| format!("tenants[{i}].{k}");
            if t.id.trim().is_empty() {
                return bad(key("id"), "must not be empty".into());
            }
            if !ids.insert(t.id.clone()) {
                return bad(key("id"), format!("tenant id {:?} appears twice", t.id));
            }
            if t.assistant_addresses.is_empty() {
                return bad(key("assistant_addresses"), "at least one address is required".into());
            }
            for a in &t.assistant_addresses {
                if !a.contains('@') {
                    return bad(key("assistant_addresses"), format!("{a:?} is not a mail address"));
                }
                if !addresses.insert(a.to_ascii_lowercase()) {
                    return bad(key("assistant_addresses"), format!("{a:?} belongs to two tenants"));
                }
            }
            if t.default_timezone.parse::<Tz>().is_err() {
                return bad(key("default_timezone"), format!("{:?} is not an IANA time zone", t.default_timezone));
            }
            match t.sender_auth {
                SenderAuth::None => {}
                SenderAuth::AuthenticationResults => {
                    // Without a trusted authserv-id no header could ever count: every mail would fail.
                    if t.trusted_authserv_ids.iter().all(|id| id.trim().is_empty()) {
                        return bad(
                            key("trusted_authserv_ids"),
                            "sender_auth = \"authentication-results\" needs at least one authserv-id \
                             (the receiving MTA's name in its Authentication-Results headers)"
                                .into(),
                        );
                    }
                }
                // Checked with DNS while processing; nothing to configure.
                SenderAuth::Dmarc => {}
            }
            let mut emails = HashSet::new();
            for (j, u) in t.users.iter().enumerate() {
                if !emails.insert(u.email.to_ascii_lowercase()) {
                    return bad(key(&format!("users[{j}].email")), format!("{:?} is listed twice", u.email));
                }
                if !u.email.contains('@') {
                    return bad(key(&format!("users[{j}].email")), format!("{:?} is not a mail address", u.email));
                }
                if let Some(p) = &u.consent_profile {
                    if !t.consent_profiles.contains_key(p) {
                        return bad(
                            key(&format!("users[{j}].consent_profile")),
                            format!("no consent profile named {p:?} in this tenant"),
                        );
                    }
                }
            }
            for (j, m) in t.mailboxes.iter().enumerate() {
                let mailbox = key(&format!("mailboxes[{j}]"));
                m.validate(&mailbox).map_err(ConfigError::Invalid)?;
                // Two watchers on one folder would race each other for its messages.
                let watched = (m.host.to_ascii_lowercase(), m.port(), m.username.clone(), m.folder.clone());
                if !mailboxes.insert(watched) {
                    return bad(
                        mailbox,
                        format!("folder {:?} of {} on {} is listed twice", m.folder, m.username, m.host),
                    );
                }
            }
            for (name, profile) in &t.consent_profiles {
                for provider in profile.link_type.keys() {
                    if !PROVIDERS.contains(&provider.as_str()) {
                        return bad(
                            key(&format!("consent_profiles.{name}.link_type")),
                            format!("unknown provider {provider:?} (known: {})", PROVIDERS.join(", ")),
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// The tenant one of whose assistant addresses is `address` (plus-addressing allowed).
    pub fn tenant_for_address(&self, address: &str) -> Option<&Tenant> {
        let wanted = strip_plus(&address.to_ascii_lowercase());
        self.tenants.iter().find(|t| t.assistant_addresses.iter().any(|a| a.eq_ignore_ascii_case(&wanted)))
    }
}

/// `acme+anything@host` → `acme@host`.
fn strip_plus(address: &str) -> String {
    match address.split_once('@') {
        Some((local, domain)) => {
            let local = local.split_once('+').map_or(local, |(l, _)| l);
            format!("{local}@{domain}")
        }
        None => address.to_string(),
    }
}

/// Figment's error, one line per problem, each naming the key.
fn figment_message(e: figment::Error) -> String {
    e.into_iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
}

impl Tenant {
    pub fn company(&self) -> &str {
        self.company.as_deref().unwrap_or(&self.id)
    }

    /// The zone for floating times; validated at load.
    pub fn timezone(&self) -> Tz {
        self.default_timezone.parse().unwrap_or(Tz::UTC)
    }

    pub fn user(&self, email: &str) -> Option<&User> {
        self.users.iter().find(|u| u.email.eq_ignore_ascii_case(email))
    }

    pub fn consent_profile_of(&self, user: &User) -> Option<&ConsentProfile> {
        user.consent_profile.as_ref().and_then(|p| self.consent_profiles.get(p))
    }
}
