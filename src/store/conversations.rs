use uuid::Uuid;

use crate::model::ConversationStatus;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub id: Uuid,
    pub status: ConversationStatus,
}
