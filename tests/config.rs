//! The configuration file: the shipped one runs as it is; mistakes name their key.

mod common;

use std::path::Path;

use invited::config::Config;

#[test]
fn shipped_config_loads() {
    let c = Config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/invited.toml")).expect("shipped config");
    assert_eq!(c.tenants[0].id, "acme");
    assert_eq!(c.store.url, "sqlite://data/invited.db");
    assert!(c.tenant_for_address("ACME+x@assistant.example.com").is_some());
}

#[test]
fn compose_config_loads() {
    // As docker-compose.yml runs it, with the recorder token its environment gives.
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/compose.toml"))
        .expect("compose config");
    let text = text.replace("token_env = \"INVITED_RECORDER_TOKEN\"", "token = \"compose-test-token-0123\"");
    let c = Config::from_toml(&text).expect("compose config loads");
    assert_eq!(c.server.smtp_listen, "0.0.0.0:2525");
    assert_eq!(c.recorders.tokens.len(), 1);
    assert!(c.store.url.starts_with("postgres://"));
}

fn error_of(toml: &str) -> String {
    Config::from_toml(toml).expect_err("must be refused").to_string()
}

const TENANT: &str = "[[tenants]]\nid = \"a\"\nassistant_addresses = [\"a@x.example\"]\n";

#[test]
fn mistakes_name_the_key_and_the_problem() {
    let cases = [
        (format!("{TENANT}seats = 1\n"), "seats"),
        (format!("[server]\nsmtp_port = 25\n{TENANT}"), "smtp_port"),
        (format!("{TENANT}default_timezone = \"Mars/Olympus\"\n"), "default_timezone"),
        (format!("{TENANT}sender_auth = \"maybe\"\n"), "sender_auth"),
        (
            format!("{TENANT}[[tenants.users]]\nemail = \"u@x.example\"\nconsent_profile = \"nope\"\n"),
            "consent_profile",
        ),
        (format!("{TENANT}[tenants.providers.zoom]\nrecording = \"tape\"\n"), "recording"),
        (format!("[scheduling]\nhorizon_days = \"soon\"\n{TENANT}"), "horizon_days"),
        ("[server]\n".to_string(), "tenants"),
        (format!("{TENANT}{TENANT}"), "appears twice"),
        (format!("[scheduling]\nhorizon_days = 100000\n{TENANT}"), "horizon_days"),
        (format!("[scheduling]\njoin_lead_seconds = -5\n{TENANT}"), "join_lead_seconds"),
        (format!("[limits]\nmax_occurrences = 0\n{TENANT}"), "max_occurrences"),
        (
            format!("{TENANT}[[tenants.users]]\nemail = \"u@x.example\"\n[[tenants.users]]\nemail = \"U@x.example\"\n"),
            "listed twice",
        ),
    ];
    for (toml, key) in cases {
        let e = error_of(&toml);
        assert!(e.contains(key), "error for {key:?} does not name it: {e}");
    }
}

#[test]
fn environment_overrides_scalar_sections_and_ignores_other_variables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, TENANT).unwrap();
    // figment reads the process environment; these names are unique to this test.
    std::env::set_var("INVITED_SCHEDULING__HORIZON_DAYS", "7");
    std::env::set_var("INVITED_IMAP__POLL_SECONDS", "45");
    std::env::set_var("INVITED_TEST_UNRELATED", "1");
    let c = Config::load(&path);
    std::env::remove_var("INVITED_SCHEDULING__HORIZON_DAYS");
    std::env::remove_var("INVITED_IMAP__POLL_SECONDS");
    std::env::remove_var("INVITED_TEST_UNRELATED");
    let c = c.expect("loads");
    assert_eq!(c.scheduling.horizon_days, 7);
    assert_eq!(c.imap.poll_seconds, 45, "[imap] is overridden too, as README says");
}

#[test]
fn missing_file_is_named() {
    let e = Config::load(Path::new("/nonexistent/invited.toml")).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/invited.toml"), "{e}");
}

const MAILBOX: &str = "[[tenants.mailboxes]]\nhost = \"imap.acme.com\"\nusername = \"assistant@acme.com\"\n";

#[test]
fn a_mailbox_takes_the_keys_of_the_issue() {
    let toml = format!(
        "{TENANT}{MAILBOX}port = 993\ntls = \"implicit\"\npassword = \"pw\"\nfolder = \"INBOX\"\n\
         processed_folder = \"Processed\"\nca_file = \"\"\n"
    );
    let c = Config::from_toml(&toml).expect("a full mailbox entry loads");
    let m = &c.tenants[0].mailboxes[0];
    assert_eq!((m.port(), m.move_to(), m.ca_path()), (993, Some("Processed"), None));
    assert_eq!(m.secret(), Some("pw"));
    let toml = format!("{TENANT}{MAILBOX}password_env = \"INVITED_TEST_SURELY_UNSET_IMAP_PASSWORD\"\n");
    assert!(error_of(&toml).contains("mailboxes[0].password_env"), "{}", error_of(&toml));
}

#[test]
fn mailbox_mistakes_are_refused_at_load() {
    let cases = [
        // Plain IMAP only on loopback: the password would cross the network in clear.
        (format!("{TENANT}{MAILBOX}tls = \"none\"\npassword = \"pw\"\n"), "loopback"),
        (format!("{TENANT}{MAILBOX}tls = \"ssl\"\npassword = \"pw\"\n"), "tls"),
        (format!("{TENANT}{MAILBOX}pasword = \"pw\"\n"), "pasword"),
        (format!("{TENANT}{MAILBOX}"), "exactly one of `password` and `password_env`"),
        (format!("{TENANT}{MAILBOX}password = \"pw\"\nprocessed_folder = \"INBOX\"\n"), "processed_folder"),
        (format!("{TENANT}{MAILBOX}password = \"pw\"\nca_file = \"/nonexistent/ca.pem\"\n"), "ca_file"),
        (format!("{TENANT}{MAILBOX}password = \"pw\"\n{MAILBOX}password = \"pw\"\n"), "listed twice"),
        (format!("[imap]\nlease_retry_seconds = 600\n{TENANT}"), "imap.lease_retry_seconds"),
    ];
    for (toml, expected) in cases {
        let e = error_of(&toml);
        assert!(e.contains(expected), "{expected:?} not in {e:?}");
        assert!(!e.contains("\"pw\""), "the password is not echoed: {e}");
    }
    let loopback = format!("{TENANT}[[tenants.mailboxes]]\nhost = \"127.0.0.1\"\nport = 143\ntls = \"none\"\nusername = \"u\"\npassword = \"pw\"\n");
    Config::from_toml(&loopback).expect("plain IMAP on loopback is allowed");
}
