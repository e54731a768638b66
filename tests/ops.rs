//! Operating the real daemon (`invited serve` as a child process): `/metrics`, `/readyz`,
//! SIGHUP reload while a session is open, SIGTERM during DATA, and `check-config`.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ACME: &str = "acme@assistant.example.com";

/// "Eventually" conditions get this long; none of them is a speed assertion.
const PATIENCE: Duration = Duration::from_secs(30);

/// A port that was free a moment ago, on loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// `invited serve` on free loopback ports with a SQLite store in a temp folder, its
/// configuration in a file the test may rewrite, and its log collected line by line.
struct Daemon {
    child: Child,
    http: u16,
    smtp: u16,
    config: PathBuf,
    db_url: String,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(config_text: &str) -> Daemon {
        Daemon::start_on(config_text, None)
    }

    /// With `db_url` as the store; `None`: SQLite in the temp folder.
    fn start_on(config_text: &str, db_url: Option<&str>) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("invited.toml");
        std::fs::write(&config, config_text).expect("write config");
        let (http, smtp) = (free_port(), free_port());
        let db_url = db_url.map_or_else(|| format!("sqlite://{}/invited.db", dir.path().display()), str::to_owned);
        let mut child = Command::new(env!("CARGO_BIN_EXE_invited"))
            .args(["--config", config.to_str().expect("utf-8 path"), "serve"])
            .env("INVITED_STORE__URL", &db_url)
            .env("INVITED_SERVER__HTTP_LISTEN", format!("127.0.0.1:{http}"))
            .env("INVITED_SERVER__SMTP_LISTEN", format!("127.0.0.1:{smtp}"))
            // The fixtures' meetings are in January 2027; the daemon decides with the real clock.
            .env("INVITED_SCHEDULING__HORIZON_DAYS", "3650")
            .env("INVITED_SMTP__SHUTDOWN_GRACE_SECONDS", "20")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("serve starts");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr piped");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap_or_else(|p| p.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let daemon = Daemon { child, http, smtp, config, db_url, log, _dir: dir };
        daemon.wait_for_log(|l| l.contains("event=smtp_listening"));
        daemon
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The first log line matching `want`, waiting for it.
    fn wait_for_log(&self, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(line) = self.log().lines().find(|l| want(l)) {
                return line.to_owned();
            }
            assert!(Instant::now() < deadline, "log line never came; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The `decision_made` line for `uid`.
    fn decision(&self, uid: &str) -> String {
        let uid = format!(" uid={uid} ");
        self.wait_for_log(|l| l.contains("event=decision_made") && l.contains(&uid))
    }

    fn signal(&self, name: &str) {
        let sent = Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status();
        assert!(sent.expect("kill runs").success(), "kill -{name}");
    }

    fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "did not exit within {within:?}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.http)).expect("http connects");
        s.set_read_timeout(Some(PATIENCE)).expect("timeout");
        write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").expect("request");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("response");
        let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        (status, body)
    }

    fn smtp(&self) -> Smtp {
        Smtp::connect(self.smtp)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A plain SMTP client over a blocking socket: one command, one reply.
struct Smtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Smtp {
    fn connect(port: u16) -> Smtp {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("smtp connects");
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let mut smtp = Smtp { reader: BufReader::new(stream.try_clone().expect("clone")), writer: stream };
        assert!(smtp.reply().starts_with("220 "));
        smtp
    }

    /// One reply, multi-line replies joined; its last line decides.
    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("read reply");
            assert!(n > 0, "connection closed; so far: {all}");
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("send");
    }

    fn command(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// EHLO, MAIL, RCPT and DATA up to `354`.
    fn begin(&mut self, from: &str) {
        assert!(self.command("EHLO client.test").starts_with("250"));
        assert!(self.command(&format!("MAIL FROM:<{from}>")).starts_with("250"));
        assert!(self.command(&format!("RCPT TO:<{ACME}>")).starts_with("250"));
        assert!(self.command("DATA").starts_with("354"));
    }

    /// A whole transaction; the reply to the final dot.
    fn deliver(&mut self, from: &str, message: &[u8]) -> String {
        self.begin(from);
        self.send(message);
        self.send(b".\r\n");
        self.reply()
    }
}

/// A fixture with its own UID and Message-ID, so that each copy is a new message and event.
fn invite(fixture: &str, uid: &str) -> Vec<u8> {
    let text = String::from_utf8(common::fixture(fixture)).expect("utf-8 fixture");
    let old_uid = text.lines().find_map(|l| l.strip_prefix("UID:")).expect("fixture has a UID").to_owned();
    let text = text.replace(&old_uid, uid).replace(&format!("<{fixture}@test.example>"), &format!("<{uid}>"));
    assert!(text.contains(&format!("<{uid}>")), "Message-ID replaced");
    assert!(!text.lines().any(|l| l.starts_with('.')), "no dot-stuffing needed");
    text.into_bytes()
}

fn fixture_config() -> String {
    std::fs::read_to_string(common::fixtures().join("config.toml")).expect("fixture config")
}

// --- /metrics and /readyz ----------------------------------------------------------------

/// One sample of the text exposition: `name{label="value",...} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text format strictly enough to catch a broken exposition: every
/// line is a comment (`# HELP`/`# TYPE`), blank, or a well-formed sample of a declared family.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut families = Vec::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.split(' ');
            let kind = words.next();
            let name = words.next().unwrap_or_else(|| panic!("bad comment {line:?}"));
            assert!(matches!(kind, Some("HELP" | "TYPE")), "bad comment {line:?}");
            if kind == Some("TYPE") {
                let t = words.next();
                assert!(matches!(t, Some("counter" | "gauge" | "histogram" | "summary")), "bad type {line:?}");
                families.push(name.to_owned());
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line:?}"));
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line:?}"));
                let mut labels = BTreeMap::new();
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("bad label {pair:?} in {line:?}"));
                    labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                }
                (name, labels)
            }
        };
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "bad name {line:?}");
        let family = ["_bucket", "_sum", "_count"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
        assert!(families.iter().any(|f| f == name || f == family), "sample before its # TYPE: {line:?}");
        samples.push(Sample { name: name.to_owned(), labels, value });
    }
    samples
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.value)
        .sum()
}

/// Every label takes its values from a fixed, small set: no address, UID or id gets in.
fn assert_bounded(samples: &[Sample]) {
    let reason_codes: Vec<&str> = [
        "no_invite_found",
        "unknown_recipient",
        "unauthenticated_sender",
        "unknown_requester",
        "no_seat",
        "missing_permission",
        "no_conference_link",
        "provider_disabled",
        "provider_misconfigured",
        "consent_link_required",
        "consent_link_type_mismatch",
        "consent_bypass_link",
        "external_consent_link",
        "consent_declined",
        "cancelled",
        "meeting_ended",
    ]
    .to_vec();
    for s in samples {
        for (k, v) in &s.labels {
            let ok = match k.as_str() {
                "source" => ["smtp", "imap", "file"].contains(&v.as_str()),
                "outcome" => [
                    "accepted",
                    "duplicate",
                    "refused",
                    "deferred",
                    "applied",
                    "completed",
                    "retrying",
                    "failed",
                    "consent_declined",
                    "sent",
                ]
                .contains(&v.as_str()),
                "code" => v.len() == 3 && v.bytes().all(|b| b.is_ascii_digit()),
                "eligible" => v == "true" || v == "false",
                "reason" => reason_codes.contains(&v.as_str()),
                "kind" => ["bot_join", "cloud_fetch", "other"].contains(&v.as_str()),
                "state" => {
                    ["scheduled", "joined", "rescheduled", "cancelled", "claimed", "missed"].contains(&v.as_str())
                }
                "operation" => {
                    ["spool", "load_message", "record_event", "finish_message", "ping", "claim"].contains(&v.as_str())
                }
                "le" => v == "+Inf" || v.parse::<f64>().is_ok(),
                _ => false,
            };
            assert!(ok, "unbounded or unknown label {k}={v:?} on {}", s.name);
        }
    }
}

#[test]
fn metrics_count_invites_and_readyz_names_each_part() {
    let daemon = Daemon::start(&fixture_config());
    let (status, body) = daemon.get("/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(daemon.log().contains("event=daemon_started"));
    let ready: serde_json::Value = serde_json::from_str(&body).expect("readyz is JSON");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["store"]["ready"], true);
    assert_eq!(ready["intakes"]["smtp"]["ready"], true);

    let mut smtp = daemon.smtp();
    for (i, (fixture, from)) in [
        ("zoom-invite.eml", "alice@acme.com"),
        ("teams-invite.eml", "alice@acme.com"),
        ("noseat.eml", "noseat@acme.com"),
    ]
    .into_iter()
    .enumerate()
    {
        let uid = format!("metrics-{i}@acme.com");
        assert!(smtp.deliver(from, &invite(fixture, &uid)).starts_with("250"));
        daemon.decision(&uid);
        assert!(smtp.command("RSET").starts_with("250"));
    }
    // The same bytes again: acknowledged, stored once.
    assert!(smtp.deliver("alice@acme.com", &invite("zoom-invite.eml", "metrics-0@acme.com")).starts_with("250"));
    assert!(smtp.command(&format!("RCPT TO:<{ACME}>")).starts_with("503"), "RCPT before MAIL is refused");
    assert!(smtp.command("QUIT").starts_with("221"));
    daemon.wait_for_log(|l| l.contains("event=smtp_session_ended"));

    // Pipeline latency is recorded last for each message: once three are in, so is the rest.
    let deadline = Instant::now() + PATIENCE;
    let (text, samples) = loop {
        let (status, text) = daemon.get("/metrics");
        assert_eq!(status, 200, "{text}");
        let samples = parse_exposition(&text);
        if value(&samples, "invited_pipeline_seconds_count", &[]) >= 3.0 || Instant::now() > deadline {
            break (text, samples);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_bounded(&samples);
    let received = "invited_messages_received_total";
    assert_eq!(value(&samples, received, &[("source", "smtp"), ("outcome", "accepted")]), 3.0, "{text}");
    assert_eq!(value(&samples, received, &[("source", "smtp"), ("outcome", "duplicate")]), 1.0, "{text}");
    assert_eq!(value(&samples, "invited_decisions_total", &[("eligible", "true")]), 2.0, "{text}");
    assert_eq!(value(&samples, "invited_decisions_total", &[("eligible", "false")]), 1.0, "{text}");
    assert_eq!(value(&samples, "invited_decision_reasons_total", &[("reason", "no_seat")]), 1.0, "{text}");
    // Zoom with cloud recording is fetched after the meeting; Teams gets a bot.
    let jobs = "invited_jobs_total";
    assert_eq!(value(&samples, jobs, &[("kind", "cloud_fetch"), ("state", "scheduled")]), 1.0, "{text}");
    assert_eq!(value(&samples, jobs, &[("kind", "bot_join"), ("state", "scheduled")]), 1.0, "{text}");
    assert_eq!(value(&samples, "invited_smtp_sessions_total", &[]), 1.0, "{text}");
    assert_eq!(value(&samples, "invited_smtp_sessions_active", &[]), 0.0, "{text}");
    // EHLO, MAIL, RCPT, the final dot and RSET, three times; then the duplicate's four and QUIT's 221.
    assert_eq!(value(&samples, "invited_smtp_replies_total", &[("code", "250")]), 19.0, "{text}");
    assert_eq!(value(&samples, "invited_smtp_replies_total", &[("code", "503")]), 1.0, "{text}");
    assert_eq!(value(&samples, "invited_pipeline_seconds_count", &[]), 3.0, "{text}");
    assert!(value(&samples, "invited_store_seconds_count", &[("operation", "record_event")]) >= 3.0, "{text}");
    let buckets = samples.iter().filter(|s| s.name == "invited_pipeline_seconds_bucket").count();
    assert!(buckets > 1, "pipeline latency is a histogram: {text}");
}

#[test]
fn readyz_is_503_when_the_store_is_gone() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let Some(db) = runtime.block_on(common::pg_database()) else { return };
    let daemon = Daemon::start_on(&fixture_config(), Some(&db.url));
    assert_eq!(daemon.get("/readyz").0, 200);
    // The database goes away under the running daemon (its connections are terminated).
    runtime.block_on(db.drop_now());
    let deadline = Instant::now() + PATIENCE;
    let (status, body) = loop {
        let (status, body) = daemon.get("/readyz");
        if status == 503 || Instant::now() > deadline {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).expect("readyz is JSON");
    assert_eq!(ready["status"], "not_ready");
    assert_eq!(ready["store"]["ready"], false, "{body}");
    assert!(ready["store"]["problem"].as_str().is_some_and(|p| !p.is_empty()), "{body}");
    assert_eq!(ready["intakes"]["smtp"]["ready"], true, "{body}");
}

// --- SIGHUP ------------------------------------------------------------------------------

#[test]
fn sighup_applies_a_new_permission_keeps_open_sessions_and_refuses_a_broken_file() {
    let before = fixture_config();
    let mut daemon = Daemon::start(&before);
    let mut smtp = daemon.smtp();
    assert!(smtp.deliver("noseat@acme.com", &invite("noseat.eml", "hup-0@acme.com")).starts_with("250"));
    let first = daemon.decision("hup-0@acme.com");
    assert!(first.contains("eligible=false") && first.contains("no_seat"), "{first}");

    // A session opened before the reload, mid-transaction across it.
    let mut open = daemon.smtp();
    assert!(open.command("EHLO across.test").starts_with("250"));
    assert!(open.command("MAIL FROM:<noseat@acme.com>").starts_with("250"));

    let granted = before.replacen(
        "email = \"noseat@acme.com\"\nseat = false\nmanual_schedule_upload = false",
        "email = \"noseat@acme.com\"\nseat = true\nmanual_schedule_upload = true",
        1,
    );
    assert_ne!(granted, before, "the fixture config lists noseat@acme.com as expected");
    std::fs::write(&daemon.config, &granted).expect("rewrite config");
    daemon.signal("HUP");
    daemon.wait_for_log(|l| l.contains("event=config_reloaded"));

    assert!(smtp.command("RSET").starts_with("250"));
    assert!(smtp.deliver("noseat@acme.com", &invite("noseat.eml", "hup-1@acme.com")).starts_with("250"));
    let second = daemon.decision("hup-1@acme.com");
    assert!(second.contains("eligible=true"), "the new permission applies: {second}");

    // The session from before the reload completes normally.
    assert!(open.command(&format!("RCPT TO:<{ACME}>")).starts_with("250"));
    assert!(open.command("DATA").starts_with("354"));
    open.send(&invite("noseat.eml", "hup-2@acme.com"));
    open.send(b".\r\n");
    assert!(open.reply().starts_with("250"));
    assert!(open.command("QUIT").starts_with("221"));
    assert!(daemon.decision("hup-2@acme.com").contains("eligible=true"));

    // A broken file is refused with an ERROR line; the config in force stays.
    std::fs::write(&daemon.config, granted.replace("seat = true", "seats = true")).expect("break config");
    daemon.signal("HUP");
    let refused = daemon.wait_for_log(|l| l.contains("event=config_reload_failed"));
    assert!(refused.contains("ERROR") && refused.contains("seats"), "{refused}");
    assert!(smtp.deliver("noseat@acme.com", &invite("noseat.eml", "hup-3@acme.com")).starts_with("250"));
    assert!(daemon.decision("hup-3@acme.com").contains("eligible=true"), "the old config stays");

    // A key bound at start-up is not applied (a WARN says a restart is needed); the rest is.
    let resized = granted.replacen(
        "[scheduling]",
        "[server]\nhostname = \"renamed.test\"\n\n[smtp]\nmax_sessions = 7\n\n[scheduling]",
        1,
    );
    std::fs::write(&daemon.config, resized).expect("rewrite config");
    daemon.signal("HUP");
    let warned = daemon.wait_for_log(|l| l.contains("event=config_key_not_reloaded"));
    assert!(warned.contains("WARN") && warned.contains("key=smtp.max_sessions reason=restart_needed"), "{warned}");
    let deadline = Instant::now() + PATIENCE;
    while daemon.log().matches("event=config_reloaded").count() < 2 {
        assert!(Instant::now() < deadline, "second reload not logged:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut fresh = daemon.smtp();
    assert!(fresh.command("EHLO after.test").starts_with("250-renamed.test"), "hostname reloads");
    assert!(fresh.command("QUIT").starts_with("221"));
    assert!(smtp.command("QUIT").starts_with("221"));

    daemon.signal("TERM");
    assert!(daemon.wait(PATIENCE).success(), "{}", daemon.log());
}

// --- SIGTERM -----------------------------------------------------------------------------

#[test]
fn sigterm_during_data_stores_that_message_refuses_new_connections_and_exits_0() {
    let mut daemon = Daemon::start(&fixture_config());
    let message = invite("zoom-invite.eml", "term-0@acme.com");
    let (head, tail) = message.split_at(message.len() / 2);
    let mut smtp = daemon.smtp();
    smtp.begin("alice@acme.com");
    smtp.send(head);

    daemon.signal("TERM");
    daemon.wait_for_log(|l| l.contains("event=shutdown_requested") && l.contains("signal=SIGTERM"));
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(("127.0.0.1", daemon.smtp)).is_ok() {
        assert!(Instant::now() < deadline, "new connections are still accepted");
        std::thread::sleep(Duration::from_millis(50));
    }

    smtp.send(tail);
    smtp.send(b".\r\n");
    let reply = smtp.reply();
    assert!(reply.starts_with("250 2.0.0 Queued as "), "{reply}");
    let id: i64 = reply.trim_end().rsplit(' ').next().and_then(|n| n.parse().ok()).expect("queue id");

    let status = daemon.wait(PATIENCE);
    assert!(status.success(), "exit {status:?}; log:\n{}", daemon.log());
    assert!(daemon.log().contains("event=daemon_stopped"));

    let stored = tokio::runtime::Runtime::new().expect("runtime").block_on(async {
        let store = invited::store::open(&daemon.db_url).await.expect("store opens");
        store.load_message(id).await.expect("load")
    });
    let stored = stored.expect("the acknowledged message is stored");
    assert!(String::from_utf8_lossy(&stored.raw).contains("term-0@acme.com"));
}

// --- check-config ------------------------------------------------------------------------

fn check_config(text: &str) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("invited.toml");
    std::fs::write(&path, text).expect("write config");
    Command::new(env!("CARGO_BIN_EXE_invited"))
        .args(["--config", path.to_str().expect("utf-8 path"), "check-config"])
        .env("INVITED_RECORDER_SECRET", "from-the-environment-0123456789")
        .env("INVITED_SCHEDULING__HORIZON_DAYS", "45")
        .output()
        .expect("check-config runs")
}

#[test]
fn check_config_prints_the_resolved_config_with_secrets_masked() {
    let config = format!(
        "[store]\nurl = \"postgres://invited:hunter2@127.0.0.1:5432/invited\"\n\n\
         [[recorders.tokens]]\nname = \"inline\"\ntoken = \"inline-secret-0123456789\"\n\n\
         [[recorders.tokens]]\nname = \"env\"\ntoken_env = \"INVITED_RECORDER_SECRET\"\n\n{}",
        fixture_config().replace("horizon_days = 30\n", "")
    );
    let out = check_config(&config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for secret in ["hunter2", "inline-secret-0123456789", "from-the-environment-0123456789"] {
        assert!(!stdout.contains(secret), "{secret} printed:\n{stdout}");
    }
    assert!(stdout.contains("postgres://invited:********@127.0.0.1:5432/invited"), "{stdout}");
    assert!(stdout.contains("token_env = \"INVITED_RECORDER_SECRET\""), "{stdout}");
    assert!(stdout.contains("horizon_days = 45"), "environment overrides are resolved:\n{stdout}");
    assert!(stdout.contains("max_sessions = 100"), "defaults are shown:\n{stdout}");
    assert!(stdout.contains("email = \"noseat@acme.com\""), "{stdout}");
}

#[test]
fn check_config_exits_1_naming_the_key_and_the_problem() {
    let out = check_config(&fixture_config().replace("consent_profile = \"enforced\"", "consent_profile = \"strict\""));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tenants[0].users[3].consent_profile") && stderr.contains("strict"), "{stderr}");
    assert!(out.stdout.is_empty());
}
