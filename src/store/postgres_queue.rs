//! [`RecorderQueue`] on PostgreSQL. A claim is one `UPDATE … WHERE id IN (SELECT … FOR
//! UPDATE SKIP LOCKED) RETURNING …`: recorders talking to different daemons skip the rows
//! another claim is taking instead of waiting for them, and never get the same job.

use async_trait::async_trait;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sqlx::{Postgres, Transaction};

use super::postgres::PgStore;
use super::queue::{refusal, Holder};
use super::queue::{
    ClaimFilter, ClaimedJob, CompleteOutcome, DeclineOutcome, FailOutcome, HeartbeatOutcome, RecorderQueue,
    RetryPolicy, LEASE_LOST_ERROR, MISSED_ERROR,
};
use super::{from_json, StoreError};

type ClaimedRow = (
    i64,
    String,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
    String,
    DateTime<Utc>,
    String,
    String,
    String,
    String,
    i32,
    DateTime<Utc>,
);

fn claimed_job(row: ClaimedRow) -> Result<ClaimedJob, StoreError> {
    let (
        id,
        tenant,
        event_uid,
        occurrence_start,
        occurrence_end,
        kind,
        run_at,
        provider,
        meeting_url,
        flags,
        requesters,
        attempts,
        lease_until,
    ) = row;
    Ok(ClaimedJob {
        id,
        tenant,
        event_uid,
        occurrence_start,
        occurrence_end,
        kind,
        run_at,
        state: "claimed".into(),
        provider,
        meeting_url,
        flags: from_json(&flags)?,
        requesters: from_json(&requesters)?,
        attempts: i64::from(attempts),
        lease_until,
    })
}

/// PostgreSQL keeps microseconds; what a caller is told is what is stored.
fn stored(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(t)
}

async fn holder<'e, E>(executor: E, job_id: i64, lock: bool) -> Result<Option<Holder>, StoreError>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    let sql = if lock {
        "SELECT state, claimed_by FROM jobs WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT state, claimed_by FROM jobs WHERE id = $1"
    };
    let row: Option<(String, Option<String>)> = sqlx::query_as(sql).bind(job_id).fetch_optional(executor).await?;
    Ok(row.map(|(state, claimed_by)| Holder { state, claimed_by }))
}

#[async_trait]
impl RecorderQueue for PgStore {
    async fn claim_due_jobs(
        &self,
        recorder: &str,
        filter: &ClaimFilter,
        limit: u32,
        lease: TimeDelta,
        now: DateTime<Utc>,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        let rows: Vec<ClaimedRow> = sqlx::query_as(
            "UPDATE jobs SET state = 'claimed', claimed_by = $1, lease_until = $2, attempts = attempts + 1,
                             updated_at = $3
             WHERE id IN (
                 SELECT id FROM jobs
                 WHERE ((state = 'scheduled' AND run_at <= $3) OR (state = 'claimed' AND lease_until < $3))
                   AND NOT (kind = 'bot_join' AND occurrence_end <= $3)
                   AND ($4::text[] IS NULL OR kind = ANY($4))
                   AND ($5::text[] IS NULL OR provider = ANY($5))
                 ORDER BY run_at, id LIMIT $6
                 FOR UPDATE SKIP LOCKED)
             RETURNING id, tenant, event_uid, occurrence_start, occurrence_end, kind, run_at, provider, meeting_url,
                       flags, requesters, attempts, lease_until",
        )
        .bind(recorder)
        .bind(stored(now + lease))
        .bind(now)
        .bind(filter.kinds.clone())
        .bind(filter.providers.clone())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut jobs = rows.into_iter().map(claimed_job).collect::<Result<Vec<_>, _>>()?;
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
        let lease_until = stored(now + lease);
        let extended = sqlx::query(
            "UPDATE jobs SET lease_until = $1, updated_at = $2 WHERE id = $3 AND state = 'claimed' AND claimed_by = $4",
        )
        .bind(lease_until)
        .bind(now)
        .bind(job_id)
        .bind(recorder)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if extended == 1 {
            return Ok(HeartbeatOutcome::Extended { lease_until });
        }
        Ok(HeartbeatOutcome::Refused(refusal(holder(&self.pool, job_id, false).await?.as_ref())))
    }

    async fn complete(&self, job_id: i64, recorder: &str, now: DateTime<Utc>) -> Result<CompleteOutcome, StoreError> {
        let completed = sqlx::query(
            "UPDATE jobs SET state = 'done', lease_until = NULL, updated_at = $1
             WHERE id = $2 AND state = 'claimed' AND claimed_by = $3",
        )
        .bind(now)
        .bind(job_id)
        .bind(recorder)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if completed == 1 {
            return Ok(CompleteOutcome::Completed);
        }
        let holder = holder(&self.pool, job_id, false).await?;
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
        let mut tx = self.pool.begin().await?;
        let holder = holder(&mut *tx, job_id, true).await?;
        if !holder.as_ref().is_some_and(|h| h.held_by(recorder)) {
            return Ok(FailOutcome::Refused(refusal(holder.as_ref())));
        }
        let (attempts, kind, end): (i32, String, DateTime<Utc>) =
            sqlx::query_as("SELECT attempts, kind, occurrence_end FROM jobs WHERE id = $1")
                .bind(job_id)
                .fetch_one(&mut *tx)
                .await?;
        let attempts = i64::from(attempts);
        let outcome = match policy.after_failure(attempts, &kind, end, now) {
            Ok(retry_at) => {
                let retry_at = stored(retry_at);
                sqlx::query(
                    "UPDATE jobs SET state = 'scheduled', run_at = $1, claimed_by = NULL, lease_until = NULL,
                                     last_error = $2, updated_at = $3 WHERE id = $4",
                )
                .bind(retry_at)
                .bind(error)
                .bind(now)
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
                FailOutcome::Retrying { attempts, retry_at }
            }
            Err(reason) => {
                sqlx::query(
                    "UPDATE jobs SET state = 'failed', lease_until = NULL, last_error = $1, updated_at = $2 WHERE id = $3",
                )
                .bind(error)
                .bind(now)
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
        let mut tx = self.pool.begin().await?;
        let holder = holder(&mut *tx, job_id, true).await?;
        if !holder.as_ref().is_some_and(|h| h.held_by(recorder)) {
            let already = holder.as_ref().is_some_and(|h| h.finished_by(recorder, "cancelled"))
                && declined(&mut tx, job_id).await?;
            return Ok(if already {
                DeclineOutcome::AlreadyDeclined
            } else {
                DeclineOutcome::Refused(refusal(holder.as_ref()))
            });
        }
        sqlx::query(
            "INSERT INTO consent_declines (tenant, event_uid, slot, job_id, declined_at)
             SELECT tenant, event_uid, slot, id, $2 FROM jobs WHERE id = $1
             UNION SELECT tenant, event_uid, slot, job_id, $2 FROM job_links WHERE job_id = $1
             ON CONFLICT (tenant, event_uid, slot) DO NOTHING",
        )
        .bind(job_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE jobs SET state = 'cancelled', lease_until = NULL, last_error = 'consent_declined', updated_at = $1
             WHERE id = $2",
        )
        .bind(now)
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(DeclineOutcome::Cancelled)
    }

    async fn expire_missed(&self, now: DateTime<Utc>) -> Result<Vec<i64>, StoreError> {
        let mut ids: Vec<i64> = sqlx::query_scalar(
            "UPDATE jobs SET state = 'failed', lease_until = NULL, updated_at = $1,
                             last_error = CASE WHEN state = 'claimed' THEN $3 ELSE $2 END
                                          || COALESCE(' (last error: ' || last_error || ')', '')
             WHERE kind = 'bot_join' AND occurrence_end <= $1
               AND (state = 'scheduled' OR (state = 'claimed' AND lease_until < $1))
             RETURNING id",
        )
        .bind(now)
        .bind(MISSED_ERROR)
        .bind(LEASE_LOST_ERROR)
        .fetch_all(&self.pool)
        .await?;
        ids.sort_unstable();
        Ok(ids)
    }
}

async fn declined(tx: &mut Transaction<'static, Postgres>, job_id: i64) -> Result<bool, StoreError> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM consent_declines WHERE job_id = $1")
        .bind(job_id)
        .fetch_one(&mut **tx)
        .await?;
    Ok(n > 0)
}
