use uuid::Uuid;

use super::*;
use crate::model::catalog::{Product, Service};
use crate::respond::Usage;

fn product(name: &str) -> Product {
    Product {
        id: Uuid::new_v4(),
        name: name.into(),
        description: String::new(),
        category: String::new(),
        price: Some(100.0),
        currency: "KES".into(),
    }
}

fn shop() -> Catalog {
    Catalog {
        version: 1,
        products: vec![product("Trail Runner X"), product("City Sprint"), product("Yoga Mat")],
        services: vec![Service {
            id: Uuid::new_v4(),
            name: "Gait analysis".into(),
            description: String::new(),
            price: None,
            currency: String::new(),
            duration_minutes: None,
        }],
        derived: Default::default(),
    }
}

fn reference(kind: &str, id: Uuid, position: u32) -> Reference {
    let kind = if kind == "service" { ItemKind::Service } else { ItemKind::Product };
    Reference { kind, id, position }
}

fn answer(text: &str, confidence: f32, references: Vec<Reference>) -> Answer {
    Answer { text: text.into(), handoff: false, confidence, references, usage: Usage::default() }
}

#[test]
fn nul_is_stripped_and_the_text_cut_at_a_char_boundary() {
    let got = accept(answer("We\0 have\0 it.", 0.5, vec![]), &shop()).expect("usable");
    assert_eq!(got.text, "We have it.");

    // 'é' is two bytes: a cut by bytes would split one.
    let long = "é".repeat(MAX_REPLY_CHARS + 10);
    let got = accept(answer(&long, 0.5, vec![]), &shop()).expect("usable");
    assert_eq!(got.text.chars().count(), MAX_REPLY_CHARS);
    assert!(got.text.chars().all(|c| c == 'é'));

    let exactly = "a".repeat(MAX_REPLY_CHARS);
    assert_eq!(accept(answer(&exactly, 0.5, vec![]), &shop()).expect("usable").text, exactly);
}

#[test]
fn an_answer_with_no_text_left_is_unusable() {
    for text in ["", "  \n", "\0\0", " \0 "] {
        let got = accept(answer(text, 0.5, vec![]), &shop());
        assert!(matches!(&got, Err(RespondError::Unusable(e)) if e.contains("no text")), "{text:?}: {got:?}");
    }
}

#[test]
fn confidence_is_clamped_and_nan_is_zero() {
    let confidence = |c: f32| accept(answer("ok", c, vec![]), &shop()).expect("usable").confidence;
    assert_eq!(confidence(0.7), 0.7);
    assert_eq!(confidence(1.5), 1.0);
    assert_eq!(confidence(-0.2), 0.0);
    assert_eq!(confidence(f32::INFINITY), 1.0);
    assert_eq!(confidence(f32::NAN), 0.0);
}

#[test]
fn only_the_tenants_own_items_of_the_right_kind_are_kept_each_once() {
    let shop = shop();
    let (trail, sprint, gait) = (shop.products[0].id, shop.products[1].id, shop.services[0].id);
    let foreign = Uuid::new_v4();
    let offered = vec![
        reference("product", trail, 1),
        reference("product", foreign, 2),
        reference("service", sprint, 3), // a product, named as a service
        reference("product", gait, 4),   // a service, named as a product
        reference("service", gait, 5),
        reference("product", trail, 6), // the same item again
                                        // (A kind other than product or service never gets this far: the
                                        // http responder drops such a reference as it parses the answer.)
    ];
    let got = accept(answer("ok", 0.5, offered), &shop).expect("usable").references;
    // The text's numbers stay: "5" still means the gait analysis, "2" means nothing.
    assert_eq!(got, [reference("product", trail, 1), reference("service", gait, 5)]);
}

#[test]
fn positions_are_kept_sorted_when_usable_and_renumbered_when_not() {
    let shop = shop();
    let [a, b, c] = [shop.products[0].id, shop.products[1].id, shop.products[2].id];
    let sorted = kept(vec![reference("product", b, 3), reference("product", a, 1)], &shop);
    assert_eq!(sorted, [reference("product", a, 1), reference("product", b, 3)]);

    // No numbering (0), or two items claiming one number: 1, 2, 3 in the order given.
    for offered in [
        vec![reference("product", c, 0), reference("product", a, 0), reference("product", b, 0)],
        vec![reference("product", c, 2), reference("product", a, 2), reference("product", b, 1)],
    ] {
        let got = kept(offered, &shop);
        assert_eq!(got, [reference("product", c, 1), reference("product", a, 2), reference("product", b, 3)]);
    }
}

#[test]
fn at_most_max_references_are_kept() {
    let mut shop = shop();
    shop.products = (0..MAX_REFERENCES + 20).map(|i| product(&format!("item {i}"))).collect();
    let offered: Vec<Reference> =
        shop.products.iter().zip(1u32..).map(|(p, n)| reference("product", p.id, n)).collect();
    let got = kept(offered, &shop);
    assert_eq!(got.len(), MAX_REFERENCES);
    assert_eq!(got.last().map(|r| r.position), Some(MAX_REFERENCES as u32), "the first ones");
}
