//! Reply mail (design.md step 8): after a decision that changes what will happen for the
//! requester (first scheduled, rescheduled, cancelled, refused), a reply tells them, from the
//! assistant address, threaded to the mail they sent.
//!
//! - [`guard`]: which mails never get a reply (loops, backscatter).
//! - [`draft_reply`]: the outcome and its rendered reply ([`render`], [`wording`]), queued
//!   by the store in the transaction that records the decision.
//! - [`sender`]: the worker that hands queued replies to the relay, with retries.

mod config;
pub mod guard;
pub mod render;
pub mod sender;
pub mod wording;

pub use config::{is_loopback_host, NotifyConfig, RelayTls};

use crate::conference::Conference;
use crate::config::Tenant;
use crate::eligibility::{Decision, ReasonCode};
use crate::model::EventVersion;
use crate::schedule::JobChange;
use crate::store::{ReplyDraft, ReplyOutcome};

/// What a reply is about, besides the decision.
pub struct ReplyContext<'a> {
    pub tenant: &'a Tenant,
    /// `notify.max_replies_per_hour`.
    pub max_per_hour: u32,
    /// The requester.
    pub recipient: &'a str,
    /// The assistant address the mail was sent to: the reply's From.
    pub assistant: &'a str,
    /// `<Message-ID>` of the mail answered.
    pub in_reply_to: Option<String>,
    /// The mail's References, oldest first.
    pub references: &'a [String],
}

/// What happens now for the requester, from their decision and the job changes it made.
pub fn outcome_of(decision: &Decision, changes: &[JobChange]) -> ReplyOutcome {
    if !decision.eligible {
        return if decision.reasons.iter().any(|r| r.code == ReasonCode::Cancelled) {
            ReplyOutcome::Cancelled
        } else {
            ReplyOutcome::Refused
        };
    }
    let moved = changes.iter().any(|c| matches!(c, JobChange::Reschedule { .. }))
        || (changes.iter().any(|c| matches!(c, JobChange::Cancel { .. }))
            && changes.iter().any(|c| matches!(c, JobChange::Create(_))));
    if moved {
        ReplyOutcome::Rescheduled
    } else {
        ReplyOutcome::Scheduled
    }
}

/// What will happen, comparable between replies: the same for a meeting forwarded again
/// unchanged, different when its time, link, plan or reasons change.
fn fingerprint(
    outcome: ReplyOutcome,
    event: &EventVersion,
    decision: &Decision,
    conference: Option<&Conference>,
) -> String {
    match (outcome, &decision.plan) {
        (ReplyOutcome::Scheduled | ReplyOutcome::Rescheduled, Some(plan)) => {
            let flags = serde_json::to_string(&plan.flags).unwrap_or_default();
            let time = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_default();
            format!(
                "recorded|{}|{flags}|{}|{}|{}|{}",
                plan.kind.as_str(),
                time(event.start),
                time(event.end),
                event.rrule.as_deref().unwrap_or(""),
                conference.map_or("", |c| c.url.as_str())
            )
        }
        (ReplyOutcome::Cancelled, _) => "cancelled".into(),
        _ => {
            let mut codes: Vec<&str> = decision.reasons.iter().map(|r| r.code.as_str()).collect();
            codes.sort_unstable();
            format!("refused|{}", codes.join(","))
        }
    }
}

/// The reply about `decision` on `event` (the current version), rendered and ready to queue.
pub fn draft_reply(
    ctx: &ReplyContext,
    event: &EventVersion,
    decision: &Decision,
    conference: Option<&Conference>,
    changes: &[JobChange],
) -> ReplyDraft {
    let outcome = outcome_of(decision, changes);
    let body = render::body(outcome, event, decision, conference, ctx.tenant.timezone(), ctx.assistant);
    let mut references: Vec<String> = ctx.references.to_vec();
    references.extend(ctx.in_reply_to.clone());
    ReplyDraft {
        recipient: ctx.recipient.to_string(),
        sender: ctx.assistant.to_string(),
        outcome,
        fingerprint: fingerprint(outcome, event, decision, conference),
        subject: format!("{}: {}", wording::subject_prefix(outcome), render::summary_line(event.summary.as_deref())),
        in_reply_to: ctx.in_reply_to.clone(),
        references: (!references.is_empty()).then(|| references.join(" ")),
        body_text: body.to_text(),
        body_html: body.to_html(),
        max_per_hour: ctx.max_per_hour,
    }
}

/// What the pipeline knows of a mail that decides whether and how to answer it.
pub struct MailToAnswer<'a> {
    /// MAIL FROM, when the mail came by SMTP.
    pub envelope_from: Option<&'a str>,
    pub extracted: &'a crate::model::Extracted,
    /// The envelope recipients, else the header ones.
    pub recipients: &'a [String],
}

/// The assistant address of `tenant` the mail was sent to (plus-tag and all), else the
/// tenant's first one.
fn assistant_address<'a>(config: &crate::config::Config, tenant: &'a Tenant, recipients: &'a [String]) -> &'a str {
    recipients
        .iter()
        .find(|a| config.tenant_for_address(a).is_some_and(|t| t.id == tenant.id))
        .or(tenant.assistant_addresses.first())
        .map_or("", String::as_str)
}

/// Whether the requester of `event` gets a reply, and the context to write it in; the
/// reason why not otherwise. Whether the outcome changed for them is decided by the store.
pub fn reply_gate<'a>(
    config: &'a crate::config::Config,
    tenant: &'a Tenant,
    mail: &'a MailToAnswer<'a>,
    requester: Option<&'a crate::eligibility::Requester>,
    event: &EventVersion,
) -> Result<ReplyContext<'a>, guard::SkipReason> {
    if !config.notify.enabled {
        return Err(guard::SkipReason::NotifyDisabled);
    }
    if !tenant.replies {
        return Err(guard::SkipReason::TenantRepliesOff);
    }
    if !crate::state::changes_state(event) {
        return Err(guard::SkipReason::NotARequest);
    }
    let origin = guard::Origin {
        headers: &mail.extracted.reply_headers,
        envelope_from: mail.envelope_from,
        from: mail.extracted.from.as_deref(),
    };
    guard::check_mail(config, &origin, requester)?;
    let Some(requester) = requester else { return Err(guard::SkipReason::NoRequester) };
    Ok(ReplyContext {
        tenant,
        max_per_hour: config.notify.max_replies_per_hour,
        recipient: &requester.email,
        assistant: assistant_address(config, tenant, mail.recipients),
        in_reply_to: mail.extracted.message_id.as_deref().and_then(guard::bracketed),
        references: &mail.extracted.reply_headers.references,
    })
}
