//! The embedded store: one SQLite file in WAL mode.
//!
//! One connection writes, the others only read (they are opened read-only, so a write
//! cannot slip past the writer): writers queue in the process instead of meeting SQLite's
//! busy handler, which sleeps and retries while another connection holds the lock. The
//! write connection is not pooled: a pool pings a connection each time it is given back,
//! one more round trip to the connection's thread on every write, which the next writer
//! waits for. Recording an event, a dozen statements, makes one such hand-over instead of
//! a dozen: it runs them on the caller's thread, on the same SQLite handle ([`Writer`]).
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
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::config::DbConfig;
use rusqlite::{params, OptionalExtension};
use sqlx::sqlite::{
    LockedSqliteHandle, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
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
    writer: Arc<Mutex<Writer>>,
    /// The `synchronous` setting last made on the write connection ([`Durability::code`]),
    /// so that a write at the same level needs no `PRAGMA` round trip; 0 when unknown.
    writer_synchronous: AtomicU8,
}

/// How long a statement waits for a lock another process holds on the file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The write connection, seen two ways. sqlx runs each statement on a thread of its own,
/// and every statement is a hand-over to that thread and back: tens of microseconds on a
/// busy machine, more than most statements take. Recording an event runs a dozen, so it
/// runs them on the caller's thread instead, through rusqlite on the same SQLite handle,
/// while sqlx's thread is locked out of it ([`DirectTx`]); everything else goes through sqlx.
pub(super) struct Writer {
    /// Used only while sqlx's thread is locked out. Declared first to be dropped first: its
    /// cached statements are finalized before sqlx closes the handle.
    direct: rusqlite::Connection,
    sqlx: SqliteConnection,
    /// The handle's `wal_autocheckpoint`, which a [`DirectTx`] commit lifts for itself.
    wal_autocheckpoint: i64,
    /// A [`DirectTx`] could not be rolled back and left its transaction open on the handle:
    /// the next writer rolls it back first ([`SqliteStore::close_left_open`]).
    left_open: bool,
}

impl Writer {
    async fn new(mut sqlx: SqliteConnection) -> Result<Writer, StoreError> {
        let mut handle = sqlx.lock_handle().await?;
        // SAFETY: the handle stays open as long as `sqlx` (dropped after `direct`), a
        // connection made by `from_handle` never closes it, and `direct` runs statements
        // only while sqlx's thread is held off the handle: here, and inside a `DirectTx`.
        // Dropping it finalizes its cached statements without that, which the serialized
        // handle (see `open`) keeps from running inside a call of sqlx's thread.
        let direct = unsafe { rusqlite::Connection::from_handle(handle.as_raw_handle().as_ptr()) }?;
        // Every statement of a record stays prepared between calls...
        direct.set_prepared_statement_cache_capacity(32);
        // ...and is not prepared again because other values were bound to it. SQLite may
        // re-plan a statement for the values bound (LIKE patterns, partial indexes, STAT4
        // samples: none of which these statements use), and on this handle it prepared
        // `load_history`'s again on every call. The query planner stability guarantee
        // keeps the first plan.
        direct.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        let wal_autocheckpoint = direct.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))?;
        drop(handle);
        Ok(Writer { direct, sqlx, wal_autocheckpoint, left_open: false })
    }
}

/// The write connection, held by one writer; it runs sqlx statements.
pub(super) struct WriteConn(OwnedMutexGuard<Writer>);

impl Deref for WriteConn {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.0.sqlx
    }
}

impl DerefMut for WriteConn {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.0.sqlx
    }
}

/// A write transaction (`BEGIN IMMEDIATE`) run on the caller's thread, straight on the
/// write connection's SQLite handle; sqlx's thread is kept off the handle until it is
/// dropped. Dropped without [`commit`](DirectTx::commit), it is rolled back.
pub(super) struct DirectTx<'w> {
    conn: &'w mut rusqlite::Connection,
    open: bool,
    wal_autocheckpoint: i64,
    left_open: &'w mut bool,
    /// Dropped after the rollback in `drop`.
    _handle: LockedSqliteHandle<'w>,
}

impl DirectTx<'_> {
    pub(super) fn conn(&mut self) -> &mut rusqlite::Connection {
        self.conn
    }

    /// Commits without checkpointing: a commit that takes the WAL past its checkpoint mark
    /// would copy it into the database file and sync both right here, on a runtime thread.
    /// The next commit through sqlx (every processing batch ends with one) does it on
    /// sqlx's thread instead.
    pub(super) fn commit(mut self) -> Result<(), StoreError> {
        self.conn.execute_batch("PRAGMA wal_autocheckpoint = 0")?;
        let committed = self.conn.execute_batch("COMMIT");
        self.open = committed.is_err();
        let restore = format!("PRAGMA wal_autocheckpoint = {}", self.wal_autocheckpoint);
        if let Err(e) = self.conn.execute_batch(&restore) {
            // The commit stands, but the WAL is not checkpointed on its own any more.
            tracing::warn!(error = %e, "wal_autocheckpoint not restored after a direct commit");
        }
        Ok(committed?)
    }
}

impl Drop for DirectTx<'_> {
    fn drop(&mut self) {
        if self.open {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                // Left open, the transaction would take in the next writer's statements
                // and keep the file locked.
                *self.left_open = !self.conn.is_autocommit();
                tracing::error!(error = %e, left_open = *self.left_open, "rollback of a dropped write transaction failed");
            }
        }
    }
}

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
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        if is_in_memory(url) {
            // Each connection would get a database of its own.
            return Err(StoreError::UnsupportedUrl(format!("{url} (an in-memory SQLite database is not supported)")));
        }
        if let Some(dir) = options.get_filename().parent().filter(|d| !d.as_os_str().is_empty()) {
            create_dir(dir)?;
        }
        // Serialized (SQLite's own mutex around each call on the handle): the rusqlite side
        // of the write connection finalizes its statements when it is dropped, and sqlx's
        // thread may then still be running a statement that a cancelled writer left.
        let mut writer =
            options.clone().serialized(true).connect().await.map_err(|e| StoreError::Unavailable(e.into()))?;
        MIGRATOR.run(&mut writer).await?;
        let writer = Arc::new(Mutex::new(Writer::new(writer).await?));
        // No ping before each read: a connection to a local file does not go stale.
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.create_if_missing(false).read_only(true))
            .await
            .map_err(|e| StoreError::Unavailable(e.into()))?;
        Ok(SqliteStore { pool, writer, writer_synchronous: AtomicU8::new(0) })
    }

    /// The write connection, set to `durability` for the statements run on it next.
    ///
    /// The setting is skipped when the last one made was the same; it is marked unknown
    /// while it is being changed, so a failed change is made again next time.
    pub(super) async fn write_conn(&self, durability: Durability) -> Result<WriteConn, StoreError> {
        let mut conn = WriteConn(self.writer.clone().lock_owned().await);
        Self::close_left_open(&mut conn.0).await?;
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
        let mut conn = WriteConn(self.writer.clone().lock_owned().await);
        Self::close_left_open(&mut conn.0).await?;
        if self.change_synchronous(durability) {
            Manager::begin(&mut conn, Some(durability.pragma_and_begin().into_sql_str())).await?;
            self.writer_synchronous.store(durability.code(), Ordering::Release);
        } else {
            Manager::begin(&mut conn, Some("BEGIN IMMEDIATE".into_sql_str())).await?;
        }
        Ok(WriteTx { conn, open: true })
    }

    /// A [`DirectTx`] on `writer` (the write connection, locked by the caller).
    ///
    /// `BEGIN IMMEDIATE` is the one statement of such a transaction that can wait: for
    /// another process writing the same file (`invited reprocess` beside the daemon).
    /// SQLite's busy handler would wait by sleeping this thread, one of the runtime's, so
    /// the `BEGIN` is tried without it and tried again after an async pause, with backoff
    /// as SQLite's own, for as long as the busy handler would have waited.
    pub(super) async fn direct_tx<'w>(
        &self,
        writer: &'w mut Writer,
        durability: Durability,
    ) -> Result<DirectTx<'w>, StoreError> {
        Self::close_left_open(writer).await?;
        let Writer { direct, sqlx, wal_autocheckpoint, left_open } = writer;
        let change = self.change_synchronous(durability);
        let begin = if change { durability.pragma_and_begin() } else { "BEGIN IMMEDIATE" };
        let handle = sqlx.lock_handle().await?;
        let deadline = Instant::now() + BUSY_TIMEOUT;
        let mut pause = Duration::from_millis(1);
        loop {
            match begin_without_waiting(direct, begin) {
                Ok(()) => break,
                Err(rusqlite::Error::SqliteFailure(f, _))
                    if f.code == rusqlite::ErrorCode::DatabaseBusy && Instant::now() < deadline =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(e.into()),
            }
        }
        if change {
            self.writer_synchronous.store(durability.code(), Ordering::Release);
        }
        Ok(DirectTx { conn: direct, open: true, wal_autocheckpoint: *wal_autocheckpoint, left_open, _handle: handle })
    }

    /// Rolls back the transaction a [`DirectTx`] left open on the write connection, if one
    /// did, before a writer uses it; the writer fails (as the store being unavailable)
    /// while that fails.
    async fn close_left_open(writer: &mut Writer) -> Result<(), StoreError> {
        if writer.left_open {
            sqlx::raw_sql("ROLLBACK").execute(&mut writer.sqlx).await.map_err(|e| StoreError::Unavailable(e.into()))?;
            writer.left_open = false;
            tracing::warn!("a write transaction left open was rolled back");
        }
        Ok(())
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

/// Runs `begin` (ending in `BEGIN IMMEDIATE`) with SQLite's busy handler off: the file
/// being busy is an error at once.
fn begin_without_waiting(conn: &rusqlite::Connection, begin: &str) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::ZERO)?;
    let begun = conn.execute_batch(begin);
    match conn.busy_timeout(BUSY_TIMEOUT) {
        Ok(()) => begun,
        Err(e) => {
            if begun.is_ok() {
                conn.execute_batch("ROLLBACK")?;
            }
            Err(e)
        }
    }
}

/// Inserts messages inside `tx`; a message whose bytes are already stored (committed, or
/// earlier in `messages`) gets that id. A few statements for the whole batch, not a few per
/// message: each statement is a round trip to sqlx's connection thread.
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
    std::fs::create_dir_all(dir).map_err(|e| StoreError::Unavailable(sqlx::Error::Io(e).into()))
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
        let mut writer = self.writer.lock().await;
        let mut tx = self.direct_tx(&mut writer, Durability::Derived).await?;
        let conn = tx.conn();
        let rid = slot_text(key.recurrence_id);
        // A new event's id comes back from the insert; a known one's takes a second query.
        let inserted: Option<i64> = conn
            .prepare_cached(
                "INSERT INTO events (tenant, uid, recurrence_id, created_at) VALUES (?, ?, ?, ?)
                 ON CONFLICT (tenant, uid, recurrence_id) DO NOTHING RETURNING id",
            )?
            .query_row(params![key.tenant, key.uid, rid, ts(now)], |r| r.get(0))
            .optional()?;
        let event_id: i64 = match inserted {
            Some(id) => id,
            None => conn
                .prepare_cached("SELECT id FROM events WHERE tenant = ? AND uid = ? AND recurrence_id = ?")?
                .query_row(params![key.tenant, key.uid, rid], |r| r.get(0))?,
        };

        let (version_id, version_is_new) = insert_version(conn, event_id, message_id, version, version_hash, now)?;
        conn.prepare_cached("INSERT OR IGNORE INTO version_messages (version_id, message_id) VALUES (?, ?)")?
            .execute(params![version_id, message_id])?;

        let history = load_history(conn, key)?;
        let outcome = decide(&history);

        conn.prepare_cached(
            "INSERT INTO decisions (event_id, arrived_version_id, version_id, message_id, requester, requester_authenticated,
                                    eligible, reasons, plan, decided_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )?
        .execute(params![
            event_id,
            version_id,
            outcome.current_version_id,
            message_id,
            outcome.requester.as_ref().map(|r| r.email.as_str()),
            outcome.requester.as_ref().is_some_and(|r| r.authenticated),
            outcome.decision.eligible,
            json(&outcome.decision.reasons),
            outcome.decision.plan.as_ref().map(json),
            ts(now),
        ])?;

        let created = apply_job_changes(&mut SqliteJobs(tx.conn()), key, &outcome.job_changes, now).await?;
        let reply = match &outcome.reply {
            Some(draft) => Some(
                super::replies::enqueue(
                    &mut super::sqlite_replies::SqliteReplies(tx.conn()),
                    key,
                    message_id,
                    draft,
                    now,
                )
                .await?,
            ),
            None => None,
        };
        tx.commit()?;
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
        let mut writer = self.writer.lock().await;
        let mut tx = self.direct_tx(&mut writer, Durability::Derived).await?;
        let key = EventKey { tenant: tenant.to_string(), uid: uid.to_string(), recurrence_id: None };
        let history = load_history(tx.conn(), &key)?;
        let changes = plan(&history);
        let created = apply_job_changes(&mut SqliteJobs(tx.conn()), &key, &changes, now).await?;
        tx.commit()?;
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
fn insert_version(
    conn: &rusqlite::Connection,
    event_id: i64,
    message_id: i64,
    v: &EventVersion,
    hash: &str,
    now: DateTime<Utc>,
) -> Result<(i64, bool), StoreError> {
    let inserted: Option<i64> = conn
        .prepare_cached(
            "INSERT INTO event_versions (event_id, version_hash, message_id, method, sequence, dtstamp, status, start_at, end_at, data, received_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (event_id, version_hash) DO NOTHING RETURNING id",
        )?
        .query_row(
            params![
                event_id,
                hash,
                message_id,
                v.method,
                v.sequence,
                v.dtstamp.map(ts),
                v.status,
                v.start.map(ts),
                v.end.map(ts),
                json(v),
                ts(now),
            ],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(id) = inserted {
        return Ok((id, true));
    }
    let id = conn
        .prepare_cached("SELECT id FROM event_versions WHERE event_id = ? AND version_hash = ?")?
        .query_row(params![event_id, hash], |r| r.get(0))?;
    Ok((id, false))
}

/// The statement of [`load_history`]: one statement, each list a JSON array.
const LOAD_HISTORY: &str = "SELECT
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
             WHERE l.tenant = ?1 AND l.event_uid = ?2 AND j.state IN ('done', 'failed'))";

/// Everything about the (tenant, UID) of `key`: all its RECURRENCE-IDs, requesters and jobs.
fn load_history(conn: &rusqlite::Connection, key: &EventKey) -> Result<EventHistory, StoreError> {
    let (versions, requesters, jobs, declined, finished): (String, String, String, String, String) = conn
        .prepare_cached(LOAD_HISTORY)?
        .query_row(params![key.tenant, key.uid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?;
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

/// The job statements for SQLite, inside a [`DirectTx`]. Each runs to its end before it
/// returns: the futures never wait.
struct SqliteJobs<'t>(&'t mut rusqlite::Connection);

#[async_trait]
impl JobOps for SqliteJobs<'_> {
    async fn clear_stale_link(&mut self, key: &EventKey, spec: &JobSpec) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "DELETE FROM job_links WHERE tenant = ? AND event_uid = ? AND slot = ? AND kind = ?
                   AND job_id NOT IN (SELECT id FROM jobs WHERE state IN ('scheduled', 'claimed'))",
            )?
            .execute(params![key.tenant, key.uid, slot_text(spec.slot), spec.kind.as_str()])?;
        Ok(())
    }

    async fn target_job(
        &mut self,
        key: &EventKey,
        spec: &JobSpec,
        except: Option<i64>,
    ) -> Result<Option<i64>, StoreError> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT id FROM jobs WHERE tenant = ? AND meeting_url = ? AND occurrence_start = ? AND kind = ?
                   AND state IN ('scheduled', 'claimed') AND id <> ? ORDER BY id LIMIT 1",
            )?
            .query_row(
                params![
                    key.tenant,
                    spec.meeting_url,
                    ts(spec.occurrence_start),
                    spec.kind.as_str(),
                    except.unwrap_or(-1)
                ],
                |r| r.get(0),
            )
            .optional()?)
    }

    async fn insert_job(&mut self, key: &EventKey, spec: &JobSpec, now: DateTime<Utc>) -> Result<i64, StoreError> {
        Ok(self
            .0
            .prepare_cached(
                "INSERT INTO jobs (tenant, event_uid, slot, occurrence_start, occurrence_end, kind, run_at, state,
                                   provider, meeting_url, flags, requesters, created_at, updated_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, 'scheduled', ?, ?, ?, ?, ?, ?) RETURNING id",
            )?
            .query_row(
                params![
                    key.tenant,
                    key.uid,
                    slot_text(spec.slot),
                    ts(spec.occurrence_start),
                    ts(spec.occurrence_end),
                    spec.kind.as_str(),
                    ts(spec.run_at),
                    spec.provider,
                    spec.meeting_url,
                    json(&spec.flags),
                    json(&spec.requesters),
                    ts(now),
                    ts(now),
                ],
                |r| r.get(0),
            )?)
    }

    async fn insert_link(&mut self, job_id: i64, key: &EventKey, spec: &JobSpec) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "INSERT INTO job_links (job_id, tenant, event_uid, slot, kind, requesters) VALUES (?, ?, ?, ?, ?, ?)",
            )?
            .execute(params![
                job_id,
                key.tenant,
                key.uid,
                slot_text(spec.slot),
                spec.kind.as_str(),
                json(&spec.requesters)
            ])?;
        Ok(())
    }

    async fn other_links(&mut self, job_id: i64, key: &EventKey) -> Result<i64, StoreError> {
        Ok(self
            .0
            .prepare_cached("SELECT COUNT(*) FROM job_links WHERE job_id = ? AND NOT (tenant = ? AND event_uid = ?)")?
            .query_row(params![job_id, key.tenant, key.uid], |r| r.get(0))?)
    }

    async fn update_job(&mut self, job_id: i64, spec: &JobSpec, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "UPDATE jobs SET occurrence_start = ?, occurrence_end = ?, run_at = ?, provider = ?,
                                 meeting_url = ?, flags = ?, updated_at = ? WHERE id = ? AND state = 'scheduled'",
            )?
            .execute(params![
                ts(spec.occurrence_start),
                ts(spec.occurrence_end),
                ts(spec.run_at),
                spec.provider,
                spec.meeting_url,
                json(&spec.flags),
                ts(now),
                job_id
            ])?;
        Ok(())
    }

    async fn update_link(&mut self, job_id: i64, key: &EventKey, spec: &JobSpec) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "UPDATE job_links SET slot = ?, requesters = ? WHERE job_id = ? AND tenant = ? AND event_uid = ?",
            )?
            .execute(params![slot_text(spec.slot), json(&spec.requesters), job_id, key.tenant, key.uid])?;
        Ok(())
    }

    async fn delete_link(&mut self, job_id: i64, key: &EventKey) -> Result<(), StoreError> {
        self.0
            .prepare_cached("DELETE FROM job_links WHERE job_id = ? AND tenant = ? AND event_uid = ?")?
            .execute(params![job_id, key.tenant, key.uid])?;
        Ok(())
    }

    async fn cancel_job(&mut self, job_id: i64, now: DateTime<Utc>) -> Result<(), StoreError> {
        // Only a job still to run: one a recorder finished stays as it ended.
        self.0
            .prepare_cached(
                "UPDATE jobs SET state = 'cancelled', updated_at = ? WHERE id = ? AND state IN ('scheduled', 'claimed')",
            )?
            .execute(params![ts(now), job_id])?;
        Ok(())
    }

    async fn link_requesters(&mut self, job_id: i64) -> Result<Vec<String>, StoreError> {
        let mut statement = self.0.prepare_cached("SELECT requesters FROM job_links WHERE job_id = ? ORDER BY id")?;
        let rows = statement.query_map(params![job_id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    async fn set_job_requesters(
        &mut self,
        job_id: i64,
        requesters: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.0.prepare_cached("UPDATE jobs SET requesters = ?, updated_at = ? WHERE id = ?")?.execute(params![
            requesters,
            ts(now),
            job_id
        ])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The three ways a writer holds the write connection.
    #[derive(Debug, Clone, Copy)]
    enum Via {
        Conn,
        Tx,
        Direct,
    }

    /// `PRAGMA synchronous` on the write connection taken for `durability` through `via`:
    /// 1 is NORMAL, 2 is FULL.
    async fn synchronous(store: &SqliteStore, durability: Durability, via: Via) -> i64 {
        let query = sqlx::query_scalar("PRAGMA synchronous");
        match via {
            Via::Conn => {
                let mut conn = store.write_conn(durability).await.expect("write connection");
                query.fetch_one(&mut *conn).await.expect("pragma")
            }
            Via::Tx => {
                let mut tx = store.write_tx(durability).await.expect("begin");
                let level = query.fetch_one(&mut *tx).await.expect("pragma");
                tx.commit().await.expect("commit");
                level
            }
            Via::Direct => {
                let mut writer = store.writer.lock().await;
                let mut tx = store.direct_tx(&mut writer, durability).await.expect("begin");
                let level = tx.conn().query_row("PRAGMA synchronous", [], |r| r.get(0)).expect("pragma");
                tx.commit().expect("commit");
                level
            }
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
        // Each order through each way alone, then the three taking turns.
        let vias = [Via::Tx, Via::Conn, Via::Direct];
        let alone = vias.iter().flat_map(|via| order.iter().map(move |d| (*d, *via)));
        let turns = order.iter().chain(&order).enumerate().map(|(i, d)| (*d, vias[i % vias.len()]));
        for (durability, via) in alone.chain(turns) {
            let want = if durability == Durability::Synced { 2 } else { 1 };
            assert_eq!(synchronous(&store, durability, via).await, want, "{durability:?} via {via:?}");
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
    async fn a_direct_transaction_dropped_without_commit_is_rolled_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&format!("sqlite://{}/t.db", dir.path().display())).await.expect("open");
        let insert = "INSERT INTO events (tenant, uid, recurrence_id, created_at) VALUES ('acme', ?, '', '2026-12-04')";
        {
            let mut writer = store.writer.lock().await;
            let mut tx = store.direct_tx(&mut writer, Durability::Derived).await.expect("begin");
            tx.conn().execute(insert, ["dropped"]).expect("insert");
        }
        // sqlx has the handle back, with no transaction left open on it...
        let mut tx = store.write_tx(Durability::Derived).await.expect("begin after a dropped direct transaction");
        sqlx::query(insert).bind("through sqlx").execute(&mut *tx).await.expect("insert");
        tx.commit().await.expect("commit");
        // ...and so has the next direct writer.
        {
            let mut writer = store.writer.lock().await;
            let mut tx = store.direct_tx(&mut writer, Durability::Derived).await.expect("begin again");
            tx.conn().execute(insert, ["direct"]).expect("insert");
            tx.commit().expect("commit");
        }
        let uids: Vec<String> =
            sqlx::query_scalar("SELECT uid FROM events ORDER BY id").fetch_all(&store.pool).await.expect("uids");
        assert_eq!(uids, ["through sqlx", "direct"]);
    }

    /// A transaction a failed rollback left open is rolled back before the next writer runs
    /// anything, whichever way that writer holds the connection.
    #[tokio::test]
    async fn a_transaction_left_open_is_rolled_back_for_the_next_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&format!("sqlite://{}/t.db", dir.path().display())).await.expect("open");
        let insert = "INSERT INTO events (tenant, uid, recurrence_id, created_at) VALUES ('acme', ?, '', '2026-12-04')";
        async fn leave_open(store: &SqliteStore, insert: &str, uid: &str) {
            let mut writer = store.writer.lock().await;
            let Writer { direct, sqlx, left_open, .. } = &mut *writer;
            let _handle = sqlx.lock_handle().await.expect("lock the handle");
            direct.execute_batch("BEGIN IMMEDIATE").expect("begin");
            direct.execute(insert, [uid]).expect("insert");
            *left_open = true;
        }
        leave_open(&store, insert, "left open").await;
        let mut conn = store.write_conn(Durability::Synced).await.expect("write connection");
        sqlx::query(insert).bind("plain").execute(&mut *conn).await.expect("insert");
        drop(conn);
        leave_open(&store, insert, "left open again").await;
        let mut writer = store.writer.lock().await;
        let mut tx = store.direct_tx(&mut writer, Durability::Derived).await.expect("begin");
        tx.conn().execute(insert, ["direct"]).expect("insert");
        tx.commit().expect("commit");
        drop(writer);
        let uids: Vec<String> =
            sqlx::query_scalar("SELECT uid FROM events ORDER BY id").fetch_all(&store.pool).await.expect("uids");
        assert_eq!(uids, ["plain", "direct"]);
    }

    /// A panic while a record's transaction is open (hostile mail reaching a bug in the
    /// decision) rolls it back and leaves the store to the next writer.
    #[tokio::test]
    async fn a_panic_inside_a_direct_transaction_rolls_it_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Arc::new(SqliteStore::open(&format!("sqlite://{}/t.db", dir.path().display())).await.expect("open"));
        let panicking = Arc::clone(&store);
        let panicked = tokio::spawn(async move {
            panicking
                .replan("acme", "uid", Utc::now(), &|_| {
                    panic!("planning failed");
                })
                .await
        })
        .await;
        assert!(panicked.is_err_and(|e| e.is_panic()));
        store.replan("acme", "uid", Utc::now(), &|_| Vec::new()).await.expect("replan after the panic");
        let mut writer = store.writer.lock().await;
        let Writer { direct, sqlx, .. } = &mut *writer;
        let _handle = sqlx.lock_handle().await.expect("lock the handle");
        assert!(direct.is_autocommit(), "a transaction is still open");
    }

    /// On a single-threaded runtime, as the daemon's tests run: a `BEGIN` that slept in
    /// SQLite's busy handler would hold the only thread, and the other writer could never
    /// commit.
    #[tokio::test]
    async fn a_direct_transaction_waits_for_another_process_without_blocking_the_runtime() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let store = SqliteStore::open(&url).await.expect("open");
        let other = SqliteStore::open(&url).await.expect("open a second time, as another process would");
        let insert = "INSERT INTO events (tenant, uid, recurrence_id, created_at) VALUES ('acme', ?, '', '2026-12-04')";
        let mut held = other.write_tx(Durability::Synced).await.expect("the other writer begins");
        sqlx::query(insert).bind("other").execute(&mut *held).await.expect("insert");
        let other_commits = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            held.commit().await.expect("the other writer commits");
        };
        let direct = async {
            let mut writer = store.writer.lock().await;
            let mut tx = store.direct_tx(&mut writer, Durability::Derived).await.expect("begin once the file is free");
            tx.conn().execute(insert, ["direct"]).expect("insert");
            tx.commit().expect("commit");
        };
        tokio::join!(other_commits, direct);
        let uids: Vec<String> =
            sqlx::query_scalar("SELECT uid FROM events ORDER BY id").fetch_all(&store.pool).await.expect("uids");
        assert_eq!(uids, ["other", "direct"]);
    }

    /// A record's statements are prepared once, whatever values later calls bind.
    #[tokio::test]
    async fn the_history_statement_is_prepared_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&format!("sqlite://{}/t.db", dir.path().display())).await.expect("open");
        for uid in ["a", "b", "a"] {
            store.replan("acme", uid, Utc::now(), &|_| Vec::new()).await.expect("replan");
        }
        let mut writer = store.writer.lock().await;
        let Writer { direct, sqlx, .. } = &mut *writer;
        let _handle = sqlx.lock_handle().await.expect("lock the handle");
        let statement = direct.prepare_cached(LOAD_HISTORY).expect("cached");
        assert_eq!(statement.get_status(rusqlite::StatementStatus::RePrepare), 0);
    }

    /// Checkpointing copies the WAL into the database file, so the file's length tells
    /// whether a commit checkpointed.
    #[tokio::test]
    async fn a_direct_commit_leaves_checkpointing_to_sqlx() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let store = SqliteStore::open(&format!("sqlite://{}", path.display())).await.expect("open");
        // A mark of one page: every commit is past it.
        store.writer.lock().await.wal_autocheckpoint = 1;
        let mut conn = store.write_conn(Durability::Synced).await.expect("write connection");
        sqlx::query("PRAGMA wal_autocheckpoint = 1").execute(&mut *conn).await.expect("pragma");
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut *conn).await.expect("checkpoint");
        drop(conn);
        let length = || std::fs::metadata(&path).expect("database file").len();
        let insert = "INSERT INTO events (tenant, uid, recurrence_id, created_at) VALUES ('acme', ?, '', '2026-12-04')";
        let before = length();
        {
            let mut writer = store.writer.lock().await;
            let mut tx = store.direct_tx(&mut writer, Durability::Derived).await.expect("begin");
            for i in 0..200 {
                tx.conn().execute(insert, [format!("{i:0>500}")]).expect("insert");
            }
            tx.commit().expect("commit");
        }
        assert_eq!(length(), before, "the direct commit checkpointed");
        let mut tx = store.write_tx(Durability::Derived).await.expect("begin");
        sqlx::query(insert).bind("through sqlx").execute(&mut *tx).await.expect("insert");
        tx.commit().await.expect("commit");
        assert!(length() > before, "the next commit through sqlx did not checkpoint");
    }

    #[tokio::test]
    async fn in_memory_databases_are_refused() {
        for url in ["sqlite::memory:", "sqlite://:memory:", "sqlite://file.db?mode=memory"] {
            let refused = SqliteStore::open(url).await.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(refused.contains("in-memory"), "{url}: {refused}");
        }
    }
}
