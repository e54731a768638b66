//! Each fixture mail → the decision `explain` reaches, rule by rule.

mod common;

use invited::pipeline::explain;

fn codes(reasons: &[invited::eligibility::Reason]) -> Vec<&'static str> {
    reasons.iter().map(|r| r.code.as_str()).collect()
}

#[test]
fn each_rule_gives_its_reason() {
    let config = common::config();
    // (fixture, top-level reasons, event reasons, plan kind, flags)
    type Case<'a> = (&'a str, &'a [&'a str], &'a [&'a str], Option<&'a str>, &'a [&'a str]);
    let cases: &[Case] = &[
        ("zoom-invite.eml", &[], &[], Some("cloud_fetch"), &[]),
        ("teams-invite.eml", &[], &[], Some("bot_join"), &["may_be_blocked_by_lobby"]),
        ("webex-invite.eml", &[], &["provider_disabled"], None, &[]),
        ("no-link.eml", &[], &["no_conference_link"], None, &[]),
        ("noseat.eml", &[], &["no_seat", "missing_permission"], None, &[]),
        ("ended.eml", &[], &["meeting_ended"], None, &[]),
        ("zoom-cancel.eml", &[], &["cancelled"], None, &[]),
        ("consent-missing.eml", &[], &["consent_link_required"], None, &[]),
        ("consent-ok.eml", &[], &[], Some("cloud_fetch"), &[]),
        ("unknown-recipient.eml", &["unknown_recipient"], &[], None, &[]),
        ("no-uid.eml", &["no_invite_found"], &[], None, &[]),
        ("no-calendar.eml", &["no_invite_found"], &[], None, &[]),
        ("bad-calendar.eml", &["no_invite_found"], &[], None, &[]),
        ("unknown-requester.eml", &[], &["unknown_requester"], None, &[]),
        ("no-start.eml", &[], &["no_start_time"], None, &[]),
        ("external-consent.eml", &[], &["external_consent_link"], None, &[]),
        ("consent-type-mismatch.eml", &[], &["consent_link_type_mismatch"], None, &[]),
        ("consent-bypass.eml", &[], &["consent_bypass_link"], None, &[]),
        ("authenticated-teams.eml", &[], &[], Some("bot_join"), &["authenticated_bot"]),
        ("authenticated-zoom-local.eml", &[], &[], Some("bot_join"), &["host_must_grant_recording"]),
        ("webex-misconfigured.eml", &[], &["provider_misconfigured"], None, &[]),
        ("spoofed-from.eml", &[], &["unauthenticated_sender"], None, &[]),
        ("untrusted-authserv.eml", &[], &["unauthenticated_sender"], None, &[]),
    ];
    for (name, top, event, kind, flags) in cases {
        let e = explain(&config, &common::fixture(name), &[], common::now());
        assert_eq!(codes(&e.reasons), *top, "{name}: top-level reasons");
        if e.events.is_empty() {
            assert!(event.is_empty() && kind.is_none(), "{name}: expected an event");
            continue;
        }
        let d = &e.events[0].decision;
        assert_eq!(codes(&d.reasons), *event, "{name}: event reasons");
        assert_eq!(d.eligible, kind.is_some(), "{name}: eligible");
        assert_eq!(d.plan.as_ref().map(|p| p.kind.as_str()), *kind, "{name}: plan");
        let got_flags: Vec<String> = d
            .plan
            .iter()
            .flat_map(|p| p.flags.iter())
            .map(|f| serde_json::to_value(f).unwrap().as_str().unwrap().to_string())
            .collect();
        assert_eq!(got_flags, *flags, "{name}: flags");
    }
}

#[test]
fn unknown_recipient_has_no_tenant_and_no_requester() {
    let e = explain(&common::config(), &common::fixture("unknown-recipient.eml"), &[], common::now());
    assert_eq!(e.recipient_tenant, None);
    assert_eq!(e.requester, None);
}

#[test]
fn rcpt_overrides_headers_and_plus_addressing_maps_to_the_tenant() {
    let config = common::config();
    let raw = common::fixture("unknown-recipient.eml");
    let e = explain(&config, &raw, &["acme+sales@assistant.example.com".into()], common::now());
    assert_eq!(e.recipient_tenant.as_deref(), Some("acme"));
    assert!(e.events[0].decision.eligible);
}

#[test]
fn zoom_invite_is_read_in_its_zone_and_planned_after_the_end() {
    let e = explain(&common::config(), &common::fixture("zoom-invite.eml"), &[], common::now());
    let ev = &e.events[0];
    assert_eq!(ev.start, Some(common::at("2027-01-11T15:00:00Z")));
    assert_eq!(ev.end, Some(common::at("2027-01-11T16:00:00Z")));
    assert_eq!(ev.timezone.as_deref(), Some("Europe/Berlin"));
    let plan = ev.decision.plan.as_ref().expect("plan");
    assert_eq!(plan.run_at, common::at("2027-01-11T16:15:00Z"));
    assert_eq!(ev.conference.as_ref().and_then(|c| c.provider.as_deref()), Some("zoom"));
    assert_eq!(e.requester.as_ref().map(|r| r.email.as_str()), Some("alice@acme.com"));
}

#[test]
fn meeting_under_way_runs_now() {
    let e = explain(&common::config(), &common::fixture("teams-invite.eml"), &[], common::at("2027-01-11T15:30:00Z"));
    let plan = e.events[0].decision.plan.as_ref().expect("plan");
    assert_eq!(plan.run_at, common::at("2027-01-11T15:30:00Z"));
}

#[test]
fn bot_joins_ahead_of_the_start() {
    let e = explain(&common::config(), &common::fixture("teams-invite.eml"), &[], common::now());
    let plan = e.events[0].decision.plan.as_ref().expect("plan");
    assert_eq!(plan.run_at, common::at("2027-01-11T14:59:00Z"));
}
