//! A tenant's message rate limit (`model::rate`, from its settings), shared
//! by the fleet (`dedup::rate`): a message holding its turn reserves its
//! place at the rate and waits for it under its lease, up to
//! [`RATE_WAIT_MAX`]; past that it is parked, no attempt spent, until a
//! place within reach frees. So a tenant over its rate holds at most
//! rate × 5 s of its messages in the fleet's hands at a time, and they do
//! not go round the retry queues more than once or twice.

use std::time::Duration;

use uuid::Uuid;

use super::Pipeline;
use super::stop::Stop;
use crate::dedup::Lease;
use crate::dedup::rate::Reserved;
use crate::model::catalog::TenantProfile;
use crate::model::rate::RateLimit;
use crate::respond::throttle::{MAX_PAUSE, PROBE_WAIT};

/// The longest a message waits in process for its place at the rate.
pub(super) const RATE_WAIT_MAX: Duration = Duration::from_secs(5);

impl Pipeline {
    pub(super) async fn within_rate(
        &self,
        tenant_id: &Uuid,
        tenant: &TenantProfile,
        lease: &Lease,
    ) -> Result<(), Stop> {
        let limit = match RateLimit::of(&tenant.settings) {
            Ok(Some(limit)) => limit,
            Ok(None) => return Ok(()),
            Err(why) => {
                tracing::warn!(tenant = %tenant_id, %why, "the tenant's rate limit cannot be read; not applied");
                return Ok(());
            }
        };
        match self.dedup.reserve_rate(tenant_id, limit, RATE_WAIT_MAX).await.map_err(Stop::from)? {
            Reserved::After(wait) if wait.is_zero() => Ok(()),
            Reserved::After(wait) => {
                self.metrics.rate_limited.inc();
                let waited = async {
                    tokio::time::sleep(wait).await;
                    Ok::<_, Stop>(())
                };
                self.dedup.guard(lease, None, waited).await
            }
            Reserved::Full(retry) => {
                self.metrics.rate_limited.inc();
                Err(Stop::SlowDown(retry.clamp(PROBE_WAIT, MAX_PAUSE)))
            }
        }
    }
}
