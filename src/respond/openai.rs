//! `responder.kind = "openai"`: any OpenAI-compatible chat-completions endpoint
//! (OpenAI, vLLM, Ollama, llama.cpp). The context becomes a system message
//! (tenant, catalog, knowledge) followed by the conversation's history.

use std::fmt::Write;

use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::Instrument;

use super::shown::{self, clip};
use super::transport::{Secret, Transport, unreadable};
use super::{Answer, Context, RespondError, Responder, Usage, references_in};
use crate::config::ResponderConfig;
use crate::model::Direction;

/// A reply that starts with this asks for a human.
const HANDOFF_MARK: &str = "[handoff]";
const WHAT: &str = "the chat-completions endpoint";

pub struct OpenAi {
    transport: Transport,
    endpoint: String,
    model: String,
    api_key: Option<Secret>,
    prompt_cost_per_1k: f64,
    completion_cost_per_1k: f64,
    record_contents: bool,
}

/// Shows whether a key is sent, never the key (nor the URL's password).
impl std::fmt::Debug for OpenAi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAi")
            .field("transport", &self.transport)
            .field("endpoint", &crate::redact::redact_url(&self.endpoint))
            .field("model", &self.model)
            .field("api_key", &self.api_key)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
    usage: Option<TokenUsage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    content: Option<String>,
}

#[derive(Deserialize)]
struct TokenUsage {
    prompt_tokens: Option<i32>,
    completion_tokens: Option<i32>,
}

impl OpenAi {
    pub fn new(config: &ResponderConfig, record_contents: bool) -> Result<Self, RespondError> {
        Ok(Self {
            transport: Transport::new(config)?,
            endpoint: format!("{}/chat/completions", config.url.trim_end_matches('/')),
            model: config.model.clone(),
            api_key: Secret::from_env(&config.api_key_env),
            prompt_cost_per_1k: config.prompt_cost_per_1k,
            completion_cost_per_1k: config.completion_cost_per_1k,
            record_contents,
        })
    }

    fn messages(&self, ctx: &Context<'_>) -> Vec<Value> {
        let mut messages = vec![json!({ "role": "system", "content": system_prompt(ctx) })];
        for m in ctx.history {
            let role = if m.direction == Direction::In { "user" } else { "assistant" };
            messages.push(json!({ "role": role, "content": m.text }));
        }
        messages.push(json!({ "role": "user", "content": ctx.inbound.text }));
        messages
    }
}

fn system_prompt(ctx: &Context<'_>) -> String {
    let mut p = format!(
        "You are the customer-service assistant of {}. Answer briefly, from the facts below only. \
         When you list items, number them. If the customer asks for a human, or you cannot help, \
         start your reply with {HANDOFF_MARK}.\n",
        ctx.tenant.name
    );
    // The catalog and knowledge as `shown`: bounded, however large the tenant's.
    let products = shown::products(ctx.catalog).map(|x| {
        let price = super::builtin::price_text(x.price, clip(&x.currency, shown::CURRENCY_CHARS));
        format!(
            "- {} ({}): {price}",
            clip(&x.name, shown::NAME_CHARS),
            clip(&x.category, shown::CATEGORY_CHARS)
        )
    });
    let services = shown::services(ctx.catalog).map(|x| {
        let price = super::builtin::price_text(x.price, clip(&x.currency, shown::CURRENCY_CHARS));
        format!("- {} (service): {price}", clip(&x.name, shown::NAME_CHARS))
    });
    let lines: Vec<String> = products.chain(services).collect();
    if !lines.is_empty() {
        let _ = write!(p, "\nCatalog:\n{}\n", lines.join("\n"));
    }
    let mut entries = shown::entries(ctx.knowledge).peekable();
    if entries.peek().is_some() {
        p.push_str("\nKnowledge:\n");
        for e in entries {
            let _ = writeln!(
                p,
                "- {}: {}",
                clip(&e.title, shown::NAME_CHARS),
                clip(&e.content, shown::CONTENT_CHARS)
            );
        }
    }
    p
}

impl Responder for OpenAi {
    fn name(&self) -> &str {
        "openai"
    }

    fn respond<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, Result<Answer, RespondError>> {
        Box::pin(async move {
            let messages = self.messages(ctx);
            let body = json!({ "model": self.model, "messages": messages });
            let mut request = self.transport.post(&self.endpoint).json(&body);
            if let Some(key) = &self.api_key {
                request = request.bearer_auth(key.expose());
            }
            // A GenAI client span (OpenTelemetry's gen_ai conventions); message
            // contents are customers' personal data and are not recorded.
            let span = tracing::info_span!(
                "gen_ai",
                otel.name = %format!("chat {}", self.model),
                otel.kind = "client",
                gen_ai.operation.name = "chat",
                gen_ai.system = "openai",
                gen_ai.request.model = %self.model,
                gen_ai.usage.input_tokens = tracing::field::Empty,
                gen_ai.usage.output_tokens = tracing::field::Empty,
                gen_ai.input.messages = tracing::field::Empty,
                gen_ai.output.messages = tracing::field::Empty,
            );
            if self.record_contents {
                span.record("gen_ai.input.messages", Value::Array(messages).to_string());
            }
            let raw = self.transport.send(request, WHAT).instrument(span.clone()).await?;
            let completion: Completion =
                serde_json::from_slice(&raw).map_err(|e| unreadable(WHAT, &raw, e))?;
            let content = completion
                .choices
                .into_iter()
                .next()
                .and_then(|c| c.message.content)
                .filter(|c| !c.trim().is_empty())
                .ok_or_else(|| unreadable(WHAT, &raw, "no message content"))?;
            let trimmed = content.trim();
            let (handoff, text) = match trimmed.strip_prefix(HANDOFF_MARK) {
                Some(rest) => (true, rest.trim().to_owned()),
                None => (false, trimmed.to_owned()),
            };
            let (prompt_tokens, completion_tokens) =
                completion.usage.map(|u| (u.prompt_tokens, u.completion_tokens)).unwrap_or((None, None));
            if let Some(n) = prompt_tokens {
                span.record("gen_ai.usage.input_tokens", n);
            }
            if self.record_contents {
                span.record("gen_ai.output.messages", content.as_str());
            }
            if let Some(n) = completion_tokens {
                span.record("gen_ai.usage.output_tokens", n);
            }
            let cost = match (prompt_tokens, completion_tokens) {
                (Some(p), Some(c)) if self.prompt_cost_per_1k > 0.0 || self.completion_cost_per_1k > 0.0 => {
                    Some(
                        f64::from(p) / 1000.0 * self.prompt_cost_per_1k
                            + f64::from(c) / 1000.0 * self.completion_cost_per_1k,
                    )
                }
                _ => None,
            };
            Ok(Answer {
                references: references_in(&text, ctx.catalog),
                text,
                handoff,
                // The model does not say how sure it is; a handoff is the model being unsure.
                confidence: if handoff { 0.3 } else { 0.8 },
                usage: Usage { model: Some(self.model.clone()), prompt_tokens, completion_tokens, cost },
            })
        })
    }
}
