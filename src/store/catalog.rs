//! Loading what the catalog cache holds. Each loader is one statement, so the
//! rows and the version they are tagged with come from one snapshot.
//!
//! The admin app writes these tables directly with SQL, and its schema may be
//! looser than our migrations' (a `products` table it created first may allow
//! NULL anywhere but the key). So the statements, not the rows, decide what a
//! loaded item looks like: NULLs become empty text (or no price, no duration),
//! an item without a name or an entry without content is left out (there is
//! nothing to show a customer), and every text is cut to a length that keeps a
//! cached catalog, and the replies built from it, a sane size. A row that still
//! does not decode is skipped with a warning: one bad row never fails a tenant.

use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use super::{Db, StoreError};
use crate::model::catalog::{Catalog, Knowledge, KnowledgeEntry, Product, Profile, Service, TenantProfile};

/// Characters kept of each text (PostgreSQL's `left` counts characters, so a cut
/// never splits one). A name or title is a line, a category or currency a word;
/// a description a paragraph or two; an entry's content is a reply of its own
/// (the builtin responder answers with it), so it stays under the 4,096
/// characters a message may have.
const NAME_CHARS: i32 = 200;
const CATEGORY_CHARS: i32 = 100;
const CURRENCY_CHARS: i32 = 16;
const DESCRIPTION_CHARS: i32 = 2_000;
const CONTENT_CHARS: i32 = 4_000;

pub async fn load_profile(db: &Db, tenant_id: Uuid) -> Result<Profile, StoreError> {
    // `t.id IS NOT NULL` tells a tenant apart from none: a tenant whose name is
    // NULL exists all the same. A NULL `is_active` is not active, as for items.
    let sql = "SELECT COALESCE((SELECT version FROM catalog_versions WHERE tenant_id = $1), 0),
                      t.id IS NOT NULL, left(COALESCE(t.name, ''), $2), COALESCE(t.is_active, false),
                      COALESCE(t.settings, '{}'::jsonb)
                 FROM (SELECT 1) one LEFT JOIN tenants t ON t.id = $1";
    let (version, found, name, is_active, settings): (i64, bool, String, bool, Value) =
        sqlx::query_as(sql).bind(tenant_id).bind(NAME_CHARS).fetch_one(db).await?;
    let tenant = found.then_some(TenantProfile { name, is_active, settings });
    Ok(Profile { version, tenant })
}

pub async fn load_catalog(db: &Db, tenant_id: Uuid) -> Result<Catalog, StoreError> {
    // A price PostgreSQL's numeric can hold but a customer cannot be quoted
    // (NaN, infinity, absurd) is no price; so is a duration that is not a
    // number of minutes an i32 holds.
    let sql = "SELECT COALESCE((SELECT version FROM catalog_versions WHERE tenant_id = $1), 0),
           COALESCE((SELECT jsonb_agg(jsonb_build_object('id', id, 'name', left(name, $2),
                       'description', left(COALESCE(description, ''), $3),
                       'category', left(COALESCE(category, ''), $4),
                       'price', CASE WHEN price BETWEEN -1e12 AND 1e12 THEN price::float8 END,
                       'currency', left(COALESCE(currency, ''), $5)) ORDER BY name, id)
                       FROM products
                      WHERE tenant_id = $1 AND is_active AND btrim(name) <> ''), '[]'::jsonb),
           COALESCE((SELECT jsonb_agg(jsonb_build_object('id', id, 'name', left(name, $2),
                       'description', left(COALESCE(description, ''), $3),
                       'price', CASE WHEN price BETWEEN -1e12 AND 1e12 THEN price::float8 END,
                       'currency', left(COALESCE(currency, ''), $5),
                       'duration_minutes', CASE WHEN duration_minutes BETWEEN 0 AND 2147483647
                                                THEN duration_minutes END)
                       ORDER BY name, id)
                       FROM services
                      WHERE tenant_id = $1 AND is_active AND btrim(name) <> ''), '[]'::jsonb)";
    let (version, Json(products), Json(services)): (i64, Json<Vec<Value>>, Json<Vec<Value>>) =
        sqlx::query_as(sql)
            .bind(tenant_id)
            .bind(NAME_CHARS)
            .bind(DESCRIPTION_CHARS)
            .bind(CATEGORY_CHARS)
            .bind(CURRENCY_CHARS)
            .fetch_one(db)
            .await?;
    Ok(Catalog {
        version,
        products: decoded::<Product>(products, "product", tenant_id),
        services: decoded::<Service>(services, "service", tenant_id),
        derived: Default::default(),
    })
}

pub async fn load_knowledge(db: &Db, tenant_id: Uuid) -> Result<Knowledge, StoreError> {
    // A NULL type is what the column's default says an untyped entry is.
    let sql = "SELECT COALESCE((SELECT version FROM catalog_versions WHERE tenant_id = $1), 0),
           COALESCE((SELECT jsonb_agg(jsonb_build_object('id', id,
                       'entry_type', left(COALESCE(entry_type, 'faq'), $2),
                       'title', left(COALESCE(title, ''), $3),
                       'content', left(content, $4)) ORDER BY title, id)
                       FROM knowledge_entries
                      WHERE tenant_id = $1 AND is_active AND btrim(content) <> ''), '[]'::jsonb)";
    let (version, Json(entries)): (i64, Json<Vec<Value>>) = sqlx::query_as(sql)
        .bind(tenant_id)
        .bind(CATEGORY_CHARS)
        .bind(NAME_CHARS)
        .bind(CONTENT_CHARS)
        .fetch_one(db)
        .await?;
    Ok(Knowledge {
        version,
        entries: decoded::<KnowledgeEntry>(entries, "knowledge entry", tenant_id),
        derived: Default::default(),
    })
}

/// The rows that decode; the others are logged and left out.
fn decoded<T: DeserializeOwned>(rows: Vec<Value>, what: &str, tenant_id: Uuid) -> Vec<T> {
    rows.into_iter()
        .filter_map(|row| {
            let id = row.get("id").and_then(Value::as_str).unwrap_or("?").to_owned();
            serde_json::from_value(row)
                .map_err(
                    |e| tracing::warn!(%tenant_id, %id, error = %e, "skipping a {what} that cannot be read"),
                )
                .ok()
        })
        .collect()
}

/// Every tenant's current version: what a worker must not serve anything older than.
pub async fn catalog_versions(db: &Db) -> Result<Vec<(Uuid, i64)>, StoreError> {
    Ok(sqlx::query_as("SELECT tenant_id, version FROM catalog_versions").fetch_all(db).await?)
}

pub async fn active_tenants(db: &Db) -> Result<Vec<Uuid>, StoreError> {
    Ok(sqlx::query_scalar("SELECT id FROM tenants WHERE is_active ORDER BY id").fetch_all(db).await?)
}

/// Bumps a tenant's version: every worker drops what it cached for the tenant
/// (through the same notification as a catalog change).
pub async fn bump_version(db: &Db, tenant_id: Uuid) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT chat_worker_bump($1)").bind(tenant_id).fetch_one(db).await?)
}
