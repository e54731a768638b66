//! The only place with SQL. A [`Store`] keeps raw messages, events, their append-only
//! versions, decisions and capture jobs. SQLite is the embedded default; the backend
//! is chosen by `store.url`, and SQL that differs between backends stays behind the trait.

mod jobs;
mod mailbox;
mod postgres;
mod postgres_lease;
mod postgres_mailbox;
mod postgres_queue;
mod postgres_replies;
mod queue;
mod replies;
mod sqlite;
mod sqlite_mailbox;
mod sqlite_queue;
mod sqlite_replies;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::eligibility::{Decision, Requester};
use crate::model::EventVersion;
use crate::schedule::{ActiveJob, FinishedJob, JobChange};

pub use mailbox::{MailboxLease, MailboxStart, MailboxState, MailboxStore};
pub use postgres::PgStore;
pub use queue::{
    is_finished, ClaimFilter, ClaimedJob, CompleteOutcome, DeclineOutcome, FailOutcome, FinalFailure, HeartbeatOutcome,
    RecorderQueue, Refusal, RetryPolicy,
};
pub use replies::{ClaimedReply, Enqueued, ReplyDraft, ReplyOutcome, ReplyQueue};
pub use sqlite::SqliteStore;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported store url {:?}: expected sqlite://PATH or postgres://USER@HOST/DB", crate::config::mask_url(.0))]
    UnsupportedUrl(String),
    #[error("store unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl StoreError {
    /// Stable code for logs.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::UnsupportedUrl(_) => "unsupported_url",
            StoreError::Unavailable(_) => "store_unavailable",
            StoreError::Migration(_) => "migration_failed",
            StoreError::Corrupt(_) => "corrupt_data",
            StoreError::Database(_) => "database_error",
        }
    }

    /// Whether trying again later may succeed (SMTP 4xx, job retry) rather than never.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let transient = match &e {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
            sqlx::Error::Database(d) => match d.code() {
                // SQLite's codes are numbers, and so are some of PostgreSQL's SQLSTATEs.
                Some(code) if d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() => {
                    code.parse().is_ok_and(sqlite_transient)
                }
                Some(sqlstate) => postgres_transient(&sqlstate),
                None => false,
            },
            _ => false,
        };
        if transient {
            StoreError::Unavailable(e)
        } else {
            StoreError::Database(e)
        }
    }
}

/// Whether a SQLite result code means "try again": the primary codes (extended codes carry
/// them in the low byte) BUSY, LOCKED, IOERR, FULL, CANTOPEN.
fn sqlite_transient(code: i64) -> bool {
    matches!(code & 0xff, 5 | 6 | 10 | 13 | 14)
}

/// Whether a PostgreSQL SQLSTATE means "try again": serialization failure, deadlock, lock
/// not available, shutdown, connection trouble, insufficient resources.
fn postgres_transient(sqlstate: &str) -> bool {
    matches!(sqlstate, "40001" | "40P01" | "55P03" | "57P01" | "57P02" | "57P03")
        || sqlstate.starts_with("08")
        || sqlstate.starts_with("53")
}

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    File,
    Smtp,
    Imap,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Smtp => "smtp",
            Source::Imap => "imap",
        }
    }

    /// The value of a `source` column.
    pub(crate) fn from_column(s: &str) -> Result<Source, StoreError> {
        match s {
            "file" => Ok(Source::File),
            "smtp" => Ok(Source::Smtp),
            "imap" => Ok(Source::Imap),
            other => Err(StoreError::Corrupt(format!("unknown message source {other:?}"))),
        }
    }
}

/// A message to spool.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub raw: Vec<u8>,
    pub sha256: String,
    pub source: Source,
    pub envelope_from: Option<String>,
    pub envelope_rcpts: Vec<String>,
    pub message_id: Option<String>,
    pub received_at: DateTime<Utc>,
}

/// A spooled message.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub id: i64,
    pub raw: Vec<u8>,
    /// MAIL FROM as given (`""` for the null sender), when the message came by SMTP.
    pub envelope_from: Option<String>,
    pub envelope_rcpts: Vec<String>,
    pub received_at: DateTime<Utc>,
    pub status: String,
    pub source: Source,
}

/// How processing one message ended, for [`Store::finish_messages`].
#[derive(Debug, Clone)]
pub struct Finished {
    pub id: i64,
    pub outcome: serde_json::Value,
    /// Set when processing failed for good.
    pub error: Option<String>,
}

/// The outcome of spooling: the message's id, and whether these bytes were new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spooled {
    pub id: i64,
    pub inserted: bool,
}

/// (tenant, UID, RECURRENCE-ID): the identity of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventKey {
    pub tenant: String,
    pub uid: String,
    pub recurrence_id: Option<DateTime<Utc>>,
}

/// One stored version with its arrival order.
#[derive(Debug, Clone)]
pub struct StoredVersion {
    pub id: i64,
    pub version: EventVersion,
    pub received_at: DateTime<Utc>,
}

/// What is known of a whole UID when a new message about it is processed.
#[derive(Debug, Clone)]
pub struct EventHistory {
    /// Every version of every RECURRENCE-ID of the UID, oldest first, including the one
    /// just stored.
    pub versions: Vec<StoredVersion>,
    /// Everyone who asked before about this UID, with whether they were authenticated then.
    pub past_requesters: Vec<Requester>,
    /// Jobs of this UID that may still run.
    pub active_jobs: Vec<ActiveJob>,
    /// Occurrences (slots) a participant declined recording for.
    pub declined_slots: Vec<Option<DateTime<Utc>>>,
    /// Jobs of this UID that ran to their end (done, or failed for good).
    pub finished_jobs: Vec<FinishedJob>,
}

/// What processing one event decided, to be written in the same transaction.
#[derive(Debug, Clone)]
pub struct EventOutcome {
    /// The version of the arriving key the decision was taken on (its current one), if any.
    pub current_version_id: Option<i64>,
    pub requester: Option<Requester>,
    pub decision: Decision,
    /// Changes to the UID's jobs.
    pub job_changes: Vec<JobChange>,
    /// The reply to the requester about this outcome, queued with it.
    pub reply: Option<ReplyDraft>,
}

/// The pure step the store runs inside its transaction.
pub type Decide<'a> = dyn Fn(&EventHistory) -> EventOutcome + Send + Sync + 'a;

/// Planning without a new message: the job changes a UID's history calls for now.
pub type Replan<'a> = dyn Fn(&EventHistory) -> Vec<JobChange> + Send + Sync + 'a;

/// Job changes as written, with the job each creation ended up on (in order of the creations).
#[derive(Debug, Clone, Default)]
pub struct AppliedChanges {
    pub changes: Vec<JobChange>,
    pub created: Vec<CreatedJob>,
}

/// Where a planned job went: a new job, or an active job for the same meeting link, start
/// and kind that another UID already has (two people forwarding one meeting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreatedJob {
    pub id: i64,
    pub joined: bool,
}

/// What recording a version did.
#[derive(Debug, Clone)]
pub struct RecordedEvent {
    pub event_id: i64,
    pub version_id: i64,
    /// False when the identical version was already stored (the message is linked to it).
    pub version_is_new: bool,
    pub outcome: EventOutcome,
    /// The jobs `outcome.job_changes`' creations ended up on, in order.
    pub created: Vec<CreatedJob>,
    /// What queueing `outcome.reply` did, when there was one.
    pub reply: Option<Enqueued>,
}

/// A capture job, as `invited jobs --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRow {
    pub id: i64,
    pub tenant: String,
    pub event_uid: String,
    pub occurrence_start: DateTime<Utc>,
    pub kind: String,
    pub run_at: DateTime<Utc>,
    pub state: String,
    pub provider: String,
    pub meeting_url: String,
    pub flags: Vec<String>,
    pub requesters: Vec<String>,
}

/// One stored version with the decisions taken while it was current.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    pub tenant: String,
    pub version_id: i64,
    pub received_at: DateTime<Utc>,
    pub message_ids: Vec<i64>,
    /// Whether this is the version in force for its (tenant, RECURRENCE-ID).
    pub current: bool,
    pub version: EventVersion,
    pub decisions: Vec<DecisionRow>,
}

/// Marks, for each (tenant, RECURRENCE-ID), the version in force.
fn mark_current(entries: &mut [HistoryEntry]) {
    let current_ids: Vec<i64> = entries
        .iter()
        .filter_map(|e| {
            let same_key =
                entries.iter().filter(|o| o.tenant == e.tenant && o.version.recurrence_id == e.version.recurrence_id);
            let current = crate::state::current(same_key.clone().map(|o| (&o.version, o.version_id)))?;
            same_key.clone().find(|o| &o.version == current).map(|o| o.version_id)
        })
        .collect();
    for e in entries.iter_mut() {
        e.current = current_ids.contains(&e.version_id);
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DecisionRow {
    pub message_id: i64,
    pub decided_at: DateTime<Utc>,
    pub requester: Option<Requester>,
    pub decision: serde_json::Value,
}

/// A decision as both backends store it: its columns, with reasons and plan as JSON text.
pub(crate) struct DecisionColumns {
    pub message_id: i64,
    pub decided_at: DateTime<Utc>,
    pub requester: Option<String>,
    pub authenticated: bool,
    pub eligible: bool,
    pub reasons: String,
    pub plan: Option<String>,
    pub current_version_id: Option<i64>,
}

impl DecisionRow {
    pub(crate) fn from_columns(c: DecisionColumns) -> Result<DecisionRow, StoreError> {
        Ok(DecisionRow {
            message_id: c.message_id,
            decided_at: c.decided_at,
            requester: c.requester.map(|email| Requester { email, authenticated: c.authenticated }),
            decision: serde_json::json!({
                "eligible": c.eligible,
                "reasons": from_json::<serde_json::Value>(&c.reasons)?,
                "plan": c.plan.as_deref().map(from_json::<serde_json::Value>).transpose()?,
                "current_version_id": c.current_version_id,
            }),
        })
    }
}

#[async_trait]
pub trait Store: RecorderQueue + ReplyQueue + MailboxStore + Send + Sync {
    /// Stores the raw message durably (committed, fsync'd) and returns its id; the same
    /// bytes stored again return the existing id.
    async fn spool_message(&self, message: &NewMessage) -> Result<Spooled, StoreError> {
        let mut spooled = self.spool_messages(std::slice::from_ref(message)).await?;
        spooled.pop().ok_or_else(|| StoreError::Corrupt("spooling one message returned no id".into()))
    }

    /// [`spool_message`](Store::spool_message) for several messages in one transaction (one
    /// fsync): all are committed or none. One result per message, in order; a message whose
    /// bytes are already stored, or appear earlier in `messages`, gets that id.
    async fn spool_messages(&self, messages: &[NewMessage]) -> Result<Vec<Spooled>, StoreError>;

    async fn load_message(&self, id: i64) -> Result<Option<StoredMessage>, StoreError>;

    /// [`load_message`](Store::load_message) for several messages at once; those not in the
    /// store are left out. Backends override it with one query.
    async fn load_messages(&self, ids: &[i64]) -> Result<Vec<StoredMessage>, StoreError> {
        let mut loaded = Vec::with_capacity(ids.len());
        for &id in ids {
            loaded.extend(self.load_message(id).await?);
        }
        Ok(loaded)
    }

    /// Messages not yet processed (crash, store error), and with `include_failed` those
    /// whose processing failed, oldest first.
    async fn unfinished_messages(&self, include_failed: bool) -> Result<Vec<i64>, StoreError>;

    /// Records how processing a message ended.
    async fn finish_message(
        &self,
        id: i64,
        outcome: &serde_json::Value,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// [`finish_message`](Store::finish_message) for several messages; backends override it
    /// with one transaction.
    async fn finish_messages(&self, finished: &[Finished], now: DateTime<Utc>) -> Result<(), StoreError> {
        for f in finished {
            self.finish_message(f.id, &f.outcome, f.error.as_deref(), now).await?;
        }
        Ok(())
    }

    /// In one transaction: stores `version` of `key` (or links the message to the identical
    /// stored version), runs `decide` on the event's history, and records its decision and
    /// job changes.
    async fn record_event(
        &self,
        key: &EventKey,
        message_id: i64,
        version: &EventVersion,
        version_hash: &str,
        now: DateTime<Utc>,
        decide: &Decide<'_>,
    ) -> Result<RecordedEvent, StoreError>;

    /// (tenant, UID) pairs whose jobs may change with time alone: a series, or a meeting
    /// that has not ended, that someone asked for.
    async fn uids_to_replan(&self, now: DateTime<Utc>) -> Result<Vec<(String, String)>, StoreError>;

    /// In one transaction: runs `plan` on the UID's history and applies its job changes.
    async fn replan(
        &self,
        tenant: &str,
        uid: &str,
        now: DateTime<Utc>,
        plan: &Replan<'_>,
    ) -> Result<AppliedChanges, StoreError>;

    /// Capture jobs, soonest first; only scheduled and claimed ones unless `all`.
    async fn jobs(&self, all: bool) -> Result<Vec<JobRow>, StoreError>;

    /// Every version of events with this UID, oldest first, with their decisions.
    async fn history(&self, uid: &str) -> Result<Vec<HistoryEntry>, StoreError>;

    /// Whether the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The right to do the periodic work of all daemons sharing this store (resuming
    /// unfinished mail, replanning, expiring missed jobs) until the lease is released, or
    /// None while another daemon holds it. A store no other daemon shares (SQLite) always
    /// grants it.
    async fn lead_periodic_work(&self) -> Result<Option<PeriodicLease>, StoreError> {
        Ok(Some(PeriodicLease { held: None }))
    }
}

/// Held by the one daemon doing the cluster's periodic work; see
/// [`Store::lead_periodic_work`].
pub struct PeriodicLease {
    /// PostgreSQL: the open transaction whose advisory lock keeps other daemons out; it ends
    /// (and the lock with it) when the lease is released or dropped, or the connection dies.
    held: Option<sqlx::Transaction<'static, sqlx::Postgres>>,
}

impl PeriodicLease {
    /// Lets another daemon take the work at once.
    pub async fn release(self) {
        if let Some(tx) = self.held {
            // Failing means the connection is gone, and the lock went with it.
            let _ = tx.rollback().await;
        }
    }
}

/// Opens the store named by `url` and brings its schema up to date.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        return Ok(Arc::new(SqliteStore::open(url).await?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(PgStore::open(url).await?));
    }
    Err(StoreError::UnsupportedUrl(url.to_string()))
}

/// The one text form of a time in the store: RFC 3339, UTC, milliseconds, `Z`.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("bad JSON in store: {e}")))
}

/// An occurrence slot or RECURRENCE-ID as a key column: its time, or '' for none.
pub(crate) fn slot_text(slot: Option<DateTime<Utc>>) -> String {
    slot.map(ts).unwrap_or_default()
}

pub(crate) fn slot_value(text: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    (!text.is_empty()).then(|| parse_ts(text)).transpose()
}

pub(crate) fn plan_kind(s: &str) -> Result<crate::eligibility::PlanKind, StoreError> {
    from_json(&format!("\"{s}\""))
}

pub(crate) fn parse_ts(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("bad time {s:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::ConnectOptions;

    use super::StoreError;

    /// Real SQLite errors: a file locked by another connection is worth trying again, a
    /// broken constraint is not.
    #[tokio::test]
    async fn sqlite_busy_is_transient_and_a_constraint_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}/t.db", dir.path().display()))
            .expect("url")
            .create_if_missing(true)
            .busy_timeout(std::time::Duration::ZERO);
        let mut holder = options.connect().await.expect("connect");
        sqlx::raw_sql("CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1); BEGIN IMMEDIATE")
            .execute(&mut holder)
            .await
            .expect("hold the write lock");

        let mut other = options.connect().await.expect("connect");
        let busy = StoreError::from(sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.expect_err("busy"));
        let constraint =
            StoreError::from(sqlx::query("INSERT INTO t VALUES (1)").execute(&mut holder).await.expect_err("unique"));
        assert_eq!((busy.is_transient(), constraint.is_transient()), (true, false), "{busy}; {constraint}");
    }
}
