//! Extract + normalise of one mail, N times, as `benches/extract` measures it, for
//! instruction counts that do not depend on machine load (`benches/extract-callgrind.sh`).
//!
//! usage: cargo run --release --example extract_loop -- [N=1] [MAIL=the bench invite]

use std::path::{Path, PathBuf};
use std::time::Instant;

use invited::config::Config;
use invited::{ics, mime};

/// The daemon's allocator (see `src/main.rs`), so that the count is the daemon's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut args = std::env::args().skip(1);
    let runs: u32 = args.next().map(|n| n.parse()).transpose()?.unwrap_or(1);
    let input = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("tests/fixtures/bench/outlook365-teams-request.eml"));
    let raw = std::fs::read(&input)?;
    let config = Config::load(&root.join("tests/fixtures/config.toml"))?;
    let (mime_limits, ics_limits) = (config.limits.mime(), config.limits.ics());
    let tz = chrono_tz::America::New_York;
    let started = Instant::now();
    let mut events = 0;
    for _ in 0..runs {
        let extracted = mime::extract(std::hint::black_box(&raw), &mime_limits);
        events += extracted
            .calendars
            .iter()
            .map(|part| ics::parse_calendar(part, tz, &ics_limits).events.len())
            .sum::<usize>();
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("{runs} runs, {events} events, {:.0} msg/s", f64::from(runs) / seconds);
    Ok(())
}
