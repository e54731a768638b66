//! `sender_auth = "authentication-results"` end to end through `explain`: the requester is
//! believed only on an aligned pass in the topmost header from a trusted authserv-id
//! (design.md, precise rule 3).

mod common;

use invited::config::Config;
use invited::pipeline::{explain, Explanation};

/// A Zoom invite from `from`, organised by `organizer`, below the given `Authentication-Results` values.
fn mail(auth_results: &[&str], from: &str, organizer: &str) -> Vec<u8> {
    let headers: String = auth_results.iter().map(|v| format!("Authentication-Results: {v}\r\n")).collect();
    format!(
        "{headers}From: {from}\r\nTo: acme@assistant.example.com\r\nSubject: t\r\n\
         Content-Type: text/calendar; method=REQUEST\r\n\r\n\
         BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:auth@test\r\nDTSTAMP:20270104T090000Z\r\n\
         DTSTART:20270111T150000Z\r\nDTEND:20270111T160000Z\r\nSUMMARY:t\r\nORGANIZER:mailto:{organizer}\r\n\
         LOCATION:https://zoom.us/j/123\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    .into_bytes()
}

const TENANT: &str = r#"
[[tenants]]
id = "acme"
assistant_addresses = ["acme@assistant.example.com"]
sender_auth = "authentication-results"
trusted_authserv_ids = ["mx.acme.com"]
[[tenants.users]]
email = "alice@acme.com"
seat = true
manual_schedule_upload = true
[[tenants.users]]
email = "bob@acme.com"
seat = true
manual_schedule_upload = true
[tenants.providers.zoom]
enabled = true
"#;

fn config() -> Config {
    Config::from_toml(TENANT).expect("sender_auth config")
}

/// (requester email, authenticated, reason codes of the one event, eligible)
fn outcome(raw: &[u8]) -> (Option<(String, bool)>, Vec<&'static str>, bool) {
    let ex: Explanation = explain(&config(), raw, &[], common::now());
    assert_eq!(ex.events.len(), 1, "one event");
    let e = &ex.events[0];
    let codes = e.decision.reasons.iter().map(|r| r.code.as_str()).collect();
    (ex.requester.map(|r| (r.email, r.authenticated)), codes, e.decision.eligible)
}

fn who(email: &str, authenticated: bool) -> Option<(String, bool)> {
    Some((email.to_string(), authenticated))
}

const PASS: &str = "mx.acme.com; dkim=pass header.d=acme.com header.s=s1; spf=pass smtp.mailfrom=x@acme.com; \
                    dmarc=pass (p=REJECT) header.from=acme.com";

#[test]
fn aligned_pass_from_the_trusted_server_authenticates_the_sender() {
    let got = outcome(&mail(&[PASS], "alice@acme.com", "y@outside.example"));
    assert_eq!(got, (who("alice@acme.com", true), vec![], true));
    // folded over several lines, as MTAs write it, and with only DKIM to go on
    let folded = "mx.acme.com;\r\n\tdkim=pass (2048-bit key)\r\n\theader.d=mail.acme.com header.s=s1;\r\n\tspf=none";
    let got = outcome(&mail(&[folded], "alice@acme.com", "y@outside.example"));
    assert_eq!(got, (who("alice@acme.com", true), vec![], true));
}

#[test]
fn forged_header_from_an_untrusted_server_falls_back_to_the_organizer_unauthenticated() {
    let forged = "evil.example; dkim=pass header.d=acme.com; dmarc=pass header.from=acme.com";
    let ours = "mx.acme.com; dkim=none; spf=softfail smtp.mailfrom=x@evil.example; dmarc=fail header.from=acme.com";
    // the forged header on top of ours, and the forged header alone (the sender wrote it)
    for headers in [vec![forged, ours], vec![forged]] {
        let got = outcome(&mail(&headers, "alice@acme.com", "bob@acme.com"));
        assert_eq!(got, (who("bob@acme.com", false), vec!["unauthenticated_sender"], false), "{headers:?}");
    }
    // a pass our server wrote *below* a later failing one of ours does not count either
    let got = outcome(&mail(&[ours, PASS], "alice@acme.com", "bob@acme.com"));
    assert_eq!(got, (who("bob@acme.com", false), vec!["unauthenticated_sender"], false));
}

#[test]
fn no_header_at_all_is_unauthenticated() {
    let got = outcome(&mail(&[], "alice@acme.com", "bob@acme.com"));
    assert_eq!(got, (who("bob@acme.com", false), vec!["unauthenticated_sender"], false));
    // no organizer user: the From user stays the requester, not believed
    let got = outcome(&mail(&[], "alice@acme.com", "y@outside.example"));
    assert_eq!(got, (who("alice@acme.com", false), vec!["unauthenticated_sender"], false));
}

#[test]
fn pass_for_another_domain_does_not_authenticate_from() {
    let other = "mx.acme.com; dkim=pass header.d=evil.example; spf=pass smtp.mailfrom=x@evil.example; dmarc=none";
    let got = outcome(&mail(&[other], "alice@acme.com", "y@outside.example"));
    assert_eq!(got, (who("alice@acme.com", false), vec!["unauthenticated_sender"], false));
}

#[test]
fn authenticated_outside_sender_forwarding_a_users_meeting_makes_the_organizer_authenticated() {
    // Rule 3 only speaks of From failing: From passed, so the organizer requester is believed.
    let partner = "mx.acme.com; dkim=pass header.d=partner.example; dmarc=pass header.from=partner.example";
    let got = outcome(&mail(&[partner], "p@partner.example", "bob@acme.com"));
    assert_eq!(got, (who("bob@acme.com", true), vec![], true));
}

#[test]
fn config_accepts_dmarc_and_requires_trusted_ids() {
    let dmarc = TENANT.replace("\"authentication-results\"", "\"dmarc\"");
    Config::from_toml(&dmarc).expect("dmarc needs nothing more");
    let no_ids = TENANT.replace("[\"mx.acme.com\"]", "[]");
    let e = Config::from_toml(&no_ids).expect_err("no trusted ids").to_string();
    assert!(e.contains("trusted_authserv_ids"), "{e}");
}
