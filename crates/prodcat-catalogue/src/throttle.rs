//! Sign-in throttling shared by every replica (`login_throttle` table): failures are counted
//! per key (an account, a client address); after a few in a row the key is blocked for a time
//! that doubles with each further failure, up to a cap. A success clears the account's key.

use prodcat_storage::{now_ms, Database};
use sqlx::Row;

use crate::CatalogueError;

/// How sign-in failures are throttled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures allowed before the first block.
    pub free_failures: i64,
    /// The first block; doubled with each further failure.
    pub first_block_ms: i64,
    /// The longest block.
    pub max_block_ms: i64,
    /// Failures older than this are forgotten.
    pub forget_after_ms: i64,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self {
            free_failures: 5,
            first_block_ms: 2_000,
            max_block_ms: 15 * 60_000,
            forget_after_ms: 60 * 60_000,
        }
    }
}

impl ThrottlePolicy {
    /// For a client address: many people may share one (an office behind a NAT), so more
    /// failures pass before the first block; the back-off then grows the same way.
    pub fn per_address() -> Self {
        Self {
            free_failures: 20,
            ..Self::default()
        }
    }

    /// How long a key is blocked after its `failures`-th failure in a row (0: not blocked).
    pub fn block_ms(&self, failures: i64) -> i64 {
        let over = failures - self.free_failures;
        if over <= 0 {
            return 0;
        }
        let doublings = (over - 1).min(30) as u32;
        self.first_block_ms
            .saturating_mul(1i64 << doublings)
            .min(self.max_block_ms)
    }
}

/// The time left on a key's block, in milliseconds (0: not blocked).
pub async fn blocked_for_ms(database: &Database, key: &str) -> Result<i64, CatalogueError> {
    let row = sqlx::query("SELECT blocked_until_ms FROM login_throttle WHERE throttle_key = $1")
        .bind(key.to_string())
        .fetch_optional(database.pool())
        .await?;
    let until: i64 = match row {
        Some(row) => row.try_get("blocked_until_ms")?,
        None => 0,
    };
    Ok((until - now_ms()).max(0))
}

/// Counts a failure for each key; returns the longest block now in force, in milliseconds.
pub async fn record_failure(
    database: &Database,
    keys: &[String],
    policy: &ThrottlePolicy,
) -> Result<i64, CatalogueError> {
    let now = now_ms();
    let mut longest = 0;
    for key in keys {
        // One statement counts the failure (two replicas failing the same key at once both
        // count: the row is locked, not read and then overwritten), then the block follows
        // from the count, in the same transaction.
        let mut transaction = database.begin_write().await?;
        let failures: i64 = sqlx::query_scalar(
            "INSERT INTO login_throttle (throttle_key, failures, blocked_until_ms, updated_at_ms) \
             VALUES ($1, 1, 0, $2) ON CONFLICT (throttle_key) DO UPDATE SET \
             failures = CASE WHEN $2 - login_throttle.updated_at_ms > $3 THEN 1 \
             ELSE login_throttle.failures + 1 END, updated_at_ms = $2 RETURNING failures",
        )
        .bind(key.clone())
        .bind(now)
        .bind(policy.forget_after_ms)
        .fetch_one(&mut *transaction)
        .await?;
        let block = policy.block_ms(failures);
        sqlx::query("UPDATE login_throttle SET blocked_until_ms = $1 WHERE throttle_key = $2")
            .bind(now + block)
            .bind(key.clone())
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        longest = longest.max(block);
    }
    Ok(longest)
}

/// Forgets a key's failures (after a successful sign-in).
pub async fn clear(database: &Database, key: &str) -> Result<(), CatalogueError> {
    sqlx::query("DELETE FROM login_throttle WHERE throttle_key = $1")
        .bind(key.to_string())
        .execute(database.pool())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_grow_after_the_free_failures() {
        let policy = ThrottlePolicy::default();
        assert_eq!(policy.block_ms(5), 0);
        assert_eq!(policy.block_ms(6), 2_000);
        assert_eq!(policy.block_ms(7), 4_000);
        assert_eq!(policy.block_ms(8), 8_000);
        assert_eq!(policy.block_ms(40), 15 * 60_000);
    }
}
