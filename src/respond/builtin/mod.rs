//! The offline, deterministic responder (CONTRACT §4a). In order:
//!
//! 1. a conversation in handoff gets the holding reply;
//! 2. "human", "agent", "person" hand off;
//! 3. a pointer back at the latest list ("2", "the second one", "last", "that one")
//!    answers about that item;
//! 4. otherwise the better of a catalog search (with price bound) and a knowledge
//!    entry answers; a greeting is greeted;
//! 5. an answer less sure than the handoff threshold hands off instead.

mod faq;
mod position;
mod search;
mod text;

pub(crate) use text::price_text;

use futures_util::future::BoxFuture;

use self::position::Pointer;
use self::search::{Bound, Hit};
use super::{Answer, Context, RespondError, Responder};
use crate::model::{ConversationStatus, Direction, Reference};

const HANDOFF_WORDS: &[&str] = &["human", "agent", "person", "humans", "agents", "people"];
const GREETINGS: &[&str] = &[
    "hi",
    "hello",
    "hey",
    "hiya",
    "good",
    "morning",
    "afternoon",
    "evening",
    "thanks",
    "thank",
    "you",
    "ok",
    "okay",
    "bye",
    "goodbye",
    "there",
    "great",
    "cool",
];
const MAX_LISTED: usize = 5;

#[derive(Debug, Clone)]
pub struct Builtin {
    pub handoff_threshold: f32,
}

impl Default for Builtin {
    fn default() -> Self {
        Self { handoff_threshold: 0.4 }
    }
}

impl Builtin {
    pub fn answer(&self, ctx: &Context<'_>) -> Answer {
        let question = ctx.question();
        let words = text::words(&question);
        if ctx.conversation_status == ConversationStatus::Handoff {
            return Answer::plain(
                "Thanks, a member of our team has your conversation and will reply here shortly.",
                true,
                1.0,
            );
        }
        if words.iter().any(|w| HANDOFF_WORDS.contains(&w.as_str())) {
            return Answer::plain(
                "I'm connecting you with a member of our team. They will reply here shortly.",
                true,
                1.0,
            );
        }
        if let Some(pointer) = position::parse(&ctx.inbound.text)
            && let Some(answer) = self.resolve(ctx, pointer)
        {
            return answer;
        }

        let terms = text::terms(&words);
        let bound = Bound::parse(&words);
        let (hits, coverage) = search::search(ctx.catalog, &terms, bound);
        let listing = (!hits.is_empty()).then_some((0.5 + 0.45 * coverage, hits));
        let faq = faq::best(ctx.knowledge, &terms);
        let answer = match (listing, faq) {
            (Some((score, hits)), Some((_, faq_score))) if score >= faq_score => list(&hits, bound, score),
            (_, Some((entry, score))) => Answer::plain(&entry.content, false, score),
            (Some((score, hits)), None) => list(&hits, bound, score),
            (None, None) if words.iter().all(|w| GREETINGS.contains(&w.as_str())) => greeting(ctx),
            (None, None) => Answer::plain("", false, 0.0),
        };
        let threshold = ctx
            .tenant
            .settings
            .get("handoff_threshold")
            .and_then(|v| v.as_f64())
            .map_or(self.handoff_threshold, |t| t as f32);
        if answer.confidence < threshold {
            let mut unsure = Answer::plain(
                "I'm not sure I can answer that well, so I'm passing you to a member of our team. They will reply here shortly.",
                true,
                answer.confidence,
            );
            unsure.references = answer.references;
            return unsure;
        }
        answer
    }

    /// Answers about the item a pointer names, or `None` when there is nothing to point at.
    fn resolve(&self, ctx: &Context<'_>, pointer: Pointer) -> Option<Answer> {
        let list = ctx.latest_list.map(|l| l.items.as_slice()).unwrap_or_default();
        let chosen = match pointer {
            // By the number the list showed, not by index: an agent's list may
            // skip the number of an item that was dropped from its references.
            Pointer::Nth(n) if list.iter().any(|r| r.position == n) => list.iter().find(|r| r.position == n),
            Pointer::Nth(_) if !list.is_empty() => {
                let highest = list.iter().map(|r| r.position).max().unwrap_or(1);
                let text =
                    format!("I listed {} options; reply with a number from 1 to {highest}.", list.len());
                return Some(Answer::plain(&text, false, 0.6));
            }
            Pointer::Nth(_) => None,
            Pointer::Last => list.last(),
            // The item of the latest reply that was about exactly one.
            Pointer::That => ctx
                .history
                .iter()
                .rev()
                .find(|m| m.direction == Direction::Out && !m.references.is_empty())
                .and_then(|m| (m.references.len() == 1).then(|| &m.references[0])),
        }?;
        Some(describe(ctx, chosen))
    }
}

fn describe(ctx: &Context<'_>, reference: &Reference) -> Answer {
    let product = ctx.catalog.products.iter().find(|p| p.id == reference.id);
    let service = ctx.catalog.services.iter().find(|s| s.id == reference.id);
    let text = match (product, service) {
        (Some(p), _) => format!(
            "{} — {}.{} Would you like to order it?",
            p.name,
            text::price_text(p.price, &p.currency),
            sentence(&p.description)
        ),
        (None, Some(s)) => format!(
            "{} — {}{}.{} Would you like to book it?",
            s.name,
            text::price_text(s.price, &s.currency),
            s.duration_minutes.map(|m| format!(", {m} minutes")).unwrap_or_default(),
            sentence(&s.description)
        ),
        (None, None) => return Answer::plain("Sorry, that item is no longer available.", false, 0.6),
    };
    Answer { references: vec![reference.clone()], ..Answer::plain(&text, false, 0.95) }
}

fn sentence(description: &str) -> String {
    let d = description.trim();
    if d.is_empty() {
        String::new()
    } else if d.ends_with('.') {
        format!(" {d}")
    } else {
        format!(" {d}.")
    }
}

fn list(hits: &[Hit], bound: Bound, confidence: f32) -> Answer {
    let shown = &hits[..hits.len().min(MAX_LISTED)];
    let currency = shown.first().map(|h| h.currency.as_str()).unwrap_or("");
    let amount = |a: f64| text::price_text(Some(a), currency);
    let bound_text = match (bound.min, bound.max) {
        (Some(lo), Some(hi)) => format!(" between {} and {}", text::format_price(lo), amount(hi)),
        (None, Some(hi)) => format!(" under {}", amount(hi)),
        (Some(lo), None) => format!(" over {}", amount(lo)),
        (None, None) => String::new(),
    };
    let references: Vec<Reference> = shown
        .iter()
        .zip(1u32..)
        .map(|(h, position)| Reference { kind: h.kind, id: h.id, position })
        .collect();
    let lines: Vec<String> = shown
        .iter()
        .zip(1..)
        .map(|(h, n)| format!("{n}. {} — {}", h.name, text::price_text(h.price, &h.currency)))
        .collect();
    let more = if hits.len() > shown.len() {
        format!("\n…and {} more.", hits.len() - shown.len())
    } else {
        String::new()
    };
    let text = if shown.len() == 1 {
        let only = &shown[0];
        format!(
            "We have one option{bound_text}: {} — {}.",
            only.name,
            text::price_text(only.price, &only.currency)
        )
    } else {
        format!(
            "We have {} options{bound_text}:\n{}{more}\nReply with a number to hear more.",
            hits.len(),
            lines.join("\n")
        )
    };
    Answer { references, ..Answer::plain(&text, false, confidence) }
}

fn greeting(ctx: &Context<'_>) -> Answer {
    let custom = ctx.tenant.settings.get("greeting").and_then(|g| g.as_str());
    let name = ctx.inbound.customer_name.as_deref().map(|n| format!(" {n}")).unwrap_or_default();
    let text = custom.map(str::to_owned).unwrap_or_else(|| {
        format!(
            "Hello{name}! Welcome to {}. Ask me about our products and services, prices, or things like opening hours.",
            ctx.tenant.name
        )
    });
    Answer::plain(&text, false, 0.9)
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
#[path = "tests.rs"]
mod tests;
