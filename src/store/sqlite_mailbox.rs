//! SQLite's [`MailboxStore`]: mailbox state in `mailbox_state`. SQLite serves one machine,
//! so the lease is always granted: one daemon owns the database file.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::mailbox::{start_from, state_from, state_moved, MailboxLease, MailboxStart, MailboxState, MailboxStore};
use super::sqlite::insert_messages;
use super::sqlite::Durability;
use super::{ts, NewMessage, Spooled, SqliteStore, StoreError};

#[async_trait]
impl MailboxStore for SqliteStore {
    async fn mailbox_state(&self, mailbox: &str) -> Result<Option<MailboxState>, StoreError> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT uid_validity, last_uid FROM mailbox_state WHERE mailbox = ?")
                .bind(mailbox)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(v, u)| state_from(mailbox, v, u)).transpose()
    }

    async fn start_mailbox(
        &self,
        mailbox: &str,
        uid_validity: u32,
        now: DateTime<Utc>,
    ) -> Result<MailboxStart, StoreError> {
        let mut tx = self.write_tx(Durability::Synced).await?;
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT uid_validity, last_uid FROM mailbox_state WHERE mailbox = ?")
                .bind(mailbox)
                .fetch_optional(&mut *tx)
                .await?;
        let start = start_from(row.map(|(v, u)| state_from(mailbox, v, u)).transpose()?, uid_validity);
        if !matches!(start, MailboxStart::Continue { .. }) {
            sqlx::query(
                "INSERT INTO mailbox_state (mailbox, uid_validity, last_uid, updated_at) VALUES (?, ?, 0, ?)
                 ON CONFLICT (mailbox) DO UPDATE SET uid_validity = excluded.uid_validity, last_uid = 0,
                 updated_at = excluded.updated_at",
            )
            .bind(mailbox)
            .bind(i64::from(uid_validity))
            .bind(ts(now))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(start)
    }

    async fn spool_from_mailbox(
        &self,
        mailbox: &str,
        uid_validity: u32,
        up_to_uid: u32,
        messages: &[NewMessage],
    ) -> Result<Vec<Spooled>, StoreError> {
        let mut tx = self.write_tx(Durability::Synced).await?;
        let spooled = insert_messages(&mut tx, messages).await?;
        let moved = sqlx::query(
            "UPDATE mailbox_state SET last_uid = MAX(last_uid, ?), updated_at = ?
             WHERE mailbox = ? AND uid_validity = ?",
        )
        .bind(i64::from(up_to_uid))
        .bind(ts(Utc::now()))
        .bind(mailbox)
        .bind(i64::from(uid_validity))
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 {
            return Err(state_moved(mailbox, uid_validity));
        }
        tx.commit().await?;
        Ok(spooled)
    }

    async fn try_lease_mailbox(&self, _mailbox: &str) -> Result<Option<Box<dyn MailboxLease>>, StoreError> {
        Ok(Some(Box::new(LocalLease)))
    }
}

/// SQLite's lease: the machine's one daemon holds every mailbox.
struct LocalLease;

#[async_trait]
impl MailboxLease for LocalLease {
    async fn check(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn release(self: Box<Self>) {}
}
