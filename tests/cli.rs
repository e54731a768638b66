//! The `invited` binary as an operator uses it: exit codes, one-line errors, JSON output,
//! and `serve` answering `/healthz`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn invited(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_invited"))
        .args(args)
        .env("INVITED_CONFIG", common::fixtures().join("config.toml"))
        .env("INVITED_STORE__URL", format!("sqlite://{}/invited.db", dir.display()))
        .env_remove("RUST_LOG")
        .output()
        .expect("run invited")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn ingest_then_jobs_lists_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let eml = common::fixtures().join("zoom-invite.eml");
    let o = invited(dir.path(), &["ingest", "--now", common::NOW, eml.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = invited(dir.path(), &["jobs", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1);
    let job = &lines[0];
    for key in
        ["id", "tenant", "event_uid", "occurrence_start", "kind", "run_at", "state", "provider", "meeting_url", "flags"]
    {
        assert!(job.get(key).is_some(), "jobs --json lacks {key}: {job}");
    }
    assert_eq!(job["kind"], "cloud_fetch");
    assert_eq!(job["state"], "scheduled");
    let o = invited(dir.path(), &["history", "review-1@acme.com", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let history: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(history.as_array().map(Vec::len), Some(1));
}

#[test]
fn ineligible_and_duplicate_mail_still_exit_zero() {
    let dir = tempfile::tempdir().unwrap();
    let no_link = common::fixtures().join("no-link.eml");
    let no_cal = common::fixtures().join("no-calendar.eml");
    for _ in 0..2 {
        let o = invited(dir.path(), &["ingest", no_link.to_str().unwrap(), no_cal.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
}

#[test]
fn missing_file_and_non_mail_fail_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let o = invited(dir.path(), &["ingest", "/nonexistent/invite.eml"]);
    assert!(!o.status.success());
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("/nonexistent/invite.eml"));

    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, b"\x7fELF\x02\x01\x01 not a mail").unwrap();
    let o = invited(dir.path(), &["ingest", junk.to_str().unwrap()]);
    assert!(!o.status.success());
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("not a mail"), "{}", stderr(&o));

    let o = invited(dir.path(), &["explain", "/nonexistent/invite.eml"]);
    assert!(!o.status.success());
}

#[test]
fn explain_prints_the_stable_json_shape() {
    let dir = tempfile::tempdir().unwrap();
    let eml = common::fixtures().join("teams-invite.eml");
    let o = invited(dir.path(), &["explain", "--json", "--now", common::NOW, eml.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    for key in ["recipient_tenant", "requester", "reasons", "events"] {
        assert!(v.get(key).is_some(), "{key}");
    }
    let ev = &v["events"][0];
    for key in [
        "uid",
        "recurrence_id",
        "method",
        "sequence",
        "dtstamp",
        "status",
        "start",
        "end",
        "timezone",
        "all_day",
        "summary",
        "organizer",
        "attendees",
        "rrule",
        "conference",
        "decision",
    ] {
        assert!(ev.get(key).is_some(), "event lacks {key}");
    }
    assert_eq!(ev["conference"]["provider"], "teams");
    assert_eq!(ev["decision"]["plan"]["kind"], "bot_join");
    assert_eq!(ev["decision"]["plan"]["flags"][0], "may_be_blocked_by_lobby");
    assert!(!dir.path().join("invited.db").exists(), "explain must not write a store");
}

#[test]
fn bad_config_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[[tenants]]\nid = \"a\"\nassistant_addresses = [\"a@x.example\"]\nseats = 3\n").unwrap();
    let o =
        Command::new(env!("CARGO_BIN_EXE_invited")).args(["--config", cfg.to_str().unwrap(), "jobs"]).output().unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("seats"), "{}", stderr(&o));
}

/// A store that cannot be opened is named in the error with its password masked, whatever
/// form the URL takes.
#[test]
fn a_store_error_never_shows_the_password() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        "mysql://invited:hunter2@127.0.0.1/invited",
        "postgres://invited@127.0.0.1:1/invited?password=hunter2&sslmode=disable",
        "host=127.0.0.1 user=invited password=hunter2",
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_invited"))
            .args(["jobs"])
            .env("INVITED_CONFIG", common::fixtures().join("config.toml"))
            .env("INVITED_STORE__URL", url)
            .env_remove("RUST_LOG")
            .current_dir(dir.path())
            .output()
            .expect("run invited");
        let err = stderr(&o);
        assert!(!o.status.success(), "{url}: {err}");
        assert!(err.contains("store.url") && err.contains("********"), "{url}: {err}");
        assert!(!err.contains("hunter2"), "{url}: {err}");
    }
}

/// A port that was free a moment ago, on loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn serve_answers_healthz_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_invited"))
        .arg("serve")
        .env("INVITED_CONFIG", common::fixtures().join("config.toml"))
        .env("INVITED_STORE__URL", format!("sqlite://{}/invited.db", dir.path().display()))
        .env("INVITED_SERVER__HTTP_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut answer = None;
    while Instant::now() < deadline {
        if let Some(a) = get(port, "/healthz") {
            answer = Some(a);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    let mut logs = String::new();
    child.stderr.take().unwrap().read_to_string(&mut logs).unwrap();
    let answer = answer.unwrap_or_else(|| panic!("no /healthz answer; logs:\n{logs}"));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"ok\""), "{answer}");
    assert!(status.success(), "exit {status:?}; logs:\n{logs}");
    assert!(logs.contains("daemon_started") && logs.contains("daemon_stopped"), "{logs}");
}

#[test]
fn spoofed_sender_schedules_nothing_and_the_log_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let eml = common::fixtures().join("spoofed-from.eml");
    let o = Command::new(env!("CARGO_BIN_EXE_invited"))
        .args(["ingest", "--now", common::NOW, eml.to_str().unwrap()])
        .env("INVITED_CONFIG", common::fixtures().join("config.toml"))
        .env("INVITED_STORE__URL", format!("sqlite://{}/invited.db", dir.path().display()))
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let logs = stderr(&o);
    let decision = logs.lines().find(|l| l.contains("decision_made")).unwrap_or_else(|| panic!("{logs}"));
    assert!(decision.contains("unauthenticated_sender"), "{decision}");
    assert!(!logs.contains("job_scheduled"), "{logs}");
    let o = invited(dir.path(), &["jobs", "--json"]);
    assert!(stdout(&o).trim().is_empty(), "{}", stdout(&o));
}
