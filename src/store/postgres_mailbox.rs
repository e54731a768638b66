//! PostgreSQL's [`MailboxStore`]. Several daemons share the mailbox list; a mailbox is
//! watched by the daemon holding its session advisory lock, taken on a connection of its
//! own (outside the pool) and held for as long as that connection lives. When the holder
//! dies, its connection closes, PostgreSQL drops the lock, and the next daemon that asks
//! (watchers ask every `imap.lease_retry_seconds`) takes the mailbox over.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};

use super::mailbox::{start_from, state_from, state_moved, MailboxLease, MailboxStart, MailboxState, MailboxStore};
use super::postgres::insert_messages;
use super::{NewMessage, PgStore, Spooled, StoreError};

#[async_trait]
impl MailboxStore for PgStore {
    async fn mailbox_state(&self, mailbox: &str) -> Result<Option<MailboxState>, StoreError> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT uid_validity, last_uid FROM mailbox_state WHERE mailbox = $1")
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
        let mut tx = self.pool.begin().await?;
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT uid_validity, last_uid FROM mailbox_state WHERE mailbox = $1 FOR UPDATE")
                .bind(mailbox)
                .fetch_optional(&mut *tx)
                .await?;
        let start = start_from(row.map(|(v, u)| state_from(mailbox, v, u)).transpose()?, uid_validity);
        if !matches!(start, MailboxStart::Continue { .. }) {
            sqlx::query(
                "INSERT INTO mailbox_state (mailbox, uid_validity, last_uid, updated_at) VALUES ($1, $2, 0, $3)
                 ON CONFLICT (mailbox) DO UPDATE SET uid_validity = excluded.uid_validity, last_uid = 0,
                 updated_at = excluded.updated_at",
            )
            .bind(mailbox)
            .bind(i64::from(uid_validity))
            .bind(now)
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
        let mut tx = self.pool.begin().await?;
        let spooled = insert_messages(&mut tx, messages).await?;
        let moved = sqlx::query(
            "UPDATE mailbox_state SET last_uid = GREATEST(last_uid, $1), updated_at = now()
             WHERE mailbox = $2 AND uid_validity = $3",
        )
        .bind(i64::from(up_to_uid))
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

    async fn try_lease_mailbox(&self, mailbox: &str) -> Result<Option<Box<dyn MailboxLease>>, StoreError> {
        let options = self.pool.connect_options();
        let mut conn = PgConnection::connect_with(&options).await.map_err(StoreError::Unavailable)?;
        let sql = "SELECT pg_try_advisory_lock(hashtextextended('invited-mailbox' || chr(31) || $1, 0))";
        let held: bool = sqlx::query_scalar(sql).bind(mailbox).fetch_one(&mut conn).await?;
        if held {
            Ok(Some(Box::new(AdvisoryLease { conn })))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }
}

/// A session advisory lock on a dedicated connection: held while the connection lives.
struct AdvisoryLease {
    conn: PgConnection,
}

#[async_trait]
impl MailboxLease for AdvisoryLease {
    async fn check(&mut self) -> Result<(), StoreError> {
        // A session lock lasts as long as its session: a live connection still holds it.
        self.conn.ping().await?;
        Ok(())
    }

    async fn release(self: Box<Self>) {
        // Closing the session drops its advisory locks.
        let _ = self.conn.close().await;
    }
}
