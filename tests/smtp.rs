//! The SMTP intake, spoken to for real: a server on 127.0.0.1:0 with a SQLite file in a
//! temp folder; lettre, raw pipelined commands, swaks, and a session over `duplex`.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use invited::config::Config;
use invited::intake::smtp::{run_session, Intake, SmtpServer};
use invited::store::{self, Store};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const ACME: &str = "acme@assistant.example.com";

struct Server {
    addr: SocketAddr,
    store: Arc<dyn Store>,
    db_url: String,
    shutdown: CancellationToken,
    handle: JoinHandle<()>,
    /// Holds the database folder for the test's lifetime.
    _dir: tempfile::TempDir,
}

fn test_config(tweak: impl FnOnce(&mut Config)) -> Config {
    let mut config = common::config();
    config.server.smtp_listen = "127.0.0.1:0".into();
    config.server.hostname = "mx.test.invalid".into();
    // The fixtures' meetings are in January 2027; the workers process with the real clock.
    config.scheduling.horizon_days = 3650;
    tweak(&mut config);
    config
}

async fn start(tweak: impl FnOnce(&mut Config)) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    start_in(dir, tweak).await
}

async fn start_in(dir: tempfile::TempDir, tweak: impl FnOnce(&mut Config)) -> Server {
    let db_url = format!("sqlite://{}/invited.db", dir.path().display());
    let store = store::open(&db_url).await.expect("store opens");
    let config = Arc::new(test_config(tweak));
    let shutdown = CancellationToken::new();
    let server = SmtpServer::bind(config, store.clone(), shutdown.clone()).await.expect("binds");
    let addr = server.local_addr().expect("addr");
    let handle = tokio::spawn(server.run());
    Server { addr, store, db_url, shutdown, handle, _dir: dir }
}

impl Server {
    /// Counted from a separate connection: what is committed, not what one connection sees.
    async fn messages(&self) -> i64 {
        let pool = sqlx::SqlitePool::connect(&self.db_url).await.expect("count pool");
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages").fetch_one(&pool).await.expect("count");
        pool.close().await;
        n
    }

    async fn raw_message(&self, id: i64) -> String {
        let m = self.store.load_message(id).await.expect("load").expect("message exists");
        String::from_utf8(m.raw).expect("utf-8")
    }

    async fn wait_for_jobs(&self) -> usize {
        for _ in 0..400 {
            let jobs = self.store.jobs(false).await.expect("jobs");
            if !jobs.is_empty() {
                return jobs.len();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        0
    }

    async fn client(&self) -> Client<TcpStream> {
        let mut c = Client::new(TcpStream::connect(self.addr).await.expect("connect"));
        assert_eq!(c.code().await, 220);
        c
    }
}

/// A raw SMTP client: writes bytes, reads (multi-line) replies.
struct Client<S> {
    s: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    fn new(s: S) -> Self {
        Client { s: BufReader::new(s) }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.get_mut().write_all(bytes).await.expect("write");
        self.s.get_mut().flush().await.expect("flush");
    }

    /// One reply, all its lines; "" when the server closed the connection.
    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(15), self.s.read_line(&mut line))
                .await
                .expect("reply within 15 s")
                .unwrap_or(0);
            if n == 0 {
                return all;
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] == b' ' {
                return all;
            }
        }
    }

    async fn code(&mut self) -> u16 {
        let r = self.reply().await;
        r.get(..3).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no reply code in {r:?}"))
    }

    async fn expect(&mut self, prefix: &str) {
        let r = self.reply().await;
        assert!(r.starts_with(prefix), "expected {prefix:?}, got {r:?}");
    }

    async fn command(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// The connection is closed by the server (EOF, or a reset).
    async fn closed(&mut self) -> bool {
        let mut buf = [0u8; 64];
        matches!(tokio::time::timeout(Duration::from_secs(15), self.s.read(&mut buf)).await, Ok(Ok(0)) | Ok(Err(_)))
    }

    async fn ehlo(&mut self) -> String {
        let r = self.command("EHLO client.example.org").await;
        assert!(r.starts_with("250"), "{r}");
        r
    }
}

fn invite() -> Vec<u8> {
    common::fixture("zoom-invite.eml")
}

fn message(subject: &str) -> Vec<u8> {
    format!("From: alice@acme.com\r\nTo: {ACME}\r\nSubject: {subject}\r\n\r\nHello.\r\n").into_bytes()
}

/// MAIL, RCPT, DATA and the message, then the final reply.
async fn send_message<S: AsyncRead + AsyncWrite + Unpin>(c: &mut Client<S>, body: &[u8]) -> String {
    c.expect("250").await;
    c.send(format!("MAIL FROM:<alice@acme.com>\r\nRCPT TO:<{ACME}>\r\nDATA\r\n").as_bytes()).await;
    c.expect("250").await;
    c.expect("250").await;
    c.expect("354").await;
    c.send(body).await;
    c.send(b".\r\n").await;
    c.reply().await
}

fn lettre_envelope() -> lettre::address::Envelope {
    lettre::address::Envelope::new(Some("alice@acme.com".parse().expect("from")), vec![ACME.parse().expect("to")])
        .expect("envelope")
}

// --- lettre --------------------------------------------------------------------------------

#[tokio::test]
async fn lettre_delivers_and_the_message_is_stored_before_250_and_processed_to_a_job() {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
    let server = start(|_| {}).await;
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1").port(server.addr.port()).build();
    let response = mailer.send_raw(&lettre_envelope(), &invite()).await.expect("lettre sends");
    assert_eq!(response.code().to_string(), "250");
    // 250 only after commit: the message is there the moment the reply is.
    assert_eq!(server.messages().await, 1);
    let raw = server.raw_message(1).await;
    assert!(raw.starts_with("Received: from "), "{raw}");
    assert!(raw.contains("by mx.test.invalid with ESMTP id "), "{raw}");
    assert!(raw.contains(&format!("for <{ACME}>;")), "{raw}");
    // lettre, like swaks, ends the data with one more CRLF before the dot.
    assert!(raw.contains(std::str::from_utf8(&invite()).expect("utf-8")));
    let stored = server.store.load_message(1).await.expect("load").expect("message");
    assert_eq!(stored.envelope_rcpts, vec![ACME.to_string()]);
    assert_eq!(server.wait_for_jobs().await, 1, "processed in the background to a job");
}

struct TestCert {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

fn test_cert() -> TestCert {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    TestCert { cert_pem: ck.cert.pem(), key_pem: ck.signing_key.serialize_pem(), der: ck.cert.der().to_vec() }
}

async fn start_tls() -> (Server, TestCert) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = test_cert();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, &cert.cert_pem).expect("cert");
    std::fs::write(&key_path, &cert.key_pem).expect("key");
    let server = start_in(dir, |c| {
        c.server.tls_cert = Some(cert_path);
        c.server.tls_key = Some(key_path);
    })
    .await;
    (server, cert)
}

#[tokio::test]
async fn lettre_delivers_over_starttls() {
    use lettre::transport::smtp::client::{Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
    let (server, _cert) = start_tls().await;
    let tls = TlsParameters::builder("localhost".into())
        .dangerous_accept_invalid_certs(true)
        .build_rustls()
        .expect("tls parameters");
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(server.addr.port())
        .tls(Tls::Required(tls))
        .build();
    mailer.send_raw(&lettre_envelope(), &invite()).await.expect("lettre sends over STARTTLS");
    assert_eq!(server.messages().await, 1);
    assert!(server.raw_message(1).await.contains("with ESMTPS id "));
}

async fn tls_connect(stream: TcpStream, cert: &TestCert) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(cert.der.clone())).expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, stream).await.expect("handshake")
}

#[tokio::test]
async fn starttls_discards_pipelined_bytes_forgets_the_session_and_is_refused_twice() {
    let (server, cert) = start_tls().await;
    let mut c = server.client().await;
    let ehlo = c.ehlo().await;
    assert!(ehlo.contains("250-STARTTLS") || ehlo.contains("250 STARTTLS"), "{ehlo}");
    // Commands pipelined after STARTTLS, in the clear: they must never be executed.
    c.send(format!("STARTTLS\r\nMAIL FROM:<mallory@evil.example>\r\nRCPT TO:<{ACME}>\r\n").as_bytes()).await;
    c.expect("220 2.0.0").await;
    assert!(c.s.buffer().is_empty(), "nothing after 220: {:?}", String::from_utf8_lossy(c.s.buffer()));
    let tcp = c.s.into_inner();
    let mut t = Client::new(tls_connect(tcp, &cert).await);
    // The first reply over TLS answers our command: the injected MAIL and RCPT were dropped,
    // and the EHLO given in the clear is forgotten (RFC 3207 §4.2).
    assert!(t.command("MAIL FROM:<alice@acme.com>").await.starts_with("503 5.5.1"));
    let r = t.command("EHLO client.example.org").await;
    assert!(r.starts_with("250") && !r.contains("STARTTLS"), "{r}");
    assert!(t.command("STARTTLS").await.starts_with("503 5.5.1"));
    t.send(b"RSET\r\n").await;
    assert!(send_message(&mut t, &message("tls")).await.starts_with("250"));
    assert_eq!(server.messages().await, 1);
}

// --- raw pipelining, recipients, DATA ------------------------------------------------------

#[tokio::test]
async fn pipelined_batch_gets_replies_in_order_and_several_recipients_one_message() {
    let server = start(|_| {}).await;
    let mut c = server.client().await;
    let ehlo = c.ehlo().await;
    for ext in ["PIPELINING", "SIZE ", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"] {
        assert!(ehlo.contains(ext), "{ext} in {ehlo}");
    }
    assert!(!ehlo.contains("STARTTLS"), "no STARTTLS without a certificate");
    c.send(
        format!(
            "MAIL FROM:<alice@acme.com> SIZE=500 BODY=8BITMIME\r\nRCPT TO:<{ACME}>\r\nRCPT TO:<nobody@assistant.example.com>\r\n\
             RCPT TO:<acme+team@assistant.example.com>\r\nDATA\r\n"
        )
        .as_bytes(),
    )
    .await;
    c.expect("250 2.1.0").await;
    c.expect("250 2.1.5").await;
    c.expect("550 5.1.1").await;
    c.expect("250 2.1.5").await;
    c.expect("354").await;
    c.send(b"Subject: pipelined\r\n\r\n..starts with a dot\r\n.\r\nNOOP\r\nQUIT\r\n").await;
    c.expect("250 2.0.0").await;
    c.expect("250 2.0.0").await;
    c.expect("221").await;
    assert_eq!(server.messages().await, 1);
    let m = server.store.load_message(1).await.expect("load").expect("message");
    assert_eq!(m.envelope_rcpts, vec![ACME.to_string(), "acme+team@assistant.example.com".to_string()]);
    let raw = String::from_utf8(m.raw).expect("utf-8");
    assert!(raw.ends_with("\r\n\r\n.starts with a dot\r\n"), "dot-unstuffed: {raw:?}");
    assert!(!raw.contains("\tfor <"), "no `for` with two recipients: {raw}");
}

#[tokio::test]
async fn unknown_recipient_is_550_and_data_without_recipients_554() {
    let server = start(|_| {}).await;
    let mut c = server.client().await;
    c.ehlo().await;
    c.command("MAIL FROM:<alice@acme.com>").await;
    assert!(c.command("RCPT TO:<someone@elsewhere.example>").await.starts_with("550 5.1.1"));
    assert!(c.command("DATA").await.starts_with("554 5.5.1"));
    assert_eq!(server.messages().await, 0);
}

#[tokio::test]
async fn commands_out_of_sequence_are_503() {
    let server = start(|_| {}).await;
    let mut c = server.client().await;
    assert!(c.command("MAIL FROM:<a@b.example>").await.starts_with("503 5.5.1"), "MAIL before EHLO");
    c.ehlo().await;
    assert!(c.command(&format!("RCPT TO:<{ACME}>")).await.starts_with("503 5.5.1"));
    assert!(c.command("DATA").await.starts_with("503 5.5.1"));
    assert!(c.command("MAIL FROM:<a@b.example>").await.starts_with("250"));
    assert!(c.command("MAIL FROM:<a@b.example>").await.starts_with("503 5.5.1"), "nested MAIL");
    assert!(c.command("RSET").await.starts_with("250"));
    assert!(c.command("MAIL FROM:<>").await.starts_with("250"), "null sender");
    assert!(c.command("VRFY acme").await.starts_with("502 5.5.1"));
    assert!(c.command("STARTTLS").await.starts_with("502 5.5.1"), "no certificate configured");
    assert!(c.command("BOGUS").await.starts_with("500 5.5.1"));
    assert!(c.command("NOOP").await.starts_with("250"));
}

#[tokio::test]
async fn the_same_bytes_twice_get_250_twice_and_are_stored_once() {
    let server = start(|_| {}).await;
    let mut c = server.client().await;
    c.send(b"EHLO a\r\n").await;
    assert!(send_message(&mut c, &message("same")).await.starts_with("250"));
    c.send(b"RSET\r\n").await;
    assert!(send_message(&mut c, &message("same")).await.starts_with("250"));
    assert_eq!(server.messages().await, 1);
}

// --- smuggling -----------------------------------------------------------------------------

#[tokio::test]
async fn smuggling_variants_are_refused_and_the_smuggled_message_is_never_stored() {
    let server = start(|_| {}).await;
    let variants: [&[u8]; 7] = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r", b"\r.\r", b"\n"];
    for (i, smuggle) in variants.iter().enumerate() {
        let mut c = server.client().await;
        c.ehlo().await;
        c.send(format!("MAIL FROM:<alice@acme.com>\r\nRCPT TO:<{ACME}>\r\nDATA\r\n").as_bytes()).await;
        c.expect("250").await;
        c.expect("250").await;
        c.expect("354").await;
        let mut data = format!("Subject: carrier {i}\r\n\r\nhello").into_bytes();
        data.extend_from_slice(smuggle);
        data.extend_from_slice(
            format!(
                "MAIL FROM:<ceo@acme.com>\r\nRCPT TO:<{ACME}>\r\nDATA\r\nFrom: ceo@acme.com\r\nSubject: smuggled {i}\r\n\r\nevil\r\n.\r\n"
            )
            .as_bytes(),
        );
        c.send(&data).await;
        let r = c.reply().await;
        assert!(r.starts_with("550 5.6.0"), "variant {i} {smuggle:?}: {r:?}");
        // Exactly one reply for the whole thing: the session is still in step.
        assert!(c.command("NOOP").await.starts_with("250 2.0.0"), "variant {i}");
    }
    assert_eq!(server.messages().await, 0, "neither carrier nor smuggled message stored");
}

// --- limits --------------------------------------------------------------------------------

#[tokio::test]
async fn message_size_limit_on_mail_size_and_on_data() {
    let server = start(|c| c.smtp.max_message_bytes = 2048).await;
    let mut c = server.client().await;
    let ehlo = c.ehlo().await;
    assert!(ehlo.contains("SIZE 2048"), "{ehlo}");
    assert!(c.command("MAIL FROM:<alice@acme.com> SIZE=5000").await.starts_with("552 5.3.4"));
    c.send(b"RSET\r\n").await;
    let big = [b"Subject: big\r\n\r\n".to_vec(), b"0123456789abcdef\r\n".repeat(200)].concat();
    assert!(send_message(&mut c, &big).await.starts_with("552 5.3.4"));
    c.send(b"RSET\r\n").await;
    assert!(send_message(&mut c, &message("small")).await.starts_with("250"));
    assert_eq!(server.messages().await, 1);
}

#[tokio::test]
async fn line_length_limits_for_commands_and_for_data() {
    let server = start(|_| {}).await;
    let mut c = server.client().await;
    c.ehlo().await;
    let long = format!("NOOP {}\r\n", "x".repeat(1200));
    c.send(long.as_bytes()).await;
    c.expect("500 5.5.2").await;
    assert!(c.command("NOOP").await.starts_with("250"), "the session goes on");
    c.send(b"RSET\r\n").await;
    let body = [b"Subject: long\r\n\r\n".to_vec(), b"y".repeat(1500), b"\r\n".to_vec()].concat();
    assert!(send_message(&mut c, &body).await.starts_with("552 5.3.4"));
    assert_eq!(server.messages().await, 0);
}

#[tokio::test]
async fn recipients_per_message_limit() {
    let server = start(|c| c.smtp.max_recipients = 2).await;
    let mut c = server.client().await;
    c.ehlo().await;
    c.command("MAIL FROM:<alice@acme.com>").await;
    assert!(c.command("RCPT TO:<acme+1@assistant.example.com>").await.starts_with("250"));
    assert!(c.command("RCPT TO:<acme+2@assistant.example.com>").await.starts_with("250"));
    assert!(c.command("RCPT TO:<acme+3@assistant.example.com>").await.starts_with("452 4.5.3"));
}

#[tokio::test]
async fn commands_per_session_limit() {
    let server = start(|c| c.smtp.max_commands_per_session = 10).await;
    let mut c = server.client().await;
    for _ in 0..10 {
        assert!(c.command("NOOP").await.starts_with("250"));
    }
    assert!(c.command("NOOP").await.starts_with("421 4.7.0"));
    assert!(c.closed().await);
}

#[tokio::test]
async fn bad_commands_before_disconnect() {
    let server = start(|c| c.smtp.max_bad_commands = 3).await;
    let mut c = server.client().await;
    c.send(b"FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n").await;
    c.expect("500").await;
    c.expect("500").await;
    c.expect("500").await;
    c.expect("421 4.7.0").await;
    assert!(c.closed().await);
}

#[tokio::test]
async fn idle_timeout() {
    let server = start(|c| c.smtp.idle_timeout_seconds = 1).await;
    let mut c = server.client().await;
    c.expect("421 4.4.2").await;
    assert!(c.closed().await);
}

#[tokio::test]
async fn total_session_time() {
    let server = start(|c| c.smtp.max_session_seconds = 1).await;
    let mut c = server.client().await;
    let started = std::time::Instant::now();
    loop {
        let r = c.command("NOOP").await;
        if r.starts_with("421 4.4.2") {
            break;
        }
        assert!(r.starts_with("250"), "{r}");
        assert!(started.elapsed() < Duration::from_secs(5), "session not ended");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(c.closed().await);
}

#[tokio::test]
async fn concurrent_sessions_global_limit() {
    let server = start(|c| c.smtp.max_sessions = 2).await;
    let _a = server.client().await;
    let _b = server.client().await;
    let mut c = Client::new(TcpStream::connect(server.addr).await.expect("connect"));
    c.expect("421 4.7.0").await;
    drop(_a);
    // The slot comes back once the first session has ended.
    for _ in 0..100 {
        let mut d = Client::new(TcpStream::connect(server.addr).await.expect("connect"));
        if d.code().await == 220 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the freed session slot was never given back");
}

#[tokio::test]
async fn concurrent_sessions_per_ip_limit() {
    let server = start(|c| c.smtp.max_sessions_per_ip = 1).await;
    let _a = server.client().await;
    let mut b = Client::new(TcpStream::connect(server.addr).await.expect("connect"));
    let r = b.reply().await;
    assert!(r.starts_with("421 4.7.0") && r.contains("your address"), "{r}");
}

/// A log layer that panics, once, inside the session that logs an `unknown_command`
/// refusal: a panic in the middle of a session's own code, as a bug would cause one.
struct PanicOnUnknownCommand(Arc<std::sync::atomic::AtomicBool>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PanicOnUnknownCommand {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Reason(bool);
        impl tracing::field::Visit for Reason {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                self.0 |= field.name() == "reason" && value == "unknown_command";
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        let mut reason = Reason(false);
        event.record(&mut reason);
        if reason.0 && !self.0.swap(true, std::sync::atomic::Ordering::SeqCst) {
            panic!("injected panic in an SMTP session");
        }
    }
}

#[tokio::test]
async fn a_panic_in_one_session_ends_only_that_session() {
    use tracing_subscriber::layer::SubscriberExt;
    let panicked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The test runtime has one thread, which runs every session: the layer sees them all.
    let _logs =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(PanicOnUnknownCommand(panicked.clone())));
    // Two session slots: one for the session that stays open, one that the panicking
    // session must give back.
    let server = start(|c| {
        c.smtp.max_sessions = 2;
        c.smtp.max_sessions_per_ip = 2;
    })
    .await;
    let mut a = server.client().await;
    a.ehlo().await;
    a.send(format!("MAIL FROM:<alice@acme.com>\r\nRCPT TO:<{ACME}>\r\n").as_bytes()).await;
    a.expect("250").await;
    a.expect("250").await;

    let mut b = server.client().await;
    b.ehlo().await;
    b.send(b"PANIC NOW\r\n").await;
    assert!(b.closed().await, "the panicking session's connection is closed");
    assert!(panicked.load(std::sync::atomic::Ordering::SeqCst), "the session did panic");

    // A new connection gets the freed slot and delivers.
    let mut delivered = false;
    for _ in 0..100 {
        let mut c = Client::new(TcpStream::connect(server.addr).await.expect("connect"));
        if c.code().await == 220 {
            c.send(b"EHLO client.example.org\r\n").await;
            assert!(send_message(&mut c, &message("after the panic")).await.starts_with("250"));
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(delivered, "no new session after the panic");
    // The session that was open all along finishes its transaction.
    assert_eq!(a.command("DATA").await.get(..3), Some("354"));
    a.send(&message("open across the panic")).await;
    a.send(b".\r\n").await;
    a.expect("250").await;
    assert_eq!(a.command("QUIT").await.get(..3), Some("221"));
    assert!(!server.handle.is_finished(), "the server still runs");
    assert_eq!(server.messages().await, 2);
}

// --- the store -----------------------------------------------------------------------------

#[tokio::test]
async fn store_failure_is_451_and_nothing_is_written() {
    let server = start(|_| {}).await;
    let pool = sqlx::SqlitePool::connect(&server.db_url).await.expect("pool");
    // The store loses its table: a permanent error, still a 4xx for the client.
    sqlx::query("ALTER TABLE messages RENAME TO messages_away").execute(&pool).await.expect("rename");
    let mut c = server.client().await;
    c.send(b"EHLO a\r\n").await;
    let r = send_message(&mut c, &message("fails")).await;
    assert!(r.starts_with("451 4.3.0"), "{r}");
    sqlx::query("ALTER TABLE messages_away RENAME TO messages").execute(&pool).await.expect("rename back");
    assert_eq!(server.messages().await, 0);
    // The client retries, and this time it is stored.
    c.send(b"RSET\r\n").await;
    assert!(send_message(&mut c, &message("fails")).await.starts_with("250"));
    assert_eq!(server.messages().await, 1);
}

#[tokio::test]
async fn busy_store_is_451_transient() {
    let server = start(|_| {}).await;
    let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect(&server.db_url).await.expect("pool");
    let mut lock = pool.acquire().await.expect("connection");
    sqlx::query("BEGIN EXCLUSIVE").execute(&mut *lock).await.expect("lock");
    let mut c = server.client().await;
    c.send(b"EHLO a\r\n").await;
    let r = send_message(&mut c, &message("busy")).await;
    assert!(r.starts_with("451 4.3.0"), "{r}");
    sqlx::query("ROLLBACK").execute(&mut *lock).await.expect("unlock");
    drop(lock);
    assert_eq!(server.messages().await, 0);
}

// --- shutdown ------------------------------------------------------------------------------

#[tokio::test]
async fn shutdown_ends_idle_sessions_lets_data_finish_and_stops_accepting() {
    let server = start(|_| {}).await;
    let mut idle = server.client().await;
    idle.ehlo().await;
    let mut busy = server.client().await;
    busy.ehlo().await;
    busy.send(format!("MAIL FROM:<alice@acme.com>\r\nRCPT TO:<{ACME}>\r\nDATA\r\n").as_bytes()).await;
    busy.expect("250").await;
    busy.expect("250").await;
    busy.expect("354").await;
    busy.send(b"Subject: in flight\r\n\r\nfirst half\r\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.shutdown.cancel();
    idle.expect("421 4.3.0").await;
    assert!(idle.closed().await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    busy.send(b"second half\r\n.\r\nNOOP\r\n").await;
    busy.expect("250 2.0.0").await;
    busy.expect("421 4.3.0").await;
    assert_eq!(server.messages().await, 1);
    tokio::time::timeout(Duration::from_secs(10), server.handle).await.expect("server stops").expect("no panic");
    assert!(TcpStream::connect(server.addr).await.is_err(), "no longer accepting");
}

#[tokio::test]
async fn shutdown_cuts_a_data_that_outlasts_the_grace_period() {
    let server = start(|c| c.smtp.shutdown_grace_seconds = 1).await;
    let mut c = server.client().await;
    c.ehlo().await;
    c.send(format!("MAIL FROM:<alice@acme.com>\r\nRCPT TO:<{ACME}>\r\nDATA\r\n").as_bytes()).await;
    c.expect("250").await;
    c.expect("250").await;
    c.expect("354").await;
    c.send(b"Subject: slow\r\n\r\n").await;
    server.shutdown.cancel();
    c.expect("421 4.3.0").await;
    assert_eq!(server.messages().await, 0);
    tokio::time::timeout(Duration::from_secs(10), server.handle).await.expect("server stops").expect("no panic");
}

// --- the state machine over an in-memory stream --------------------------------------------

#[tokio::test]
async fn session_over_duplex() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store::open(&format!("sqlite://{}/invited.db", dir.path().display())).await.expect("store");
    let (intake, _queue) = Intake::new(Arc::new(test_config(|_| {})), store.clone(), None, CancellationToken::new());
    let (client, server_side) = tokio::io::duplex(64 * 1024);
    let session = tokio::spawn(run_session(intake, Box::new(server_side), "192.0.2.7:40000".parse().expect("peer")));
    let mut c = Client::new(client);
    c.expect("220 mx.test.invalid").await;
    c.send(b"HELO old.example\r\n").await;
    assert!(send_message(&mut c, &message("duplex")).await.starts_with("250 2.0.0"));
    assert!(c.command("QUIT").await.starts_with("221"));
    session.await.expect("session ends");
    let raw = String::from_utf8(store.load_message(1).await.expect("load").expect("stored").raw).expect("utf-8");
    assert!(raw.starts_with("Received: from old.example ([192.0.2.7])\r\n\tby mx.test.invalid with SMTP id "), "{raw}");
}

// --- swaks, an outside client --------------------------------------------------------------

fn swaks_available() -> bool {
    std::process::Command::new("swaks").arg("--version").output().is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn swaks_delivers_an_invite_that_becomes_a_job() {
    if !swaks_available() {
        return common::skip_or_fail("swaks is not installed (apt-get install swaks)");
    }
    let (server, _cert) = start_tls().await;
    let fixture = common::fixtures().join("zoom-invite.eml");
    for tls in [false, true] {
        let mut cmd = tokio::process::Command::new("swaks");
        cmd.args(["--server", &server.addr.to_string(), "--from", "alice@acme.com", "--to", ACME])
            .args(["--helo", "client.example.org", "--timeout", "20"])
            .arg("--data")
            .arg(format!("@{}", fixture.display()));
        if tls {
            cmd.arg("--tls");
        }
        let out = cmd.output().await.expect("swaks runs");
        let transcript = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "swaks (tls={tls}) failed:\n{transcript}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            transcript.contains("<-  250 2.0.0 Queued as") || transcript.contains("<~  250 2.0.0 Queued as"),
            "{transcript}"
        );
    }
    // swaks adds a CRLF before the final dot in both runs: the same bytes, stored once.
    assert_eq!(server.messages().await, 1);
    assert_eq!(server.wait_for_jobs().await, 1);
}

// --- configuration -------------------------------------------------------------------------

#[test]
fn smtp_config_has_defaults_and_checks_ranges_and_keys() {
    let tenant = "[[tenants]]\nid = \"acme\"\nassistant_addresses = [\"acme@assistant.example.com\"]\n";
    let config = Config::from_toml(tenant).expect("defaults load");
    assert_eq!(config.smtp.max_command_line_bytes, 1000);
    assert_eq!(config.smtp.max_recipients, 100);
    assert_eq!(config.smtp.shutdown_grace_seconds, 30);
    assert!(config.server.tls_cert.is_none());
    let err = Config::from_toml(&format!("[smtp]\nmax_recipients = 0\n{tenant}")).expect_err("0 refused").to_string();
    assert!(err.contains("smtp.max_recipients"), "{err}");
    let err = Config::from_toml(&format!("[smtp]\nmax_recipient = 5\n{tenant}")).expect_err("typo refused").to_string();
    assert!(err.contains("max_recipient"), "{err}");
    let err = Config::from_toml(&format!("[server]\ntls_cert = \"c.pem\"\n{tenant}")).expect_err("no key").to_string();
    assert!(err.contains("tls_key"), "{err}");
}

#[tokio::test]
async fn a_missing_certificate_is_a_clear_error_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store::open(&format!("sqlite://{}/invited.db", dir.path().display())).await.expect("store");
    let config = test_config(|c| {
        c.server.tls_cert = Some(dir.path().join("missing-cert.pem"));
        c.server.tls_key = Some(dir.path().join("missing-key.pem"));
    });
    let err = SmtpServer::bind(Arc::new(config), store, CancellationToken::new()).await.err().expect("refused");
    assert!(err.to_string().contains("missing-cert.pem"), "{err}");
}
