//! `invited serve`: the daemon. Resumes messages left half-done, runs the scheduler loop
//! and the HTTP endpoint until SIGINT/SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{Config, LiveConfig};
use crate::pipeline;
use crate::store::Store;

pub async fn run(config: Arc<Config>, store: Arc<dyn Store>) -> anyhow::Result<()> {
    let live = LiveConfig::from(config.clone());
    let shutdown = CancellationToken::new();
    let listener = TcpListener::bind(&config.server.http_listen)
        .await
        .with_context(|| format!("cannot listen on server.http_listen = {}", config.server.http_listen))?;
    info!(http_listen = %listener.local_addr()?, store = %config.store.url, tenants = config.tenants.len(), "daemon_started");

    let http = {
        let token = shutdown.clone();
        let app = crate::http::router(store.clone(), &config.recorders);
        tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(token.cancelled_owned()).await })
    };
    let scheduler = tokio::spawn(scheduler_loop(live.clone(), store.clone(), shutdown.clone()));
    let replies = crate::notify::sender::spawn(&config, store.clone(), shutdown.clone())?;
    let smtp = crate::intake::smtp::SmtpServer::bind(live.clone(), store.clone(), shutdown.clone()).await?;
    let smtp = tokio::spawn(smtp.run());

    wait_for_signal().await;
    info!("shutdown_requested");
    shutdown.cancel();
    // The SMTP server waits for a DATA in flight (smtp.shutdown_grace_seconds) on its own.
    let _ = smtp.await;
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let _ = scheduler.await;
        let _ = http.await;
        if let Some(replies) = replies {
            let _ = replies.await;
        }
    })
    .await;
    info!("daemon_stopped");
    Ok(())
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
        if pipeline::process_message(store, config, id, now).await.is_err_and(|e| e.is_transient()) {
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
            }
        }
        Err(e) => warn!(error_code = e.code(), error = %e, "expire_missed_failed"),
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
