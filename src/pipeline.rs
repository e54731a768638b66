//! One message through the steps of design.md: extract → normalise → (store) → current
//! state → eligibility → jobs. `explain` runs them without writing; `process_message`
//! runs them against the store.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::{LazyLock, Mutex};

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::{debug, error, info, warn};

use crate::auth::AuthVerdict;
use crate::conference::{self, Conference, ConsentLink};
use crate::config::{Config, SenderAuth, Tenant};
use crate::dmarc::{self, Checked, SmtpClient};
use crate::eligibility::{self, Decision, Facts, Reason, ReasonCode, Requester, Timing};
use crate::intake::smtp::received;
use crate::model::{EventVersion, Extracted};
use crate::schedule::{self, JobChange, Occurrence};
use crate::store::Enqueued;
use crate::store::{
    CreatedJob, EventHistory, EventKey, EventOutcome, Finished, NewMessage, Source, Store, StoreError, StoredMessage,
};
use crate::{auth, ics, mime, notify, state};

/// The stable `explain --json` object (design.md, "Machine interface").
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub recipient_tenant: Option<String>,
    pub requester: Option<Requester>,
    pub reasons: Vec<Reason>,
    pub events: Vec<ExplainedEvent>,
    /// What could not be read in the mail or its calendars.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExplainedEvent {
    pub uid: String,
    pub recurrence_id: Option<DateTime<Utc>>,
    pub method: Option<String>,
    pub sequence: i64,
    pub dtstamp: Option<DateTime<Utc>>,
    pub status: Option<String>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub timezone: Option<String>,
    pub all_day: bool,
    pub summary: Option<String>,
    pub organizer: Option<String>,
    pub attendees: Vec<String>,
    pub rrule: Option<String>,
    pub conference: Option<ConferenceView>,
    pub decision: Decision,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConferenceView {
    pub provider: Option<String>,
    pub url: String,
    pub consent: Option<ConsentLink>,
}

impl From<&Conference> for ConferenceView {
    fn from(c: &Conference) -> Self {
        ConferenceView {
            provider: c.provider.map(|p| p.as_str().to_string()),
            url: c.url.clone(),
            consent: c.consent.clone(),
        }
    }
}

/// What the MIME and ICS steps read from one message for one tenant.
pub struct Reading<'c> {
    pub extracted: Extracted,
    /// Tenants the message is addressed to, in config order.
    pub tenants: Vec<&'c Tenant>,
}

/// Reads sender, recipients and calendars. Recipients: the envelope when given, else the headers.
pub fn read_message<'c>(config: &'c Config, raw: &[u8], envelope_rcpts: &[String]) -> Reading<'c> {
    let extracted = mime::extract(raw, &config.limits.mime());
    let addresses = if envelope_rcpts.is_empty() { &extracted.header_recipients } else { envelope_rcpts };
    let mut tenants: Vec<&Tenant> = Vec::new();
    for a in addresses {
        if let Some(t) = config.tenant_for_address(a) {
            if !tenants.iter().any(|k| k.id == t.id) {
                tenants.push(t);
            }
        }
    }
    tenants.sort_by_key(|t| config.tenants.iter().position(|k| k.id == t.id));
    Reading { extracted, tenants }
}

/// Every event of the message, read in `tz`, one per (UID, RECURRENCE-ID, SEQUENCE, cancelled):
/// the same invite as a part and as an attachment counts once (the copy that names a METHOD wins).
pub fn read_events(
    config: &Config,
    extracted: &Extracted,
    tz: chrono_tz::Tz,
) -> (Vec<EventVersion>, usize, Vec<String>) {
    let mut events: Vec<EventVersion> = Vec::new();
    let mut without_uid = 0;
    let mut problems = extracted.problems.clone();
    for part in &extracted.calendars {
        let parsed = ics::parse_calendar(part, tz, &config.limits.ics());
        without_uid += parsed.events_without_uid;
        problems.extend(parsed.problems);
        for e in parsed.events {
            let same =
                |k: &EventVersion| k.uid == e.uid && k.recurrence_id == e.recurrence_id && k.sequence == e.sequence;
            match events.iter_mut().find(|k| same(k)) {
                Some(k) if k.method.is_none() && e.method.is_some() => *k = e,
                Some(_) => {}
                None => events.push(e),
            }
        }
    }
    (events, without_uid, problems)
}

/// Whole-message reasons (precise rule 1).
fn message_reasons(reading: &Reading, events: &[EventVersion], without_uid: usize, problems: &[String]) -> Vec<Reason> {
    let mut reasons = Vec::new();
    if reading.tenants.is_empty() {
        reasons.push(Reason::new(
            ReasonCode::UnknownRecipient,
            "the mail is not addressed to any company's assistant address",
        ));
    }
    if events.is_empty() {
        let mut message = if without_uid > 0 {
            format!("the mail's calendar has {without_uid} event(s) but none with a UID")
        } else if reading.extracted.calendars.is_empty() {
            "the mail holds no calendar invite".to_string()
        } else {
            "the mail's calendar holds no event".to_string()
        };
        if let Some(hint) = problems.iter().find(|p| p.contains("TNEF")) {
            message = format!("{message}: {hint}");
        }
        reasons.push(Reason::new(ReasonCode::NoInviteFound, message));
    }
    reasons
}

/// How the tenant's policy judges the mail's From (precise rule 3). Pure apart from a debug
/// line, so that `explain` and `ingest` judge the same mail the same way.
fn from_authenticated(tenant: &Tenant, extracted: &Extracted) -> bool {
    match tenant.sender_auth {
        SenderAuth::None => true,
        SenderAuth::AuthenticationResults => {
            // No From: nothing to authenticate, so nothing is believed.
            let Some(from) = extracted.from.as_deref() else { return false };
            let verdict =
                auth::sender_authenticated(&extracted.authentication_results, &tenant.trusted_authserv_ids, from);
            debug!(tenant = %tenant.id, from, authenticated = verdict.authenticated, reason = %verdict.reason, "sender_auth");
            verdict.authenticated
        }
        // Checked while processing (`check_sender`); not checked yet means not believed.
        SenderAuth::Dmarc => {
            let verdict = extracted.dmarc.as_ref();
            debug!(tenant = %tenant.id, authenticated = verdict.is_some_and(|v| v.authenticated), reason = verdict.map_or("not checked", |v| v.reason.as_str()), "sender_auth");
            verdict.is_some_and(|v| v.authenticated)
        }
    }
}

/// Everything a decision about one event needs besides the event.
pub struct EventContext<'a> {
    pub config: &'a Config,
    pub tenant: &'a Tenant,
    pub now: DateTime<Utc>,
}

/// The decision on one event's current state, as `explain` shows it.
pub struct EventDecision {
    /// The decision for the requester of the message at hand.
    pub decision: Decision,
    pub conference: Option<Conference>,
    /// What could not be worked out (a recurrence rule that does not expand).
    pub problems: Vec<String>,
}

fn decide_with(
    ctx: &EventContext,
    version: &EventVersion,
    conference: Option<&Conference>,
    timing: Timing,
    requester: Option<&Requester>,
) -> Decision {
    eligibility::decide(&Facts {
        tenant: ctx.tenant,
        scheduling: &ctx.config.scheduling,
        requester,
        event: version,
        conference,
        timing,
        now: ctx.now,
    })
}

/// The decision for `requester` on `current`, the current state of one (UID, RECURRENCE-ID).
pub fn decide_event(ctx: &EventContext, current: &EventVersion, requester: Option<&Requester>) -> EventDecision {
    let conference = conference::detect(&current.links, ctx.tenant.consent_base_url.as_deref());
    let occurrences =
        schedule::upcoming_occurrences(current, ctx.tenant.timezone(), ctx.now, ctx.config.limits.max_occurrences);
    let decision = decide_with(ctx, current, conference.as_ref(), occurrences.timing(), requester);
    EventDecision { decision, conference, problems: occurrences.problems }
}

/// The jobs a whole UID calls for now, as changes to its active jobs. Every occurrence of the
/// series (overrides applied) gets a job when it is eligible for anyone who ever asked, so
/// that an ineligible second forwarder cannot cancel a job someone else was entitled to.
/// Occurrences a participant declined consent for get none.
pub fn plan_jobs(ctx: &EventContext, history: &EventHistory, requester: Option<&Requester>) -> Vec<JobChange> {
    let mut keys: Vec<Option<DateTime<Utc>>> = Vec::new();
    for v in &history.versions {
        if !keys.contains(&v.version.recurrence_id) {
            keys.push(v.version.recurrence_id);
        }
    }
    let current_of = |rid: Option<DateTime<Utc>>| {
        state::current(history.versions.iter().filter(|v| v.version.recurrence_id == rid).map(|v| (&v.version, v.id)))
    };
    let master = current_of(None);
    let overrides: Vec<&EventVersion> = keys.iter().filter(|k| k.is_some()).filter_map(|k| current_of(*k)).collect();
    let (occurrences, _) = schedule::series_occurrences(
        master,
        &overrides,
        ctx.tenant.timezone(),
        ctx.now,
        ctx.config.limits.max_occurrences,
    );
    let mut asked: Vec<&Requester> = requester.into_iter().collect();
    for p in &history.past_requesters {
        if !asked.iter().any(|a| a.email == p.email) {
            asked.push(p);
        }
    }
    let mut desired = Vec::new();
    let mut governing: Vec<&EventVersion> = Vec::new();
    for g in &occurrences {
        if !governing.iter().any(|v| std::ptr::eq(*v, g.version)) {
            governing.push(g.version);
        }
    }
    for version in governing {
        let occs: Vec<Occurrence> = occurrences
            .iter()
            .filter(|g| std::ptr::eq(g.version, version) && !history.declined_slots.contains(&g.occurrence.slot))
            .map(|g| g.occurrence)
            .collect();
        let (Some(first), Some(conference)) =
            (occs.first(), conference::detect(&version.links, ctx.tenant.consent_base_url.as_deref()))
        else {
            continue;
        };
        let timing = Timing::Next { start: first.start, end: first.end };
        let eligible: Vec<(&Requester, Decision)> = asked
            .iter()
            .map(|r| (*r, decide_with(ctx, version, Some(&conference), timing, Some(r))))
            .filter(|(_, d)| d.eligible)
            .collect();
        if let Some((_, decision)) = eligible.first() {
            let emails: Vec<String> = eligible.iter().map(|(r, _)| r.email.clone()).collect();
            let provider = conference.provider.map_or("", |p| p.as_str());
            desired.extend(schedule::desired_jobs(
                decision,
                &occs,
                (provider, &conference.url),
                &emails,
                &ctx.config.scheduling,
                ctx.now,
            ));
        }
    }
    let desired = schedule::without_finished(desired, &history.finished_jobs);
    schedule::diff_jobs(&history.active_jobs, &desired, ctx.now)
}

/// The requester of a mail for one tenant, from its From and an event's organizer.
pub fn requester_for(tenant: &Tenant, extracted: &Extracted, event: Option<&EventVersion>) -> Option<Requester> {
    eligibility::resolve_requester(
        tenant,
        extracted.from.as_deref(),
        from_authenticated(tenant, extracted),
        event.and_then(|e| e.organizer.as_ref()),
    )
}

/// Steps 2–6 without writing anything: what would happen to this mail now. Without DNS, so
/// for `sender_auth = "dmarc"` the From is not believed; see [`explain_checked`].
pub fn explain(config: &Config, raw: &[u8], envelope_rcpts: &[String], now: DateTime<Utc>) -> Explanation {
    explain_read(config, read_message(config, raw, envelope_rcpts), now)
}

/// [`explain`] with the DKIM/DMARC check of `sender_auth = "dmarc"` (DNS lookups; no SPF,
/// as no SMTP client is known). A DNS failure shows as not authenticated, with the reason
/// in the log.
pub async fn explain_checked(
    config: &Config,
    raw: &[u8],
    envelope_rcpts: &[String],
    now: DateTime<Utc>,
) -> Explanation {
    let mut reading = read_message(config, raw, envelope_rcpts);
    if needs_dmarc(&reading) {
        let verdict = match dmarc::shared(&config.server.hostname) {
            Ok(verifier) => match verifier.check(raw, None).await {
                Checked::Verdict(v) => v,
                Checked::TempError(e) => AuthVerdict { authenticated: false, reason: e },
            },
            Err(e) => AuthVerdict { authenticated: false, reason: e.to_string() },
        };
        info!(authenticated = verdict.authenticated, reason = %verdict.reason, "sender_checked");
        reading.extracted.dmarc = Some(verdict);
    }
    explain_read(config, reading, now)
}

fn needs_dmarc(reading: &Reading) -> bool {
    reading.tenants.iter().any(|t| matches!(t.sender_auth, SenderAuth::Dmarc))
}

fn explain_read(config: &Config, reading: Reading, now: DateTime<Utc>) -> Explanation {
    let tenant = reading.tenants.first().copied();
    let tz = tenant.map_or(chrono_tz::UTC, |t| t.timezone());
    let (events, without_uid, problems) = read_events(config, &reading.extracted, tz);
    let reasons = message_reasons(&reading, &events, without_uid, &problems);
    let requester = tenant.and_then(|t| requester_for(t, &reading.extracted, events.first()));
    let events = events
        .iter()
        .map(|e| {
            let plan = match tenant {
                Some(t) => {
                    let ctx = EventContext { config, tenant: t, now };
                    let r = requester_for(t, &reading.extracted, Some(e));
                    decide_event(&ctx, e, r.as_ref())
                }
                // Precise rule 1: the recipient is a whole-message reason, given at the top.
                None => EventDecision {
                    decision: Decision { eligible: false, reasons: vec![], plan: None, skipped: vec![] },
                    conference: conference::detect(&e.links, None),
                    problems: vec![],
                },
            };
            explained(e, plan)
        })
        .collect();
    Explanation { recipient_tenant: tenant.map(|t| t.id.clone()), requester, reasons, events, problems }
}

fn explained(e: &EventVersion, plan: EventDecision) -> ExplainedEvent {
    ExplainedEvent {
        uid: e.uid.clone(),
        recurrence_id: e.recurrence_id,
        method: e.method.clone(),
        sequence: e.sequence,
        dtstamp: e.dtstamp,
        status: e.status.clone(),
        start: e.start,
        end: e.end,
        timezone: e.timezone.clone(),
        all_day: e.all_day,
        summary: e.summary.clone(),
        organizer: e.organizer.as_ref().map(|o| o.email.clone()),
        attendees: e.attendees.clone(),
        rrule: e.rrule.clone(),
        conference: plan.conference.as_ref().map(ConferenceView::from),
        decision: plan.decision,
        problems: e.problems.iter().cloned().chain(plan.problems).collect(),
    }
}

/// Identity of a version: its content without DTSTAMP (Outlook stamps every forward anew)
/// and without the reader's problem notes.
pub fn version_hash(v: &EventVersion) -> String {
    let mut canonical = v.clone();
    canonical.dtstamp = None;
    canonical.problems.clear();
    let bytes = serde_json::to_vec(&canonical).unwrap_or_default();
    hex::encode(Sha256::digest(bytes))
}

/// Why a message could not be taken in or processed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("message is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("not a mail message: {0}")]
    NotMail(String),
    /// The sender check of `sender_auth = "dmarc"` met a DNS failure; the message stays
    /// stored and unprocessed, and is tried again.
    #[error("sender authentication deferred: {0}")]
    SenderAuthDeferred(String),
    /// A bug met this mail. The message stays stored, marked failed, for `reprocess`.
    #[error("processing panicked: {0}")]
    Panicked(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IngestError {
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::TooLarge { .. } => "message_too_large",
            IngestError::NotMail(_) => "not_mail",
            IngestError::SenderAuthDeferred(_) => "sender_auth_temperror",
            IngestError::Panicked(_) => "panicked",
            IngestError::Store(e) => e.code(),
        }
    }

    pub fn is_transient(&self) -> bool {
        match self {
            IngestError::Store(e) => e.is_transient(),
            IngestError::SenderAuthDeferred(_) => true,
            _ => false,
        }
    }

    /// Whether the store itself is struggling, so that going on with other messages now is
    /// pointless.
    pub fn is_store_unavailable(&self) -> bool {
        matches!(self, IngestError::Store(e) if e.is_transient())
    }
}

/// What happened to one message.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcessReport {
    pub message_id: i64,
    /// The message had already been processed (the same bytes received again, or a second
    /// run over a message another run finished): nothing was done.
    pub duplicate_message: bool,
    /// Another run in this process is processing the message right now: nothing was done.
    pub already_processing: bool,
    pub tenants: Vec<String>,
    pub reasons: Vec<Reason>,
    pub versions_stored: usize,
    pub eligible_decisions: usize,
    pub jobs_created: usize,
    /// Planned jobs that joined another UID's job for the same meeting link and start.
    pub jobs_joined: usize,
    pub jobs_rescheduled: usize,
    pub jobs_cancelled: usize,
}

/// Spools a message durably, then processes it. Bytes that look nothing like a mail are refused
/// before anything is stored.
pub async fn ingest(
    store: &dyn Store,
    config: &Config,
    raw: Vec<u8>,
    source: Source,
    envelope_from: Option<String>,
    envelope_rcpts: Vec<String>,
    now: DateTime<Utc>,
) -> Result<ProcessReport, IngestError> {
    if raw.len() > config.limits.max_message_bytes {
        crate::metrics::message_received(source.as_str(), "refused");
        return Err(IngestError::TooLarge { size: raw.len(), limit: config.limits.max_message_bytes });
    }
    check_looks_like_mail(&raw).inspect_err(|_| crate::metrics::message_received(source.as_str(), "refused"))?;
    // Only the header block is read here; the full MIME walk runs once, in processing.
    let new = NewMessage {
        sha256: hex::encode(Sha256::digest(&raw)),
        message_id: mime::message_id(&raw),
        raw,
        source,
        envelope_from,
        envelope_rcpts,
        received_at: now,
    };
    let started = std::time::Instant::now();
    let spooled = store.spool_message(&new).await;
    crate::metrics::store_latency("spool", started.elapsed());
    let spooled = spooled.inspect_err(|_| crate::metrics::message_received(source.as_str(), "deferred"))?;
    crate::metrics::message_received(source.as_str(), if spooled.inserted { "accepted" } else { "duplicate" });
    info!(
        message_id = spooled.id,
        header_message_id = new.message_id.as_deref().unwrap_or(""),
        size = new.raw.len(),
        source = source.as_str(),
        duplicate = !spooled.inserted,
        "message_received"
    );
    if !spooled.inserted {
        let stored = store.load_message(spooled.id).await?;
        if stored.is_some_and(|m| m.status == "processed") {
            info!(message_id = spooled.id, "message_duplicate");
            return Ok(ProcessReport { message_id: spooled.id, duplicate_message: true, ..ProcessReport::default() });
        }
    }
    process_message(store, config, spooled.id, now).await
}

/// A mail has a header block (after an mbox `From ` line, if any) or is itself a
/// calendar; anything else is refused with one line before it is stored.
fn check_looks_like_mail(raw: &[u8]) -> Result<(), IngestError> {
    if raw.is_empty() {
        return Err(IngestError::NotMail("the file is empty".into()));
    }
    let head = &raw[..raw.len().min(4096)];
    let text = String::from_utf8_lossy(head);
    let trimmed = text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    let calendar = trimmed.get(..15).is_some_and(|s| s.eq_ignore_ascii_case("BEGIN:VCALENDAR"))
        || head.windows(4).any(|w| w == b"B\0E\0" || w == b"\0B\0E");
    let mut lines = trimmed.lines().skip_while(|l| l.starts_with("From "));
    // RFC 5322 §2.2: a field name is printable ASCII without colon or space.
    let header = lines
        .next()
        .and_then(|l| l.split_once(':'))
        .is_some_and(|(name, _)| !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':'));
    if calendar || header {
        Ok(())
    } else {
        Err(IngestError::NotMail("it starts with neither a mail header nor BEGIN:VCALENDAR".into()))
    }
}

/// Runs steps 2–7 for a spooled message and records the outcome on it. Safe to run again
/// (`reprocess`, start-up resume): versions are deduplicated and jobs follow the state.
pub async fn process_message(
    store: &dyn Store,
    config: &Config,
    message_id: i64,
    now: DateTime<Utc>,
) -> Result<ProcessReport, IngestError> {
    let mut results = process_messages(store, config, &[message_id], now).await;
    results.pop().map_or_else(|| Err(IngestError::NotMail(format!("message {message_id} was not processed"))), |r| r.1)
}

/// [`process_message`] for several messages, with one store read for all of them and one
/// write recording how each ended (a busy intake hands its workers what has queued up).
/// One result per id, in order.
pub async fn process_messages(
    store: &dyn Store,
    config: &Config,
    ids: &[i64],
    now: DateTime<Utc>,
) -> Vec<(i64, Result<ProcessReport, IngestError>)> {
    let mut results: Vec<(i64, Result<ProcessReport, IngestError>)> = Vec::with_capacity(ids.len());
    let mut claims = Vec::with_capacity(ids.len());
    for &message_id in ids {
        match InFlight::claim(store, message_id) {
            Some(claim) => claims.push(claim),
            None => {
                debug!(message_id, "message_already_processing");
                let report = ProcessReport { message_id, already_processing: true, ..ProcessReport::default() };
                results.push((message_id, Ok(report)));
            }
        }
    }
    let claimed: Vec<i64> = claims.iter().map(InFlight::message_id).collect();
    if claimed.is_empty() {
        return results;
    }
    let started = std::time::Instant::now();
    let loaded = store.load_messages(&claimed).await;
    // Claimed messages that could not be loaded (their results hold the error).
    let mut unreadable = Vec::new();
    crate::metrics::store_latency("load_message", started.elapsed());
    let mut loaded = match loaded {
        Ok(loaded) => loaded,
        Err(e) if claimed.len() == 1 => {
            results.push((claimed[0], Err(e.into())));
            return results;
        }
        // Each on its own, so that each result carries its own error.
        Err(_) => {
            let mut loaded = Vec::with_capacity(claimed.len());
            for &id in &claimed {
                match store.load_message(id).await {
                    Ok(message) => loaded.extend(message),
                    Err(e) => {
                        unreadable.push(id);
                        results.push((id, Err(e.into())));
                    }
                }
            }
            loaded
        }
    };
    let mut finished = Vec::with_capacity(claimed.len());
    let mut received = Vec::with_capacity(claimed.len());
    for &message_id in &claimed {
        if unreadable.contains(&message_id) {
            continue;
        }
        let Some(at) = loaded.iter().position(|m| m.id == message_id) else {
            results.push((message_id, Err(IngestError::NotMail(format!("message {message_id} is not in the store")))));
            continue;
        };
        let message = loaded.swap_remove(at);
        if message.status == "processed" {
            debug!(message_id, "message_already_processed");
            let report = ProcessReport { message_id, duplicate_message: true, ..ProcessReport::default() };
            results.push((message_id, Ok(report)));
            continue;
        }
        // A panic on one hostile mail must not take the daemon (or a batch ingest) down with it.
        let result = AssertUnwindSafe(process_loaded(store, config, &message, now))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(IngestError::Panicked(panic_message(panic.as_ref()))));
        match &result {
            Ok(report) => {
                let outcome = serde_json::to_value(report).unwrap_or_default();
                finished.push(Finished { id: message_id, outcome, error: None });
                received.push(message.received_at);
            }
            Err(e) if !e.is_transient() => {
                error!(message_id, error_code = e.code(), error = %e, "message_failed");
                finished.push(Finished {
                    id: message_id,
                    outcome: serde_json::Value::Null,
                    error: Some(e.to_string()),
                });
                received.push(message.received_at);
            }
            Err(e) => warn!(message_id, error_code = e.code(), error = %e, "message_deferred"),
        }
        results.push((message_id, result));
    }
    record_finished(store, &finished, &received, now, &mut results).await;
    results.sort_by_key(|(id, _)| ids.iter().position(|i| i == id));
    results
}

/// Records how the processed messages ended, in one write. When that fails, each is
/// recorded on its own, so that each result says whether its own record was kept: a
/// processed message whose record failed stays `received` and is processed again.
async fn record_finished(
    store: &dyn Store,
    finished: &[Finished],
    received: &[DateTime<Utc>],
    now: DateTime<Utc>,
    results: &mut [(i64, Result<ProcessReport, IngestError>)],
) {
    if finished.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    let all = store.finish_messages(finished, now).await;
    crate::metrics::store_latency("finish_message", started.elapsed());
    if all.is_ok() {
        for (f, received_at) in finished.iter().zip(received) {
            if f.error.is_none() {
                // From the acknowledgement (the spool commit) to decisions and jobs stored, by
                // the real clock: `now` may be fixed (`--now`) for reproducible decisions.
                let since_ack = Utc::now().signed_duration_since(*received_at);
                crate::metrics::pipeline_latency(since_ack.to_std().unwrap_or_default());
            }
        }
        return;
    }
    for f in finished {
        let kept = store.finish_message(f.id, &f.outcome, f.error.as_deref(), now).await;
        if let (Err(e), Some((_, result))) = (kept, results.iter_mut().find(|(id, _)| *id == f.id)) {
            // A failed message keeps its own error; a processed one reports the store's.
            if result.is_ok() {
                *result = Err(e.into());
            }
        }
    }
}

/// Messages this process is processing now. The SMTP workers and the scheduler's resume
/// tick can reach the same message at once; the second leaves it to the first instead of
/// deciding it twice.
/// Keyed by the store's address too, as ids are per store and a process (a test) may hold
/// several stores.
static IN_FLIGHT: LazyLock<Mutex<HashSet<(usize, i64)>>> = LazyLock::new(Mutex::default);

/// A message claimed for processing in this process; given back on drop (a panic too).
struct InFlight((usize, i64));

impl InFlight {
    fn message_id(&self) -> i64 {
        self.0 .1
    }

    fn claim(store: &dyn Store, message_id: i64) -> Option<InFlight> {
        let key = (std::ptr::from_ref(store).cast::<()>() as usize, message_id);
        let mut set = IN_FLIGHT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        set.insert(key).then(|| InFlight(key))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&self.0);
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// A message whose sender check keeps failing on DNS is deferred for this long after its
/// arrival; after that it is decided with its From not authenticated.
pub const SENDER_AUTH_RETRY_HOURS: i64 = 24;

/// The `sender_auth = "dmarc"` verdict on a stored message: DKIM, and SPF for the client our
/// SMTP intake recorded in its `Received:` header.
async fn check_sender(
    config: &Config,
    message: &StoredMessage,
    now: DateTime<Utc>,
) -> Result<AuthVerdict, IngestError> {
    let client = match message.source {
        Source::Smtp => received::client_of(&message.raw).map(|(helo, ip)| SmtpClient {
            ip,
            helo,
            mail_from: message.envelope_from.clone().unwrap_or_default(),
        }),
        Source::File | Source::Imap => None,
    };
    let checked = match dmarc::shared(&config.server.hostname) {
        Ok(verifier) => verifier.check(&message.raw, client.as_ref()).await,
        Err(e) => Checked::TempError(e.to_string()),
    };
    let message_id = message.id;
    match checked {
        Checked::Verdict(v) => {
            info!(message_id, authenticated = v.authenticated, spf_checked = client.is_some(), reason = %v.reason, "sender_checked");
            Ok(v)
        }
        Checked::TempError(e) if now - message.received_at < chrono::Duration::hours(SENDER_AUTH_RETRY_HOURS) => {
            Err(IngestError::SenderAuthDeferred(e))
        }
        Checked::TempError(e) => {
            let reason = format!("{e}; still failing {SENDER_AUTH_RETRY_HOURS} h after arrival, so not authenticated");
            warn!(message_id, authenticated = false, reason = %reason, "sender_checked");
            Ok(AuthVerdict { authenticated: false, reason })
        }
    }
}

async fn process_loaded(
    store: &dyn Store,
    config: &Config,
    message: &StoredMessage,
    now: DateTime<Utc>,
) -> Result<ProcessReport, IngestError> {
    let message_id = message.id;
    let mut reading = read_message(config, &message.raw, &message.envelope_rcpts);
    if needs_dmarc(&reading) {
        reading.extracted.dmarc = Some(check_sender(config, message, now).await?);
    }
    let mail = notify::MailToAnswer {
        envelope_from: message.envelope_from.as_deref(),
        extracted: &reading.extracted,
        recipients: if message.envelope_rcpts.is_empty() {
            &reading.extracted.header_recipients
        } else {
            &message.envelope_rcpts
        },
    };
    let mut report = ProcessReport {
        message_id,
        tenants: reading.tenants.iter().map(|t| t.id.clone()).collect(),
        ..ProcessReport::default()
    };
    if reading.tenants.is_empty() {
        let (events, without_uid, problems) = read_events(config, &reading.extracted, chrono_tz::UTC);
        report.reasons = message_reasons(&reading, &events, without_uid, &problems);
        log_message_reasons(message_id, None, &report.reasons);
        return Ok(report);
    }
    for tenant in &reading.tenants {
        let (events, without_uid, problems) = read_events(config, &reading.extracted, tenant.timezone());
        info!(message_id, tenant = %tenant.id, calendars = reading.extracted.calendars.len(), events = events.len(), problems = problems.len(), "calendar_extracted");
        let reasons = message_reasons(&reading, &events, without_uid, &problems);
        log_message_reasons(message_id, Some(&tenant.id), &reasons);
        report.reasons.extend(reasons);
        for event in &events {
            record_one(store, config, tenant, &mail, message_id, event, now, &mut report).await?;
        }
    }
    Ok(report)
}

fn log_message_reasons(message_id: i64, tenant: Option<&str>, reasons: &[Reason]) {
    for r in reasons {
        info!(message_id, tenant = tenant.unwrap_or(""), eligible = false, reason = r.code.as_str(), "decision_made");
        crate::metrics::decision_made(false, &[r.code.as_str()]);
    }
}

#[allow(clippy::too_many_arguments)]
async fn record_one(
    store: &dyn Store,
    config: &Config,
    tenant: &Tenant,
    mail: &notify::MailToAnswer<'_>,
    message_id: i64,
    event: &EventVersion,
    now: DateTime<Utc>,
    report: &mut ProcessReport,
) -> Result<(), IngestError> {
    let key = EventKey { tenant: tenant.id.clone(), uid: event.uid.clone(), recurrence_id: event.recurrence_id };
    let requester = requester_for(tenant, mail.extracted, Some(event));
    let ctx = EventContext { config, tenant, now };
    let reply_gate = notify::reply_gate(config, tenant, mail, requester.as_ref(), event);
    if let Err(reason) = &reply_gate {
        log_reply_skipped(message_id, &tenant.id, &event.uid, reason.code());
    }
    let decide = |history: &EventHistory| -> EventOutcome {
        let own = history.versions.iter().filter(|v| v.version.recurrence_id == event.recurrence_id);
        let current = state::current(own.clone().map(|v| (&v.version, v.id)));
        let current_version_id = own.clone().find(|v| Some(&v.version) == current).map(|v| v.id);
        let (decision, conference) = match current {
            Some(current) => {
                let decided = decide_event(&ctx, current, requester.as_ref());
                (decided.decision, decided.conference)
            }
            None => (
                Decision {
                    eligible: false,
                    reasons: vec![Reason::new(
                        ReasonCode::NoInviteFound,
                        "only replies (REPLY, COUNTER, REFRESH) have been received for this event",
                    )],
                    plan: None,
                    skipped: vec![],
                },
                None,
            ),
        };
        let job_changes = plan_jobs(&ctx, history, requester.as_ref());
        let reply = reply_gate
            .as_ref()
            .ok()
            .map(|r| notify::draft_reply(r, current.unwrap_or(event), &decision, conference.as_ref(), &job_changes));
        EventOutcome { current_version_id, requester: requester.clone(), decision, job_changes, reply }
    };
    let started = std::time::Instant::now();
    let recorded = store.record_event(&key, message_id, event, &version_hash(event), now, &decide).await;
    crate::metrics::store_latency("record_event", started.elapsed());
    let recorded = recorded?;
    let rid = event.recurrence_id.map(|r| r.to_rfc3339()).unwrap_or_default();
    info!(
        message_id,
        tenant = %tenant.id,
        uid = %event.uid,
        recurrence_id = %rid,
        sequence = event.sequence,
        method = event.method.as_deref().unwrap_or(""),
        version_id = recorded.version_id,
        new = recorded.version_is_new,
        "version_stored"
    );
    let outcome = &recorded.outcome;
    let codes: Vec<&str> = outcome.decision.reasons.iter().map(|r| r.code.as_str()).collect();
    info!(
        message_id,
        tenant = %tenant.id,
        uid = %event.uid,
        requester = outcome.requester.as_ref().map_or("", |r| r.email.as_str()),
        eligible = outcome.decision.eligible,
        reasons = %codes.join(","),
        "decision_made"
    );
    crate::metrics::decision_made(outcome.decision.eligible, &codes);
    report.versions_stored += usize::from(recorded.version_is_new);
    report.eligible_decisions += usize::from(outcome.decision.eligible);
    let counts = log_job_changes(&tenant.id, &event.uid, &outcome.job_changes, &recorded.created);
    report.jobs_created += counts.created;
    report.jobs_joined += counts.joined;
    report.jobs_rescheduled += counts.rescheduled;
    report.jobs_cancelled += counts.cancelled;
    match (&recorded.reply, &outcome.reply) {
        (Some(Enqueued::Queued { id }), Some(draft)) => {
            info!(message_id, tenant = %tenant.id, uid = %event.uid, reply_id = id, recipient = %draft.recipient, outcome = draft.outcome.as_str(), "reply_queued");
        }
        (Some(Enqueued::RateLimited), Some(draft)) => {
            warn!(message_id, tenant = %tenant.id, uid = %event.uid, recipient = %draft.recipient, reason = "rate_limited", "reply_skipped");
        }
        (Some(Enqueued::Unchanged), _) => log_reply_skipped(message_id, &tenant.id, &event.uid, "unchanged"),
        (Some(Enqueued::Duplicate), _) => log_reply_skipped(message_id, &tenant.id, &event.uid, "already_queued"),
        _ => {}
    }
    Ok(())
}

/// Why no reply goes out about an event; quiet when replies are simply off.
fn log_reply_skipped(message_id: i64, tenant: &str, uid: &str, reason: &str) {
    if matches!(reason, "notify_disabled" | "tenant_replies_off") {
        debug!(message_id, tenant, uid, reason, "reply_skipped");
    } else {
        info!(message_id, tenant, uid, reason, "reply_skipped");
    }
}

/// How many job changes of each kind were written.
#[derive(Debug, Default, Clone, Copy)]
struct JobCounts {
    created: usize,
    joined: usize,
    rescheduled: usize,
    cancelled: usize,
}

/// One log line per job change, with how many of each kind there were.
fn log_job_changes(tenant: &str, uid: &str, changes: &[JobChange], created: &[CreatedJob]) -> JobCounts {
    let mut counts = JobCounts::default();
    let mut created = created.iter();
    for change in changes {
        match change {
            JobChange::Create(spec) => match created.next() {
                Some(job) if job.joined => {
                    counts.joined += 1;
                    crate::metrics::job_changed(spec.kind.as_str(), "joined");
                    info!(job_id = job.id, tenant, uid, kind = spec.kind.as_str(),
                          occurrence_start = %spec.occurrence_start.to_rfc3339(), "job_joined");
                }
                job => {
                    counts.created += 1;
                    crate::metrics::job_changed(spec.kind.as_str(), "scheduled");
                    info!(job_id = job.map_or(0, |j| j.id), tenant, uid,
                          kind = spec.kind.as_str(), run_at = %spec.run_at.to_rfc3339(),
                          occurrence_start = %spec.occurrence_start.to_rfc3339(), "job_scheduled");
                }
            },
            JobChange::Reschedule { id, old_run_at, spec } => {
                counts.rescheduled += 1;
                crate::metrics::job_changed(spec.kind.as_str(), "rescheduled");
                info!(job_id = id, tenant, uid, kind = spec.kind.as_str(),
                      old_run_at = %old_run_at.to_rfc3339(), run_at = %spec.run_at.to_rfc3339(), "job_rescheduled");
            }
            JobChange::Cancel { id, kind, run_at } => {
                counts.cancelled += 1;
                crate::metrics::job_changed(kind.as_str(), "cancelled");
                info!(job_id = id, tenant, uid, kind = kind.as_str(), run_at = %run_at.to_rfc3339(), "job_cancelled");
            }
        }
    }
    counts
}

/// Plans again every UID whose jobs time alone can change: occurrences that come inside
/// the horizon as days pass (design.md: "`serve` extends the horizon as time passes").
/// Returns how many jobs were created.
pub async fn replan(store: &dyn Store, config: &Config, now: DateTime<Utc>) -> Result<usize, StoreError> {
    let mut created = 0;
    for (tenant_id, uid) in store.uids_to_replan(now).await? {
        // A tenant removed from the configuration keeps its history but gets no new jobs.
        let Some(tenant) = config.tenants.iter().find(|t| t.id == tenant_id) else { continue };
        let ctx = EventContext { config, tenant, now };
        let plan = |history: &EventHistory| plan_jobs(&ctx, history, None);
        let applied = store.replan(&tenant_id, &uid, now, &plan).await?;
        created += log_job_changes(&tenant_id, &uid, &applied.changes, &applied.created).created;
    }
    Ok(created)
}
