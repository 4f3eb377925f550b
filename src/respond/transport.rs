//! The wire under the `openai` and `http` responders: their HTTP client, their
//! credentials, and how an answer is read and judged (CONTRACT §4a) before
//! anything in it is believed.
//!
//! The other end is another party's service: it may answer with a body too
//! large to hold, a redirect to somewhere else, or a status that means "slow
//! down". The body is read chunk by chunk and abandoned at
//! `responder.max_response_bytes`; redirects are never followed (a request
//! carrying a customer's conversation goes to the configured URL or nowhere).

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::{RespondError, first_bytes};
use crate::config::ResponderConfig;

/// An error answer is read this far, for its log line; the rest is not wanted.
const ERROR_HEAD_BYTES: usize = 1024;

pub(super) struct Transport {
    client: reqwest::Client,
    max_response_bytes: usize,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").field("max_response_bytes", &self.max_response_bytes).finish()
    }
}

/// A credential: sent as a bearer token, never shown by `Debug`.
#[derive(Clone)]
pub(super) struct Secret(String);

impl Secret {
    /// The value of the environment variable `var`; none when `var` is empty
    /// (nothing configured), unset, or empty.
    pub(super) fn from_env(var: &str) -> Option<Self> {
        if var.is_empty() {
            return None;
        }
        std::env::var(var).ok().filter(|v| !v.is_empty()).map(Secret)
    }

    pub(super) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What a status (and its headers) says about an answer.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Verdict {
    Answer,
    /// 429, or 503 with `Retry-After`.
    SlowDown(Option<Duration>),
    /// Any other 5xx.
    Transient,
    /// A 3xx: not followed.
    Redirect,
    /// Any other status (a 4xx): the request will not do better next time.
    Refused,
}

pub(super) fn judge(status: StatusCode, headers: &HeaderMap, now: chrono::DateTime<chrono::Utc>) -> Verdict {
    let retry_after = headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok());
    match status {
        s if s.is_success() => Verdict::Answer,
        s if s.is_redirection() => Verdict::Redirect,
        StatusCode::TOO_MANY_REQUESTS => Verdict::SlowDown(retry_after.and_then(|v| delay(v, now))),
        StatusCode::SERVICE_UNAVAILABLE if retry_after.is_some() => {
            Verdict::SlowDown(retry_after.and_then(|v| delay(v, now)))
        }
        s if s.is_server_error() => Verdict::Transient,
        _ => Verdict::Refused,
    }
}

/// `Retry-After` as a delay: seconds, or an HTTP date (a past one is no delay).
pub(super) fn delay(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some((at.with_timezone(&chrono::Utc) - now).to_std().unwrap_or(Duration::ZERO))
}

impl Transport {
    pub(super) fn new(config: &ResponderConfig) -> Result<Self, RespondError> {
        crate::tls::install_crypto();
        let timeout_ms = config.timeout_ms;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(timeout_ms))
            .connect_timeout(Duration::from_millis(timeout_ms.min(5_000)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| RespondError::Unusable(format!("cannot build the HTTP client: {e}")))?;
        let max_response_bytes = usize::try_from(config.max_response_bytes).unwrap_or(usize::MAX);
        Ok(Self { client, max_response_bytes })
    }

    pub(super) fn post(&self, url: &str) -> reqwest::RequestBuilder {
        self.client.post(url)
    }

    /// Sends a request and returns the answer's body, or why there is none:
    /// slow down, transient (timeouts, connection errors, 5xx) or unusable
    /// (3xx, 4xx, a body over the limit), with the answer's first bytes.
    pub(super) async fn send(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<Vec<u8>, RespondError> {
        let mut response = request.send().await.map_err(|e| match e {
            e if e.is_builder() => {
                RespondError::Unusable(format!("{what}: cannot send: {}", without_url(&e)))
            }
            e if e.is_timeout() => RespondError::Transient(format!("{what} timed out: {}", without_url(&e))),
            e => RespondError::Transient(format!("{what} could not be reached: {}", without_url(&e))),
        })?;
        let status = response.status();
        let verdict = judge(status, response.headers(), chrono::Utc::now());
        if verdict == Verdict::Answer {
            return self.read_answer(&mut response, what).await;
        }
        // Only the head of an error answer is read: it is for the log line.
        let head =
            read_at_most(&mut response, ERROR_HEAD_BYTES).await.map(|(head, _)| head).unwrap_or_default();
        let said = format!("{what} answered {status}: {}", first_bytes(&head));
        Err(match verdict {
            Verdict::Answer | Verdict::Transient => RespondError::Transient(said),
            // A 429 that says the account's quota is spent (OpenAI's
            // `insufficient_quota`) will not pass by waiting: it fails now.
            Verdict::SlowDown(_) if String::from_utf8_lossy(&head).contains("insufficient_quota") => {
                RespondError::Unusable(said)
            }
            Verdict::SlowDown(retry_after) => RespondError::SlowDown { retry_after, detail: said },
            Verdict::Redirect => {
                tracing::warn!(%status, "{what} answered with a redirect, which is not followed");
                RespondError::Unusable(format!("{said} (redirects are not followed)"))
            }
            Verdict::Refused => {
                tracing::warn!(%status, body = %first_bytes(&head), "{what} refused the request");
                RespondError::Unusable(said)
            }
        })
    }

    async fn read_answer(
        &self,
        response: &mut reqwest::Response,
        what: &str,
    ) -> Result<Vec<u8>, RespondError> {
        let limit = self.max_response_bytes;
        let too_large = || {
            tracing::warn!(limit, "{what} gave an answer over the size limit");
            RespondError::Unusable(format!(
                "{what} answer is larger than {limit} bytes (responder.max_response_bytes); not read further"
            ))
        };
        // Announced too large: not read at all.
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        match read_at_most(response, limit).await {
            Ok((body, true)) => Ok(body),
            Ok((_, false)) => Err(too_large()),
            Err(e) => {
                let kind = if e.is_timeout() { "timed out" } else { "failed" };
                Err(RespondError::Transient(format!(
                    "{what}: reading the answer {kind}: {}",
                    without_url(&e)
                )))
            }
        }
    }
}

/// The body's first `limit` bytes, and whether that is all of it. Reads chunk
/// by chunk and stops at the limit: the rest is never received into memory
/// (dropping the response then closes its connection).
async fn read_at_most(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let expected = response.content_length().and_then(|n| usize::try_from(n).ok()).unwrap_or(8 * 1024);
    let mut body = Vec::with_capacity(expected.min(limit));
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
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

#[cfg(test)]
#[path = "transport_tests.rs"]
mod tests;
