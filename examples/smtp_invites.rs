//! SMTP load client for `benches/smtp-load.sh`: sends MESSAGES distinct invites of about
//! SIZE bytes over SESSIONS parallel sessions, MAIL/RCPT/DATA pipelined, and prints one line
//! in the format of `../shared/peers/smtp-load.sh` (`msgs_per_s=…`).
//!
//! Postfix's smtp-source sends either filler text or one file's bytes every time; invited
//! keeps identical bytes once (a retried message), so neither makes it store and process
//! MESSAGES invites. Each invite here has its own Message-ID, UID, start and Zoom link, a
//! week ahead, so each becomes a version, a decision and a job.
//!
//! usage: cargo run --release --example smtp_invites -- HOST:PORT MESSAGES SESSIONS SIZE RCPT
//! The host must be a loopback address. Exit status 1 if any message got no `250`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Args {
    addr: SocketAddr,
    messages: usize,
    sessions: usize,
    size: usize,
    rcpt: String,
}

fn args() -> Result<Args, String> {
    let usage = "usage: smtp_invites HOST:PORT MESSAGES SESSIONS SIZE RCPT";
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [addr, messages, sessions, size, rcpt] = a.as_slice() else { return Err(usage.into()) };
    let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("refusing non-loopback address {addr}"));
    }
    let number = |s: &str| s.parse::<usize>().map_err(|e| format!("{s}: {e} ({usage})"));
    let sessions = number(sessions)?.max(1);
    Ok(Args { addr, messages: number(messages)?, sessions, size: number(size)?, rcpt: rcpt.clone() })
}

/// Invite `i`, padded with a text part to about `size` bytes.
fn invite(i: usize, size: usize, rcpt: &str, start: DateTime<Utc>) -> String {
    let start = start + chrono::Duration::minutes(i as i64);
    let end = start + chrono::Duration::minutes(30);
    let t = |d: DateTime<Utc>| d.format("%Y%m%dT%H%M%SZ").to_string();
    let calendar = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//invited load client//EN\r\nMETHOD:REQUEST\r\n\
         BEGIN:VEVENT\r\nUID:load-{i}@acme.com\r\nDTSTAMP:{}\r\nSEQUENCE:0\r\nDTSTART:{}\r\nDTEND:{}\r\n\
         SUMMARY:Load test {i}\r\nORGANIZER:mailto:alice@acme.com\r\n\
         LOCATION:https://us02web.zoom.us/j/9{i:010}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
        t(Utc::now()),
        t(start),
        t(end),
    );
    let head = format!(
        "From: Alice <alice@acme.com>\r\nTo: {rcpt}\r\nSubject: Load test {i}\r\n\
         Message-ID: <load-{i}@load.example>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/alternative; boundary=\"b\"\r\n\r\n--b\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n"
    );
    let tail =
        format!("\r\n--b\r\nContent-Type: text/calendar; charset=utf-8; method=REQUEST\r\n\r\n{calendar}--b--\r\n");
    let line = "You are invited to a load test. Agenda and notes follow in this filler text.\r\n";
    let room = size.saturating_sub(head.len() + tail.len());
    let mut mail = head;
    for _ in 0..room / line.len() {
        mail.push_str(line);
    }
    mail.push_str(&tail);
    mail
}

struct Session {
    s: BufReader<TcpStream>,
}

impl Session {
    async fn open(addr: SocketAddr) -> Result<Session, String> {
        let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        // Each write is a whole pipelined group: no waiting for Nagle's delayed ACKs.
        stream.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
        let mut s = Session { s: BufReader::new(stream) };
        s.expect("220").await?;
        s.send(b"EHLO load.example\r\n").await?;
        s.expect("250").await?;
        Ok(s)
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.s.get_mut().write_all(bytes).await.map_err(|e| format!("write: {e}"))
    }

    /// One reply, all its lines.
    async fn reply(&mut self) -> Result<String, String> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            match tokio::time::timeout(Duration::from_secs(60), self.s.read_line(&mut line)).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(Ok(_)) => return Err("connection closed".into()),
                Ok(Err(e)) => return Err(format!("read: {e}")),
                Err(_) => return Err("no reply within 60 s".into()),
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(all);
            }
        }
    }

    async fn expect(&mut self, code: &str) -> Result<(), String> {
        let reply = self.reply().await?;
        if reply.starts_with(code) {
            Ok(())
        } else {
            Err(format!("expected {code}, got {}", reply.trim_end()))
        }
    }

    async fn deliver(&mut self, rcpt: &str, mail: &str) -> Result<(), String> {
        self.send(format!("MAIL FROM:<alice@acme.com>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n").as_bytes()).await?;
        self.expect("250").await?;
        self.expect("250").await?;
        self.expect("354").await?;
        // The generated lines never start with a dot: no stuffing needed.
        self.send(format!("{mail}.\r\n").as_bytes()).await?;
        self.expect("250").await
    }
}

/// Sends messages `first`, `first + sessions`, … on one connection; stops at the first failure.
async fn session(args: &Args, first: usize, start: DateTime<Utc>) -> Result<usize, String> {
    let mut s = Session::open(args.addr).await?;
    let mut sent = 0;
    for i in (first..args.messages).step_by(args.sessions) {
        let mail = invite(i, args.size, &args.rcpt, start);
        s.deliver(&args.rcpt, &mail).await.map_err(|e| format!("message {i}: {e}"))?;
        sent += 1;
    }
    s.send(b"QUIT\r\n").await?;
    Ok(sent)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match args() {
        Ok(a) => std::sync::Arc::new(a),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let start = Utc::now() + chrono::Duration::days(7);
    let began = Instant::now();
    let tasks: Vec<_> = (0..args.sessions)
        .map(|first| {
            let args = args.clone();
            tokio::spawn(async move { session(&args, first, start).await })
        })
        .collect();
    let (mut sent, mut failed) = (0, 0);
    for task in tasks {
        match task.await {
            Ok(Ok(n)) => sent += n,
            Ok(Err(e)) => {
                eprintln!("{e}");
                failed += 1;
            }
            Err(e) => {
                eprintln!("session panicked: {e}");
                failed += 1;
            }
        }
    }
    let seconds = began.elapsed().as_secs_f64();
    println!(
        "smtp-invites addr={} messages={} sessions={} size={} seconds={seconds:.2} msgs_per_s={:.0} sent={sent} failed_sessions={failed}",
        args.addr,
        args.messages,
        args.sessions,
        args.size,
        sent as f64 / seconds.max(f64::EPSILON),
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
