//! The Lua scripts behind the dedup verbs: each verb is one round trip, and
//! atomic. Keys: KEYS[1] = `state:<fp>` hash, KEYS[2] = `lock:<fp>`,
//! KEYS[3] = the `inflight` sorted set (fingerprint by start time, for the
//! sweeper and `worker locks list`). A lock value is `<token>|<instance>|<worker id>`;
//! `alive:<instance>` says whether its process lives.

use std::sync::LazyLock;

use redis::Script;

/// ARGV: lock value, worker id, lock TTL ms, state TTL ms, now ms, alive prefix,
/// key to fetch along ('' for none), fingerprint, instance.
/// Returns {verdict, worker, attempts, fetched, fence}: verdict `completed`,
/// `held` (by a live process), `acquired`, or `taken_over` (from a process that
/// is gone, whose lock lapsed mid-processing, or whose lock was released by the
/// sweeper or an operator: it may still wake up); `fence` is the acquisition's
/// fencing token: Redis's clock in microseconds, so it only grows, even across a
/// Redis that lost its data.
pub(super) static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'completed' then
  return {'completed', redis.call('HGET', KEYS[1], 'worker_id') or '', 0, false, 0}
end
local holder = redis.call('GET', KEYS[2])
local previous = ''
if holder then
  local _, inst, wid = string.match(holder, '^([^|]*)|([^|]*)|(.*)$')
  if inst and redis.call('EXISTS', ARGV[6] .. inst) == 1 then
    return {'held', wid, 0, false, 0}
  end
  previous = wid or holder
elseif status == 'processing' or status == 'released' then
  previous = redis.call('HGET', KEYS[1], 'worker_id') or 'unknown'
end
local now = redis.call('TIME')
local fence = tonumber(now[1]) * 1000000 + tonumber(now[2])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'processing', 'worker_id', ARGV[2], 'instance', ARGV[9],
           'started_at', ARGV[5], 'fence', fence)
redis.call('HDEL', KEYS[1], 'completed_at')
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[8])
local fetched = false
if ARGV[7] ~= '' then fetched = redis.call('GET', ARGV[7]) end
if previous ~= '' then return {'taken_over', previous, attempts, fetched, fence} end
return {'acquired', '', attempts, fetched, fence}
"#,
    )
});

/// ARGV: lock value, final status, now ms, state TTL ms, fingerprint, then
/// optionally a key, value and TTL ms to set in the same round trip.
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
if ARGV[6] then redis.call('SET', ARGV[6], ARGV[7], 'PX', ARGV[8]) end
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

/// Releases a message whose holder is gone (or, with ARGV[4] = 'force', any holder).
/// ARGV: fingerprint, alive prefix, now ms, 'force' or ''. Returns 1 if released,
/// 0 if a live process holds it (and force was not asked), -1 if nothing was held.
/// The state becomes `released`, so the next claim counts as a takeover and
/// fences off the released holder, should it be merely paused.
pub(super) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local holder = redis.call('GET', KEYS[2])
if holder and ARGV[4] ~= 'force' then
  local _, inst = string.match(holder, '^([^|]*)|([^|]*)|')
  if inst and redis.call('EXISTS', ARGV[2] .. inst) == 1 then return 0 end
end
local was_processing = redis.call('HGET', KEYS[1], 'status') == 'processing'
if holder then redis.call('DEL', KEYS[2]) end
if was_processing then redis.call('HSET', KEYS[1], 'status', 'released', 'completed_at', ARGV[3]) end
redis.call('ZREM', KEYS[3], ARGV[1])
if holder or was_processing then return 1 end
return -1
"#,
    )
});
