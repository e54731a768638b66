//! The reply queue: outcome replies to requesters, queued in the transaction that took the
//! decision ([`enqueue`] runs inside `record_event`, over each backend's [`ReplyOps`]) and
//! sent by the reply worker. A claim is under a lease, so that several daemons sharing one
//! store send each reply once. Every operation takes `now` from its caller.

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use super::{slot_text, EventKey, StoreError};

/// What changed for the requester, and so what the reply says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyOutcome {
    /// The meeting will be recorded (the first time this requester is told so).
    Scheduled,
    /// A recording already planned moved with the meeting.
    Rescheduled,
    /// The meeting was cancelled: its recording is off.
    Cancelled,
    /// The meeting will not be recorded at this requester's request.
    Refused,
}

impl ReplyOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplyOutcome::Scheduled => "scheduled",
            ReplyOutcome::Rescheduled => "rescheduled",
            ReplyOutcome::Cancelled => "cancelled",
            ReplyOutcome::Refused => "refused",
        }
    }
}

/// A rendered reply, ready to be queued with the decision it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyDraft {
    /// The requester.
    pub recipient: String,
    /// The assistant address the mail was sent to.
    pub sender: String,
    pub outcome: ReplyOutcome,
    /// What will happen, in a form that compares: a reply equal to the last one queued to
    /// this requester about this event is not queued (nothing changed for them).
    pub fingerprint: String,
    pub subject: String,
    /// `<Message-ID>` of the answered mail.
    pub in_reply_to: Option<String>,
    /// The answered mail's References followed by its Message-ID.
    pub references: Option<String>,
    pub body_text: String,
    pub body_html: String,
    /// `notify.max_replies_per_hour`: more replies to one requester within an hour are dropped.
    pub max_per_hour: u32,
}

/// What queueing a reply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Queued {
        id: i64,
    },
    /// The last reply to this requester about this event said the same.
    Unchanged,
    /// `max_per_hour` replies went to this requester within the last hour.
    RateLimited,
    /// This message was already answered about this event (it was processed again).
    Duplicate,
}

/// A reply handed to a sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedReply {
    pub id: i64,
    pub tenant: String,
    pub recipient: String,
    pub sender: String,
    pub subject: String,
    pub in_reply_to: Option<String>,
    pub references: Option<String>,
    pub body_text: String,
    pub body_html: String,
    /// Claims so far, this one included.
    pub attempts: i64,
}

/// One hour: the window of `max_replies_per_hour`.
fn rate_window() -> TimeDelta {
    TimeDelta::hours(1)
}

/// The statements queueing a reply needs, inside the open transaction of the decision.
#[async_trait]
pub(super) trait ReplyOps: Send {
    /// Keeps other daemons off this recipient's replies until the transaction ends, so the
    /// hourly limit holds across them (nothing to do where one writer holds the store).
    async fn lock_recipient(&mut self, recipient: &str) -> Result<(), StoreError>;
    /// Whether a reply to `recipient` about this message and event is queued already.
    async fn already_queued(
        &mut self,
        key: &EventKey,
        rid: &str,
        message_id: i64,
        recipient: &str,
    ) -> Result<bool, StoreError>;
    /// The fingerprint of the last reply to `recipient` about this event.
    async fn last_fingerprint(
        &mut self,
        key: &EventKey,
        rid: &str,
        recipient: &str,
    ) -> Result<Option<String>, StoreError>;
    /// How many replies to `recipient` were queued after `since`.
    async fn replies_since(&mut self, recipient: &str, since: DateTime<Utc>) -> Result<i64, StoreError>;
    async fn insert_reply(
        &mut self,
        key: &EventKey,
        rid: &str,
        message_id: i64,
        draft: &ReplyDraft,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError>;
}

/// Queues `draft` as the reply to `message_id` about `key`, inside the caller's transaction
/// (the one that records the decision): not twice for one message, not when it says what the
/// last reply about the event said, not past the recipient's hourly limit.
pub(super) async fn enqueue(
    ops: &mut dyn ReplyOps,
    key: &EventKey,
    message_id: i64,
    draft: &ReplyDraft,
    now: DateTime<Utc>,
) -> Result<Enqueued, StoreError> {
    ops.lock_recipient(&draft.recipient).await?;
    let rid = slot_text(key.recurrence_id);
    if ops.already_queued(key, &rid, message_id, &draft.recipient).await? {
        return Ok(Enqueued::Duplicate);
    }
    if ops.last_fingerprint(key, &rid, &draft.recipient).await?.as_deref() == Some(draft.fingerprint.as_str()) {
        return Ok(Enqueued::Unchanged);
    }
    if ops.replies_since(&draft.recipient, now - rate_window()).await? >= i64::from(draft.max_per_hour) {
        return Ok(Enqueued::RateLimited);
    }
    Ok(Enqueued::Queued { id: ops.insert_reply(key, &rid, message_id, draft, now).await? })
}

#[async_trait]
pub trait ReplyQueue: Send + Sync {
    /// Hands up to `limit` due replies to `worker`, oldest first, each under a lease until
    /// `now + lease`: queued replies whose `next_attempt_at` has come, and replies being sent
    /// by a worker whose lease ran out. No two workers get the same reply while its lease holds.
    async fn claim_due_replies(
        &self,
        worker: &str,
        limit: u32,
        lease: TimeDelta,
        now: DateTime<Utc>,
    ) -> Result<Vec<ClaimedReply>, StoreError>;

    /// The relay took the reply. False when `worker` no longer held it.
    async fn reply_sent(&self, id: i64, worker: &str, now: DateTime<Utc>) -> Result<bool, StoreError>;

    /// The relay could not take the reply now: queued again for `retry_at`. False when
    /// `worker` no longer held it.
    async fn reply_deferred(
        &self,
        id: i64,
        worker: &str,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// The relay refused the reply for good (a 5xx, a bad address): `failed`. False when
    /// `worker` no longer held it.
    async fn reply_failed(&self, id: i64, worker: &str, error: &str) -> Result<bool, StoreError>;

    /// Replies not sent yet: queued, or being sent (the `invited_reply_queue_length` gauge).
    async fn replies_waiting(&self) -> Result<i64, StoreError>;
}
