//! Any bytes, as a mail or a bare calendar, through extract + normalise + decide
//! (`invited::pipeline::explain`): no panic, no hang, no runaway memory.
#![no_main]

use std::sync::LazyLock;

use chrono::{DateTime, TimeZone, Utc};
use invited::config::Config;
use libfuzzer_sys::fuzz_target;

/// One tenant with every provider on and a consent profile, so that the decision
/// code past extraction runs too.
const CONFIG: &str = r#"
[[tenants]]
id = "acme"
company = "acme"
assistant_addresses = ["acme@assistant.example.com"]
default_timezone = "America/New_York"
consent_base_url = "https://consent.assistant.example.com"

[[tenants.users]]
email = "alice@acme.com"
seat = true
manual_schedule_upload = true
consent_profile = "enforced"

[tenants.providers.zoom]
enabled = true
recording = "cloud"
[tenants.providers.google_meet]
enabled = true
[tenants.providers.teams]
enabled = true
[tenants.providers.webex]
enabled = true

[tenants.consent_profiles.enforced]
enforce_consent = true
link_type = { zoom = "dynamic", google_meet = "static", teams = "dynamic", webex = "static" }
"#;

static SETUP: LazyLock<(Config, Vec<String>, DateTime<Utc>)> = LazyLock::new(|| {
    let config = Config::from_toml(CONFIG).expect("the fuzz config is valid");
    let rcpt = vec!["acme@assistant.example.com".to_string()];
    let now = Utc.with_ymd_and_hms(2027, 1, 4, 12, 0, 0).single().expect("a valid instant");
    (config, rcpt, now)
});

fuzz_target!(|data: &[u8]| {
    let (config, rcpt, now) = &*SETUP;
    let explanation = invited::pipeline::explain(config, data, rcpt, *now);
    serde_json::to_string(&explanation).expect("an explanation serialises");
});
