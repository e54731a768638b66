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
