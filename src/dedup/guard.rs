//! The lease guard: work done under a message's lock runs while the lease is
//! renewed, and stops — dropped, so it commits nothing afterwards — when it
//! passes its deadline, panics, or the lease is lost or about to lapse.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::Instant;

use super::{Dedup, DedupError, Lease};

/// Why guarded work was cut short.
#[derive(Debug, thiserror::Error)]
pub enum Cut {
    #[error("deadline of {}s passed; abandoned", .0.as_secs())]
    Deadline(Duration),
    /// A renewal found the lock held by someone else.
    #[error("lease lost to another worker; abandoned")]
    LeaseLost,
    /// Renewals kept failing, and the lease would lapse before the next one.
    #[error("lease could not be renewed before it lapses ({0}); abandoned")]
    Lapsing(#[source] DedupError),
    #[error("processing panicked: {0}")]
    Panicked(String),
}

impl Cut {
    pub fn kind(&self) -> &'static str {
        match self {
            Cut::Deadline(_) => "deadline",
            Cut::LeaseLost => "lease_lost",
            Cut::Lapsing(_) => "lease_lapsing",
            Cut::Panicked(_) => "panic",
        }
    }
}

impl Dedup {
    /// Runs `work` under `lease` until it ends, panics, passes `deadline` (if
    /// any), or loses the lease; renews the lease every third of its TTL
    /// meanwhile. Time is tokio's, so tests can drive it with a paused clock.
    pub async fn guard<T, E: From<Cut>>(
        &self,
        lease: &Lease,
        deadline: Option<Duration>,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let work = AssertUnwindSafe(work).catch_unwind();
        let limit = deadline.unwrap_or(Duration::MAX / 4);
        let passed = tokio::time::sleep(limit);
        tokio::pin!(work, passed);
        let every = self.renew_interval();
        let mut renewal = tokio::time::interval_at(Instant::now() + every, every);
        let mut renewed_at = Instant::now();
        loop {
            tokio::select! {
                done = &mut work => {
                    return done.unwrap_or_else(|panic| Err(Cut::Panicked(panic_text(&panic)).into()));
                }
                _ = &mut passed, if deadline.is_some() => return Err(Cut::Deadline(limit).into()),
                _ = renewal.tick() => match self.renew(lease).await {
                    Ok(true) => renewed_at = Instant::now(),
                    Ok(false) => return Err(Cut::LeaseLost.into()),
                    Err(e) if renewed_at.elapsed() + every >= self.lock_ttl() => {
                        return Err(Cut::Lapsing(e).into());
                    }
                    Err(e) => tracing::warn!(fingerprint = %lease.fingerprint, error = %e, "lease renewal failed; retrying"),
                },
            }
        }
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}
