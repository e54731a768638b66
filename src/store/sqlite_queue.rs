//! [`RecorderQueue`] on SQLite. A claim is one `UPDATE … WHERE id IN (SELECT … LIMIT ?)
//! RETURNING …` inside `BEGIN IMMEDIATE`: the write lock is taken before the due jobs are
//! chosen, so two recorders can never choose the same job.

use async_trait::async_trait;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sqlx::Sqlite;

use super::queue::{refusal, Holder};
use super::queue::{
    ClaimFilter, ClaimedJob, CompleteOutcome, DeclineOutcome, FailOutcome, HeartbeatOutcome, RecorderQueue,
    RetryPolicy, LEASE_LOST_ERROR, MISSED_ERROR,
};
use super::sqlite::{Durability, WriteTx};
use super::{from_json, parse_ts, ts, SqliteStore, StoreError};

/// Columns of a job as handed to a recorder, in [`ClaimedRow`] order.
type ClaimedRow = (i64, String, String, String, String, String, String, String, String, String, String, i64, String);

fn claimed_job(row: ClaimedRow) -> Result<ClaimedJob, StoreError> {
    let (id, tenant, event_uid, start, end, kind, run_at, provider, meeting_url, flags, requesters, attempts, lease) =
        row;
    Ok(ClaimedJob {
        id,
        tenant,
        event_uid,
        occurrence_start: parse_ts(&start)?,
        occurrence_end: parse_ts(&end)?,
        kind,
        run_at: parse_ts(&run_at)?,
        state: "claimed".into(),
        provider,
        meeting_url,
        flags: from_json(&flags)?,
        requesters: from_json(&requesters)?,
        attempts,
        lease_until: parse_ts(&lease)?,
    })
}

/// A filter list as a JSON array for `json_each`, or NULL for "any".
fn json_list(list: Option<&Vec<String>>) -> Option<String> {
    list.map(|l| serde_json::Value::from(l.clone()).to_string())
}

/// `t` as the store keeps it (milliseconds), so that what a caller is told is what is stored.
fn stored(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::milliseconds(1)).unwrap_or(t)
}

async fn holder<'e, E>(executor: E, job_id: i64) -> Result<Option<Holder>, StoreError>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    let row: Option<(String, Option<String>)> =
        sqlx::query_as("SELECT state, claimed_by FROM jobs WHERE id = ?").bind(job_id).fetch_optional(executor).await?;
    Ok(row.map(|(state, claimed_by)| Holder { state, claimed_by }))
}

#[async_trait]
impl RecorderQueue for SqliteStore {
    async fn claim_due_jobs(
        &self,
        recorder: &str,
        filter: &ClaimFilter,
        limit: u32,
        lease: TimeDelta,
        now: DateTime<Utc>,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        let mut tx = self.write_tx(Durability::Synced).await?;
        let rows: Vec<ClaimedRow> = sqlx::query_as(
            "UPDATE jobs SET state = 'claimed', claimed_by = ?1, lease_until = ?2, attempts = attempts + 1,
                             updated_at = ?3
             WHERE id IN (
                 SELECT id FROM jobs
                 WHERE ((state = 'scheduled' AND run_at <= ?3) OR (state = 'claimed' AND lease_until < ?3))
                   AND NOT (kind = 'bot_join' AND occurrence_end <= ?3)
                   AND (?4 IS NULL OR kind IN (SELECT value FROM json_each(?4)))
                   AND (?5 IS NULL OR provider IN (SELECT value FROM json_each(?5)))
                 ORDER BY run_at, id LIMIT ?6)
             RETURNING id, tenant, event_uid, occurrence_start, occurrence_end, kind, run_at, provider, meeting_url,
                       flags, requesters, attempts, lease_until",
        )
        .bind(recorder)
        .bind(ts(now + lease))
        .bind(ts(now))
        .bind(json_list(filter.kinds.as_ref()))
        .bind(json_list(filter.providers.as_ref()))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut jobs = rows.into_iter().map(claimed_job).collect::<Result<Vec<_>, _>>()?;
        // RETURNING gives no order.
        jobs.sort_by_key(|j| (j.run_at, j.id));
        Ok(jobs)
    }

    async fn heartbeat(
        &self,
        job_id: i64,
        recorder: &str,
        lease: TimeDelta,
        now: DateTime<Utc>,
    ) -> Result<HeartbeatOutcome, StoreError> {
        let mut conn = self.write_conn(Durability::Synced).await?;
        let lease_until = stored(now + lease);
        let extended = sqlx::query(
            "UPDATE jobs SET lease_until = ?, updated_at = ? WHERE id = ? AND state = 'claimed' AND claimed_by = ?",
        )
        .bind(ts(lease_until))
        .bind(ts(now))
        .bind(job_id)
        .bind(recorder)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if extended == 1 {
            return Ok(HeartbeatOutcome::Extended { lease_until });
        }
        Ok(HeartbeatOutcome::Refused(refusal(holder(&self.pool, job_id).await?.as_ref())))
    }

    async fn complete(&self, job_id: i64, recorder: &str, now: DateTime<Utc>) -> Result<CompleteOutcome, StoreError> {
        let mut conn = self.write_conn(Durability::Synced).await?;
        let completed = sqlx::query(
            "UPDATE jobs SET state = 'done', lease_until = NULL, updated_at = ?
             WHERE id = ? AND state = 'claimed' AND claimed_by = ?",
        )
        .bind(ts(now))
        .bind(job_id)
        .bind(recorder)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if completed == 1 {
            return Ok(CompleteOutcome::Completed);
        }
        let holder = holder(&self.pool, job_id).await?;
        if holder.as_ref().is_some_and(|h| h.finished_by(recorder, "done")) {
            return Ok(CompleteOutcome::AlreadyCompleted);
        }
        Ok(CompleteOutcome::Refused(refusal(holder.as_ref())))
    }

    async fn fail(
        &self,
        job_id: i64,
        recorder: &str,
        error: &str,
        now: DateTime<Utc>,
        policy: &RetryPolicy,
    ) -> Result<FailOutcome, StoreError> {
        let mut tx = self.write_tx(Durability::Synced).await?;
        let holder = holder(&mut *tx, job_id).await?;
        if !holder.as_ref().is_some_and(|h| h.held_by(recorder)) {
            return Ok(FailOutcome::Refused(refusal(holder.as_ref())));
        }
        let (attempts, kind, end): (i64, String, String) =
            sqlx::query_as("SELECT attempts, kind, occurrence_end FROM jobs WHERE id = ?")
                .bind(job_id)
                .fetch_one(&mut *tx)
                .await?;
        let outcome = match policy.after_failure(attempts, &kind, parse_ts(&end)?, now) {
            Ok(retry_at) => {
                let retry_at = stored(retry_at);
                sqlx::query(
                    "UPDATE jobs SET state = 'scheduled', run_at = ?, claimed_by = NULL, lease_until = NULL,
                                     last_error = ?, updated_at = ? WHERE id = ?",
                )
                .bind(ts(retry_at))
                .bind(error)
                .bind(ts(now))
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
                FailOutcome::Retrying { attempts, retry_at }
            }
            Err(reason) => {
                sqlx::query(
                    "UPDATE jobs SET state = 'failed', lease_until = NULL, last_error = ?, updated_at = ? WHERE id = ?",
                )
                .bind(error)
                .bind(ts(now))
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
                FailOutcome::Failed { attempts, reason }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn decline_consent(
        &self,
        job_id: i64,
        recorder: &str,
        now: DateTime<Utc>,
    ) -> Result<DeclineOutcome, StoreError> {
        let mut tx = self.write_tx(Durability::Synced).await?;
        let holder = holder(&mut *tx, job_id).await?;
        if !holder.as_ref().is_some_and(|h| h.held_by(recorder)) {
            let already = holder.as_ref().is_some_and(|h| h.finished_by(recorder, "cancelled"))
                && declined(&mut tx, job_id).await?;
            return Ok(if already {
                DeclineOutcome::AlreadyDeclined
            } else {
                DeclineOutcome::Refused(refusal(holder.as_ref()))
            });
        }
        // The job's own occurrence, and that of every UID sharing the job (two people who
        // forwarded the same meeting): none of them may plan a job for it again.
        sqlx::query(
            "INSERT OR IGNORE INTO consent_declines (tenant, event_uid, slot, job_id, declined_at)
             SELECT tenant, event_uid, slot, id, ?2 FROM jobs WHERE id = ?1
             UNION SELECT tenant, event_uid, slot, job_id, ?2 FROM job_links WHERE job_id = ?1",
        )
        .bind(job_id)
        .bind(ts(now))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE jobs SET state = 'cancelled', lease_until = NULL, last_error = 'consent_declined', updated_at = ?
             WHERE id = ?",
        )
        .bind(ts(now))
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(DeclineOutcome::Cancelled)
    }

    async fn expire_missed(&self, now: DateTime<Utc>) -> Result<Vec<i64>, StoreError> {
        let mut conn = self.write_conn(Durability::Derived).await?;
        let mut ids: Vec<i64> = sqlx::query_scalar(
            "UPDATE jobs SET state = 'failed', lease_until = NULL, updated_at = ?1,
                             last_error = CASE WHEN state = 'claimed' THEN ?3 ELSE ?2 END
                                          || COALESCE(' (last error: ' || last_error || ')', '')
             WHERE kind = 'bot_join' AND occurrence_end <= ?1
               AND (state = 'scheduled' OR (state = 'claimed' AND lease_until < ?1))
             RETURNING id",
        )
        .bind(ts(now))
        .bind(MISSED_ERROR)
        .bind(LEASE_LOST_ERROR)
        .fetch_all(&mut *conn)
        .await?;
        ids.sort_unstable();
        Ok(ids)
    }
}

/// Whether the occurrence of this job was declined.
async fn declined(tx: &mut WriteTx, job_id: i64) -> Result<bool, StoreError> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM consent_declines WHERE job_id = ?")
        .bind(job_id)
        .fetch_one(&mut **tx)
        .await?;
    Ok(n > 0)
}
