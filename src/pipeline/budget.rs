//! Before a paid responder is called: is the tenant within its token budget
//! (`model::budget`, from its settings)? Over it, the message gets the holding
//! reply and a handoff, or is parked until the period ends — never a call,
//! never a silent drop. After a call, what it cost is added to the tenant's
//! count, fleet-wide (`dedup::tokens`).

use chrono::Utc;
use uuid::Uuid;

use super::Pipeline;
use super::stop::Stop;
use crate::model::budget::{OverBudget, TokenBudget, Window};
use crate::model::catalog::TenantProfile;
use crate::respond::{Answer, Context};

/// What the message text says to a customer whose tenant's budget is spent
/// (the conversation goes to `handoff`: a person answers from there).
pub(super) const HOLDING_REPLY: &str =
    "Thanks for your message. A member of our team will reply here shortly.";

/// The name recorded for the answers the budget gave (`agent_interactions.responder`).
pub(super) const BUDGET_RESPONDER: &str = "budget";

pub(super) enum Budget {
    /// No budget (or not a paid responder): call, count nothing.
    Unlimited,
    /// Within it: call, and count what the call cost in this period.
    Within(Window),
    /// Spent: answer with the holding reply, no call.
    Spent,
}

impl Pipeline {
    pub(super) async fn budget(&self, tenant_id: &Uuid, tenant: &TenantProfile) -> Result<Budget, Stop> {
        if !self.settings.paid_responder {
            return Ok(Budget::Unlimited);
        }
        let budget = match TokenBudget::of(&tenant.settings) {
            Ok(Some(budget)) => budget,
            Ok(None) => return Ok(Budget::Unlimited),
            Err(why) => {
                tracing::warn!(tenant = %tenant_id, %why, "the tenant's token budget cannot be read; not applied");
                return Ok(Budget::Unlimited);
            }
        };
        let now = Utc::now();
        let window = budget.period.window(now);
        let spent = self.dedup.tokens_spent(tenant_id, &window.name).await?;
        if spent < budget.tokens {
            return Ok(Budget::Within(window));
        }
        self.metrics.budget_spent.inc();
        match budget.over {
            OverBudget::Handoff => Ok(Budget::Spent),
            OverBudget::Wait => {
                let left = (window.ends - now).to_std().unwrap_or_default();
                Err(Stop::SlowDown(
                    left.clamp(crate::respond::throttle::PROBE_WAIT, crate::respond::throttle::MAX_PAUSE),
                ))
            }
        }
    }

    /// Adds what `answer` cost to the tenant's count (a failure to count is
    /// logged: the answer stands).
    pub(super) async fn spent(&self, tenant_id: &Uuid, window: &Window, answer: &Answer, ctx: &Context<'_>) {
        let tokens = tokens_of(answer, ctx);
        let left = (window.ends - Utc::now()).to_std().unwrap_or_default();
        if let Err(e) = self.dedup.spend_tokens(tenant_id, &window.name, tokens, left).await {
            tracing::warn!(tenant = %tenant_id, tokens, error = %e, "could not count the tokens the answer cost");
        }
    }
}

/// The tokens an answer cost: what the responder reported, else an estimate
/// of a token per 4 bytes of the question, the history and the answer (an
/// agent service need not report usage).
fn tokens_of(answer: &Answer, ctx: &Context<'_>) -> u64 {
    let reported = [answer.usage.prompt_tokens, answer.usage.completion_tokens];
    if reported.iter().any(Option::is_some) {
        return reported.iter().flatten().map(|n| u64::try_from(*n).unwrap_or(0)).sum();
    }
    let bytes =
        ctx.question().len() + ctx.history.iter().map(|h| h.text.len()).sum::<usize>() + answer.text.len();
    (bytes as u64).div_ceil(4).max(1)
}
