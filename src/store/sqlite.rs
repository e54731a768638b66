//! The embedded store: one SQLite file in WAL mode.
//!
//! One connection writes, the others only read (they are opened read-only, so a write
//! cannot slip past the writer): writers queue in the process instead of meeting SQLite's
//! busy handler, which sleeps and retries while another connection holds the lock. The
//! write connection is not pooled: a pool pings a connection each time it is given back,
//! one more round trip to the connection's thread on every write, which the next writer
//! waits for.
//!
//! Each write says how durable it must be ([`Durability`]). What the daemon acknowledges
//! or hands out — a spooled message, an IMAP batch and its last UID, a job a recorder
//! claims or finishes, a reply being sent — is `synchronous = FULL`: committed means on
//! disk. What processing derives from a stored message (versions, decisions, job plans,
//! the message's own status) or from time alone (a replan, missed jobs expired) is
//! `NORMAL`: no fsync of its own. WAL frames are synced in order, so a power cut can only
//! drop the latest derived commits, never an older one while keeping a newer; a lost
//! commit of a message's processing leaves that message `received`, processed again on
//! restart, and a lost replan or expiry is redone by the next scheduler tick; and the next
//! FULL commit (the next spooled message, the next claim) syncs every derived commit
//! before it, so nothing derived is handed out before it is durable.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Database, QueryBuilder, SqlSafeStr, Sqlite};
use sqlx_core::transaction::TransactionManager;
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::jobs::{apply_job_changes, JobOps};
use super::{
    from_json, json, parse_ts, plan_kind, slot_text, slot_value, ts, AppliedChanges, Decide, DecisionColumns,
    DecisionRow, EventHistory, EventKey, Finished, HistoryEntry, JobRow, NewMessage, RecordedEvent, Replan, Source,
    Spooled, Store, StoreError, StoredMessage, StoredVersion,
};
use crate::eligibility::{Flag, Requester};
use crate::model::EventVersion;
use crate::schedule::{ActiveJob, FinishedJob, JobSpec};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    /// Reads; opened read-only.
    pub(super) pool: SqlitePool,
    /// The one connection that writes; writers wait their turn for it.
    writer: Arc<Mutex<SqliteConnection>>,
    /// The `synchronous` setting last made on the write connection ([`Durability::code`]),
    /// so that a write at the same level needs no `PRAGMA` round trip; 0 when unknown.
    writer_synchronous: AtomicU8,
}

/// The write connection, held by one writer.
pub(super) type WriteConn = OwnedMutexGuard<SqliteConnection>;

/// A write transaction (`BEGIN IMMEDIATE`) on the write connection. Dropped without
/// [`commit`](WriteTx::commit), it is rolled back before the connection runs anything else.
pub(super) struct WriteTx {
    conn: WriteConn,
    open: bool,
}

type Manager = <Sqlite as Database>::TransactionManager;

impl WriteTx {
    pub(super) async fn commit(mut self) -> Result<(), StoreError> {
        Manager::commit(&mut self.conn).await?;
        self.open = false;
        Ok(())
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if self.open {
            Manager::start_rollback(&mut self.conn);
        }
    }
}

impl Deref for WriteTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.conn
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }
}

/// How durable a write must be when its commit returns; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Durability {
    /// On disk before the commit returns (`synchronous = FULL`).
    Synced,
    /// Derived from stored messages and redone if lost (`synchronous = NORMAL`).
    Derived,
}

impl Durability {
    fn pragma(self) -> &'static str {
        match self {
            Durability::Synced => "PRAGMA synchronous = FULL",
            Durability::Derived => "PRAGMA synchronous = NORMAL",
        }
    }

    /// [`pragma`](Durability::pragma) and `BEGIN IMMEDIATE`, in one round trip.
    fn pragma_and_begin(self) -> &'static str {
        match self {
            Durability::Synced => "PRAGMA synchronous = FULL; BEGIN IMMEDIATE",
            Durability::Derived => "PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE",
        }
    }

    fn code(self) -> u8 {
        match self {
            Durability::Synced => 1,
            Durability::Derived => 2,
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed, with its folder) the database at `url` and migrates it.
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|_| StoreError::UnsupportedUrl(url.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        if is_in_memory(url) {
            // Each connection would get a database of its own.
            return Err(StoreError::UnsupportedUrl(format!("{url} (an in-memory SQLite database is not supported)")));
        }
        if let Some(dir) = options.get_filename().parent().filter(|d| !d.as_os_str().is_empty()) {
            create_dir(dir)?;
        }
        let mut writer = options.connect().await.map_err(StoreError::Unavailable)?;
        MIGRATOR.run(&mut writer).await?;
        let writer = Arc::new(Mutex::new(writer));
        // No ping before each read: a connection to a local file does not go stale.
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.create_if_missing(false).read_only(true))
            .await
            .map_err(StoreError::Unavailable)?;
        Ok(SqliteStore { pool, writer, writer_synchronous: AtomicU8::new(0) })
    }

    /// The write connection, set to `durability` for the statements run on it next.
    ///
    /// The setting is skipped when the last one made was the same; it is marked unknown
    /// while it is being changed, so a failed change is made again next time.
    pub(super) async fn write_conn(&self, durability: Durability) -> Result<WriteConn, StoreError> {
        let mut conn = self.writer.clone().lock_owned().await;
        if self.change_synchronous(durability) {
            sqlx::query(durability.pragma()).execute(&mut *conn).await?;
            self.writer_synchronous.store(durability.code(), Ordering::Release);
        }
        Ok(conn)
    }

    /// A write transaction that takes the write lock at once, so that reading the
    /// history and writing the outcome cannot interleave with another writer. A change of
    /// `synchronous` goes in the same round trip as the `BEGIN`.
    pub(super) async fn write_tx(&self, durability: Durability) -> Result<WriteTx, StoreError> {
        let mut conn = self.writer.clone().lock_owned().await;
        if self.change_synchronous(durability) {
            Manager::begin(&mut conn, Some(durability.pragma_and_begin().into_sql_str())).await?;
            self.writer_synchronous.store(durability.code(), Ordering::Release);
        } else {
            Manager::begin(&mut conn, Some("BEGIN IMMEDIATE".into_sql_str())).await?;
        }
        Ok(WriteTx { conn, open: true })
    }

    /// Whether the held write connection must be set to `durability`: not when the last
    /// setting made was the same. The mark stays unknown until the caller has made the
    /// change and marked it, so a failed change is made again next time. Only the holder of
    /// the write connection calls this: nobody else reads or sets the mark meanwhile.
    fn change_synchronous(&self, durability: Durability) -> bool {
        if self.writer_synchronous.load(Ordering::Acquire) == durability.code() {
            return false;
        }
        self.writer_synchronous.store(0, Ordering::Release);
        true
    }
}

/// `sqlite::memory:`, `sqlite://:memory:` and `mode=memory` URLs.
fn is_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// Inserts messages inside `tx`; a message whose bytes are already stored (committed, or
/// earlier in `messages`) gets that id. A few statements for the whole batch, not a few per
/// message: each statement is a round trip to the connection's thread.
pub(super) async fn insert_messages(tx: &mut WriteTx, messages: &[NewMessage]) -> Result<Vec<Spooled>, StoreError> {
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    // Within one statement a repeated sha256 conflicts with its first row: DO NOTHING.
    let mut insert = QueryBuilder::<Sqlite>::new(
        "INSERT INTO messages (sha256, received_at, source, envelope_from, envelope_rcpts, message_id, size) ",
    );
    insert.push_values(messages, |mut row, m| {
        row.push_bind(&m.sha256)
            .push_bind(ts(m.received_at))
            .push_bind(m.source.as_str())
            .push_bind(&m.envelope_from)
            .push_bind(json(&m.envelope_rcpts))
            .push_bind(&m.message_id)
            .push_bind(i64::try_from(m.raw.len()).unwrap_or(i64::MAX));
    });
    insert.push(" ON CONFLICT (sha256) DO NOTHING RETURNING id, sha256");
    let inserted: HashMap<String, i64> = insert
        .build_query_as::<(i64, String)>()
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .map(|(id, sha)| (sha, id))
        .collect();

    // The first message with each new sha256 brings the bytes.
    let mut bytes_from: HashMap<&str, &NewMessage> = HashMap::new();
    for m in messages {
        if inserted.contains_key(&m.sha256) {
            bytes_from.entry(m.sha256.as_str()).or_insert(m);
        }
    }
    if !bytes_from.is_empty() {
        let mut raw = QueryBuilder::<Sqlite>::new("INSERT INTO message_raw (message_id, raw) ");
        raw.push_values(&bytes_from, |mut row, (sha, m)| {
            row.push_bind(inserted.get(*sha).copied()).push_bind(&m.raw);
        });
        raw.build().execute(&mut **tx).await?;
    }

    // The others conflict with a committed message.
    let committed: Vec<&str> =
        messages.iter().map(|m| m.sha256.as_str()).filter(|sha| !inserted.contains_key(*sha)).collect();
    let existing: HashMap<String, i64> = if committed.is_empty() {
        HashMap::new()
    } else {
        sqlx::query_as::<_, (i64, String)>(
            "SELECT id, sha256 FROM messages WHERE sha256 IN (SELECT value FROM json_each(?))",
        )
        .bind(json(&committed))
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .map(|(id, sha)| (sha, id))
        .collect()
    };
    let mut first = std::collections::HashSet::new();
    messages
        .iter()
        .map(|m| match inserted.get(&m.sha256) {
            Some(&id) => Ok(Spooled { id, inserted: first.insert(m.sha256.as_str()) }),
            None => existing
                .get(&m.sha256)
                .map(|&id| Spooled { id, inserted: false })
                .ok_or_else(|| StoreError::Corrupt(format!("message {} neither inserted nor found", m.sha256))),
        })
        .collect()
}

fn create_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::Unavailable(sqlx::Error::Io(e)))
}

#[async_trait]
impl Store for SqliteStore {
    async fn spool_messages(&self, messages: &[NewMessage]) -> Result<Vec<Spooled>, StoreError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.write_tx(Durability::Synced).await?;
        let spooled = insert_messages(&mut tx, messages).await?;
        tx.commit().await?;
        Ok(spooled)
    }

    async fn load_message(&self, id: i64) -> Result<Option<StoredMessage>, StoreError> {
        Ok(self.load_messages(&[id]).await?.pop())
    }

    async fn load_messages(&self, ids: &[i64]) -> Result<Vec<StoredMessage>, StoreError> {
        type Row = (i64, Vec<u8>, String, String, String, String, Option<String>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT m.id, r.raw, m.envelope_rcpts, m.received_at, m.status, m.source, m.envelope_from
             FROM messages m JOIN message_raw r ON r.message_id = m.id
             WHERE m.id IN (SELECT value FROM json_each(?))",
        )
        .bind(json(&ids))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, raw, rcpts, received_at, status, source, envelope_from)| {
                Ok(StoredMessage {
                    id,
                    raw,
                    envelope_rcpts: from_json(&rcpts)?,
                    received_at: parse_ts(&received_at)?,
                    status,
                    source: Source::from_column(&source)?,
                    envelope_from,
                })
            })
            .collect()
    }

    async fn unfinished_messages(&self, include_failed: bool) -> Result<Vec<i64>, StoreError> {
        let sql = if include_failed {
            "SELECT id FROM messages WHERE status IN ('received', 'failed') ORDER BY id"
        } else {
            "SELECT id FROM messages WHERE status = 'received' ORDER BY id"
        };
        Ok(sqlx::query_scalar(sql).fetch_all(&self.pool).await?)
    }

    async fn finish_message(
        &self,
        id: i64,
        outcome: &serde_json::Value,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let finished = Finished { id, outcome: outcome.clone(), error: error.map(str::to_owned) };
        self.finish_messages(std::slice::from_ref(&finished), now).await
    }

    async fn finish_messages(&self, finished: &[Finished], now: DateTime<Utc>) -> Result<(), StoreError> {
        let rows: Vec<serde_json::Value> = finished
            .iter()
            .map(|f| {
                serde_json::json!({
                    "id": f.id,
                    "status": if f.error.is_some() { "failed" } else { "processed" },
                    "outcome": f.outcome.to_string(),
                    "error": f.error,
                })
            })
            .collect();
        let mut conn = self.write_conn(Durability::Derived).await?;
        sqlx::query(
            "UPDATE messages SET status = f.value ->> 'status', outcome = f.value ->> 'outcome',
                                 error = f.value ->> 'error', processed_at = ?
             FROM json_each(?) f WHERE messages.id = f.value ->> 'id'",
        )
        .bind(ts(now))
        .bind(json(&rows))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn record_event(
        &self,
        key: &EventKey,
        message_id: i64,
        version: &EventVersion,
        version_hash: &str,
        now: DateTime<Utc>,
        decide: &Decide<'_>,
    ) -> Result<RecordedEvent, StoreError> {
        let mut tx = self.write_tx(Durability::Derived).await?;
        let rid = slot_text(key.recurrence_id);
        // A new event's id comes back from the insert; a known one's takes a second query.
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO events (tenant, uid, recurrence_id, created_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (tenant, uid, recurrence_id) DO NOTHING RETURNING id",
        )
        .bind(&key.tenant)
        .bind(&key.uid)
        .bind(&rid)
        .bind(ts(now))
        .fetch_optional(&mut *tx)
        .await?;
        let event_id: i64 = match inserted {
            Some(id) => id,
            None => {
                sqlx::query_scalar("SELECT id FROM events WHERE tenant = ? AND uid = ? AND recurrence_id = ?")
                    .bind(&key.tenant)
                    .bind(&key.uid)
                    .bind(&rid)
                    .fetch_one(&mut *tx)
                    .await?
            }
        };

        let (version_id, version_is_new) =
            insert_version(&mut tx, event_id, message_id, version, version_hash, now).await?;
        sqlx::query("INSERT OR IGNORE INTO version_messages (version_id, message_id) VALUES (?, ?)")
            .bind(version_id)
            .bind(message_id)
            .execute(&mut *tx)
            .await?;

        let history = load_history(&mut tx, key).await?;
        let outcome = decide(&history);

        sqlx::query(
            "INSERT INTO decisions (event_id, arrived_version_id, version_id, message_id, requester, requester_authenticated,
                                    eligible, reasons, plan, decided_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(event_id)
        .bind(version_id)
        .bind(outcome.current_version_id)
        .bind(message_id)
        .bind(outcome.requester.as_ref().map(|r| r.email.clone()))
        .bind(outcome.requester.as_ref().is_some_and(|r| r.authenticated))
        .bind(outcome.decision.eligible)
        .bind(json(&outcome.decision.reasons))
        .bind(outcome.decision.plan.as_ref().map(json))
        .bind(ts(now))
        .execute(&mut *tx)
        .await?;

        let created = apply_job_changes(&mut SqliteJobs(&mut tx), key, &outcome.job_changes, now).await?;
        let reply = match &outcome.reply {
            Some(draft) => Some(
                super::replies::enqueue(
                    &mut super::sqlite_replies::SqliteReplies(&mut tx),
                    key,
                    message_id,
                    draft,
                    now,
                )
                .await?,
            ),
            None => None,
        };
        tx.commit().await?;
        Ok(RecordedEvent { event_id, version_id, version_is_new, outcome, created, reply })
    }

    async fn uids_to_replan(&self, now: DateTime<Utc>) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT DISTINCT e.tenant, e.uid FROM events e JOIN event_versions v ON v.event_id = e.id
             WHERE (v.end_at > ? OR json_extract(v.data, '$.rrule') IS NOT NULL)
               AND EXISTS (SELECT 1 FROM decisions d WHERE d.event_id = e.id AND d.requester IS NOT NULL)
             ORDER BY e.tenant, e.uid",
        )
        .bind(ts(now))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn replan(
        &self,
        tenant: &str,
        uid: &str,
        now: DateTime<Utc>,
        plan: &Replan<'_>,
    ) -> Result<AppliedChanges, StoreError> {
        let mut tx = self.write_tx(Durability::Derived).await?;
        let key = EventKey { tenant: tenant.to_string(), uid: uid.to_string(), recurrence_id: None };
        let history = load_history(&mut tx, &key).await?;
        let changes = plan(&history);
        let created = apply_job_changes(&mut SqliteJobs(&mut tx), &key, &changes, now).await?;
        tx.commit().await?;
        Ok(AppliedChanges { changes, created })
    }

    async fn jobs(&self, all: bool) -> Result<Vec<JobRow>, StoreError> {
        let sql = if all {
            "SELECT id, tenant, event_uid, occurrence_start, kind, run_at, state, provider, meeting_url, flags, requesters
             FROM jobs ORDER BY run_at, id"
        } else {
            "SELECT id, tenant, event_uid, occurrence_start, kind, run_at, state, provider, meeting_url, flags, requesters
             FROM jobs WHERE state IN ('scheduled', 'claimed') ORDER BY run_at, id"
        };
        type Row = (i64, String, String, String, String, String, String, String, String, String, String);
        let rows: Vec<Row> = sqlx::query_as(sql).fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(|(id, tenant, event_uid, occ, kind, run_at, state, provider, meeting_url, flags, requesters)| {
                Ok(JobRow {
                    id,
                    tenant,
                    event_uid,
                    occurrence_start: parse_ts(&occ)?,
                    kind,
                    run_at: parse_ts(&run_at)?,
                    state,
                    provider,
                    meeting_url,
                    flags: from_json(&flags)?,
                    requesters: from_json(&requesters)?,
                })
            })
            .collect()
    }

    async fn history(&self, uid: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        let versions: Vec<(i64, String, String, String)> = sqlx::query_as(
            "SELECT v.id, e.tenant, v.received_at, v.data FROM event_versions v JOIN events e ON e.id = v.event_id
             WHERE e.uid = ? ORDER BY v.id",
        )
        .bind(uid)
        .fetch_all(&self.pool)
        .await?;
        let mut entries = Vec::with_capacity(versions.len());
        for (version_id, tenant, received_at, data) in versions {
            let message_ids: Vec<i64> =
                sqlx::query_scalar("SELECT message_id FROM version_messages WHERE version_id = ? ORDER BY message_id")
                    .bind(version_id)
                    .fetch_all(&self.pool)
                    .await?;
            // The decisions taken when a message carrying this version arrived.
            let rows: Vec<(i64, String, Option<String>, bool, bool, String, Option<String>, Option<i64>)> = sqlx::query_as(
                "SELECT message_id, decided_at, requester, requester_authenticated, eligible, reasons, plan, version_id
                 FROM decisions WHERE arrived_version_id = ? ORDER BY id",
            )
            .bind(version_id)
            .fetch_all(&self.pool)
            .await?;
            let decisions = rows
                .into_iter()
                .map(|(message_id, decided_at, requester, authenticated, eligible, reasons, plan, current)| {
                    DecisionRow::from_columns(DecisionColumns {
                        message_id,
                        decided_at: parse_ts(&decided_at)?,
                        requester,
                        authenticated,
                        eligible,
                        reasons,
                        plan,
                        current_version_id: current,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            entries.push(HistoryEntry {
                tenant,
                version_id,
                received_at: parse_ts(&received_at)?,
                message_ids,
                current: false,
                version: from_json(&data)?,
                decisions,
            });
        }
        super::mark_current(&mut entries);
        Ok(entries)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// Inserts the version unless the identical one is stored; returns its id and whether it is new.
async fn insert_version(
    tx: &mut WriteTx,
    event_id: i64,
    message_id: i64,
    v: &EventVersion,
    hash: &str,
    now: DateTime<Utc>,
) -> Result<(i64, bool), StoreError> {
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO event_versions (event_id, version_hash, message_id, method, sequence, dtstamp, status, start_at, end_at, data, received_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (event_id, version_hash) DO NOTHING RETURNING id",
    )
    .bind(event_id)
    .bind(hash)
    .bind(message_id)
    .bind(&v.method)
    .bind(v.sequence)
    .bind(v.dtstamp.map(ts))
    .bind(&v.status)
    .bind(v.start.map(ts))
    .bind(v.end.map(ts))
    .bind(json(v))
    .bind(ts(now))
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(id) = inserted {
        return Ok((id, true));
    }
    let id = sqlx::query_scalar("SELECT id FROM event_versions WHERE event_id = ? AND version_hash = ?")
        .bind(event_id)
        .bind(hash)
        .fetch_one(&mut **tx)
        .await?;
    Ok((id, false))
}

/// Everything about the (tenant, UID) of `key`: all its RECURRENCE-IDs, requesters and jobs.
/// One statement, each list a JSON array: every statement is a round trip to the
/// connection's thread, and this runs for every processed invite.
async fn load_history(tx: &mut WriteTx, key: &EventKey) -> Result<EventHistory, StoreError> {
    let (versions, requesters, jobs, declined, finished): (String, String, String, String, String) = sqlx::query_as(
        "SELECT
           (SELECT json_group_array(json_array(v.id, v.data, v.received_at) ORDER BY v.id)
              FROM event_versions v JOIN events e ON e.id = v.event_id WHERE e.tenant = ?1 AND e.uid = ?2),
           (SELECT json_group_array(json_array(requester, authenticated) ORDER BY first)
              FROM (SELECT d.requester, MAX(d.requester_authenticated) AS authenticated, MIN(d.id) AS first
                      FROM decisions d JOIN events e ON e.id = d.event_id
                     WHERE e.tenant = ?1 AND e.uid = ?2 AND d.requester IS NOT NULL GROUP BY d.requester)),
           (SELECT json_group_array(json_array(j.id, l.slot, j.kind, j.occurrence_start, j.occurrence_end, j.run_at,
                                               j.meeting_url, j.flags, l.requesters, j.state) ORDER BY j.id)
              FROM job_links l JOIN jobs j ON j.id = l.job_id
             WHERE l.tenant = ?1 AND l.event_uid = ?2 AND j.state IN ('scheduled', 'claimed')),
           (SELECT json_group_array(slot) FROM consent_declines WHERE tenant = ?1 AND event_uid = ?2),
           (SELECT json_group_array(json_array(l.slot, j.kind, j.occurrence_start, j.meeting_url))
              FROM job_links l JOIN jobs j ON j.id = l.job_id
             WHERE l.tenant = ?1 AND l.event_uid = ?2 AND j.state IN ('done', 'failed'))",
    )
    .bind(&key.tenant)
    .bind(&key.uid)
    .fetch_one(&mut **tx)
    .await?;
    let versions = from_json::<Vec<(i64, String, String)>>(&versions)?
        .into_iter()
        .map(|(id, data, received_at)| {
            Ok(StoredVersion { id, version: from_json(&data)?, received_at: parse_ts(&received_at)? })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let requesters: Vec<(String, i64)> = from_json(&requesters)?;
    type ActiveRow = (i64, String, String, String, String, String, String, String, String, String);
    // The UID's view of its jobs: its own slot and requesters, from its links.
    let jobs: Vec<ActiveRow> = from_json(&jobs)?;
    let active_jobs = jobs
        .into_iter()
        .map(|(id, slot, kind, occ, occ_end, run_at, meeting_url, flags, requesters, state)| {
            Ok(ActiveJob {
                id,
                slot: slot_value(&slot)?,
                kind: plan_kind(&kind)?,
                occurrence_start: parse_ts(&occ)?,
                occurrence_end: parse_ts(&occ_end)?,
                run_at: parse_ts(&run_at)?,
                meeting_url,
                flags: from_json::<Vec<Flag>>(&flags)?,
                requesters: from_json(&requesters)?,
                claimed: state == "claimed",
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let declined: Vec<String> = from_json(&declined)?;
    let finished: Vec<(String, String, String, String)> = from_json(&finished)?;
    let finished_jobs = finished
        .into_iter()
        .map(|(slot, kind, occurrence_start, meeting_url)| {
            Ok(FinishedJob {
                slot: slot_value(&slot)?,
                kind: plan_kind(&kind)?,
                occurrence_start: parse_ts(&occurrence_start)?,
                meeting_url,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(EventHistory {
        versions,
        past_requesters: requesters
            .into_iter()
            .map(|(email, authenticated)| Requester { email, authenticated: authenticated != 0 })
            .collect(),
        active_jobs,
        declined_slots: declined.iter().map(|s| slot_value(s)).collect::<Result<_, _>>()?,
        finished_jobs,
    })
}

/// The job statements for SQLite, inside a write transaction.
struct SqliteJobs<'t>(&'t mut WriteTx);

#[async_trait]
impl JobOps for SqliteJobs<'_> {
    async fn clear_stale_link(&mut self, key: &EventKey, spec: &JobSpec) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM job_links WHERE tenant = ? AND event_uid = ? AND slot = ? AND kind = ?
               AND job_id NOT IN (SELECT id FROM jobs WHERE state IN ('scheduled', 'claimed'))",
        )
        .bind(&key.tenant)
        .bind(&key.uid)
        .bind(slot_text(spec.slot))
        .bind(spec.kind.as_str())
        .execute(&mut **self.0)
        .await?;
        Ok(())
    }

    async fn target_job(
        &mut self,
        key: &EventKey,
        spec: &JobSpec,
        except: Option<i64>,
    ) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM jobs WHERE tenant = ? AND meeting_url = ? AND occurrence_start = ? AND kind = ?
               AND state IN ('scheduled', 'claimed') AND id <> ? ORDER BY id LIMIT 1",
        )
        .bind(&key.tenant)
        .bind(&spec.meeting_url)
        .bind(ts(spec.occurrence_start))
        .bind(spec.kind.as_str())
        .bind(except.unwrap_or(-1))
        .fetch_optional(&mut **self.0)
        .await?)
    }

    async fn insert_job(&mut self, key: &EventKey, spec: &JobSpec, now: DateTime<Utc>) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO jobs (tenant, event_uid, slot, occurrence_start, occurrence_end, kind, run_at, state,
                               provider, meeting_url, flags, requesters, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, 'scheduled', ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&key.tenant)
        .bind(&key.uid)
        .bind(slot_text(spec.slot))
        .bind(ts(spec.occurrence_start))
        .bind(ts(spec.occurrence_end))
        .bind(spec.kind.as_str())
        .bind(ts(spec.run_at))
        .bind(&spec.provider)
        .bind(&spec.meeting_url)
        .bind(json(&spec.flags))
        .bind(json(&spec.requesters))
        .bind(ts(now))
        .bind(ts(now))
        .fetch_one(&mut **self.0)
        .await?)
    }

    async fn insert_link(&mut self, job_id: i64, key: &EventKey, spec: &JobSpec) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO job_links (job_id, tenant, event_uid, slot, kind, requesters) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(job_id)
        .bind(&key.tenant)
        .bind(&key.uid)
        .bind(slot_text(spec.slot))
        .bind(spec.kind.as_str())
        .bind(json(&spec.requesters))
        .execute(&mut **self.0)
        .await?;
        Ok(())
    }

    async fn other_links(&mut self, job_id: i64, key: &EventKey) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM job_links WHERE job_id = ? AND NOT (tenant = ? AND event_uid = ?)")
            .bind(job_id)
            .bind(&key.tenant)
            .bind(&key.uid)
            .fetch_one(&mut **self.0)
            .await?)
    }

    async fn update_job(&mut self, job_id: i64, spec: &JobSpec, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE jobs SET occurrence_start = ?, occurrence_end = ?, run_at = ?, provider = ?,
                             meeting_url = ?, flags = ?, updated_at = ? WHERE id = ? AND state = 'scheduled'",
        )
        .bind(ts(spec.occurrence_start))
        .bind(ts(spec.occurrence_end))
        .bind(ts(spec.run_at))
        .bind(&spec.provider)
        .bind(&spec.meeting_url)
        .bind(json(&spec.flags))
        .bind(ts(now))
        .bind(job_id)
        .execute(&mut **self.0)
        .await?;
        Ok(())
    }

    async fn update_link(&mut self, job_id: i64, key: &EventKey, spec: &JobSpec) -> Result<(), StoreError> {
        sqlx::query("UPDATE job_links SET slot = ?, requesters = ? WHERE job_id = ? AND tenant = ? AND event_uid = ?")
            .bind(slot_text(spec.slot))
            .bind(json(&spec.requesters))
            .bind(job_id)
            .bind(&key.tenant)
            .bind(&key.uid)
            .execute(&mut **self.0)
            .await?;
        Ok(())
    }

    async fn delete_link(&mut self, job_id: i64, key: &EventKey) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM job_links WHERE job_id = ? AND tenant = ? AND event_uid = ?")
            .bind(job_id)
            .bind(&key.tenant)
            .bind(&key.uid)
            .execute(&mut **self.0)
            .await?;
        Ok(())
    }

    async fn cancel_job(&mut self, job_id: i64, now: DateTime<Utc>) -> Result<(), StoreError> {
        // Only a job still to run: one a recorder finished stays as it ended.
        sqlx::query(
            "UPDATE jobs SET state = 'cancelled', updated_at = ? WHERE id = ? AND state IN ('scheduled', 'claimed')",
        )
        .bind(ts(now))
        .bind(job_id)
        .execute(&mut **self.0)
        .await?;
        Ok(())
    }

    async fn link_requesters(&mut self, job_id: i64) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT requesters FROM job_links WHERE job_id = ? ORDER BY id")
            .bind(job_id)
            .fetch_all(&mut **self.0)
            .await?)
    }

    async fn set_job_requesters(
        &mut self,
        job_id: i64,
        requesters: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE jobs SET requesters = ?, updated_at = ? WHERE id = ?")
            .bind(requesters)
            .bind(ts(now))
            .bind(job_id)
            .execute(&mut **self.0)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `PRAGMA synchronous` on the write connection taken for `durability`, alone (`tx`
    /// false) or as a transaction: 1 is NORMAL, 2 is FULL.
    async fn synchronous(store: &SqliteStore, durability: Durability, tx: bool) -> i64 {
        let query = sqlx::query_scalar("PRAGMA synchronous");
        if tx {
            let mut tx = store.write_tx(durability).await.expect("begin");
            let level = query.fetch_one(&mut *tx).await.expect("pragma");
            tx.commit().await.expect("commit");
            level
        } else {
            let mut conn = store.write_conn(durability).await.expect("write connection");
            query.fetch_one(&mut *conn).await.expect("pragma")
        }
    }

    #[tokio::test]
    async fn each_write_runs_at_its_durability_whatever_ran_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&format!("sqlite://{}/t.db", dir.path().display())).await.expect("open");
        let order = [
            Durability::Derived,
            Durability::Derived,
            Durability::Synced,
            Durability::Synced,
            Durability::Derived,
            Durability::Synced,
        ];
        // Each order, once through transactions and once through the plain connection,
        // then alternating between the two.
        for (i, durability) in order.iter().chain(&order).chain(&order).enumerate() {
            let tx = if i < order.len() * 2 { i < order.len() } else { i % 2 == 0 };
            let want = if *durability == Durability::Synced { 2 } else { 1 };
            assert_eq!(synchronous(&store, *durability, tx).await, want, "{durability:?}, transaction: {tx}");
        }
    }

    #[tokio::test]
    async fn a_write_transaction_dropped_without_commit_is_rolled_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&format!("sqlite://{}/t.db", dir.path().display())).await.expect("open");
        let message = |sha: &str| NewMessage {
            sha256: sha.into(),
            raw: b"Subject: x\r\n\r\nbody\r\n".to_vec(),
            source: Source::Smtp,
            envelope_from: None,
            envelope_rcpts: vec![],
            message_id: None,
            received_at: Utc::now(),
        };
        {
            let mut tx = store.write_tx(Durability::Synced).await.expect("begin");
            insert_messages(&mut tx, &[message("dropped")]).await.expect("insert");
        }
        // The next writer finds no transaction left open, and nothing of the dropped one.
        let kept = store.spool_messages(&[message("kept")]).await.expect("spool after a dropped transaction");
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM messages").fetch_one(&store.pool).await.expect("count");
        assert_eq!((kept.len(), count), (1, 1));
    }

    #[tokio::test]
    async fn in_memory_databases_are_refused() {
        for url in ["sqlite::memory:", "sqlite://:memory:", "sqlite://file.db?mode=memory"] {
            let refused = SqliteStore::open(url).await.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(refused.contains("in-memory"), "{url}: {refused}");
        }
    }
}
