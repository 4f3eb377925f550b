//! `responder.kind = "http"`: POST the built context as JSON to an agent service,
//! which answers `{text, confidence, handoff, references}`.

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Deserialize;

use super::{Answer, Context, RespondError, Responder, Usage, first_bytes};
use crate::config::ResponderConfig;
use crate::references::Reference;

pub struct HttpAgent {
    client: reqwest::Client,
    url: String,
    token: Option<String>,
}

#[derive(Deserialize)]
struct AgentReply {
    text: String,
    confidence: f32,
    handoff: bool,
    #[serde(default)]
    references: Vec<Reference>,
}

impl HttpAgent {
    pub fn new(config: &ResponderConfig) -> Result<Self, RespondError> {
        Ok(Self {
            client: client(config.timeout_ms)?,
            url: config.url.clone(),
            token: std::env::var(&config.api_key_env).ok().filter(|t| !t.is_empty()),
        })
    }
}

pub(super) fn client(timeout_ms: u64) -> Result<reqwest::Client, RespondError> {
    super::install_crypto();
    reqwest::Client::builder()
        .timeout(Duration::from_millis(timeout_ms))
        .connect_timeout(Duration::from_millis(timeout_ms.min(5_000)))
        .build()
        .map_err(|e| RespondError::Unusable(format!("cannot build the HTTP client: {e}")))
}

/// Sends a request; sorts failures into transient (timeouts, connection errors,
/// 5xx) and unusable (4xx), logging the answer's first bytes for the latter.
pub(super) async fn send(request: reqwest::RequestBuilder, what: &str) -> Result<Vec<u8>, RespondError> {
    let response = request.send().await.map_err(|e| {
        let kind = if e.is_timeout() { "timed out" } else { "could not be reached" };
        RespondError::Transient(format!("{what} {kind}: {}", without_url(&e)))
    })?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| RespondError::Transient(format!("{what}: reading the answer: {}", without_url(&e))))?;
    if status.is_server_error() {
        return Err(RespondError::Transient(format!("{what} answered {status}: {}", first_bytes(&body))));
    }
    if !status.is_success() {
        tracing::warn!(%status, body = %first_bytes(&body), "{what} refused the request");
        return Err(RespondError::Unusable(format!("{what} answered {status}: {}", first_bytes(&body))));
    }
    Ok(body.to_vec())
}

/// reqwest errors quote the URL, which may carry credentials.
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), &crate::redact::redact_url(url.as_str()));
    }
    text
}

pub(super) fn unreadable(what: &str, body: &[u8], e: impl std::fmt::Display) -> RespondError {
    tracing::warn!(body = %first_bytes(body), error = %e, "{what} gave an answer that cannot be read");
    RespondError::Unusable(format!("{what} answer cannot be read ({e}): {}", first_bytes(body)))
}

impl Responder for HttpAgent {
    fn name(&self) -> &str {
        "http"
    }

    fn respond<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, Result<Answer, RespondError>> {
        Box::pin(async move {
            let mut request = self.client.post(&self.url).json(ctx);
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            let body = send(request, "the agent service").await?;
            let reply: AgentReply =
                serde_json::from_slice(&body).map_err(|e| unreadable("the agent service", &body, e))?;
            if !(0.0..=1.0).contains(&reply.confidence) {
                return Err(unreadable("the agent service", &body, "confidence outside 0..1"));
            }
            Ok(Answer {
                text: reply.text,
                handoff: reply.handoff,
                confidence: reply.confidence,
                references: reply.references,
                usage: Usage::default(),
            })
        })
    }
}
