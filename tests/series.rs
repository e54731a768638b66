//! A UID over time: a series, its overrides and cancellations, in any arrival order.

mod common;

use std::sync::Arc;

use invited::pipeline::ingest;
use invited::store::{self, Source, Store};

const ZOOM: &str = "LOCATION:https://zoom.us/j/111";
const TEAMS: &str =
    "X-MICROSOFT-SKYPETEAMSMEETINGURL:https://teams.microsoft.com/l/meetup-join/19%3ameeting_s%40thread.v2/0";

/// One mail about the series `series-1`: `rid` (RECURRENCE-ID, UTC) makes it about one occurrence.
fn mail(method: &str, seq: i64, rid: Option<&str>, start: &str, end: &str, extra: &str) -> Vec<u8> {
    let rid = rid.map(|r| format!("RECURRENCE-ID:{r}\r\n")).unwrap_or_default();
    format!(
        "From: alice@acme.com\r\nTo: acme@assistant.example.com\r\nSubject: s\r\nMessage-ID: <{method}{seq}{rid}{start}@t>\r\n\
         Content-Type: text/calendar; method={method}\r\n\r\nBEGIN:VCALENDAR\r\nMETHOD:{method}\r\nBEGIN:VEVENT\r\n\
         UID:series-1\r\nSEQUENCE:{seq}\r\nDTSTAMP:20270104T090000Z\r\n{rid}DTSTART:{start}\r\nDTEND:{end}\r\n\
         SUMMARY:Standup\r\nORGANIZER:mailto:alice@acme.com\r\n{extra}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    .into_bytes()
}

fn daily(seq: i64, link: &str) -> Vec<u8> {
    mail("REQUEST", seq, None, "20270111T150000Z", "20270111T160000Z", &format!("RRULE:FREQ=DAILY;COUNT=4\r\n{link}"))
}

async fn open(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    store::open(&format!("sqlite://{}/s.db", dir.path().display())).await.unwrap()
}

async fn feed(store: &dyn Store, raw: Vec<u8>) {
    ingest(store, &common::config(), raw, Source::File, None, vec![], common::now()).await.unwrap();
}

/// Active jobs without their ids: what a recorder fleet would see.
async fn plan(store: &dyn Store) -> Vec<(String, String, String, String)> {
    let mut jobs: Vec<_> = store
        .jobs(false)
        .await
        .unwrap()
        .into_iter()
        .map(|j| (j.occurrence_start.to_rfc3339(), j.kind, j.run_at.to_rfc3339(), j.meeting_url))
        .collect();
    jobs.sort();
    jobs
}

#[tokio::test]
async fn a_series_gets_one_job_per_occurrence() {
    for backend in common::backends().await {
        eprintln!("backend: {}", backend.name);
        let store = backend.store.clone();
        feed(store.as_ref(), daily(0, TEAMS)).await;
        let jobs = plan(store.as_ref()).await;
        let starts: Vec<_> = jobs.iter().map(|j| j.0.as_str()).collect();
        assert_eq!(
            starts,
            [
                "2027-01-11T15:00:00+00:00",
                "2027-01-12T15:00:00+00:00",
                "2027-01-13T15:00:00+00:00",
                "2027-01-14T15:00:00+00:00"
            ]
        );
        backend.finish().await;
    }
}

#[tokio::test]
async fn an_override_moves_its_occurrence_and_a_cancel_removes_one() {
    for backend in common::backends().await {
        eprintln!("backend: {}", backend.name);
        let store = backend.store.clone();
        feed(store.as_ref(), daily(0, TEAMS)).await;
        let moved = mail("REQUEST", 1, Some("20270112T150000Z"), "20270112T170000Z", "20270112T180000Z", TEAMS);
        feed(store.as_ref(), moved).await;
        let cancel = mail("CANCEL", 1, Some("20270113T150000Z"), "20270113T150000Z", "20270113T160000Z", "");
        feed(store.as_ref(), cancel).await;
        let starts: Vec<_> = plan(store.as_ref()).await.into_iter().map(|j| j.0).collect();
        assert_eq!(starts, ["2027-01-11T15:00:00+00:00", "2027-01-12T17:00:00+00:00", "2027-01-14T15:00:00+00:00"]);
        // The moved occurrence kept its job, moved (not a second bot).
        let all = store.jobs(true).await.unwrap();
        assert_eq!(all.iter().filter(|j| j.state == "cancelled").count(), 1, "only the cancelled occurrence");

        // Cancelling the series cancels the override's job too.
        let cancel_all = mail("CANCEL", 2, None, "20270111T150000Z", "20270111T160000Z", "RRULE:FREQ=DAILY;COUNT=4");
        feed(store.as_ref(), cancel_all).await;
        assert!(plan(store.as_ref()).await.is_empty());
        backend.finish().await;
    }
}

#[tokio::test]
async fn an_exception_only_request_schedules_just_that_occurrence() {
    for backend in common::backends().await {
        eprintln!("backend: {}", backend.name);
        let store = backend.store.clone();
        feed(
            store.as_ref(),
            mail("REQUEST", 1, Some("20270112T150000Z"), "20270112T170000Z", "20270112T180000Z", ZOOM),
        )
        .await;
        let jobs = plan(store.as_ref()).await;
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].0, "2027-01-12T17:00:00+00:00");
        backend.finish().await;
    }
}

/// Every permutation of `items`, by Heap's algorithm.
fn permutations(items: usize) -> Vec<Vec<usize>> {
    fn heap(k: usize, a: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if k <= 1 {
            out.push(a.clone());
            return;
        }
        for i in 0..k {
            heap(k - 1, a, out);
            let j = if k.is_multiple_of(2) { i } else { 0 };
            a.swap(j, k - 1);
        }
    }
    let mut out = Vec::new();
    heap(items, &mut (0..items).collect(), &mut out);
    out
}

#[tokio::test]
async fn every_arrival_order_gives_the_same_jobs() {
    let mails = [
        daily(0, ZOOM),
        daily(1, TEAMS),
        mail("REQUEST", 1, Some("20270112T150000Z"), "20270112T170000Z", "20270112T180000Z", TEAMS),
        mail("CANCEL", 1, Some("20270113T150000Z"), "20270113T150000Z", "20270113T160000Z", ""),
        mail("REPLY", 3, None, "20270111T150000Z", "20270111T160000Z", ZOOM),
    ];
    let orders = permutations(mails.len());
    assert_eq!(orders.len(), 120);
    let mut expected = None;
    for order in orders {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        for &i in &order {
            feed(store.as_ref(), mails[i].clone()).await;
        }
        let got = plan(store.as_ref()).await;
        match &expected {
            None => {
                let starts: Vec<_> = got.iter().map(|j| j.0.as_str()).collect();
                assert_eq!(
                    starts,
                    ["2027-01-11T15:00:00+00:00", "2027-01-12T17:00:00+00:00", "2027-01-14T15:00:00+00:00"],
                    "order {order:?}"
                );
                assert!(got.iter().all(|j| j.1 == "bot_join" && j.3.contains("teams")), "{got:?}");
                expected = Some(got);
            }
            Some(want) => assert_eq!(&got, want, "order {order:?}"),
        }
    }
}

#[tokio::test]
async fn occurrences_coming_inside_the_horizon_get_their_jobs_as_time_passes() {
    for backend in common::backends().await {
        eprintln!("backend: {}", backend.name);
        let store = backend.store.clone();
        let config = common::config();
        // Weekly for ten weeks from 11 Jan; the horizon is 30 days from 4 Jan.
        let weekly = mail(
            "REQUEST",
            0,
            None,
            "20270111T150000Z",
            "20270111T160000Z",
            &format!("RRULE:FREQ=WEEKLY;COUNT=10\r\n{TEAMS}"),
        );
        feed(store.as_ref(), weekly).await;
        assert_eq!(plan(store.as_ref()).await.len(), 4, "11, 18, 25 Jan and 1 Feb");
        // Nothing changes when nothing moved.
        assert_eq!(invited::pipeline::replan(store.as_ref(), &config, common::now()).await.unwrap(), 0);
        // Three weeks later, three more weeks are inside the horizon.
        let later = common::at("2027-01-25T12:00:00Z");
        assert_eq!(invited::pipeline::replan(store.as_ref(), &config, later).await.unwrap(), 3);
        let starts: Vec<_> = plan(store.as_ref()).await.into_iter().map(|j| j.0).collect();
        assert_eq!(starts.len(), 7);
        assert_eq!(starts.last().map(String::as_str), Some("2027-02-22T15:00:00+00:00"));
        backend.finish().await;
    }
}

/// A single meeting under its own UID, forwarded by `from`.
fn single(uid: &str, from: &str, method: &str, start: &str, end: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: acme@assistant.example.com\r\nSubject: s\r\nMessage-ID: <{uid}{method}{start}@t>\r\n\
         Content-Type: text/calendar; method={method}\r\n\r\nBEGIN:VCALENDAR\r\nMETHOD:{method}\r\nBEGIN:VEVENT\r\n\
         UID:{uid}\r\nSEQUENCE:{}\r\nDTSTAMP:20270104T090000Z\r\nDTSTART:{start}\r\nDTEND:{end}\r\n\
         SUMMARY:Customer call\r\nORGANIZER:mailto:{from}\r\n{TEAMS}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
        if method == "CANCEL" { 1 } else { 0 }
    )
    .into_bytes()
}

#[tokio::test]
async fn two_uids_for_one_meeting_share_one_job() {
    for backend in common::backends().await {
        eprintln!("backend: {}", backend.name);
        let store = backend.store.clone();
        let config = common::config();
        let (s, e) = ("20270111T150000Z", "20270111T160000Z");
        let r = ingest(
            store.as_ref(),
            &config,
            single("a-copy", "alice@acme.com", "REQUEST", s, e),
            Source::File,
            None,
            vec![],
            common::now(),
        )
        .await
        .unwrap();
        assert_eq!(r.jobs_created, 1);
        let r = ingest(
            store.as_ref(),
            &config,
            single("d-copy", "dan@acme.com", "REQUEST", s, e),
            Source::File,
            None,
            vec![],
            common::now(),
        )
        .await
        .unwrap();
        assert_eq!((r.jobs_created, r.jobs_joined), (0, 1));
        let jobs = store.jobs(false).await.unwrap();
        assert_eq!(jobs.len(), 1, "one bot, not two");
        assert_eq!(jobs[0].requesters, ["alice@acme.com", "dan@acme.com"]);

        // Alice's copy is cancelled: the job stays for Dan.
        feed(store.as_ref(), single("a-copy", "alice@acme.com", "CANCEL", s, e)).await;
        let jobs = store.jobs(false).await.unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].requesters, ["dan@acme.com"]);

        // Dan's copy moves: his part goes with it, and the old job has nobody left.
        let moved = single("d-copy", "dan@acme.com", "REQUEST", "20270112T150000Z", "20270112T160000Z");
        let moved = String::from_utf8(moved).unwrap().replace("SEQUENCE:0", "SEQUENCE:2").into_bytes();
        feed(store.as_ref(), moved).await;
        let jobs = store.jobs(false).await.unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].occurrence_start, common::at("2027-01-12T15:00:00Z"));
        backend.finish().await;
    }
}

#[tokio::test]
async fn a_shared_job_moved_by_one_uid_stays_for_the_other() {
    for backend in common::backends().await {
        eprintln!("backend: {}", backend.name);
        let store = backend.store.clone();
        let (s, e) = ("20270111T150000Z", "20270111T160000Z");
        feed(store.as_ref(), single("a-copy", "alice@acme.com", "REQUEST", s, e)).await;
        feed(store.as_ref(), single("d-copy", "dan@acme.com", "REQUEST", s, e)).await;
        let moved = single("a-copy", "alice@acme.com", "REQUEST", "20270112T150000Z", "20270112T160000Z");
        let moved = String::from_utf8(moved).unwrap().replace("SEQUENCE:0", "SEQUENCE:2").into_bytes();
        feed(store.as_ref(), moved).await;
        let jobs = store.jobs(false).await.unwrap();
        let got: Vec<_> = jobs.iter().map(|j| (j.occurrence_start.to_rfc3339(), j.requesters.clone())).collect();
        assert_eq!(
            got,
            [
                ("2027-01-11T15:00:00+00:00".to_string(), vec!["dan@acme.com".to_string()]),
                ("2027-01-12T15:00:00+00:00".to_string(), vec!["alice@acme.com".to_string()]),
            ]
        );
        backend.finish().await;
    }
}
