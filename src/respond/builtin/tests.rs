use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use super::*;
use crate::model::HistoryItem;
use crate::model::Inbound;
use crate::model::catalog::{Catalog, Knowledge, KnowledgeEntry, Product, Service, TenantProfile};
use crate::model::{ConversationStatus, Direction, ItemKind, NumberedList};

struct Shop {
    tenant: TenantProfile,
    catalog: Catalog,
    knowledge: Knowledge,
}

fn shop() -> Shop {
    let product = |name: &str, category: &str, price: f64, description: &str| Product {
        id: Uuid::new_v4(),
        name: name.into(),
        description: description.into(),
        category: category.into(),
        price: Some(price),
        currency: "KES".into(),
    };
    Shop {
        tenant: TenantProfile { name: "Demo Sports".into(), is_active: true, settings: json!({}) },
        catalog: Catalog {
            version: 1,
            derived: Default::default(),
            products: vec![
                product("Trail Runner X", "running shoes", 4500.0, "Light trail shoe"),
                product("City Sprint", "running shoes", 3900.0, "Everyday road shoe"),
                product("Marathon Pro", "running shoes", 8900.0, "Carbon-plated racer"),
                product("Yoga Mat", "fitness", 1500.0, "6 mm non-slip mat"),
            ],
            services: vec![Service {
                id: Uuid::new_v4(),
                name: "Gait analysis".into(),
                description: "Find the right shoe for your stride".into(),
                price: Some(1000.0),
                currency: "KES".into(),
                duration_minutes: Some(30),
            }],
        },
        knowledge: Knowledge {
            version: 1,
            derived: Default::default(),
            entries: vec![KnowledgeEntry {
                id: Uuid::new_v4(),
                entry_type: "faq".into(),
                title: "Opening hours".into(),
                content: "We are open Monday to Saturday, 9am to 7pm.".into(),
            }],
        },
    }
}

fn inbound(text: &str) -> Inbound {
    Inbound {
        message_id: "m".into(),
        tenant_id: Uuid::nil(),
        channel: "web".into(),
        customer_external_id: "c".into(),
        customer_name: Some("Amina".into()),
        conversation_id: None,
        text: text.into(),
        received_at: Utc::now(),
        attachments: json!([]),
        metadata: json!({}),
    }
}

/// Plays a conversation through the responder, carrying history and the latest
/// list between turns as the pipeline does.
struct Conversation {
    shop: Shop,
    status: ConversationStatus,
    history: Vec<HistoryItem>,
    list: Option<NumberedList>,
}

impl Conversation {
    fn new() -> Self {
        Self { shop: shop(), status: ConversationStatus::Open, history: Vec::new(), list: None }
    }

    fn say(&mut self, text: &str) -> Answer {
        let msg = inbound(text);
        let answer = Builtin::default().answer(&Context {
            inbound: &msg,
            conversation_status: self.status,
            tenant: &self.shop.tenant,
            catalog: &self.shop.catalog,
            knowledge: &self.shop.knowledge,
            history: &self.history,
            latest_list: self.list.as_ref(),
            burst: &[],
        });
        let now = Utc::now();
        self.history.push(HistoryItem {
            direction: Direction::In,
            text: text.into(),
            references: vec![],
            created_at: now,
        });
        self.history.push(HistoryItem {
            direction: Direction::Out,
            text: answer.text.clone(),
            references: answer.references.clone(),
            created_at: now,
        });
        if answer.references.len() >= 2 {
            self.list =
                Some(NumberedList { conversation_id: None, at: now, items: answer.references.clone() });
        }
        if answer.handoff {
            self.status = ConversationStatus::Handoff;
        }
        answer
    }

    fn product(&self, name: &str) -> Uuid {
        self.shop.catalog.products.iter().find(|p| p.name == name).map(|p| p.id).unwrap_or_default()
    }
}

#[test]
fn a_conversation_lists_resolves_positions_answers_faqs_and_hands_off() {
    let mut c = Conversation::new();

    let list = c.say("Hi! Do you have running shoes under 5000?");
    assert!(!list.handoff);
    assert!(list.text.contains("1. City Sprint — 3,900 KES"), "{}", list.text);
    assert!(list.text.contains("2. Trail Runner X — 4,500 KES"), "{}", list.text);
    assert!(!list.text.contains("Marathon Pro"), "over the bound: {}", list.text);
    let positions: Vec<(Uuid, u32)> = list.references.iter().map(|r| (r.id, r.position)).collect();
    assert_eq!(positions[0], (c.product("City Sprint"), 1));
    assert_eq!(positions[1], (c.product("Trail Runner X"), 2));
    assert!(list.references.iter().all(|r| matches!(r.kind, ItemKind::Product | ItemKind::Service)));

    let second = c.say("the second one");
    assert!(second.text.starts_with("Trail Runner X — 4,500 KES"), "{}", second.text);
    assert_eq!(second.references.len(), 1);
    assert_eq!(second.references[0].id, c.product("Trail Runner X"));

    let that = c.say("how much is that one?");
    assert_eq!(that.references[0].id, c.product("Trail Runner X"), "'that one' is the item just discussed");

    let first = c.say("first");
    assert_eq!(first.references[0].id, c.product("City Sprint"));
    let last = c.say("last");
    assert_eq!(last.references[0].id, list.references.last().map(|r| r.id).unwrap_or_default());

    let out_of_range = c.say("9");
    assert!(out_of_range.text.contains("from 1 to 3"), "{}", out_of_range.text);

    let faq = c.say("What are your opening hours?");
    assert_eq!(faq.text, "We are open Monday to Saturday, 9am to 7pm.");
    assert!(!faq.handoff);
    assert!(faq.references.is_empty());

    let human = c.say("Can I talk to a person?");
    assert!(human.handoff);
    let holding = c.say("hello??");
    assert!(holding.handoff, "a conversation in handoff gets the holding reply");
}

#[test]
fn a_question_nothing_answers_hands_off_and_a_greeting_does_not() {
    let mut c = Conversation::new();
    let hello = c.say("hello");
    assert!(!hello.handoff);
    assert!(hello.text.contains("Demo Sports"), "{}", hello.text);
    let unknown = c.say("Can you fix my bicycle chain?");
    assert!(unknown.handoff);
    assert!(unknown.confidence < 0.4);
}

#[test]
fn a_pointer_without_a_list_is_not_guessed() {
    let mut c = Conversation::new();
    let answer = c.say("2");
    assert!(answer.references.is_empty(), "no list was shown yet");
}

#[test]
fn services_are_found_and_described_with_their_duration() {
    let mut c = Conversation::new();
    let list = c.say("Do you offer gait analysis?");
    assert_eq!(list.references.len(), 1);
    assert_eq!(list.references[0].kind, ItemKind::Service);
    let shop = shop();
    let mut with_list = Conversation::new();
    let items = c.shop.catalog.services.iter().map(|s| s.id).chain([c.product("Yoga Mat")]);
    with_list.shop = shop;
    with_list.shop.catalog = c.shop.catalog.clone();
    with_list.list = Some(NumberedList {
        conversation_id: None,
        at: Utc::now(),
        items: items
            .zip(1..)
            .map(|(id, position)| crate::model::Reference {
                kind: if position == 1 { ItemKind::Service } else { ItemKind::Product },
                id,
                position,
            })
            .collect(),
    });
    let first = with_list.say("1");
    assert!(first.text.contains("30 minutes") && first.text.contains("book"), "{}", first.text);
}

#[test]
fn a_tenant_threshold_overrides_the_default() {
    let mut c = Conversation::new();
    let partial = c.say("opening times?");
    assert!(!partial.handoff, "half a match clears the default 0.4: {}", partial.confidence);
    let mut strict = Conversation::new();
    strict.shop.tenant.settings = json!({ "handoff_threshold": 0.6 });
    let answer = strict.say("opening times?");
    assert!(answer.handoff, "the tenant's 0.6 is stricter than this match");
}
