//! Reference context: the latest numbered list a conversation was shown, so that
//! "2", "the second one", "first" or "last" can be resolved (CONTRACT §4a).
//!
//! The one owner of that list: its Redis key and encoding ([`ListMemory`]; the
//! value rides along with the lock's claim and completion, so it costs no round
//! trip of its own), and which of what each source knows wins ([`latest`]):
//! Redis keeps it per customer for `reference_ttl_secs`; PostgreSQL has every
//! reply's references, and answers when Redis does not.

use std::time::Duration;

use uuid::Uuid;

use crate::keys::Keys;
use crate::model::{Direction, HistoryItem, Inbound, NumberedList};

/// Where and for how long a customer's latest list is kept in Redis.
#[derive(Debug, Clone)]
pub struct ListMemory {
    keys: Keys,
    ttl: Duration,
}

/// The Redis key of one customer's latest list (per tenant, channel and
/// customer, which is known before the conversation is, so that it can ride
/// along with the claim: it is in the conversation's shard, as the message's
/// lock is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListKey(String);

impl ListKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl ListMemory {
    pub fn new(key_prefix: &str, ttl: Duration) -> Self {
        Self { keys: Keys::new(key_prefix), ttl }
    }

    pub fn key(&self, inbound: &Inbound) -> ListKey {
        ListKey(self.keys.refs(inbound))
    }

    /// The list Redis gave back, if it holds one (anything else is ignored: the
    /// database still knows).
    pub fn recalled(fetched: Option<&[u8]>) -> Option<NumberedList> {
        fetched.and_then(|bytes| serde_json::from_slice(bytes).ok())
    }

    /// What to store under `key` so that the next message finds `list`: the
    /// value and how long it is kept.
    pub fn to_remember(&self, list: &NumberedList) -> Option<(Vec<u8>, Duration)> {
        serde_json::to_vec(list).ok().map(|bytes| (bytes, self.ttl))
    }
}

/// The newest list of `conversation_id` among what Redis recalled, what the
/// store kept, and the replies of the history.
pub fn latest(
    conversation_id: Uuid,
    recalled: Option<NumberedList>,
    stored: Option<NumberedList>,
    history: &[HistoryItem],
) -> Option<NumberedList> {
    let from_history = history.iter().filter(|m| m.direction == Direction::Out).map(|m| NumberedList {
        conversation_id: Some(conversation_id),
        at: m.created_at,
        items: m.references.clone(),
    });
    newest(conversation_id, recalled.into_iter().chain(stored).chain(from_history))
}

/// The newest list among the candidates that belongs to `conversation_id`.
fn newest(conversation_id: Uuid, candidates: impl IntoIterator<Item = NumberedList>) -> Option<NumberedList> {
    candidates
        .into_iter()
        .filter(|l| l.conversation_id.is_none_or(|c| c == conversation_id) && l.items.len() >= 2)
        .max_by_key(|l| l.at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ItemKind, Reference};
    use chrono::DateTime;

    fn list(conv: Uuid, secs: i64, n: u32) -> NumberedList {
        let items =
            (1..=n).map(|p| Reference { kind: ItemKind::Product, id: Uuid::new_v4(), position: p }).collect();
        NumberedList {
            conversation_id: Some(conv),
            at: DateTime::from_timestamp(secs, 0).unwrap_or_default(),
            items,
        }
    }

    #[test]
    fn the_newest_list_of_this_conversation_wins() {
        let conv = Uuid::new_v4();
        let older = list(conv, 100, 3);
        let newer = list(conv, 200, 2);
        let other_conversation = list(Uuid::new_v4(), 300, 4);
        let single = list(conv, 400, 1);
        let got = newest(conv, [older, newer.clone(), other_conversation, single]);
        assert_eq!(got, Some(newer));
    }

    #[test]
    fn a_newer_reply_in_the_history_beats_an_older_remembered_list() {
        let conv = Uuid::new_v4();
        let remembered = list(conv, 100, 3);
        let shown = list(conv, 200, 2);
        let history = [HistoryItem {
            direction: Direction::Out,
            text: "1. a 2. b".into(),
            references: shown.items.clone(),
            created_at: shown.at,
        }];
        assert_eq!(latest(conv, Some(remembered.clone()), None, &history), Some(shown));
        assert_eq!(latest(conv, Some(remembered.clone()), None, &[]), Some(remembered));
    }

    #[test]
    fn what_is_remembered_is_recalled() {
        let memory = ListMemory::new("p:", Duration::from_secs(60));
        let shown = list(Uuid::new_v4(), 100, 2);
        let (bytes, ttl) = memory.to_remember(&shown).expect("encodes");
        assert_eq!(ttl, Duration::from_secs(60));
        assert_eq!(ListMemory::recalled(Some(&bytes)), Some(shown));
        assert_eq!(ListMemory::recalled(Some(b"not json")), None);
    }
}
