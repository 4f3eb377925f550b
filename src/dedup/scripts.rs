//! The Lua scripts behind the dedup verbs: each verb is one round trip, and
//! atomic. Keys (all in the conversation's shard, so one cluster slot; see
//! [`crate::keys`]): KEYS[1] = `state:<fp>` hash, KEYS[2] = `lock:<fp>`,
//! KEYS[3] = the shard's `inflight` sorted set (fingerprint by start time, for
//! the sweeper and `worker locks list`), and optionally KEYS[4], a key of the
//! conversation read or written along. A lock value is
//! `<token>|<instance>|<worker id>`. No script reads a key it was not given:
//! whether a holder's process lives (`alive:<instance>`, in another slot) is
//! asked by the caller, between two calls.

use std::sync::LazyLock;

use redis::Script;

/// ARGV: lock value, worker id, lock TTL ms, state TTL ms, now ms, fingerprint,
/// instance, and the lock value of a holder the caller found dead ('' for none).
/// KEYS[4], if given, is fetched along.
/// Safe to run twice with the same ARGV (a cluster client re-sends a request
/// whose connection dropped before the answer came): a lock already holding
/// ARGV[1] is this very claim's, and its acquisition is answered again.
/// Returns {verdict, worker, attempts, fetched, fence, holder}: verdict
/// `completed`; `held` (by `holder`, whose liveness the caller checks; unless it
/// is the holder ARGV[8] names); `acquired`; or `taken_over` (from a process that
/// is gone, whose lock lapsed mid-processing, or whose lock was released by the
/// sweeper or an operator: it may still wake up). `fence` is the acquisition's
/// fencing token: the clock of the Redis node serving the slot, in microseconds,
/// so it only grows, even across a Redis that lost its data, as long as the
/// clocks of the nodes a slot moves between (failover, resharding) agree.
pub(super) static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'completed' then
  return {'completed', redis.call('HGET', KEYS[1], 'worker_id') or '', 0, false, 0, ''}
end
local holder = redis.call('GET', KEYS[2])
if holder == ARGV[1] then
  local again = redis.call('HMGET', KEYS[1], 'attempts', 'fence', 'taken_from')
  local fetched = false
  if KEYS[4] then fetched = redis.call('GET', KEYS[4]) end
  local verdict = 'acquired'
  if again[3] and again[3] ~= '' then verdict = 'taken_over' end
  return {verdict, again[3] or '', tonumber(again[1]) or 0, fetched, tonumber(again[2]) or 0, ''}
end
local previous = ''
if holder then
  local _, inst, wid = string.match(holder, '^([^|]*)|([^|]*)|(.*)$')
  if inst and holder ~= ARGV[8] then
    return {'held', wid, 0, false, 0, holder}
  end
  previous = wid or holder
elseif status == 'processing' or status == 'released' then
  previous = redis.call('HGET', KEYS[1], 'worker_id') or 'unknown'
end
local now = redis.call('TIME')
local fence = tonumber(now[1]) * 1000000 + tonumber(now[2])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'processing', 'worker_id', ARGV[2], 'instance', ARGV[7],
           'started_at', ARGV[5], 'fence', fence, 'taken_from', previous)
redis.call('HDEL', KEYS[1], 'completed_at')
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[6])
local fetched = false
if KEYS[4] then fetched = redis.call('GET', KEYS[4]) end
if previous ~= '' then return {'taken_over', previous, attempts, fetched, fence, ''} end
return {'acquired', '', attempts, fetched, fence, ''}
"#,
    )
});

/// ARGV: lock value, final status, now ms, state TTL ms, fingerprint, then,
/// with KEYS[4], the value and TTL ms to set it to in the same round trip.
/// `completed` is recorded whoever holds the lock (the reply is out); `failed`
/// only by the holder, so a late worker never overwrites its successor's state.
pub(super) static FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local mine = redis.call('GET', KEYS[2]) == ARGV[1]
if mine then redis.call('DEL', KEYS[2]) end
if ARGV[2] == 'completed' or mine then
  redis.call('HSET', KEYS[1], 'status', ARGV[2], 'completed_at', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('ZREM', KEYS[3], ARGV[5])
end
if KEYS[4] then redis.call('SET', KEYS[4], ARGV[6], 'PX', ARGV[7]) end
return mine and 1 or 0
"#,
    )
});

/// KEYS[1] = lock. ARGV: lock value, TTL ms. 1 if the lease is still ours and was extended.
pub(super) static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#,
    )
});

/// Releases a message's lock if its holder is still the one the caller saw
/// (ARGV[3]: that lock value, '' for none, '*' for whoever). ARGV: fingerprint,
/// now ms, expected holder. Returns 1 if released, 0 if the holder changed
/// meanwhile, -1 if nothing was held. The state becomes `released`, so the next
/// claim counts as a takeover and fences off the released holder, should it be
/// merely paused.
pub(super) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local holder = redis.call('GET', KEYS[2])
if ARGV[3] ~= '*' and (holder or '') ~= ARGV[3] then return 0 end
local was_processing = redis.call('HGET', KEYS[1], 'status') == 'processing'
if holder then redis.call('DEL', KEYS[2]) end
if was_processing then redis.call('HSET', KEYS[1], 'status', 'released', 'completed_at', ARGV[2]) end
redis.call('ZREM', KEYS[3], ARGV[1])
if holder or was_processing then return 1 end
return -1
"#,
    )
});

#[cfg(test)]
#[path = "scripts_tests.rs"]
mod tests;
