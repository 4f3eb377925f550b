//! The Lua scripts behind the dedup verbs: each verb is one round trip, and
//! atomic. Keys (all in the conversation's shard, so one cluster slot; see
//! [`crate::keys`]): KEYS[1] = `state:<fp>` hash, KEYS[2] = `lock:<fp>`,
//! KEYS[3] = the shard's `inflight` sorted set (fingerprint by start time, for
//! the sweeper and `worker locks list`), KEYS[4] and KEYS[5] = the
//! conversation's line and turns (see [`crate::turns`]), and optionally
//! KEYS[6], a key of the conversation read or written along. A lock value is
//! `<token>|<instance>|<worker id>`. No script reads a key it was not given:
//! whether a holder's process lives (`alive:<instance>`, in another slot) is
//! asked by the caller, between two calls.

use std::sync::LazyLock;

use redis::Script;

/// The conversation's line, shared by the scripts that touch it (KEYS[4] the
/// line, KEYS[5] the turns hash). An entry reads
/// `<status>|<instance>|<worker id>|<since ms>`, status `waiting`, `taken` or
/// `parked`. `wake_next` tells the process holding the first entry in line, if
/// it waits and nothing is being answered, that its turn has come.
const LINE: &str = r#"
local function keep_line(ttl)
  redis.call('PEXPIRE', KEYS[4], ttl)
  redis.call('PEXPIRE', KEYS[5], ttl)
end
local function wake_next(channel_prefix, except)
  if redis.call('HEXISTS', KEYS[5], '.current') == 1 then return end
  local first = redis.call('ZRANGE', KEYS[4], 0, 0)[1]
  if not first or first == except then return end
  local e = redis.call('HGET', KEYS[5], first)
  if not e then return end
  local st, inst = string.match(e, '^([^|]*)|([^|]*)|')
  if st == 'waiting' and inst then redis.call('PUBLISH', channel_prefix .. inst, first) end
end
local function leave_line(fp, also)
  redis.call('ZREM', KEYS[4], fp)
  local fields = {fp}
  if also then fields[#fields + 1] = also end
  if redis.call('HGET', KEYS[5], '.current') == fp then fields[#fields + 1] = '.current' end
  redis.call('HDEL', KEYS[5], unpack(fields))
end
"#;

/// Dedup, the conversation's turn and the message's lock, in one round trip.
/// KEYS[4], KEYS[5]: the conversation's line and turns; KEYS[6]: the state of
/// the message this delivery waited behind last time (its own state when
/// none); KEYS[7], if given, is fetched along when the lock is taken.
/// ARGV: 1 lock value, 2 worker id, 3 lock TTL ms, 4 state TTL ms, 5 now ms,
/// 6 fingerprint, 7 instance, 8 the lock value of a holder the caller found
/// dead ('' for none), 9 intake time µs (the message's place in line), 10 line
/// TTL ms, 11 '1' if this delivery stood in line before, 12 an entry the caller
/// found abandoned, `<fp>|<since>`, to remove if unchanged ('' for none), 13
/// the wake channels' prefix, 14 the fingerprint KEYS[6] is the state of ('' for none),
/// 15 the delivery read before this one by its process, still waiting ('' for none),
/// 16 '1' for the first claim of a delivery that took its place as it was read (JOIN).
/// Safe to run twice with the same ARGV (a cluster client re-sends a request
/// whose connection dropped before the answer came): a lock already holding
/// ARGV[1] is this very claim's, and its acquisition is answered again.
/// Returns {verdict, who, attempts, fetched, fence, holder, burst, behind}
/// (`burst`: when the burst the turn continues began, ms, 0 for none;
/// `behind`: how many wait in line behind it; both only with the turn).
/// A message joining the line behind one being answered tells the holder's
/// process (`+<fp>` on its wake channel), which may coalesce it. Verdict
/// `completed`; `wait` (behind fingerprint `who`, whose entry is `holder`);
/// `lost` (this delivery's place in line was gone: Redis lost its data; it is
/// back, and the caller lets the others find theirs before it claims);
/// `held` (by `holder`, whose liveness the caller checks; unless it is the
/// holder ARGV[8] names); `acquired`; or `taken_over` (from a process that is
/// gone, whose lock lapsed mid-processing, or whose lock was released by the
/// sweeper or an operator: it may still wake up). `fence` is the acquisition's
/// fencing token: the clock of the Redis node serving the slot, in
/// microseconds, so it only grows, even across a Redis that lost its data, as
/// long as the clocks of the nodes a slot moves between (failover,
/// resharding) agree.
pub(super) static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{LINE}{}",
        r#"
local fp = ARGV[6]
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'completed' or status == 'coalesced' then
  -- A copy that joined the line as it was read (see JOIN) leaves it.
  if redis.call('ZSCORE', KEYS[4], fp) and redis.call('HGET', KEYS[5], '.current') ~= fp then
    leave_line(fp)
    wake_next(ARGV[13], fp)
  end
  return {'completed', redis.call('HGET', KEYS[1], 'worker_id') or '', 0, false, 0, '', 0, 0}
end
local function entry(st) return st .. '|' .. ARGV[7] .. '|' .. ARGV[2] .. '|' .. ARGV[5] end
if ARGV[12] ~= '' then
  local sfp, since = string.match(ARGV[12], '^([^|]*)|(.*)$')
  local e = sfp and redis.call('HGET', KEYS[5], sfp)
  if sfp and ((e and string.match(e, '|([^|]*)$') == since) or (not e and since == '')) then leave_line(sfp) end
end
-- The one this delivery waited behind may have ended without the line
-- hearing of it (Redis failed as it finished): its state says so.
if ARGV[14] ~= '' then
  local ahead_status = redis.call('HGET', KEYS[6], 'status')
  if ahead_status == 'completed' or ahead_status == 'coalesced' then leave_line(ARGV[14]) end
end
local lost = false
local joined = false
-- A place taken anew is a place Redis lost if this delivery stood in line
-- before, or if the one read before it by its process, waiting, has none.
-- LT: a place already taken by a later copy of this message (one read after
-- it, that joined the line as it was read) moves up to this one's.
if redis.call('ZADD', KEYS[4], 'LT', ARGV[9], fp) == 1 then
  local before = ARGV[15] or ''
  lost = ARGV[11] == '1' or (before ~= '' and not redis.call('ZSCORE', KEYS[4], before))
  joined = not lost
elseif ARGV[16] == '1' then
  -- Its place was taken as it was read (JOIN): this first claim is its arrival.
  joined = true
end
local turn = redis.call('HMGET', KEYS[5], '.current', '.burst')
local current = turn[1]
local first = redis.call('ZRANGE', KEYS[4], 0, 0)[1]
local ahead = false
-- The one being answered keeps the turn (its redelivery, its takeover)
-- even if an earlier message joined the line behind it meanwhile.
if current then
  if current ~= fp then ahead = current end
elseif first ~= fp then
  ahead = first
end
if ahead or lost then
  redis.call('HSET', KEYS[5], fp, entry('waiting'))
  keep_line(ARGV[10])
  if not status then redis.call('HSET', KEYS[1], 'status', 'waiting', 'worker_id', ARGV[2]) end
  redis.call('HSET', KEYS[1], 'behind', ahead or '')
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  if not ahead then return {'lost', '', 0, false, 0, '', 0, 0} end
  local ahead_entry = redis.call('HGET', KEYS[5], ahead) or ''
  -- A new message behind the one being answered: its process may coalesce it.
  if joined and current then
    local st, inst = string.match(ahead_entry, '^([^|]*)|([^|]*)|')
    if st == 'taken' and inst then redis.call('PUBLISH', ARGV[13] .. inst, '+' .. current) end
  end
  return {'wait', ahead, 0, false, 0, ahead_entry, 0, 0}
end
-- What a turn holder that coalesces needs: when its burst began, and how many wait behind it.
local burst = tonumber(turn[2]) or 0
local behind = redis.call('ZCARD', KEYS[4]) - 1
local holder = redis.call('GET', KEYS[2])
if holder == ARGV[1] then
  local again = redis.call('HMGET', KEYS[1], 'attempts', 'fence', 'taken_from')
  local fetched = false
  if KEYS[7] then fetched = redis.call('GET', KEYS[7]) end
  local verdict = 'acquired'
  if again[3] and again[3] ~= '' then verdict = 'taken_over' end
  return {verdict, again[3] or '', tonumber(again[1]) or 0, fetched, tonumber(again[2]) or 0, '', burst, behind}
end
local previous = ''
if holder then
  local _, inst, wid = string.match(holder, '^([^|]*)|([^|]*)|(.*)$')
  if inst and holder ~= ARGV[8] then
    return {'held', wid, 0, false, 0, holder, 0, 0}
  end
  previous = wid or holder
elseif status == 'processing' or status == 'released' then
  previous = redis.call('HGET', KEYS[1], 'worker_id') or 'unknown'
end
local now = redis.call('TIME')
local fence = tonumber(now[1]) * 1000000 + tonumber(now[2])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
-- A message seen for the first time has no state to count on or clear.
local attempts = 1
if status then
  attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  redis.call('HDEL', KEYS[1], 'completed_at', 'behind')
end
redis.call('HSET', KEYS[1], 'status', 'processing', 'worker_id', ARGV[2], 'instance', ARGV[7],
           'started_at', ARGV[5], 'fence', fence, 'taken_from', previous, 'attempts', attempts)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[5], fp)
redis.call('HSET', KEYS[5], '.current', fp, fp, entry('taken'))
keep_line(ARGV[10])
local fetched = false
if KEYS[7] then fetched = redis.call('GET', KEYS[7]) end
if previous ~= '' then return {'taken_over', previous, attempts, fetched, fence, '', burst, behind} end
return {'acquired', '', attempts, fetched, fence, '', burst, behind}
"#
    ))
});

/// KEYS as CLAIM's first five, and KEYS[6], if given, set along.
/// ARGV: 1 lock value, 2 final status, 3 now ms, 4 state TTL ms, 5 fingerprint,
/// 6 what becomes of its place in line (`leave`: answered, or dead-lettered;
/// `park`: it comes back, and keeps its place; `coalesce`: answered by the
/// next one's reply, whose burst began at 11), 7 line TTL ms, 8 the wake
/// channels' prefix, 9 instance, 10 worker id, 11 the burst's beginning (ms,
/// for `coalesce`), then, with KEYS[6], 12 the value and 13 the TTL ms to set
/// it to. Final status `completed` or `coalesced` (a copy then is a duplicate).
/// `completed` is recorded whoever holds the lock (the reply is out); `failed`
/// only by the holder, so a late worker never overwrites its successor's state
/// nor moves the line.
pub(super) static FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{LINE}{}",
        r#"
local fp = ARGV[5]
local mine = redis.call('GET', KEYS[2]) == ARGV[1]
if mine then redis.call('DEL', KEYS[2]) end
if ARGV[2] == 'completed' or mine then
  redis.call('HSET', KEYS[1], 'status', ARGV[2], 'completed_at', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('ZREM', KEYS[3], fp)
  if ARGV[6] == 'leave' then
    leave_line(fp, '.burst')
  elseif ARGV[6] == 'coalesce' then
    leave_line(fp)
    redis.call('HSET', KEYS[5], '.burst', ARGV[11])
  else
    redis.call('HSET', KEYS[5], fp, 'parked|' .. ARGV[9] .. '|' .. ARGV[10] .. '|' .. ARGV[3])
    if redis.call('HGET', KEYS[5], '.current') == fp then redis.call('HDEL', KEYS[5], '.current') end
  end
  -- A line left empty is gone (Redis drops an empty sorted set): nothing to keep or wake.
  if redis.call('EXISTS', KEYS[4]) == 1 then
    keep_line(ARGV[7])
    wake_next(ARGV[8], fp)
  end
end
if KEYS[6] then redis.call('SET', KEYS[6], ARGV[12], 'PX', ARGV[13]) end
return mine and 1 or 0
"#
    ))
});

/// KEYS as CLAIM's first five. ARGV: 1 lock value, 2 TTL ms, 3 fingerprint,
/// 4 intake time µs, 5 now ms, 6 worker id, 7 instance, 8 state TTL ms, 9 line
/// TTL ms. 1 if the lease is still ours and was extended; 0 if it is not.
/// 2 if Redis had lost both the lock and the state (a flush, a restart
/// without persistence), so no one else can have claimed the message since,
/// and the lease and the message's place in line were taken back (unless
/// another message of the conversation is being answered meanwhile: then 0).
pub(super) static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{LINE}{}",
        r#"
local holder = redis.call('GET', KEYS[2])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 1
end
if holder or redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local current = redis.call('HGET', KEYS[5], '.current')
if current and current ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[1], 'status', 'processing', 'worker_id', ARGV[6], 'instance', ARGV[7],
           'started_at', ARGV[5], 'attempts', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[8])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[3])
redis.call('ZADD', KEYS[4], 'NX', ARGV[4], ARGV[3])
redis.call('HSET', KEYS[5], '.current', ARGV[3], ARGV[3], 'taken|' .. ARGV[7] .. '|' .. ARGV[6] .. '|' .. ARGV[5])
keep_line(ARGV[9])
return 2
"#
    ))
});

/// Takes a message's place in its conversation's line as its delivery is
/// read, before it is claimed (it may wait in its process's read-ahead for
/// its tenant's turn): the conversation's later messages, read after it by
/// any process, then wait behind it. KEYS as CLAIM's first five. ARGV:
/// 1 fingerprint, 2 intake time µs, 3 the entry (`waiting|<instance>|<worker
/// id>|<now ms>`), 4 line TTL ms. Nothing for a message already done or
/// already in line. The process answering the conversation is told of it
/// (for coalescing) by its first claim, not here: it may wait in the
/// read-ahead for long. Returns 1 if it joined.
pub(super) static JOIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{LINE}{}",
        r#"
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'completed' or status == 'coalesced' then return 0 end
-- LT: a copy read earlier, whose place a later copy took, moves it up.
if redis.call('ZADD', KEYS[4], 'LT', ARGV[2], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[5], ARGV[1], ARGV[3])
keep_line(ARGV[4])
return 1
"#
    ))
});

/// Takes a message that joined its line but was never claimed out of it
/// again (its delivery will not come back: dead-lettered before its claim),
/// if its entry is still this process's `waiting` one. KEYS as CLAIM's first
/// five. ARGV: 1 fingerprint, 2 instance, 3 the wake channels' prefix.
pub(super) static UNJOIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{LINE}{}",
        r#"
local st, inst = string.match(redis.call('HGET', KEYS[5], ARGV[1]) or '', '^([^|]*)|([^|]*)|')
if st ~= 'waiting' or inst ~= ARGV[2] then return 0 end
leave_line(ARGV[1])
if redis.call('EXISTS', KEYS[4]) == 1 then wake_next(ARGV[3], ARGV[1]) end
return 1
"#
    ))
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
