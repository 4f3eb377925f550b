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
        64 + products + services
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
