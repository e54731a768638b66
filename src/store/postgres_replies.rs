//! [`ReplyQueue`] on PostgreSQL. A claim is one `UPDATE … WHERE id IN (SELECT … FOR UPDATE
//! SKIP LOCKED) RETURNING …`: daemons sharing the database skip the replies another is
//! taking and never send the same one. Queueing takes a per-recipient advisory lock, so
//! that `max_replies_per_hour` holds across daemons.

use async_trait::async_trait;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sqlx::{Postgres, Transaction};

use super::postgres::PgStore;
use super::replies::{ClaimedReply, ReplyDraft, ReplyOps, ReplyQueue};
use super::{EventKey, StoreError};

type ReplyRow = (i64, String, String, String, String, Option<String>, Option<String>, String, String, i32);

fn claimed(row: ReplyRow) -> ClaimedReply {
    let (id, tenant, recipient, sender, subject, in_reply_to, references, body_text, body_html, attempts) = row;
    ClaimedReply {
        id,
        tenant,
        recipient,
        sender,
        subject,
        in_reply_to,
        references,
        body_text,
        body_html,
        attempts: i64::from(attempts),
    }
}

/// PostgreSQL keeps microseconds.
fn stored(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(t)
}

/// The queueing statements on PostgreSQL, inside the decision's transaction.
pub(super) struct PgReplies<'t>(pub &'t mut Transaction<'static, Postgres>);

#[async_trait]
impl ReplyOps for PgReplies<'_> {
    async fn lock_recipient(&mut self, recipient: &str) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("reply\u{1f}{recipient}"))
            .execute(&mut **self.0)
            .await?;
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
            "SELECT id FROM replies WHERE message_id = $1 AND tenant = $2 AND event_uid = $3 AND recurrence_id = $4
                                       AND recipient = $5",
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
            "SELECT fingerprint FROM replies WHERE tenant = $1 AND event_uid = $2 AND recurrence_id = $3
                                                AND recipient = $4
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
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM replies WHERE recipient = $1 AND created_at > $2")
            .bind(recipient)
            .bind(since)
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'queued', $14, $14) RETURNING id",
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
        .bind(stored(now))
        .fetch_one(&mut **self.0)
        .await?)
    }
}

#[async_trait]
impl ReplyQueue for PgStore {
    async fn claim_due_replies(
        &self,
        worker: &str,
        limit: u32,
        lease: TimeDelta,
        now: DateTime<Utc>,
    ) -> Result<Vec<ClaimedReply>, StoreError> {
        let rows: Vec<ReplyRow> = sqlx::query_as(
            "UPDATE replies SET state = 'sending', claimed_by = $1, lease_until = $2, attempts = attempts + 1
             WHERE id IN (
                 SELECT id FROM replies
                 WHERE (state = 'queued' AND next_attempt_at <= $3) OR (state = 'sending' AND lease_until < $3)
                 ORDER BY next_attempt_at, id LIMIT $4
                 FOR UPDATE SKIP LOCKED)
             RETURNING id, tenant, recipient, sender, subject, in_reply_to, thread_references, body_text, body_html,
                       attempts",
        )
        .bind(worker)
        .bind(stored(now + lease))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut replies: Vec<ClaimedReply> = rows.into_iter().map(claimed).collect();
        replies.sort_by_key(|r| r.id);
        Ok(replies)
    }

    async fn reply_sent(&self, id: i64, worker: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE replies SET state = 'sent', sent_at = $1, lease_until = NULL, last_error = NULL
             WHERE id = $2 AND state = 'sending' AND claimed_by = $3",
        )
        .bind(now)
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
            "UPDATE replies SET state = 'queued', next_attempt_at = $1, lease_until = NULL, last_error = $2
             WHERE id = $3 AND state = 'sending' AND claimed_by = $4",
        )
        .bind(stored(retry_at))
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
            "UPDATE replies SET state = 'failed', lease_until = NULL, last_error = $1
             WHERE id = $2 AND state = 'sending' AND claimed_by = $3",
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
