//! [`ReplyQueue`] on SQLite. A claim runs inside `BEGIN IMMEDIATE`, which holds the write
//! lock: two workers sharing the file never claim the same reply.

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};

use super::replies::{ClaimedReply, ReplyDraft, ReplyOps, ReplyQueue};
use super::sqlite::SqliteStore;
use super::sqlite::{Durability, WriteTx};
use super::{ts, EventKey, StoreError};

type ReplyRow = (i64, String, String, String, String, Option<String>, Option<String>, String, String, i64);

fn claimed(row: ReplyRow) -> ClaimedReply {
    let (id, tenant, recipient, sender, subject, in_reply_to, references, body_text, body_html, attempts) = row;
    ClaimedReply { id, tenant, recipient, sender, subject, in_reply_to, references, body_text, body_html, attempts }
}

/// The queueing statements on SQLite, inside the decision's `BEGIN IMMEDIATE` transaction.
pub(super) struct SqliteReplies<'t>(pub &'t mut WriteTx);

#[async_trait]
impl ReplyOps for SqliteReplies<'_> {
    /// The write lock the transaction holds already keeps every other writer out.
    async fn lock_recipient(&mut self, _recipient: &str) -> Result<(), StoreError> {
        Ok(())
    }

    async fn already_queued(
        &mut self,
        key: &EventKey,
        rid: &str,
        message_id: i64,
        recipient: &str,
    ) -> Result<bool, StoreError> {
        let already: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM replies WHERE message_id = ? AND tenant = ? AND event_uid = ? AND recurrence_id = ?
                                       AND recipient = ?",
        )
        .bind(message_id)
        .bind(&key.tenant)
        .bind(&key.uid)
        .bind(rid)
        .bind(recipient)
        .fetch_optional(&mut **self.0)
        .await?;
        Ok(already.is_some())
    }

    async fn last_fingerprint(
        &mut self,
        key: &EventKey,
        rid: &str,
        recipient: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT fingerprint FROM replies WHERE tenant = ? AND event_uid = ? AND recurrence_id = ? AND recipient = ?
             ORDER BY id DESC LIMIT 1",
        )
        .bind(&key.tenant)
        .bind(&key.uid)
        .bind(rid)
        .bind(recipient)
        .fetch_optional(&mut **self.0)
        .await?)
    }

    async fn replies_since(&mut self, recipient: &str, since: DateTime<Utc>) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM replies WHERE recipient = ? AND created_at > ?")
            .bind(recipient)
            .bind(ts(since))
            .fetch_one(&mut **self.0)
            .await?)
    }

    async fn insert_reply(
        &mut self,
        key: &EventKey,
        rid: &str,
        message_id: i64,
        draft: &ReplyDraft,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO replies (tenant, event_uid, recurrence_id, message_id, recipient, outcome, fingerprint, sender,
                                  subject, in_reply_to, thread_references, body_text, body_html, state,
                                  next_attempt_at, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?) RETURNING id",
        )
        .bind(&key.tenant)
        .bind(&key.uid)
        .bind(rid)
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
        .fetch_one(&mut **self.0)
        .await?)
    }
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
        let mut tx = self.write_tx(Durability::Synced).await?;
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
        let mut conn = self.write_conn(Durability::Synced).await?;
        let done = sqlx::query(
            "UPDATE replies SET state = 'sent', sent_at = ?, lease_until = NULL, last_error = NULL
             WHERE id = ? AND state = 'sending' AND claimed_by = ?",
        )
        .bind(ts(now))
        .bind(id)
        .bind(worker)
        .execute(&mut *conn)
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
        let mut conn = self.write_conn(Durability::Synced).await?;
        let done = sqlx::query(
            "UPDATE replies SET state = 'queued', next_attempt_at = ?, lease_until = NULL, last_error = ?
             WHERE id = ? AND state = 'sending' AND claimed_by = ?",
        )
        .bind(ts(retry_at))
        .bind(error)
        .bind(id)
        .bind(worker)
        .execute(&mut *conn)
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
        let mut conn = self.write_conn(Durability::Synced).await?;
        let done = sqlx::query(
            "UPDATE replies SET state = 'failed', lease_until = NULL, last_error = ?
             WHERE id = ? AND state = 'sending' AND claimed_by = ?",
        )
        .bind(error)
        .bind(id)
        .bind(worker)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        Ok(done == 1)
    }
}
