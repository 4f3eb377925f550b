//! A conversation's line: its messages, in the order the worker took them
//! from `worker.inbound`, waiting for or holding the conversation's one turn
//! (CONTRACT §3, Conversations).
//!
//! Two keys in the conversation's slot (see [`crate::keys`]): a sorted set of
//! fingerprints by intake time (µs, stamped when the delivery was read off the
//! broker, so that one process keeps its deliveries' order exactly), and a
//! hash of each entry's status plus `.current`, the one being answered. The
//! claim takes the lock only for the first in line while nothing is being
//! answered; completing leaves the line and tells the next one's process
//! ([`super::wakes`]); failing keeps the place (the retry comes back to it);
//! a dead letter leaves it.

/// What a delivery brings to its claim about its place in line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InLine {
    /// Its intake time, µs: its place in line if it has none yet.
    pub intake_us: i64,
    /// This delivery stood in line before (so a missing place means Redis lost it).
    pub stood_before: bool,
    /// An entry ahead found abandoned, `<fp>|<since>`, to remove if unchanged.
    pub skip: Option<String>,
    /// The message it waited behind last time: if that one's state says it
    /// ended, the claim takes it out of the line (its end was not recorded there).
    pub ahead: Option<crate::model::Fingerprint>,
    /// The delivery of the conversation read just before this one by this
    /// process, while it waits in line: should it have no place (Redis lost
    /// the line), this one does not take the turn ahead of it either.
    pub before: Option<crate::model::Fingerprint>,
    /// Its first claim, after it took its place as it was read (`Dedup::join`):
    /// the one answering the conversation hears of it now (it may coalesce it).
    pub joined_at_read: bool,
}

/// One entry of a line, as the hash holds it: `<status>|<instance>|<worker id>|<since ms>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnEntry {
    pub status: EntryStatus,
    /// The process that holds the delivery (for `waiting` and `taken`), or
    /// that parked it.
    pub instance: String,
    pub worker_id: String,
    /// When the entry last changed, ms since the epoch.
    pub since_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryStatus {
    /// A process holds the delivery, waiting for its turn.
    Waiting,
    /// Claimed: being answered.
    Taken,
    /// Failed or deferred: the delivery is in a retry queue and comes back.
    Parked,
}

impl EntryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryStatus::Waiting => "waiting",
            EntryStatus::Taken => "taken",
            EntryStatus::Parked => "parked",
        }
    }
}

impl TurnEntry {
    /// The entry `raw` describes; `None` for anything else (someone else's
    /// writing, or no entry).
    pub fn parse(raw: &str) -> Option<Self> {
        let mut parts = raw.splitn(4, '|');
        let status = match parts.next()? {
            "waiting" => EntryStatus::Waiting,
            "taken" => EntryStatus::Taken,
            "parked" => EntryStatus::Parked,
            _ => return None,
        };
        let instance = parts.next()?.to_owned();
        let worker_id = parts.next()?.to_owned();
        let since_ms = parts.next()?.parse().ok()?;
        Some(Self { status, instance, worker_id, since_ms })
    }

    /// What the claim script compares to remove exactly this entry.
    pub fn skip_token(&self, fp: &str) -> String {
        format!("{fp}|{}", self.since_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_and_anything_else_is_none() {
        let e = TurnEntry::parse("taken|abc|w-1|1700000000000").expect("entry");
        assert_eq!(e.status, EntryStatus::Taken);
        assert_eq!(
            (e.instance.as_str(), e.worker_id.as_str(), e.since_ms),
            ("abc", "w-1", 1_700_000_000_000)
        );
        assert_eq!(e.skip_token("fp"), "fp|1700000000000");
        for raw in ["", "taken", "taken|a|b", "taken|a|b|x", "running|a|b|1"] {
            assert_eq!(TurnEntry::parse(raw), None, "{raw}");
        }
        // A worker id with a bar in it stays whole up to the last field.
        assert!(TurnEntry::parse("waiting|i|w|x|1").is_none());
    }
}
