//! What a responder says to one message (CONTRACT §4a), before it is stored.

use super::Reference;

#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub text: String,
    pub handoff: bool,
    pub confidence: f32,
    /// The catalog items the reply is about, with their positions.
    pub references: Vec<Reference>,
    pub usage: Usage,
}

/// What answering cost, where the responder knows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub model: Option<String>,
    pub prompt_tokens: Option<i32>,
    pub completion_tokens: Option<i32>,
    pub cost: Option<f64>,
}

impl Answer {
    pub fn plain(text: &str, handoff: bool, confidence: f32) -> Self {
        Self { text: text.to_owned(), handoff, confidence, references: Vec::new(), usage: Usage::default() }
    }
}
