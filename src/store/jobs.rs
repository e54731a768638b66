//! How a UID's job changes are written, once for every backend. Each backend supplies the
//! single statements ([`JobOps`]); the rules of sharing a job between UIDs live here.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{from_json, json, CreatedJob, EventKey, StoreError};
use crate::schedule::{JobChange, JobSpec};

type Result<T> = std::result::Result<T, StoreError>;

/// The statements the job rules need, inside one open transaction.
#[async_trait]
pub(super) trait JobOps: Send {
    /// Drops this UID's link for (slot, kind) if the job it pointed at has ended.
    async fn clear_stale_link(&mut self, key: &EventKey, spec: &JobSpec) -> Result<()>;
    /// The active job, other than `except`, for the same meeting link, start and kind.
    async fn target_job(&mut self, key: &EventKey, spec: &JobSpec, except: Option<i64>) -> Result<Option<i64>>;
    async fn insert_job(&mut self, key: &EventKey, spec: &JobSpec, now: DateTime<Utc>) -> Result<i64>;
    async fn insert_link(&mut self, job_id: i64, key: &EventKey, spec: &JobSpec) -> Result<()>;
    /// How many other UIDs' occurrences `job_id` records.
    async fn other_links(&mut self, job_id: i64, key: &EventKey) -> Result<i64>;
    /// Moves a job that no recorder holds.
    async fn update_job(&mut self, job_id: i64, spec: &JobSpec, now: DateTime<Utc>) -> Result<()>;
    /// This UID's slot and requesters on its link to `job_id`.
    async fn update_link(&mut self, job_id: i64, key: &EventKey, spec: &JobSpec) -> Result<()>;
    async fn delete_link(&mut self, job_id: i64, key: &EventKey) -> Result<()>;
    async fn cancel_job(&mut self, job_id: i64, now: DateTime<Utc>) -> Result<()>;
    /// The requester lists (JSON) of every link of `job_id`, oldest link first.
    async fn link_requesters(&mut self, job_id: i64) -> Result<Vec<String>>;
    async fn set_job_requesters(&mut self, job_id: i64, requesters: &str, now: DateTime<Utc>) -> Result<()>;
}

/// Writes a UID's job changes. The UID's view of a job is its link: cancelling removes the
/// link (and the job with its last link); a creation joins an active job for the same
/// meeting link, start and kind when there is one; a move of a shared job leaves the job
/// to its other links and plans this UID's part anew.
pub(super) async fn apply_job_changes(
    ops: &mut dyn JobOps,
    key: &EventKey,
    changes: &[JobChange],
    now: DateTime<Utc>,
) -> Result<Vec<CreatedJob>> {
    let mut created = Vec::new();
    for change in changes {
        match change {
            JobChange::Create(spec) => created.push(link_or_create(ops, key, spec, now).await?),
            JobChange::Reschedule { id, spec, .. } => {
                let alone = ops.other_links(*id, key).await? == 0;
                if alone && ops.target_job(key, spec, Some(*id)).await?.is_none() {
                    ops.update_job(*id, spec, now).await?;
                    ops.update_link(*id, key, spec).await?;
                } else {
                    unlink(ops, *id, key, now).await?;
                    link_or_create(ops, key, spec, now).await?;
                }
            }
            JobChange::Cancel { id, .. } => unlink(ops, *id, key, now).await?,
        }
    }
    Ok(created)
}

async fn link_or_create(
    ops: &mut dyn JobOps,
    key: &EventKey,
    spec: &JobSpec,
    now: DateTime<Utc>,
) -> Result<CreatedJob> {
    ops.clear_stale_link(key, spec).await?;
    let job = match ops.target_job(key, spec, None).await? {
        Some(id) => CreatedJob { id, joined: true },
        None => CreatedJob { id: ops.insert_job(key, spec, now).await?, joined: false },
    };
    ops.insert_link(job.id, key, spec).await?;
    // A new job was written with this link's requesters: only a joined one needs the union
    // (or a list that names someone twice, which the union writes once).
    if job.joined || union(&[&spec.requesters]) != spec.requesters {
        refresh_requesters(ops, job.id, now).await?;
    }
    Ok(job)
}

/// Drops this UID's link to a job; a job nobody links to any more is cancelled.
async fn unlink(ops: &mut dyn JobOps, job_id: i64, key: &EventKey, now: DateTime<Utc>) -> Result<()> {
    ops.delete_link(job_id, key).await?;
    if ops.other_links(job_id, key).await? == 0 {
        ops.cancel_job(job_id, now).await
    } else {
        refresh_requesters(ops, job_id, now).await
    }
}

/// A job lists every requester of every UID it records, in the order they asked.
async fn refresh_requesters(ops: &mut dyn JobOps, job_id: i64, now: DateTime<Utc>) -> Result<()> {
    let lists =
        ops.link_requesters(job_id).await?.iter().map(|l| from_json(l)).collect::<Result<Vec<Vec<String>>>>()?;
    let lists: Vec<&Vec<String>> = lists.iter().collect();
    ops.set_job_requesters(job_id, &json(&union(&lists)), now).await
}

/// Everyone in `lists`, once each, in the order they first appear.
fn union(lists: &[&Vec<String>]) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    for r in lists.iter().copied().flatten() {
        if !all.contains(r) {
            all.push(r.clone());
        }
    }
    all
}
