//! Every real invite in `../shared/corpus/public` goes through `explain` and through the
//! store without a panic, and the peers' fixture works with the shipped configuration.

mod common;

use std::path::Path;

use invited::config::Config;
use invited::pipeline::{explain, ingest};
use invited::store::{self, Source};

fn corpus_files() -> Option<Vec<std::path::PathBuf>> {
    let dir = common::shared("corpus/public")?;
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml" || x == "ics"))
        .collect();
    files.sort();
    Some(files)
}

#[test]
fn every_corpus_file_is_explained_without_panic() {
    let Some(files) = corpus_files() else { return common::skip_or_fail("../shared/corpus/public is missing") };
    assert!(files.len() >= 80, "corpus has {} files", files.len());
    let config = common::config();
    let rcpt = vec!["acme@assistant.example.com".to_string()];
    let mut without_events = Vec::new();
    for f in &files {
        let raw = std::fs::read(f).unwrap();
        let e = explain(&config, &raw, &rcpt, common::now());
        // Serialising must work too: it is what operators see.
        serde_json::to_string(&e).unwrap_or_else(|err| panic!("{}: {err}", f.display()));
        if e.events.is_empty() {
            let codes: Vec<_> = e.reasons.iter().map(|r| r.code.as_str()).collect();
            assert_eq!(codes, ["no_invite_found"], "{}", f.display());
            without_events.push(f.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    // These hold no VEVENT with a UID: a TNEF note, a VFREEBUSY reply, and UID-less exports.
    assert_eq!(
        without_events,
        [
            "icalendar-py__davmail-reply-vfreebusy.ics",
            "icalendar-py__exchange-cdo-gmt-offset-tzid.ics",
            "node-ical__owa-undefined-display-tzids.ics",
            "thunderbird__latin1-encoded.ics",
            "tine20__outlook2003-winmail-dat-not-meeting.eml",
        ]
    );
}

#[tokio::test]
async fn every_corpus_file_goes_through_the_store() {
    let Some(files) = corpus_files() else { return common::skip_or_fail("../shared/corpus/public is missing") };
    let dir = tempfile::tempdir().unwrap();
    let store = store::open(&format!("sqlite://{}/c.db", dir.path().display())).await.unwrap();
    let config = common::config();
    for f in &files {
        let raw = std::fs::read(f).unwrap();
        ingest(
            store.as_ref(),
            &config,
            raw,
            Source::File,
            None,
            vec!["acme@assistant.example.com".into()],
            common::now(),
        )
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
    assert!(store.unfinished_messages(true).await.unwrap().is_empty());
}

#[tokio::test]
async fn peers_fixture_with_the_shipped_config() {
    let Some(eml) = common::shared("peers/fixtures/invite.eml") else {
        return common::skip_or_fail("../shared/peers/fixtures/invite.eml is missing");
    };
    let config = Config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/invited.toml")).unwrap();
    let raw = std::fs::read(eml).unwrap();
    let before = common::at("2025-12-03T10:00:00Z");
    // As shipped, the fixture has no meeting link: recorded, with its reason.
    let e = explain(&config, &raw, &[], before);
    assert_eq!(e.recipient_tenant.as_deref(), Some("acme"));
    assert_eq!(e.events[0].uid, "evt-001@example.org");
    let codes: Vec<_> = e.events[0].decision.reasons.iter().map(|r| r.code.as_str()).collect();
    assert_eq!(codes, ["no_conference_link"]);
    // With a Zoom link it becomes a job.
    let with_link = String::from_utf8(raw)
        .unwrap()
        .replace("SUMMARY:Project sync", "SUMMARY:Project sync\r\nLOCATION:https://zoom.us/j/123456789");
    let dir = tempfile::tempdir().unwrap();
    let store = store::open(&format!("sqlite://{}/p.db", dir.path().display())).await.unwrap();
    let r = ingest(store.as_ref(), &config, with_link.into_bytes(), Source::File, None, vec![], before).await.unwrap();
    assert_eq!(r.jobs_created, 1);
    let jobs = store.jobs(false).await.unwrap();
    assert_eq!(jobs[0].event_uid, "evt-001@example.org");
}
