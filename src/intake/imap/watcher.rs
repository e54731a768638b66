//! One task per mailbox. A round: check the lease, list the UIDs above the stored last UID,
//! fetch them in batches, commit each batch together with the new last UID, then flag
//! (`\Seen`) or MOVE the batch, then process its messages. Between rounds the watcher IDLEs
//! (when the server has it) or sleeps, at most `imap.poll_seconds`.
//!
//! A failure drops the connection (and the lease); the watcher connects again after a
//! capped, jittered exponential backoff, or after `imap.auth_retry_seconds` when the server
//! refused the password. A panic is caught and treated as a failure: one mailbox never
//! stops another, nor the SMTP intake.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use async_imap::imap_proto::{MailboxDatum, Response};
use async_imap::types::UnsolicitedResponse;
use chrono::Utc;
use futures_util::{FutureExt, Stream, TryStreamExt};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::config::{ImapConfig, MailboxConfig};
use super::connect::{login, timed, Session};
use super::ImapError;
use crate::config::LiveConfig;
use crate::readiness::{Readiness, Running};
use crate::store::{MailboxLease, MailboxStart, NewMessage, Source, Store};
use crate::{mime, pipeline};

/// A batch is closed once its messages reach this many bytes (a single bigger message is
/// still fetched, alone).
const MAX_BATCH_BYTES: u64 = 16 * 1024 * 1024;

/// Starts one watcher per mailbox of the configuration in force; each ends when `shutdown` is
/// cancelled. The mailboxes and `[imap]` are bound at start-up; each batch of messages is
/// processed with the configuration in force then. Each watcher registers in `readiness` as
/// `imap:<mailbox key>`: ready from its first SELECT while that connection lasts.
pub fn spawn_watchers(
    live: LiveConfig,
    store: Arc<dyn Store>,
    readiness: &Readiness,
    shutdown: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let config = live.current();
    let mut handles = Vec::new();
    for tenant in &config.tenants {
        for mailbox in &tenant.mailboxes {
            let watcher =
                MailboxWatcher::new(live.clone(), store.clone(), readiness.clone(), &tenant.id, mailbox.clone());
            handles.push(tokio::spawn(watcher.run(shutdown.clone())));
        }
    }
    handles
}

/// Watches one mailbox of one tenant.
pub struct MailboxWatcher {
    live: LiveConfig,
    /// `[imap]` as at start-up.
    imap: ImapConfig,
    store: Arc<dyn Store>,
    tenant: String,
    mailbox: MailboxConfig,
    /// `tenant/username@host:port/folder`: the store's key and the logs' `mailbox` field.
    key: String,
    /// The envelope recipient given to the pipeline: the mailbox belongs to this tenant.
    rcpt: String,
    readiness: Readiness,
    /// `imap:<key>`, this mailbox's name in `/readyz`.
    intake: String,
}

/// How a connection ended.
enum Ended {
    Shutdown,
    /// `fetched`: a whole round (listing, fetching, committing, acknowledging) succeeded on
    /// this connection, so the failure is not part of a streak.
    Failed {
        error: ImapError,
        fetched: bool,
    },
}

impl MailboxWatcher {
    pub fn new(
        live: LiveConfig,
        store: Arc<dyn Store>,
        readiness: Readiness,
        tenant: &str,
        mailbox: MailboxConfig,
    ) -> Self {
        let config = live.current();
        let rcpt = config
            .tenants
            .iter()
            .find(|t| t.id == tenant)
            .and_then(|t| t.assistant_addresses.first().cloned())
            .unwrap_or_default();
        let key = mailbox.key(tenant);
        let intake = format!("imap:{key}");
        readiness.expect(&intake, "connecting");
        MailboxWatcher {
            imap: config.imap.clone(),
            live,
            store,
            tenant: tenant.to_string(),
            mailbox,
            key,
            rcpt,
            readiness,
            intake,
        }
    }

    fn imap(&self) -> &ImapConfig {
        &self.imap
    }

    fn limit(&self) -> Duration {
        Duration::from_secs(self.imap().timeout_seconds)
    }

    /// Until `shutdown`: take the lease, watch, and on failure wait and start again.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut failures: u32 = 0;
        let mut waiting_logged = false;
        // While another daemon holds the lease this one is ready: the mailbox is watched.
        let mut standby: Option<Running> = None;
        while !shutdown.is_cancelled() {
            // PostgreSQL's lease opens a connection of its own, outside the pool's timeouts.
            let leased = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = tokio::time::timeout(self.limit(), self.store.try_lease_mailbox(&self.key)) => r,
            };
            let wait = match leased {
                Err(_elapsed) => {
                    warn!(
                        tenant = %self.tenant, mailbox = %self.key, error_code = "timeout",
                        timeout_seconds = self.imap().timeout_seconds, "imap_lease_failed"
                    );
                    failures = failures.saturating_add(1);
                    self.backoff(failures)
                }
                Ok(Ok(None)) => {
                    if !waiting_logged {
                        info!(tenant = %self.tenant, mailbox = %self.key, "imap_mailbox_watched_elsewhere");
                        waiting_logged = true;
                    }
                    standby.get_or_insert_with(|| self.readiness.running(&self.intake));
                    Duration::from_secs(self.imap().lease_retry_seconds)
                }
                Ok(Err(e)) => {
                    warn!(tenant = %self.tenant, mailbox = %self.key, error_code = e.code(), error = %e, "imap_lease_failed");
                    failures = failures.saturating_add(1);
                    self.backoff(failures)
                }
                Ok(Ok(Some(lease))) => {
                    waiting_logged = false;
                    if standby.take().is_some() {
                        self.readiness.expect(&self.intake, "connecting");
                    }
                    info!(tenant = %self.tenant, mailbox = %self.key, "imap_lease_acquired");
                    let ended = AssertUnwindSafe(self.connection(lease, &shutdown)).catch_unwind().await;
                    match ended {
                        Ok(Ended::Shutdown) => break,
                        Ok(Ended::Failed { error, fetched }) => {
                            if fetched {
                                failures = 0;
                            }
                            failures = failures.saturating_add(1);
                            self.failed(&error, failures)
                        }
                        Err(panic) => {
                            let what = panic
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| panic.downcast_ref::<String>().cloned())
                                .unwrap_or_default();
                            error!(tenant = %self.tenant, mailbox = %self.key, panic = %what, "imap_watcher_panicked");
                            // The unwind skipped `connection`'s own reset.
                            crate::metrics::imap_mailbox_connected(&self.key, false);
                            self.readiness.expect(&self.intake, "disconnected: the watcher panicked");
                            failures = failures.saturating_add(1);
                            self.backoff(failures)
                        }
                    }
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        info!(tenant = %self.tenant, mailbox = %self.key, "imap_watcher_stopped");
    }

    /// Logs a failed connection and says how long to wait before the next one.
    fn failed(&self, e: &ImapError, failures: u32) -> Duration {
        let m = &self.mailbox;
        if let ImapError::AuthFailed(text) = e {
            let wait = self.imap().auth_retry_seconds;
            error!(
                tenant = %self.tenant, mailbox = %self.key, host = %m.host, username = %m.username,
                server_said = %text, retry_seconds = wait,
                hint = "the IMAP server refused this username/password: fix the mailbox's password or password_env",
                "imap_login_failed"
            );
            return Duration::from_secs(wait);
        }
        let wait = self.backoff(failures);
        if let ImapError::NoTenant(address) = e {
            error!(
                tenant = %self.tenant, mailbox = %self.key, address = %address,
                retry_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                hint = "a reload removed this tenant or its address; the mailbox is not read until the tenant and address are back, or restart to apply the change",
                "imap_mailbox_paused"
            );
            return wait;
        }
        warn!(
            tenant = %self.tenant, mailbox = %self.key, error_code = e.code(), error = %e,
            retry_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), "imap_connection_failed"
        );
        wait
    }

    /// Capped exponential backoff with jitter: a random time in [d/2, d], d doubling per failure.
    fn backoff(&self, failures: u32) -> Duration {
        let base = self.imap().backoff_base_seconds.saturating_mul(1000);
        let max = self.imap().backoff_max_seconds.saturating_mul(1000);
        let exp = failures.saturating_sub(1).min(32);
        let d = base.saturating_mul(1u64 << exp).min(max).max(1);
        let random = RandomState::new().build_hasher().finish();
        Duration::from_millis(d / 2 + random % (d / 2 + 1))
    }

    /// One connection, holding the lease: until shutdown or the first failure.
    async fn connection(&self, mut lease: Box<dyn MailboxLease>, shutdown: &CancellationToken) -> Ended {
        let mut selected = false;
        let mut fetched = false;
        let mut session = None;
        let result = self.watch(&mut lease, &mut session, &mut selected, &mut fetched, shutdown).await;
        if selected {
            crate::metrics::imap_mailbox_connected(&self.key, false);
        }
        if let Some(mut s) = session {
            // Best effort: a polite LOGOUT, not waited for long.
            let _ = tokio::time::timeout(Duration::from_secs(2), s.logout()).await;
        }
        lease.release().await;
        if let Err(e) = &result {
            self.readiness.expect(&self.intake, &format!("disconnected: {}", e.code()));
        }
        match result {
            Ok(()) => Ended::Shutdown,
            // A mailbox with no tenant stays paused, backing off further each time.
            Err(error) => Ended::Failed { fetched: fetched && !matches!(error, ImapError::NoTenant(_)), error },
        }
    }

    async fn watch(
        &self,
        lease: &mut Box<dyn MailboxLease>,
        slot: &mut Option<Session>,
        selected: &mut bool,
        fetched: &mut bool,
        shutdown: &CancellationToken,
    ) -> Result<(), ImapError> {
        let limit = self.limit();
        let m = &self.mailbox;
        let mut session = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            s = login(m, limit) => s?,
        };
        let caps = timed(limit, "CAPABILITY", session.capabilities()).await?;
        let can_idle = caps.has_str("IDLE");
        if let Some(target) = m.move_to() {
            if !caps.has_str("MOVE") {
                return Err(ImapError::Protocol(format!(
                    "the server does not support MOVE, needed for processed_folder {target:?}; \
                     leave processed_folder empty to flag messages \\Seen instead"
                )));
            }
            // An existing folder answers NO here, which is fine.
            match timed(limit, "CREATE", session.create(target)).await {
                Ok(()) => info!(tenant = %self.tenant, mailbox = %self.key, folder = target, "imap_folder_created"),
                Err(ImapError::Protocol(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let selected_box = timed(limit, "SELECT", session.select(&m.folder)).await?;
        let uid_validity = selected_box
            .uid_validity
            .ok_or_else(|| ImapError::Protocol(format!("SELECT {:?} gave no UIDVALIDITY", m.folder)))?;
        let mut last_uid = match self.store.start_mailbox(&self.key, uid_validity, Utc::now()).await? {
            MailboxStart::New => 0,
            MailboxStart::Continue { last_uid } => last_uid,
            MailboxStart::Reset { old_uid_validity } => {
                warn!(
                    tenant = %self.tenant, mailbox = %self.key, old_uid_validity, uid_validity,
                    "imap_uidvalidity_changed"
                );
                0
            }
        };
        *selected = true;
        crate::metrics::imap_mailbox_connected(&self.key, true);
        // Dropped when this connection ends, however it ends.
        let _ready = self.readiness.running(&self.intake);
        info!(
            tenant = %self.tenant, mailbox = %self.key, tls = ?m.tls, idle = can_idle, uid_validity, last_uid,
            exists = selected_box.exists, "imap_connected"
        );
        // Messages committed before a crash but not yet flagged or moved.
        if last_uid > 0 {
            self.acknowledge(&mut session, &format!("1:{last_uid}")).await?;
        }
        let poll = Duration::from_secs(self.imap().poll_seconds);
        let mut count = MessageCount(selected_box.exists);
        loop {
            timed(limit, "lease check", lease.check()).await.map_err(|e| match e {
                ImapError::Store(e) => ImapError::LeaseLost(e),
                other => other,
            })?;
            let more;
            (last_uid, more) = self.fetch_new(&mut session, uid_validity, last_uid, &mut count, shutdown).await?;
            *fetched = true;
            if shutdown.is_cancelled() {
                *slot = Some(session);
                return Ok(());
            }
            if more {
                // Mail arrived during the round: another round at once.
                continue;
            }
            if can_idle {
                let (s, stop) = self.idle(session, poll, &mut count, shutdown).await?;
                session = s;
                if stop {
                    *slot = Some(session);
                    return Ok(());
                }
            } else {
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        *slot = Some(session);
                        return Ok(());
                    }
                    _ = tokio::time::sleep(poll) => {}
                }
            }
        }
    }

    /// IDLE until the server reports something, `poll` passes, or shutdown; true for shutdown.
    async fn idle(
        &self,
        session: Session,
        poll: Duration,
        count: &mut MessageCount,
        shutdown: &CancellationToken,
    ) -> Result<(Session, bool), ImapError> {
        let limit = self.limit();
        // New mail the server announced during the round's last commands, or while IDLE was
        // starting, comes as an unsolicited response, not as IDLE's wake-up.
        let unsolicited = session.unsolicited_responses.clone();
        let mut handle = session.idle();
        timed(limit, "IDLE", handle.init()).await?;
        let stop = if count.drain(&unsolicited) {
            false
        } else {
            let (wait, _interrupt) = handle.wait_with_timeout(poll);
            tokio::select! {
                _ = shutdown.cancelled() => true,
                r = wait => {
                    match r? {
                        IdleResponse::NewData(data) => {
                            debug!(mailbox = %self.key, response = ?data.parsed(), "imap_idle_woken");
                            if let Response::MailboxData(MailboxDatum::Exists(n)) = data.parsed() {
                                count.0 = *n;
                            }
                        }
                        IdleResponse::Timeout => {}
                        IdleResponse::ManualInterrupt => return Err(ImapError::Closed("during IDLE")),
                    }
                    false
                }
            }
        };
        let session = timed(limit, "DONE", handle.done()).await?;
        Ok((session, stop))
    }

    /// Takes in every message above `last_uid`, batch by batch; returns the new last UID and
    /// whether the server announced more mail meanwhile.
    async fn fetch_new(
        &self,
        session: &mut Session,
        uid_validity: u32,
        mut last_uid: u32,
        count: &mut MessageCount,
        shutdown: &CancellationToken,
    ) -> Result<(u32, bool), ImapError> {
        let limit = self.limit();
        // What was announced before this listing is in it.
        count.drain(&session.unsolicited_responses);
        let mut more = false;
        let from = last_uid.saturating_add(1);
        let listed: Vec<(u32, u64)> = {
            let fetches = timed(
                limit,
                "UID FETCH (sizes)",
                session.uid_fetch(format!("{from}:*"), "(UID RFC822.SIZE INTERNALDATE)"),
            )
            .await?;
            let fetches = each_within(limit, "UID FETCH (sizes)", fetches).await?;
            // `N:*` also matches the highest UID when it is below N (RFC 3501 §6.4.8).
            let mut listed: Vec<(u32, u64)> = fetches
                .iter()
                .filter_map(|f| Some((f.uid?, u64::from(f.size.unwrap_or(0)))))
                .filter(|(uid, _)| *uid > last_uid)
                .collect();
            listed.sort_unstable();
            listed.dedup_by_key(|(uid, _)| *uid);
            let oldest =
                fetches.iter().filter(|f| f.uid.is_some_and(|u| u > last_uid)).filter_map(|f| f.internal_date()).min();
            let lag = oldest.and_then(|t| (Utc::now() - t.with_timezone(&Utc)).to_std().ok()).unwrap_or_default();
            crate::metrics::imap_mailbox_lag(&self.key, lag);
            listed
        };
        let max_bytes = self.live.current().limits.max_message_bytes as u64;
        let mut rest = listed.as_slice();
        while !rest.is_empty() && !shutdown.is_cancelled() {
            let mut n = 0;
            let mut bytes = 0u64;
            while n < rest.len() && n < self.imap().fetch_batch && (n == 0 || bytes + rest[n].1 <= MAX_BATCH_BYTES) {
                bytes += rest[n].1.min(max_bytes);
                n += 1;
            }
            let (batch, tail) = rest.split_at(n);
            rest = tail;
            let complete;
            (last_uid, complete) = self.take_batch(session, uid_validity, batch).await?;
            // Drained after each batch: the library keeps at most 100 unsolicited responses.
            more |= count.drain(&session.unsolicited_responses);
            if !complete {
                // A message the server kept back is asked for again next round, not skipped.
                break;
            }
        }
        more |= count.drain(&session.unsolicited_responses);
        if !shutdown.is_cancelled() {
            crate::metrics::imap_mailbox_lag(&self.key, Duration::ZERO);
        }
        Ok((last_uid, more))
    }

    /// Fetches one batch, commits it with the batch's highest UID, acknowledges it to the
    /// server, then processes what was new. Returns the UID committed as the last one, and
    /// false when the server kept back a message it still has: the UID committed then stops
    /// just before it.
    async fn take_batch(
        &self,
        session: &mut Session,
        uid_validity: u32,
        batch: &[(u32, u64)],
    ) -> Result<(u32, bool), ImapError> {
        let limit = self.limit();
        let config = self.live.current();
        // The batch is processed under this configuration: its mail must reach this tenant.
        if config.tenant_for_address(&self.rcpt).map(|t| t.id.as_str()) != Some(self.tenant.as_str()) {
            return Err(ImapError::NoTenant(self.rcpt.clone()));
        }
        let max_bytes = config.limits.max_message_bytes as u64;
        let mut wanted = Vec::new();
        // Stored or refused: what the server may forget once the batch is committed.
        let mut done = Vec::new();
        for (uid, size) in batch {
            if *size > max_bytes {
                self.too_large(*uid, *size, max_bytes);
                done.push(*uid);
            } else {
                wanted.push(*uid);
            }
        }
        let mut bodies: Vec<(u32, Vec<u8>)> = Vec::new();
        let mut kept_back = Vec::new();
        if !wanted.is_empty() {
            let set = uid_set(&wanted);
            let fetches = timed(limit, "UID FETCH (bodies)", session.uid_fetch(&set, "(UID BODY.PEEK[])")).await?;
            let fetches = each_within(limit, "UID FETCH (bodies)", fetches).await?;
            for f in &fetches {
                let (Some(uid), Some(body)) = (f.uid, f.body()) else { continue };
                if !wanted.contains(&uid) || done.contains(&uid) {
                    continue;
                }
                // RFC822.SIZE said it fit; the body says otherwise.
                if body.len() as u64 > max_bytes {
                    self.too_large(uid, body.len() as u64, max_bytes);
                } else {
                    bodies.push((uid, body.to_vec()));
                }
                done.push(uid);
            }
            let missing: Vec<u32> = wanted.iter().copied().filter(|uid| !done.contains(uid)).collect();
            if !missing.is_empty() {
                // Expunged meanwhile, or kept back by the server: ask which.
                let fetches =
                    timed(limit, "UID FETCH (missing)", session.uid_fetch(uid_set(&missing), "(UID)")).await?;
                let present: Vec<u32> =
                    each_within(limit, "UID FETCH (missing)", fetches).await?.iter().filter_map(|f| f.uid).collect();
                for uid in missing {
                    if present.contains(&uid) {
                        warn!(tenant = %self.tenant, mailbox = %self.key, uid, "imap_message_not_sent");
                        crate::metrics::message_received("imap", "not_sent");
                        kept_back.push(uid);
                    } else {
                        info!(tenant = %self.tenant, mailbox = %self.key, uid, "imap_message_expunged");
                    }
                }
            }
        }
        let (up_to, complete) = batch_end(batch, &kept_back);
        let now = Utc::now();
        let messages: Vec<NewMessage> = bodies
            .iter()
            .map(|(_, raw)| NewMessage {
                sha256: content_key(&self.key, raw),
                message_id: mime::message_id(raw),
                raw: raw.clone(),
                source: Source::Imap,
                envelope_from: None,
                envelope_rcpts: vec![self.rcpt.clone()],
                received_at: now,
            })
            .collect();
        let spooled = self.store.spool_from_mailbox(&self.key, uid_validity, up_to, &messages).await?;
        // Committed: only now may the server forget the messages.
        if !done.is_empty() {
            self.acknowledge(session, &uid_set(&done)).await?;
        }
        for (((uid, _), message), spooled) in bodies.iter().zip(&messages).zip(&spooled) {
            info!(
                message_id = spooled.id,
                header_message_id = message.message_id.as_deref().unwrap_or(""),
                size = message.raw.len(),
                source = Source::Imap.as_str(),
                duplicate = !spooled.inserted,
                tenant = %self.tenant,
                mailbox = %self.key,
                uid,
                "message_received"
            );
            crate::metrics::message_received("imap", if spooled.inserted { "accepted" } else { "duplicate" });
        }
        for spooled in spooled.iter().filter(|s| s.inserted) {
            // process_message logs and records its own outcome; a failure leaves the message
            // for `serve`'s resume loop or `invited reprocess`.
            let _ = pipeline::process_message(self.store.as_ref(), &config, spooled.id, Utc::now()).await;
        }
        Ok((up_to, complete))
    }

    fn too_large(&self, uid: u32, size: u64, max_bytes: u64) {
        warn!(tenant = %self.tenant, mailbox = %self.key, uid, size, limit = max_bytes, "imap_message_too_large");
        crate::metrics::message_received("imap", "refused");
    }

    /// Tells the server that the messages of `set` are stored: MOVE them to the processed
    /// folder, or flag them `\Seen`.
    async fn acknowledge(&self, session: &mut Session, set: &str) -> Result<(), ImapError> {
        let limit = self.limit();
        match self.mailbox.move_to() {
            Some(target) => timed(limit, "UID MOVE", session.uid_mv(set, target)).await?,
            None => {
                let updates = timed(limit, "UID STORE", session.uid_store(set, "+FLAGS.SILENT (\\Seen)")).await?;
                let _: Vec<_> = timed(limit, "UID STORE", updates.try_collect()).await?;
            }
        }
        debug!(mailbox = %self.key, uids = set, "imap_acknowledged");
        Ok(())
    }
}

/// The last UID a batch may commit, and whether that is the whole batch: just before the
/// first message the server kept back (it is asked for again next round), else the batch's
/// highest UID.
fn batch_end(batch: &[(u32, u64)], kept_back: &[u32]) -> (u32, bool) {
    match kept_back.iter().min() {
        Some(first) => (first.saturating_sub(1), false),
        None => (batch.iter().map(|(uid, _)| *uid).max().unwrap_or(0), true),
    }
}

/// Collects a command's responses, each within `limit` of the one before: a batch of up to
/// 16 MiB need not arrive within one `timeout_seconds`, a stalled server is still noticed.
async fn each_within<T>(
    limit: Duration,
    step: &'static str,
    stream: impl Stream<Item = Result<T, async_imap::error::Error>>,
) -> Result<Vec<T>, ImapError> {
    let mut stream = std::pin::pin!(stream);
    let mut all = Vec::new();
    while let Some(item) = timed(limit, step, stream.try_next()).await? {
        all.push(item);
    }
    Ok(all)
}

/// The store's deduplication key (`messages.sha256`) for a message read from `mailbox`: the
/// SHA-256 of the mailbox key, a 0x1F separator, and the bytes. IMAP copies carry no header
/// of ours, so the same mail in two tenants' mailboxes has the same bytes; hashing the bytes
/// alone would keep it for the first tenant only. Per mailbox it is stable, so a folder read
/// again (UIDVALIDITY reset, a crash before the acknowledgement) is still recognised.
pub fn content_key(mailbox: &str, raw: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(mailbox.as_bytes());
    hash.update([0x1f]);
    hash.update(raw);
    hex::encode(hash.finalize())
}

/// The folder's message count as the server last announced it (SELECT, then EXISTS and
/// EXPUNGE). Only a count above it is new mail: a server repeats EXISTS and RECENT freely
/// (`* 0 RECENT`, the same EXISTS after a STORE), and taking those for mail would start
/// round after round with no pause.
struct MessageCount(u32);

impl MessageCount {
    /// Empties the session's unsolicited responses (EXISTS, EXPUNGE… sent beside command
    /// replies); true when one announced more messages than known.
    fn drain(&mut self, unsolicited: &async_channel::Receiver<UnsolicitedResponse>) -> bool {
        let mut announced = false;
        while let Ok(response) = unsolicited.try_recv() {
            match response {
                UnsolicitedResponse::Exists(n) => {
                    announced |= n > self.0;
                    self.0 = n;
                }
                UnsolicitedResponse::Expunge(_) => self.0 = self.0.saturating_sub(1),
                _ => {}
            }
        }
        announced
    }
}

/// `1,3:5,9` from sorted or unsorted UIDs.
fn uid_set(uids: &[u32]) -> String {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}:{end}") });
        i += 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::{stream, StreamExt};

    use super::{batch_end, content_key, each_within, uid_set, MessageCount};
    use crate::intake::imap::ImapError;
    use async_imap::types::UnsolicitedResponse;

    #[test]
    fn the_same_mail_in_two_mailboxes_is_two_messages_and_stays_one_per_mailbox() {
        let raw = b"Subject: the same invite\r\n\r\nbody";
        let acme = content_key("acme/a@imap.example:993/INBOX", raw);
        let globex = content_key("globex/g@imap.example:993/INBOX", raw);
        assert_ne!(acme, globex);
        assert_eq!(acme, content_key("acme/a@imap.example:993/INBOX", raw), "stable across readings");
        assert_ne!(acme, content_key("acme/a@imap.example:993/INBOX", b"Subject: another\r\n\r\nbody"));
        assert_eq!(acme.len(), 64);
    }

    /// Each response has its own deadline: a slow but steady batch is fetched whole, a stall
    /// is a timeout.
    #[tokio::test]
    async fn a_fetch_deadline_is_per_response() {
        let steady = stream::iter(1..=5).then(|n| async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, async_imap::error::Error>(n)
        });
        let all = each_within(Duration::from_secs(1), "UID FETCH (bodies)", steady).await.expect("steady");
        assert_eq!(all, [1, 2, 3, 4, 5], "1.5 s in all, under 1 s each");
        let stalled = stream::iter(1..=2).then(|n| async move {
            tokio::time::sleep(Duration::from_millis(if n == 2 { 3000 } else { 100 })).await;
            Ok::<_, async_imap::error::Error>(n)
        });
        let err = each_within(Duration::from_secs(1), "UID FETCH (bodies)", stalled).await.expect_err("stalled");
        assert!(matches!(err, ImapError::Timeout("UID FETCH (bodies)")), "{err}");
    }

    #[test]
    fn a_batch_commits_up_to_the_first_message_kept_back() {
        let batch = [(11, 100), (12, 100), (15, 100), (16, 100)];
        assert_eq!(batch_end(&batch, &[]), (16, true), "all taken in or gone");
        assert_eq!(batch_end(&batch, &[16, 12]), (11, false), "12 and 16 are asked for again");
        assert_eq!(batch_end(&batch[..1], &[11]), (10, false));
    }

    #[test]
    fn only_a_higher_exists_count_is_new_mail() {
        let (tx, rx) = async_channel::unbounded();
        let mut count = MessageCount(3);
        let send = |r: UnsolicitedResponse| tx.try_send(r).expect("send");
        send(UnsolicitedResponse::Recent(0));
        send(UnsolicitedResponse::Recent(2));
        send(UnsolicitedResponse::Exists(3));
        assert!(!count.drain(&rx), "RECENT and an unchanged EXISTS are not new mail");
        assert!(!count.drain(&rx), "nothing left");
        send(UnsolicitedResponse::Exists(4));
        assert!(count.drain(&rx));
        assert!(!count.drain(&rx));
        // Three moved away, then one arrives: 4 - 3 + 1 = 2 is still more than known.
        for n in [1, 1, 1] {
            send(UnsolicitedResponse::Expunge(n));
        }
        assert!(!count.drain(&rx));
        send(UnsolicitedResponse::Exists(2));
        assert!(count.drain(&rx));
        send(UnsolicitedResponse::Exists(1));
        assert!(!count.drain(&rx), "fewer messages is not new mail");
    }

    #[test]
    fn uid_sets_are_ranges() {
        assert_eq!(uid_set(&[5, 1, 2, 3, 9, 10, 12]), "1:3,5,9:10,12");
        assert_eq!(uid_set(&[7]), "7");
        assert_eq!(uid_set(&[4, 4]), "4");
    }
}
