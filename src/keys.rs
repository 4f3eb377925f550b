//! Every Redis key the worker writes, in one place, laid out for Redis Cluster.
//!
//! A cluster puts a key in the slot of its hash tag (the text between its first
//! `{` and `}`), and a script may only touch keys of one slot. So the keys one
//! script needs share a tag:
//!
//! - a message's keys and its conversation's keys carry the conversation's
//!   **shard**, `{xx}`: two hex digits of the SHA-256 of (tenant, channel,
//!   customer). The claim reads the message's state and lock and the
//!   conversation's latest list in one script, and later per-conversation keys
//!   (turns, bursts) join them in the same slot;
//! - what a sweep must find across the fleet (fingerprints in processing) is one
//!   sorted set per shard: 256 keys, each written by 1/256 of the messages, so
//!   no key is hot and every slot of a large cluster can be used;
//! - keys no script shares (liveness, the sweeper's turn, cache entries,
//!   statistics) have no tag and spread by their own name.
//!
//! Layout (`<p>` is `redis.key_prefix`, which may not contain braces):
//!
//! | key | type | what |
//! |---|---|---|
//! | `<p>{xx}:state:<fp>` | hash | a message's processing state |
//! | `<p>{xx}:lock:<fp>` | string | its lock: `<token>\|<instance>\|<worker id>` |
//! | `<p>{xx}:inflight` | sorted set | fingerprints in processing, by start time |
//! | `<p>{xx}:refs:<tenant>:<channel>:<customer>` | string | the conversation's latest list |
//! | `<p>{xx}:line:<tenant>:<channel>:<customer>` | sorted set | the conversation's messages waiting for or holding its turn, by intake time |
//! | `<p>{xx}:turns:<tenant>:<channel>:<customer>` | hash | each of those entries' status (`<status>\|<instance>\|<worker id>\|<since ms>`), and `.current`, the one being answered |
//! | `<p>alive:<instance>` | string | a running process (worker id) |
//! | `<p>wake:<instance>` | pub/sub channel | "your turn": a fingerprint whose message that process holds, waiting |
//! | `<p>sweeper` | string | whose turn the fleet-wide sweep is |
//! | `<p>pause:<endpoint>` | string | until when (ms) the fleet calls no responder at `<endpoint>` (a hash of its kind and URL): it asked to slow down |
//! | `<p>pauses:<endpoint>` | pub/sub channel | such a pause, announced as it begins |
//! | `<p>tokens:<tenant>:<period>` | string | tokens the tenant's messages spent on a paid responder in that period (`d20261203`, `h2026120314`, `m202612`), kept a day past its end |
//! | `<p>rate:<tenant>` | hash | the tenant's rate limit: `tat`, the theoretical arrival time (µs, Redis's clock) of its next message, and `tail`, when the last one turned away comes back |
//! | `<p>cache:<kind>:<tenant>` | string | shared catalog cache entry |
//! | `<p>stats:<tenant or all>:<minute>` | string | cached `worker stats` figures |

use std::fmt;

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::model::{Fingerprint, Inbound};

/// How many shards conversations are spread over.
pub const SHARDS: u16 = 256;

/// One of [`SHARDS`] groups of conversations; all keys of a conversation, and of
/// its messages, are in its shard's cluster slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shard(u8);

impl Shard {
    /// The shard of the conversation (tenant, channel, customer), with the
    /// fields length-prefixed as in the fingerprint, so no two lists collide.
    pub fn of_conversation(tenant_id: &Uuid, channel: &str, customer_external_id: &str) -> Self {
        let mut hasher = Sha256::new();
        for field in [tenant_id.to_string().as_str(), channel, customer_external_id] {
            hasher.update(field.len().to_string().as_bytes());
            hasher.update(b":");
            hasher.update(field.as_bytes());
        }
        Shard(hasher.finalize()[0])
    }

    pub fn of(inbound: &Inbound) -> Self {
        Self::of_conversation(&inbound.tenant_id, &inbound.channel, &inbound.customer_external_id)
    }

    /// Every shard, in order.
    pub fn all() -> impl Iterator<Item = Shard> {
        (0..=u8::MAX).map(Shard)
    }
}

/// The hash tag, `{xx}`.
impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{:02x}}}", self.0)
    }
}

/// A conversation's turn keys, all in its shard's slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationKeys {
    pub shard: Shard,
    /// Sorted set: fingerprints in line for the conversation's turn, by intake time.
    pub line: String,
    /// Hash: each entry's status, and `.current`.
    pub turns: String,
}

/// The key names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn state(&self, shard: Shard, fp: &Fingerprint) -> String {
        format!("{}{shard}:state:{fp}", self.prefix)
    }

    pub fn lock(&self, shard: Shard, fp: &Fingerprint) -> String {
        format!("{}{shard}:lock:{fp}", self.prefix)
    }

    pub fn inflight(&self, shard: Shard) -> String {
        format!("{}{shard}:inflight", self.prefix)
    }

    pub fn refs(&self, inbound: &Inbound) -> String {
        format!(
            "{}{}:refs:{}:{}:{}",
            self.prefix,
            Shard::of(inbound),
            inbound.tenant_id,
            inbound.channel,
            inbound.customer_external_id
        )
    }

    /// The keys of one conversation: its latest list, its line and its turns.
    pub fn conversation(&self, inbound: &Inbound) -> ConversationKeys {
        let (shard, tenant, channel, customer) =
            (Shard::of(inbound), inbound.tenant_id, &inbound.channel, &inbound.customer_external_id);
        let named = |what: &str| format!("{}{shard}:{what}:{tenant}:{channel}:{customer}", self.prefix);
        ConversationKeys { shard, line: named("line"), turns: named("turns") }
    }

    /// The channel a process listens on for "your turn" (no tag: a channel, not a key).
    pub fn wake_channel(&self, instance: &str) -> String {
        format!("{}wake:{instance}", self.prefix)
    }

    /// Until when (ms since the epoch) calls to responder `endpoint` are paused.
    pub fn pause(&self, endpoint: &str) -> String {
        format!("{}pause:{endpoint}", self.prefix)
    }

    /// Where a pause of responder `endpoint` is announced to the fleet.
    pub fn pause_channel(&self, endpoint: &str) -> String {
        format!("{}pauses:{endpoint}", self.prefix)
    }

    /// Tokens tenant `tenant` spent in period `period` (see `model::budget`).
    pub fn tokens(&self, tenant: &Uuid, period: &str) -> String {
        format!("{}tokens:{tenant}:{period}", self.prefix)
    }

    /// The tenant's rate limit state (see `dedup::rate`).
    pub fn rate(&self, tenant: &Uuid) -> String {
        format!("{}rate:{tenant}", self.prefix)
    }

    pub fn alive(&self, instance: &str) -> String {
        format!("{}alive:{instance}", self.prefix)
    }

    pub fn sweeper(&self) -> String {
        format!("{}sweeper", self.prefix)
    }

    pub fn cache(&self, kind: &str, tenant: &Uuid) -> String {
        format!("{}cache:{kind}:{tenant}", self.prefix)
    }

    /// `scope`: a tenant id, or `all`.
    pub fn stats(&self, scope: &str, minute: i64) -> String {
        format!("{}stats:{scope}:{minute}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The part of `key` Redis Cluster hashes (its first `{…}` when non-empty).
    fn hash_tag(key: &str) -> &str {
        match key.find('{').and_then(|open| key[open + 1..].find('}').map(|len| (open, len))) {
            Some((open, len)) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        }
    }

    #[test]
    fn a_message_and_its_conversation_share_one_slot_and_shards_differ() {
        let keys = Keys::new("cw:");
        let tenant = Uuid::from_u128(7);
        let fp = Fingerprint::of(&tenant.to_string(), "sms", "+1", "m1", "hi");
        let inbound = Inbound {
            message_id: "m1".into(),
            tenant_id: tenant,
            channel: "sms".into(),
            customer_external_id: "+1".into(),
            customer_name: None,
            conversation_id: None,
            text: "hi".into(),
            received_at: chrono::Utc::now(),
            attachments: serde_json::Value::Null,
            metadata: serde_json::Value::Null,
        };
        let shard = Shard::of(&inbound);
        let tags: std::collections::BTreeSet<String> = [
            keys.state(shard, &fp),
            keys.lock(shard, &fp),
            keys.inflight(shard),
            keys.refs(&inbound),
            keys.conversation(&inbound).line,
            keys.conversation(&inbound).turns,
        ]
        .iter()
        .map(|k| hash_tag(k).to_owned())
        .collect();
        assert_eq!(tags.len(), 1, "{tags:?}");
        assert_eq!(keys.state(shard, &fp), format!("cw:{shard}:state:{fp}"));
        // Customer ids spread over the shards (not all in a few slots).
        let used: std::collections::BTreeSet<Shard> =
            (0..4096).map(|i| Shard::of_conversation(&tenant, "sms", &format!("+{i}"))).collect();
        assert!(used.len() > 250, "{} shards used", used.len());
        assert_eq!(Shard::all().count(), usize::from(SHARDS));
    }
}
