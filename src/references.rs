//! Reference context: the latest numbered list a conversation was shown, so that
//! "2", "the second one", "first" or "last" can be resolved (CONTRACT §4a).
//!
//! Kept in Redis per customer (fetched in the same round trip as the claim) for
//! `reference_ttl_secs`; PostgreSQL has every reply's references, and answers
//! when Redis does not. The newest of what each source knows wins.

use uuid::Uuid;

use crate::model::{Inbound, NumberedList};

/// Redis key of a customer's latest list (per tenant, channel and customer, which
/// is known before the conversation is, so it can ride along with the claim).
pub fn redis_key(prefix: &str, inbound: &Inbound) -> String {
    format!("{prefix}refs:{}:{}:{}", inbound.tenant_id, inbound.channel, inbound.customer_external_id)
}

/// The newest list among the candidates that belongs to `conversation_id`.
pub fn latest(
    conversation_id: Uuid,
    candidates: impl IntoIterator<Item = NumberedList>,
) -> Option<NumberedList> {
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
        let got = latest(conv, [older, newer.clone(), other_conversation, single]);
        assert_eq!(got, Some(newer));
    }
}
