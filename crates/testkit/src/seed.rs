//! Rows the worker reads, written straight in SQL: a tenant, and a small shop's
//! catalog. A load's bigger catalogs are its own (`loadtest`).

use std::collections::HashMap;

use sqlx::PgPool;
use uuid::Uuid;

/// An active tenant.
pub async fn tenant(pool: &PgPool, id: Uuid, name: &str) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO tenants (id, name, is_active) VALUES ($1, $2, true)")
        .bind(id)
        .bind(name)
        .execute(pool)
        .await?;
    Ok(())
}

/// A small shop: four products, one service, two knowledge entries (an FAQ and a
/// policy). Returns product ids by name.
pub async fn small_shop(pool: &PgPool, tenant: Uuid) -> sqlx::Result<HashMap<String, Uuid>> {
    let mut ids = HashMap::new();
    for (name, category, price, description) in [
        ("Trail Runner X", "running shoes", 4500, "Light trail running shoe"),
        ("City Sprint", "running shoes", 3900, "Everyday road running shoe"),
        ("Marathon Pro", "running shoes", 8900, "Carbon-plated racing shoe"),
        ("Yoga Mat", "fitness", 1500, "6 mm non-slip mat"),
    ] {
        let id: Uuid = sqlx::query_scalar(
            "INSERT INTO products (tenant_id, name, category, price, currency, description)
             VALUES ($1, $2, $3, $4, 'KES', $5) RETURNING id",
        )
        .bind(tenant)
        .bind(name)
        .bind(category)
        .bind(price)
        .bind(description)
        .fetch_one(pool)
        .await?;
        ids.insert(name.to_owned(), id);
    }
    sqlx::query(
        "INSERT INTO services (tenant_id, name, price, currency, duration_minutes, description)
         VALUES ($1, 'Gait analysis', 1000, 'KES', 30, 'Find the right shoe for your stride')",
    )
    .bind(tenant)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO knowledge_entries (tenant_id, entry_type, title, content) VALUES
           ($1, 'faq', 'Opening hours', 'We are open Monday to Saturday, 9am to 7pm.'),
           ($1, 'policy', 'Returns', 'Unworn items can be returned within 30 days.')",
    )
    .bind(tenant)
    .execute(pool)
    .await?;
    Ok(ids)
}
