//! Real `invited serve` processes on PostgreSQL, spoken to over SMTP and HTTP on 127.0.0.1:
//! three daemons sharing one database with recorders claiming from all of them, and one
//! daemon whose PostgreSQL stops and comes back under it.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

const ACME: &str = "acme@assistant.example.com";
const TOKENS: [&str; 3] = ["cluster-recorder-0-token", "cluster-recorder-1-token", "cluster-recorder-2-token"];

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// The test tenant, plus one recorder token per recorder client.
fn write_config(dir: &Path) -> PathBuf {
    let mut text = std::fs::read_to_string(common::fixtures().join("config.toml")).expect("fixture config");
    text.push_str("\n[recorders]\n");
    for (i, token) in TOKENS.iter().enumerate() {
        text.push_str(&format!("[[recorders.tokens]]\nname = \"recorder-{i}\"\ntoken = \"{token}\"\n"));
    }
    let path = dir.join("invited.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// One `invited serve` process; killed when dropped.
struct Daemon {
    child: Child,
    smtp: u16,
    http: u16,
    log: PathBuf,
}

impl Daemon {
    fn spawn(dir: &Path, name: &str, config: &Path, store_url: &str) -> Daemon {
        let (smtp, http) = (free_port(), free_port());
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_invited"))
            .arg("serve")
            .env("INVITED_CONFIG", config)
            .env("INVITED_STORE__URL", store_url)
            .env("INVITED_SERVER__SMTP_LISTEN", format!("127.0.0.1:{smtp}"))
            .env("INVITED_SERVER__HTTP_LISTEN", format!("127.0.0.1:{http}"))
            .env("INVITED_SCHEDULING__TICK_SECONDS", "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("invited serve starts");
        Daemon { child, smtp, http, log }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for `/healthz` to answer 200.
    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok((200, _)) = http(self.http, "GET", "/healthz", None).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("daemon on {} never healthy; logs:\n{}", self.http, self.logs());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request; the status and the JSON body (`Null` when empty).
async fn http(port: u16, method: &str, path: &str, token: Option<&str>) -> std::io::Result<(u16, Value)> {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let body = if method == "POST" { "{}" } else { "" };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let bad = || std::io::Error::other(format!("bad HTTP answer: {text}"));
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let json = if body.is_empty() { Value::Null } else { serde_json::from_str(body).map_err(|_| bad())? };
    Ok((status, json))
}

/// A plain SMTP client: one session, any number of messages, each answered with its code.
struct SmtpClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl SmtpClient {
    async fn connect(port: u16) -> std::io::Result<SmtpClient> {
        let (read, writer) = TcpStream::connect(("127.0.0.1", port)).await?.into_split();
        let mut client = SmtpClient { reader: BufReader::new(read), writer };
        client.expect(220).await?;
        client.command("EHLO client.example.org").await?;
        Ok(client)
    }

    /// The code of the next (possibly multi-line) reply.
    async fn reply(&mut self) -> std::io::Result<u16> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).await? == 0 {
                return Err(std::io::Error::other("server closed the connection"));
            }
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return line.get(..3).and_then(|c| c.parse().ok()).ok_or_else(|| std::io::Error::other(line));
            }
        }
    }

    async fn expect(&mut self, code: u16) -> std::io::Result<()> {
        match self.reply().await? {
            c if c == code => Ok(()),
            c => Err(std::io::Error::other(format!("expected {code}, got {c}"))),
        }
    }

    async fn command(&mut self, line: &str) -> std::io::Result<u16> {
        self.writer.write_all(format!("{line}\r\n").as_bytes()).await?;
        self.reply().await
    }

    /// Sends one message; the code of the reply to its data (or of the command refused).
    async fn send(&mut self, raw: &[u8]) -> std::io::Result<u16> {
        for (line, want) in [("MAIL FROM:<alice@acme.com>".to_string(), 250), (format!("RCPT TO:<{ACME}>"), 250)] {
            let code = self.command(&line).await?;
            if code != want {
                self.command("RSET").await?;
                return Ok(code);
            }
        }
        let code = self.command("DATA").await?;
        if code != 354 {
            return Ok(code);
        }
        let mut data = Vec::with_capacity(raw.len() + 8);
        for line in raw.split_inclusive(|b| *b == b'\n') {
            if line.first() == Some(&b'.') {
                data.push(b'.');
            }
            data.extend_from_slice(line);
        }
        data.extend_from_slice(b".\r\n");
        self.writer.write_all(&data).await?;
        self.reply().await
    }
}

fn now() -> DateTime<Utc> {
    Utc::now().duration_trunc(TimeDelta::seconds(1)).expect("truncate")
}

/// The Teams fixture as meeting `n` (its own UID, Message-ID and meeting link), started five
/// minutes before `now`, so that its bot_join is due at once.
fn due_invite(n: usize, now: DateTime<Utc>) -> Vec<u8> {
    let ics = |t: DateTime<Utc>| t.format("%Y%m%dT%H%M%SZ").to_string();
    let start = now - TimeDelta::minutes(5);
    String::from_utf8(common::fixture("teams-invite.eml"))
        .expect("utf-8 fixture")
        .replace("UID:teams-1@acme.com", &format!("UID:cluster-{n}@acme.com"))
        .replace("<teams-invite.eml@test.example>", &format!("<cluster-{n}@test.example>"))
        .replace("meeting_abc", &format!("meeting_{n}"))
        .replace("DTSTART;TZID=Europe/Berlin:20270111T160000", &format!("DTSTART:{}", ics(start)))
        .replace("DTEND;TZID=Europe/Berlin:20270111T170000", &format!("DTEND:{}", ics(start + TimeDelta::hours(1))))
        .into_bytes()
}

async fn count(pool: &sqlx::PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

/// Polls `sql` until it gives `want`; the last value otherwise.
async fn eventually(pool: &sqlx::PgPool, sql: &'static str, want: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = count(pool, sql).await;
        if got == want || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const INVITES: usize = 1000;
/// SMTP sessions sending at once to each daemon.
const SESSIONS_PER_DAEMON: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_daemons_on_one_postgresql_store_every_invite_once_and_run_every_job_once() {
    let Some(db) = common::pg_database().await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let daemons: Vec<Daemon> =
        (0..3).map(|i| Daemon::spawn(dir.path(), &format!("node{i}"), &config, &db.url)).collect();
    for d in &daemons {
        d.wait_healthy().await;
    }
    let all_logs = || daemons.iter().map(|d| format!("--- {}\n{}", d.log.display(), d.logs())).collect::<String>();

    // Invite i goes to daemon i % 3; every tenth also to the next daemon, as an MX retry would
    // (the very same bytes).
    let invites: Arc<Vec<Vec<u8>>> = Arc::new((0..INVITES).map(|i| due_invite(i, now())).collect());
    let mut deliveries: Vec<Vec<usize>> = vec![Vec::new(); 3];
    for i in 0..INVITES {
        deliveries[i % 3].push(i);
        if i % 10 == 0 {
            deliveries[(i + 1) % 3].push(i);
        }
    }
    let mut senders = tokio::task::JoinSet::new();
    for (d, list) in daemons.iter().zip(&deliveries) {
        for s in 0..SESSIONS_PER_DAEMON {
            let mine: Vec<usize> = list.iter().copied().skip(s).step_by(SESSIONS_PER_DAEMON).collect();
            let (port, invites) = (d.smtp, invites.clone());
            senders.spawn(async move {
                let mut smtp = SmtpClient::connect(port).await.expect("SMTP connect");
                let mut refused = Vec::new();
                for i in mine {
                    let code = smtp.send(&invites[i]).await.expect("SMTP send");
                    if code != 250 {
                        refused.push((i, code));
                    }
                }
                let _ = smtp.command("QUIT").await;
                refused
            });
        }
    }

    // Three recorders, each on its own daemon, claim and complete until every job is done.
    let completed = Arc::new(AtomicUsize::new(0));
    let mut recorders = tokio::task::JoinSet::new();
    for (k, d) in daemons.iter().enumerate() {
        let (port, completed) = (d.http, completed.clone());
        recorders.spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(110);
            let (mut claimed, mut done) = (Vec::new(), Vec::new());
            while completed.load(Ordering::SeqCst) < INVITES && Instant::now() < deadline {
                let (status, answer) = http(port, "POST", "/v1/jobs/claim", Some(TOKENS[k])).await.expect("claim");
                assert_eq!(status, 200, "claim on daemon {k}: {answer}");
                let jobs = answer["jobs"].as_array().cloned().unwrap_or_default();
                if jobs.is_empty() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                for job in jobs {
                    let id = job["id"].as_i64().expect("job id");
                    claimed.push(id);
                    let path = format!("/v1/jobs/{id}/complete");
                    let (status, answer) = http(port, "POST", &path, Some(TOKENS[k])).await.expect("complete");
                    assert_eq!((status, answer), (200, json!({"id": id, "state": "done"})), "daemon {k}");
                    done.push(id);
                    completed.fetch_add(1, Ordering::SeqCst);
                }
            }
            (claimed, done)
        });
    }

    let mut refused = Vec::new();
    while let Some(r) = senders.join_next().await {
        refused.extend(r.expect("sender task"));
    }
    assert!(refused.is_empty(), "every delivery is acknowledged: {refused:?}\n{}", all_logs());
    let (mut claimed, mut done) = (Vec::new(), Vec::new());
    while let Some(r) = recorders.join_next().await {
        let (c, d) = r.expect("recorder task");
        claimed.extend(c);
        done.extend(d);
    }

    let ids = |v: &[i64]| v.iter().copied().collect::<HashSet<i64>>();
    assert_eq!(claimed.len(), INVITES, "{} claims for {INVITES} jobs\n{}", claimed.len(), all_logs());
    assert_eq!(ids(&claimed).len(), INVITES, "no job is claimed twice");
    assert_eq!(ids(&done), ids(&claimed), "every claimed job is completed, once");
    assert_eq!(done.len(), INVITES);

    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect to the test database");
    let want = i64::try_from(INVITES).expect("count");
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM messages").await, want, "each invite stored once");
    assert_eq!(eventually(&pool, "SELECT COUNT(*) FROM messages WHERE status = 'processed'", want).await, want);
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM events").await, want);
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM event_versions").await, want, "one version per invite");
    assert_eq!(count(&pool, "SELECT COUNT(DISTINCT message_id) FROM decisions").await, want);
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM jobs").await, want, "one job per invite");
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM jobs WHERE state = 'done' AND attempts = 1").await, want);
    let uids: Vec<String> = sqlx::query_scalar("SELECT event_uid FROM jobs").fetch_all(&pool).await.expect("uids");
    let want_uids: HashSet<String> = (0..INVITES).map(|i| format!("cluster-{i}@acme.com")).collect();
    assert_eq!(uids.into_iter().collect::<HashSet<_>>(), want_uids, "every invite has its job");
    pool.close().await;
    drop(daemons);
    db.drop_now().await;
}

/// A PostgreSQL server of this test's own, started and stopped with `../shared/peers`.
struct OwnPostgres {
    peers: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl OwnPostgres {
    fn start(&self) -> Result<String, String> {
        let out = Command::new(self.peers.join("pg-start.sh"))
            .arg(&self.dir)
            .arg(self.port.to_string())
            .env("PG_FAST", "1")
            .output()
            .map_err(|e| format!("pg-start.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!("pg-start.sh failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn stop(&self) {
        let status = Command::new(self.peers.join("pg-stop.sh")).arg(&self.dir).status().expect("pg-stop.sh runs");
        assert!(status.success(), "pg-stop.sh");
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = Command::new(self.peers.join("pg-stop.sh")).arg(&self.dir).output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_answers_451_while_postgresql_is_down_and_accepts_again_when_it_returns() {
    let Some(peers) = common::shared("peers") else {
        common::skip_or_fail("../shared/peers (pg-start.sh) is missing");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // The server runs as an unprivileged account, which must reach its folder.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let pg = OwnPostgres { peers, dir: dir.path().join("pg"), port: free_port() };
    let url = match pg.start() {
        Ok(url) => url,
        Err(e) => {
            common::skip_or_fail(&format!("cannot start a PostgreSQL for this test: {e}"));
            return;
        }
    };
    let config = write_config(dir.path());
    let daemon = Daemon::spawn(dir.path(), "node", &config, &url);
    daemon.wait_healthy().await;

    let invites: Vec<Vec<u8>> = (0..4).map(|i| due_invite(i, now())).collect();
    let mut acknowledged = Vec::new();
    let mut smtp = SmtpClient::connect(daemon.smtp).await.expect("SMTP connect");
    assert_eq!(smtp.send(&invites[0]).await.expect("send"), 250, "{}", daemon.logs());
    acknowledged.push(0);

    pg.stop();
    // The open session and a new one both get 451 for new mail; nothing is taken on.
    let asked = Instant::now();
    assert_eq!(smtp.send(&invites[1]).await.expect("send"), 451, "{}", daemon.logs());
    eprintln!("451 after {:?} with PostgreSQL down", asked.elapsed());
    let mut other = SmtpClient::connect(daemon.smtp).await.expect("SMTP connect while the store is down");
    assert_eq!(other.send(&invites[2]).await.expect("send"), 451, "{}", daemon.logs());
    let (status, _) = http(daemon.http, "GET", "/readyz", None).await.expect("readyz");
    assert_eq!(status, 503, "readyz says the store is down");
    let (status, _) = http(daemon.http, "GET", "/healthz", None).await.expect("healthz");
    assert_eq!(status, 200, "healthz is liveness: the process still answers");

    pg.start().expect("PostgreSQL starts again");
    let back = Instant::now();
    // The senders retry, as a mail server would, on the sessions they have: no daemon restart.
    for (client, n) in [(&mut smtp, 1), (&mut other, 2)] {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let code = client.send(&invites[n]).await.expect("send");
            if code == 250 {
                eprintln!("250 for invite {n} {:?} after PostgreSQL came back", back.elapsed());
                acknowledged.push(n);
                break;
            }
            assert!(Instant::now() < deadline, "still {code} a minute after PostgreSQL came back\n{}", daemon.logs());
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let mut fresh = SmtpClient::connect(daemon.smtp).await.expect("SMTP connect");
    assert_eq!(fresh.send(&invites[3]).await.expect("send"), 250, "{}", daemon.logs());
    acknowledged.push(3);
    daemon.wait_healthy().await;

    // Everything acknowledged is stored and processed into its job.
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM messages").await, 4, "{}", daemon.logs());
    assert_eq!(eventually(&pool, "SELECT COUNT(*) FROM messages WHERE status = 'processed'", 4).await, 4);
    let mut uids: Vec<String> =
        sqlx::query_scalar("SELECT event_uid FROM jobs ORDER BY event_uid").fetch_all(&pool).await.expect("jobs");
    uids.sort();
    let mut want: Vec<String> = acknowledged.iter().map(|n| format!("cluster-{n}@acme.com")).collect();
    want.sort();
    assert_eq!(uids, want, "{}", daemon.logs());
    pool.close().await;
}
