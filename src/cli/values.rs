//! Value parsers of the command line's flags. Each takes any string and gives
//! the value, within its bounds, or one line saying what is allowed; clap puts
//! the flag's name in front (`invalid value 'x' for '--page <N>': …`) and exits 2.
//! None panics, whatever the operator types.

use chat_worker::config::{MAX_CONCURRENCY, check_worker_id};
use chat_worker::decode::CHANNELS;
use chat_worker::model::Fingerprint;
use chrono::{DateTime, TimeDelta, Utc};

/// Most messages per page of `worker history`.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// Most locks `worker locks list` reads (one Redis read each).
pub const MAX_LOCKS_LISTED: usize = 100_000;
/// Most dead letters `worker dead list` holds at once (unacked, in memory) or replays.
pub const MAX_DEAD_LETTERS: usize = 1_000_000;
/// The furthest back `--since` reaches: a century.
pub const MAX_SINCE_DAYS: u64 = 36_500;
/// CONTRACT §2's bound on `customer.external_id`.
const MAX_CUSTOMER_CHARS: usize = 128;
/// The shortest retention `worker prune` accepts: the longest a copy of a message
/// is expected to arrive after its original (README, "Retention"). WhatsApp's
/// webhooks, the longest-retrying of the channels, are retried for up to 7 days.
pub const MIN_RETENTION_DAYS: u64 = 7;
/// Most rows one prune transaction deletes.
pub const MAX_PRUNE_BATCH: u32 = 100_000;

/// A whole number from `min` to `max`, written in decimal digits alone (no sign,
/// no spaces, no `1e3`).
fn whole_number(text: &str, min: u64, max: u64) -> Result<u64, String> {
    let allowed = || format!("must be a whole number from {min} to {max}");
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(allowed());
    }
    match text.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(allowed()),
    }
}

fn whole_usize(text: &str, max: usize) -> Result<usize, String> {
    whole_number(text, 1, max as u64).and_then(|n| usize::try_from(n).map_err(|e| e.to_string()))
}

fn whole_u32(text: &str, max: u32) -> Result<u32, String> {
    whole_number(text, 1, u64::from(max)).and_then(|n| u32::try_from(n).map_err(|e| e.to_string()))
}

pub fn page(text: &str) -> Result<u32, String> {
    whole_u32(text, u32::MAX)
}

pub fn page_size(text: &str) -> Result<u32, String> {
    whole_u32(text, MAX_PAGE_SIZE)
}

pub fn concurrency(text: &str) -> Result<usize, String> {
    whole_usize(text, MAX_CONCURRENCY)
}

pub fn locks_limit(text: &str) -> Result<usize, String> {
    whole_usize(text, MAX_LOCKS_LISTED)
}

pub fn dead_limit(text: &str) -> Result<usize, String> {
    whole_usize(text, MAX_DEAD_LETTERS)
}

pub fn prune_batch(text: &str) -> Result<u32, String> {
    whole_u32(text, MAX_PRUNE_BATCH)
}

pub fn worker_id(text: &str) -> Result<String, String> {
    check_worker_id(text).map(|()| text.to_owned())
}

pub fn fingerprint(text: &str) -> Result<Fingerprint, String> {
    Fingerprint::parse(text).ok_or_else(|| "is not a fingerprint (64 lowercase hex characters)".to_owned())
}

pub fn tenant(text: &str) -> Result<uuid::Uuid, String> {
    uuid::Uuid::parse_str(text)
        .map_err(|_| "must be a tenant id: a UUID such as 0b6f1c7e-2f0a-4c43-9d43-8f1f2b8a9a10".to_owned())
}

pub fn channel(text: &str) -> Result<String, String> {
    if CHANNELS.contains(&text) {
        Ok(text.to_owned())
    } else {
        Err(format!("must be one of {}", CHANNELS.join(", ")))
    }
}

pub fn customer(text: &str) -> Result<String, String> {
    match text.chars().count() {
        1..=MAX_CUSTOMER_CHARS => Ok(text.to_owned()),
        _ => Err(format!("must be the customer's external id, 1 to {MAX_CUSTOMER_CHARS} characters")),
    }
}

/// `--since`: a moment, or a span back from when the command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    At(DateTime<Utc>),
    Ago(TimeDelta),
}

impl Since {
    /// `None` only if `now` minus the span is before chrono's earliest time,
    /// which a century back from any real clock is not.
    pub fn resolve(self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Since::At(t) => Some(t),
            Since::Ago(span) => now.checked_sub_signed(span),
        }
    }
}

/// `2026-11-21T10:00:00Z`, or `30m` / `24h` / `7d`, at most a century.
pub fn since(text: &str) -> Result<Since, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(Since::At(t.with_timezone(&Utc)));
    }
    span(text).map(Since::Ago).ok_or_else(|| {
        format!(
            "must be an RFC 3339 time such as 2026-11-21T10:00:00Z, or a span back from now such as \
             30m, 24h or 7d, of at most {MAX_SINCE_DAYS}d"
        )
    })
}

/// `worker prune --older-than`: a span of at least [`MIN_RETENTION_DAYS`] days,
/// such as `90d` or `2160h`, at most a century.
pub fn older_than(text: &str) -> Result<TimeDelta, String> {
    let floor = TimeDelta::days(MIN_RETENTION_DAYS as i64);
    match span(text) {
        Some(span) if span >= floor => Ok(span),
        Some(_) => Err(format!(
            "keeps less than {MIN_RETENTION_DAYS}d: a copy of a message that arrives after its rows are \
             deleted would be answered a second time (see the README, \"Retention\")"
        )),
        None => Err(format!(
            "must be a span such as 90d or 2160h, from {MIN_RETENTION_DAYS}d to {MAX_SINCE_DAYS}d"
        )),
    }
}

/// `30m`, `24h`, `7d`: whole minutes, hours or days, at most a century.
fn span(text: &str) -> Option<TimeDelta> {
    let (number, per_unit) = if let Some(n) = text.strip_suffix('m') {
        (n, 60)
    } else if let Some(n) = text.strip_suffix('h') {
        (n, 3600)
    } else if let Some(n) = text.strip_suffix('d') {
        (n, 86_400)
    } else {
        return None;
    };
    let max = MAX_SINCE_DAYS * 86_400 / per_unit;
    let n = whole_number(number, 0, max).ok()?;
    // Within i64 seconds by the bound above, so neither conversion can fail.
    TimeDelta::try_seconds(i64::try_from(n * per_unit).ok()?)
}

#[cfg(test)]
#[path = "values_tests.rs"]
mod tests;
