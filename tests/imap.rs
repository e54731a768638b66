//! The IMAP intake against a real Dovecot (`../shared/peers/dovecot-start.sh`), one server
//! per test on free loopback ports, mail delivered with `dovecot-lda`. Without Dovecot the
//! tests skip with a printed reason; with CI=true they fail.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use invited::config::{Config, LiveConfig};
use invited::intake::imap::{content_key, spawn_watchers, ImapTls, MailboxConfig};
use invited::readiness::Readiness;
use invited::store::{self, MailboxStart, NewMessage, Source, Store};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const USER: &str = "assistant@example.com";
const PASS: &str = "password";

/// A Dovecot of one test, stopped and deleted on drop.
struct Dovecot {
    dir: PathBuf,
    imap_port: u16,
    imaps_port: u16,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("addr").port()
}

impl Dovecot {
    fn start() -> Option<Dovecot> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let Some(script) = common::shared("peers/dovecot-start.sh") else {
            common::skip_or_fail("../shared/peers/dovecot-start.sh is missing");
            return None;
        };
        if Command::new("dovecot").arg("--version").output().is_err() {
            common::skip_or_fail("Dovecot is not installed (apt-get install dovecot-imapd)");
            return None;
        }
        // Under /tmp, world-traversable: Dovecot's workers run as unprivileged users.
        let dir = PathBuf::from(format!(
            "/tmp/invited-imap-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let dovecot = Dovecot { dir, imap_port: free_port(), imaps_port: free_port() };
        if let Err(e) = dovecot.script(&script) {
            common::skip_or_fail(&format!("Dovecot did not start: {e}"));
            return None;
        }
        Some(dovecot)
    }

    /// Runs dovecot-start.sh; its output goes to files, because Dovecot inherits the script's
    /// stdout and stderr and would keep pipes open for its whole life.
    fn script(&self, script: &Path) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        let log = self.dir.join("start.log");
        let file = || std::fs::File::create(&log).map_err(|e| e.to_string());
        let status = Command::new(script)
            .arg(&self.dir)
            .env("IMAP_PORT", self.imap_port.to_string())
            .env("IMAPS_PORT", self.imaps_port.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(file()?)
            .status()
            .map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(std::fs::read_to_string(&log).unwrap_or_default())
        }
    }

    fn stop(&self) {
        let stop = common::shared("peers/dovecot-stop.sh").expect("dovecot-stop.sh");
        Command::new(stop).arg(&self.dir).status().expect("run dovecot-stop.sh");
    }

    fn restart(&self) {
        self.script(&common::shared("peers/dovecot-start.sh").expect("dovecot-start.sh")).expect("Dovecot restarts");
    }

    fn maildir(&self) -> PathBuf {
        self.dir.join("mail/example.com/assistant/Maildir")
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("tls/cert.pem")
    }

    /// Delivers like an MTA would: dovecot-lda into INBOX.
    fn deliver(&self, raw: &[u8]) {
        use std::io::Write;
        let mut lda = Command::new("/usr/lib/dovecot/dovecot-lda")
            .arg("-c")
            .arg(self.dir.join("dovecot.conf"))
            .args(["-d", USER, "-f", "alice@acme.com"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("dovecot-lda");
        lda.stdin.take().expect("stdin").write_all(raw).expect("write to dovecot-lda");
        assert!(lda.wait().expect("dovecot-lda ends").success(), "dovecot-lda failed");
    }

    fn mailbox(&self, tls: ImapTls) -> MailboxConfig {
        MailboxConfig {
            host: "127.0.0.1".into(),
            port: Some(if tls == ImapTls::Implicit { self.imaps_port } else { self.imap_port }),
            tls,
            username: USER.into(),
            password: Some(PASS.into()),
            password_env: None,
            folder: "INBOX".into(),
            processed_folder: None,
            ca_file: (tls != ImapTls::None).then(|| self.cert()),
            env_password: None,
        }
    }

    /// A test's own look at the mailbox: UIDs of `folder` matching `search`.
    async fn uids(&self, folder: &str, search: &str) -> Vec<u32> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.imap_port)).await.expect("connect");
        let mut client = async_imap::Client::new(tcp);
        client.read_response().await.expect("greeting");
        let mut session = client.login(USER, PASS).await.map_err(|(e, _)| e).expect("login");
        session.select(folder).await.expect("select");
        let mut uids: Vec<u32> = session.uid_search(search).await.expect("search").into_iter().collect();
        uids.sort_unstable();
        let _ = session.logout().await;
        uids
    }

    /// Fetches every message of INBOX as (uid, bytes), as the watcher would.
    async fn fetch_all(&self) -> (u32, Vec<(u32, Vec<u8>)>) {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.imap_port)).await.expect("connect");
        let mut client = async_imap::Client::new(tcp);
        client.read_response().await.expect("greeting");
        let mut session = client.login(USER, PASS).await.map_err(|(e, _)| e).expect("login");
        let mailbox = session.select("INBOX").await.expect("select");
        let fetches: Vec<_> =
            session.uid_fetch("1:*", "(UID BODY.PEEK[])").await.expect("fetch").try_collect().await.expect("fetch all");
        let all = fetches.iter().map(|f| (f.uid.expect("uid"), f.body().expect("body").to_vec())).collect();
        let _ = session.logout().await;
        (mailbox.uid_validity.expect("uidvalidity"), all)
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if let Some(stop) = common::shared("peers/dovecot-stop.sh") {
            let _ = Command::new(stop).arg(&self.dir).arg("--purge").status();
        }
    }
}

/// An invite the test tenant records: its own UID and meeting link, so each is its own job.
fn invite(n: usize) -> Vec<u8> {
    let raw = String::from_utf8(common::fixture("zoom-invite.eml")).expect("utf-8 fixture");
    raw.replace("UID:review-1@acme.com", &format!("UID:imap-{n}@acme.com"))
        .replace("<zoom-invite.eml@test.example>", &format!("<imap-{n}@test.example>"))
        .replace("j/85551234567", &format!("j/8{n:010}"))
        .into_bytes()
}

fn config(mailboxes: Vec<MailboxConfig>, tweak: impl FnOnce(&mut Config)) -> Arc<Config> {
    // The watchers' log lines, shown with a failing test's output.
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("info,async_imap=info").try_init();
    let mut config = common::config();
    // The fixtures' meetings are in January 2027; the watcher processes with the real clock.
    config.scheduling.horizon_days = 3650;
    config.imap.backoff_base_seconds = 1;
    config.imap.backoff_max_seconds = 2;
    config.imap.lease_retry_seconds = 1;
    config.imap.timeout_seconds = 10;
    config.tenants[0].mailboxes = mailboxes;
    tweak(&mut config);
    Arc::new(config)
}

/// A running set of watchers (the IMAP part of `serve`).
struct Daemon {
    shutdown: CancellationToken,
    handles: Vec<JoinHandle<()>>,
    readiness: Readiness,
}

fn start(config: &Arc<Config>, store: &Arc<dyn Store>) -> Daemon {
    let shutdown = CancellationToken::new();
    let readiness = Readiness::new();
    let handles = spawn_watchers(LiveConfig::from(config.clone()), store.clone(), &readiness, shutdown.clone());
    Daemon { shutdown, handles, readiness }
}

impl Daemon {
    async fn stop(self) {
        self.shutdown.cancel();
        for h in self.handles {
            tokio::time::timeout(Duration::from_secs(30), h).await.expect("watcher stops").expect("no panic");
        }
    }
}

async fn sqlite() -> (tempfile::TempDir, String, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/invited.db", dir.path().display());
    let store = store::open(&url).await.expect("store opens");
    (dir, url, store)
}

async fn count_messages(url: &str) -> i64 {
    let pool = sqlx::SqlitePool::connect(url).await.expect("count pool");
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages").fetch_one(&pool).await.expect("count");
    pool.close().await;
    n
}

/// Waits (generously) until `n` jobs exist; returns how many there are then.
async fn wait_for_jobs(store: &Arc<dyn Store>, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let jobs = store.jobs(false).await.expect("jobs").len();
        if jobs >= n || Instant::now() > deadline {
            return jobs;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn key(m: &MailboxConfig) -> String {
    m.key("acme")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_delivered_while_idling_becomes_a_job() {
    let Some(dovecot) = Dovecot::start() else { return };
    let (_dir, url, store) = sqlite().await;
    let mailbox = dovecot.mailbox(ImapTls::None);
    // No polling within the test's time: only IDLE can bring the message in.
    let config = config(vec![mailbox.clone()], |c| c.imap.poll_seconds = 1200);
    let daemon = start(&config, &store);
    let k = key(&mailbox);
    wait_until("the watcher selected INBOX", || async { store.mailbox_state(&k).await.expect("state").is_some() })
        .await;
    // The watcher IDLEs right after its first (empty) round.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let delivered = Instant::now();
    dovecot.deliver(&invite(1));
    assert_eq!(wait_for_jobs(&store, 1).await, 1, "the delivered invite became a job");
    eprintln!("figure: delivered while idling -> job in {} ms", delivered.elapsed().as_millis());
    assert_eq!(count_messages(&url).await, 1);
    wait_until("the message is flagged \\Seen", || async { dovecot.uids("INBOX", "UNSEEN").await.is_empty() }).await;
    assert_eq!(store.mailbox_state(&k).await.expect("state").expect("known").last_uid, 1);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_messages_delivered_while_stopped_are_taken_in_once() {
    let Some(dovecot) = Dovecot::start() else { return };
    let (_dir, url, store) = sqlite().await;
    let mailbox = dovecot.mailbox(ImapTls::None);
    // No polling within the test's time: what arrives during the first round must be noticed.
    let config = config(vec![mailbox.clone()], |c| c.imap.poll_seconds = 1200);
    for n in 0..200 {
        dovecot.deliver(&invite(n));
    }
    let started = Instant::now();
    let daemon = start(&config, &store);
    let k = key(&mailbox);
    wait_until("the watcher selected INBOX", || async { store.mailbox_state(&k).await.expect("state").is_some() })
        .await;
    dovecot.deliver(&invite(200)); // while the backlog is being taken in
    assert_eq!(wait_for_jobs(&store, 201).await, 201);
    eprintln!("figure: 200 waiting messages (+1 during the round) -> 201 jobs in {} ms", started.elapsed().as_millis());
    daemon.stop().await;
    assert_eq!(count_messages(&url).await, 201);
    assert!(store.unfinished_messages(true).await.expect("unfinished").is_empty(), "all processed");
    assert!(dovecot.uids("INBOX", "UNSEEN").await.is_empty(), "all flagged \\Seen");

    // Started again: nothing is fetched twice.
    let daemon = start(&config, &store);
    dovecot.deliver(&invite(201));
    assert_eq!(wait_for_jobs(&store, 202).await, 202);
    daemon.stop().await;
    assert_eq!(count_messages(&url).await, 202);
    assert_eq!(store.mailbox_state(&k).await.expect("state").expect("known").last_uid, 202);
}

/// The daemon died after committing a batch and before flagging or moving it: the store holds
/// the messages and the last UID, the server still shows them as new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_commit_and_move_reprocesses_nothing() {
    let Some(dovecot) = Dovecot::start() else { return };
    let (_dir, url, store) = sqlite().await;
    let mut mailbox = dovecot.mailbox(ImapTls::None);
    mailbox.processed_folder = Some("Processed".into());
    let config = config(vec![mailbox.clone()], |_| {});
    for n in 0..3 {
        dovecot.deliver(&invite(n));
    }
    // Exactly what the watcher commits before it acknowledges: the messages and the last UID.
    let (uid_validity, fetched) = dovecot.fetch_all().await;
    let k = key(&mailbox);
    assert_eq!(store.start_mailbox(&k, uid_validity, chrono::Utc::now()).await.expect("start"), MailboxStart::New);
    let messages: Vec<NewMessage> = fetched
        .iter()
        .map(|(_, raw)| NewMessage {
            sha256: content_key(&k, raw),
            message_id: None,
            raw: raw.clone(),
            source: Source::Imap,
            envelope_from: None,
            envelope_rcpts: vec!["acme@assistant.example.com".into()],
            received_at: chrono::Utc::now(),
        })
        .collect();
    let up_to = fetched.iter().map(|(uid, _)| *uid).max().expect("three");
    store.spool_from_mailbox(&k, uid_validity, up_to, &messages).await.expect("commit");
    for id in store.unfinished_messages(false).await.expect("unfinished") {
        invited::pipeline::process_message(store.as_ref(), &config, id, chrono::Utc::now()).await.expect("process");
    }
    assert_eq!(store.jobs(false).await.expect("jobs").len(), 3);

    // Restarted: the three are moved, not taken in again; a new one is.
    let daemon = start(&config, &store);
    wait_until("the committed messages left INBOX", || async { dovecot.uids("INBOX", "ALL").await.is_empty() }).await;
    assert_eq!(dovecot.uids("Processed", "ALL").await.len(), 3);
    assert_eq!(count_messages(&url).await, 3, "nothing stored twice");
    dovecot.deliver(&invite(3));
    assert_eq!(wait_for_jobs(&store, 4).await, 4);
    wait_until("the new message was moved", || async { dovecot.uids("Processed", "ALL").await.len() == 4 }).await;
    daemon.stop().await;
    assert_eq!(count_messages(&url).await, 4);
    assert_eq!(store.jobs(false).await.expect("jobs").len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_is_reconnected_to() {
    let Some(dovecot) = Dovecot::start() else { return };
    let (_dir, url, store) = sqlite().await;
    let mailbox = dovecot.mailbox(ImapTls::None);
    let config = config(vec![mailbox.clone()], |c| c.imap.poll_seconds = 1200);
    let daemon = start(&config, &store);
    // `/readyz`'s view of the mailbox: None while connected, else the problem.
    let intake = format!("imap:{}", key(&mailbox));
    let ready = || daemon.readiness.intakes().get(&intake).cloned();
    assert!(ready().is_some_and(|p| p.is_some()), "registered, not ready before its first SELECT");
    dovecot.deliver(&invite(1));
    assert_eq!(wait_for_jobs(&store, 1).await, 1);
    wait_until("the mailbox is ready", || async { ready() == Some(None) }).await;

    dovecot.stop();
    wait_until("the mailbox is not ready while the server is down", || async {
        ready().is_some_and(|p| p.is_some_and(|p| p.starts_with("disconnected")))
    })
    .await;
    dovecot.restart();
    dovecot.deliver(&invite(2));
    assert_eq!(wait_for_jobs(&store, 2).await, 2, "the watcher came back and took the new message");
    wait_until("the mailbox is ready again", || async { ready() == Some(None) }).await;
    daemon.stop().await;
    assert_eq!(count_messages(&url).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uidvalidity_reset_rereads_the_folder_without_repeating() {
    let Some(dovecot) = Dovecot::start() else { return };
    let (_dir, url, store) = sqlite().await;
    let mailbox = dovecot.mailbox(ImapTls::None);
    let config = config(vec![mailbox.clone()], |_| {});
    let k = key(&mailbox);
    dovecot.deliver(&invite(1));
    dovecot.deliver(&invite(2));
    let daemon = start(&config, &store);
    assert_eq!(wait_for_jobs(&store, 2).await, 2);
    daemon.stop().await;
    let before = store.mailbox_state(&k).await.expect("state").expect("known");

    // Dovecot forgets its UID list: the next SELECT reports a new UIDVALIDITY and renumbers.
    dovecot.stop();
    for entry in std::fs::read_dir(dovecot.maildir()).expect("maildir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if name.starts_with("dovecot-uidlist") || name.starts_with("dovecot.index") {
            std::fs::remove_file(&path).expect("remove index file");
        }
    }
    tokio::time::sleep(Duration::from_millis(1100)).await; // UIDVALIDITY is a time in seconds
    dovecot.restart();
    dovecot.deliver(&invite(3));

    let daemon = start(&config, &store);
    assert_eq!(wait_for_jobs(&store, 3).await, 3);
    let k2 = k.clone();
    wait_until("the whole folder was read again", || async {
        store.mailbox_state(&k2).await.expect("state").is_some_and(|s| s.last_uid == 3)
    })
    .await;
    daemon.stop().await;
    let after = store.mailbox_state(&k).await.expect("state").expect("known");
    assert_ne!(after.uid_validity, before.uid_validity);
    assert_eq!(count_messages(&url).await, 3, "the two known messages were recognised by content");
    assert_eq!(store.jobs(false).await.expect("jobs").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_and_starttls_with_a_self_signed_certificate() {
    let Some(dovecot) = Dovecot::start() else { return };
    for (n, tls) in [ImapTls::Implicit, ImapTls::Starttls].into_iter().enumerate() {
        // A fresh store each time: it reads the whole folder, earlier messages included.
        let (_dir, url, store) = sqlite().await;
        let mailbox = dovecot.mailbox(tls);
        // IDLE only: the message must come through the TLS session's IDLE.
        let config = config(vec![mailbox.clone()], |c| c.imap.poll_seconds = 1200);
        let daemon = start(&config, &store);
        let k = key(&mailbox);
        wait_until("the watcher selected INBOX", || async { store.mailbox_state(&k).await.expect("state").is_some() })
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        dovecot.deliver(&invite(n));
        assert_eq!(wait_for_jobs(&store, n + 1).await, n + 1, "{tls:?}");
        daemon.stop().await;
        assert_eq!(count_messages(&url).await, n as i64 + 1, "{tls:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_does_not_stop_the_other_mailboxes() {
    let Some(dovecot) = Dovecot::start() else { return };
    let (_dir, url, store) = sqlite().await;
    let good = dovecot.mailbox(ImapTls::None);
    let mut wrong = dovecot.mailbox(ImapTls::Starttls);
    wrong.username = "intruder@example.com".into();
    wrong.password = Some("not-the-password".into());
    let config = config(vec![wrong.clone(), good.clone()], |_| {});
    let daemon = start(&config, &store);
    let log = dovecot.dir.join("log/dovecot.log");
    wait_until("Dovecot refused the wrong login", || async {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("auth failed") && l.contains("intruder@example.com"))
    })
    .await;
    dovecot.deliver(&invite(1));
    assert_eq!(wait_for_jobs(&store, 1).await, 1);
    daemon.stop().await;
    assert_eq!(count_messages(&url).await, 1);
    assert!(store.mailbox_state(&key(&wrong)).await.expect("state").is_none(), "never logged in");
}

/// Two daemons (two stores on one PostgreSQL) watch one mailbox: one at a time, and the other
/// takes over when the holder goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_takes_over_the_mailbox_when_the_first_dies() {
    let Some(db) = common::pg_database().await else { return };
    let Some(dovecot) = Dovecot::start() else { return };
    let store_a = store::open(&db.url).await.expect("store a");
    let store_b = store::open(&db.url).await.expect("store b");
    let mailbox = dovecot.mailbox(ImapTls::None);
    let k = key(&mailbox);
    let config = config(vec![mailbox.clone()], |_| {});

    let a = start(&config, &store_a);
    wait_until("daemon a watches", || async { store_a.mailbox_state(&k).await.expect("state").is_some() }).await;
    // While a holds the mailbox, nobody else may take it.
    assert!(store_b.try_lease_mailbox(&k).await.expect("ask").is_none());
    let b = start(&config, &store_b);
    dovecot.deliver(&invite(1));
    assert_eq!(wait_for_jobs(&store_a, 1).await, 1);
    let intake = format!("imap:{k}");
    wait_until("the standby daemon is ready: the mailbox is watched", || async {
        b.readiness.intakes().get(&intake) == Some(&None)
    })
    .await;

    a.stop().await;
    dovecot.deliver(&invite(2));
    assert_eq!(wait_for_jobs(&store_b, 2).await, 2, "b took the mailbox over");
    b.stop().await;
    let pool = sqlx::PgPool::connect(&db.url).await.expect("pool");
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages").fetch_one(&pool).await.expect("count");
    assert_eq!(n, 2, "each message stored once");
    pool.close().await;
    drop((store_a, store_b));
    db.drop_now().await;
}

/// The lease itself: held by one session at a time, free again once released or dropped.
#[tokio::test]
async fn the_postgres_mailbox_lease_is_exclusive() {
    let Some(db) = common::pg_database().await else { return };
    let a = store::open(&db.url).await.expect("store a");
    let b = store::open(&db.url).await.expect("store b");
    let mut held = a.try_lease_mailbox("acme/x@h:993/INBOX").await.expect("lease").expect("free");
    held.check().await.expect("still held");
    assert!(b.try_lease_mailbox("acme/x@h:993/INBOX").await.expect("ask").is_none());
    assert!(b.try_lease_mailbox("acme/y@h:993/INBOX").await.expect("ask").is_some(), "another mailbox is free");
    held.release().await;
    let again = b.try_lease_mailbox("acme/x@h:993/INBOX").await.expect("ask").expect("free after release");
    drop(again);
    // A dropped lease (a dead daemon) frees the mailbox once its session is gone.
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.try_lease_mailbox("acme/x@h:993/INBOX").await.expect("ask").is_none() {
        assert!(Instant::now() < deadline, "the dropped lease was never freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop((a, b));
    db.drop_now().await;
}

/// IMAP copies carry no header of ours: the same invite in two tenants' mailboxes must be
/// kept once per tenant, each under its own recipient, and read twice in one mailbox stays one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_mail_in_two_tenants_mailboxes_is_kept_for_both() {
    let Some(dovecot) = Dovecot::start() else { return };
    let (_dir, url, store) = sqlite().await;
    let mailbox = dovecot.mailbox(ImapTls::None);
    let config = config(vec![mailbox.clone()], |c| {
        let mut globex = c.tenants[0].clone();
        globex.id = "globex".into();
        globex.assistant_addresses = vec!["globex@assistant.example.com".into()];
        c.tenants.push(globex);
    });
    dovecot.deliver(&invite(1));
    let daemon = start(&config, &store);
    assert_eq!(daemon.handles.len(), 2, "one watcher per tenant's mailbox");
    let (acme, globex) = (mailbox.key("acme"), mailbox.key("globex"));
    for k in [&acme, &globex] {
        wait_until("both mailboxes were read", || async {
            store.mailbox_state(k).await.expect("state").is_some_and(|s| s.last_uid == 1)
        })
        .await;
    }
    wait_until("both copies were stored", || async { count_messages(&url).await == 2 }).await;
    daemon.stop().await;
    let pool = sqlx::SqlitePool::connect(&url).await.expect("pool");
    let mut rcpts: Vec<String> =
        sqlx::query_scalar("SELECT envelope_rcpts FROM messages").fetch_all(&pool).await.expect("rcpts");
    pool.close().await;
    rcpts.sort();
    assert_eq!(rcpts, [r#"["acme@assistant.example.com"]"#, r#"["globex@assistant.example.com"]"#]);
}

/// A reload that takes the mailbox's address from its tenant pauses the mailbox: its mail is
/// left unread on the server (not flagged, not stored) until the address is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_orphans_the_mailbox_pauses_it() {
    let Some(dovecot) = Dovecot::start() else { return };
    let (_dir, url, store) = sqlite().await;
    let mailbox = dovecot.mailbox(ImapTls::None);
    let config = config(vec![mailbox.clone()], |_| {});
    let live = LiveConfig::from(config.clone());
    let shutdown = CancellationToken::new();
    let readiness = Readiness::new();
    let daemon = Daemon {
        handles: spawn_watchers(live.clone(), store.clone(), &readiness, shutdown.clone()),
        shutdown,
        readiness,
    };
    let k = key(&mailbox);
    wait_until("the watcher selected INBOX", || async { store.mailbox_state(&k).await.expect("state").is_some() })
        .await;

    let mut orphaned = (*config).clone();
    orphaned.tenants[0].assistant_addresses = vec!["renamed@assistant.example.com".into()];
    assert!(live.replace(orphaned).is_empty(), "not a restart-only change");
    dovecot.deliver(&invite(1));
    // Several rounds and reconnects happen within this time (backoff at most 2 s).
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(count_messages(&url).await, 0, "nothing processed under no tenant");
    assert_eq!(dovecot.uids("INBOX", "UNSEEN").await.len(), 1, "the message is left for later");

    live.replace((*config).clone());
    assert_eq!(wait_for_jobs(&store, 1).await, 1, "taken in once the address is back");
    wait_until("the message was flagged", || async { dovecot.uids("INBOX", "UNSEEN").await.is_empty() }).await;
    daemon.stop().await;
    assert_eq!(count_messages(&url).await, 1);
}
