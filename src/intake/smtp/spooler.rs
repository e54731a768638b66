//! Group commit: sessions hand their message to one writer task, which commits whatever has
//! queued up meanwhile (up to [`MAX_BATCH_MESSAGES`] or [`MAX_BATCH_BYTES`]) in one
//! transaction, one fsync, and answers each session. There is no waiting for a batch to
//! fill: messages that arrive while a commit runs make up the next one, so a lone message
//! is committed at once and a busy server pays one fsync for many messages.
//!
//! A session still replies `250` only after its own message is committed; when a commit
//! fails, every message of that batch gets the error (none of them is stored).

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error};

use crate::store::{NewMessage, Spooled, Store, StoreError};

/// At most this many messages per commit.
pub const MAX_BATCH_MESSAGES: usize = 64;
/// A batch is closed once its messages reach this many bytes (a single bigger message is
/// still committed, alone).
pub const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Messages waiting for the writer. Each session waits for its reply before sending more, so
/// this only bounds a burst of sessions.
const QUEUE: usize = 1024;

/// Why a message was not spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The commit of the message's batch failed (shared by the batch).
    #[error(transparent)]
    Store(Arc<StoreError>),
    /// The commit of the message's batch panicked (nothing of the batch is stored).
    #[error("the spool commit panicked")]
    Panicked,
    /// The writer has stopped (shutdown).
    #[error("the spool writer is not running")]
    Stopped,
}

impl SpoolError {
    /// Stable code for logs.
    pub fn code(&self) -> &'static str {
        match self {
            SpoolError::Store(e) => e.code(),
            SpoolError::Panicked => "spooler_panicked",
            SpoolError::Stopped => "spooler_stopped",
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            SpoolError::Store(e) => e.is_transient(),
            SpoolError::Panicked => false,
            SpoolError::Stopped => true,
        }
    }
}

type Reply = oneshot::Sender<Result<Spooled, SpoolError>>;

/// The sessions' handle on the writer task; cheap to share.
pub struct Spooler {
    requests: mpsc::Sender<(NewMessage, Reply)>,
    /// Cancelled by [`stop`](Spooler::stop): the writer drains what it holds and ends.
    stop: CancellationToken,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Spooler {
    /// Starts the writer task (on the current tokio runtime). It also ends by itself once the
    /// `Spooler` is dropped and its queue is empty.
    pub fn start(store: Arc<dyn Store>) -> Spooler {
        let (requests, queue) = mpsc::channel(QUEUE);
        let stop = CancellationToken::new();
        let writer = tokio::spawn(write_batches(store, queue, stop.clone()));
        Spooler { requests, stop, writer: Mutex::new(Some(writer)) }
    }

    /// Commits `message` (with whatever other messages are queued) and returns its id.
    pub async fn spool(&self, message: NewMessage) -> Result<Spooled, SpoolError> {
        let (reply, answer) = oneshot::channel();
        self.requests.send((message, reply)).await.map_err(|_| SpoolError::Stopped)?;
        // The writer answers every message it takes; a dropped reply means it is gone.
        answer.await.unwrap_or(Err(SpoolError::Stopped))
    }

    /// Stops taking messages, commits and answers those already queued, and waits for the
    /// writer to end. Messages spooled afterwards get [`SpoolError::Stopped`].
    pub async fn stop(&self) {
        self.stop.cancel();
        let writer = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(writer) = writer {
            if let Err(e) = writer.await {
                error!(error = %e, "spooler_writer_failed");
            }
        }
    }
}

/// The writer: one batch at a time until stopped (then drained) or until every sender is gone.
async fn write_batches(store: Arc<dyn Store>, mut queue: mpsc::Receiver<(NewMessage, Reply)>, stop: CancellationToken) {
    let mut stopping = false;
    loop {
        let first = if stopping {
            queue.recv().await
        } else {
            tokio::select! {
                biased;
                request = queue.recv() => request,
                _ = stop.cancelled() => {
                    // Refuse new messages; `recv` still yields those already queued.
                    queue.close();
                    stopping = true;
                    continue;
                }
            }
        };
        let Some(first) = first else { break };
        let mut bytes = first.0.raw.len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_MESSAGES && bytes < MAX_BATCH_BYTES {
            let Ok(next) = queue.try_recv() else { break };
            bytes += next.0.raw.len();
            batch.push(next);
        }
        commit(&store, batch).await;
    }
    debug!("spooler_stopped");
}

/// Commits one batch and answers each of its sessions (a session that has gone away is
/// skipped). The commit runs in its own task so that a panicking store fails the batch, not
/// the writer.
async fn commit(store: &Arc<dyn Store>, batch: Vec<(NewMessage, Reply)>) {
    let (messages, replies): (Vec<NewMessage>, Vec<Reply>) = batch.into_iter().unzip();
    let count = messages.len();
    let store = store.clone();
    let started = std::time::Instant::now();
    let committed = tokio::spawn(async move { store.spool_messages(&messages).await }).await;
    crate::metrics::store_latency("spool", started.elapsed());
    match committed {
        Ok(Ok(spooled)) if spooled.len() == count => {
            debug!(messages = count, "spool_batch_committed");
            for (reply, spooled) in replies.into_iter().zip(spooled) {
                let _ = reply.send(Ok(spooled));
            }
        }
        Ok(Ok(spooled)) => {
            let e = Arc::new(StoreError::Corrupt(format!("spooled {count} messages, got {} ids", spooled.len())));
            for reply in replies {
                let _ = reply.send(Err(SpoolError::Store(e.clone())));
            }
        }
        Ok(Err(e)) => {
            let e = Arc::new(e);
            for reply in replies {
                let _ = reply.send(Err(SpoolError::Store(e.clone())));
            }
        }
        Err(e) => {
            error!(error = %e, messages = count, "spool_batch_panicked");
            for reply in replies {
                let _ = reply.send(Err(SpoolError::Panicked));
            }
        }
    }
}
