//! May this meeting be recorded? A pure function of (tenant settings, requester,
//! current event state, now) → [`Decision`] (design.md, "Product rules").
//!
//! Every failing rule is reported with a stable code and a sentence a team member
//! understands; a manual invite skips the automatic-recording rules, and the
//! decision says so.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::conference::{Conference, Provider};
use crate::config::{SchedulingConfig, Tenant, ZoomRecording};
use crate::model::{EventVersion, Organizer};

/// Stable reason codes (design.md rules table). Serialized in snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    NoInviteFound,
    UnknownRecipient,
    UnauthenticatedSender,
    UnknownRequester,
    NoSeat,
    MissingPermission,
    NoConferenceLink,
    ProviderDisabled,
    ProviderMisconfigured,
    ConsentLinkRequired,
    ConsentLinkTypeMismatch,
    ConsentBypassLink,
    ExternalConsentLink,
    ConsentDeclined,
    Cancelled,
    MeetingEnded,
    /// The event has no DTSTART, so there is nothing to schedule.
    NoStartTime,
}

impl ReasonCode {
    /// The code as it appears in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::NoInviteFound => "no_invite_found",
            ReasonCode::UnknownRecipient => "unknown_recipient",
            ReasonCode::UnauthenticatedSender => "unauthenticated_sender",
            ReasonCode::UnknownRequester => "unknown_requester",
            ReasonCode::NoSeat => "no_seat",
            ReasonCode::MissingPermission => "missing_permission",
            ReasonCode::NoConferenceLink => "no_conference_link",
            ReasonCode::ProviderDisabled => "provider_disabled",
            ReasonCode::ProviderMisconfigured => "provider_misconfigured",
            ReasonCode::ConsentLinkRequired => "consent_link_required",
            ReasonCode::ConsentLinkTypeMismatch => "consent_link_type_mismatch",
            ReasonCode::ConsentBypassLink => "consent_bypass_link",
            ReasonCode::ExternalConsentLink => "external_consent_link",
            ReasonCode::ConsentDeclined => "consent_declined",
            ReasonCode::Cancelled => "cancelled",
            ReasonCode::MeetingEnded => "meeting_ended",
            ReasonCode::NoStartTime => "no_start_time",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    pub code: ReasonCode,
    pub message: String,
}

impl Reason {
    pub fn new(code: ReasonCode, message: impl Into<String>) -> Reason {
        Reason { code, message: message.into() }
    }
}

/// The team member who asked for the recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requester {
    pub email: String,
    /// Whether the identity passed the tenant's sender authentication.
    pub authenticated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanKind {
    /// A meeting bot joins the live meeting.
    BotJoin,
    /// No bot; the provider's cloud recording is fetched after the meeting.
    CloudFetch,
}

impl PlanKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PlanKind::BotJoin => "bot_join",
            PlanKind::CloudFetch => "cloud_fetch",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// Zoom local recording: the host must let the bot record.
    HostMustGrantRecording,
    /// Teams/Webex without an authenticated bot: the lobby or a CAPTCHA may stop it.
    MayBeBlockedByLobby,
    /// The bot joins as a recognised user.
    AuthenticatedBot,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub kind: PlanKind,
    pub run_at: DateTime<Utc>,
    pub flags: Vec<Flag>,
}

/// Rules a manual invite does not need, named in every decision so that an operator
/// sees a private or excluded meeting was recorded on purpose.
pub const SKIPPED_RULES: [&str; 3] = ["calendar_access", "capture_settings", "exclusion_rules"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub eligible: bool,
    pub reasons: Vec<Reason>,
    pub plan: Option<Plan>,
    pub skipped: Vec<String>,
}

/// Where the event stands in time, as the scheduler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// No start time could be read.
    NoStart,
    /// Every occurrence has ended.
    Ended,
    /// The next occurrence that has not ended.
    Next { start: DateTime<Utc>, end: DateTime<Utc> },
}

/// Everything one decision depends on.
pub struct Facts<'a> {
    pub tenant: &'a Tenant,
    pub scheduling: &'a SchedulingConfig,
    pub requester: Option<&'a Requester>,
    pub event: &'a EventVersion,
    pub conference: Option<&'a Conference>,
    pub timing: Timing,
    pub now: DateTime<Utc>,
}

/// The requester of a mail: the sender when authenticated, then the organizer (precise rules 2–4).
///
/// `from_authenticated` is the tenant policy's verdict on the header From (always `true` for
/// `sender_auth = "none"`). Precise rule 3: when From fails authentication and the organizer
/// is a user, the organizer is the requester with `authenticated: false`, so the decision
/// reports `unauthenticated_sender`. When From *passed* but is not a user, the organizer
/// requester is `authenticated: true`: rule 3 only makes a requester unauthenticated when
/// From fails, and an authenticated sender forwarding a user's meeting is the normal case.
/// An unauthenticated From that is a user, with no organizer user, stays the requester but
/// is not believed.
pub fn resolve_requester(
    tenant: &Tenant,
    from: Option<&str>,
    from_authenticated: bool,
    organizer: Option<&Organizer>,
) -> Option<Requester> {
    let from_user = from.filter(|f| tenant.user(f).is_some()).map(str::to_ascii_lowercase);
    if let Some(from) = from_user.as_ref().filter(|_| from_authenticated) {
        return Some(Requester { email: from.clone(), authenticated: true });
    }
    if let Some(org) = organizer_user(tenant, organizer) {
        return Some(Requester { email: org, authenticated: from_authenticated });
    }
    from_user.map(|email| Requester { email, authenticated: false })
}

/// The organizer address that is a user of the tenant: the organizer itself, else its SENT-BY.
pub fn organizer_user(tenant: &Tenant, organizer: Option<&Organizer>) -> Option<String> {
    let org = organizer?;
    if tenant.user(&org.email).is_some() {
        return Some(org.email.clone());
    }
    org.sent_by.as_deref().filter(|s| tenant.user(s).is_some()).map(str::to_string)
}

/// Applies every rule and returns all failures, or the capture plan.
pub fn decide(f: &Facts) -> Decision {
    let Some(requester) = f.requester else {
        // Precise rule 2: with no requester only `unknown_requester` is reported.
        let reason =
            Reason::new(ReasonCode::UnknownRequester, "neither the sender nor the organizer is a user of this company");
        return finish(vec![reason], None);
    };
    let mut reasons = Vec::new();
    requester_rules(f.tenant, requester, &mut reasons);
    conference_rules(f, &mut reasons);
    consent_rules(f, requester, &mut reasons);
    if f.event.is_cancel() {
        reasons.push(Reason::new(ReasonCode::Cancelled, "the meeting was cancelled"));
    }
    match f.timing {
        Timing::NoStart if !f.event.is_cancel() => {
            reasons.push(Reason::new(ReasonCode::NoStartTime, "the invite has no start time"))
        }
        Timing::Ended => reasons.push(Reason::new(ReasonCode::MeetingEnded, "the meeting has already ended")),
        _ => {}
    }
    let plan = match (reasons.is_empty(), f.timing, f.conference.and_then(|c| c.provider)) {
        (true, Timing::Next { start, end }, Some(provider)) => {
            Some(capture_plan(f.tenant, f.scheduling, provider, start, end, f.now))
        }
        _ => None,
    };
    finish(reasons, plan)
}

fn finish(reasons: Vec<Reason>, plan: Option<Plan>) -> Decision {
    Decision {
        eligible: reasons.is_empty() && plan.is_some(),
        reasons,
        plan,
        skipped: SKIPPED_RULES.iter().map(|s| s.to_string()).collect(),
    }
}

fn requester_rules(tenant: &Tenant, r: &Requester, reasons: &mut Vec<Reason>) {
    if !r.authenticated {
        reasons.push(Reason::new(
            ReasonCode::UnauthenticatedSender,
            format!("the mail claiming to be from {} did not pass sender authentication", r.email),
        ));
    }
    let Some(user) = tenant.user(&r.email) else { return };
    if !user.seat {
        reasons.push(Reason::new(ReasonCode::NoSeat, format!("{} has no application seat", r.email)));
    }
    if !user.manual_schedule_upload {
        reasons.push(Reason::new(
            ReasonCode::MissingPermission,
            format!("{}'s permission profile does not allow manual schedule & upload", r.email),
        ));
    }
}

fn conference_rules(f: &Facts, reasons: &mut Vec<Reason>) {
    let Some(conference) = f.conference else {
        reasons.push(Reason::new(
            ReasonCode::NoConferenceLink,
            "the invite has no Zoom, Google Meet, Teams or Webex link",
        ));
        return;
    };
    let Some(provider) = conference.provider else {
        let name = conference.consent.as_ref().map_or("unknown", |c| c.provider.as_str());
        reasons.push(Reason::new(
            ReasonCode::NoConferenceLink,
            format!("the consent link names provider {name:?}, which is not a known web-conference provider"),
        ));
        return;
    };
    let (enabled, error) = provider_state(f.tenant, provider);
    if !enabled {
        reasons.push(Reason::new(
            ReasonCode::ProviderDisabled,
            format!("{} is not enabled for this company", provider.as_str()),
        ));
    } else if !error.is_empty() {
        reasons.push(Reason::new(
            ReasonCode::ProviderMisconfigured,
            format!("{} is misconfigured: {error}", provider.as_str()),
        ));
    }
}

fn provider_state(tenant: &Tenant, provider: Provider) -> (bool, &str) {
    let p = &tenant.providers;
    match provider {
        Provider::Zoom => (p.zoom.enabled, &p.zoom.error),
        Provider::GoogleMeet => (p.google_meet.enabled, &p.google_meet.error),
        Provider::Teams => (p.teams.enabled, &p.teams.error),
        Provider::Webex => (p.webex.enabled, &p.webex.error),
    }
}

/// Precise rule 6: one chain, first failure only, for the call owner's consent profile.
fn consent_rules(f: &Facts, requester: &Requester, reasons: &mut Vec<Reason>) {
    let owner = organizer_user(f.tenant, f.event.organizer.as_ref()).unwrap_or_else(|| requester.email.clone());
    let Some(user) = f.tenant.user(&owner) else { return };
    let Some(profile) = f.tenant.consent_profile_of(user).filter(|p| p.enforce_consent) else { return };
    let consent = f.conference.and_then(|c| c.consent.as_ref().map(|k| (c, k)));
    let Some((conference, link)) = consent else {
        reasons.push(Reason::new(
            ReasonCode::ConsentLinkRequired,
            format!("{owner}'s consent profile enforces consent, and the meeting does not use a consent link"),
        ));
        return;
    };
    if !link.company.eq_ignore_ascii_case(f.tenant.company()) {
        reasons.push(Reason::new(
            ReasonCode::ExternalConsentLink,
            format!("the consent link belongs to another company ({})", link.company),
        ));
        return;
    }
    if let Some(want) = profile.link_type.get(&link.provider) {
        if *want != link.link_type {
            reasons.push(Reason::new(
                ReasonCode::ConsentLinkTypeMismatch,
                format!(
                    "the consent link is {:?} but {owner}'s consent profile wants a {:?} link for {}",
                    link.link_type, want, link.provider
                )
                .to_lowercase(),
            ));
            return;
        }
    }
    if let Some(bypass) = conference.other_join_links.first() {
        reasons.push(Reason::new(
            ReasonCode::ConsentBypassLink,
            format!("the invite also holds {bypass}, which lets people skip the consent page"),
        ));
    }
}

/// When a capture of an occurrence runs: a bot joins `join_lead_seconds` before the start,
/// or at once when that is past (precise rule 8); a cloud recording is fetched
/// `cloud_fetch_delay_seconds` after the end.
pub fn run_at(
    kind: PlanKind,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    scheduling: &SchedulingConfig,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    match kind {
        PlanKind::BotJoin => (start - Duration::seconds(scheduling.join_lead_seconds)).max(now),
        PlanKind::CloudFetch => end + Duration::seconds(scheduling.cloud_fetch_delay_seconds),
    }
}

/// The capture plan by provider (design.md, "Capture plan by provider"; precise rule 7).
fn capture_plan(
    tenant: &Tenant,
    scheduling: &SchedulingConfig,
    provider: Provider,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Plan {
    let p = &tenant.providers;
    let bot_join = |flags: Vec<Flag>| Plan {
        kind: PlanKind::BotJoin,
        run_at: run_at(PlanKind::BotJoin, start, end, scheduling, now),
        flags,
    };
    match provider {
        Provider::Zoom if p.zoom.recording == ZoomRecording::Cloud => Plan {
            kind: PlanKind::CloudFetch,
            run_at: run_at(PlanKind::CloudFetch, start, end, scheduling, now),
            flags: vec![],
        },
        Provider::Zoom if p.zoom.auto_recording_permission => bot_join(vec![]),
        Provider::Zoom => bot_join(vec![Flag::HostMustGrantRecording]),
        Provider::GoogleMeet => bot_join(vec![]),
        Provider::Teams | Provider::Webex => {
            let authenticated = match provider {
                Provider::Teams => p.teams.authenticated_bot,
                _ => p.webex.authenticated_bot,
            };
            bot_join(vec![if authenticated { Flag::AuthenticatedBot } else { Flag::MayBeBlockedByLobby }])
        }
    }
}
