//! The offline, deterministic responder.
//!
//! For now it covers handoff (CONTRACT §4a: "human", "agent", "person", and the
//! holding reply while a conversation is in handoff) and acknowledges everything
//! else; catalog search, positional references and FAQ answers arrive with the
//! cached context (issue 3).

use futures_util::future::BoxFuture;
use serde_json::Value;

use super::{Answer, Context, RespondError, Responder};

#[derive(Debug, Default, Clone)]
pub struct Builtin;

const HANDOFF_WORDS: [&str; 3] = ["human", "agent", "person"];

impl Builtin {
    pub fn answer(&self, ctx: &Context<'_>) -> Answer {
        let text = ctx.inbound.text.to_lowercase();
        let asks_for_human =
            text.split(|c: char| !c.is_alphanumeric()).any(|word| HANDOFF_WORDS.contains(&word));
        let name = ctx.inbound.customer_name.as_deref().unwrap_or("there");
        if ctx.conversation.status == "handoff" {
            return answer(
                "Thanks, a member of our team has your conversation and will reply here shortly.",
                true,
                1.0,
            );
        }
        if asks_for_human {
            return answer(
                "I'm connecting you with a member of our team. They will reply here shortly.",
                true,
                1.0,
            );
        }
        answer(
            &format!("Hi {name}, thanks for your message. We'll get back to you with the details shortly."),
            false,
            0.5,
        )
    }
}

fn answer(text: &str, handoff: bool, confidence: f32) -> Answer {
    Answer { text: text.to_owned(), handoff, confidence, references: Value::Array(Vec::new()) }
}

impl Responder for Builtin {
    fn name(&self) -> &str {
        "builtin"
    }

    fn respond<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, Result<Answer, RespondError>> {
        Box::pin(async move { Ok(self.answer(ctx)) })
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::decode::Inbound;
    use crate::store::Conversation;

    fn inbound(text: &str) -> Inbound {
        Inbound {
            message_id: "m1".into(),
            tenant_id: Uuid::nil(),
            channel: "web".into(),
            customer_external_id: "c1".into(),
            customer_name: Some("Amina".into()),
            conversation_id: None,
            text: text.into(),
            received_at: Utc::now(),
            attachments: json!([]),
            metadata: json!({}),
        }
    }

    fn reply(text: &str, status: &str) -> Answer {
        let msg = inbound(text);
        let conv = Conversation { id: Uuid::nil(), status: status.into() };
        Builtin.answer(&Context { inbound: &msg, conversation: &conv })
    }

    #[test]
    fn asking_for_a_human_hands_off() {
        assert!(reply("Can I talk to a human please?", "open").handoff);
        assert!(reply("AGENT", "open").handoff);
        assert!(!reply("Do you sell agentic shoes?", "open").handoff);
    }

    #[test]
    fn a_conversation_in_handoff_gets_the_holding_reply() {
        let a = reply("hello?", "handoff");
        assert!(a.handoff);
        assert!(a.text.contains("team"));
    }
}
