//! Extract + normalise on a typical 10 KB Outlook invite (issue 3: target ≥ 20,000
//! messages/second on one core). `cargo bench --bench extract`.
//!
//! The input is `tests/fixtures/bench/outlook365-teams-request.eml` (Exchange Online
//! Teams REQUEST, 9.4 KB; origin and licence in that folder's README). Three
//! measurements: `mime::extract` alone, `mime::extract` + `ics::parse_calendar` of
//! every calendar part (extract + normalise), and the whole `pipeline::explain`
//! (adds tenant lookup, conference detection, the decision and occurrences).

use std::path::Path;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use invited::config::Config;
use invited::{ics, mime, pipeline};

/// The daemon's allocator (see `src/main.rs`), so that the figures are the daemon's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const INPUT: &str = "tests/fixtures/bench/outlook365-teams-request.eml";

fn extract(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Ok(raw) = std::fs::read(root.join(INPUT)) else {
        eprintln!("skipped: {INPUT} is missing");
        return;
    };
    let config = Config::load(&root.join("tests/fixtures/config.toml")).expect("test config loads");
    let mime_limits = config.limits.mime();
    let ics_limits = config.limits.ics();
    let tz = chrono_tz::America::New_York;
    let rcpt = vec!["acme@assistant.example.com".to_string()];
    let now = Utc.with_ymd_and_hms(2027, 1, 4, 12, 0, 0).single().expect("a valid instant");

    // The input is what it should be: one event with its Teams link.
    let check = pipeline::explain(&config, &raw, &rcpt, now);
    assert_eq!(check.events.len(), 1, "the bench input gives one event");

    let mut group = c.benchmark_group("outlook_invite");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("mime_extract", |b| b.iter(|| mime::extract(std::hint::black_box(&raw), &mime_limits)));
    group.bench_function("extract_normalise", |b| {
        b.iter(|| {
            let extracted = mime::extract(std::hint::black_box(&raw), &mime_limits);
            let events: usize =
                extracted.calendars.iter().map(|part| ics::parse_calendar(part, tz, &ics_limits).events.len()).sum();
            (extracted, events)
        })
    });
    group.bench_function("explain", |b| b.iter(|| pipeline::explain(&config, std::hint::black_box(&raw), &rcpt, now)));
    group.finish();
}

criterion_group!(benches, extract);
criterion_main!(benches);
