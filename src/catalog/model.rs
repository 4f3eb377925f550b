//! What the worker knows about a tenant, as cached: its profile (active flag and
//! agent settings), its active catalog, and its active knowledge entries. Each
//! carries the tenant's catalog version it was loaded at (see `catalog_versions`).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub category: String,
    pub price: f64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub price: f64,
    pub currency: String,
    pub duration_minutes: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnowledgeEntry {
    pub id: Uuid,
    pub entry_type: String,
    pub title: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantProfile {
    pub name: String,
    pub is_active: bool,
    /// `tenants.settings`: the agent's settings (e.g. `handoff_threshold`, `greeting`).
    pub settings: Value,
}

/// A tenant's profile; `None` when no such tenant exists (cached too, so a flood
/// of messages for an unknown tenant costs one query per TTL, not one each).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub version: i64,
    pub tenant: Option<TenantProfile>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    pub version: i64,
    pub products: Vec<Product>,
    pub services: Vec<Service>,
    /// What the builtin responder's search derives from the items, built on first
    /// use: once per cached catalog, shared by every message that reads it.
    #[serde(skip)]
    pub search_index: SearchIndex,
}

/// Each item's stemmed words (products first, then services), in the order of
/// `Catalog::products` and `Catalog::services`.
#[derive(Clone, Default)]
pub struct SearchIndex(std::sync::OnceLock<std::sync::Arc<Vec<ItemWords>>>);

#[derive(Debug, Clone, PartialEq)]
pub struct ItemWords {
    pub name: Vec<String>,
    pub category: Vec<String>,
    pub description: Vec<String>,
}

impl SearchIndex {
    pub fn get_or_build(&self, build: impl FnOnce() -> Vec<ItemWords>) -> &[ItemWords] {
        self.0.get_or_init(|| std::sync::Arc::new(build()))
    }
}

/// Derived data: two catalogs are equal whether or not either has built it.
impl PartialEq for SearchIndex {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "SearchIndex(built)" } else { "SearchIndex(not built)" })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Knowledge {
    pub version: i64,
    pub entries: Vec<KnowledgeEntry>,
}

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
        // The search index, once built, holds the same words again (stemmed).
        64 + 2 * (products + services)
    }
}

impl Weight for Knowledge {
    fn weight(&self) -> usize {
        64 + self.entries.iter().map(|e| 64 + e.title.len() + e.content.len()).sum::<usize>()
    }
}

impl Profile {
    pub fn is_active(&self) -> bool {
        self.tenant.as_ref().is_some_and(|t| t.is_active)
    }
}
