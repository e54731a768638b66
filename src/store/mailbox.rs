//! The IMAP intake's side of the store: where each watched mailbox stands (UIDVALIDITY and
//! the last UID taken in), and which daemon may watch it.
//!
//! Exactly-once rests on one rule: a message fetched from a mailbox is stored in the same
//! transaction that moves the mailbox's `last_uid` past it ([`MailboxStore::spool_from_mailbox`]),
//! and the server is told (flag or MOVE) only after that commit. A restart at any point
//! therefore fetches again only what was not committed, and a message committed but not yet
//! flagged is flagged on the next connection without being stored again.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{NewMessage, Spooled, StoreError};

/// Where a mailbox stands: UIDs up to `last_uid` under `uid_validity` are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxState {
    pub uid_validity: u32,
    pub last_uid: u32,
}

/// What happened when a watcher told the store which UIDVALIDITY the server reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxStart {
    /// The mailbox was not known: it starts at `last_uid` 0.
    New,
    /// The same UIDVALIDITY as before: carry on after `last_uid`.
    Continue { last_uid: u32 },
    /// The server's UIDVALIDITY differs from the stored one: UIDs were renumbered, so the
    /// whole folder is read again from UID 1 (stored messages are recognised by content hash).
    Reset { old_uid_validity: u32 },
}

/// The right to watch one mailbox, held until dropped or [`release`](MailboxLease::release)d.
#[async_trait]
pub trait MailboxLease: Send {
    /// Whether the lease is still held; an error means it may have been lost and the
    /// watcher must stop touching the mailbox.
    async fn check(&mut self) -> Result<(), StoreError>;

    /// Gives the mailbox up at once (another daemon may take it over).
    async fn release(self: Box<Self>);
}

#[async_trait]
pub trait MailboxStore: Send + Sync {
    /// The stored state of `mailbox`, if any.
    async fn mailbox_state(&self, mailbox: &str) -> Result<Option<MailboxState>, StoreError>;

    /// Records the UIDVALIDITY the server reports for `mailbox`; a different one resets
    /// `last_uid` to 0.
    async fn start_mailbox(
        &self,
        mailbox: &str,
        uid_validity: u32,
        now: DateTime<Utc>,
    ) -> Result<MailboxStart, StoreError>;

    /// In one transaction: stores `messages` (bytes already stored keep their id) and moves
    /// `last_uid` up to `up_to_uid` (never down). Fails, storing nothing, when the mailbox's
    /// UIDVALIDITY is no longer `uid_validity`.
    async fn spool_from_mailbox(
        &self,
        mailbox: &str,
        uid_validity: u32,
        up_to_uid: u32,
        messages: &[NewMessage],
    ) -> Result<Vec<Spooled>, StoreError>;

    /// Takes the right to watch `mailbox` if no other daemon holds it; `None` when one does.
    async fn try_lease_mailbox(&self, mailbox: &str) -> Result<Option<Box<dyn MailboxLease>>, StoreError>;
}

/// The error of a commit whose mailbox state moved under the watcher.
pub(super) fn state_moved(mailbox: &str, uid_validity: u32) -> StoreError {
    StoreError::Corrupt(format!(
        "mailbox {mailbox}: the stored UIDVALIDITY is no longer {uid_validity} (another watcher reset it)"
    ))
}

/// What `start_mailbox` does with the stored state, written once for both backends.
pub(super) fn start_from(stored: Option<MailboxState>, uid_validity: u32) -> MailboxStart {
    match stored {
        None => MailboxStart::New,
        Some(s) if s.uid_validity == uid_validity => MailboxStart::Continue { last_uid: s.last_uid },
        Some(s) => MailboxStart::Reset { old_uid_validity: s.uid_validity },
    }
}

/// A stored (uid_validity, last_uid) pair, checked to be 32-bit UIDs.
pub(super) fn state_from(mailbox: &str, uid_validity: i64, last_uid: i64) -> Result<MailboxState, StoreError> {
    let bad = || StoreError::Corrupt(format!("mailbox_state of {mailbox}: {uid_validity}/{last_uid} out of range"));
    Ok(MailboxState {
        uid_validity: u32::try_from(uid_validity).map_err(|_| bad())?,
        last_uid: u32::try_from(last_uid).map_err(|_| bad())?,
    })
}
