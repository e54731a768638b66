//! The multi-node store: several daemons share one PostgreSQL. Work on one (tenant, UID)
//! is serialised with a transaction-scoped advisory lock, so two daemons processing mail
//! about the same meeting cannot plan its jobs twice; a message is stored once (unique
//! content hash) whichever daemon received it.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use super::jobs::{apply_job_changes, JobOps};
use super::{
    from_json, json, plan_kind, slot_text, slot_value, AppliedChanges, Decide, DecisionColumns, DecisionRow,
    EventHistory, EventKey, Finished, HistoryEntry, JobRow, NewMessage, RecordedEvent, Replan, Source, Spooled, Store,
    StoreError, StoredMessage, StoredVersion,
};
use crate::eligibility::{Flag, Requester};
use crate::model::EventVersion;
use crate::schedule::{ActiveJob, FinishedJob, JobSpec};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

pub struct PgStore {
    pub(super) pool: PgPool,
}

impl PgStore {
    /// Connects and migrates. sqlx takes an advisory lock around migrations, so daemons
    /// starting together migrate once.
    pub async fn open(url: &str) -> Result<PgStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(StoreError::Unavailable)?;
        MIGRATOR.run(&pool).await?;
        Ok(PgStore { pool })
    }

    /// A transaction holding the lock of one (tenant, UID) until it ends.
    async fn uid_tx(&self, tenant: &str, uid: &str) -> Result<Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("{tenant}\u{1f}{uid}"))
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

/// Inserts messages inside `tx`; a message whose bytes are already stored (committed, or
/// earlier in `messages`) gets that id.
pub(super) async fn insert_messages(
    tx: &mut Transaction<'static, Postgres>,
    messages: &[NewMessage],
) -> Result<Vec<Spooled>, StoreError> {
    // Rows are taken in hash order, so that two daemons committing overlapping batches
    // (an MX retry) wait for each other instead of deadlocking.
    let mut order: Vec<usize> = (0..messages.len()).collect();
    order.sort_by(|a, b| messages[*a].sha256.cmp(&messages[*b].sha256));
    let mut spooled = vec![Spooled { id: 0, inserted: false }; messages.len()];
    for i in order {
        let m = &messages[i];
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO messages (sha256, received_at, source, envelope_from, envelope_rcpts, message_id, size, raw)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (sha256) DO NOTHING RETURNING id",
        )
        .bind(&m.sha256)
        .bind(m.received_at)
        .bind(m.source.as_str())
        .bind(&m.envelope_from)
        .bind(json(&m.envelope_rcpts))
        .bind(&m.message_id)
        .bind(i64::try_from(m.raw.len()).unwrap_or(i64::MAX))
        .bind(&m.raw)
        .fetch_optional(&mut **tx)
        .await?;
        // A conflict is with a committed message or with one earlier in this batch.
        spooled[i] = match inserted {
            Some(id) => Spooled { id, inserted: true },
            None => {
                let id: i64 = sqlx::query_scalar("SELECT id FROM messages WHERE sha256 = $1")
                    .bind(&m.sha256)
                    .fetch_one(&mut **tx)
                    .await?;
                Spooled { id, inserted: false }
            }
        };
    }
    Ok(spooled)
}

#[async_trait]
impl Store for PgStore {
    async fn spool_messages(&self, messages: &[NewMessage]) -> Result<Vec<Spooled>, StoreError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        let spooled = insert_messages(&mut tx, messages).await?;
        tx.commit().await?;
        Ok(spooled)
    }

    async fn load_message(&self, id: i64) -> Result<Option<StoredMessage>, StoreError> {
        Ok(self.load_messages(&[id]).await?.pop())
    }

    async fn load_messages(&self, ids: &[i64]) -> Result<Vec<StoredMessage>, StoreError> {
        type Row = (i64, Vec<u8>, String, DateTime<Utc>, String, String, Option<String>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, raw, envelope_rcpts, received_at, status, source, envelope_from FROM messages
             WHERE id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, raw, rcpts, received_at, status, source, envelope_from)| {
                Ok(StoredMessage {
                    id,
                    raw,
                    envelope_rcpts: from_json(&rcpts)?,
                    received_at,
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
        let ids: Vec<i64> = finished.iter().map(|f| f.id).collect();
        let statuses: Vec<&str> =
            finished.iter().map(|f| if f.error.is_some() { "failed" } else { "processed" }).collect();
        let outcomes: Vec<String> = finished.iter().map(|f| f.outcome.to_string()).collect();
        let errors: Vec<Option<String>> = finished.iter().map(|f| f.error.clone()).collect();
        sqlx::query(
            "UPDATE messages m SET status = f.status, outcome = f.outcome, error = f.error, processed_at = $5
             FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[]) AS f (id, status, outcome, error)
             WHERE m.id = f.id",
        )
        .bind(&ids)
        .bind(&statuses)
        .bind(&outcomes)
        .bind(&errors)
        .bind(now)
        .execute(&self.pool)
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
        let mut tx = self.uid_tx(&key.tenant, &key.uid).await?;
        let rid = slot_text(key.recurrence_id);
        let event_id: i64 = sqlx::query_scalar(
            "INSERT INTO events (tenant, uid, recurrence_id, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant, uid, recurrence_id) DO UPDATE SET tenant = EXCLUDED.tenant RETURNING id",
        )
        .bind(&key.tenant)
        .bind(&key.uid)
        .bind(&rid)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let (version_id, version_is_new) =
            insert_version(&mut tx, event_id, message_id, version, version_hash, now).await?;
        sqlx::query("INSERT INTO version_messages (version_id, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(version_id)
            .bind(message_id)
            .execute(&mut *tx)
            .await?;

        let history = load_history(&mut tx, key).await?;
        let outcome = decide(&history);

        sqlx::query(
            "INSERT INTO decisions (event_id, arrived_version_id, version_id, message_id, requester,
                                    requester_authenticated, eligible, reasons, plan, decided_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
        .bind(now)
        .execute(&mut *tx)
        .await?;

        let created = apply_job_changes(&mut PgJobs(&mut tx), key, &outcome.job_changes, now).await?;
        let reply = match &outcome.reply {
            Some(draft) => Some(
                super::replies::enqueue(&mut super::postgres_replies::PgReplies(&mut tx), key, message_id, draft, now)
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
             WHERE (v.end_at > $1 OR (v.data::jsonb ->> 'rrule') IS NOT NULL)
               AND EXISTS (SELECT 1 FROM decisions d WHERE d.event_id = e.id AND d.requester IS NOT NULL)
             ORDER BY e.tenant, e.uid",
        )
        .bind(now)
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
        let mut tx = self.uid_tx(tenant, uid).await?;
        let key = EventKey { tenant: tenant.to_string(), uid: uid.to_string(), recurrence_id: None };
        let history = load_history(&mut tx, &key).await?;
        let changes = plan(&history);
        let created = apply_job_changes(&mut PgJobs(&mut tx), &key, &changes, now).await?;
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
        type Row = (i64, String, String, DateTime<Utc>, String, DateTime<Utc>, String, String, String, String, String);
        let rows: Vec<Row> = sqlx::query_as(sql).fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(
                |(
                    id,
                    tenant,
                    event_uid,
                    occurrence_start,
                    kind,
                    run_at,
                    state,
                    provider,
                    meeting_url,
                    flags,
                    requesters,
                )| {
                    Ok(JobRow {
                        id,
                        tenant,
                        event_uid,
                        occurrence_start,
                        kind,
                        run_at,
                        state,
                        provider,
                        meeting_url,
                        flags: from_json(&flags)?,
                        requesters: from_json(&requesters)?,
                    })
                },
            )
            .collect()
    }

    async fn history(&self, uid: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        let versions: Vec<(i64, String, DateTime<Utc>, String)> = sqlx::query_as(
            "SELECT v.id, e.tenant, v.received_at, v.data FROM event_versions v JOIN events e ON e.id = v.event_id
             WHERE e.uid = $1 ORDER BY v.id",
        )
        .bind(uid)
        .fetch_all(&self.pool)
        .await?;
        let mut entries = Vec::with_capacity(versions.len());
        for (version_id, tenant, received_at, data) in versions {
            let message_ids: Vec<i64> =
                sqlx::query_scalar("SELECT message_id FROM version_messages WHERE version_id = $1 ORDER BY message_id")
                    .bind(version_id)
                    .fetch_all(&self.pool)
                    .await?;
            type Row = (i64, DateTime<Utc>, Option<String>, bool, bool, String, Option<String>, Option<i64>);
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT message_id, decided_at, requester, requester_authenticated, eligible, reasons, plan, version_id
                 FROM decisions WHERE arrived_version_id = $1 ORDER BY id",
            )
            .bind(version_id)
            .fetch_all(&self.pool)
            .await?;
            let decisions = rows
                .into_iter()
                .map(|(message_id, decided_at, requester, authenticated, eligible, reasons, plan, current)| {
                    DecisionRow::from_columns(DecisionColumns {
                        message_id,
                        decided_at,
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
                received_at,
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

    async fn lead_periodic_work(&self) -> Result<Option<super::PeriodicLease>, StoreError> {
        self.try_periodic_lease().await
    }
}

async fn insert_version(
    tx: &mut Transaction<'static, Postgres>,
    event_id: i64,
    message_id: i64,
    v: &EventVersion,
    hash: &str,
    now: DateTime<Utc>,
) -> Result<(i64, bool), StoreError> {
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO event_versions (event_id, version_hash, message_id, method, sequence, dtstamp, status, start_at,
                                     end_at, data, received_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (event_id, version_hash) DO NOTHING RETURNING id",
    )
    .bind(event_id)
    .bind(hash)
    .bind(message_id)
    .bind(&v.method)
    .bind(v.sequence)
    .bind(v.dtstamp)
    .bind(&v.status)
    .bind(v.start)
    .bind(v.end)
    .bind(json(v))
    .bind(now)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(id) = inserted {
        return Ok((id, true));
    }
    let id = sqlx::query_scalar("SELECT id FROM event_versions WHERE event_id = $1 AND version_hash = $2")
        .bind(event_id)
        .bind(hash)
        .fetch_one(&mut **tx)
        .await?;
    Ok((id, false))
}

async fn load_history(tx: &mut Transaction<'static, Postgres>, key: &EventKey) -> Result<EventHistory, StoreError> {
    let rows: Vec<(i64, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT v.id, v.data, v.received_at FROM event_versions v JOIN events e ON e.id = v.event_id
         WHERE e.tenant = $1 AND e.uid = $2 ORDER BY v.id",
    )
    .bind(&key.tenant)
    .bind(&key.uid)
    .fetch_all(&mut **tx)
    .await?;
    let versions = rows
        .into_iter()
        .map(|(id, data, received_at)| Ok(StoredVersion { id, version: from_json(&data)?, received_at }))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let requesters: Vec<(String, bool)> = sqlx::query_as(
        "SELECT d.requester, BOOL_OR(d.requester_authenticated) FROM decisions d JOIN events e ON e.id = d.event_id
         WHERE e.tenant = $1 AND e.uid = $2 AND d.requester IS NOT NULL GROUP BY d.requester ORDER BY MIN(d.id)",
    )
    .bind(&key.tenant)
    .bind(&key.uid)
    .fetch_all(&mut **tx)
    .await?;
    type JobRow = (i64, String, String, DateTime<Utc>, DateTime<Utc>, DateTime<Utc>, String, String, String, String);
    // Active and finished jobs in one statement, so in one snapshot: read apart (READ
    // COMMITTED), a job a recorder completed in between looked both active and finished,
    // and the plan cancelled the done job and later made a second one for the meeting.
    let jobs: Vec<JobRow> = sqlx::query_as(
        "SELECT j.id, l.slot, j.kind, j.occurrence_start, j.occurrence_end, j.run_at, j.meeting_url, j.flags,
                l.requesters, j.state
         FROM job_links l JOIN jobs j ON j.id = l.job_id
         WHERE l.tenant = $1 AND l.event_uid = $2 AND j.state IN ('scheduled', 'claimed', 'done', 'failed')
         ORDER BY j.id",
    )
    .bind(&key.tenant)
    .bind(&key.uid)
    .fetch_all(&mut **tx)
    .await?;
    let (active, finished): (Vec<JobRow>, Vec<JobRow>) =
        jobs.into_iter().partition(|row| matches!(row.9.as_str(), "scheduled" | "claimed"));
    let active_jobs = active
        .into_iter()
        .map(|(id, slot, kind, occurrence_start, occurrence_end, run_at, meeting_url, flags, requesters, state)| {
            Ok(ActiveJob {
                id,
                slot: slot_value(&slot)?,
                kind: plan_kind(&kind)?,
                occurrence_start,
                occurrence_end,
                run_at,
                meeting_url,
                flags: from_json::<Vec<Flag>>(&flags)?,
                requesters: from_json(&requesters)?,
                claimed: state == "claimed",
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let declined: Vec<String> =
        sqlx::query_scalar("SELECT slot FROM consent_declines WHERE tenant = $1 AND event_uid = $2")
            .bind(&key.tenant)
            .bind(&key.uid)
            .fetch_all(&mut **tx)
            .await?;
    let finished_jobs = finished
        .into_iter()
        .map(|(_, slot, kind, occurrence_start, _, _, meeting_url, ..)| {
            Ok(FinishedJob { slot: slot_value(&slot)?, kind: plan_kind(&kind)?, occurrence_start, meeting_url })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(EventHistory {
        versions,
        past_requesters: requesters
            .into_iter()
            .map(|(email, authenticated)| Requester { email, authenticated })
            .collect(),
        active_jobs,
        declined_slots: declined.iter().map(|s| slot_value(s)).collect::<Result<_, _>>()?,
        finished_jobs,
    })
}

/// The job statements for PostgreSQL, inside a transaction holding the UID's lock.
struct PgJobs<'t>(&'t mut Transaction<'static, Postgres>);

#[async_trait]
impl JobOps for PgJobs<'_> {
    async fn clear_stale_link(&mut self, key: &EventKey, spec: &JobSpec) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM job_links WHERE tenant = $1 AND event_uid = $2 AND slot = $3 AND kind = $4
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
        // Two UIDs of one meeting may be planned by two daemons at once: the meeting itself
        // is locked too, so only one of them creates its job.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 1))")
            .bind(format!(
                "{}\u{1f}{}\u{1f}{}\u{1f}{}",
                key.tenant,
                spec.meeting_url,
                spec.occurrence_start.timestamp(),
                spec.kind.as_str()
            ))
            .execute(&mut **self.0)
            .await?;
        Ok(sqlx::query_scalar(
            "SELECT id FROM jobs WHERE tenant = $1 AND meeting_url = $2 AND occurrence_start = $3 AND kind = $4
               AND state IN ('scheduled', 'claimed') AND id <> $5 ORDER BY id LIMIT 1 FOR UPDATE",
        )
        .bind(&key.tenant)
        .bind(&spec.meeting_url)
        .bind(spec.occurrence_start)
        .bind(spec.kind.as_str())
        .bind(except.unwrap_or(-1))
        .fetch_optional(&mut **self.0)
        .await?)
    }

    async fn insert_job(&mut self, key: &EventKey, spec: &JobSpec, now: DateTime<Utc>) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO jobs (tenant, event_uid, slot, occurrence_start, occurrence_end, kind, run_at, state,
                               provider, meeting_url, flags, requesters, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'scheduled', $8, $9, $10, $11, $12, $12) RETURNING id",
        )
        .bind(&key.tenant)
        .bind(&key.uid)
        .bind(slot_text(spec.slot))
        .bind(spec.occurrence_start)
        .bind(spec.occurrence_end)
        .bind(spec.kind.as_str())
        .bind(spec.run_at)
        .bind(&spec.provider)
        .bind(&spec.meeting_url)
        .bind(json(&spec.flags))
        .bind(json(&spec.requesters))
        .bind(now)
        .fetch_one(&mut **self.0)
        .await?)
    }

    async fn insert_link(&mut self, job_id: i64, key: &EventKey, spec: &JobSpec) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO job_links (job_id, tenant, event_uid, slot, kind, requesters) VALUES ($1, $2, $3, $4, $5, $6)",
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
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM job_links WHERE job_id = $1 AND NOT (tenant = $2 AND event_uid = $3)",
        )
        .bind(job_id)
        .bind(&key.tenant)
        .bind(&key.uid)
        .fetch_one(&mut **self.0)
        .await?)
    }

    async fn update_job(&mut self, job_id: i64, spec: &JobSpec, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE jobs SET occurrence_start = $1, occurrence_end = $2, run_at = $3, provider = $4,
                             meeting_url = $5, flags = $6, updated_at = $7 WHERE id = $8 AND state = 'scheduled'",
        )
        .bind(spec.occurrence_start)
        .bind(spec.occurrence_end)
        .bind(spec.run_at)
        .bind(&spec.provider)
        .bind(&spec.meeting_url)
        .bind(json(&spec.flags))
        .bind(now)
        .bind(job_id)
        .execute(&mut **self.0)
        .await?;
        Ok(())
    }

    async fn update_link(&mut self, job_id: i64, key: &EventKey, spec: &JobSpec) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE job_links SET slot = $1, requesters = $2 WHERE job_id = $3 AND tenant = $4 AND event_uid = $5",
        )
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
        sqlx::query("DELETE FROM job_links WHERE job_id = $1 AND tenant = $2 AND event_uid = $3")
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
            "UPDATE jobs SET state = 'cancelled', updated_at = $1 WHERE id = $2 AND state IN ('scheduled', 'claimed')",
        )
        .bind(now)
        .bind(job_id)
        .execute(&mut **self.0)
        .await?;
        Ok(())
    }

    async fn link_requesters(&mut self, job_id: i64) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT requesters FROM job_links WHERE job_id = $1 ORDER BY id")
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
        sqlx::query("UPDATE jobs SET requesters = $1, updated_at = $2 WHERE id = $3")
            .bind(requesters)
            .bind(now)
            .bind(job_id)
            .execute(&mut **self.0)
            .await?;
        Ok(())
    }
}
