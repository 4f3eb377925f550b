//! Loading what the catalog cache holds. Each loader is one statement, so the
//! rows and the version they are tagged with come from one snapshot.

use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use super::StoreError;
use crate::catalog::model::{Catalog, Knowledge, KnowledgeEntry, Product, Profile, Service, TenantProfile};

pub async fn load_profile(pool: &PgPool, tenant_id: Uuid) -> Result<Profile, StoreError> {
    let sql =
        "SELECT COALESCE((SELECT version FROM catalog_versions WHERE tenant_id = $1), 0), t.name, t.is_active, t.settings
           FROM (SELECT 1) one LEFT JOIN tenants t ON t.id = $1";
    let (version, name, is_active, settings): (i64, Option<String>, Option<bool>, Option<serde_json::Value>) =
        sqlx::query_as(sql).bind(tenant_id).fetch_one(pool).await?;
    let tenant = name.map(|name| TenantProfile {
        name,
        is_active: is_active.unwrap_or(false),
        settings: settings.unwrap_or_default(),
    });
    Ok(Profile { version, tenant })
}

pub async fn load_catalog(pool: &PgPool, tenant_id: Uuid) -> Result<Catalog, StoreError> {
    let sql = "SELECT COALESCE((SELECT version FROM catalog_versions WHERE tenant_id = $1), 0),
           COALESCE((SELECT jsonb_agg(jsonb_build_object('id', id, 'name', name, 'description', description,
                       'category', category, 'price', price::float8, 'currency', currency) ORDER BY name, id)
                       FROM products WHERE tenant_id = $1 AND is_active), '[]'::jsonb),
           COALESCE((SELECT jsonb_agg(jsonb_build_object('id', id, 'name', name, 'description', description,
                       'price', price::float8, 'currency', currency, 'duration_minutes', duration_minutes)
                       ORDER BY name, id)
                       FROM services WHERE tenant_id = $1 AND is_active), '[]'::jsonb)";
    let (version, Json(products), Json(services)): (i64, Json<Vec<Product>>, Json<Vec<Service>>) =
        sqlx::query_as(sql).bind(tenant_id).fetch_one(pool).await?;
    Ok(Catalog { version, products, services, derived: Default::default() })
}

pub async fn load_knowledge(pool: &PgPool, tenant_id: Uuid) -> Result<Knowledge, StoreError> {
    let sql = "SELECT COALESCE((SELECT version FROM catalog_versions WHERE tenant_id = $1), 0),
           COALESCE((SELECT jsonb_agg(jsonb_build_object('id', id, 'entry_type', entry_type, 'title', title,
                       'content', content) ORDER BY title, id)
                       FROM knowledge_entries WHERE tenant_id = $1 AND is_active), '[]'::jsonb)";
    let (version, Json(entries)): (i64, Json<Vec<KnowledgeEntry>>) =
        sqlx::query_as(sql).bind(tenant_id).fetch_one(pool).await?;
    Ok(Knowledge { version, entries, derived: Default::default() })
}

/// Every tenant's current version: what a worker must not serve anything older than.
pub async fn catalog_versions(pool: &PgPool) -> Result<Vec<(Uuid, i64)>, StoreError> {
    Ok(sqlx::query_as("SELECT tenant_id, version FROM catalog_versions").fetch_all(pool).await?)
}

pub async fn active_tenants(pool: &PgPool) -> Result<Vec<Uuid>, StoreError> {
    Ok(sqlx::query_scalar("SELECT id FROM tenants WHERE is_active ORDER BY id").fetch_all(pool).await?)
}

/// Bumps a tenant's version: every worker drops what it cached for the tenant
/// (through the same notification as a catalog change).
pub async fn bump_version(pool: &PgPool, tenant_id: Uuid) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT chat_worker_bump($1)").bind(tenant_id).fetch_one(pool).await?)
}
