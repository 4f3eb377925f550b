//! Stage "catalog": what a tenant sells and knows, cached in two tiers.
//!
//! - [`model`] — the cached values (profile, catalog, knowledge);
//! - [`cache`] — in-process (moka, memory-bounded, single-flight) in front of
//!   Redis in front of PostgreSQL; a Redis outage degrades to the database;
//! - [`invalidation`] — LISTEN `chat_worker_cache`: PostgreSQL triggers bump a
//!   per-tenant version on any change, and every worker drops older entries.

pub mod cache;
pub mod invalidation;
pub mod model;

pub use cache::{CacheStats, CatalogCache};
