//! Stage "catalog": what a tenant sells and knows, cached in two tiers.
//!
//! - the cached values (profile, catalog, knowledge) are [`crate::model::catalog`];
//!   `weight` says how much of the memory bound each takes;
//! - [`cache`] — in-process (moka, memory-bounded, single-flight) in front of
//!   Redis in front of PostgreSQL; a Redis outage degrades to the database;
//! - [`invalidation`] — LISTEN `chat_worker_cache`: PostgreSQL triggers bump a
//!   per-tenant version on any change, and every worker drops older entries.

pub mod cache;
mod figures;
pub mod invalidation;
mod weight;

pub use weight::Weight;

pub use cache::{CacheStats, CatalogCache};
pub use figures::FiguresCache;
