//! What each tenant spent on a paid responder in the current period, shared
//! by the fleet: one counter per tenant and period (`<prefix>tokens:…`), read
//! before a call and added to after it. Only tenants with a budget cost these
//! two round trips; the others none.

use std::time::Duration;

use uuid::Uuid;

use super::{Dedup, DedupError};

/// A period's counter is kept this long past its end (for an operator's look).
const KEPT_AFTER: Duration = Duration::from_secs(24 * 3_600);

impl Dedup {
    /// Tokens `tenant` spent in `period` so far.
    pub async fn tokens_spent(&self, tenant: &Uuid, period: &str) -> Result<u64, DedupError> {
        let spent: Option<u64> = redis::cmd("GET")
            .arg(self.keys.tokens(tenant, period))
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(spent.unwrap_or(0))
    }

    /// Adds `tokens` to what `tenant` spent in `period`, which ends in `left`.
    pub async fn spend_tokens(
        &self,
        tenant: &Uuid,
        period: &str,
        tokens: u64,
        left: Duration,
    ) -> Result<u64, DedupError> {
        let key = self.keys.tokens(tenant, period);
        let (spent,): (u64,) = redis::pipe()
            .cmd("INCRBY")
            .arg(&key)
            .arg(tokens)
            .cmd("EXPIRE")
            .arg(&key)
            .arg((left + KEPT_AFTER).as_secs().max(1))
            .ignore()
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(spent)
    }
}
