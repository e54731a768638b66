//! Shared by the integration tests: the test tenant config, fixtures and a fixed clock.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use invited::config::Config;

/// The clock every fixture is written against.
pub const NOW: &str = "2027-01-04T12:00:00Z";

pub fn now() -> DateTime<Utc> {
    at(NOW)
}

pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("test time").with_timezone(&Utc)
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

pub fn config() -> Config {
    Config::load(&fixtures().join("config.toml")).expect("test config loads")
}

/// `../shared/...` beside the repository, when this checkout has it.
pub fn shared(path: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared").join(path);
    p.exists().then_some(p)
}

/// Skips locally with a printed reason; in CI (`CI=true`) a missing peer is a failure.
pub fn skip_or_fail(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("required in CI: {reason}");
    }
    eprintln!("skipped: {reason}");
}
