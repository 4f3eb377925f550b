//! A remote responder's answer (`openai`, `http`) is another party's word: it is
//! believed only as far as [`accept`] allows. [`from_config`](super::from_config)
//! wraps every non-builtin responder in [`Untrusted`], so each of their answers
//! passes here on its way to the pipeline, whatever the responder.
//!
//! - the text loses every NUL (PostgreSQL cannot store one in `text`: the
//!   write would fail) and is cut to [`MAX_REPLY_CHARS`]; no text left is no answer;
//! - `confidence` is clamped to 0..=1 (NaN is 0);
//! - `references` keep only the tenant's own active items, of the right kind,
//!   each once, at most [`MAX_REFERENCES`], with sane positions (see [`kept`]).

use std::collections::{HashMap, HashSet};

use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::{Answer, Context, RespondError, Responder};
use crate::model::catalog::Catalog;
use crate::model::{ItemKind, Reference};

/// As long as an inbound message may be (CONTRACT §2): room for a full answer,
/// not for a runaway one.
pub const MAX_REPLY_CHARS: usize = 4096;
/// Far more than any list a customer reads (the builtin responder lists 5).
pub const MAX_REFERENCES: usize = 50;

/// A responder whose answers are checked by [`accept`] against the message's context.
pub struct Untrusted<R>(pub R);

impl<R: std::fmt::Debug> std::fmt::Debug for Untrusted<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Untrusted").field(&self.0).finish()
    }
}

impl<R: Responder> Responder for Untrusted<R> {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn respond<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, Result<Answer, RespondError>> {
        Box::pin(async move { accept(self.0.respond(ctx).await?, ctx.catalog) })
    }
}

/// The answer as far as it can be believed, or why it cannot be used at all.
pub fn accept(answer: Answer, catalog: &Catalog) -> Result<Answer, RespondError> {
    let mut text: String = answer.text.chars().filter(|c| *c != '\0').collect();
    if let Some((cut, _)) = text.char_indices().nth(MAX_REPLY_CHARS) {
        text.truncate(cut);
    }
    if text.trim().is_empty() {
        return Err(RespondError::Unusable("the answer has no text".into()));
    }
    let confidence = if answer.confidence.is_nan() { 0.0 } else { answer.confidence.clamp(0.0, 1.0) };
    Ok(Answer { text, confidence, references: kept(answer.references, catalog), ..answer })
}

/// The references that name one of the tenant's active items with its kind,
/// each item once (its first mention), at most [`MAX_REFERENCES`].
///
/// Positions are the numbers the reply's text shows, which "the second one"
/// resolves against: when every kept reference has its own (1 or more) they are
/// kept, in order, gaps and all (a dropped item's number stays unused rather
/// than being taken by the next item); otherwise the answer gave no numbering
/// to trust, and they are numbered 1, 2, … in the order given.
pub fn kept(offered: Vec<Reference>, catalog: &Catalog) -> Vec<Reference> {
    // One pass over the catalog, whatever its size, for the ids offered.
    let offered_ids: HashSet<Uuid> = offered.iter().map(|r| r.id).collect();
    let products = catalog.products.iter().map(|p| (p.id, ItemKind::Product));
    let services = catalog.services.iter().map(|s| (s.id, ItemKind::Service));
    let known: HashMap<Uuid, ItemKind> =
        products.chain(services).filter(|(id, _)| offered_ids.contains(id)).collect();

    let mut seen = HashSet::new();
    let mut kept: Vec<Reference> = offered
        .into_iter()
        .filter(|r| known.get(&r.id).is_some_and(|kind| *kind == r.kind) && seen.insert(r.id))
        .take(MAX_REFERENCES)
        .collect();
    let mut positions = HashSet::new();
    if kept.iter().all(|r| r.position >= 1 && positions.insert(r.position)) {
        kept.sort_by_key(|r| r.position);
    } else {
        kept.iter_mut().zip(1u32..).for_each(|(r, position)| r.position = position);
    }
    kept
}

#[cfg(test)]
#[path = "untrusted_tests.rs"]
mod tests;
