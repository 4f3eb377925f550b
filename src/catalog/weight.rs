//! How much of the in-process cache's memory bound a cached value takes.

use crate::model::catalog::{Catalog, Knowledge, Profile};

/// Rough heap size, for the in-process cache's memory bound.
pub trait Weight {
    fn weight(&self) -> usize;
}

impl Weight for Profile {
    fn weight(&self) -> usize {
        64 + self.tenant.as_ref().map_or(0, |t| t.name.len() + t.settings.to_string().len())
    }
}

impl Weight for Catalog {
    fn weight(&self) -> usize {
        let products: usize =
            self.products.iter().map(|p| 96 + p.name.len() + p.description.len() + p.category.len()).sum();
        let services: usize = self.services.iter().map(|s| 96 + s.name.len() + s.description.len()).sum();
        // What a responder derives (a search index, the JSON) holds the words again.
        64 + 2 * (products + services)
    }
}

impl Weight for Knowledge {
    fn weight(&self) -> usize {
        // Counted twice, likewise: what a responder derives holds the words again.
        64 + 2 * self.entries.iter().map(|e| 64 + e.title.len() + e.content.len()).sum::<usize>()
    }
}
