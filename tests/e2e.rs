//! End to end on a real SQLite file: invite → update → cancel, and the jobs after each.

mod common;

use std::sync::Arc;

use invited::config::Config;
use invited::pipeline::{ingest, ProcessReport};
use invited::store::{self, JobRow, Source, Store};

async fn open(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    store::open(&format!("sqlite://{}/invited.db", dir.path().display())).await.expect("store opens")
}

async fn feed(store: &dyn Store, config: &Config, name: &str, now: &str) -> ProcessReport {
    ingest(store, config, common::fixture(name), Source::File, None, vec![], common::at(now)).await.expect("ingest")
}

async fn active(store: &dyn Store) -> Vec<JobRow> {
    store.jobs(false).await.expect("jobs")
}

#[tokio::test]
async fn invite_update_cancel_moves_then_cancels_the_job() {
    for backend in common::backends().await {
        eprintln!("backend: {}", backend.name);
        let store = backend.store.clone();
        let config = common::config();

        let r = feed(store.as_ref(), &config, "zoom-invite.eml", "2027-01-04T12:00:00Z").await;
        assert_eq!((r.versions_stored, r.jobs_created), (1, 1));
        let jobs = active(store.as_ref()).await;
        assert_eq!(jobs.len(), 1);
        let job = &jobs[0];
        assert_eq!(job.kind, "cloud_fetch");
        assert_eq!(job.state, "scheduled");
        assert_eq!(job.event_uid, "review-1@acme.com");
        assert_eq!(job.occurrence_start, common::at("2027-01-11T15:00:00Z"));
        assert_eq!(job.run_at, common::at("2027-01-11T16:15:00Z"));
        assert_eq!(job.requesters, vec!["alice@acme.com".to_string()]);

        let r = feed(store.as_ref(), &config, "zoom-update.eml", "2027-01-05T12:00:00Z").await;
        assert_eq!((r.versions_stored, r.jobs_rescheduled, r.jobs_created), (1, 1, 0));
        let jobs = active(store.as_ref()).await;
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].id, job.id, "the same job is moved, not replaced");
        assert_eq!(jobs[0].occurrence_start, common::at("2027-01-12T09:00:00Z"));
        assert_eq!(jobs[0].run_at, common::at("2027-01-12T10:15:00Z"));

        let r = feed(store.as_ref(), &config, "zoom-cancel.eml", "2027-01-06T12:00:00Z").await;
        assert_eq!((r.versions_stored, r.jobs_cancelled), (1, 1));
        assert!(active(store.as_ref()).await.is_empty());
        let all = store.jobs(true).await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].state, "cancelled");

        // The first invite forwarded again, late: stored message, no new version, still cancelled.
        let r = feed(store.as_ref(), &config, "zoom-invite.eml", "2027-01-07T12:00:00Z").await;
        assert!(r.duplicate_message);
        assert!(active(store.as_ref()).await.is_empty());

        let history = store.history("review-1@acme.com").await.unwrap();
        assert_eq!(history.len(), 3);
        let sequences: Vec<i64> = history.iter().map(|h| h.version.sequence).collect();
        assert_eq!(sequences, vec![0, 1, 2]);
        let current: Vec<bool> = history.iter().map(|h| h.current).collect();
        assert_eq!(current, vec![false, false, true], "the CANCEL is in force");
        assert!(history.iter().all(|h| h.decisions.len() == 1));
        backend.finish().await;
    }
}

#[tokio::test]
async fn stale_update_arriving_late_changes_nothing() {
    for backend in common::backends().await {
        eprintln!("backend: {}", backend.name);
        let store = backend.store.clone();
        let config = common::config();
        feed(store.as_ref(), &config, "zoom-update.eml", "2027-01-04T12:00:00Z").await;
        let before = active(store.as_ref()).await;
        let r = feed(store.as_ref(), &config, "zoom-invite.eml", "2027-01-04T12:00:00Z").await;
        assert_eq!((r.versions_stored, r.jobs_created, r.jobs_rescheduled, r.jobs_cancelled), (1, 0, 0, 0));
        assert_eq!(active(store.as_ref()).await, before);
        backend.finish().await;
    }
}

#[tokio::test]
async fn ineligible_second_forwarder_does_not_cancel_the_job() {
    for backend in common::backends().await {
        eprintln!("backend: {}", backend.name);
        let store = backend.store.clone();
        let config = common::config();
        feed(store.as_ref(), &config, "zoom-invite.eml", "2027-01-04T12:00:00Z").await;
        // The same version forwarded by a user without a seat.
        let raw = String::from_utf8(common::fixture("zoom-invite.eml"))
            .unwrap()
            .replace("From: Sender <alice@acme.com>", "From: No Seat <noseat@acme.com>")
            .replace("ORGANIZER;CN=Alice:mailto:alice@acme.com", "ORGANIZER:mailto:x@customer.example");
        let r =
            ingest(store.as_ref(), &config, raw.into_bytes(), Source::File, None, vec![], common::now()).await.unwrap();
        assert_eq!(r.eligible_decisions, 0);
        assert_eq!(r.jobs_cancelled, 0);
        assert_eq!(active(store.as_ref()).await.len(), 1);
        backend.finish().await;
    }
}

#[tokio::test]
async fn bad_input_is_stored_with_its_reason() {
    for backend in common::backends().await {
        eprintln!("backend: {}", backend.name);
        let store = backend.store.clone();
        let config = common::config();
        for name in ["no-calendar.eml", "bad-calendar.eml", "no-uid.eml", "unknown-recipient.eml"] {
            let r = feed(store.as_ref(), &config, name, common::NOW).await;
            assert!(!r.reasons.is_empty(), "{name} has a reason");
            let msg = store.load_message(r.message_id).await.unwrap().expect("stored");
            assert_eq!(msg.status, "processed", "{name}");
        }
        assert!(active(store.as_ref()).await.is_empty());
        backend.finish().await;
    }
}

#[tokio::test]
async fn a_spooled_message_left_unprocessed_is_resumed() {
    for backend in common::backends().await {
        eprintln!("backend: {}", backend.name);
        let store = backend.store.clone();
        let config = common::config();
        let raw = common::fixture("teams-invite.eml");
        let spooled = store
            .spool_message(&store::NewMessage {
                sha256: "test-sha".into(),
                raw,
                source: Source::Smtp,
                envelope_from: Some("alice@acme.com".into()),
                envelope_rcpts: vec!["acme@assistant.example.com".into()],
                message_id: None,
                received_at: common::now(),
            })
            .await
            .unwrap();
        assert_eq!(store.unfinished_messages(false).await.unwrap(), vec![spooled.id]);
        let r = invited::pipeline::process_message(store.as_ref(), &config, spooled.id, common::now()).await.unwrap();
        assert_eq!(r.jobs_created, 1);
        assert!(store.unfinished_messages(true).await.unwrap().is_empty());
        backend.finish().await;
    }
}

#[tokio::test]
async fn oversized_and_non_mail_input_is_refused_before_storing() {
    for backend in common::backends().await {
        eprintln!("backend: {}", backend.name);
        let store = backend.store.clone();
        let mut config = common::config();
        config.limits.max_message_bytes = 100;
        let err = ingest(
            store.as_ref(),
            &config,
            common::fixture("zoom-invite.eml"),
            Source::File,
            None,
            vec![],
            common::now(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), "message_too_large");
        let config = common::config();
        let err =
            ingest(store.as_ref(), &config, b"\x00\x01\x02 binary".to_vec(), Source::File, None, vec![], common::now())
                .await
                .unwrap_err();
        assert_eq!(err.code(), "not_mail");
        assert!(store.unfinished_messages(true).await.unwrap().is_empty());
        backend.finish().await;
    }
}

#[tokio::test]
async fn identical_version_from_an_eligible_second_forwarder_makes_the_job_appear() {
    for backend in common::backends().await {
        eprintln!("backend: {}", backend.name);
        let store = backend.store.clone();
        let config = common::config();
        let invite = String::from_utf8(common::fixture("zoom-invite.eml")).unwrap();
        let no_seat = invite
            .replace("From: Sender <alice@acme.com>", "From: No Seat <noseat@acme.com>")
            .replace("ORGANIZER;CN=Alice:mailto:alice@acme.com", "ORGANIZER:mailto:x@customer.example");
        let r =
            ingest(store.as_ref(), &config, no_seat.clone().into_bytes(), Source::File, None, vec![], common::now())
                .await
                .unwrap();
        assert_eq!((r.versions_stored, r.jobs_created), (1, 0));
        // Alice forwards the very same event (her own mail, so other bytes).
        let alice = no_seat.replace("From: No Seat <noseat@acme.com>", "From: Alice <alice@acme.com>");
        let r = ingest(store.as_ref(), &config, alice.into_bytes(), Source::File, None, vec![], common::now())
            .await
            .unwrap();
        assert_eq!((r.versions_stored, r.jobs_created), (0, 1));
        let jobs = active(store.as_ref()).await;
        assert_eq!(jobs[0].requesters, vec!["alice@acme.com".to_string()]);
        let history = store.history("review-1@acme.com").await.unwrap();
        assert_eq!(history.len(), 1, "one version");
        assert_eq!(history[0].message_ids.len(), 2, "linked to both messages");
        assert_eq!(history[0].decisions.len(), 2, "decided for each forwarder");
        backend.finish().await;
    }
}

#[tokio::test]
async fn mbox_from_line_is_ingested() {
    for backend in common::backends().await {
        eprintln!("backend: {}", backend.name);
        let store = backend.store.clone();
        let mut raw = b"From alice@acme.com Mon Jan  4 09:00:00 2027\n".to_vec();
        raw.extend(common::fixture("zoom-invite.eml"));
        let r =
            ingest(store.as_ref(), &common::config(), raw, Source::File, None, vec![], common::now()).await.unwrap();
        assert_eq!(r.jobs_created, 1);
        backend.finish().await;
    }
}

#[tokio::test]
async fn cancel_before_request_is_kept_and_an_equal_sequence_does_not_revive() {
    for backend in common::backends().await {
        eprintln!("backend: {}", backend.name);
        let store = backend.store.clone();
        let config = common::config();
        feed(store.as_ref(), &config, "zoom-cancel.eml", common::NOW).await;
        // A REQUEST at the cancel's SEQUENCE (2) with a later DTSTAMP: the CANCEL still wins.
        let request = String::from_utf8(common::fixture("zoom-update.eml"))
            .unwrap()
            .replace("SEQUENCE:1", "SEQUENCE:2")
            .replace("DTSTAMP:20270104T090000Z", "DTSTAMP:20270105T090000Z");
        let r = ingest(store.as_ref(), &config, request.into_bytes(), Source::File, None, vec![], common::now())
            .await
            .unwrap();
        assert_eq!((r.versions_stored, r.jobs_created), (1, 0));
        assert!(active(store.as_ref()).await.is_empty());
        backend.finish().await;
    }
}

#[tokio::test]
async fn a_reply_is_stored_and_changes_nothing() {
    for backend in common::backends().await {
        eprintln!("backend: {}", backend.name);
        let store = backend.store.clone();
        let config = common::config();
        feed(store.as_ref(), &config, "zoom-invite.eml", common::NOW).await;
        let before = active(store.as_ref()).await;
        let reply = String::from_utf8(common::fixture("zoom-update.eml"))
            .unwrap()
            .replace("METHOD:REQUEST", "METHOD:REPLY")
            .replace("method=REQUEST", "method=REPLY")
            .replace("SEQUENCE:1", "SEQUENCE:5");
        let r = ingest(store.as_ref(), &config, reply.into_bytes(), Source::File, None, vec![], common::now())
            .await
            .unwrap();
        assert_eq!(r.versions_stored, 1);
        assert_eq!(active(store.as_ref()).await, before);
        backend.finish().await;
    }
}

#[tokio::test]
async fn a_message_to_two_tenants_is_processed_for_each() {
    for backend in common::backends().await {
        eprintln!("backend: {}", backend.name);
        let store = backend.store.clone();
        let raw = String::from_utf8(common::fixture("zoom-invite.eml")).unwrap().replace(
            "To: Assistant <acme@assistant.example.com>",
            "To: acme@assistant.example.com, globex@assistant.example.com",
        );
        let r = ingest(store.as_ref(), &common::config(), raw.into_bytes(), Source::File, None, vec![], common::now())
            .await
            .unwrap();
        assert_eq!(r.tenants, vec!["acme".to_string(), "globex".to_string()]);
        // acme records it; globex has no such user.
        assert_eq!(r.versions_stored, 2);
        assert_eq!(r.jobs_created, 1);
        backend.finish().await;
    }
}

/// A store whose event recording panics: stands in for a bug met on a hostile mail.
struct PanickingStore(Arc<dyn Store>);

#[async_trait::async_trait]
impl Store for PanickingStore {
    async fn spool_message(&self, m: &store::NewMessage) -> Result<store::Spooled, store::StoreError> {
        self.0.spool_message(m).await
    }
    async fn spool_messages(&self, m: &[store::NewMessage]) -> Result<Vec<store::Spooled>, store::StoreError> {
        self.0.spool_messages(m).await
    }
    async fn load_message(&self, id: i64) -> Result<Option<store::StoredMessage>, store::StoreError> {
        self.0.load_message(id).await
    }
    async fn unfinished_messages(&self, include_failed: bool) -> Result<Vec<i64>, store::StoreError> {
        self.0.unfinished_messages(include_failed).await
    }
    async fn finish_message(
        &self,
        id: i64,
        outcome: &serde_json::Value,
        error: Option<&str>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), store::StoreError> {
        self.0.finish_message(id, outcome, error, now).await
    }
    async fn record_event(
        &self,
        _: &store::EventKey,
        _: i64,
        _: &invited::model::EventVersion,
        _: &str,
        _: chrono::DateTime<chrono::Utc>,
        _: &store::Decide<'_>,
    ) -> Result<store::RecordedEvent, store::StoreError> {
        panic!("bug while recording")
    }
    async fn uids_to_replan(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<(String, String)>, store::StoreError> {
        self.0.uids_to_replan(now).await
    }
    async fn replan(
        &self,
        tenant: &str,
        uid: &str,
        now: chrono::DateTime<chrono::Utc>,
        plan: &store::Replan<'_>,
    ) -> Result<store::AppliedChanges, store::StoreError> {
        self.0.replan(tenant, uid, now, plan).await
    }
    async fn jobs(&self, all: bool) -> Result<Vec<JobRow>, store::StoreError> {
        self.0.jobs(all).await
    }
    async fn history(&self, uid: &str) -> Result<Vec<store::HistoryEntry>, store::StoreError> {
        self.0.history(uid).await
    }
    async fn ping(&self) -> Result<(), store::StoreError> {
        self.0.ping().await
    }
}

#[async_trait::async_trait]
impl store::MailboxStore for PanickingStore {
    async fn mailbox_state(&self, mailbox: &str) -> Result<Option<store::MailboxState>, store::StoreError> {
        self.0.mailbox_state(mailbox).await
    }
    async fn start_mailbox(
        &self,
        mailbox: &str,
        uid_validity: u32,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<store::MailboxStart, store::StoreError> {
        self.0.start_mailbox(mailbox, uid_validity, now).await
    }
    async fn spool_from_mailbox(
        &self,
        mailbox: &str,
        uid_validity: u32,
        up_to_uid: u32,
        messages: &[store::NewMessage],
    ) -> Result<Vec<store::Spooled>, store::StoreError> {
        self.0.spool_from_mailbox(mailbox, uid_validity, up_to_uid, messages).await
    }
    async fn try_lease_mailbox(
        &self,
        mailbox: &str,
    ) -> Result<Option<Box<dyn store::MailboxLease>>, store::StoreError> {
        self.0.try_lease_mailbox(mailbox).await
    }
}

#[async_trait::async_trait]
impl store::RecorderQueue for PanickingStore {
    async fn claim_due_jobs(
        &self,
        recorder: &str,
        filter: &store::ClaimFilter,
        limit: u32,
        lease: chrono::TimeDelta,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<store::ClaimedJob>, store::StoreError> {
        self.0.claim_due_jobs(recorder, filter, limit, lease, now).await
    }
    async fn heartbeat(
        &self,
        job_id: i64,
        recorder: &str,
        lease: chrono::TimeDelta,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<store::HeartbeatOutcome, store::StoreError> {
        self.0.heartbeat(job_id, recorder, lease, now).await
    }
    async fn complete(
        &self,
        job_id: i64,
        recorder: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<store::CompleteOutcome, store::StoreError> {
        self.0.complete(job_id, recorder, now).await
    }
    async fn fail(
        &self,
        job_id: i64,
        recorder: &str,
        error: &str,
        now: chrono::DateTime<chrono::Utc>,
        policy: &store::RetryPolicy,
    ) -> Result<store::FailOutcome, store::StoreError> {
        self.0.fail(job_id, recorder, error, now, policy).await
    }
    async fn decline_consent(
        &self,
        job_id: i64,
        recorder: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<store::DeclineOutcome, store::StoreError> {
        self.0.decline_consent(job_id, recorder, now).await
    }
    async fn expire_missed(&self, now: chrono::DateTime<chrono::Utc>) -> Result<Vec<i64>, store::StoreError> {
        self.0.expire_missed(now).await
    }
}

#[async_trait::async_trait]
impl store::ReplyQueue for PanickingStore {
    async fn claim_due_replies(
        &self,
        worker: &str,
        limit: u32,
        lease: chrono::TimeDelta,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<store::ClaimedReply>, store::StoreError> {
        self.0.claim_due_replies(worker, limit, lease, now).await
    }
    async fn reply_sent(
        &self,
        id: i64,
        worker: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, store::StoreError> {
        self.0.reply_sent(id, worker, now).await
    }
    async fn reply_deferred(
        &self,
        id: i64,
        worker: &str,
        error: &str,
        retry_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, store::StoreError> {
        self.0.reply_deferred(id, worker, error, retry_at).await
    }
    async fn reply_failed(&self, id: i64, worker: &str, error: &str) -> Result<bool, store::StoreError> {
        self.0.reply_failed(id, worker, error).await
    }
    async fn replies_waiting(&self) -> Result<i64, store::StoreError> {
        self.0.replies_waiting().await
    }
}

#[tokio::test]
async fn a_panic_while_processing_fails_the_message_not_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let inner = open(&dir).await;
    let store = PanickingStore(inner.clone());
    let err = ingest(
        &store,
        &common::config(),
        common::fixture("zoom-invite.eml"),
        Source::File,
        None,
        vec![],
        common::now(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), "panicked");
    assert!(err.to_string().contains("bug while recording"));
    // Kept, marked failed, and offered to `reprocess`, which now succeeds.
    let failed = inner.unfinished_messages(true).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert!(inner.unfinished_messages(false).await.unwrap().is_empty());
    let r =
        invited::pipeline::process_message(inner.as_ref(), &common::config(), failed[0], common::now()).await.unwrap();
    assert_eq!(r.jobs_created, 1);
}

#[tokio::test]
async fn a_reply_after_the_meeting_does_not_cancel_the_pending_cloud_fetch() {
    for backend in common::backends().await {
        eprintln!("backend: {}", backend.name);
        let store = backend.store.clone();
        let config = common::config();
        feed(store.as_ref(), &config, "zoom-invite.eml", common::NOW).await;
        // The meeting ran 15:00–16:00Z; the fetch is due 16:15Z. A reply arrives at 16:05Z.
        let reply = String::from_utf8(common::fixture("zoom-invite.eml"))
            .unwrap()
            .replace("METHOD:REQUEST", "METHOD:REPLY")
            .replace("method=REQUEST", "method=REPLY");
        let r = ingest(
            store.as_ref(),
            &config,
            reply.into_bytes(),
            Source::File,
            None,
            vec![],
            common::at("2027-01-11T16:05:00Z"),
        )
        .await
        .unwrap();
        assert_eq!(r.jobs_cancelled, 0);
        assert_eq!(active(store.as_ref()).await.len(), 1);
        // An update moving the meeting to the next day moves the job along.
        let r = feed(store.as_ref(), &config, "zoom-update.eml", "2027-01-11T16:06:00Z").await;
        assert_eq!((r.jobs_rescheduled, r.jobs_created, r.jobs_cancelled), (1, 0, 0));
        assert_eq!(active(store.as_ref()).await[0].occurrence_start, common::at("2027-01-12T09:00:00Z"));
        backend.finish().await;
    }
}

#[tokio::test]
async fn a_job_that_ran_is_not_planned_again_while_its_meeting_is_on() {
    use invited::store::ClaimFilter;
    for backend in common::backends().await {
        eprintln!("backend: {}", backend.name);
        let store = backend.store.clone();
        let config = common::config();
        // The Teams meeting runs 15:00-16:00 UTC on 11 Jan; at 15:10 its bot_join is due at once.
        let on = common::at("2027-01-11T15:10:00Z");
        let r = ingest(store.as_ref(), &config, common::fixture("teams-invite.eml"), Source::File, None, vec![], on)
            .await
            .expect("ingest");
        assert_eq!(r.jobs_created, 1);
        let lease = chrono::TimeDelta::seconds(60);
        for outcome in ["done", "failed"] {
            if outcome == "failed" {
                // The meeting moves by a minute: new work, whose recorder gives up for good.
                let moved = String::from_utf8(common::fixture("teams-invite.eml"))
                    .unwrap()
                    .replace("SEQUENCE:0", "SEQUENCE:1")
                    .replace("T160000", "T160100")
                    .replace("T170000", "T170100");
                let r = ingest(store.as_ref(), &config, moved.into_bytes(), Source::File, None, vec![], on).await;
                assert_eq!(r.expect("ingest").jobs_created, 1, "a moved meeting is new work");
            }
            let claimed = store.claim_due_jobs("r", &ClaimFilter::default(), 10, lease, on).await.expect("claim");
            assert_eq!(claimed.len(), 1, "{outcome}: {claimed:?}");
            if outcome == "done" {
                store.complete(claimed[0].id, "r", on).await.expect("complete");
            } else {
                let policy = invited::store::RetryPolicy {
                    max_attempts: 1,
                    base: chrono::TimeDelta::seconds(30),
                    max: chrono::TimeDelta::seconds(30),
                };
                store.fail(claimed[0].id, "r", "bot crashed", on, &policy).await.expect("fail");
            }
            // The scheduler's next ticks, and the same invite forwarded again, send no second bot.
            for minutes in [1, 5] {
                let later = on + chrono::TimeDelta::minutes(minutes);
                let created = invited::pipeline::replan(store.as_ref(), &config, later).await.expect("replan");
                assert_eq!(created, 0, "{outcome}: replan at +{minutes} min made a job");
            }
            assert!(active(store.as_ref()).await.is_empty(), "{outcome}: {:?}", active(store.as_ref()).await);
        }
        backend.finish().await;
    }
}
