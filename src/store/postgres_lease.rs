//! One daemon of those sharing a PostgreSQL does the periodic work at a time: whoever takes
//! a fixed transaction-scoped advisory lock first; the others skip that tick.

use super::{PeriodicLease, PgStore, StoreError};

/// The periodic-work lock, in the two-key advisory lock space, apart from the one-key space
/// that the per-UID and per-meeting locks hash into. 0x696e76 is "inv".
const PERIODIC_WORK_LOCK: (i32, i32) = (0x696e76, 1);

impl PgStore {
    pub(super) async fn try_periodic_lease(&self) -> Result<Option<PeriodicLease>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, $2)")
            .bind(PERIODIC_WORK_LOCK.0)
            .bind(PERIODIC_WORK_LOCK.1)
            .fetch_one(&mut *tx)
            .await?;
        if !taken {
            tx.rollback().await?;
            return Ok(None);
        }
        Ok(Some(PeriodicLease { held: Some(tx) }))
    }
}
