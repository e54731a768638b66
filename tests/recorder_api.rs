//! The recorder API over real HTTP (127.0.0.1, port 0) on a real SQLite file: auth, claims
//! under a lease, heartbeats, completion, retries, consent declines and missed meetings.
//! Handlers use the real clock, so the meetings here are placed around the real now; where
//! time must pass (an expired lease, a retry), the store is called with an explicit `now`.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use invited::config::{Config, RecorderToken};
use invited::pipeline::{ingest, ProcessReport};
use invited::store::{
    self, ClaimFilter, FailOutcome, FinalFailure, HeartbeatOutcome, Refusal, RetryPolicy, Source, Store,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TOKEN_A: &str = "recorder-a-token-0123456789";
const TOKEN_B: &str = "recorder-b-token-0123456789";

struct App {
    addr: SocketAddr,
    store: Arc<dyn Store>,
    config: Config,
    _dir: tempfile::TempDir,
}

/// A fresh store and the router on a port-0 listener, with recorders `a` and `b`.
async fn spawn_app() -> App {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store::open(&format!("sqlite://{}/invited.db", dir.path().display())).await.expect("store opens");
    let mut config = common::config();
    config.recorders.tokens = vec![RecorderToken::new("a", TOKEN_A), RecorderToken::new("b", TOKEN_B)];
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = invited::http::router(store.clone(), &config.recorders);
    tokio::spawn(async move { axum::serve(listener, app).await });
    App { addr, store, config, _dir: dir }
}

impl App {
    /// One HTTP/1.1 request; the status and the JSON body (`Null` when empty).
    async fn post(&self, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut stream = TcpStream::connect(self.addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        let text = String::from_utf8(raw).expect("utf-8 answer");
        let (head, body) = text.split_once("\r\n\r\n").expect("header end");
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status line");
        let json = if body.is_empty() { Value::Null } else { serde_json::from_str(body).expect("JSON body") };
        (status, json)
    }

    async fn claim(&self, token: &str, body: Value) -> Vec<Value> {
        let (status, answer) = self.post("/v1/jobs/claim", Some(token), Some(body)).await;
        assert_eq!(status, 200, "{answer}");
        answer["jobs"].as_array().cloned().expect("jobs array")
    }

    async fn ingest_at(&self, raw: Vec<u8>, now: DateTime<Utc>) -> ProcessReport {
        ingest(self.store.as_ref(), &self.config, raw, Source::File, None, vec![], now).await.expect("ingest")
    }

    async fn state_of(&self, id: i64) -> String {
        let jobs = self.store.jobs(true).await.expect("jobs");
        jobs.into_iter().find(|j| j.id == id).map(|j| j.state).expect("job exists")
    }
}

fn now() -> DateTime<Utc> {
    Utc::now().duration_trunc(TimeDelta::seconds(1)).expect("truncate")
}

fn ics_time(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// The Teams fixture (a bot_join) as meeting `n`, from `start` to `end`.
fn teams_invite(n: usize, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<u8> {
    String::from_utf8(common::fixture("teams-invite.eml"))
        .expect("utf-8 fixture")
        .replace("UID:teams-1@acme.com", &format!("UID:meeting-{n}@acme.com"))
        .replace("<teams-invite.eml@test.example>", &format!("<meeting-{n}@test.example>"))
        .replace("meeting_abc", &format!("meeting_{n}"))
        .replace("DTSTART;TZID=Europe/Berlin:20270111T160000", &format!("DTSTART:{}", ics_time(start)))
        .replace("DTEND;TZID=Europe/Berlin:20270111T170000", &format!("DTEND:{}", ics_time(end)))
        .into_bytes()
}

/// Meeting `n`, under way now: its bot_join is due at once.
fn due_invite(n: usize) -> Vec<u8> {
    teams_invite(n, now() - TimeDelta::minutes(5), now() + TimeDelta::minutes(55))
}

fn id_of(job: &Value) -> i64 {
    job["id"].as_i64().expect("job id")
}

#[tokio::test]
async fn requests_without_a_valid_token_are_refused() {
    let app = spawn_app().await;
    for token in [None, Some("not-a-recorder-token-at-all"), Some("")] {
        let (status, body) = app.post("/v1/jobs/claim", token, None).await;
        assert_eq!(status, 401, "{token:?}");
        assert_eq!(body["error"], "unauthorized");
        assert!(body["message"].as_str().is_some_and(|m| m.contains("Bearer")));
    }
    let (status, _) = app.post("/v1/jobs/1/complete", Some("wrong"), None).await;
    assert_eq!(status, 401);
    // Bad input after a good token: JSON errors too.
    let (status, body) = app.post("/v1/jobs/claim", Some(TOKEN_A), Some(json!({"kinds": ["dance"]}))).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));
    let (status, body) = app.post("/v1/jobs/x/complete", Some(TOKEN_A), None).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));
    let (status, body) = app.post("/v1/jobs/999/complete", Some(TOKEN_A), None).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("unknown_job")));
    let big = json!({"error": "x".repeat(invited::http::MAX_BODY_BYTES)});
    let (status, body) = app.post("/v1/jobs/999/fail", Some(TOKEN_A), Some(big)).await;
    assert_eq!((status, body["error"].as_str()), (413, Some("body_too_large")));
}

#[tokio::test]
async fn a_claim_hands_out_due_jobs_once_while_the_lease_holds() {
    let app = spawn_app().await;
    let r = app.ingest_at(due_invite(1), now()).await;
    assert_eq!(r.jobs_created, 1);
    let tomorrow = now() + TimeDelta::days(1);
    let r = app.ingest_at(teams_invite(2, tomorrow, tomorrow + TimeDelta::hours(1)), now()).await;
    assert_eq!(r.jobs_created, 1, "a job that is not due yet");

    let jobs = app.claim(TOKEN_A, json!({})).await;
    assert_eq!(jobs.len(), 1, "only the due job: {jobs:?}");
    let job = &jobs[0];
    for key in [
        "id",
        "tenant",
        "event_uid",
        "occurrence_start",
        "kind",
        "run_at",
        "state",
        "provider",
        "meeting_url",
        "flags",
        "requesters",
        "attempts",
        "lease_until",
    ] {
        assert!(job.get(key).is_some(), "claimed job lacks {key}: {job}");
    }
    assert_eq!(job["event_uid"], "meeting-1@acme.com");
    assert_eq!(
        (job["kind"].as_str(), job["state"].as_str(), job["attempts"].as_i64()),
        (Some("bot_join"), Some("claimed"), Some(1))
    );
    assert_eq!(job["requesters"], json!(["alice@acme.com"]));
    assert_eq!(app.state_of(id_of(job)).await, "claimed");

    // While the lease holds nobody else gets it, nor does the holder get it twice.
    assert!(app.claim(TOKEN_B, json!({})).await.is_empty());
    assert!(app.claim(TOKEN_A, json!({"limit": 5})).await.is_empty());

    // The lease (120 s) runs out: the job is claimable again.
    let later = Utc::now() + TimeDelta::seconds(121);
    let lease = TimeDelta::seconds(120);
    let again = app.store.claim_due_jobs("b", &ClaimFilter::default(), 10, lease, later).await.expect("claim");
    assert_eq!(again.iter().map(|j| j.id).collect::<Vec<_>>(), vec![id_of(job)]);
    assert_eq!(again[0].attempts, 2);
    // The first holder has lost it.
    let (status, body) = app.post(&format!("/v1/jobs/{}/heartbeat", id_of(job)), Some(TOKEN_A), None).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("not_yours")));
}

#[tokio::test]
async fn claims_filter_by_kind_and_provider() {
    let app = spawn_app().await;
    app.ingest_at(due_invite(1), now()).await;
    assert!(app.claim(TOKEN_A, json!({"kinds": ["cloud_fetch"]})).await.is_empty());
    assert!(app.claim(TOKEN_A, json!({"providers": ["zoom", "webex"]})).await.is_empty());
    let jobs = app.claim(TOKEN_A, json!({"kinds": ["bot_join"], "providers": ["teams"]})).await;
    assert_eq!(jobs.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_recorders_claiming_concurrently_get_every_job_exactly_once() {
    let app = Arc::new(spawn_app().await);
    for n in 0..20 {
        assert_eq!(app.ingest_at(due_invite(n), now()).await.jobs_created, 1);
    }
    let recorder = |token: &'static str| {
        let app = app.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let jobs = app.claim(token, json!({"limit": 3})).await;
                if jobs.is_empty() {
                    return got;
                }
                assert!(jobs.len() <= 3);
                got.extend(jobs.iter().map(id_of));
            }
        })
    };
    let (a, b) = (recorder(TOKEN_A), recorder(TOKEN_B));
    let (a, b) = (a.await.expect("recorder a"), b.await.expect("recorder b"));
    let all: Vec<i64> = a.iter().chain(&b).copied().collect();
    let distinct: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 20, "a got {a:?}, b got {b:?}");
    assert_eq!(distinct.len(), 20, "a job was handed out twice: a {a:?}, b {b:?}");
    let jobs = app.store.jobs(false).await.expect("jobs");
    assert!(jobs.iter().all(|j| j.state == "claimed"));
}

#[tokio::test]
async fn a_heartbeat_extends_the_holders_lease_only() {
    let app = spawn_app().await;
    app.ingest_at(due_invite(1), now()).await;
    let job = app.claim(TOKEN_A, json!({})).await.remove(0);
    let id = id_of(&job);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let (status, body) = app.post(&format!("/v1/jobs/{id}/heartbeat"), Some(TOKEN_A), None).await;
    assert_eq!(status, 200, "{body}");
    let lease = |v: &Value| common::at(v["lease_until"].as_str().expect("lease_until"));
    assert!(lease(&body) > lease(&job), "{} > {}", body["lease_until"], job["lease_until"]);

    let (status, body) = app.post(&format!("/v1/jobs/{id}/heartbeat"), Some(TOKEN_B), None).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("not_yours")));
    let (status, _) = app.post("/v1/jobs/4242/heartbeat", Some(TOKEN_A), None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn complete_marks_the_job_done() {
    let app = spawn_app().await;
    app.ingest_at(due_invite(1), now()).await;
    let id = id_of(&app.claim(TOKEN_A, json!({})).await[0]);

    let (status, _) = app.post(&format!("/v1/jobs/{id}/complete"), Some(TOKEN_B), None).await;
    assert_eq!(status, 409, "not b's to complete");
    let (status, body) = app.post(&format!("/v1/jobs/{id}/complete"), Some(TOKEN_A), None).await;
    assert_eq!((status, body), (200, json!({"id": id, "state": "done"})));
    assert!(app.store.jobs(false).await.expect("jobs").is_empty(), "a done job is no longer active");
    assert_eq!(app.state_of(id).await, "done");

    // A retried complete is answered the same; anything else on a finished job is a conflict.
    let (status, _) = app.post(&format!("/v1/jobs/{id}/complete"), Some(TOKEN_A), None).await;
    assert_eq!(status, 200);
    let (status, body) = app.post(&format!("/v1/jobs/{id}/heartbeat"), Some(TOKEN_A), None).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("already_finished")));
    let (status, body) = app.post(&format!("/v1/jobs/{id}/fail"), Some(TOKEN_A), Some(json!({"error": "x"}))).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("already_finished")));
}

#[tokio::test]
async fn a_failure_is_retried_with_backoff_then_final() {
    let app = spawn_app().await;
    app.ingest_at(due_invite(1), now()).await;
    let id = id_of(&app.claim(TOKEN_A, json!({})).await[0]);

    let (status, _) = app.post(&format!("/v1/jobs/{id}/fail"), Some(TOKEN_A), Some(json!({}))).await;
    assert_eq!(status, 400, "a failure says what went wrong");
    let before = Utc::now() - TimeDelta::milliseconds(1);
    let (status, body) =
        app.post(&format!("/v1/jobs/{id}/fail"), Some(TOKEN_A), Some(json!({"error": "lobby timeout"}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["state"].as_str(), body["attempts"].as_i64()), (Some("scheduled"), Some(1)));
    let retry_at = common::at(body["retry_at"].as_str().expect("retry_at"));
    assert!(retry_at >= before + TimeDelta::seconds(30) && retry_at <= Utc::now() + TimeDelta::seconds(30));
    let job = app.store.jobs(false).await.expect("jobs").remove(0);
    assert_eq!((job.state.as_str(), job.run_at), ("scheduled", retry_at), "run_at moved to the retry");
    assert!(app.claim(TOKEN_A, json!({})).await.is_empty(), "not due before the backoff");

    // Second and third attempts, at the retry times: 30 s then 60 s, then final.
    let policy = RetryPolicy { max_attempts: 3, base: TimeDelta::seconds(30), max: TimeDelta::seconds(900) };
    let lease = TimeDelta::seconds(120);
    let any = ClaimFilter::default();
    let claim = |at| app.store.claim_due_jobs("b", &any, 10, lease, at);
    let second = claim(retry_at).await.expect("claim");
    assert_eq!((second.len(), second[0].attempts), (1, 2));
    let outcome = app.store.fail(id, "b", "no audio", retry_at, &policy).await.expect("fail");
    let third_at = retry_at + TimeDelta::seconds(60);
    assert_eq!(outcome, FailOutcome::Retrying { attempts: 2, retry_at: third_at });
    assert_eq!(claim(third_at).await.expect("claim")[0].attempts, 3);
    let outcome = app.store.fail(id, "b", "no audio", third_at, &policy).await.expect("fail");
    assert_eq!(outcome, FailOutcome::Failed { attempts: 3, reason: FinalFailure::AttemptsExhausted });
    assert_eq!(app.state_of(id).await, "failed");
    assert!(claim(third_at + TimeDelta::hours(1)).await.expect("claim").is_empty());
}

#[tokio::test]
async fn a_bot_join_is_not_retried_past_its_meeting() {
    let app = spawn_app().await;
    // The Teams fixture: 15:00–16:00Z on 2027-01-11.
    app.ingest_at(common::fixture("teams-invite.eml"), common::now()).await;
    let policy = RetryPolicy { max_attempts: 5, base: TimeDelta::seconds(30), max: TimeDelta::seconds(900) };
    let t = common::at("2027-01-11T15:59:40Z");
    let job = app.store.claim_due_jobs("a", &ClaimFilter::default(), 1, TimeDelta::seconds(60), t).await.unwrap();
    let outcome = app.store.fail(job[0].id, "a", "kicked out", t, &policy).await.unwrap();
    assert_eq!(outcome, FailOutcome::Failed { attempts: 1, reason: FinalFailure::MeetingOver });
    // And an ended meeting's bot_join is never handed out.
    let after = common::at("2027-01-11T16:00:00Z");
    app.ingest_at(teams_invite(9, common::at("2027-01-11T15:00:00Z"), after), common::now()).await;
    let none = app.store.claim_due_jobs("a", &ClaimFilter::default(), 10, TimeDelta::seconds(60), after).await;
    assert!(none.unwrap().is_empty());
}

#[tokio::test]
async fn a_consent_decline_cancels_the_job_and_keeps_it_cancelled() {
    let app = spawn_app().await;
    let invite = due_invite(1);
    app.ingest_at(invite.clone(), now()).await;
    let id = id_of(&app.claim(TOKEN_A, json!({})).await[0]);

    let (status, _) = app.post(&format!("/v1/jobs/{id}/consent-declined"), Some(TOKEN_B), None).await;
    assert_eq!(status, 409, "only the holder knows who declined");
    let (status, body) = app.post(&format!("/v1/jobs/{id}/consent-declined"), Some(TOKEN_A), None).await;
    assert_eq!((status, body), (200, json!({"id": id, "state": "cancelled"})));
    let (status, _) = app.post(&format!("/v1/jobs/{id}/consent-declined"), Some(TOKEN_A), None).await;
    assert_eq!(status, 200, "a retried report is answered the same");
    assert_eq!(app.state_of(id).await, "cancelled");

    // The same invite forwarded again (another mail, the same event): decided again, no job.
    let again = String::from_utf8(invite)
        .expect("utf-8")
        .replace("Message-ID: <meeting-1@test.example>", "Message-ID: <meeting-1-again@test.example>")
        .into_bytes();
    let r = app.ingest_at(again, now()).await;
    assert!(!r.duplicate_message);
    assert_eq!(r.eligible_decisions, 1, "still eligible");
    assert_eq!(r.jobs_created, 0, "the declined occurrence gets no job");
    assert!(app.store.jobs(false).await.expect("jobs").is_empty());
}

#[tokio::test]
async fn unclaimed_bot_joins_of_ended_meetings_are_marked_missed() {
    let app = spawn_app().await;
    app.ingest_at(common::fixture("teams-invite.eml"), common::now()).await; // bot_join, ends 16:00Z
    app.ingest_at(common::fixture("zoom-invite.eml"), common::now()).await; // cloud_fetch, after 16:00Z
    let jobs = app.store.jobs(false).await.expect("jobs");
    let bot = jobs.iter().find(|j| j.kind == "bot_join").expect("bot_join").id;

    assert!(app.store.expire_missed(common::at("2027-01-11T15:59:59Z")).await.expect("expire").is_empty());
    let missed = app.store.expire_missed(common::at("2027-01-11T16:00:00Z")).await.expect("expire");
    assert_eq!(missed, vec![bot]);
    assert_eq!(app.state_of(bot).await, "failed");
    let left = app.store.jobs(false).await.expect("jobs");
    assert_eq!(left.iter().map(|j| j.kind.as_str()).collect::<Vec<_>>(), vec!["cloud_fetch"]);
    assert!(app.store.expire_missed(common::at("2027-01-12T00:00:00Z")).await.expect("expire").is_empty());
}

#[tokio::test]
async fn store_outcomes_are_values() {
    let app = spawn_app().await;
    let lease = TimeDelta::seconds(60);
    let t = common::now();
    assert_eq!(app.store.heartbeat(77, "a", lease, t).await.unwrap(), HeartbeatOutcome::Refused(Refusal::UnknownJob));
    app.ingest_at(common::fixture("teams-invite.eml"), t).await;
    let id = app.store.jobs(false).await.unwrap()[0].id;
    assert_eq!(
        app.store.heartbeat(id, "a", lease, t).await.unwrap(),
        HeartbeatOutcome::Refused(Refusal::NotClaimed { state: "scheduled".into() })
    );
}

#[test]
fn recorder_tokens_come_from_the_config_or_the_environment() {
    let base = std::fs::read_to_string(common::fixtures().join("config.toml")).expect("config");
    let with = |section: &str| Config::from_toml(&format!("{section}\n{base}"));

    let config =
        with("[recorders]\nlease_seconds = 30\n[[recorders.tokens]]\nname = \"a\"\ntoken = \"dev-recorder-token\"")
            .expect("loads");
    assert_eq!(config.recorders.lease_seconds, 30);
    assert_eq!(config.recorders.max_attempts, 3);
    assert_eq!(config.recorders.tokens[0].secret(), Some("dev-recorder-token"));

    let err = with("[[recorders.tokens]]\nname = \"a\"\ntoken_env = \"INVITED_TEST_NO_SUCH_VARIABLE\"")
        .expect_err("missing variable");
    assert!(err.to_string().contains("recorders.tokens[0].token_env"), "{err}");

    let err = with("[[recorders.tokens]]\nname = \"a\"\ntoken = \"dev-recorder-token\"\ntoken_env = \"X\"")
        .expect_err("both");
    assert!(err.to_string().contains("recorders.tokens[0]"), "{err}");

    let err = with("[recorders]\nmax_attempts = 0").expect_err("range");
    assert!(err.to_string().contains("recorders.max_attempts"), "{err}");
}
