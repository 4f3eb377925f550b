//! What a remote responder (`openai`, `http`) is shown of a tenant's catalog
//! and knowledge: at most so many items, each text cut short.
//!
//! The store already cuts each text to what a cached item may hold
//! (`store::catalog`), and the builtin responder searches all of it. These
//! bounds are tighter because every message sends them again, to a model whose
//! prompt has a budget (and is billed by the token) or to an agent that should
//! not receive megabytes per question: a tenant with 10,000 products or a 1 MB
//! description gets the same bounded request as a small shop. Which items are
//! shown does not depend on the message, so the `http` responder serializes
//! them once per cached catalog; they are the first in the catalog's order.

use crate::model::catalog::{Catalog, Knowledge, KnowledgeEntry, Product, Service};

/// Items and entries shown at most. With the character bounds below, the
/// catalog's JSON stays under ~300 KB even with 4-byte characters throughout
/// (an ordinary one under 50 KB), the knowledge under 35,000 characters.
pub const MAX_PRODUCTS: usize = 100;
pub const MAX_SERVICES: usize = 50;
pub const MAX_ENTRIES: usize = 30;

/// Characters shown at most of each text: a name or title is a line, a
/// description a sentence or two; an entry's content is what the responder
/// answers from, so it keeps the most.
pub const NAME_CHARS: usize = 120;
pub const CATEGORY_CHARS: usize = 60;
pub const CURRENCY_CHARS: usize = 8;
pub const DESCRIPTION_CHARS: usize = 300;
pub const CONTENT_CHARS: usize = 1_000;

/// `text`'s first `max_chars` characters (never a split one).
pub fn clip(text: &str, max_chars: usize) -> &str {
    text.char_indices().nth(max_chars).map_or(text, |(cut, _)| &text[..cut])
}

/// The catalog as shown: same shape, fewer items, shorter texts.
pub fn catalog(catalog: &Catalog) -> Catalog {
    Catalog {
        version: catalog.version,
        products: products(catalog).map(Product::clone).map(clipped_product).collect(),
        services: services(catalog).map(Service::clone).map(clipped_service).collect(),
        derived: Default::default(),
    }
}

/// The knowledge as shown.
pub fn knowledge(knowledge: &Knowledge) -> Knowledge {
    Knowledge {
        version: knowledge.version,
        entries: entries(knowledge)
            .map(|e| KnowledgeEntry {
                id: e.id,
                entry_type: clip(&e.entry_type, CATEGORY_CHARS).to_owned(),
                title: clip(&e.title, NAME_CHARS).to_owned(),
                content: clip(&e.content, CONTENT_CHARS).to_owned(),
            })
            .collect(),
        derived: Default::default(),
    }
}

/// The products shown (texts not yet clipped).
pub fn products(catalog: &Catalog) -> impl Iterator<Item = &Product> {
    catalog.products.iter().take(MAX_PRODUCTS)
}

/// The services shown (texts not yet clipped).
pub fn services(catalog: &Catalog) -> impl Iterator<Item = &Service> {
    catalog.services.iter().take(MAX_SERVICES)
}

/// The entries shown (texts not yet clipped).
pub fn entries(knowledge: &Knowledge) -> impl Iterator<Item = &KnowledgeEntry> {
    knowledge.entries.iter().take(MAX_ENTRIES)
}

fn clipped_product(p: Product) -> Product {
    Product {
        name: clip(&p.name, NAME_CHARS).to_owned(),
        description: clip(&p.description, DESCRIPTION_CHARS).to_owned(),
        category: clip(&p.category, CATEGORY_CHARS).to_owned(),
        currency: clip(&p.currency, CURRENCY_CHARS).to_owned(),
        ..p
    }
}

fn clipped_service(s: Service) -> Service {
    Service {
        name: clip(&s.name, NAME_CHARS).to_owned(),
        description: clip(&s.description, DESCRIPTION_CHARS).to_owned(),
        currency: clip(&s.currency, CURRENCY_CHARS).to_owned(),
        ..s
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn product(n: usize, description: &str) -> Product {
        Product {
            id: Uuid::new_v4(),
            name: format!("Item {n}"),
            description: description.into(),
            category: "things".into(),
            price: Some(1.0),
            currency: "KES".into(),
        }
    }

    #[test]
    fn clip_counts_characters_not_bytes() {
        assert_eq!(clip("héllo", 2), "hé");
        assert_eq!(clip("héllo", 5), "héllo");
        assert_eq!(clip("héllo", 50), "héllo");
        assert_eq!(clip("", 3), "");
    }

    #[test]
    fn a_huge_catalog_is_shown_bounded_and_a_small_one_whole() {
        let huge = Catalog {
            version: 3,
            products: (0..500)
                .map(|n| product(n, &"ü".repeat(if n == 0 { 1_000_000 } else { 1_000 })))
                .collect(),
            ..Default::default()
        };
        let shown = catalog(&huge);
        assert_eq!(shown.products.len(), MAX_PRODUCTS);
        assert_eq!(shown.products[0].id, huge.products[0].id, "the first items, in order");
        assert!(shown.products.iter().all(|p| p.description.chars().count() == DESCRIPTION_CHARS));
        let json = serde_json::to_vec(&shown).expect("json");
        assert!(json.len() < 200 * 1024, "{} bytes", json.len());

        let small = Catalog { version: 1, products: vec![product(1, "Light")], ..Default::default() };
        assert_eq!(catalog(&small), small);
        let json = |c: &Catalog| serde_json::to_vec(c).expect("json");
        assert_eq!(json(&catalog(&small)), json(&small), "a small catalog is sent byte for byte");
    }

    #[test]
    fn knowledge_is_bounded_in_entries_and_length() {
        let many = Knowledge {
            version: 1,
            entries: (0..100)
                .map(|n| KnowledgeEntry {
                    id: Uuid::new_v4(),
                    entry_type: "faq".into(),
                    title: format!("Question {n}"),
                    content: "x".repeat(50_000),
                })
                .collect(),
            derived: Default::default(),
        };
        let shown = knowledge(&many);
        assert_eq!(shown.entries.len(), MAX_ENTRIES);
        assert!(shown.entries.iter().all(|e| e.content.len() == CONTENT_CHARS));
        assert_eq!(shown.entries[1].title, "Question 1");
    }
}
