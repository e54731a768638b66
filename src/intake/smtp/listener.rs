//! Accepts connections on `server.smtp_listen`: at most `smtp.max_sessions` at once and
//! `smtp.max_sessions_per_ip` per client address, one task per session.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use super::session::{process_spooled, run_session, Intake, ToProcess};
use super::{tls, SmtpError};
use crate::config::LiveConfig;
use crate::store::Store;

/// Pipeline workers for messages accepted over SMTP (SQLite has one writer anyway).
const PROCESSING_WORKERS: usize = 2;

/// The bound SMTP listener, ready to [`run`](SmtpServer::run).
pub struct SmtpServer {
    listener: TcpListener,
    intake: Arc<Intake>,
    /// Spooled message ids, for the processing workers started by `run`.
    queue: mpsc::Receiver<ToProcess>,
    /// One permit per session: the global limit.
    sessions: Arc<Semaphore>,
    /// Sessions per client IP.
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// Sessions and workers, waited for on shutdown.
    tracker: TaskTracker,
}

impl SmtpServer {
    /// Binds `server.smtp_listen` and loads the TLS certificate, if configured.
    /// Listen address, TLS files and `smtp.max_sessions` are read here, once.
    pub async fn bind(
        config: impl Into<LiveConfig>,
        store: Arc<dyn Store>,
        shutdown: CancellationToken,
    ) -> Result<SmtpServer, SmtpError> {
        let live = config.into();
        let config = live.current();
        let tls = match (&config.server.tls_cert, &config.server.tls_key) {
            (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
            _ => None,
        };
        let addr = config.server.smtp_listen.clone();
        let listener = TcpListener::bind(&addr).await.map_err(|source| SmtpError::Bind { addr, source })?;
        let sessions = Arc::new(Semaphore::new(config.smtp.max_sessions));
        let (intake, queue) = Intake::new(live, store, tls, shutdown);
        Ok(SmtpServer {
            listener,
            intake,
            queue,
            sessions,
            per_ip: Arc::new(Mutex::new(HashMap::new())),
            tracker: TaskTracker::new(),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts until shutdown, then waits for the sessions (a DATA in flight has
    /// `smtp.shutdown_grace_seconds`).
    pub async fn run(self) {
        let SmtpServer { listener, intake, queue, sessions, per_ip, tracker } = self;
        let local = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        info!(smtp_listen = %local, starttls = intake.tls.is_some(), "smtp_listening");
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        for _ in 0..PROCESSING_WORKERS {
            tracker.spawn(process_spooled(intake.clone(), queue.clone()));
        }
        loop {
            let (socket, peer) = tokio::select! {
                _ = intake.shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        warn!(error = %e, "smtp_accept_failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = socket.set_nodelay(true);
            let Ok(permit) = sessions.clone().try_acquire_owned() else {
                tracker.spawn(refuse_at_connect(
                    socket,
                    peer,
                    "Too many connections, try again later",
                    "too_many_sessions",
                ));
                continue;
            };
            let max_per_ip = intake.config.current().smtp.max_sessions_per_ip;
            let Some(slot) = IpSlot::take(&per_ip, peer.ip(), max_per_ip) else {
                tracker.spawn(refuse_at_connect(
                    socket,
                    peer,
                    "Too many connections from your address, try again later",
                    "too_many_sessions_per_ip",
                ));
                continue;
            };
            let intake = intake.clone();
            tracker.spawn(async move {
                let _permit = permit;
                let _slot = slot;
                // Its own task, so that a panic ends this session only.
                let session = tokio::spawn(run_session(intake, Box::new(socket), peer));
                if let Err(e) = session.await {
                    if e.is_panic() {
                        error!(peer = %peer, reason = "session_panicked", "smtp_session_ended");
                    }
                }
            });
        }
        drop(listener);
        tracker.close();
        let grace = Duration::from_secs(intake.config.current().smtp.shutdown_grace_seconds) + Duration::from_secs(5);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            warn!("smtp_sessions_abandoned");
        }
        // Sessions are done: commit and answer what is still queued, then stop the writer.
        intake.spooler.stop().await;
        info!("smtp_stopped");
    }
}

/// `421 4.7.0` to a connection over a limit, then close it.
async fn refuse_at_connect(mut socket: TcpStream, peer: SocketAddr, text: &str, reason: &'static str) {
    info!(peer = %peer, reason, code = 421, "smtp_refused");
    crate::metrics::smtp_reply(421);
    let reply = format!("421 4.7.0 {text}\r\n");
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = socket.write_all(reply.as_bytes()).await;
        let _ = socket.shutdown().await;
    })
    .await;
}

/// One session's place in the per-IP count, given back on drop.
struct IpSlot {
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl IpSlot {
    fn take(per_ip: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut counts = per_ip.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(IpSlot { per_ip: per_ip.clone(), ip })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.per_ip.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}
