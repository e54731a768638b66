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

/// The PostgreSQL that tests use: `INVITED_TEST_PG` (an admin URL), else the machine's
/// server on 127.0.0.1:5432 (database `test`, trust auth).
pub fn pg_admin_url() -> String {
    std::env::var("INVITED_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh, empty PostgreSQL database for one test, dropped by [`PgDatabase::drop_now`].
pub struct PgDatabase {
    pub url: String,
    name: String,
}

/// Creates a database for one test; None (after printing why, or failing in CI) when
/// no PostgreSQL answers.
pub async fn pg_database() -> Option<PgDatabase> {
    use sqlx::Connection;
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let admin = pg_admin_url();
    let mut conn = match sqlx::PgConnection::connect(&admin).await {
        Ok(c) => c,
        Err(e) => {
            skip_or_fail(&format!("no PostgreSQL at {admin}: {e}"));
            return None;
        }
    };
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let name = format!("invited_t_{}_{n}", std::process::id());
    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&mut conn).await.expect("drop old test database");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b).to_string();
    Some(PgDatabase { url: format!("{base}/{name}"), name })
}

impl PgDatabase {
    pub async fn drop_now(self) {
        use sqlx::Connection;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_admin_url()).await {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await;
        }
    }
}

/// One store of each backend for a test to run against: SQLite in a temporary folder, and
/// PostgreSQL in a fresh database when a server answers (required in CI).
pub struct Backend {
    pub name: &'static str,
    pub store: std::sync::Arc<dyn invited::store::Store>,
    /// The store's URL, for a test that reads a table directly.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<PgDatabase>,
}

pub async fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let sqlite = invited::store::open(&url).await.expect("sqlite store");
    let mut all = vec![Backend { name: "sqlite", store: sqlite, url, _dir: Some(dir), pg: None }];
    if let Some(db) = pg_database().await {
        let store = invited::store::open(&db.url).await.expect("postgres store");
        all.push(Backend { name: "postgres", store, url: db.url.clone(), _dir: None, pg: Some(db) });
    }
    all
}

impl Backend {
    /// Drops the backend's database (SQLite's folder goes with the value).
    pub async fn finish(self) {
        drop(self.store);
        if let Some(db) = self.pg {
            db.drop_now().await;
        }
    }
}
