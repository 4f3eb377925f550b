//! Catalog search: a tenant's active products and services whose name, category
//! or description match the message's words, within its price bound.

use super::text::{matches, parse_number, stem, words};
use crate::catalog::model::{Catalog, ItemWords};
use uuid::Uuid;

/// A price bound said in words: "under 5000", "over 1000", "between 1000 and 3000".
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Bound {
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl Bound {
    pub fn parse(words: &[String]) -> Self {
        let mut bound = Bound::default();
        let number_after = |i: usize| words.iter().skip(i + 1).take(2).find_map(|w| parse_number(w));
        for (i, w) in words.iter().enumerate() {
            let next = words.get(i + 1).map(String::as_str);
            match (w.as_str(), next) {
                ("under" | "below" | "max" | "maximum" | "within", _)
                | ("less" | "cheaper", Some("than"))
                | ("up", Some("to")) => bound.max = number_after(i).or(bound.max),
                ("over" | "above" | "from" | "least", _) | ("more", Some("than")) => {
                    bound.min = number_after(i).or(bound.min)
                }
                ("between", _) => {
                    let numbers: Vec<f64> =
                        words.iter().skip(i + 1).take(3).filter_map(|w| parse_number(w)).collect();
                    if let [a, b] = numbers[..] {
                        bound = Bound { min: Some(a.min(b)), max: Some(a.max(b)) };
                    }
                }
                _ => {}
            }
        }
        bound
    }

    pub fn is_set(&self) -> bool {
        self.min.is_some() || self.max.is_some()
    }

    fn admits(&self, price: f64) -> bool {
        self.min.is_none_or(|m| price >= m) && self.max.is_none_or(|m| price <= m)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub kind: &'static str,
    pub id: Uuid,
    pub name: String,
    pub price: f64,
    pub currency: String,
    pub score: u32,
}

/// Words that ask for the catalog as a whole rather than for something in it.
const WHOLE_CATALOG: &[&str] =
    &["product", "service", "item", "catalog", "catalogue", "offer", "menu", "stock", "stuff"];

/// Matching items, best first, and the share of the search terms that matched something.
pub fn search(catalog: &Catalog, terms: &[String], bound: Bound) -> (Vec<Hit>, f32) {
    let specific: Vec<&String> = terms.iter().filter(|t| !WHOLE_CATALOG.contains(&t.as_str())).collect();
    let browsing = specific.is_empty() && (bound.is_set() || terms.len() != specific.len());
    let mut matched_terms = vec![false; specific.len()];
    let mut hits = Vec::new();
    let index = catalog.search_index.get_or_build(|| index(catalog));
    let candidates = catalog
        .products
        .iter()
        .map(|p| ("product", p.id, &p.name, p.price, &p.currency))
        .chain(catalog.services.iter().map(|s| ("service", s.id, &s.name, s.price, &s.currency)));
    for ((kind, id, name, price, currency), words) in candidates.zip(index) {
        if !bound.admits(price) {
            continue;
        }
        let fields = [(&words.name, 3), (&words.category, 2), (&words.description, 1)];
        let mut score = 0;
        for (t, term) in specific.iter().enumerate() {
            if let Some((_, weight)) = fields.iter().find(|(f, _)| f.iter().any(|w| matches(term, w))) {
                score += weight;
                matched_terms[t] = true;
            }
        }
        if score > 0 || browsing {
            hits.push(Hit { kind, id, name: name.clone(), price, currency: currency.clone(), score });
        }
    }
    hits.sort_by(|a, b| b.score.cmp(&a.score).then(a.price.total_cmp(&b.price)).then(a.name.cmp(&b.name)));
    let coverage = if specific.is_empty() {
        if hits.is_empty() { 0.0 } else { 1.0 }
    } else {
        matched_terms.iter().filter(|m| **m).count() as f32 / specific.len() as f32
    };
    (hits, coverage)
}

fn stems(text: &str) -> Vec<String> {
    words(text).iter().map(|w| stem(w)).collect()
}

/// Every item's stemmed words, in the order `search` walks the items.
fn index(catalog: &Catalog) -> Vec<ItemWords> {
    let product = |p: &crate::catalog::model::Product| ItemWords {
        name: stems(&p.name),
        category: stems(&p.category),
        description: stems(&p.description),
    };
    let service = |s: &crate::catalog::model::Service| ItemWords {
        name: stems(&s.name),
        category: stems("service"),
        description: stems(&s.description),
    };
    catalog.products.iter().map(product).chain(catalog.services.iter().map(service)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::model::{Product, Service};
    use crate::respond::builtin::text::terms;

    fn catalog() -> Catalog {
        let product = |name: &str, category: &str, price: f64| Product {
            id: Uuid::new_v4(),
            name: name.into(),
            description: String::new(),
            category: category.into(),
            price,
            currency: "KES".into(),
        };
        Catalog {
            version: 1,
            search_index: Default::default(),
            products: vec![
                product("Trail Runner X", "running shoes", 4500.0),
                product("City Sprint", "running shoes", 3900.0),
                product("Marathon Pro", "running shoes", 8900.0),
                product("Yoga Mat", "fitness", 1500.0),
            ],
            services: vec![Service {
                id: Uuid::new_v4(),
                name: "Gait analysis".into(),
                description: "Find the right running shoe".into(),
                price: 1000.0,
                currency: "KES".into(),
                duration_minutes: Some(30),
            }],
        }
    }

    fn find(text: &str) -> (Vec<String>, f32) {
        let w = words(text);
        let (hits, coverage) = search(&catalog(), &terms(&w), Bound::parse(&w));
        (hits.into_iter().map(|h| h.name).collect(), coverage)
    }

    #[test]
    fn a_price_bound_filters_and_name_and_category_rank_first() {
        let (names, coverage) = find("Do you have running shoes under 5000?");
        assert_eq!(names, ["City Sprint", "Trail Runner X", "Gait analysis"]);
        assert_eq!(coverage, 1.0);
    }

    #[test]
    fn bounds_in_words() {
        assert_eq!(Bound::parse(&words("over 4,000")), Bound { min: Some(4000.0), max: None });
        assert_eq!(
            Bound::parse(&words("between 1000 and 5k")),
            Bound { min: Some(1000.0), max: Some(5000.0) }
        );
        assert_eq!(Bound::parse(&words("less than 2000")), Bound { min: None, max: Some(2000.0) });
    }

    #[test]
    fn browsing_the_catalog_within_a_bound_lists_everything_that_fits() {
        let (names, _) = find("What products do you have under 2000?");
        assert_eq!(names, ["Gait analysis", "Yoga Mat"]);
    }

    #[test]
    fn nothing_matching_is_an_empty_result() {
        assert_eq!(find("Do you sell bicycles?"), (vec![], 0.0));
    }
}
