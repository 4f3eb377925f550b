use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub id: Uuid,
    /// `open`, `handoff` or `closed`.
    pub status: String,
}
