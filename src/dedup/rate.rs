//! Tenants' message rate limits, shared by the fleet: a GCRA (the generic
//! cell rate algorithm, as Inngest's `throttle` and redis-cell do) over one
//! key per tenant holding its theoretical arrival time. A message reserves
//! its place at the rate and is told how long to wait for it; one that would
//! wait longer than the caller accepts reserves nothing and is told when to
//! come back. Redis's clock decides, so the fleet's clocks need not agree.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use uuid::Uuid;

use super::{Dedup, DedupError};
use crate::model::rate::RateLimit;

/// KEYS[1]: the tenant's hash: `tat`, the theoretical arrival time of its
/// next message (µs), and `tail`, when the last message turned away was told
/// to come back. ARGV: 1 interval µs, 2 burst tolerance µs ((burst - 1) ×
/// interval), 3 the longest wait accepted µs. Returns {1, wait µs} (its place
/// is reserved: go after waiting) or {0, back µs} (nothing reserved: come
/// back then). Those turned away are told to come back one interval apart,
/// after the places already reserved, so that a flood over the rate returns
/// spread at the rate rather than all at once.
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local tat = tonumber(redis.call('HGET', KEYS[1], 'tat') or now) or now
if tat < now then tat = now end
local tail = tonumber(redis.call('HGET', KEYS[1], 'tail') or 0) or 0
local wait = tat - tolerance - now
if wait < 0 then wait = 0 end
local verdict, answer
if wait <= max_wait then
  tat = tat + interval
  redis.call('HSET', KEYS[1], 'tat', string.format('%d', tat))
  verdict, answer = 1, wait
else
  local back = tat - tolerance
  if tail > back then back = tail end
  tail = back + interval
  redis.call('HSET', KEYS[1], 'tail', string.format('%d', tail))
  verdict, answer = 0, tail - now
end
local last = tat
if tail > last then last = tail end
redis.call('PEXPIRE', KEYS[1], math.ceil((last - now) / 1000) + 1000)
return {verdict, answer}
"#,
    )
});

/// What the limiter said of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// Its place at the rate: go once this is waited.
    After(Duration),
    /// No place within the accepted wait: come back in this long (spread
    /// one interval apart from the others turned away).
    Full(Duration),
}

impl Dedup {
    pub async fn reserve_rate(
        &self,
        tenant: &Uuid,
        limit: RateLimit,
        max_wait: Duration,
    ) -> Result<Reserved, DedupError> {
        let interval = limit.interval().as_micros().max(1);
        let tolerance = interval.saturating_mul(u128::from(limit.burst.saturating_sub(1)));
        let as_i64 = |us: u128| i64::try_from(us).unwrap_or(i64::MAX / 4);
        let (reserved, wait): (i64, i64) = RESERVE
            .key(self.keys.rate(tenant))
            .arg(as_i64(interval))
            .arg(as_i64(tolerance))
            .arg(as_i64(max_wait.as_micros()))
            .invoke_async(&mut self.redis.clone())
            .await?;
        let wait = Duration::from_micros(u64::try_from(wait).unwrap_or(0));
        Ok(if reserved == 1 { Reserved::After(wait) } else { Reserved::Full(wait) })
    }
}
