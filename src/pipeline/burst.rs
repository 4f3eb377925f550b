//! Stage "coalesce": burst coalescing (CONTRACT §3), for tenants that turn it
//! on. A message holding its conversation's turn first waits, up to
//! `coalesce_ms` after it arrived, for a newer one to join the line (the claim
//! of a newcomer tells this process). If one does, and the burst is younger
//! than `coalesce_max_ms`, this message is coalesced: its inbound row is
//! stored as waiting for its burst's reply, it leaves the line, and the turn
//! passes to the newcomer, which continues the burst. The message that finds
//! no newer one answers the whole burst: its context has the earlier ones (in
//! the history, and as `burst`), and its reply row lists them in `answers`.
//! A newcomer that joins while that reply is being generated restarts the
//! generation with it (the unfinished call dropped; a finished one
//! discarded, its cost recorded), unless the tenant queues it instead.

use std::time::Duration;

use serde_json::Value;

use super::Pipeline;
use super::turn::Slot;
use crate::config::{MAX_COALESCE_MS, MidGeneration, TurnsConfig};
use crate::dedup::Lease;
use crate::dedup::wakes::Listener;
use crate::model::{Answer, Fingerprint, Inbound};
use crate::store::bursts::{self, Coalesced, CoalescedRow, Discarded};

/// Coalescing as it applies to one tenant's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coalescing {
    pub window_ms: i64,
    pub max_ms: i64,
    pub restart: bool,
}

/// The worker-wide defaults (`[turns]`), which a tenant's settings override.
#[derive(Debug, Clone, Copy)]
pub struct CoalesceDefaults {
    window_ms: u64,
    max_ms: u64,
    mid_generation: MidGeneration,
}

impl CoalesceDefaults {
    pub fn of(turns: &TurnsConfig) -> Self {
        Self {
            window_ms: turns.coalesce_ms,
            max_ms: turns.coalesce_max_ms,
            mid_generation: turns.mid_generation,
        }
    }

    /// Coalescing for a tenant with these `settings` (`coalesce_ms`,
    /// `coalesce_max_ms`, `coalesce_mid_generation`); `None` when off. A
    /// setting of the wrong type or out of range is ignored (the default
    /// holds): the admin app's rows are data, never a reason to fail.
    pub fn for_tenant(&self, settings: &Value) -> Option<Coalescing> {
        let ms = |key: &str, default: u64| {
            settings.get(key).and_then(Value::as_u64).filter(|v| *v <= MAX_COALESCE_MS).unwrap_or(default)
        };
        let window_ms = ms("coalesce_ms", self.window_ms);
        if window_ms == 0 {
            return None;
        }
        let max_ms = ms("coalesce_max_ms", self.max_ms).max(window_ms);
        let restart = match settings.get("coalesce_mid_generation").and_then(Value::as_str) {
            Some("queue") => false,
            Some("restart") => true,
            _ => self.mid_generation == MidGeneration::Restart,
        };
        Some(Coalescing { window_ms: window_ms as i64, max_ms: max_ms as i64, restart })
    }
}

/// What the turn holder does after waiting for its burst to grow.
pub(super) enum Debounced {
    /// Nothing newer came (or the burst is as long as it may be): answer it.
    Answer,
    /// A newer message is in line: it continues the burst.
    Coalesce,
}

impl Coalescing {
    /// When the burst this turn belongs to began (ms).
    pub(super) fn burst_since(lease: &Lease, intake_ms: i64) -> i64 {
        lease.burst_since_ms.unwrap_or(intake_ms)
    }

    /// Whether the burst may still take in a newer message.
    pub(super) fn may_grow(&self, lease: &Lease, intake_ms: i64) -> bool {
        crate::dedup::now_ms() < Self::burst_since(lease, intake_ms).saturating_add(self.max_ms)
    }
}

impl Pipeline {
    /// Waits, holding the turn but no concurrency slot, until `coalesce_ms`
    /// after this message arrived for a newer one to join its line.
    pub(super) async fn debounce(
        &self,
        c: &Coalescing,
        lease: &Lease,
        intake_ms: i64,
        joined: &mut Listener,
        slot: &mut Slot,
    ) -> Debounced {
        if !c.may_grow(lease, intake_ms) {
            return Debounced::Answer;
        }
        if lease.behind > 0 {
            return Debounced::Coalesce;
        }
        let burst_end = Coalescing::burst_since(lease, intake_ms).saturating_add(c.max_ms);
        let end = intake_ms.saturating_add(c.window_ms).min(burst_end);
        let wait = end.saturating_sub(crate::dedup::now_ms());
        if wait <= 0 {
            return Debounced::Answer;
        }
        slot.let_conversation_go();
        slot.hand_back();
        let wait = Duration::from_millis(u64::try_from(wait).unwrap_or(0));
        let debounced = tokio::select! {
            _ = joined.woken() => Debounced::Coalesce,
            _ = tokio::time::sleep(wait) => Debounced::Answer,
            _ = self.stopping.cancelled() => Debounced::Answer,
        };
        slot.take_again().await;
        debounced
    }

    /// Stores this message as coalesced into its burst and passes the turn on;
    /// or, when an earlier attempt of it committed a reply of its own, leaves
    /// that reply to be published again.
    pub(super) async fn coalesce_into_burst(
        &self,
        inbound: &Inbound,
        fingerprint: &Fingerprint,
        lease: &Lease,
        intake_ms: i64,
        discarded: Option<(Answer, i32)>,
    ) -> Result<CoalescedRow, super::stop::Stop> {
        self.fence_takeover(lease).await?;
        let discarded = discarded.map(|(answer, latency_ms)| {
            self.metrics.generation_tokens_discarded.inc_by(
                u64::try_from(
                    answer
                        .usage
                        .prompt_tokens
                        .unwrap_or(0)
                        .saturating_add(answer.usage.completion_tokens.unwrap_or(0)),
                )
                .unwrap_or(0),
            );
            Discarded {
                responder: self.responder.name().to_owned(),
                usage: answer.usage,
                confidence: answer.confidence,
                handoff: answer.handoff,
                latency_ms,
            }
        });
        let coalesced = Coalesced {
            inbound: inbound.clone(),
            fingerprint: fingerprint.clone(),
            conversation_id: None,
            stored_at: chrono::Utc::now(),
            fence: lease.fence,
            discarded,
        };
        let row = self.timed("persist", bursts::record_coalesced(&self.db, &coalesced)).await?;
        if let CoalescedRow::Replied(_) = row {
            return Ok(row);
        }
        if let Err(e) = self.dedup.coalesce(lease, Coalescing::burst_since(lease, intake_ms)).await {
            // Its row is stored; the next message's turn comes when the lock lapses.
            tracing::warn!(%fingerprint, error = %e, "could not pass the turn on after coalescing");
        }
        self.metrics.messages_coalesced.inc();
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_tenant_setting_overrides_the_default_and_a_bad_one_is_ignored() {
        let defaults =
            CoalesceDefaults { window_ms: 0, max_ms: 5_000, mid_generation: MidGeneration::Restart };
        assert_eq!(defaults.for_tenant(&json!({})), None, "off by default");
        assert_eq!(
            defaults.for_tenant(&json!({"coalesce_ms": 800})),
            Some(Coalescing { window_ms: 800, max_ms: 5_000, restart: true })
        );
        assert_eq!(
            defaults.for_tenant(
                &json!({"coalesce_ms": 800, "coalesce_max_ms": 300, "coalesce_mid_generation": "queue"})
            ),
            Some(Coalescing { window_ms: 800, max_ms: 800, restart: false }),
            "the burst is at least one window long"
        );
        let on = CoalesceDefaults { window_ms: 1_000, ..defaults };
        for bad in
            [json!({"coalesce_ms": "soon"}), json!({"coalesce_ms": -1}), json!({"coalesce_ms": 10_000_000})]
        {
            assert_eq!(on.for_tenant(&bad).map(|c| c.window_ms), Some(1_000), "{bad}");
        }
        assert_eq!(on.for_tenant(&json!({"coalesce_ms": 0})), None, "a tenant may turn it off");
    }
}
