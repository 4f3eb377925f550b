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
    /// `None`: no usable price in the row (NULL, NaN): never quoted as 0.
    pub price: Option<f64>,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    /// `None` as for a product.
    pub price: Option<f64>,
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
    /// What the process's responder derives from the items (the builtin one's
    /// search index, the http one's JSON), built on first use: once per cached
    /// catalog, shared by every message that reads it.
    #[serde(skip)]
    pub derived: Derived,
}

/// Data derived from a cached value on first use and kept with it, so that
/// every message reading the value shares it. Its type is the deriver's
/// business: the catalog knows nothing of how a responder searches it.
#[derive(Clone, Default)]
pub struct Derived(std::sync::OnceLock<std::sync::Arc<dyn std::any::Any + Send + Sync>>);

impl Derived {
    /// The derived value, built by `build` the first time. (Two messages may
    /// both build it at first; one result is kept. Should a value of another
    /// type be kept already, `build`'s result is returned without being kept.)
    pub fn get_or_build<T: std::any::Any + Send + Sync>(
        &self,
        build: impl FnOnce() -> T,
    ) -> std::sync::Arc<T> {
        if let Some(kept) = self.0.get() {
            return kept.clone().downcast::<T>().unwrap_or_else(|_| std::sync::Arc::new(build()));
        }
        let value = std::sync::Arc::new(build());
        let _ = self.0.set(value.clone());
        value
    }
}

/// Derived data: two values are equal whether or not either has built it.
impl PartialEq for Derived {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for Derived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "Derived(built)" } else { "Derived(not built)" })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Knowledge {
    pub version: i64,
    pub entries: Vec<KnowledgeEntry>,
    /// What a responder derives from the entries, like `Catalog::derived`.
    #[serde(skip)]
    pub derived: Derived,
}
