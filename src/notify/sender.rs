//! The reply worker: claims due replies from the store, hands each to the relay with lettre
//! (tokio, rustls), and records how it went. A relay that is down or answers 4xx delays a
//! reply (capped exponential backoff, retried until it is taken); a 5xx refusal fails it
//! for good. Claims are leased, so that daemons sharing a store send each reply once: a
//! reply is claimed only right before it is handed to the relay, one at a time, so that a
//! slow relay cannot let the lease of a reply still waiting its turn run out.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::FutureExt;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{NotifyConfig, RelayTls};
use crate::config::Config;
use crate::store::{ClaimedReply, Store, StoreError};

/// Most replies sent in one pass (each claimed on its own); the rest wait for the next pass.
const PASS_LIMIT: usize = 20;

/// `Auto-Submitted: auto-replied` (RFC 3834 §5): other responders must not answer.
#[derive(Debug, Clone, Copy)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-replied".into())
    }
}

/// `X-Auto-Response-Suppress: All`: Exchange and Outlook send no out-of-office reply to it.
#[derive(Debug, Clone, Copy)]
struct SuppressAutoResponses;

impl Header for SuppressAutoResponses {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Auto-Response-Suppress")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(SuppressAutoResponses)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "All".into())
    }
}

/// Why the worker could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    #[error("cannot use notify.relay_host = {host:?}: {source}")]
    Relay { host: String, source: lettre::transport::smtp::Error },
}

/// Hands queued replies to the relay.
pub struct ReplySender {
    store: Arc<dyn Store>,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// This daemon's name in claims: two daemons never hold the same reply.
    worker: String,
    /// Our host name, the right-hand side of each reply's Message-ID.
    hostname: String,
    retry_base: TimeDelta,
    retry_max: TimeDelta,
    poll: Duration,
    /// How long a claim holds: well over the longest SMTP exchange.
    lease: TimeDelta,
}

fn transport(notify: &NotifyConfig, hostname: &str) -> Result<AsyncSmtpTransport<Tokio1Executor>, SenderError> {
    let relay_error = |source| SenderError::Relay { host: notify.relay_host.clone(), source };
    let builder = match notify.relay_tls {
        RelayTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(notify.relay_host.as_str()),
        RelayTls::Starttls => {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&notify.relay_host).map_err(relay_error)?
        }
        RelayTls::Implicit => AsyncSmtpTransport::<Tokio1Executor>::relay(&notify.relay_host).map_err(relay_error)?,
    };
    let mut builder = builder
        .port(notify.relay_port)
        .hello_name(ClientId::Domain(hostname.to_string()))
        .timeout(Some(Duration::from_secs(notify.timeout_seconds)));
    if let Some(password) = &notify.password {
        builder = builder.credentials(Credentials::new(notify.username.clone(), password.clone()));
    }
    Ok(builder.build())
}

/// The mail for a queued reply. An address that does not parse fails the reply for good.
pub fn build_message(reply: &ClaimedReply, hostname: &str) -> Result<Message, String> {
    let address = reply.sender.parse().map_err(|e| format!("bad sender address {:?}: {e}", reply.sender))?;
    let from = Mailbox::new(Some(super::wording::ASSISTANT_NAME.into()), address);
    let to: Mailbox =
        reply.recipient.parse().map_err(|e| format!("bad recipient address {:?}: {e}", reply.recipient))?;
    let mut builder = Message::builder()
        .message_id(Some(format!("<invited-reply-{}@{hostname}>", reply.id)))
        .from(from)
        .to(to)
        .subject(reply.subject.as_str())
        .header(AutoSubmitted)
        .header(SuppressAutoResponses);
    if let Some(id) = &reply.in_reply_to {
        builder = builder.in_reply_to(id.clone());
    }
    if let Some(refs) = &reply.references {
        builder = builder.references(refs.clone());
    }
    builder
        .multipart(MultiPart::alternative_plain_html(reply.body_text.clone(), reply.body_html.clone()))
        .map_err(|e| format!("cannot build the reply: {e}"))
}

/// Wait after the `attempts`-th failed try: `base × 2^(attempts−1)`, at most `max`.
pub fn backoff(base: TimeDelta, max: TimeDelta, attempts: i64) -> TimeDelta {
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    base.checked_mul(1 << doublings).map_or(max, |d| d.min(max))
}

impl ReplySender {
    pub fn new(config: &Config, store: Arc<dyn Store>) -> Result<ReplySender, SenderError> {
        let notify = &config.notify;
        let secs = |s: u64| TimeDelta::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000));
        Ok(ReplySender {
            transport: transport(notify, &config.server.hostname)?,
            store,
            worker: format!("{}/{}", config.server.hostname, std::process::id()),
            hostname: config.server.hostname.clone(),
            retry_base: secs(notify.retry_base_seconds),
            retry_max: secs(notify.retry_max_seconds),
            poll: Duration::from_secs(notify.poll_seconds),
            lease: secs(notify.timeout_seconds.saturating_mul(10).max(300)),
        })
    }

    /// One pass starting at `now`: claims one due reply, tries it once, and goes on with the
    /// next, up to [`PASS_LIMIT`]. Each claim, `sent_at` and `retry_at` is taken on the clock
    /// `now` started, moved on by the time the pass has run. Returns how many were claimed.
    pub async fn send_due(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let started = std::time::Instant::now();
        let clock = || now + TimeDelta::from_std(started.elapsed()).unwrap_or(TimeDelta::zero());
        let mut claimed = 0;
        while claimed < PASS_LIMIT {
            let Some(reply) = self.store.claim_due_replies(&self.worker, 1, self.lease, clock()).await?.pop() else {
                break;
            };
            claimed += 1;
            self.send_one(&reply, clock).await?;
        }
        Ok(claimed)
    }

    async fn send_one(&self, reply: &ClaimedReply, clock: impl Fn() -> DateTime<Utc>) -> Result<(), StoreError> {
        let message = match build_message(reply, &self.hostname) {
            Ok(m) => m,
            Err(e) => {
                error!(reply_id = reply.id, tenant = %reply.tenant, recipient = %reply.recipient, error_code = "bad_reply", error = %e, "reply_failed");
                crate::metrics::reply_handled("failed");
                self.store.reply_failed(reply.id, &self.worker, &e).await?;
                return Ok(());
            }
        };
        match self.transport.send(message).await {
            Ok(_) => {
                info!(reply_id = reply.id, tenant = %reply.tenant, recipient = %reply.recipient, attempts = reply.attempts, "reply_sent");
                crate::metrics::reply_handled("sent");
                if !self.store.reply_sent(reply.id, &self.worker, clock()).await? {
                    self.lease_lost(reply);
                }
            }
            Err(e) if e.is_permanent() => {
                error!(reply_id = reply.id, tenant = %reply.tenant, recipient = %reply.recipient, attempts = reply.attempts, error_code = "relay_refused", error = %e, "reply_failed");
                crate::metrics::reply_handled("failed");
                if !self.store.reply_failed(reply.id, &self.worker, &e.to_string()).await? {
                    self.lease_lost(reply);
                }
            }
            Err(e) => {
                let retry_at = clock() + backoff(self.retry_base, self.retry_max, reply.attempts);
                warn!(reply_id = reply.id, tenant = %reply.tenant, recipient = %reply.recipient, attempts = reply.attempts, retry_at = %retry_at.to_rfc3339(), error_code = "relay_unavailable", error = %e, "reply_deferred");
                crate::metrics::reply_handled("retrying");
                if !self.store.reply_deferred(reply.id, &self.worker, &e.to_string(), retry_at).await? {
                    self.lease_lost(reply);
                }
            }
        }
        Ok(())
    }

    /// The reply's lease ran out while the relay had it and another daemon may have claimed
    /// it again: the requester may get it twice. Says so; the lease is too short for the relay.
    fn lease_lost(&self, reply: &ClaimedReply) {
        warn!(reply_id = reply.id, tenant = %reply.tenant, recipient = %reply.recipient, attempts = reply.attempts, error_code = "lease_lost", lease_seconds = self.lease.num_seconds(), "reply_lease_lost");
    }

    /// Sends due replies every `poll_seconds` (at once again after a full batch) until shutdown.
    pub async fn run(self, shutdown: CancellationToken) {
        info!(worker = %self.worker, "reply_sender_started");
        loop {
            // A bug met while sending must not stop replies for good: the claimed reply's
            // lease runs out and it is tried again.
            let pass = AssertUnwindSafe(self.send_due(Utc::now())).catch_unwind().await;
            let full = match pass {
                Ok(Ok(n)) => n == PASS_LIMIT,
                Ok(Err(e)) => {
                    warn!(error_code = e.code(), error = %e, "reply_queue_failed");
                    false
                }
                Err(_) => {
                    error!(error_code = "panicked", "reply_sender_panicked");
                    false
                }
            };
            match self.store.replies_waiting().await {
                Ok(waiting) => crate::metrics::reply_queue_length(usize::try_from(waiting).unwrap_or(0)),
                Err(e) => warn!(error_code = e.code(), error = %e, "reply_queue_failed"),
            }
            if full {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
    }
}

/// Starts the reply worker when `[notify]` is enabled.
pub fn spawn(
    config: &Config,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>, SenderError> {
    if !config.notify.enabled {
        return Ok(None);
    }
    let sender = ReplySender::new(config, store)?;
    Ok(Some(tokio::spawn(sender.run(shutdown))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let (base, max) = (TimeDelta::seconds(30), TimeDelta::seconds(300));
        let waits: Vec<i64> = [1, 2, 3, 4, 5, 40].iter().map(|a| backoff(base, max, *a).num_seconds()).collect();
        assert_eq!(waits, vec![30, 60, 120, 240, 300, 300]);
    }
}
