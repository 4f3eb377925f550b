//! Under the lock: catalog (cached) and history (one grouped query) side by
//! side, the latest numbered list, then the responder. The result is the
//! exchange to persist.

use std::time::Instant;

use chrono::Utc;

use super::Pipeline;
use super::budget::{BUDGET_RESPONDER, Budget, HOLDING_REPLY};
use super::stop::{Stop, foreign_conversation};
use crate::dedup::Lease;
use crate::model::catalog::TenantProfile;
use crate::model::{Fingerprint, Inbound};
use crate::references::{self, ListMemory};
use crate::respond::{Answer, Context};
use crate::store::Exchange;
use crate::store::bursts::{self, BurstMessage};

/// `agent_interactions.responder` of an answer the fallback gave.
const FALLBACK_RESPONDER: &str = "builtin (fallback)";

impl Pipeline {
    pub(super) async fn answer(
        &self,
        inbound: &Inbound,
        fingerprint: &Fingerprint,
        tenant: &TenantProfile,
        lease: &Lease,
        coalescing: bool,
    ) -> Result<Exchange, Stop> {
        let started = Instant::now();
        let stored_at = Utc::now();
        let recalled = ListMemory::recalled(lease.fetched.as_deref());

        // catalog and history, side by side; the stored list only when Redis had none.
        let (catalog, knowledge, context) = tokio::try_join!(
            self.timed("catalog", self.cache.catalog(inbound.tenant_id)),
            self.cache.knowledge(inbound.tenant_id),
            self.timed("history", self.reader.load(inbound, recalled.is_none())),
        )?;
        let context = context.ok_or_else(|| Stop::Reject(foreign_conversation(inbound)))?;
        let conversation_id = context.conversation.as_ref().map(|c| c.id);
        let latest_list = conversation_id
            .and_then(|id| references::latest(id, recalled, context.stored_list.clone(), &context.history));
        // The burst's earlier messages, stored as coalesced, and this one last.
        let mut burst = match conversation_id {
            Some(id) if coalescing => {
                self.timed("history", bursts::pending(&self.db, id, fingerprint)).await?
            }
            _ => Vec::new(),
        };
        if !burst.is_empty() {
            burst.push(BurstMessage::of(inbound));
        }

        // respond
        let ctx = Context {
            inbound,
            conversation_status: context.conversation.as_ref().map(|c| c.status).unwrap_or_default(),
            tenant,
            catalog: &catalog,
            knowledge: &knowledge,
            history: &context.history,
            latest_list: latest_list.as_ref(),
            burst: &burst,
        };
        let (answer, responder) = match self.budget(&inbound.tenant_id, tenant).await? {
            Budget::Spent => (Answer::plain(HOLDING_REPLY, true, 1.0), BUDGET_RESPONDER),
            within => {
                let answered = self.timed("respond", self.responder.respond(&ctx)).await;
                let (answer, responder) = match (answered, &self.settings.fallback) {
                    (Ok(answer), _) => (answer, self.responder.name()),
                    (Err(e), Some(fallback)) => {
                        tracing::warn!(error = %e, "the responder could not answer; the builtin responder answers instead");
                        self.metrics.responder_fallbacks.inc();
                        (fallback.answer(&ctx), FALLBACK_RESPONDER)
                    }
                    (Err(e), None) => return Err(e.into()),
                };
                if let Budget::Within(window) = within {
                    self.spent(&inbound.tenant_id, &window, &answer, &ctx).await;
                }
                (answer, responder)
            }
        };

        Ok(Exchange {
            inbound: inbound.clone(),
            fingerprint: fingerprint.clone(),
            conversation_id,
            stored_at,
            answer,
            replied_at: Utc::now(),
            responder: responder.to_owned(),
            latency_ms: i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX),
            fence: lease.fence,
        })
    }
}
