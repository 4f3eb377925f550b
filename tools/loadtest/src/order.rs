//! The per-conversation order check that `bench` and `chaos` share (CONTRACT §3,
//! Conversations): each conversation's replies, in the order they arrive on
//! `chat.outbound`, must answer its messages in the order they were published.
//!
//! A reply answers the fingerprints in its body's `answers` (CONTRACT §4) and its
//! own `fingerprint`, so the check holds as it is once bursts are coalesced (one
//! reply answering several messages). A conversation is in order when every
//! reply answers only messages published after all those its earlier replies
//! answered. Only the first copy of a reply counts (the delivery service drops a
//! second one by its `reply_id`), and only the first publish of a message (a
//! duplicate copy has no place of its own).
//!
//! What it does not check, the callers do: that each message is answered exactly
//! once.

use std::collections::{HashMap, HashSet};

use chat_worker::model::Fingerprint;
use serde_json::Value;

/// What a reply says it answers, read from its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    pub reply_id: String,
    /// `answers`, then the reply's own `fingerprint` if `answers` lacks it.
    pub fingerprints: Vec<String>,
}

impl Answered {
    /// `None` for a body that is not a reply (no `reply_id` or `fingerprint`).
    pub fn parse(body: &[u8]) -> Option<Self> {
        let body: Value = serde_json::from_slice(body).ok()?;
        let reply_id = body.get("reply_id")?.as_str()?.to_owned();
        let own = body.get("fingerprint")?.as_str()?.to_owned();
        let mut fingerprints: Vec<String> = body
            .get("answers")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        if !fingerprints.contains(&own) {
            fingerprints.push(own);
        }
        Some(Self { reply_id, fingerprints })
    }
}

/// A message as the check knows it: its fingerprint (CONTRACT §2) and its
/// conversation (tenant, channel, customer).
pub fn identity(body: &[u8]) -> Option<(String, String)> {
    let m: Value = serde_json::from_slice(body).ok()?;
    let field = |v: &Value| v.as_str().map(str::to_owned);
    let (tenant, channel) = (field(&m["tenant_id"])?, field(&m["channel"])?);
    let (customer, id, text) =
        (field(&m["customer"]["external_id"])?, field(&m["message_id"])?, field(&m["text"])?);
    let fingerprint = Fingerprint::of(&tenant, &channel, &customer, &id, &text).as_str().to_owned();
    Some((fingerprint, format!("{tenant}/{channel}/{customer}")))
}

/// What one reply did to the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Its conversation's replies are still in publish order.
    InOrder,
    /// It answers a message published before one an earlier reply answered.
    OutOfOrder,
    /// A copy of a reply already counted.
    Repeat,
    /// It answers no message that was published (the caller counts it as stray).
    Unknown,
}

#[derive(Default)]
pub struct Order {
    /// Fingerprint -> (conversation, place in the publish order).
    messages: HashMap<String, (usize, u64)>,
    conversation_ids: HashMap<String, usize>,
    conversations: Vec<Conversation>,
    replies: HashSet<String>,
    published: u64,
}

#[derive(Default)]
struct Conversation {
    name: String,
    /// The publish places of its messages, in publish order.
    published: Vec<u64>,
    /// Their fingerprints, in the same order (to find them in the workers' logs).
    fingerprints: Vec<String>,
    /// The publish places its replies answered, in the order they arrived.
    answered: Vec<u64>,
    /// The latest publish place any of its replies answered so far.
    highest: Option<u64>,
    late_replies: usize,
}

impl Conversation {
    /// "visitor-0: its messages answered in the order 1 2 4 3 5" (numbered
    /// within the conversation from 1, the first 20).
    fn describe(&self) -> String {
        let numbers: Vec<String> = self
            .answered
            .iter()
            .take(20)
            .map(|place| self.published.binary_search(place).map_or("?".into(), |i| (i + 1).to_string()))
            .collect();
        let more = if self.answered.len() > 20 { " …" } else { "" };
        let fingerprints: Vec<&str> =
            self.fingerprints.iter().take(20).map(|fp| fp.get(..12).unwrap_or(fp)).collect();
        format!(
            "{}: its messages answered in the order {}{more} (messages 1… are {})",
            self.name,
            numbers.join(" "),
            fingerprints.join(" ")
        )
    }
}

/// The check's result.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Conversations with at least one message published.
    pub conversations: usize,
    /// … of which received replies out of publish order.
    pub out_of_order: usize,
    /// Replies that answered a message published before one already answered.
    pub late_replies: usize,
    /// One conversation out of order, for the report.
    pub example: Option<String>,
}

impl Tally {
    pub fn holds(&self) -> bool {
        self.out_of_order == 0
    }

    /// "OK: 360 conversations, 0 out of order" and the like.
    pub fn line(&self) -> String {
        let verdict = if self.holds() { "OK" } else { "**VIOLATED**" };
        let example = self.example.as_ref().map(|e| format!(", e.g. {e}")).unwrap_or_default();
        format!(
            "{verdict}: {} conversations, {} out of order ({} late replies){example}",
            self.conversations, self.out_of_order, self.late_replies
        )
    }
}

impl Order {
    /// Records a publish; a copy of an earlier message keeps the first one's place.
    pub fn published(&mut self, fingerprint: &str, conversation: &str) {
        if self.messages.contains_key(fingerprint) {
            return;
        }
        let next = self.conversations.len();
        let index = *self.conversation_ids.entry(conversation.to_owned()).or_insert(next);
        if index == next {
            self.conversations.push(Conversation { name: conversation.to_owned(), ..Default::default() });
        }
        self.conversations[index].published.push(self.published);
        self.conversations[index].fingerprints.push(fingerprint.to_owned());
        self.messages.insert(fingerprint.to_owned(), (index, self.published));
        self.published += 1;
    }

    /// Records a reply, in the order replies arrived.
    pub fn replied(&mut self, reply: &Answered) -> Verdict {
        if !self.replies.insert(reply.reply_id.clone()) {
            return Verdict::Repeat;
        }
        // Its answered messages' places, per conversation (one, unless a reply mixes them).
        let mut places: Vec<(usize, u64)> =
            reply.fingerprints.iter().filter_map(|fp| self.messages.get(fp).copied()).collect();
        if places.is_empty() {
            return Verdict::Unknown;
        }
        places.sort_unstable();
        let mut verdict = Verdict::InOrder;
        for group in places.chunk_by(|a, b| a.0 == b.0) {
            let (index, earliest) = group[0];
            let latest = group[group.len() - 1].1;
            let conversation = &mut self.conversations[index];
            conversation.answered.extend(group.iter().map(|(_, place)| *place));
            if conversation.highest.is_some_and(|highest| earliest < highest) {
                conversation.late_replies += 1;
                verdict = Verdict::OutOfOrder;
            }
            conversation.highest = conversation.highest.max(Some(latest));
        }
        verdict
    }

    pub fn tally(&self) -> Tally {
        let late = || self.conversations.iter().filter(|c| c.late_replies > 0);
        Tally {
            conversations: self.conversations.len(),
            out_of_order: late().count(),
            late_replies: late().map(|c| c.late_replies).sum(),
            example: late().next().map(Conversation::describe),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(id: &str, answers: &[&str]) -> Answered {
        Answered { reply_id: id.into(), fingerprints: answers.iter().map(|a| (*a).to_owned()).collect() }
    }

    fn published(messages: &[(&str, &str)]) -> Order {
        let mut order = Order::default();
        for (fp, conversation) in messages {
            order.published(fp, conversation);
        }
        order
    }

    #[test]
    fn replies_in_publish_order_hold_and_interleaved_conversations_do_not_disturb_each_other() {
        let mut order = published(&[("a1", "A"), ("b1", "B"), ("a2", "A"), ("b2", "B")]);
        for (id, fp) in [("r-b1", "b1"), ("r-a1", "a1"), ("r-a2", "a2"), ("r-b2", "b2")] {
            assert_eq!(order.replied(&reply(id, &[fp])), Verdict::InOrder);
        }
        let tally = order.tally();
        assert!(tally.holds());
        assert_eq!((tally.conversations, tally.out_of_order), (2, 0));
    }

    #[test]
    fn a_reply_overtaking_an_earlier_message_breaks_its_conversation_only() {
        let mut order = published(&[("a1", "A"), ("a2", "A"), ("b1", "B")]);
        assert_eq!(order.replied(&reply("r-a2", &["a2"])), Verdict::InOrder);
        assert_eq!(order.replied(&reply("r-a1", &["a1"])), Verdict::OutOfOrder);
        assert_eq!(order.replied(&reply("r-b1", &["b1"])), Verdict::InOrder);
        let tally = order.tally();
        assert_eq!((tally.out_of_order, tally.late_replies), (1, 1));
        assert_eq!(
            tally.example.as_deref(),
            Some("A: its messages answered in the order 2 1 (messages 1… are a1 a2)")
        );
    }

    #[test]
    fn a_coalesced_reply_answers_its_whole_burst_and_the_next_must_come_after_it() {
        let mut order = published(&[("a1", "A"), ("a2", "A"), ("a3", "A"), ("a4", "A")]);
        assert_eq!(order.replied(&reply("r-a3", &["a1", "a2", "a3"])), Verdict::InOrder);
        assert_eq!(order.replied(&reply("r-a4", &["a4"])), Verdict::InOrder);
        assert!(order.tally().holds());

        // A burst answered after a later message was.
        let mut order = published(&[("a1", "A"), ("a2", "A"), ("a3", "A")]);
        assert_eq!(order.replied(&reply("r-a3", &["a3"])), Verdict::InOrder);
        assert_eq!(order.replied(&reply("r-a2", &["a1", "a2"])), Verdict::OutOfOrder);
    }

    #[test]
    fn copies_of_messages_and_of_replies_have_no_place_of_their_own() {
        // a1's copy is published after a2: a2 answered before a1's copy is in order.
        let mut order = published(&[("a1", "A"), ("a2", "A"), ("a1", "A")]);
        assert_eq!(order.replied(&reply("r-a1", &["a1"])), Verdict::InOrder);
        assert_eq!(order.replied(&reply("r-a2", &["a2"])), Verdict::InOrder);
        // A reply published again (a crash between publish and completion) is dropped downstream.
        assert_eq!(order.replied(&reply("r-a1", &["a1"])), Verdict::Repeat);
        assert_eq!(order.replied(&reply("r-x", &["unknown"])), Verdict::Unknown);
        assert!(order.tally().holds());
    }

    #[test]
    fn a_reply_body_answers_its_answers_and_its_own_fingerprint() {
        let body = br#"{"reply_id":"reply:c","fingerprint":"c","answers":["a","b","c"],"text":"hi"}"#;
        assert_eq!(Answered::parse(body), Some(reply("reply:c", &["a", "b", "c"])));
        let older = br#"{"reply_id":"reply:c","fingerprint":"c","text":"hi"}"#;
        assert_eq!(Answered::parse(older), Some(reply("reply:c", &["c"])));
        assert_eq!(Answered::parse(b"{}"), None);
        assert_eq!(Answered::parse(b"not json"), None);
    }

    #[test]
    fn identity_is_the_worker_s_fingerprint_and_conversation() {
        let body = br#"{"message_id":"wamid.HBgMMjU0NzAwMDAwMDAxFQIAEhgg","tenant_id":"0b6f1c7e-2f0a-4c43-9d43-8f1f2b8a9a10","channel":"whatsapp","customer":{"external_id":"+254700000001"},"text":"Do you have running shoes under 5000?"}"#;
        let (fingerprint, conversation) = identity(body).expect("a message");
        // CONTRACT §2's example.
        assert_eq!(fingerprint, "86acff0386cd6104da65408b802f29df6ca81af393c03a7d4aff623921414521");
        assert_eq!(conversation, "0b6f1c7e-2f0a-4c43-9d43-8f1f2b8a9a10/whatsapp/+254700000001");
    }
}
