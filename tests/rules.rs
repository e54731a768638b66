//! The product rules where they interact (design.md, "Precise rules"), each on a small
//! mail built here, through `explain`.

mod common;

use invited::config::Config;
use invited::pipeline::{explain, ExplainedEvent};

const LINK_ZOOM: &str = "LOCATION:https://zoom.us/j/123";
const CONSENT: &str = "https://consent.assistant.example.com";

fn mail(from: &str, organizer: &str, extra: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: acme@assistant.example.com\r\nSubject: t\r\nContent-Type: text/calendar; method=REQUEST\r\n\r\n\
         BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:rule@test\r\nDTSTAMP:20270104T090000Z\r\n\
         DTSTART:20270111T150000Z\r\nDTEND:20270111T160000Z\r\nSUMMARY:t\r\n{organizer}\r\n{extra}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    .into_bytes()
}

fn config(providers: &str) -> Config {
    Config::from_toml(&format!(
        r#"
[[tenants]]
id = "acme"
assistant_addresses = ["acme@assistant.example.com"]
consent_base_url = "{CONSENT}"
[[tenants.users]]
email = "alice@acme.com"
seat = true
manual_schedule_upload = true
[[tenants.users]]
email = "carol@acme.com"
seat = true
manual_schedule_upload = true
consent_profile = "enforced"
[[tenants.users]]
email = "dave@acme.com"
[tenants.consent_profiles.enforced]
enforce_consent = true
link_type = {{ zoom = "dynamic", teams = "static" }}
{providers}
"#
    ))
    .expect("rule config")
}

const ALL_ON: &str = r#"
[tenants.providers.zoom]
enabled = true
[tenants.providers.google_meet]
enabled = true
[tenants.providers.teams]
enabled = true
[tenants.providers.webex]
enabled = true
"#;

fn event(config: &Config, raw: &[u8]) -> ExplainedEvent {
    let mut e = explain(config, raw, &[], common::now());
    assert_eq!(e.events.len(), 1, "one event");
    e.events.remove(0)
}

fn codes(e: &ExplainedEvent) -> Vec<&'static str> {
    e.decision.reasons.iter().map(|r| r.code.as_str()).collect()
}

fn flags(e: &ExplainedEvent) -> Vec<String> {
    let plan = e.decision.plan.as_ref().expect("plan");
    plan.flags.iter().map(|f| serde_json::to_value(f).unwrap().as_str().unwrap().to_string()).collect()
}

#[test]
fn rule_2_unknown_requester_is_the_only_reason() {
    let c = config("");
    let e = event(&c, &mail("x@outside.example", "ORGANIZER:mailto:y@outside.example", ""));
    assert_eq!(codes(&e), ["unknown_requester"]);
    assert!(e.decision.plan.is_none());
}

#[test]
fn rule_4_sent_by_stands_in_for_the_organizer() {
    let c = config(ALL_ON);
    let raw =
        mail("x@outside.example", "ORGANIZER;SENT-BY=\"mailto:alice@acme.com\":mailto:boss@outside.example", LINK_ZOOM);
    let ex = explain(&c, &raw, &[], common::now());
    assert_eq!(ex.requester.as_ref().map(|r| r.email.as_str()), Some("alice@acme.com"));
    assert!(ex.events[0].decision.eligible);
}

#[test]
fn rule_5_owner_is_the_organizer_even_when_another_user_forwards() {
    // alice (no consent profile) forwards carol's meeting: carol's enforced profile applies.
    let c = config(ALL_ON);
    let e = event(&c, &mail("alice@acme.com", "ORGANIZER:mailto:carol@acme.com", LINK_ZOOM));
    assert_eq!(codes(&e), ["consent_link_required"]);
    // carol forwards an outsider's meeting: carol is the requester and the owner.
    let e = event(&c, &mail("carol@acme.com", "ORGANIZER:mailto:y@outside.example", LINK_ZOOM));
    assert_eq!(codes(&e), ["consent_link_required"]);
    // alice forwards an outsider's meeting: no consent profile, recorded.
    let e = event(&c, &mail("alice@acme.com", "ORGANIZER:mailto:y@outside.example", LINK_ZOOM));
    assert!(e.decision.eligible);
}

#[test]
fn rule_6_consent_chain_reports_the_first_failure_only() {
    let c = config(ALL_ON);
    let org = "ORGANIZER:mailto:carol@acme.com";
    let cases = [
        // another company's link that is also the wrong type: external wins
        (format!("LOCATION:{CONSENT}/globex/zoom/s/t1"), vec!["external_consent_link"]),
        (format!("LOCATION:{CONSENT}/acme/zoom/s/t1"), vec!["consent_link_type_mismatch"]),
        // wrong type and a bypass link: the mismatch is reported, not the bypass
        (
            format!("LOCATION:{CONSENT}/acme/zoom/s/t1\r\nDESCRIPTION:or https://zoom.us/j/999"),
            vec!["consent_link_type_mismatch"],
        ),
        (
            format!("LOCATION:{CONSENT}/acme/zoom/d/t1\r\nDESCRIPTION:or https://zoom.us/j/999"),
            vec!["consent_bypass_link"],
        ),
        (format!("LOCATION:{CONSENT}/acme/zoom/d/t1"), vec![]),
        (format!("LOCATION:{CONSENT}/acme/teams/s/t1"), vec![]),
    ];
    for (extra, want) in cases {
        let e = event(&c, &mail("carol@acme.com", org, &extra));
        assert_eq!(codes(&e), want, "{extra}");
    }
}

#[test]
fn rule_7_plan_flags_by_provider_settings() {
    let teams =
        "X-MICROSOFT-SKYPETEAMSMEETINGURL:https://teams.microsoft.com/l/meetup-join/19%3ameeting_x%40thread.v2/0";
    let org = "ORGANIZER:mailto:alice@acme.com";
    let cases = [
        (
            "[tenants.providers.teams]\nenabled = true\nauthenticated_bot = true",
            teams,
            "bot_join",
            vec!["authenticated_bot"],
        ),
        ("[tenants.providers.teams]\nenabled = true", teams, "bot_join", vec!["may_be_blocked_by_lobby"]),
        (
            "[tenants.providers.zoom]\nenabled = true\nrecording = \"local\"",
            LINK_ZOOM,
            "bot_join",
            vec!["host_must_grant_recording"],
        ),
        (
            "[tenants.providers.zoom]\nenabled = true\nrecording = \"local\"\nauto_recording_permission = true",
            LINK_ZOOM,
            "bot_join",
            vec![],
        ),
        ("[tenants.providers.zoom]\nenabled = true", LINK_ZOOM, "cloud_fetch", vec![]),
        (
            "[tenants.providers.google_meet]\nenabled = true",
            "DESCRIPTION:https://meet.google.com/abc-defg-hij",
            "bot_join",
            vec![],
        ),
    ];
    for (providers, link, kind, want) in cases {
        let e = event(&config(providers), &mail("alice@acme.com", org, link));
        assert_eq!(e.decision.plan.as_ref().map(|p| p.kind.as_str()), Some(kind), "{providers}");
        assert_eq!(flags(&e), want, "{providers}");
    }
}

#[test]
fn provider_errors_and_missing_permission_are_all_reported() {
    let c = config("[tenants.providers.zoom]\nenabled = true\nerror = \"OAuth token expired\"");
    let e = event(&c, &mail("dave@acme.com", "ORGANIZER:mailto:dave@acme.com", LINK_ZOOM));
    assert_eq!(codes(&e), ["no_seat", "missing_permission", "provider_misconfigured"]);
    assert!(e.decision.reasons[2].message.contains("OAuth token expired"));
}

#[test]
fn rule_11_request_with_status_cancelled_is_a_cancelled_request() {
    let c = config(ALL_ON);
    let e = event(
        &c,
        &mail("alice@acme.com", "ORGANIZER:mailto:alice@acme.com", &format!("{LINK_ZOOM}\r\nSTATUS:CANCELLED")),
    );
    assert_eq!(e.method.as_deref(), Some("REQUEST"));
    assert_eq!(codes(&e), ["cancelled"]);
}

#[test]
fn rule_11_outlook_sequence_stands_in_for_a_missing_sequence() {
    let c = config(ALL_ON);
    let e = event(
        &c,
        &mail(
            "alice@acme.com",
            "ORGANIZER:mailto:alice@acme.com",
            &format!("{LINK_ZOOM}\r\nX-MICROSOFT-CDO-APPT-SEQUENCE:4"),
        ),
    );
    assert_eq!(e.sequence, 4);
}

#[test]
fn mbox_from_line_before_the_headers_is_still_a_mail() {
    let c = config(ALL_ON);
    let mut raw = b"From alice@acme.com Mon Jan  4 09:00:00 2027\n".to_vec();
    raw.extend(mail("alice@acme.com", "ORGANIZER:mailto:alice@acme.com", LINK_ZOOM));
    assert!(event(&c, &raw).decision.eligible);
}
