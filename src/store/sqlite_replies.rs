//! [`ReplyQueue`] on SQLite. A claim runs inside `BEGIN IMMEDIATE`, which holds the write
//! lock: two workers sharing the file never claim the same reply.

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use sqlx::{Sqlite, Transaction};

use super::replies::{rate_window, ClaimedReply, Enqueued, ReplyDraft, ReplyQueue};
use super::sqlite::SqliteStore;
use super::{slot_text, ts, EventKey, StoreError};

type ReplyRow = (i64, String, String, String, String, Option<String>, Option<String>, String, String, i64);

fn claimed(row: ReplyRow) -> ClaimedReply {
    let (id, tenant, recipient, sender, subject, in_reply_to, references, body_text, body_html, attempts) = row;
    ClaimedReply { id, tenant, recipient, sender, subject, in_reply_to, references, body_text, body_html, attempts }
}

/// Queues `draft` as the reply to `message_id` about `key`, inside the caller's transaction
/// (the one that records the decision).
pub(super) async fn enqueue(
    tx: &mut Transaction<'static, Sqlite>,
    key: &EventKey,
    message_id: i64,
    draft: &ReplyDraft,
    now: DateTime<Utc>,
) -> Result<Enqueued, StoreError> {
    let rid = slot_text(key.recurrence_id);
    let already: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM replies WHERE message_id = ? AND tenant = ? AND event_uid = ? AND recurrence_id = ?
                                   AND recipient = ?",
    )
    .bind(message_id)
    .bind(&key.tenant)
    .bind(&key.uid)
    .bind(&rid)
    .bind(&draft.recipient)
    .fetch_optional(&mut **tx)
    .await?;
    if already.is_some() {
        return Ok(Enqueued::Duplicate);
    }
    let last: Option<String> = sqlx::query_scalar(
        "SELECT fingerprint FROM replies WHERE tenant = ? AND event_uid = ? AND recurrence_id = ? AND recipient = ?
         ORDER BY id DESC LIMIT 1",
    )
    .bind(&key.tenant)
    .bind(&key.uid)
    .bind(&rid)
    .bind(&draft.recipient)
    .fetch_optional(&mut **tx)
    .await?;
    if last.as_deref() == Some(draft.fingerprint.as_str()) {
        return Ok(Enqueued::Unchanged);
    }
    let recent: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM replies WHERE recipient = ? AND created_at > ?")
        .bind(&draft.recipient)
        .bind(ts(now - rate_window()))
        .fetch_one(&mut **tx)
        .await?;
    if recent >= i64::from(draft.max_per_hour) {
        return Ok(Enqueued::RateLimited);
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO replies (tenant, event_uid, recurrence_id, message_id, recipient, outcome, fingerprint, sender,
                              subject, in_reply_to, thread_references, body_text, body_html, state, next_attempt_at,
                              created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?) RETURNING id",
    )
    .bind(&key.tenant)
    .bind(&key.uid)
    .bind(&rid)
    .bind(message_id)
    .bind(&draft.recipient)
    .bind(draft.outcome.as_str())
    .bind(&draft.fingerprint)
    .bind(&draft.sender)
    .bind(&draft.subject)
    .bind(&draft.in_reply_to)
    .bind(&draft.references)
    .bind(&draft.body_text)
    .bind(&draft.body_html)
    .bind(ts(now))
    .bind(ts(now))
    .fetch_one(&mut **tx)
    .await?;
    Ok(Enqueued::Queued { id })
}

#[async_trait]
impl ReplyQueue for SqliteStore {
    async fn claim_due_replies(
        &self,
        worker: &str,
        limit: u32,
        lease: TimeDelta,
        now: DateTime<Utc>,
    ) -> Result<Vec<ClaimedReply>, StoreError> {
        let mut tx = self.write_tx().await?;
        let rows: Vec<ReplyRow> = sqlx::query_as(
            "UPDATE replies SET state = 'sending', claimed_by = ?, lease_until = ?, attempts = attempts + 1
             WHERE id IN (
                 SELECT id FROM replies
                 WHERE (state = 'queued' AND next_attempt_at <= ?) OR (state = 'sending' AND lease_until < ?)
                 ORDER BY next_attempt_at, id LIMIT ?)
             RETURNING id, tenant, recipient, sender, subject, in_reply_to, thread_references, body_text, body_html,
                       attempts",
        )
        .bind(worker)
        .bind(ts(now + lease))
        .bind(ts(now))
        .bind(ts(now))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut replies: Vec<ClaimedReply> = rows.into_iter().map(claimed).collect();
        replies.sort_by_key(|r| r.id);
        Ok(replies)
    }

    async fn reply_sent(&self, id: i64, worker: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE replies SET state = 'sent', sent_at = ?, lease_until = NULL, last_error = NULL
             WHERE id = ? AND state = 'sending' AND claimed_by = ?",
        )
        .bind(ts(now))
        .bind(id)
        .bind(worker)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    async fn reply_deferred(
        &self,
        id: i64,
        worker: &str,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE replies SET state = 'queued', next_attempt_at = ?, lease_until = NULL, last_error = ?
             WHERE id = ? AND state = 'sending' AND claimed_by = ?",
        )
        .bind(ts(retry_at))
        .bind(error)
        .bind(id)
        .bind(worker)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    async fn replies_waiting(&self) -> Result<i64, StoreError> {
        let waiting: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM replies WHERE state IN ('queued', 'sending')")
            .fetch_one(&self.pool)
            .await?;
        Ok(waiting)
    }

    async fn reply_failed(&self, id: i64, worker: &str, error: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE replies SET state = 'failed', lease_until = NULL, last_error = ?
             WHERE id = ? AND state = 'sending' AND claimed_by = ?",
        )
        .bind(error)
        .bind(id)
        .bind(worker)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done == 1)
    }
}
