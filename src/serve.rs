//! `invited serve`: the daemon. Resumes messages left half-done, runs the scheduler loop,
//! the SMTP intake, one IMAP watcher per mailbox and the HTTP endpoint; SIGHUP reloads the
//! configuration, SIGINT and SIGTERM stop it gracefully (style.md, "Shutdown").

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::{Config, LiveConfig};
use crate::pipeline;
use crate::readiness::Readiness;
use crate::store::Store;

/// Runs until SIGINT/SIGTERM. `config_path` is read again on SIGHUP.
pub async fn run(config: Arc<Config>, config_path: PathBuf, store: Arc<dyn Store>) -> anyhow::Result<()> {
    // Before anything listens: a SIGHUP that arrives early must reload, not kill the process.
    let mut signals = Signals::install().context("cannot install signal handlers")?;
    let live = LiveConfig::from(config.clone());
    let shutdown = CancellationToken::new();
    let readiness = Readiness::new();
    readiness.expect("smtp", "starting");
    let listener = TcpListener::bind(&config.server.http_listen)
        .await
        .with_context(|| format!("cannot listen on server.http_listen = {}", config.server.http_listen))?;
    info!(http_listen = %listener.local_addr()?, store = %crate::config::mask_url(&config.store.url), tenants = config.tenants.len(), "daemon_started");

    let http = {
        let token = shutdown.clone();
        let ops =
            crate::http::Ops { store: store.clone(), readiness: readiness.clone(), metrics: crate::metrics::install() };
        let app = crate::http::router(store.clone(), &config.recorders).merge(crate::http::ops_router(ops));
        tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(token.cancelled_owned()).await })
    };
    let scheduler = tokio::spawn(scheduler_loop(live.clone(), store.clone(), shutdown.clone()));
    let replies = crate::notify::sender::spawn(&config, store.clone(), shutdown.clone())?;
    let smtp = crate::intake::smtp::SmtpServer::bind(live.clone(), store.clone(), shutdown.clone()).await?;
    let smtp = {
        let readiness = readiness.clone();
        tokio::spawn(async move {
            let _running = readiness.running("smtp");
            smtp.run().await
        })
    };
    let imap = crate::intake::imap::spawn_watchers(live.clone(), store.clone(), &readiness, shutdown.clone());

    loop {
        match signals.next().await {
            Signal::Reload => reload(&live, &config_path),
            Signal::Stop(signal) => {
                info!(signal, "shutdown_requested");
                break;
            }
        }
    }
    shutdown.cancel();
    // The SMTP server waits for a DATA in flight (smtp.shutdown_grace_seconds) on its own.
    let _ = smtp.await;
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let _ = scheduler.await;
        let _ = http.await;
        if let Some(replies) = replies {
            let _ = replies.await;
        }
        for watcher in imap {
            let _ = watcher.await;
        }
    })
    .await;
    info!("daemon_stopped");
    Ok(())
}

/// SIGHUP: reads the file again. An invalid file changes nothing; keys bound at start-up
/// keep their running values and each gets a WARN.
fn reload(live: &LiveConfig, path: &Path) {
    match Config::load(path) {
        Ok(new) => {
            let tenants = new.tenants.len();
            for key in live.replace(new) {
                warn!(key, reason = "restart_needed", "config_key_not_reloaded");
            }
            crate::metrics::config_reload("applied");
            info!(path = %path.display(), tenants, "config_reloaded");
        }
        Err(e) => {
            crate::metrics::config_reload("refused");
            error!(path = %path.display(), error = %e, reason = "invalid_config", "config_reload_failed");
        }
    }
}

/// Each tick, the periodic work. Each tick uses the configuration current at its start,
/// `tick_seconds` included.
async fn scheduler_loop(config: LiveConfig, store: Arc<dyn Store>, shutdown: CancellationToken) {
    loop {
        let config = config.current();
        periodic_work(&config, store.as_ref(), Utc::now()).await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(config.scheduling.tick_seconds.max(1))) => {}
        }
    }
}

/// Process messages that were spooled but not finished (a crash, a busy store), then plan
/// again what time alone changes (occurrences coming inside the horizon), then mark missed
/// bot joins. Daemons sharing a store do this one at a time: the others skip the tick. The
/// unfinished messages are every daemon's (a message does not remember who received it, and
/// those of a daemon that died must still be done), so resuming is shared work too.
pub async fn periodic_work(config: &Config, store: &dyn Store, now: DateTime<Utc>) {
    let lease = match store.lead_periodic_work().await {
        Ok(Some(lease)) => lease,
        Ok(None) => {
            debug!("periodic_work_skipped");
            return;
        }
        Err(e) => {
            warn!(error_code = e.code(), error = %e, "periodic_work_failed");
            return;
        }
    };
    resume_unfinished(config, store, now).await;
    if let Err(e) = pipeline::replan(store, config, now).await {
        warn!(error_code = e.code(), error = %e, "replan_failed");
    }
    expire_missed(store, now).await;
    lease.release().await;
}

async fn resume_unfinished(config: &Config, store: &dyn Store, now: DateTime<Utc>) {
    let ids = match store.unfinished_messages(false).await {
        Ok(ids) => ids,
        Err(e) => {
            warn!(error_code = e.code(), error = %e, "resume_failed");
            return;
        }
    };
    for id in ids {
        info!(message_id = id, "message_resumed");
        // process_message logs and records its own failures; a struggling store is retried
        // with the rest of the messages on the next tick.
        if pipeline::process_message(store, config, id, now).await.is_err_and(|e| e.is_store_unavailable()) {
            return;
        }
    }
}

/// Bot joins whose meeting ended before any recorder ran them will never run: `failed`.
async fn expire_missed(store: &dyn Store, now: DateTime<Utc>) {
    match store.expire_missed(now).await {
        Ok(ids) => {
            for id in ids {
                warn!(job_id = id, "job_missed");
                crate::metrics::job_changed("bot_join", "missed");
            }
        }
        Err(e) => warn!(error_code = e.code(), error = %e, "expire_missed_failed"),
    }
}

/// What a signal asks the daemon to do.
enum Signal {
    Reload,
    /// Stop gracefully; the signal's name, for the log.
    Stop(&'static str),
}

/// The signals `serve` listens to, installed once at start.
struct Signals {
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals { hangup: signal(SignalKind::hangup())?, terminate: signal(SignalKind::terminate())? })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => Signal::Stop("SIGINT"),
                _ = self.terminate.recv() => Signal::Stop("SIGTERM"),
                _ = self.hangup.recv() => Signal::Reload,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Stop("SIGINT")
        }
    }
}
