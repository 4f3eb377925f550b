//! Persist (with whatever other messages are ready: one commit for all), then
//! publish the reply as committed — this attempt's, or an earlier one's.

use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::Pipeline;
use super::stop::Stop;
use crate::broker::publish::OutboundReply;
use crate::model::{Fingerprint, Inbound, NumberedList, TraceContext};
use crate::outcome::Failure;
use crate::reply::reply_body;
use crate::store::{self, Exchange};

/// What a successful attempt leaves behind.
pub(super) struct Replied {
    /// The reply had been committed before and was published again.
    pub(super) replayed: bool,
    /// The list this reply showed, to remember for "the second one".
    pub(super) list: Option<NumberedList>,
}

impl Pipeline {
    pub(super) async fn deliver(
        &self,
        inbound: &Inbound,
        fingerprint: &Fingerprint,
        exchange: Exchange,
        gateway_trace: TraceContext<'_>,
        burst: bool,
        lane: store::Lane,
    ) -> Result<Replied, Stop> {
        let shown = (exchange.answer.references.len() >= 2)
            .then(|| (exchange.answer.references.clone(), exchange.replied_at));

        // persist: with coalescing, on its own, marking the burst's earlier
        // messages answered in the same transaction
        let recorded = if burst {
            self.timed("persist", store::record_burst_reply(&self.db, &exchange)).await?
        } else {
            self.timed("persist", self.writer.record(exchange, lane)).await?
        };
        self.crash_point("after_commit");
        self.publish_recorded(inbound, fingerprint, &recorded, gateway_trace).await?;
        let list = shown.filter(|_| !recorded.replayed()).map(|(items, at)| NumberedList {
            conversation_id: Some(recorded.reply().conversation_id),
            at,
            items,
        });
        Ok(Replied { replayed: recorded.replayed(), list })
    }

    /// Publishes the reply as committed: this attempt's, or an earlier one's.
    pub(super) async fn publish_recorded(
        &self,
        inbound: &Inbound,
        fingerprint: &Fingerprint,
        recorded: &store::Recorded,
        gateway_trace: TraceContext<'_>,
    ) -> Result<(), Stop> {
        let reply = recorded.reply();
        if recorded.replayed() {
            tracing::info!(%fingerprint, "already committed; publishing the stored reply again");
        }
        let body = reply_body(inbound, fingerprint, reply);
        let outbound = OutboundReply {
            routing_key: &inbound.routing_key(),
            reply_id: &fingerprint.reply_id(),
            in_reply_to: &inbound.message_id,
            body: &body,
            span: tracing::Span::current().context(),
            gateway_trace,
        };
        let deadline = self.settings.deadline;
        let publish = tokio::time::timeout(deadline, self.publisher.publish_reply(&outbound));
        self.timed("publish", publish).await.map_err(|_| Failure::PublishTimeout(deadline))??;
        Ok(())
    }
}
