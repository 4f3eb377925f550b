//! Catalog search: a tenant's active products and services whose name, category
//! or description match the message's words, within its price bound.

use super::text::{matches, parse_number, stem, words};
use crate::model::ItemKind;
use crate::model::catalog::Catalog;
use uuid::Uuid;

/// A price bound said in words: "under 5000", "over 1000", "between 1000 and 3000".
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Bound {
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl Bound {
    pub(super) fn parse(words: &[String]) -> Self {
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

    pub(super) fn is_set(&self) -> bool {
        self.min.is_some() || self.max.is_some()
    }

    /// An item without a price is outside every bound (but shown when there is none).
    fn admits(&self, price: Option<f64>) -> bool {
        match price {
            Some(price) => self.min.is_none_or(|m| price >= m) && self.max.is_none_or(|m| price <= m),
            None => !self.is_set(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Hit {
    pub kind: ItemKind,
    pub id: Uuid,
    pub name: String,
    pub price: Option<f64>,
    pub currency: String,
    pub score: u32,
}

/// Words that ask for the catalog as a whole rather than for something in it.
const WHOLE_CATALOG: &[&str] =
    &["product", "service", "item", "catalog", "catalogue", "offer", "menu", "stock", "stuff"];

/// Matching items, best first, and the share of the search terms that matched something.
///
/// An item scores, per term, the weight of its best field with a word the term
/// matches (name 3, category 2, description 1). The words are looked up in the
/// catalog's index rather than compared with every item's.
pub(super) fn search(catalog: &Catalog, terms: &[String], bound: Bound) -> (Vec<Hit>, f32) {
    let specific: Vec<&String> = terms.iter().filter(|t| !WHOLE_CATALOG.contains(&t.as_str())).collect();
    let browsing = specific.is_empty() && (bound.is_set() || terms.len() != specific.len());
    let index = catalog.derived.get_or_build(|| Index::of(catalog));
    let admitted: Vec<bool> = index.items.iter().map(|item| bound.admits(item.price)).collect();
    let mut scores = vec![0u32; index.items.len()];
    let mut matched_terms = 0;
    let mut term_weights = vec![0u8; index.items.len()];
    for term in &specific {
        term_weights.fill(0);
        for (item, weight) in index.postings_matching(term) {
            let best = &mut term_weights[item as usize];
            *best = (*best).max(weight);
        }
        let mut matched = false;
        for (item, &weight) in term_weights.iter().enumerate() {
            if weight > 0 && admitted[item] {
                scores[item] += u32::from(weight);
                matched = true;
            }
        }
        matched_terms += usize::from(matched);
    }
    let mut hits: Vec<Hit> = index
        .items
        .iter()
        .zip(&scores)
        .zip(&admitted)
        .filter(|((_, score), admitted)| **admitted && (**score > 0 || browsing))
        .map(|((item, &score), _)| Hit {
            kind: item.kind,
            id: item.id,
            name: item.name.clone(),
            price: item.price,
            currency: item.currency.clone(),
            score,
        })
        .collect();
    // Cheaper first among equals; an item without a price after those with one.
    let price = |h: &Hit| h.price.unwrap_or(f64::INFINITY);
    hits.sort_by(|a, b| b.score.cmp(&a.score).then(price(a).total_cmp(&price(b))).then(a.name.cmp(&b.name)));
    let coverage = if specific.is_empty() {
        if hits.is_empty() { 0.0 } else { 1.0 }
    } else {
        matched_terms as f32 / specific.len() as f32
    };
    (hits, coverage)
}

/// A catalog made searchable: its items (products, then services) and every
/// stemmed word of theirs, sorted, with the items and field weights it occurs in.
struct Index {
    items: Vec<Item>,
    /// (word, [(item, best field weight of the word in that item)]), sorted by word.
    words: Vec<(String, Vec<(u32, u8)>)>,
}

struct Item {
    kind: ItemKind,
    id: Uuid,
    name: String,
    price: Option<f64>,
    currency: String,
}

impl Index {
    fn of(catalog: &Catalog) -> Self {
        let mut items = Vec::new();
        let mut postings: std::collections::BTreeMap<String, Vec<(u32, u8)>> = Default::default();
        let mut add = |item: Item, fields: [(&str, u8); 3]| {
            let at = u32::try_from(items.len()).unwrap_or(u32::MAX);
            items.push(item);
            for (text, weight) in fields {
                for word in words(text).iter().map(|w| stem(w)) {
                    let list = postings.entry(word).or_default();
                    match list.last_mut() {
                        Some((last, best)) if *last == at => *best = (*best).max(weight),
                        _ => list.push((at, weight)),
                    }
                }
            }
        };
        let item = |kind, id, name: &String, price, currency: &String| Item {
            kind,
            id,
            name: name.clone(),
            price,
            currency: currency.clone(),
        };
        for p in &catalog.products {
            let fields = [(p.name.as_str(), 3), (p.category.as_str(), 2), (p.description.as_str(), 1)];
            add(item(ItemKind::Product, p.id, &p.name, p.price, &p.currency), fields);
        }
        for s in &catalog.services {
            let fields = [(s.name.as_str(), 3), ("service", 2), (s.description.as_str(), 1)];
            add(item(ItemKind::Service, s.id, &s.name, s.price, &s.currency), fields);
        }
        Self { items, words: postings.into_iter().collect() }
    }

    /// The postings of every word `term` matches (see `text::matches`): the
    /// term itself, words it begins (3 letters or more), and words of 3 letters
    /// or more that begin it.
    fn postings_matching<'a>(&'a self, term: &'a str) -> impl Iterator<Item = (u32, u8)> + 'a {
        let from = self.words.partition_point(|(w, _)| w.as_str() < term);
        let extending = self.words[from..]
            .iter()
            .take_while(move |(w, _)| w.starts_with(term))
            .filter(move |(w, _)| matches(term, w));
        let beginning = (3..term.len())
            .filter(move |&end| term.is_char_boundary(end))
            .filter_map(move |end| self.find(&term[..end]));
        extending.chain(beginning).flat_map(|(_, postings)| postings.iter().copied())
    }

    fn find(&self, word: &str) -> Option<&(String, Vec<(u32, u8)>)> {
        self.words.binary_search_by(|(w, _)| w.as_str().cmp(word)).ok().map(|at| &self.words[at])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::catalog::{Product, Service};
    use crate::respond::builtin::text::terms;

    fn catalog() -> Catalog {
        let product = |name: &str, category: &str, price: f64| Product {
            id: Uuid::new_v4(),
            name: name.into(),
            description: String::new(),
            category: category.into(),
            price: Some(price),
            currency: "KES".into(),
        };
        Catalog {
            version: 1,
            derived: Default::default(),
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
                price: Some(1000.0),
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
    fn a_term_matches_words_it_begins_and_words_of_three_letters_or_more_that_begin_it() {
        // "runn" begins "runner" (a name: weight 3) and "running" (a category: 2).
        let (names, _) = find("runn");
        assert_eq!(names, ["Trail Runner X", "City Sprint", "Marathon Pro", "Gait analysis"]);
        // "trail" (5 letters) begins "trailblazers"; "yo" is too short to begin "yoga".
        assert_eq!(find("trailblazers").0, ["Trail Runner X"]);
        assert_eq!(find("yo"), (vec![], 0.0));
        // The best field counts once per term, however many of the item's words match.
        let (names, coverage) = find("marathon yoga");
        assert_eq!(names, ["Yoga Mat", "Marathon Pro"]);
        assert_eq!(coverage, 1.0);
    }

    #[test]
    fn nothing_matching_is_an_empty_result() {
        assert_eq!(find("Do you sell bicycles?"), (vec![], 0.0));
    }
}
