//! Knowledge answers: the active entry whose title (and content) best covers the question.

use super::text::{matches, stem, terms, words};
use crate::model::catalog::{Knowledge, KnowledgeEntry};

/// The best entry and how well it matches (0..1), if any matches at all.
pub(super) fn best<'k>(
    knowledge: &'k Knowledge,
    query_terms: &[String],
) -> Option<(&'k KnowledgeEntry, f32)> {
    if query_terms.is_empty() {
        return None;
    }
    let index = knowledge.derived.get_or_build(|| index(knowledge));
    let found = |term: &String, words: &[String]| words.iter().any(|w| matches(term, w));
    knowledge
        .entries
        .iter()
        .zip(index.iter())
        .filter_map(|(entry, EntryWords { title, body })| {
            if title.is_empty() {
                return None;
            }
            let title_covered =
                title.iter().filter(|t| found(t, query_terms)).count() as f32 / title.len() as f32;
            let query_covered = query_terms.iter().filter(|q| found(q, title) || found(q, body)).count()
                as f32
                / query_terms.len() as f32;
            let score = 0.7 * title_covered + 0.3 * query_covered;
            (score > 0.0).then_some((entry, score))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// An entry's title terms and stemmed content words, derived once per cached
/// knowledge (see `Knowledge::derived`), not per message.
struct EntryWords {
    title: Vec<String>,
    body: Vec<String>,
}

fn index(knowledge: &Knowledge) -> Vec<EntryWords> {
    knowledge
        .entries
        .iter()
        .map(|entry| EntryWords {
            title: terms(&words(&entry.title)),
            body: words(&entry.content).iter().map(|w| stem(w)).collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn knowledge() -> Knowledge {
        let entry = |title: &str, content: &str| KnowledgeEntry {
            id: Uuid::new_v4(),
            entry_type: "faq".into(),
            title: title.into(),
            content: content.into(),
        };
        Knowledge {
            version: 1,
            derived: Default::default(),
            entries: vec![
                entry("Opening hours", "We are open Monday to Saturday, 9am to 7pm."),
                entry("Delivery", "We deliver in Nairobi within 24 hours."),
            ],
        }
    }

    #[test]
    fn the_question_finds_its_entry() {
        let k = knowledge();
        let (entry, score) = best(&k, &terms(&words("What are your opening hours?"))).expect("match");
        assert_eq!(entry.title, "Opening hours");
        assert!(score > 0.9, "{score}");
        let (entry, _) = best(&k, &terms(&words("Do you deliver to Nairobi?"))).expect("match");
        assert_eq!(entry.title, "Delivery");
    }

    #[test]
    fn unrelated_questions_find_nothing() {
        assert!(best(&knowledge(), &terms(&words("Do you sell bicycles?"))).is_none());
    }
}
