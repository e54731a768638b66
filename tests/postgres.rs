//! PostgreSQL as the shared state of several daemons: each "daemon" here is its own
//! store (its own pool) on one database, working at the same time.

mod common;

use std::sync::Arc;

use invited::pipeline::ingest;
use invited::store::{self, Source, Store};

async fn nodes(url: &str, n: usize) -> Vec<Arc<dyn Store>> {
    let mut all = Vec::new();
    for _ in 0..n {
        all.push(store::open(url).await.expect("node opens"));
    }
    all
}

#[tokio::test]
async fn daemons_starting_together_migrate_once() {
    let Some(db) = common::pg_database().await else { return };
    let opens: Vec<_> = (0..3).map(|_| store::open(&db.url)).collect();
    for r in futures_util::future::join_all(opens).await {
        r.expect("every node starts");
    }
    db.drop_now().await;
}

#[tokio::test]
async fn the_same_message_to_two_daemons_is_stored_once() {
    let Some(db) = common::pg_database().await else { return };
    let n = nodes(&db.url, 2).await;
    let config = common::config();
    let raw = common::fixture("zoom-invite.eml");
    let (a, b) = tokio::join!(
        ingest(n[0].as_ref(), &config, raw.clone(), Source::Smtp, None, vec![], common::now()),
        ingest(n[1].as_ref(), &config, raw.clone(), Source::Smtp, None, vec![], common::now()),
    );
    let (a, b) = (a.expect("node 0"), b.expect("node 1"));
    assert_eq!(a.message_id, b.message_id, "one stored message");
    assert_eq!(a.jobs_created + b.jobs_created, 1);
    assert_eq!(n[0].jobs(true).await.unwrap().len(), 1);
    db.drop_now().await;
}

#[tokio::test]
async fn mail_about_one_meeting_on_many_daemons_gives_one_set_of_jobs() {
    let Some(db) = common::pg_database().await else { return };
    let n = nodes(&db.url, 3).await;
    let config = Arc::new(common::config());
    // The invite, its update and two people's own copies (other UIDs, same meeting),
    // delivered to different daemons at once, many times over.
    let invite = String::from_utf8(common::fixture("teams-invite.eml")).unwrap();
    let copies: Vec<Vec<u8>> = (0..12)
        .map(|i| {
            invite
                .replace("UID:teams-1@acme.com", &format!("UID:teams-copy-{}@acme.com", i % 4))
                .replace("Message-ID: <teams-invite.eml@test.example>", &format!("Message-ID: <copy-{i}@t>"))
                .into_bytes()
        })
        .collect();
    let mut tasks = Vec::new();
    for (i, raw) in copies.into_iter().enumerate() {
        let node = n[i % 3].clone();
        let config = config.clone();
        tasks.push(tokio::spawn(async move {
            ingest(node.as_ref(), &config, raw, Source::Smtp, None, vec![], common::now()).await
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("ingest");
    }
    let jobs = n[0].jobs(false).await.unwrap();
    assert_eq!(jobs.len(), 1, "four UIDs of one meeting, one bot: {jobs:?}");
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recorders_on_three_daemons_claim_every_job_exactly_once() {
    use invited::store::ClaimFilter;
    let Some(db) = common::pg_database().await else { return };
    let n = nodes(&db.url, 3).await;
    let config = common::config();
    let invite = String::from_utf8(common::fixture("teams-invite.eml")).unwrap();
    for i in 0..30 {
        let raw = invite
            .replace("UID:teams-1@acme.com", &format!("UID:claim-{i}@acme.com"))
            .replace("meeting_abc", &format!("meeting_{i}"))
            .into_bytes();
        ingest(n[i % 3].as_ref(), &config, raw, Source::Smtp, None, vec![], common::now()).await.unwrap();
    }
    // The bot joins at 14:59 on 11 Jan; claim once it is due.
    let due = common::at("2027-01-11T15:00:00Z");
    let lease = chrono::TimeDelta::seconds(60);
    let mut tasks = Vec::new();
    for (i, node) in n.iter().enumerate() {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let jobs = node.claim_due_jobs(&format!("r{i}"), &ClaimFilter::default(), 4, lease, due).await.unwrap();
                if jobs.is_empty() {
                    return got;
                }
                got.extend(jobs.into_iter().map(|j| j.id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    let before = all.len();
    all.dedup();
    assert_eq!((before, all.len()), (30, 30), "every job once");
    // A lease that ran out makes the job claimable again, by anyone.
    let later = due + chrono::TimeDelta::seconds(61);
    let again = n[0].claim_due_jobs("r9", &ClaimFilter::default(), 100, lease, later).await.unwrap();
    assert_eq!(again.len(), 30);
    db.drop_now().await;
}

#[tokio::test]
async fn periodic_work_runs_on_one_daemon_at_a_time() {
    let Some(db) = common::pg_database().await else { return };
    let n = nodes(&db.url, 2).await;
    let config = common::config();
    let raw = common::fixture("teams-invite.eml");
    ingest(n[0].as_ref(), &config, raw, Source::Smtp, None, vec![], common::now()).await.unwrap();
    let state = || async { n[0].jobs(true).await.unwrap().into_iter().map(|j| j.state).collect::<Vec<_>>() };
    // The bot join ends 11 Jan 16:00 UTC; by the 12th it is missed.
    let after = common::at("2027-01-12T00:00:00Z");

    let lease = n[0].lead_periodic_work().await.unwrap().expect("the first daemon leads");
    assert!(n[1].lead_periodic_work().await.unwrap().is_none(), "one leader at a time");
    invited::serve::periodic_work(&config, n[1].as_ref(), after).await;
    assert_eq!(state().await, ["scheduled"], "a daemon that does not lead skips the tick");

    lease.release().await;
    invited::serve::periodic_work(&config, n[1].as_ref(), after).await;
    assert_eq!(state().await, ["failed"], "once released, the next daemon does the work");

    // A lease dropped without release (a daemon dying mid-work) frees the work as well.
    drop(n[1].lead_periodic_work().await.unwrap().expect("free again"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(lease) = n[0].lead_periodic_work().await.unwrap() {
            lease.release().await;
            break;
        }
        assert!(std::time::Instant::now() < deadline, "a dropped lease is never freed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    db.drop_now().await;
}

/// SQLSTATEs raised by a real server. Several "try again" ones are all digits (40001,
/// 08006, 53300), which must not be read as SQLite's numeric codes.
#[tokio::test]
async fn postgres_errors_worth_retrying_are_transient() {
    use sqlx::Connection;
    let admin = common::pg_admin_url();
    let mut conn = match sqlx::PgConnection::connect(&admin).await {
        Ok(c) => c,
        Err(e) => return common::skip_or_fail(&format!("no PostgreSQL at {admin}: {e}")),
    };
    let cases = [
        ("40001", true),
        ("40P01", true),
        ("08006", true),
        ("53300", true),
        ("57P01", true),
        ("23505", false),
        ("22012", false),
        ("42P01", false),
    ];
    for (sqlstate, transient) in cases {
        let sql = format!("DO $$ BEGIN RAISE EXCEPTION 'raised' USING ERRCODE = '{sqlstate}'; END $$");
        let e = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.expect_err("raised");
        let e = store::StoreError::from(e);
        assert_eq!(e.is_transient(), transient, "{sqlstate}: {e}");
    }
}
