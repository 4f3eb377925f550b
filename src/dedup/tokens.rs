//! What each tenant spent on a paid responder in the current period, shared
//! by the fleet: one counter per tenant and period (`<prefix>tokens:…`), read
//! before a call and added to after it. Only tenants with a budget cost these
//! two round trips; the others none.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use uuid::Uuid;

use super::{Dedup, DedupError};

/// A period's counter is kept this long past its end (for an operator's look).
const KEPT_AFTER: Duration = Duration::from_secs(24 * 3_600);

/// KEYS[1] the counter; ARGV 1 tokens, 2 TTL s. Adds and keeps it, in one
/// step (no counter left without its end); a value that is not a count
/// (another program's writing) starts again from these tokens.
static SPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local was = tonumber(redis.call('GET', KEYS[1]) or '0')
if not was or was < 0 then was = 0 end
local now = was + tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%d', now), 'EX', ARGV[2])
return now
"#,
    )
});

impl Dedup {
    /// Tokens `tenant` spent in `period` so far (a value that is not a count: none).
    pub async fn tokens_spent(&self, tenant: &Uuid, period: &str) -> Result<u64, DedupError> {
        let spent: Option<String> = redis::cmd("GET")
            .arg(self.keys.tokens(tenant, period))
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(spent.and_then(|s| s.trim().parse().ok()).unwrap_or(0))
    }

    /// Adds `tokens` to what `tenant` spent in `period`, which ends in `left`.
    pub async fn spend_tokens(
        &self,
        tenant: &Uuid,
        period: &str,
        tokens: u64,
        left: Duration,
    ) -> Result<u64, DedupError> {
        let ttl = (left + KEPT_AFTER).as_secs().max(1);
        let spent: i64 = SPEND
            .key(self.keys.tokens(tenant, period))
            .arg(tokens)
            .arg(ttl)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(u64::try_from(spent).unwrap_or(0))
    }
}
