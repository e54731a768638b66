//! The right events for every file of `../shared/corpus/public`, pinned in
//! `tests/fixtures/corpus-events.json`. Every value there was checked by hand
//! against the raw file (times converted from the TZID / VTIMEZONE the file gives,
//! floating and all-day times in the test tenant's America/New_York, METHOD from the
//! calendar else the Content-Type parameter), not copied from the reader's output.
//!
//! Files with many events pin their count and their first and last event. The
//! fixture's `events` hold `index` for that reason. Counts are after `read_events`
//! merges copies (same UID, RECURRENCE-ID and SEQUENCE): the libical RFC 2446 file
//! holds 42 VEVENTs (pinned in `src/ics/tests.rs`) but 24 distinct versions.
//!
//! Two values differ from what the reader first gave, and the reader was fixed:
//! the all-day override in `node-ical__exchange-allday-moved-occurrence.ics` is
//! identified by its occurrence's local midnight (2026-02-26T05:00Z, not Berlin
//! midnight), and Lotus' `TZID="FLE"` in `thunderbird__notes-style-ics-as-text-plain.eml`
//! is the Windows zone "FLE Standard Time" (09:00 EEST = 06:00Z), not a floating time.
//!
//! `CORPUS_EVENTS_DUMP=FILE cargo test --test corpus_events` writes what the reader
//! gives now to FILE (never to the fixture), to compare by hand.

mod common;

use std::collections::BTreeMap;

use invited::model::EventVersion;
use invited::pipeline::{read_events, read_message};
use serde::{Deserialize, Serialize};

/// The pinned fields of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Pinned {
    index: usize,
    uid: String,
    recurrence_id: Option<String>,
    method: Option<String>,
    sequence: i64,
    status: Option<String>,
    start: Option<String>,
    end: Option<String>,
    timezone: Option<String>,
    all_day: bool,
    organizer: Option<String>,
    rrule: Option<String>,
    link_url: Option<String>,
    link_source: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FileEvents {
    count: usize,
    events: Vec<Pinned>,
}

/// Files with more events than this pin only the first and the last.
const PIN_ALL_UP_TO: usize = 8;

fn instant(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<String> {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

fn pin(index: usize, e: &EventVersion) -> Pinned {
    let link = e.links.first();
    Pinned {
        index,
        uid: e.uid.clone(),
        recurrence_id: instant(e.recurrence_id),
        method: e.method.clone(),
        sequence: e.sequence,
        status: e.status.clone(),
        start: instant(e.start),
        end: instant(e.end),
        timezone: e.timezone.clone(),
        all_day: e.all_day,
        organizer: e.organizer.as_ref().map(|o| o.email.clone()),
        rrule: e.rrule.clone(),
        link_url: link.map(|l| l.url.clone()),
        link_source: link.map(|l| l.source.clone()),
    }
}

fn read_file(config: &invited::config::Config, raw: &[u8]) -> FileEvents {
    let rcpt = vec!["acme@assistant.example.com".to_string()];
    let reading = read_message(config, raw, &rcpt);
    let tz = reading.tenants.first().map(|t| t.timezone()).expect("the test tenant is acme");
    assert_eq!(tz, chrono_tz::America::New_York);
    let (events, _, _) = read_events(config, &reading.extracted, tz);
    let count = events.len();
    let pinned = events
        .iter()
        .enumerate()
        .filter(|(i, _)| count <= PIN_ALL_UP_TO || *i == 0 || *i + 1 == count)
        .map(|(i, e)| pin(i, e))
        .collect();
    FileEvents { count, events: pinned }
}

#[test]
fn corpus_files_give_the_right_events() {
    let Some(dir) = common::shared("corpus/public") else {
        return common::skip_or_fail("../shared/corpus/public is missing");
    };
    let config = common::config();
    let want: BTreeMap<String, FileEvents> =
        serde_json::from_slice(&common::fixture("corpus-events.json")).expect("corpus-events.json parses");
    let mut got: BTreeMap<String, FileEvents> = BTreeMap::new();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("corpus folder")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".eml") || n.ends_with(".ics"))
        .collect();
    names.sort();
    for name in &names {
        let raw = std::fs::read(dir.join(name)).expect("corpus file");
        let events = read_file(&config, &raw);
        if events.count > 0 {
            got.insert(name.clone(), events);
        }
    }
    if let Ok(path) = std::env::var("CORPUS_EVENTS_DUMP") {
        std::fs::write(path, serde_json::to_string_pretty(&got).expect("json") + "\n").expect("dump written");
    }
    let mut mismatches = Vec::new();
    for (name, want_file) in &want {
        match got.get(name) {
            None => mismatches.push(format!("{name}: no events read, {} expected", want_file.count)),
            Some(g) if g.count != want_file.count => {
                mismatches.push(format!("{name}: {} events, {} expected", g.count, want_file.count))
            }
            Some(g) => {
                for w in &want_file.events {
                    match g.events.iter().find(|e| e.index == w.index) {
                        Some(e) if e == w => {}
                        Some(e) => mismatches.push(format!("{name} event {}:\n want {w:?}\n  got {e:?}", w.index)),
                        None => mismatches.push(format!("{name}: event {} not read", w.index)),
                    }
                }
            }
        }
    }
    for name in got.keys().filter(|n| !want.contains_key(*n)) {
        mismatches.push(format!("{name}: has events but nothing is pinned for it"));
    }
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
}
