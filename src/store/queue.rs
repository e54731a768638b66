//! The recorder side of the jobs table: recorders claim due capture jobs under a lease,
//! keep the lease alive, and report how the capture ended. Every operation takes `now`
//! from its caller, so that tests control time exactly.
//!
//! What a recorder may not do (touch a job another recorder holds, finish a job twice) is
//! a [`Refusal`], a value: only a store that cannot answer is an `Err`.

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use super::StoreError;

/// Which due jobs a recorder wants; `None` takes every kind / provider.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimFilter {
    /// Plan kinds (`bot_join`, `cloud_fetch`) this recorder can run.
    pub kinds: Option<Vec<String>>,
    /// Providers (`zoom`, `teams`, …) this recorder can join.
    pub providers: Option<Vec<String>>,
}

/// A job handed to a recorder: everything it needs to run the capture. Field names are
/// those of `invited jobs --json`, plus the lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClaimedJob {
    pub id: i64,
    pub tenant: String,
    pub event_uid: String,
    pub occurrence_start: DateTime<Utc>,
    pub occurrence_end: DateTime<Utc>,
    pub kind: String,
    pub run_at: DateTime<Utc>,
    /// Always `claimed`: kept so that a job object reads the same everywhere.
    pub state: String,
    pub provider: String,
    pub meeting_url: String,
    pub flags: Vec<String>,
    pub requesters: Vec<String>,
    /// Claims so far, this one included.
    pub attempts: i64,
    /// The recorder must heartbeat before this, or the job may be handed to another.
    pub lease_until: DateTime<Utc>,
}

/// Why a recorder's report about a job was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No job has this id.
    UnknownJob,
    /// Another recorder holds the job (its lease ran out and it was claimed again).
    NotYours,
    /// The job is not claimed: still `scheduled`, or already `done`, `failed`, `cancelled`.
    NotClaimed { state: String },
}

impl Refusal {
    /// Stable code for logs and API errors.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::UnknownJob => "unknown_job",
            Refusal::NotYours => "not_yours",
            Refusal::NotClaimed { state } if is_finished(state) => "already_finished",
            Refusal::NotClaimed { .. } => "not_claimed",
        }
    }
}

/// Whether a job in `state` will never run again.
pub fn is_finished(state: &str) -> bool {
    matches!(state, "done" | "failed" | "cancelled")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    Extended { lease_until: DateTime<Utc> },
    Refused(Refusal),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompleteOutcome {
    Completed,
    /// This recorder had already completed it (a retried request).
    AlreadyCompleted,
    Refused(Refusal),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailOutcome {
    /// Back to `scheduled`, due again at `retry_at`.
    Retrying {
        attempts: i64,
        retry_at: DateTime<Utc>,
    },
    /// No more tries: `failed`, with the recorder's error as the reason.
    Failed {
        attempts: i64,
        reason: FinalFailure,
    },
    Refused(Refusal),
}

/// Why a failure was final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalFailure {
    /// `max_attempts` claims were made.
    AttemptsExhausted,
    /// A bot cannot join a meeting that will have ended before the retry.
    MeetingOver,
}

impl FinalFailure {
    pub fn code(self) -> &'static str {
        match self {
            FinalFailure::AttemptsExhausted => "attempts_exhausted",
            FinalFailure::MeetingOver => "meeting_over",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeclineOutcome {
    /// The occurrence is marked declined and its job cancelled.
    Cancelled,
    /// This recorder had already reported it (a retried request).
    AlreadyDeclined,
    Refused(Refusal),
}

/// How failed captures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// A job is `failed` once it has been claimed this many times.
    pub max_attempts: i64,
    /// Wait before the first retry; doubled for each further attempt.
    pub base: TimeDelta,
    /// The longest wait.
    pub max: TimeDelta,
}

impl RetryPolicy {
    /// Wait after the `attempts`-th try failed: `base * 2^(attempts-1)`, at most `max`.
    pub fn backoff(&self, attempts: i64) -> TimeDelta {
        let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        self.base.checked_mul(1 << doublings).map_or(self.max, |d| d.min(self.max))
    }

    /// What a failure reported at `now` after `attempts` claims leads to.
    pub fn after_failure(
        &self,
        attempts: i64,
        kind: &str,
        occurrence_end: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, FinalFailure> {
        if attempts >= self.max_attempts {
            return Err(FinalFailure::AttemptsExhausted);
        }
        let retry_at = now + self.backoff(attempts);
        if kind == "bot_join" && retry_at >= occurrence_end {
            return Err(FinalFailure::MeetingOver);
        }
        Ok(retry_at)
    }
}

/// The last error recorded on a bot_join that nobody claimed in time.
pub const MISSED_ERROR: &str = "missed: no recorder claimed it before the meeting ended";

/// The last error recorded on a bot_join whose recorder stopped reporting and whose meeting ended.
pub const LEASE_LOST_ERROR: &str = "missed: the recorder's lease ran out and the meeting has ended";

/// Who holds a job, and in which state it is: enough to say why a report was refused.
pub(super) struct Holder {
    pub(super) state: String,
    pub(super) claimed_by: Option<String>,
}

impl Holder {
    pub(super) fn held_by(&self, recorder: &str) -> bool {
        self.state == "claimed" && self.claimed_by.as_deref() == Some(recorder)
    }

    pub(super) fn finished_by(&self, recorder: &str, state: &str) -> bool {
        self.state == state && self.claimed_by.as_deref() == Some(recorder)
    }
}

/// Why `recorder` may not act on a job that is not held by it.
pub(super) fn refusal(holder: Option<&Holder>) -> Refusal {
    match holder {
        None => Refusal::UnknownJob,
        Some(h) if h.state == "claimed" => Refusal::NotYours,
        Some(h) => Refusal::NotClaimed { state: h.state.clone() },
    }
}

#[async_trait]
pub trait RecorderQueue: Send + Sync {
    /// Hands out up to `limit` due jobs to `recorder`, soonest first, each under a lease
    /// until `now + lease`: scheduled jobs with `run_at <= now`, and claimed jobs whose lease
    /// ran out. A bot_join whose meeting has ended is not handed out. One transaction, so
    /// that two recorders never get the same job while its lease holds.
    async fn claim_due_jobs(
        &self,
        recorder: &str,
        filter: &ClaimFilter,
        limit: u32,
        lease: TimeDelta,
        now: DateTime<Utc>,
    ) -> Result<Vec<ClaimedJob>, StoreError>;

    /// Extends the lease of a job `recorder` holds to `now + lease`.
    async fn heartbeat(
        &self,
        job_id: i64,
        recorder: &str,
        lease: TimeDelta,
        now: DateTime<Utc>,
    ) -> Result<HeartbeatOutcome, StoreError>;

    /// Marks a job `recorder` holds `done`.
    async fn complete(&self, job_id: i64, recorder: &str, now: DateTime<Utc>) -> Result<CompleteOutcome, StoreError>;

    /// Records a failed capture of a job `recorder` holds: scheduled again after a backoff,
    /// or `failed` for good (see [`RetryPolicy::after_failure`]).
    async fn fail(
        &self,
        job_id: i64,
        recorder: &str,
        error: &str,
        now: DateTime<Utc>,
        policy: &RetryPolicy,
    ) -> Result<FailOutcome, StoreError>;

    /// A participant chose "join but don't record": in one transaction, the occurrence
    /// is marked declined (for every UID that shares the job), so that no job is planned
    /// for it again, and the job is cancelled.
    async fn decline_consent(
        &self,
        job_id: i64,
        recorder: &str,
        now: DateTime<Utc>,
    ) -> Result<DeclineOutcome, StoreError>;

    /// Marks `failed` the bot_joins whose meeting ended before anyone ran them: still
    /// scheduled, or claimed by a recorder whose lease ran out. Returns their ids.
    async fn expire_missed(&self, now: DateTime<Utc>) -> Result<Vec<i64>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy { max_attempts: 3, base: TimeDelta::seconds(30), max: TimeDelta::seconds(900) }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).expect("test time")
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = policy();
        let waits: Vec<i64> = [1, 2, 3, 4, 5, 6, 100].iter().map(|a| p.backoff(*a).num_seconds()).collect();
        assert_eq!(waits, vec![30, 60, 120, 240, 480, 900, 900]);
        assert_eq!(p.backoff(0).num_seconds(), 30);
    }

    #[test]
    fn failure_is_final_after_max_attempts_or_past_the_meeting() {
        let p = policy();
        let now = at("2027-01-11T15:00:00Z");
        let end = at("2027-01-11T16:00:00Z");
        assert_eq!(p.after_failure(1, "bot_join", end, now), Ok(at("2027-01-11T15:00:30Z")));
        assert_eq!(p.after_failure(3, "bot_join", end, now), Err(FinalFailure::AttemptsExhausted));
        let late = at("2027-01-11T15:59:45Z");
        assert_eq!(p.after_failure(1, "bot_join", end, late), Err(FinalFailure::MeetingOver));
        // A cloud fetch runs after the meeting anyway.
        assert_eq!(p.after_failure(1, "cloud_fetch", end, late), Ok(at("2027-01-11T16:00:15Z")));
    }
}
