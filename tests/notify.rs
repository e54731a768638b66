//! Reply mail, delivered for real: the daemon's replies go through lettre to a second
//! `invited` SMTP intake on 127.0.0.1 whose catch-all tenant takes mail for the requesters,
//! and the tests read what it received.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use invited::config::Config;
use invited::intake::smtp::SmtpServer;
use invited::notify::sender::{self, ReplySender};
use invited::pipeline::{ingest, process_message};
use invited::store::{self, Source, Store};
use mail_parser::MessageParser;
use tokio_util::sync::CancellationToken;

const ACME: &str = "acme@assistant.example.com";

/// A real SMTP server standing in for the requesters' mailboxes.
struct Inbox {
    port: u16,
    db_url: String,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

const INBOX_CONFIG: &str = r#"
[[tenants]]
id = "inbox"
assistant_addresses = ["alice@acme.com", "carol@acme.com", "dan@acme.com", "noseat@acme.com", "peter@initech.example"]
"#;

impl Inbox {
    /// Listens on `port` (0: any free one).
    async fn start(port: u16) -> Inbox {
        let dir = tempfile::tempdir().expect("tempdir");
        let db_url = format!("sqlite://{}/inbox.db", dir.path().display());
        let store = store::open(&db_url).await.expect("inbox store");
        let mut config = Config::from_toml(INBOX_CONFIG).expect("inbox config");
        config.server.smtp_listen = format!("127.0.0.1:{port}");
        config.server.hostname = "inbox.test.invalid".into();
        let shutdown = CancellationToken::new();
        let server = SmtpServer::bind(Arc::new(config), store, shutdown.clone()).await.expect("inbox binds");
        let port = server.local_addr().expect("addr").port();
        let handle = tokio::spawn(server.run());
        Inbox { port, db_url, shutdown, handle, _dir: dir }
    }

    /// Every mail received, oldest first, with its envelope recipients.
    async fn received(&self) -> Vec<(String, String)> {
        let pool = sqlx::SqlitePool::connect(&self.db_url).await.expect("inbox pool");
        let rows: Vec<(Vec<u8>, String)> = sqlx::query_as(
            "SELECT r.raw, m.envelope_rcpts FROM messages m JOIN message_raw r ON r.message_id = m.id ORDER BY m.id",
        )
        .fetch_all(&pool)
        .await
        .expect("rows");
        pool.close().await;
        rows.into_iter().map(|(raw, rcpts)| (String::from_utf8(raw).expect("utf-8"), rcpts)).collect()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.handle.await;
    }
}

/// The test tenants with replies on, through a relay on `port` without TLS (loopback).
fn notify_config(port: u16, tweak: impl FnOnce(&mut Config)) -> Config {
    let mut config = common::config();
    config.server.hostname = "assistant.test.invalid".into();
    config.notify.enabled = true;
    config.notify.relay_host = "127.0.0.1".into();
    config.notify.relay_port = port;
    config.notify.relay_tls = invited::notify::RelayTls::None;
    config.notify.retry_base_seconds = 60;
    config.notify.retry_max_seconds = 600;
    config.notify.timeout_seconds = 5;
    tweak(&mut config);
    config
}

async fn sqlite_store(dir: &tempfile::TempDir) -> (Arc<dyn Store>, String) {
    let url = format!("sqlite://{}/invited.db", dir.path().display());
    (store::open(&url).await.expect("store"), url)
}

/// Takes `raw` in as SMTP from `alice@acme.com` to the acme assistant.
async fn receive(store: &dyn Store, config: &Config, raw: &[u8], now: DateTime<Utc>) {
    receive_from(store, config, raw, Some("alice@acme.com"), now).await;
}

async fn receive_from(store: &dyn Store, config: &Config, raw: &[u8], from: Option<&str>, now: DateTime<Utc>) {
    let text = String::from_utf8_lossy(raw);
    let rcpt = ["initech@assistant.example.com", "globex@assistant.example.com"]
        .into_iter()
        .find(|a| text.contains(a))
        .unwrap_or(ACME);
    ingest(store, config, raw.to_vec(), Source::Smtp, from.map(str::to_string), vec![rcpt.into()], now)
        .await
        .expect("ingest");
}

/// (state, outcome, attempts, last_error) of every queued reply, oldest first.
async fn replies(db_url: &str) -> Vec<(String, String, i64, Option<String>)> {
    let pool = sqlx::SqlitePool::connect(db_url).await.expect("pool");
    let rows = sqlx::query_as("SELECT state, outcome, attempts, last_error FROM replies ORDER BY id")
        .fetch_all(&pool)
        .await
        .expect("replies");
    pool.close().await;
    rows
}

fn with_header(raw: &[u8], header: &str) -> Vec<u8> {
    let mut out = format!("{header}\r\n").into_bytes();
    out.extend_from_slice(raw);
    out
}

fn replace(raw: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8(raw.to_vec()).expect("utf-8 fixture");
    assert!(text.contains(from), "fixture has {from:?}");
    text.replace(from, to).into_bytes()
}

/// A parsed received reply: headers as written, and the decoded text and HTML parts.
struct Reply {
    raw: String,
    text: String,
    html: String,
    subject: String,
}

fn parse(raw: &str) -> Reply {
    let msg = MessageParser::default().parse(raw.as_bytes()).expect("reply parses");
    Reply {
        raw: raw.to_string(),
        text: msg.body_text(0).expect("text part").replace("\r\n", "\n"),
        html: msg.body_html(0).expect("html part").into_owned(),
        subject: msg.subject().expect("subject").to_string(),
    }
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        let head = self.raw.split("\r\n\r\n").next().unwrap_or("");
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        unfolded
            .lines()
            .find_map(|l| l.split_once(": ").filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.to_string()))
    }
}

#[tokio::test]
async fn a_scheduled_meeting_gets_a_threaded_reply_saying_what_will_happen() {
    let inbox = Inbox::start(0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, db_url) = sqlite_store(&dir).await;
    let config = notify_config(inbox.port, |_| {});
    let now = common::now();
    receive(store.as_ref(), &config, &common::fixture("zoom-invite.eml"), now).await;
    let sender = ReplySender::new(&config, store.clone()).expect("sender");
    assert_eq!(sender.send_due(now).await.expect("send"), 1);

    let received = inbox.received().await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].1, r#"["alice@acme.com"]"#);
    let reply = parse(&received[0].0);
    assert_eq!(reply.header("From").as_deref(), Some("\"Recording assistant\" <acme@assistant.example.com>"));
    assert_eq!(reply.header("To").as_deref(), Some("alice@acme.com"));
    assert_eq!(reply.subject, "Will be recorded: Quarterly review");
    assert_eq!(reply.header("In-Reply-To").as_deref(), Some("<zoom-invite.eml@test.example>"));
    assert_eq!(reply.header("References").as_deref(), Some("<zoom-invite.eml@test.example>"));
    assert_eq!(reply.header("Auto-Submitted").as_deref(), Some("auto-replied"));
    assert_eq!(reply.header("Message-ID").as_deref(), Some("<invited-reply-1@assistant.test.invalid>"));
    assert!(reply.header("Content-Type").is_some_and(|c| c.starts_with("multipart/alternative")), "{}", reply.raw);
    // The meeting is at 16:00 Berlin: 10:00 in the tenant's New York, 15:00 UTC.
    for want in [
        "This meeting will be recorded",
        "Meeting:   Quarterly review",
        "Fetched:   Monday 11 January 2027, 11:15 EST (16:15 UTC)",
        "Monday 11 January 2027, 10:00–11:00 EST (America/New_York)",
        "Monday 11 January 2027, 15:00–16:00 UTC",
        "Where:     Zoom, https://us02web.zoom.us/j/85551234567?pwd=abc",
        "No bot joins. The Zoom cloud recording is fetched after the meeting ends",
    ] {
        assert!(reply.text.contains(want), "text lacks {want:?}:\n{}", reply.text);
    }
    assert!(reply.html.contains("<th style=\"text-align: left; vertical-align: top\">When</th>"), "{}", reply.html);
    assert!(reply.html.contains("10:00–11:00 EST"), "{}", reply.html);
    assert_eq!(replies(&db_url).await, vec![("sent".into(), "scheduled".into(), 1, None)]);
    // Sent once: nothing is due any more.
    assert_eq!(sender.send_due(now + TimeDelta::hours(2)).await.expect("send"), 0);
    assert_eq!(inbox.received().await.len(), 1);
    inbox.stop().await;
}

#[tokio::test]
async fn each_outcome_has_its_reply() {
    let inbox = Inbox::start(0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = sqlite_store(&dir).await;
    let config = notify_config(inbox.port, |_| {});
    let now = common::now();
    let sender = ReplySender::new(&config, store.clone()).expect("sender");
    // (fixture, subject, In-Reply-To, phrases of the text)
    let cases: &[(&str, &str, &str, &[&str])] = &[
        ("zoom-invite.eml", "Will be recorded: Quarterly review", "<zoom-invite.eml@test.example>", &["No bot joins"]),
        (
            "zoom-update.eml",
            "Recording moved: Quarterly review",
            "<zoom-update.eml@test.example>",
            &["This meeting has moved; its recording moved with it.", "Tuesday 12 January 2027, 04:00–05:00 EST"],
        ),
        (
            "zoom-cancel.eml",
            "Recording cancelled: Quarterly review",
            "<zoom-cancel.eml@test.example>",
            &["This meeting was cancelled, so it will not be recorded.", "forward the new invitation"],
        ),
        (
            "consent-missing.eml",
            "Will not be recorded: Quarterly review",
            "<consent-missing.eml@test.example>",
            &[
                "Why, and what you can do:",
                "- Your company requires a recording-consent link for this meeting, and the invitation has none.",
                "  Replace the meeting link with your consent link",
            ],
        ),
        (
            "teams-invite.eml",
            "Will be recorded: Quarterly review",
            "<teams-invite.eml@test.example>",
            &["A recording bot joins the Microsoft Teams meeting", "- The bot may wait in the lobby"],
        ),
        (
            "authenticated-zoom-local.eml",
            "Will be recorded: Quarterly review",
            "<authenticated-zoom-local.eml@test.example>",
            &["When:      Monday 11 January 2027, 15:00–16:00 UTC\nWhere:", "- The host must allow recording in Zoom"],
        ),
        (
            "noseat.eml",
            "Will not be recorded: Quarterly review",
            "<noseat.eml@test.example>",
            &["- You have no seat (licence)", "- You are not allowed to schedule recordings by invitation."],
        ),
    ];
    for (i, (fixture, subject, in_reply_to, phrases)) in cases.iter().enumerate() {
        receive_from(store.as_ref(), &config, &common::fixture(fixture), None, now).await;
        assert_eq!(sender.send_due(now).await.expect("send"), 1, "{fixture}: one reply");
        let received = inbox.received().await;
        assert_eq!(received.len(), i + 1, "{fixture}");
        let reply = parse(&received[i].0);
        assert_eq!(reply.subject, *subject, "{fixture}");
        assert_eq!(reply.header("In-Reply-To").as_deref(), Some(*in_reply_to), "{fixture}");
        assert_eq!(reply.header("Auto-Submitted").as_deref(), Some("auto-replied"), "{fixture}");
        for p in *phrases {
            assert!(reply.text.contains(p), "{fixture}: text lacks {p:?}:\n{}", reply.text);
        }
        // The README's example replies: SHOW_REPLIES=1 cargo test --test notify each_outcome -- --nocapture
        if std::env::var("SHOW_REPLIES").is_ok() {
            let head = reply.raw.split("\r\n\r\n").next().unwrap_or("");
            println!("==== {fixture}\n{head}\n\n{}", reply.text);
        }
    }
    inbox.stop().await;
}

#[tokio::test]
async fn nothing_new_means_no_new_reply_and_reprocessing_queues_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, db_url) = sqlite_store(&dir).await;
    let config = notify_config(1, |_| {});
    let now = common::now();
    let invite = common::fixture("zoom-invite.eml");
    receive(store.as_ref(), &config, &invite, now).await;
    // Forwarded again (other bytes, same meeting): what will happen did not change.
    receive(store.as_ref(), &config, &with_header(&invite, "X-Forwarded: again"), now).await;
    // The first message processed again (a crash before it was marked processed).
    process_message(store.as_ref(), &config, 1, now).await.expect("reprocess");
    assert_eq!(replies(&db_url).await.len(), 1);
    // A second requester is told too, once.
    let dan = replace(&invite, "From: Sender <alice@acme.com>", "From: Dan <dan@acme.com>");
    receive(store.as_ref(), &config, &dan, now).await;
    receive(store.as_ref(), &config, &with_header(&dan, "X-Forwarded: again"), now).await;
    assert_eq!(replies(&db_url).await.len(), 2);
}

#[tokio::test]
async fn loop_rules_each_stop_the_reply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, db_url) = sqlite_store(&dir).await;
    let config = notify_config(1, |_| {});
    let now = common::now();
    let invite = common::fixture("zoom-invite.eml");
    // (what, mail, envelope sender)
    let own_from = replace(&invite, "From: Sender <alice@acme.com>", "From: Assistant <acme@assistant.example.com>");
    let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        ("Auto-Submitted: auto-generated", with_header(&invite, "Auto-Submitted: auto-generated"), None),
        ("Auto-Submitted: auto-replied", with_header(&invite, "Auto-Submitted: Auto-Replied (vacation)"), None),
        ("Precedence: bulk", with_header(&invite, "Precedence: bulk"), None),
        ("Precedence: list", with_header(&invite, "Precedence: list"), None),
        ("Precedence: junk", with_header(&invite, "Precedence: junk"), None),
        ("List-Id", with_header(&invite, "List-Id: Team <team.lists.acme.com>"), None),
        ("List-Unsubscribe", with_header(&invite, "List-Unsubscribe: <mailto:leave@lists.acme.com>"), None),
        ("null envelope sender", with_header(&invite, "X-Case: null-sender"), Some("")),
        ("Return-Path: <>", with_header(&invite, "Return-Path: <>"), None),
        ("From an assistant address", own_from, None),
        ("envelope sender an assistant address", with_header(&invite, "X-Case: own-envelope"), Some(ACME)),
        // initech believes From only on a trusted Authentication-Results header: this one has none.
        ("unauthenticated sender", common::fixture("spoofed-from.eml"), None),
    ];
    for (what, raw, envelope_from) in &cases {
        receive_from(store.as_ref(), &config, raw, *envelope_from, now).await;
        assert_eq!(replies(&db_url).await.len(), 0, "{what}: no reply may be queued");
    }
    // The same mail without any of these gets its reply.
    receive(store.as_ref(), &config, &with_header(&invite, "Auto-Submitted: no"), now).await;
    assert_eq!(replies(&db_url).await.len(), 1, "control: a reply is queued");
}

#[tokio::test]
async fn replies_off_for_a_tenant_or_globally_queue_nothing() {
    let invite = common::fixture("zoom-invite.eml");
    let now = common::now();
    for tweak in
        [(|c: &mut Config| c.tenants[0].replies = false) as fn(&mut Config), |c: &mut Config| c.notify.enabled = false]
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, db_url) = sqlite_store(&dir).await;
        let config = notify_config(1, tweak);
        receive(store.as_ref(), &config, &invite, now).await;
        assert_eq!(store.jobs(false).await.expect("jobs").len(), 1, "the meeting is still scheduled");
        assert_eq!(replies(&db_url).await.len(), 0);
    }
}

#[tokio::test]
async fn at_most_n_replies_per_requester_per_hour() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, db_url) = sqlite_store(&dir).await;
    let config = notify_config(1, |c| c.notify.max_replies_per_hour = 2);
    let now = common::now();
    let invite = common::fixture("zoom-invite.eml");
    for (n, at) in [(1, now), (2, now + TimeDelta::minutes(10)), (3, now + TimeDelta::minutes(50))] {
        let raw = replace(&invite, "UID:review-1@acme.com", &format!("UID:review-rate-{n}@acme.com"));
        receive(store.as_ref(), &config, &raw, at).await;
    }
    assert_eq!(replies(&db_url).await.len(), 2, "the third within the hour is dropped");
    // Another requester is not held back by alice's replies.
    let dan = replace(&invite, "From: Sender <alice@acme.com>", "From: Dan <dan@acme.com>");
    receive(store.as_ref(), &config, &dan, now + TimeDelta::minutes(50)).await;
    assert_eq!(replies(&db_url).await.len(), 3);
    // An hour after the first, alice may get one again.
    let raw = replace(&invite, "UID:review-1@acme.com", "UID:review-rate-4@acme.com");
    receive(store.as_ref(), &config, &raw, now + TimeDelta::minutes(61)).await;
    assert_eq!(replies(&db_url).await.len(), 4);
}

#[tokio::test]
async fn a_relay_that_is_down_delays_the_reply_until_it_is_back() {
    // A port nobody listens on, yet.
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
        probe.local_addr().expect("addr").port()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, db_url) = sqlite_store(&dir).await;
    let config = notify_config(port, |_| {});
    let now = common::now();
    receive(store.as_ref(), &config, &common::fixture("zoom-invite.eml"), now).await;
    let sender = ReplySender::new(&config, store.clone()).expect("sender");

    assert_eq!(sender.send_due(now).await.expect("pass"), 1);
    let state = replies(&db_url).await;
    assert_eq!((state[0].0.as_str(), state[0].2), ("queued", 1), "{state:?}");
    assert!(state[0].3.as_deref().is_some_and(|e| !e.is_empty()), "the relay's error is kept: {state:?}");
    assert_eq!(store.replies_waiting().await.expect("waiting"), 1, "the reply waits in the queue");
    // Backoff: 60 s after the first failure, then 120 s after the second, each counted from
    // when the relay failed (a refused connection: a moment after the pass began).
    assert_eq!(sender.send_due(now + TimeDelta::seconds(59)).await.expect("pass"), 0);
    assert_eq!(sender.send_due(now + TimeDelta::seconds(61)).await.expect("pass"), 1);
    assert_eq!(sender.send_due(now + TimeDelta::seconds(180)).await.expect("pass"), 0);

    let inbox = Inbox::start(port).await;
    assert_eq!(sender.send_due(now + TimeDelta::seconds(182)).await.expect("pass"), 1);
    let received = inbox.received().await;
    assert_eq!(received.len(), 1);
    assert_eq!(parse(&received[0].0).subject, "Will be recorded: Quarterly review");
    assert_eq!(replies(&db_url).await[0].0, "sent");
    assert_eq!(store.replies_waiting().await.expect("waiting"), 0, "nothing waits once it is sent");
    inbox.stop().await;
}

#[tokio::test]
async fn a_relay_refusal_fails_the_reply_for_good() {
    // The inbox knows no `gina@globex.example`: 550 5.1.1 to RCPT TO.
    let inbox = Inbox::start(0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, db_url) = sqlite_store(&dir).await;
    let config = notify_config(inbox.port, |_| {});
    let now = common::now();
    let invite = common::fixture("zoom-invite.eml");
    let gina = replace(&invite, "From: Sender <alice@acme.com>", "From: Gina <gina@globex.example>");
    let unknown = replace(&gina, "To: Assistant <acme@assistant.example.com>", "To: <globex@assistant.example.com>");
    receive_from(store.as_ref(), &config, &unknown, None, now).await;
    let sender = ReplySender::new(&config, store.clone()).expect("sender");
    assert_eq!(sender.send_due(now).await.expect("pass"), 1);
    let state = replies(&db_url).await;
    assert_eq!(state[0].0, "failed", "{state:?}");
    assert!(state[0].3.as_deref().is_some_and(|e| e.contains("550")), "{state:?}");
    assert_eq!(sender.send_due(now + TimeDelta::days(1)).await.expect("pass"), 0);
    assert!(inbox.received().await.is_empty());
    inbox.stop().await;
}

/// Two daemons share one store and send at the same time: every reply arrives exactly once.
#[tokio::test]
async fn two_senders_on_one_store_send_each_reply_once() {
    let inbox = Inbox::start(0).await;
    let invite = common::fixture("zoom-invite.eml");
    let now = common::now();
    for backend in common::backends().await {
        let before = inbox.received().await.len();
        let config = notify_config(inbox.port, |c| c.notify.max_replies_per_hour = 1000);
        let replies = 30;
        for n in 0..replies {
            let raw = replace(&invite, "UID:review-1@acme.com", &format!("UID:review-{}-{n}@acme.com", backend.name));
            receive(backend.store.as_ref(), &config, &raw, now).await;
        }
        let mut a_config = config.clone();
        a_config.server.hostname = "a.test.invalid".into();
        let mut b_config = config.clone();
        b_config.server.hostname = "b.test.invalid".into();
        let a = ReplySender::new(&a_config, backend.store.clone()).expect("sender a");
        let b = ReplySender::new(&b_config, backend.store.clone()).expect("sender b");
        let mut claimed = 0;
        loop {
            let (x, y) = tokio::join!(a.send_due(now), b.send_due(now));
            let n = x.expect("a") + y.expect("b");
            if n == 0 {
                break;
            }
            claimed += n;
        }
        assert_eq!(claimed, replies, "{}: each reply claimed once", backend.name);
        let received = inbox.received().await;
        assert_eq!(received.len() - before, replies, "{}", backend.name);
        let mut ids: Vec<String> =
            received[before..].iter().map(|(raw, _)| parse(raw).header("Message-ID").unwrap_or_default()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), replies, "{}: no reply sent twice", backend.name);
        backend.finish().await;
    }
    inbox.stop().await;
}

/// When reply `id` was recorded as sent, read from the backend's table.
async fn sent_at(backend: &common::Backend, id: i64) -> DateTime<Utc> {
    let sql = "SELECT sent_at FROM replies WHERE id = $1";
    if backend.url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(&backend.url).await.expect("pool");
        let (at,): (String,) = sqlx::query_as(sql).bind(id).fetch_one(&pool).await.expect("sent_at");
        pool.close().await;
        common::at(&at)
    } else {
        let pool = sqlx::PgPool::connect(&backend.url).await.expect("pool");
        let (at,): (DateTime<Utc>,) = sqlx::query_as(sql).bind(id).fetch_one(&pool).await.expect("sent_at");
        pool.close().await;
        at
    }
}

/// A relay on loopback that holds every connection until released, then passes it to `to`.
/// `arrived` counts the connections taken.
async fn stalling_relay(to: u16) -> (u16, tokio::sync::watch::Sender<bool>, tokio::sync::watch::Receiver<usize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("relay binds");
    let port = listener.local_addr().expect("addr").port();
    let (release, released) = tokio::sync::watch::channel(false);
    let (arrived_tx, arrived) = tokio::sync::watch::channel(0usize);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            arrived_tx.send_modify(|n| *n += 1);
            let mut released = released.clone();
            tokio::spawn(async move {
                if released.wait_for(|r| *r).await.is_err() {
                    return;
                }
                let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    (port, release, arrived)
}

/// A relay slow on one reply holds no lease on the replies waiting their turn: another daemon
/// sends those meanwhile, nothing is sent twice, and `sent_at` is when the relay took it.
#[tokio::test]
async fn a_slow_relay_holds_a_lease_on_the_reply_in_flight_only() {
    let inbox = Inbox::start(0).await;
    let invite = common::fixture("zoom-invite.eml");
    let now = common::now();
    for backend in common::backends().await {
        let before = inbox.received().await.len();
        let (slow_port, release, mut arrived) = stalling_relay(inbox.port).await;
        let config = notify_config(inbox.port, |c| c.notify.max_replies_per_hour = 1000);
        for n in 0..3 {
            let raw = replace(&invite, "UID:review-1@acme.com", &format!("UID:slow-{}-{n}@acme.com", backend.name));
            receive(backend.store.as_ref(), &config, &raw, now).await;
        }
        let mut slow_config = config.clone();
        slow_config.server.hostname = "slow.test.invalid".into();
        slow_config.notify.relay_port = slow_port;
        let mut fast_config = config.clone();
        fast_config.server.hostname = "fast.test.invalid".into();
        let slow = ReplySender::new(&slow_config, backend.store.clone()).expect("slow sender");
        let fast = ReplySender::new(&fast_config, backend.store.clone()).expect("fast sender");
        let (slow_sent, fast_sent) = tokio::join!(slow.send_due(now), async {
            // The slow daemon has claimed one reply and its relay holds it.
            tokio::time::timeout(Duration::from_secs(30), arrived.wait_for(|n| *n == 1))
                .await
                .expect("the slow sender reaches its relay")
                .expect("relay runs");
            let sent = fast.send_due(now).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            release.send(true).expect("release");
            sent
        });
        assert_eq!(
            fast_sent.expect("fast"),
            2,
            "{}: the waiting replies are not held by the slow daemon",
            backend.name
        );
        assert_eq!(slow_sent.expect("slow"), 1, "{}: the slow daemon sent the one it claimed", backend.name);
        let received = inbox.received().await;
        let mut ids: Vec<String> =
            received[before..].iter().map(|(raw, _)| parse(raw).header("Message-ID").unwrap_or_default()).collect();
        ids.sort();
        let slow_ids: Vec<_> = ids.iter().filter(|id| id.ends_with("@slow.test.invalid>")).cloned().collect();
        ids.dedup();
        assert_eq!(ids.len(), 3, "{}: every reply arrived once: {ids:?}", backend.name);
        assert_eq!(slow_ids.len(), 1, "{}: {ids:?}", backend.name);
        // `sent_at` of the stalled reply is at least the 2 s the relay held it after `now`.
        let waiting = backend.store.replies_waiting().await.expect("waiting");
        assert_eq!(waiting, 0, "{}", backend.name);
        let id: i64 = slow_ids[0]
            .trim_start_matches("<invited-reply-")
            .split('@')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("reply id in Message-ID");
        let sent_at = sent_at(&backend, id).await;
        assert!(
            sent_at >= now + TimeDelta::seconds(2),
            "{}: sent_at {sent_at} is when the relay took it",
            backend.name
        );
        assert!(sent_at < now + TimeDelta::minutes(5), "{}: sent_at {sent_at} is on the pass's clock", backend.name);
        backend.finish().await;
    }
    inbox.stop().await;
}

/// `serve` runs the sender on the real clock: a queued reply arrives without anyone asking.
#[tokio::test]
async fn the_spawned_worker_delivers_on_its_own() {
    let inbox = Inbox::start(0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = sqlite_store(&dir).await;
    let config = notify_config(inbox.port, |c| c.notify.poll_seconds = 1);
    receive(store.as_ref(), &config, &common::fixture("zoom-invite.eml"), Utc::now()).await;
    let shutdown = CancellationToken::new();
    let worker = sender::spawn(&config, store.clone(), shutdown.clone()).expect("spawn").expect("enabled");
    let mut received = 0;
    for _ in 0..300 {
        received = inbox.received().await.len();
        if received > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(received, 1);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), worker).await.expect("worker stops").expect("no panic");
    inbox.stop().await;
}

#[test]
fn relay_settings_are_checked_at_load() {
    let base = std::fs::read_to_string(common::fixtures().join("config.toml")).expect("config");
    let load = |notify: &str| Config::from_toml(&format!("[notify]\n{notify}\n{base}"));
    assert!(load("enabled = true\nrelay_host = \"127.0.0.1\"\nrelay_port = 2526\nrelay_tls = \"none\"").is_ok());
    let err = |notify: &str| load(notify).expect_err("refused").to_string();
    assert!(err("enabled = true\nrelay_host = \"smtp.acme.com\"\nrelay_tls = \"none\"").contains("`notify.relay_tls`"));
    assert!(err("enabled = true").contains("`notify.relay_host`"));
    assert!(err("enabled = true\nrelay_host = \"smtp.acme.com\"\nusername = \"bot\"").contains("`notify.username`"));
    assert!(err("enabled = true\nrelay_host = \"smtp.acme.com\"\nusername = \"bot\"\npassword_env = \"INVITED_TEST_UNSET_PASSWORD\"")
        .contains("INVITED_TEST_UNSET_PASSWORD"));
    assert!(err("enabled = true\nrelay_host = \"smtp.acme.com\"\nmax_replies_per_hour = 0")
        .contains("`notify.max_replies_per_hour`"));
    assert!(err("relay_tsl = \"none\"").contains("relay_tsl"));
}
