//! One SMTP session: a state machine over a boxed byte stream (TCP, TLS or, in tests,
//! `tokio::io::duplex`). Commands are parsed by `smtp-proto`; each verb has one handler.
//! Replies are buffered and written when the input runs dry, which is what PIPELINING needs.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sha2::{Digest, Sha256};
use smtp_proto::{Error as ProtoError, MailFrom, RcptTo, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use super::data::{DataProblem, DataReceiver};
use super::received::{received_header, Trace};
use super::spooler::Spooler;
use super::SmtpError;
use crate::config::{Config, LiveConfig};
use crate::store::{NewMessage, Source, Store};

/// Anything a session can speak over.
pub trait SmtpStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> SmtpStream for T {}

/// What every session shares.
pub struct Intake {
    /// The configuration in force; each session takes a snapshot when it starts, each
    /// processed message uses the one current when it is processed.
    pub config: LiveConfig,
    pub store: Arc<dyn Store>,
    /// Present when `server.tls_cert`/`tls_key` are set: STARTTLS is offered.
    pub tls: Option<TlsAcceptor>,
    /// Cancelled when the daemon stops: idle sessions end with `421 4.3.0`.
    pub shutdown: CancellationToken,
    /// The one writer committing the sessions' messages, in batches.
    pub spooler: Spooler,
    /// Spooled messages for the processing workers. When it is full, the scheduler
    /// tick resumes the message instead: the reply never waits for processing.
    processing: mpsc::Sender<ToProcess>,
    /// Source of `session_id`s.
    next_session: AtomicU64,
}

/// How many spooled messages may wait for a processing worker.
const PROCESSING_QUEUE: usize = 100_000;

impl Intake {
    /// The shared state, and the receiving end of the processing queue (see
    /// [`process_spooled`]); a test that drops it leaves processing to the scheduler.
    /// Starts the spool writer, so it must run inside a tokio runtime.
    pub fn new(
        config: impl Into<LiveConfig>,
        store: Arc<dyn Store>,
        tls: Option<TlsAcceptor>,
        shutdown: CancellationToken,
    ) -> (Arc<Intake>, mpsc::Receiver<ToProcess>) {
        let (processing, queue) = mpsc::channel(PROCESSING_QUEUE);
        let spooler = Spooler::start(store.clone());
        let intake = Intake {
            config: config.into(),
            store,
            tls,
            shutdown,
            spooler,
            processing,
            next_session: AtomicU64::new(1),
        };
        (Arc::new(intake), queue)
    }

    fn queue_processing(&self, message_id: i64, bytes: usize) {
        if self.processing.try_send(ToProcess { message_id, bytes }).is_err() {
            debug!(message_id, "processing_deferred");
        }
    }
}

/// A spooled message waiting for a processing worker, with its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToProcess {
    pub message_id: i64,
    pub bytes: usize,
}

/// Most spooled messages a processing worker takes at once (one store read and one write
/// for all of them).
const PROCESSING_BATCH: usize = 32;
/// A batch is closed once its messages reach this many bytes. A worker holds all of a
/// batch's bytes at once: at most this plus one message, where a sender of big mail could
/// otherwise make it [`PROCESSING_BATCH`] × the size limit.
const PROCESSING_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// A processing worker: runs the pipeline on spooled messages until shutdown, on whatever
/// has queued up (see [`next_batch`]). The pipeline logs and records its own failures; an
/// unfinished message is resumed by the scheduler.
pub async fn process_spooled(intake: Arc<Intake>, queue: Arc<tokio::sync::Mutex<mpsc::Receiver<ToProcess>>>) {
    let mut batch = Vec::with_capacity(PROCESSING_BATCH);
    loop {
        {
            let mut queue = queue.lock().await;
            tokio::select! {
                _ = intake.shutdown.cancelled() => return,
                more = next_batch(&mut queue, &mut batch) => if !more { return },
            }
        }
        let config = intake.config.current();
        let _ = crate::pipeline::process_messages(intake.store.as_ref(), &config, &batch, Utc::now()).await;
        batch.clear();
    }
}

/// Waits for a message, then adds it and whatever else has queued up to `batch`, up to
/// [`PROCESSING_BATCH`] messages or until they reach [`PROCESSING_BATCH_BYTES`]. False
/// when the queue is closed and empty.
async fn next_batch(queue: &mut mpsc::Receiver<ToProcess>, batch: &mut Vec<i64>) -> bool {
    let Some(first) = queue.recv().await else { return false };
    batch.push(first.message_id);
    let mut bytes = first.bytes;
    while batch.len() < PROCESSING_BATCH && bytes < PROCESSING_BATCH_BYTES {
        let Ok(next) = queue.try_recv() else { break };
        batch.push(next.message_id);
        bytes = bytes.saturating_add(next.bytes);
    }
    true
}

/// Runs one session to its end, in its own span; never returns an error (it is logged).
pub async fn run_session(intake: Arc<Intake>, stream: Box<dyn SmtpStream>, peer: SocketAddr) {
    let session_id = intake.next_session.fetch_add(1, Ordering::Relaxed);
    let span = info_span!("smtp_session", session_id, peer = %peer);
    async move {
        info!("smtp_session_started");
        crate::metrics::smtp_session_started();
        let started = Instant::now();
        let mut session = Session::new(intake, stream, peer, session_id);
        let result = session.run().await;
        let reason = match &result {
            Ok(()) => session.ended,
            Err(e) => e.code(),
        };
        let error = result.err().map(|e| e.to_string());
        info!(
            reason,
            error = error.as_deref().unwrap_or(""),
            commands = session.commands,
            messages = session.messages,
            duration_ms = started.elapsed().as_millis() as u64,
            "smtp_session_ended"
        );
        crate::metrics::smtp_session_ended();
    }
    .instrument(span)
    .await
}

/// What a handler tells the loop to do next.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    /// Write what is pending and close the connection.
    Close,
    /// `220` was queued: write it, then run the TLS handshake.
    StartTls,
}

/// What the loop does after looking at the buffered input.
enum Step {
    /// Something was consumed: look again.
    Again,
    /// Read more bytes first.
    NeedInput,
    Close,
}

/// What ended a wait for input.
enum Woke {
    Read(usize),
    Failed(std::io::Error),
    Idle,
    SessionTime,
    Shutdown,
}

/// The client's greeting.
struct Helo {
    name: String,
    /// EHLO rather than HELO.
    extended: bool,
}

struct Session {
    intake: Arc<Intake>,
    /// The configuration when the session started: a session open across a reload ends
    /// under the settings it began with.
    config: Arc<Config>,
    stream: Box<dyn SmtpStream>,
    peer: SocketAddr,
    id: u64,
    /// Bytes read and not yet consumed.
    input: Vec<u8>,
    /// Replies not yet written.
    output: Vec<u8>,
    helo: Option<Helo>,
    /// The connection is encrypted (STARTTLS done).
    tls: bool,
    /// The envelope sender, once MAIL was accepted (empty for the null sender `<>`).
    mail_from: Option<String>,
    /// Accepted envelope recipients, each an assistant address of a tenant.
    rcpts: Vec<String>,
    /// Receiving a message (after `354`).
    data: Option<DataReceiver>,
    /// Dropping the rest of an over-long command line.
    skipping_line: bool,
    commands: usize,
    bad_commands: usize,
    /// Messages accepted in this session (also numbers the `Received:` id).
    messages: usize,
    /// When the session must end (`smtp.max_session_seconds`).
    deadline: Instant,
    /// On shutdown during DATA: when the message must be complete.
    grace_end: Option<Instant>,
    /// The log `reason` the session ended with.
    ended: &'static str,
}

impl Session {
    fn new(intake: Arc<Intake>, stream: Box<dyn SmtpStream>, peer: SocketAddr, id: u64) -> Session {
        let config = intake.config.current();
        let deadline = Instant::now() + Duration::from_secs(config.smtp.max_session_seconds);
        Session {
            intake,
            config,
            stream,
            peer,
            id,
            input: Vec::with_capacity(4096),
            output: Vec::with_capacity(1024),
            helo: None,
            tls: false,
            mail_from: None,
            rcpts: Vec::new(),
            data: None,
            skipping_line: false,
            commands: 0,
            bad_commands: 0,
            messages: 0,
            deadline,
            grace_end: None,
            ended: "client_closed",
        }
    }

    fn max_message_bytes(&self) -> usize {
        self.config.smtp.max_message_bytes.min(self.config.limits.max_message_bytes)
    }

    async fn run(&mut self) -> Result<(), SmtpError> {
        let greeting = format!("{} ESMTP invited", self.config.server.hostname);
        self.reply(220, "", &greeting);
        let result = self.serve().await;
        // Best effort: the last replies (421, 221) and a clean close.
        let _ = self.flush().await;
        let _ = timeout(Duration::from_secs(5), self.stream.shutdown()).await;
        result
    }

    async fn serve(&mut self) -> Result<(), SmtpError> {
        loop {
            match self.step().await? {
                Step::Again => continue,
                Step::Close => return Ok(()),
                Step::NeedInput => {}
            }
            self.flush().await?;
            match self.wait_for_input().await {
                Woke::Read(0) => {
                    self.ended = "client_closed";
                    return Ok(());
                }
                Woke::Read(_) => {}
                Woke::Failed(e) => return Err(e.into()),
                Woke::Idle => {
                    self.close_with(421, "4.4.2", "Idle timeout, closing", "idle_timeout");
                    return Ok(());
                }
                Woke::SessionTime => {
                    self.close_with(421, "4.4.2", "Session time limit, closing", "session_time_limit");
                    return Ok(());
                }
                Woke::Shutdown => {
                    let reason = if self.data.is_some() { "shutdown_data_deadline" } else { "shutdown" };
                    self.close_with(421, "4.3.0", "Service shutting down, try again later", reason);
                    return Ok(());
                }
            }
        }
    }

    /// Consumes what is buffered: data lines, or one command.
    async fn step(&mut self) -> Result<Step, SmtpError> {
        if let Some(receiver) = self.data.as_mut() {
            let (used, done) = receiver.feed(&self.input);
            self.input.drain(..used);
            return Ok(match done {
                Some(result) => self.finish_data(result).await.into(),
                None => Step::NeedInput,
            });
        }
        if self.intake.shutdown.is_cancelled() {
            self.close_with(421, "4.3.0", "Service shutting down, try again later", "shutdown");
            return Ok(Step::Close);
        }
        let max = self.config.smtp.max_command_line_bytes;
        let lf = self.input.iter().position(|&b| b == b'\n');
        if self.skipping_line {
            match lf {
                Some(i) => {
                    self.input.drain(..=i);
                    self.skipping_line = false;
                    return Ok(Step::Again);
                }
                None => {
                    self.input.clear();
                    return Ok(Step::NeedInput);
                }
            }
        }
        let flow = match lf {
            None if self.input.len() > max => {
                self.input.clear();
                self.skipping_line = true;
                self.count_command().unwrap_or_else(|| self.line_too_long())
            }
            None => return Ok(Step::NeedInput),
            Some(i) if i + 1 > max => {
                self.input.drain(..=i);
                self.count_command().unwrap_or_else(|| self.line_too_long())
            }
            Some(i) => {
                let line: Vec<u8> = self.input.drain(..=i).collect();
                match self.count_command() {
                    Some(flow) => flow,
                    None => self.handle_line(&line),
                }
            }
        };
        Ok(match flow {
            Flow::Continue => Step::Again,
            Flow::Close => Step::Close,
            Flow::StartTls => self.start_tls().await.into(),
        })
    }

    /// Counts a command; past the limit, the session ends.
    fn count_command(&mut self) -> Option<Flow> {
        self.commands += 1;
        (self.commands > self.config.smtp.max_commands_per_session)
            .then(|| self.close_with(421, "4.7.0", "Too many commands, closing", "too_many_commands"))
    }

    fn handle_line(&mut self, line: &[u8]) -> Flow {
        match Request::parse(&mut line.iter()) {
            Ok(request) => self.dispatch(request),
            Err(e) => self.handle_parse_error(e),
        }
    }

    fn dispatch(&mut self, request: Request<Cow<'_, str>>) -> Flow {
        match request {
            Request::Ehlo { host } => self.handle_ehlo(&host),
            Request::Helo { host } => self.handle_helo(&host),
            Request::Mail { from } => self.handle_mail(from),
            Request::Rcpt { to } => self.handle_rcpt(to),
            Request::Data => self.handle_data(),
            Request::Rset => self.handle_rset(),
            Request::Noop { .. } => self.handle_noop(),
            Request::Quit => self.handle_quit(),
            Request::StartTls => self.handle_starttls(),
            other => self.handle_not_implemented(other.name()),
        }
    }

    fn handle_ehlo(&mut self, host: &str) -> Flow {
        self.reset_transaction();
        self.helo = Some(Helo { name: host.to_string(), extended: true });
        let mut lines = vec![
            format!("{} Hello {}", self.config.server.hostname, host),
            "PIPELINING".to_string(),
            format!("SIZE {}", self.max_message_bytes()),
            "8BITMIME".to_string(),
            "SMTPUTF8".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
        ];
        if self.intake.tls.is_some() && !self.tls {
            lines.push("STARTTLS".to_string());
        }
        crate::metrics::smtp_reply(250);
        let last = lines.len() - 1;
        for (i, line) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            self.output.extend_from_slice(format!("250{sep}{line}\r\n").as_bytes());
        }
        Flow::Continue
    }

    fn handle_helo(&mut self, host: &str) -> Flow {
        self.reset_transaction();
        self.helo = Some(Helo { name: host.to_string(), extended: false });
        let text = self.config.server.hostname.clone();
        self.reply(250, "", &text);
        Flow::Continue
    }

    fn handle_mail(&mut self, from: MailFrom<Cow<'_, str>>) -> Flow {
        if self.helo.is_none() {
            return self.refuse_bad(503, "5.5.1", "Send EHLO or HELO first", "no_helo");
        }
        if self.mail_from.is_some() {
            return self.refuse_bad(503, "5.5.1", "Nested MAIL command", "nested_mail");
        }
        if from.size > self.max_message_bytes() {
            return self.refuse(552, "5.3.4", "Message too big for this server", "message_too_large");
        }
        self.mail_from = Some(from.address.into_owned());
        self.reply(250, "2.1.0", "Sender OK");
        Flow::Continue
    }

    fn handle_rcpt(&mut self, to: RcptTo<Cow<'_, str>>) -> Flow {
        if self.mail_from.is_none() {
            return self.refuse_bad(503, "5.5.1", "Send MAIL first", "no_mail");
        }
        if self.rcpts.len() >= self.config.smtp.max_recipients {
            return self.refuse(452, "4.5.3", "Too many recipients", "too_many_recipients");
        }
        if self.config.tenant_for_address(&to.address).is_none() {
            return self.refuse_bad(550, "5.1.1", "No such assistant address here", "unknown_recipient");
        }
        if !self.rcpts.iter().any(|r| r.eq_ignore_ascii_case(&to.address)) {
            self.rcpts.push(to.address.into_owned());
        }
        self.reply(250, "2.1.5", "Recipient OK");
        Flow::Continue
    }

    fn handle_data(&mut self) -> Flow {
        if self.mail_from.is_none() {
            return self.refuse_bad(503, "5.5.1", "Send MAIL first", "no_mail");
        }
        if self.rcpts.is_empty() {
            return self.refuse_bad(554, "5.5.1", "No valid recipients", "no_recipients");
        }
        let max_line = self.config.smtp.max_data_line_bytes;
        self.data = Some(DataReceiver::new(self.max_message_bytes(), max_line));
        self.reply(354, "", "End data with <CR><LF>.<CR><LF>");
        Flow::Continue
    }

    fn handle_rset(&mut self) -> Flow {
        self.reset_transaction();
        self.reply(250, "2.0.0", "OK");
        Flow::Continue
    }

    fn handle_noop(&mut self) -> Flow {
        self.reply(250, "2.0.0", "OK");
        Flow::Continue
    }

    fn handle_quit(&mut self) -> Flow {
        self.reply(221, "2.0.0", "Bye");
        self.ended = "quit";
        Flow::Close
    }

    fn handle_starttls(&mut self) -> Flow {
        if self.intake.tls.is_none() {
            return self.refuse_bad(502, "5.5.1", "STARTTLS not available", "starttls_unavailable");
        }
        if self.tls {
            return self.refuse_bad(503, "5.5.1", "TLS already active", "starttls_twice");
        }
        self.reply(220, "2.0.0", "Ready to start TLS");
        Flow::StartTls
    }

    fn handle_not_implemented(&mut self, verb: &str) -> Flow {
        self.refuse_bad(502, "5.5.1", &format!("{verb} not implemented"), "command_not_implemented")
    }

    fn handle_parse_error(&mut self, e: ProtoError) -> Flow {
        match e {
            ProtoError::UnknownCommand => self.refuse_bad(500, "5.5.1", "Unknown command", "unknown_command"),
            ProtoError::InvalidSenderAddress => {
                self.refuse_bad(501, "5.1.7", "Invalid sender address", "bad_sender_syntax")
            }
            ProtoError::InvalidRecipientAddress => {
                self.refuse_bad(501, "5.1.3", "Invalid recipient address", "bad_recipient_syntax")
            }
            ProtoError::SyntaxError { syntax } => {
                self.refuse_bad(501, "5.5.2", &format!("Syntax: {syntax}"), "syntax_error")
            }
            ProtoError::InvalidParameter { param } => {
                self.refuse_bad(501, "5.5.4", &format!("Invalid parameter {param}"), "bad_parameter")
            }
            ProtoError::UnsupportedParameter { param } => {
                let param: String = param.chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
                self.refuse_bad(504, "5.5.4", &format!("Unsupported parameter {param}"), "unsupported_parameter")
            }
            _ => self.refuse_bad(500, "5.5.2", "Syntax error", "syntax_error"),
        }
    }

    fn line_too_long(&mut self) -> Flow {
        self.refuse_bad(500, "5.5.2", "Line too long", "command_line_too_long")
    }

    /// The data ended: store the message or say why not. Either way the transaction ends.
    async fn finish_data(&mut self, result: Result<Vec<u8>, DataProblem>) -> Flow {
        self.data = None;
        if result.is_err() {
            crate::metrics::message_received(Source::Smtp.as_str(), "refused");
        }
        let flow = match result {
            Ok(body) => self.spool(body).await,
            Err(DataProblem::TooLarge) => self.refuse(552, "5.3.4", "Message too big", DataProblem::TooLarge.reason()),
            Err(DataProblem::LineTooLong) => {
                let text = format!("Message has a line longer than {} bytes", self.config.smtp.max_data_line_bytes);
                self.refuse(552, "5.3.4", &text, DataProblem::LineTooLong.reason())
            }
            Err(DataProblem::BareLineEnding) => self.refuse(
                550,
                "5.6.0",
                "Bare CR or LF in message, lines must end with CRLF",
                DataProblem::BareLineEnding.reason(),
            ),
        };
        self.reset_transaction();
        flow
    }

    /// Commits the message with its envelope and `Received:` header; `250` only after that.
    async fn spool(&mut self, body: Vec<u8>) -> Flow {
        let now = Utc::now();
        self.messages += 1;
        let trace_id = format!("{:x}.{}", self.id, self.messages);
        let (helo, protocol) = match &self.helo {
            Some(h) if h.extended && self.tls => (h.name.as_str(), "ESMTPS"),
            Some(h) if h.extended => (h.name.as_str(), "ESMTP"),
            Some(h) => (h.name.as_str(), "SMTP"),
            None => ("unknown", "SMTP"),
        };
        let header = received_header(&Trace {
            helo,
            peer: self.peer.ip(),
            by: &self.config.server.hostname,
            protocol,
            id: &trace_id,
            rcpts: &self.rcpts,
            date: now,
        });
        // The hash is of the message as the client sent it, so a client that retries after
        // a lost `250` finds its message already stored instead of storing it twice.
        let sha256 = hex::encode(Sha256::digest(&body));
        let mut raw = Vec::with_capacity(header.len() + body.len());
        raw.extend_from_slice(header.as_bytes());
        raw.extend_from_slice(&body);
        drop(body);
        let message = NewMessage {
            message_id: crate::mime::message_id(&raw),
            sha256,
            raw,
            source: Source::Smtp,
            envelope_from: self.mail_from.clone(),
            envelope_rcpts: self.rcpts.clone(),
            received_at: now,
        };
        let header_message_id = message.message_id.clone();
        let (size, rcpts) = (message.raw.len(), message.envelope_rcpts.len());
        match self.intake.spooler.spool(message).await {
            Ok(spooled) => {
                info!(
                    message_id = spooled.id,
                    header_message_id = header_message_id.as_deref().unwrap_or(""),
                    size,
                    source = Source::Smtp.as_str(),
                    duplicate = !spooled.inserted,
                    rcpts,
                    "message_received"
                );
                let outcome = if spooled.inserted { "accepted" } else { "duplicate" };
                crate::metrics::message_received(Source::Smtp.as_str(), outcome);
                self.reply(250, "2.0.0", &format!("Queued as {}", spooled.id));
                if spooled.inserted {
                    self.intake.queue_processing(spooled.id, size);
                }
                Flow::Continue
            }
            Err(e) => {
                let reason = if e.is_transient() { "store_unavailable" } else { "store_failed" };
                warn!(reason, code = 451, error_code = e.code(), error = %e, "smtp_refused");
                crate::metrics::message_received(Source::Smtp.as_str(), "deferred");
                // Our own trouble is never a 5xx: the client keeps the message and retries.
                self.reply(451, "4.3.0", "Cannot store the message now, try again later");
                Flow::Continue
            }
        }
    }

    /// `220` is queued: write it, drop whatever was pipelined after STARTTLS, shake hands.
    async fn start_tls(&mut self) -> Flow {
        if self.flush().await.is_err() {
            self.ended = "io_error";
            return Flow::Close;
        }
        if !self.input.is_empty() {
            info!(reason = "pipelined_before_tls", bytes = self.input.len(), "smtp_input_discarded");
            self.input.clear();
        }
        let Some(acceptor) = self.intake.tls.clone() else { return Flow::Close };
        let placeholder: Box<dyn SmtpStream> = Box::new(tokio::io::join(tokio::io::empty(), tokio::io::sink()));
        let plain = std::mem::replace(&mut self.stream, placeholder);
        let idle = Duration::from_secs(self.config.smtp.idle_timeout_seconds);
        match timeout(idle, acceptor.accept(plain)).await {
            Ok(Ok(tls)) => {
                self.stream = Box::new(tls);
                self.tls = true;
                // RFC 3207 §4.2: forget everything learnt before the handshake.
                self.helo = None;
                self.reset_transaction();
                debug!("smtp_tls_started");
                Flow::Continue
            }
            Ok(Err(e)) => {
                info!(reason = "tls_handshake_failed", error = %e, "smtp_refused");
                self.ended = "tls_handshake_failed";
                Flow::Close
            }
            Err(_) => {
                info!(reason = "tls_handshake_timeout", "smtp_refused");
                self.ended = "tls_handshake_timeout";
                Flow::Close
            }
        }
    }

    async fn wait_for_input(&mut self) -> Woke {
        let idle = Duration::from_secs(self.config.smtp.idle_timeout_seconds);
        let grace = Duration::from_secs(self.config.smtp.shutdown_grace_seconds);
        let in_data = self.data.is_some();
        if in_data && self.grace_end.is_none() && self.intake.shutdown.is_cancelled() {
            self.grace_end = Some(Instant::now() + grace);
        }
        let shutdown = self.intake.shutdown.clone();
        let grace_end = self.grace_end;
        // Outside DATA, shutdown ends the session at once; inside, after the grace period.
        let stop = async move {
            if !in_data {
                return shutdown.cancelled().await;
            }
            let end = match grace_end {
                Some(end) => end,
                None => {
                    shutdown.cancelled().await;
                    Instant::now() + grace
                }
            };
            sleep_until(end).await
        };
        self.input.reserve(16 * 1024);
        let (stream, input) = (&mut self.stream, &mut self.input);
        tokio::select! {
            _ = stop => Woke::Shutdown,
            _ = sleep_until(self.deadline) => Woke::SessionTime,
            read = timeout(idle, stream.read_buf(input)) => match read {
                Err(_) => Woke::Idle,
                Ok(Ok(n)) => Woke::Read(n),
                Ok(Err(e)) => Woke::Failed(e),
            },
        }
    }

    async fn flush(&mut self) -> Result<(), SmtpError> {
        if self.output.is_empty() {
            return Ok(());
        }
        let idle = Duration::from_secs(self.config.smtp.idle_timeout_seconds);
        let (stream, output) = (&mut self.stream, &self.output);
        let write = async move {
            stream.write_all(output).await?;
            stream.flush().await
        };
        match timeout(idle, write).await {
            Ok(result) => result?,
            Err(_) => return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out").into()),
        }
        self.output.clear();
        Ok(())
    }

    fn reset_transaction(&mut self) {
        self.mail_from = None;
        self.rcpts.clear();
    }

    fn reply(&mut self, code: u16, esc: &str, text: &str) {
        crate::metrics::smtp_reply(code);
        let line = if esc.is_empty() { format!("{code} {text}\r\n") } else { format!("{code} {esc} {text}\r\n") };
        self.output.extend_from_slice(line.as_bytes());
    }

    /// A refusal: its reply and a log line with its `reason`.
    fn refuse(&mut self, code: u16, esc: &str, text: &str, reason: &'static str) -> Flow {
        info!(reason, code, "smtp_refused");
        self.reply(code, esc, text);
        Flow::Continue
    }

    /// A refusal that counts towards `smtp.max_bad_commands`.
    fn refuse_bad(&mut self, code: u16, esc: &str, text: &str, reason: &'static str) -> Flow {
        self.refuse(code, esc, text, reason);
        self.bad_commands += 1;
        if self.bad_commands >= self.config.smtp.max_bad_commands {
            return self.close_with(421, "4.7.0", "Too many errors, closing", "too_many_errors");
        }
        Flow::Continue
    }

    /// The last reply of a session.
    fn close_with(&mut self, code: u16, esc: &str, text: &str, reason: &'static str) -> Flow {
        info!(reason, code, "smtp_refused");
        self.reply(code, esc, text);
        self.ended = reason;
        Flow::Close
    }
}

impl From<Flow> for Step {
    fn from(flow: Flow) -> Step {
        match flow {
            Flow::Continue | Flow::StartTls => Step::Again,
            Flow::Close => Step::Close,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The batches `next_batch` makes of `queued`, in order.
    async fn batches(queued: &[(i64, usize)]) -> Vec<Vec<i64>> {
        let (tx, mut rx) = mpsc::channel(queued.len().max(1));
        for &(message_id, bytes) in queued {
            tx.try_send(ToProcess { message_id, bytes }).expect("room");
        }
        drop(tx);
        let mut all = Vec::new();
        let mut batch = Vec::new();
        while next_batch(&mut rx, &mut batch).await {
            all.push(std::mem::take(&mut batch));
        }
        all
    }

    #[tokio::test]
    async fn a_processing_batch_closes_at_its_message_count() {
        let queued: Vec<(i64, usize)> = (1..=40).map(|id| (id, 10_000)).collect();
        let got = batches(&queued).await;
        assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [PROCESSING_BATCH, 40 - PROCESSING_BATCH]);
        assert_eq!(got.concat(), (1..=40).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_processing_batch_closes_once_its_bytes_reach_the_limit() {
        let big = PROCESSING_BATCH_BYTES / 2;
        // Two halves fill a batch; one over the limit still joins a batch below it, and
        // closes it; the small ones after make the next.
        let queued = [(1, big), (2, big), (3, big), (4, PROCESSING_BATCH_BYTES * 3), (5, 100), (6, 100)];
        assert_eq!(batches(&queued).await, [vec![1, 2], vec![3, 4], vec![5, 6]]);
    }
}
