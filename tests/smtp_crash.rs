//! Crash test of the SMTP intake: the real `invited serve` binary (SQLite in a temp folder)
//! takes 2,000 invites from concurrent SMTP sessions, is killed with SIGKILL in the middle,
//! and is started again on the same store while the clients carry on, retrying every message
//! that got no `250`. Afterwards every message that got `250` is in the store exactly once,
//! processed, with one version and one job, and nothing is there twice.

mod common;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const ACME: &str = "acme@assistant.example.com";
/// Invites sent, each with its own Message-ID, UID and meeting link.
const MESSAGES: usize = 2000;
/// Concurrent client sessions.
const SESSIONS: usize = 8;
/// The daemon is killed once this many messages got `250`.
const KILL_AFTER: usize = 600;
/// Generous bound for "eventually": sending, restart and processing.
const PATIENCE: Duration = Duration::from_secs(300);

/// A port that was free a moment ago, on loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Starts `invited serve` on the store in `dir`, its log appended to `dir/daemon.log`.
fn spawn_daemon(dir: &Path, smtp: u16, http: u16) -> Child {
    let log = OpenOptions::new().create(true).append(true).open(dir.join("daemon.log")).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_invited"))
        .arg("serve")
        .env("INVITED_CONFIG", common::fixtures().join("config.toml"))
        .env("INVITED_STORE__URL", format!("sqlite://{}/invited.db", dir.display()))
        .env("INVITED_SERVER__SMTP_LISTEN", format!("127.0.0.1:{smtp}"))
        .env("INVITED_SERVER__HTTP_LISTEN", format!("127.0.0.1:{http}"))
        // Resume what the crash left unprocessed soon after the restart.
        .env("INVITED_SCHEDULING__TICK_SECONDS", "1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("invited serve starts")
}

/// Invite `i`: its own Message-ID, UID and Zoom link (so no two share a job), a week ahead.
fn invite(i: usize, start: DateTime<Utc>) -> String {
    let start = start + chrono::Duration::minutes(i as i64);
    let end = start + chrono::Duration::minutes(30);
    let t = |d: DateTime<Utc>| d.format("%Y%m%dT%H%M%SZ").to_string();
    format!(
        "From: Alice <alice@acme.com>\r\nTo: {ACME}\r\nSubject: Crash test {i}\r\n\
         Message-ID: <crash-{i}@test.example>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/calendar; charset=utf-8; method=REQUEST\r\n\r\n\
         BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//invited crash test//EN\r\nMETHOD:REQUEST\r\n\
         BEGIN:VEVENT\r\nUID:crash-{i}@acme.com\r\nDTSTAMP:{}\r\nSEQUENCE:0\r\nDTSTART:{}\r\nDTEND:{}\r\n\
         SUMMARY:Crash test {i}\r\nORGANIZER:mailto:alice@acme.com\r\n\
         LOCATION:https://us02web.zoom.us/j/9{i:010}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
        t(Utc::now()),
        t(start),
        t(end),
    )
}

/// Why a delivery attempt did not end in `250`.
#[derive(Debug)]
enum Failed {
    /// The connection broke or timed out (the daemon was killed): reconnect and retry.
    Connection,
    /// The server answered something else; retried as well, and counted.
    Refused(String),
}

struct Connection {
    s: BufReader<TcpStream>,
}

impl Connection {
    async fn open(addr: SocketAddr) -> Result<Connection, Failed> {
        let stream = TcpStream::connect(addr).await.map_err(|_| Failed::Connection)?;
        let mut c = Connection { s: BufReader::new(stream) };
        c.expect("220").await?;
        c.s.get_mut().write_all(b"EHLO crash.test.example\r\n").await.map_err(|_| Failed::Connection)?;
        c.expect("250").await?;
        Ok(c)
    }

    /// One reply (all its lines).
    async fn reply(&mut self) -> Result<String, Failed> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            match tokio::time::timeout(Duration::from_secs(60), self.s.read_line(&mut line)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return Err(Failed::Connection),
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] == b' ' {
                return Ok(all);
            }
        }
    }

    async fn expect(&mut self, code: &str) -> Result<(), Failed> {
        let r = self.reply().await?;
        if r.starts_with(code) {
            Ok(())
        } else {
            Err(Failed::Refused(r))
        }
    }

    /// One pipelined transaction; Ok only on a final `250`.
    async fn deliver(&mut self, body: &str) -> Result<(), Failed> {
        let envelope = format!("MAIL FROM:<alice@acme.com>\r\nRCPT TO:<{ACME}>\r\nDATA\r\n");
        self.s.get_mut().write_all(envelope.as_bytes()).await.map_err(|_| Failed::Connection)?;
        self.expect("250").await?;
        self.expect("250").await?;
        self.expect("354").await?;
        let data = format!("{body}.\r\n");
        self.s.get_mut().write_all(data.as_bytes()).await.map_err(|_| Failed::Connection)?;
        self.expect("250").await
    }
}

/// What one client session saw.
#[derive(Default)]
struct Sent {
    /// Message numbers that got `250`.
    accepted: Vec<usize>,
    /// Attempts that ended without `250`, and the replies that were not a broken connection.
    retries: usize,
    refusals: Vec<String>,
}

/// Sends messages `first`, `first + SESSIONS`, … in order, each until it gets `250`.
async fn client(
    addr: SocketAddr,
    first: usize,
    start: DateTime<Utc>,
    accepted: Arc<AtomicUsize>,
    deadline: Instant,
) -> Sent {
    let mut sent = Sent::default();
    let mut conn: Option<Connection> = None;
    for i in (first..MESSAGES).step_by(SESSIONS) {
        let body = invite(i, start);
        loop {
            assert!(Instant::now() < deadline, "message {i} got no 250 within {PATIENCE:?}");
            let attempt = match conn.as_mut() {
                Some(c) => c.deliver(&body).await,
                None => match Connection::open(addr).await {
                    Ok(c) => conn.insert(c).deliver(&body).await,
                    Err(e) => Err(e),
                },
            };
            match attempt {
                Ok(()) => {
                    sent.accepted.push(i);
                    accepted.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                Err(e) => {
                    sent.retries += 1;
                    if let Failed::Refused(r) = e {
                        sent.refusals.push(r);
                    }
                    // A new connection for the retry: the old one may be mid-transaction or dead.
                    conn = None;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    if let Some(mut c) = conn {
        let _ = c.s.get_mut().write_all(b"QUIT\r\n").await;
    }
    sent
}

async fn count(pool: &sqlx::SqlitePool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

fn logs(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_250_survives_sigkill_and_is_processed_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (smtp, http) = (free_port(), free_port());
    let addr: SocketAddr = format!("127.0.0.1:{smtp}").parse().expect("addr");
    let mut daemon = spawn_daemon(dir.path(), smtp, http);
    let started = Instant::now();
    let deadline = started + PATIENCE;
    let start = Utc::now() + chrono::Duration::days(7);

    let accepted = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> =
        (0..SESSIONS).map(|s| tokio::spawn(client(addr, s, start, accepted.clone(), deadline))).collect();

    // Kill mid-stream, then start again on the same store and port.
    while accepted.load(Ordering::SeqCst) < KILL_AFTER {
        assert!(
            Instant::now() < deadline,
            "only {} messages accepted; logs:\n{}",
            accepted.load(Ordering::SeqCst),
            logs(dir.path())
        );
        if let Ok(Some(status)) = daemon.try_wait() {
            panic!("the daemon exited by itself ({status}); logs:\n{}", logs(dir.path()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    daemon.kill().expect("SIGKILL");
    let accepted_before_kill = accepted.load(Ordering::SeqCst);
    daemon.wait().expect("killed daemon reaped");
    let mut daemon = spawn_daemon(dir.path(), smtp, http);

    let mut sent = Sent::default();
    for c in clients {
        let s = c.await.expect("client finished");
        sent.accepted.extend(s.accepted);
        sent.retries += s.retries;
        sent.refusals.extend(s.refusals);
    }
    sent.accepted.sort_unstable();
    assert_eq!(sent.accepted, (0..MESSAGES).collect::<Vec<_>>(), "every message got 250 once the daemon was back");

    // Processing finishes after the last 250 (the restarted daemon also resumes what the
    // killed one had stored but not processed).
    let db = File::open(dir.path().join("invited.db")).map(|_| format!("sqlite://{}/invited.db", dir.path().display()));
    let pool = sqlx::SqlitePool::connect(&db.expect("the store exists")).await.expect("store pool");
    let mut processed = 0;
    while Instant::now() < deadline {
        processed = count(&pool, "SELECT COUNT(*) FROM messages WHERE status = 'processed'").await;
        if processed as usize >= MESSAGES {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Exactly once: per Message-ID one stored message, processed; per UID one version, one job.
    let rows: Vec<(Option<String>, i64, i64)> =
        sqlx::query_as("SELECT message_id, COUNT(*), SUM(status = 'processed') FROM messages GROUP BY message_id")
            .fetch_all(&pool)
            .await
            .expect("messages by Message-ID");
    let stored: HashMap<String, (i64, i64)> =
        rows.into_iter().map(|(id, n, done)| (id.unwrap_or_default(), (n, done))).collect();
    let versions: HashMap<String, i64> = sqlx::query_as(
        "SELECT e.uid, COUNT(*) FROM event_versions v JOIN events e ON e.id = v.event_id GROUP BY e.uid",
    )
    .fetch_all(&pool)
    .await
    .expect("versions by UID")
    .into_iter()
    .collect();
    let jobs: HashMap<String, i64> =
        sqlx::query_as("SELECT event_uid, COUNT(*) FROM jobs WHERE state = 'scheduled' GROUP BY event_uid")
            .fetch_all(&pool)
            .await
            .expect("jobs by UID")
            .into_iter()
            .collect();
    for &i in &sent.accepted {
        let message_id = format!("crash-{i}@test.example");
        let uid = format!("crash-{i}@acme.com");
        assert_eq!(stored.get(&message_id), Some(&(1, 1)), "message {i}: (stored, processed)");
        assert_eq!(versions.get(&uid), Some(&1), "message {i}: versions");
        assert_eq!(jobs.get(&uid), Some(&1), "message {i}: jobs");
    }
    let total_messages = count(&pool, "SELECT COUNT(*) FROM messages").await;
    let total_versions = count(&pool, "SELECT COUNT(*) FROM event_versions").await;
    let total_jobs = count(&pool, "SELECT COUNT(*) FROM jobs").await;
    let failed = count(&pool, "SELECT COUNT(*) FROM messages WHERE status = 'failed'").await;
    // A message processed before the kill whose status had not been written yet is decided
    // again after the restart: one more decision row, but no new version and no new job.
    let decided_twice =
        count(&pool, "SELECT COUNT(*) FROM (SELECT message_id FROM decisions GROUP BY message_id HAVING COUNT(*) > 1)")
            .await;
    assert_eq!(
        (total_messages, total_versions, total_jobs, failed),
        (MESSAGES as i64, MESSAGES as i64, MESSAGES as i64, 0)
    );
    println!(
        "crash test: {MESSAGES} sent over {SESSIONS} sessions; {accepted_before_kill} got 250 before SIGKILL; \
         {} attempts retried ({} refused with a reply); stored {total_messages}, processed {processed}, \
         versions {total_versions}, jobs {total_jobs}, failed {failed}, decided again after restart {decided_twice}; \
         {:.1} s",
        sent.retries,
        sent.refusals.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(sent.refusals.is_empty(), "replies other than 250: {:?}", &sent.refusals[..sent.refusals.len().min(5)]);

    pool.close().await;
    daemon.kill().expect("stop the daemon");
    let _ = daemon.wait();
}

/// The SMTP workers and the resume tick can reach one message at once, or one after the
/// other: it is decided once.
#[tokio::test]
async fn a_message_reached_by_two_runs_is_decided_once() {
    use invited::pipeline::process_message;
    use invited::store::{NewMessage, Source};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = invited::store::open(&format!("sqlite://{}/t.db", dir.path().display())).await.expect("store");
    let config = common::config();
    let raw = invite(1, Utc::now() + chrono::Duration::days(7)).into_bytes();
    let spooled = store
        .spool_message(&NewMessage {
            sha256: "twice".into(),
            raw,
            source: Source::Smtp,
            envelope_from: Some("alice@acme.com".into()),
            envelope_rcpts: vec![ACME.into()],
            message_id: None,
            received_at: Utc::now(),
        })
        .await
        .expect("spooled");
    let now = Utc::now();
    let (a, b) = tokio::join!(
        process_message(store.as_ref(), &config, spooled.id, now),
        process_message(store.as_ref(), &config, spooled.id, now)
    );
    let (a, b) = (a.expect("first run"), b.expect("second run"));
    assert_eq!((a.already_processing, b.already_processing), (false, true));
    assert_eq!((a.jobs_created, b.jobs_created), (1, 0));
    let again = process_message(store.as_ref(), &config, spooled.id, now).await.expect("third run");
    assert!(again.duplicate_message && again.versions_stored == 0 && again.jobs_created == 0, "{again:?}");
    let history = store.history("crash-1@acme.com").await.expect("history");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].decisions.len(), 1, "decided once");
}

/// `process_messages` takes any list of ids; one named twice is processed once, in that
/// batch, not left over. (The SMTP sessions queue only the first copy of repeated bytes,
/// so they do not make such a list today; this guards the function, whoever calls it.)
#[tokio::test]
async fn a_batch_that_names_one_message_twice_processes_it_once() {
    use invited::pipeline::process_messages;
    use invited::store::{NewMessage, Source};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = invited::store::open(&format!("sqlite://{}/t.db", dir.path().display())).await.expect("store");
    let config = common::config();
    let spool = |i: usize| NewMessage {
        sha256: format!("batch-{i}"),
        raw: invite(i, Utc::now() + chrono::Duration::days(7)).into_bytes(),
        source: Source::Smtp,
        envelope_from: Some("alice@acme.com".into()),
        envelope_rcpts: vec![ACME.into()],
        message_id: None,
        received_at: Utc::now(),
    };
    let a = store.spool_message(&spool(1)).await.expect("spooled").id;
    let b = store.spool_message(&spool(2)).await.expect("spooled").id;
    let results = process_messages(store.as_ref(), &config, &[a, b, a], Utc::now()).await;
    let reports: Vec<_> = results.into_iter().map(|(id, r)| (id, r.expect("processed"))).collect();
    let ids: Vec<i64> = reports.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.iter().filter(|&&id| id == a).count(), 2, "{ids:?}");
    let worked: Vec<_> = reports.iter().filter(|(_, r)| !r.already_processing).collect();
    assert_eq!(worked.len(), 2, "{reports:?}");
    assert!(worked.iter().all(|(_, r)| r.jobs_created == 1), "{reports:?}");
    assert!(store.unfinished_messages(false).await.expect("unfinished").is_empty(), "every message processed");
}
