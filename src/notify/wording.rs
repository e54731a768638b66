//! Every sentence a reply says, in one place: outcomes, plans, flags and each reason code
//! in plain words with what to do about it (the README's reasons table, for team members).

use crate::conference::Provider;
use crate::eligibility::{Flag, PlanKind, ReasonCode};
use crate::store::ReplyOutcome;

/// The display name of a reply's From.
pub const ASSISTANT_NAME: &str = "Recording assistant";

/// The subject's prefix before the meeting's summary.
pub fn subject_prefix(outcome: ReplyOutcome) -> &'static str {
    match outcome {
        ReplyOutcome::Scheduled => "Will be recorded",
        ReplyOutcome::Rescheduled => "Recording moved",
        ReplyOutcome::Cancelled => "Recording cancelled",
        ReplyOutcome::Refused => "Will not be recorded",
    }
}

/// The reply's first sentence.
pub fn headline(outcome: ReplyOutcome) -> &'static str {
    match outcome {
        ReplyOutcome::Scheduled => "This meeting will be recorded, as you asked.",
        ReplyOutcome::Rescheduled => "This meeting has moved; its recording moved with it.",
        ReplyOutcome::Cancelled => "This meeting was cancelled, so it will not be recorded.",
        ReplyOutcome::Refused => "This meeting will not be recorded, for the reasons below.",
    }
}

/// What to do after a cancellation.
pub const CANCELLED_ADVICE: &str =
    "If the meeting takes place after all, forward the new invitation to this address again.";

/// The heading above the list of reasons.
pub const REASONS_HEADING: &str = "Why, and what you can do:";

/// The heading above the plan's notes.
pub const NOTES_HEADING: &str = "Please note:";

/// The last lines: who wrote, and that it was a machine.
pub fn footer(assistant: &str) -> String {
    format!(
        "This is an automatic reply from the recording assistant ({assistant}) to the invitation you sent it. \
         To change what happens, forward an updated invitation to {assistant}."
    )
}

/// A provider's name as people write it.
pub fn provider_name(provider: Option<Provider>) -> &'static str {
    match provider {
        Some(Provider::Zoom) => "Zoom",
        Some(Provider::GoogleMeet) => "Google Meet",
        Some(Provider::Teams) => "Microsoft Teams",
        Some(Provider::Webex) => "Webex",
        None => "an online meeting",
    }
}

/// What will happen, for a plan kind.
pub fn plan_sentence(kind: PlanKind, provider: &str) -> String {
    match kind {
        PlanKind::BotJoin => format!(
            "A recording bot joins the {provider} meeting shortly before it starts and records it. \
             It shows up as a participant."
        ),
        PlanKind::CloudFetch => format!(
            "No bot joins. The {provider} cloud recording is fetched after the meeting ends: \
             make sure the meeting is recorded to the cloud."
        ),
    }
}

/// A plan flag in plain words.
pub fn flag_sentence(flag: Flag) -> &'static str {
    match flag {
        Flag::HostMustGrantRecording => {
            "The host must allow recording in Zoom: when the bot asks for permission to record, the host has \
             to grant it, or nothing is recorded."
        }
        Flag::MayBeBlockedByLobby => {
            "The bot may wait in the lobby: someone in the meeting has to admit it, or it cannot record."
        }
        Flag::AuthenticatedBot => "The bot joins as a known user of your organisation, so the lobby lets it in.",
    }
}

/// A reason code in plain words, and what the requester can do about it.
pub fn reason_sentence(code: ReasonCode) -> (&'static str, &'static str) {
    match code {
        ReasonCode::NoInviteFound => (
            "No meeting invitation was found in your mail.",
            "Forward the invitation itself (with its calendar attachment), not a description of the meeting.",
        ),
        ReasonCode::UnknownRecipient => (
            "Your mail was not addressed to a recording assistant of your company.",
            "Send it to your company's assistant address.",
        ),
        ReasonCode::UnauthenticatedSender => (
            "Your mail could not be verified as coming from you.",
            "Forward the invitation from your own company mailbox, without a forwarding service in between.",
        ),
        ReasonCode::UnknownRequester => (
            "Neither you nor the organizer is a user of the recording service.",
            "Ask your administrator to add you as a user, then forward the invitation again.",
        ),
        ReasonCode::NoSeat => (
            "You have no seat (licence) for the recording service.",
            "Ask your administrator for a seat, then forward the invitation again.",
        ),
        ReasonCode::MissingPermission => (
            "You are not allowed to schedule recordings by invitation.",
            "Ask your administrator for the \"manual schedule & upload\" permission.",
        ),
        ReasonCode::NoConferenceLink => (
            "The invitation has no Zoom, Google Meet, Microsoft Teams or Webex link.",
            "Add the meeting link to the invitation (in its location or text), then forward it again.",
        ),
        ReasonCode::ProviderDisabled => (
            "Recording is turned off for this meeting service in your company.",
            "Ask your administrator to turn it on, or hold the meeting on a service that is on.",
        ),
        ReasonCode::ProviderMisconfigured => (
            "The connection to this meeting service is not working at the moment.",
            "Tell your administrator; the meeting can be recorded once the connection is repaired and you \
             forward the invitation again.",
        ),
        ReasonCode::ConsentLinkRequired => (
            "Your company requires a recording-consent link for this meeting, and the invitation has none.",
            "Replace the meeting link with your consent link, send the updated invitation, and forward it again.",
        ),
        ReasonCode::ConsentLinkTypeMismatch => (
            "The consent link is of the wrong kind (personal instead of per-meeting, or the other way round).",
            "Use the kind of consent link your company's settings ask for, then forward the invitation again.",
        ),
        ReasonCode::ConsentBypassLink => (
            "Besides the consent link, the invitation has a plain meeting link that skips the consent page.",
            "Remove the plain meeting link so that everyone joins through the consent page, then forward the \
             invitation again.",
        ),
        ReasonCode::ExternalConsentLink => (
            "The consent link belongs to another company.",
            "Use your own company's consent link, or ask the other company to record the meeting.",
        ),
        ReasonCode::ConsentDeclined => (
            "A participant chose to join without being recorded.",
            "Nothing to do: their choice is respected for this meeting.",
        ),
        ReasonCode::Cancelled => ("The meeting was cancelled.", CANCELLED_ADVICE),
        ReasonCode::MeetingEnded => (
            "The meeting has already ended.",
            "A meeting can only be recorded if the invitation arrives before it ends.",
        ),
        ReasonCode::NoStartTime => {
            ("The invitation has no start time.", "Send an invitation with a date and time, then forward it again.")
        }
    }
}
