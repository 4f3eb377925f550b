use sqlx::PgPool;
use uuid::Uuid;

use super::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantStatus {
    Active,
    Inactive,
    Unknown,
}

pub async fn tenant_status(pool: &PgPool, tenant_id: Uuid) -> Result<TenantStatus, StoreError> {
    let active: Option<bool> = sqlx::query_scalar("SELECT is_active FROM tenants WHERE id = $1")
        .bind(tenant_id)
        .fetch_optional(pool)
        .await?;
    Ok(match active {
        Some(true) => TenantStatus::Active,
        Some(false) => TenantStatus::Inactive,
        None => TenantStatus::Unknown,
    })
}
