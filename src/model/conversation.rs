//! A conversation's messages (direction, history item) and its status, as the shared tables
//! spell them (CONTRACT §5: `messages.direction`, `conversations.status`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Reference;

/// `in`: the customer wrote it; `out`: a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }

    /// The column's value; `None` for a value the table's CHECK does not allow.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "in" => Some(Direction::In),
            "out" => Some(Direction::Out),
            _ => None,
        }
    }
}

/// `conversations.status`. A message for a customer without a current
/// conversation is answered as `open` (the conversation is opened with the reply).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConversationStatus {
    #[default]
    Open,
    Handoff,
    Closed,
}

impl ConversationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationStatus::Open => "open",
            ConversationStatus::Handoff => "handoff",
            ConversationStatus::Closed => "closed",
        }
    }

    /// The column's value; `None` for a value the table's CHECK does not allow.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "open" => Some(ConversationStatus::Open),
            "handoff" => Some(ConversationStatus::Handoff),
            "closed" => Some(ConversationStatus::Closed),
            _ => None,
        }
    }
}

/// A message of a conversation's history, as the responders are shown it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryItem {
    pub direction: Direction,
    pub text: String,
    #[serde(default)]
    pub references: Vec<Reference>,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_names_are_the_tables_and_round_trip() {
        for d in [Direction::In, Direction::Out] {
            assert_eq!(Direction::parse(d.as_str()), Some(d));
            assert_eq!(serde_json::to_value(d).ok(), Some(serde_json::json!(d.as_str())));
        }
        for s in [ConversationStatus::Open, ConversationStatus::Handoff, ConversationStatus::Closed] {
            assert_eq!(ConversationStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).ok(), Some(serde_json::json!(s.as_str())));
        }
        assert_eq!(Direction::parse("sideways"), None);
        assert_eq!(ConversationStatus::parse("Open"), None);
    }
}
