//! `sender_auth = "dmarc"`: our own DKIM, SPF and DMARC checks (mail-auth), offline. The
//! DNS answers are seeded into the verifier's cache; mail is signed here with mail-auth's
//! DKIM signer and a key generated for the test, and arrives over real SMTP (lettre) or
//! through `ingest`.

mod common;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use invited::config::Config;
use invited::dmarc::Verifier;
use invited::intake::smtp::SmtpServer;
use invited::pipeline::{self, IngestError};
use invited::store::{self, Source, Store};
use mail_auth::common::crypto::Ed25519Key;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::dkim::DkimSigner;
use mail_auth::dmarc::Dmarc;
use mail_auth::spf::Spf;
use tokio_util::sync::CancellationToken;

const ACME: &str = "acme@assistant.example.com";

const CONFIG: &str = r#"
[server]
smtp_listen = "127.0.0.1:0"
hostname = "mx.test.invalid"

[scheduling]
horizon_days = 3650

[[tenants]]
id = "acme"
assistant_addresses = ["acme@assistant.example.com"]
sender_auth = "dmarc"
[[tenants.users]]
email = "alice@acme.com"
seat = true
manual_schedule_upload = true
[[tenants.users]]
email = "carol@flaky.example"
seat = true
manual_schedule_upload = true
[tenants.providers.zoom]
enabled = true
"#;

/// Signing keys for acme.com (selector `s1`) and evil.example (`e1`), and the verifier of
/// this test binary, installed once, with every DNS answer the tests need:
/// - acme.com: DKIM key, SPF `ip4:127.0.0.1 -all` (the SMTP client of these tests),
///   DMARC `p=reject`;
/// - evil.example: its own DKIM key and SPF (also 127.0.0.1), no DMARC record;
/// - flaky.example: its DMARC lookup fails (SERVFAIL);
/// - HELO `mail.acme.com` has no SPF record; `_dmarc.com` and `_dmarc.example` do not exist.
struct Keys {
    acme: Vec<u8>,
    evil: Vec<u8>,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let acme = Ed25519Key::generate_pkcs8().expect("acme key");
        let evil = Ed25519Key::generate_pkcs8().expect("evil key");
        let verifier = Verifier::offline("mx.test.invalid").expect("offline verifier");
        for (name, pkcs8) in [("s1._domainkey.acme.com", &acme), ("e1._domainkey.evil.example", &evil)] {
            let public = Ed25519Key::from_pkcs8_der(pkcs8).expect("key").public_key();
            let p = base64::engine::general_purpose::STANDARD.encode(public);
            let record = format!("v=DKIM1; k=ed25519; p={p}");
            verifier.seed_txt(name, DomainKey::parse(record.as_bytes()).expect("DKIM record"));
        }
        verifier.seed_txt("acme.com", Spf::parse(b"v=spf1 ip4:127.0.0.1 -all").expect("SPF"));
        verifier.seed_txt("evil.example", Spf::parse(b"v=spf1 ip4:127.0.0.1 -all").expect("SPF"));
        verifier.seed_txt("_dmarc.acme.com", Dmarc::parse(b"v=DMARC1; p=reject").expect("DMARC"));
        for name in ["mail.acme.com", "news.example", "_dmarc.com", "_dmarc.evil.example", "_dmarc.example"] {
            verifier.seed_nxdomain(name);
        }
        verifier.seed_temp_error("_dmarc.flaky.example");
        assert!(invited::dmarc::install(verifier), "the only verifier of this test binary");
        Keys { acme, evil }
    })
}

/// A Zoom invite from `from`, organised by `organizer`, with its own UID and link.
fn invite(uid: &str, from: &str, organizer: &str) -> String {
    let start = Utc::now() + chrono::Duration::days(7);
    let t = |d: DateTime<Utc>| d.format("%Y%m%dT%H%M%SZ").to_string();
    let link: u64 = uid.bytes().map(u64::from).sum();
    format!(
        "From: {from}\r\nTo: {ACME}\r\nSubject: Meeting {uid}\r\nMessage-ID: <{uid}>\r\n\
         Content-Type: text/calendar; charset=utf-8; method=REQUEST\r\n\r\n\
         BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:{}\r\n\
         DTSTART:{}\r\nDTEND:{}\r\nSUMMARY:Meeting\r\nORGANIZER:mailto:{organizer}\r\n\
         LOCATION:https://zoom.us/j/7{link:09}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
        t(Utc::now()),
        t(start),
        t(start + chrono::Duration::hours(1)),
    )
}

/// `message` with a DKIM-Signature by `domain` (selector `selector`) on top.
fn signed(message: &str, domain: &str, selector: &str, pkcs8: &[u8]) -> String {
    let key = Ed25519Key::from_pkcs8_der(pkcs8).expect("key");
    let signature = DkimSigner::from_key(key)
        .domain(domain)
        .selector(selector)
        .headers(["From", "To", "Subject", "Message-ID"])
        .sign(message.as_bytes())
        .expect("signs");
    format!("{}{message}", signature.to_header())
}

struct Daemon {
    store: Arc<dyn Store>,
    config: Arc<Config>,
    port: u16,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn start() -> Daemon {
    keys();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store::open(&format!("sqlite://{}/invited.db", dir.path().display())).await.expect("store");
    let config = Arc::new(Config::from_toml(CONFIG).expect("config"));
    let shutdown = CancellationToken::new();
    let server = SmtpServer::bind(config.clone(), store.clone(), shutdown.clone()).await.expect("binds");
    let port = server.local_addr().expect("addr").port();
    tokio::spawn(server.run());
    Daemon { store, config, port, shutdown, _dir: dir }
}

impl Daemon {
    /// Sends over SMTP from 127.0.0.1 with HELO `mail.acme.com` and MAIL FROM `mail_from`.
    async fn send(&self, mail_from: &str, raw: &str) {
        use lettre::transport::smtp::extension::ClientId;
        use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
        let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(self.port)
            .hello_name(ClientId::Domain("mail.acme.com".into()))
            .build();
        let envelope =
            lettre::address::Envelope::new(Some(mail_from.parse().expect("from")), vec![ACME.parse().expect("to")])
                .expect("envelope");
        let reply = mailer.send_raw(&envelope, raw.as_bytes()).await.expect("250");
        assert_eq!(reply.code().to_string(), "250");
    }

    /// (requester, authenticated, eligible) of the decision on `uid`, once it is taken.
    async fn decision(&self, uid: &str) -> (String, bool, bool) {
        for _ in 0..300 {
            let history = self.store.history(uid).await.expect("history");
            if let Some(d) = history.first().and_then(|h| h.decisions.first()) {
                let r = d.requester.as_ref().expect("a requester");
                return (r.email.clone(), r.authenticated, d.decision["eligible"] == true);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no decision on {uid}");
    }

    async fn jobs_of(&self, uid: &str) -> usize {
        self.store.jobs(false).await.expect("jobs").iter().filter(|j| j.event_uid == uid).count()
    }
}

#[tokio::test]
async fn genuine_dkim_signed_mail_over_smtp_is_authenticated_and_scheduled() {
    let d = start().await;
    let mail = signed(&invite("dkim-ok@acme.com", "alice@acme.com", "alice@acme.com"), "acme.com", "s1", &keys().acme);
    // A bounce address at a domain with no SPF for us: only DKIM can pass.
    d.send("bounces@news.example", &mail).await;
    assert_eq!(d.decision("dkim-ok@acme.com").await, ("alice@acme.com".into(), true, true));
    assert_eq!(d.jobs_of("dkim-ok@acme.com").await, 1);
    d.shutdown.cancel();
}

#[tokio::test]
async fn unsigned_mail_passes_on_spf_aligned_with_from() {
    let d = start().await;
    d.send("alice@acme.com", &invite("spf-ok@acme.com", "alice@acme.com", "alice@acme.com")).await;
    assert_eq!(d.decision("spf-ok@acme.com").await, ("alice@acme.com".into(), true, true));
    d.shutdown.cancel();
}

#[tokio::test]
async fn spoofed_from_fails_even_with_a_valid_signature_and_spf_of_another_domain() {
    let d = start().await;
    // Signed by evil.example and sent with its own (passing) SPF identity: nothing aligns
    // with acme.com, whose DMARC record says reject.
    let mail =
        signed(&invite("spoof@acme.com", "alice@acme.com", "alice@acme.com"), "evil.example", "e1", &keys().evil);
    d.send("bounce@evil.example", &mail).await;
    assert_eq!(d.decision("spoof@acme.com").await, ("alice@acme.com".into(), false, false));
    assert_eq!(d.jobs_of("spoof@acme.com").await, 0);
    let history = d.store.history("spoof@acme.com").await.expect("history");
    let reasons = history[0].decisions[0].decision["reasons"].to_string();
    assert!(reasons.contains("unauthenticated_sender"), "{reasons}");
    d.shutdown.cancel();
}

#[tokio::test]
async fn a_signature_broken_after_signing_fails() {
    let d = start().await;
    let mail = signed(&invite("tampered@acme.com", "alice@acme.com", "alice@acme.com"), "acme.com", "s1", &keys().acme);
    let tampered = mail.replace("zoom.us/j/7", "zoom.us/j/8");
    // Through `ingest` (no SMTP client, so no SPF): DKIM is all there is, and it fails.
    let report = pipeline::ingest(
        d.store.as_ref(),
        &d.config,
        tampered.into_bytes(),
        Source::File,
        None,
        vec![ACME.into()],
        Utc::now(),
    )
    .await
    .expect("ingested");
    assert_eq!(report.eligible_decisions, 0);
    assert_eq!(d.decision("tampered@acme.com").await, ("alice@acme.com".into(), false, false));
    // The untouched copy passes the same way.
    let report = pipeline::ingest(
        d.store.as_ref(),
        &d.config,
        mail.into_bytes(),
        Source::File,
        None,
        vec![ACME.into()],
        Utc::now(),
    )
    .await
    .expect("ingested");
    assert_eq!(report.eligible_decisions, 1);
    d.shutdown.cancel();
}

#[tokio::test]
async fn a_dns_failure_defers_the_message_and_never_loses_it() {
    let d = start().await;
    let mail = invite("flaky@flaky.example", "carol@flaky.example", "carol@flaky.example");
    let received = Utc::now();
    let e = pipeline::ingest(
        d.store.as_ref(),
        &d.config,
        mail.into_bytes(),
        Source::File,
        None,
        vec![ACME.into()],
        received,
    )
    .await
    .expect_err("deferred");
    assert!(matches!(e, IngestError::SenderAuthDeferred(_)), "{e}");
    assert!(e.is_transient() && !e.is_store_unavailable());
    assert!(e.to_string().contains("_dmarc.flaky.example"), "the error names the lookup: {e}");
    // Stored, unprocessed, undecided: the daemon's resume loop tries it again.
    let unfinished = d.store.unfinished_messages(false).await.expect("unfinished");
    assert_eq!(unfinished.len(), 1);
    assert!(d.store.history("flaky@flaky.example").await.expect("history").is_empty());
    let again =
        pipeline::process_message(d.store.as_ref(), &d.config, unfinished[0], received + chrono::Duration::hours(1))
            .await
            .expect_err("still deferred within the retry window");
    assert!(matches!(again, IngestError::SenderAuthDeferred(_)));
    // Past the window it is decided, with the From not believed.
    let late = received + chrono::Duration::hours(pipeline::SENDER_AUTH_RETRY_HOURS + 1);
    let report = pipeline::process_message(d.store.as_ref(), &d.config, unfinished[0], late).await.expect("decided");
    assert_eq!(report.eligible_decisions, 0);
    assert_eq!(d.decision("flaky@flaky.example").await, ("carol@flaky.example".into(), false, false));
    assert!(d.store.unfinished_messages(false).await.expect("unfinished").is_empty());
    d.shutdown.cancel();
}

#[tokio::test]
async fn verdicts_say_what_passed_or_failed() {
    use invited::dmarc::{Checked, SmtpClient};
    keys();
    let verifier = invited::dmarc::shared("mx.test.invalid").expect("the installed verifier");
    let client = |ip: &str, mail_from: &str| SmtpClient {
        ip: ip.parse().expect("ip"),
        helo: "mail.acme.com".into(),
        mail_from: mail_from.into(),
    };
    let alice = invite("v@acme.com", "alice@acme.com", "alice@acme.com");
    let cases: [(String, Option<SmtpClient>, bool, &str); 6] = [
        (signed(&alice, "acme.com", "s1", &keys().acme), None, true, "dmarc=pass for acme.com (DKIM aligned)"),
        (alice.clone(), Some(client("127.0.0.1", "alice@acme.com")), true, "dmarc=pass for acme.com (SPF aligned)"),
        (
            alice.clone(),
            Some(client("192.0.2.1", "alice@acme.com")),
            false,
            "dmarc=fail for acme.com: no aligned DKIM or SPF pass (dkim=none, spf=fail acme.com)",
        ),
        (
            signed(&alice, "evil.example", "e1", &keys().evil),
            Some(client("127.0.0.1", "x@evil.example")),
            false,
            "(dkim=pass d=evil.example, spf=pass evil.example)",
        ),
        (
            signed(
                &invite("v@evil.example", "eve@evil.example", "eve@evil.example"),
                "evil.example",
                "e1",
                &keys().evil,
            ),
            None,
            true,
            "dkim=pass d=evil.example aligned with From; evil.example publishes no DMARC record",
        ),
        (
            alice.replace("From: alice@acme.com", "From: alice@acme.com, eve@evil.example"),
            None,
            false,
            "From names several domains",
        ),
    ];
    for (raw, client, authenticated, reason) in cases {
        match verifier.check(raw.as_bytes(), client.as_ref()).await {
            Checked::Verdict(v) => {
                assert_eq!(v.authenticated, authenticated, "{v:?}");
                assert!(v.reason.contains(reason), "{:?} lacks {reason:?}", v.reason);
            }
            Checked::TempError(e) => panic!("unexpected temperror {e} for {reason:?}"),
        }
    }
}

/// Only the topmost `MAX_DKIM_SIGNATURES` signatures are verified: a message carrying more
/// costs no more lookups, and an aligned signature below them does not count.
#[tokio::test]
async fn at_most_five_dkim_signatures_are_verified() {
    use invited::dmarc::{Checked, MAX_DKIM_SIGNATURES};
    keys();
    let verifier = invited::dmarc::shared("mx.test.invalid").expect("the installed verifier");
    let alice = invite("many@acme.com", "alice@acme.com", "alice@acme.com");
    let mut mail = signed(&alice, "acme.com", "s1", &keys().acme);
    for _ in 0..MAX_DKIM_SIGNATURES {
        mail = signed(&mail, "evil.example", "e1", &keys().evil);
    }
    match verifier.check(mail.as_bytes(), None).await {
        Checked::Verdict(v) => {
            assert!(!v.authenticated, "the aligned acme.com signature is the sixth: ignored: {v:?}");
            assert_eq!(v.reason.matches("dkim=").count(), MAX_DKIM_SIGNATURES, "{}", v.reason);
            assert!(!v.reason.contains("d=acme.com"), "{}", v.reason);
        }
        Checked::TempError(e) => panic!("unexpected temperror {e}"),
    }
    // With one signature less, the acme.com one is among the first five and passes.
    let fewer = mail.split_once("DKIM-Signature").map(|(_, rest)| rest).expect("signed");
    let fewer = &fewer[fewer.find("DKIM-Signature").expect("another signature")..];
    match verifier.check(fewer.as_bytes(), None).await {
        Checked::Verdict(v) => assert!(v.authenticated, "{v:?}"),
        Checked::TempError(e) => panic!("unexpected temperror {e}"),
    }
}

/// A name server that never answers: the check ends at its time limit as a temporary
/// error (the message is tried again later), not after every lookup has waited in turn.
#[tokio::test]
async fn a_silent_name_server_makes_the_check_a_temporary_error_at_its_time_limit() {
    use invited::dmarc::{Checked, SmtpClient};
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("silent name server");
    let server = silent.local_addr().expect("addr");
    let verifier = Verifier::with_name_server("mx.test.invalid", server, Duration::from_secs(600))
        .expect("verifier")
        .with_check_timeout(Duration::from_secs(1));
    let client = SmtpClient {
        ip: "127.0.0.1".parse().expect("ip"),
        helo: "mail.acme.com".into(),
        mail_from: "alice@acme.com".into(),
    };
    let alice = invite("silent@acme.com", "alice@acme.com", "alice@acme.com");
    let checked = tokio::time::timeout(Duration::from_secs(120), verifier.check(alice.as_bytes(), Some(&client)))
        .await
        .expect("the check ends on its own");
    match checked {
        Checked::TempError(e) => assert!(e.contains("timed out after 1 s"), "{e}"),
        Checked::Verdict(v) => panic!("no verdict without DNS answers: {v:?}"),
    }
    drop(silent);
}
