//! The catalog items a reply is about (`references`, CONTRACT §4), and a reply
//! that listed two or more of them: what "the second one" resolves against.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a catalog item is: the two tables a reference can point into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemKind {
    Product,
    Service,
}

impl ItemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Product => "product",
            ItemKind::Service => "service",
        }
    }
}

/// A catalog item a reply is about, with the number the reply showed it under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    pub kind: ItemKind,
    pub id: Uuid,
    pub position: u32,
}

/// A reply that listed two or more items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumberedList {
    pub conversation_id: Option<Uuid>,
    pub at: DateTime<Utc>,
    pub items: Vec<Reference>,
}
