//! The admin HTTP endpoint (CONTRACT §7): `/metrics` (Prometheus text),
//! `/healthz` (the process answers) and `/readyz` (connected to RabbitMQ, Redis
//! and PostgreSQL, and consuming). hyper's HTTP/1 server, no framework: three
//! routes do not need one.
//!
//! Whoever can reach the port is not trusted to be polite: a connection that
//! sends nothing, or its headers a byte at a time, is closed after
//! `header_read_timeout`; at most `max_connections` are served at once; a failing
//! `accept` (out of file descriptors) is retried after a pause, not in a spin;
//! request bodies are never read.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::AdminConfig;
use crate::telemetry::metrics::Metrics;

/// The pause after a failed `accept`: the usual causes (EMFILE, ENFILE, ENOBUFS)
/// do not clear in microseconds, and retrying at once would spin a core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What a connection may take beyond reading its headers: answering, and the
/// client reading the answer. Bounds a client that never reads.
const RESPONSE_ALLOWANCE: Duration = Duration::from_secs(10);

/// What `/readyz` reports, kept up to date by the worker: whether it consumes
/// (so is connected to RabbitMQ), and whether Redis and PostgreSQL answered the
/// last health check.
#[derive(Debug, Default)]
pub struct Health {
    pub consuming: Arc<AtomicBool>,
    /// The last publish could be made (see `broker::publish`).
    pub publishing: Arc<AtomicBool>,
    pub redis: AtomicBool,
    pub database: AtomicBool,
    /// A remote responder's gate: not ready while its circuit is open.
    pub responder: Option<Arc<crate::respond::Pause>>,
}

impl Health {
    pub fn ready(&self) -> bool {
        self.consuming.load(Ordering::Relaxed)
            && self.publishing.load(Ordering::Relaxed)
            && self.redis.load(Ordering::Relaxed)
            && self.database.load(Ordering::Relaxed)
            && !self.responder.as_ref().is_some_and(|gate| gate.is_down())
    }

    fn describe(&self) -> String {
        use crate::respond::Standing;
        let word = |ok: bool| if ok { "ok" } else { "down" };
        let standing = self.responder.as_ref().map(|gate| gate.standing());
        let responder = match &standing {
            None | Some(Standing::Ok) => "ok",
            Some(Standing::Paused) => "paused",
            Some(Standing::Down { .. }) => "down",
        };
        let mut text = format!(
            "rabbitmq={} publishing={} redis={} postgresql={} responder={responder}\n",
            word(self.consuming.load(Ordering::Relaxed)),
            word(self.publishing.load(Ordering::Relaxed)),
            word(self.redis.load(Ordering::Relaxed)),
            word(self.database.load(Ordering::Relaxed))
        );
        if let Some(Standing::Down { for_secs, why }) = standing {
            text.push_str(&format!(
                "responder down for {for_secs} s (its circuit is open; no new deliveries are taken until a probe \
                 answers): {why}\n"
            ));
        }
        text
    }
}

/// How much of the process one client may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

impl From<&AdminConfig> for Limits {
    fn from(config: &AdminConfig) -> Self {
        Self {
            max_connections: config.max_connections,
            header_read_timeout: Duration::from_secs(config.header_read_timeout_secs),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::from(&AdminConfig::default())
    }
}

/// Serves on an already bound listener until `stop`.
pub async fn serve(
    listener: TcpListener,
    limits: Limits,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    accept_loop(&listener, limits, Arc::new(Routes { metrics, health }), stop).await;
}

/// Where connections come from: the TCP listener, or a test's stand-in.
trait Listen {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

impl Listen for TcpListener {
    type Stream = TcpStream;
    async fn accept(&self) -> io::Result<TcpStream> {
        TcpListener::accept(self).await.map(|(stream, _)| stream)
    }
}

async fn accept_loop<L: Listen>(listener: &L, limits: Limits, routes: Arc<Routes>, stop: CancellationToken) {
    // The config bounds both; a library caller's extremes must not panic either
    // (a semaphore past its maximum, an Instant overflowing inside hyper's timer).
    let permits = Arc::new(Semaphore::new(limits.max_connections.clamp(1, Semaphore::MAX_PERMITS)));
    let header_read_timeout = limits.header_read_timeout.min(Duration::from_secs(3600));
    loop {
        // At the cap, stop accepting rather than accept and close: further clients
        // wait in the kernel's backlog until an admitted connection ends, which
        // takes at most `header_read_timeout` for one that sends nothing. So a
        // scrape arriving during a flood of idle connections is answered late,
        // not refused.
        let permit = tokio::select! {
            _ = stop.cancelled() => return,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match stream {
            Ok(stream) => {
                tokio::spawn(connection(stream, routes.clone(), header_read_timeout, permit));
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin endpoint: accept failed; trying again in 100 ms");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
}

/// One request per connection (no keep-alive: a scrape every few seconds does
/// not need it, and an idle kept-alive connection would hold a permit). The
/// request's body is dropped unread; the permit is released when this ends.
async fn connection<S>(
    stream: S,
    routes: Arc<Routes>,
    header_read_timeout: Duration,
    _permit: OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let response = routes.route(request.uri().path());
        async move { Ok::<_, Infallible>(response) }
    });
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_read_timeout).keep_alive(false);
    let served = builder.serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(header_read_timeout + RESPONSE_ALLOWANCE, served).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "admin connection ended"),
        Err(_) => tracing::debug!("admin connection outlived its time; closed"),
    }
}

struct Routes {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

impl Routes {
    fn route(&self, path: &str) -> Response<Full<Bytes>> {
        let (status, content_type, body) = match path {
            "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", self.metrics.render()),
            "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
            "/readyz" if self.health.ready() => (StatusCode::OK, "text/plain", self.health.describe()),
            "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", self.health.describe()),
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found: try /metrics, /healthz or /readyz\n".to_owned(),
            ),
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = content_type.parse() {
            response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A listener whose every accept fails as when the process is out of file
    /// descriptors; it stops the loop after `failures` of them.
    struct OutOfDescriptors {
        calls: AtomicUsize,
        failures: usize,
        stop: CancellationToken,
    }

    impl Listen for OutOfDescriptors {
        type Stream = tokio::io::DuplexStream;
        async fn accept(&self) -> io::Result<Self::Stream> {
            if self.calls.fetch_add(1, Ordering::Relaxed) + 1 >= self.failures {
                self.stop.cancel();
            }
            Err(io::Error::from_raw_os_error(24)) // EMFILE
        }
    }

    #[tokio::test]
    async fn failing_accepts_are_retried_after_a_pause_not_in_a_spin() {
        let stop = CancellationToken::new();
        let listener = OutOfDescriptors { calls: AtomicUsize::new(0), failures: 5, stop: stop.clone() };
        let routes = Arc::new(Routes { metrics: Arc::new(Metrics::new()), health: Arc::default() });
        let started = tokio::time::Instant::now();
        // Without the pause this returns at once (or, on a stand-in that never
        // stopped, spins forever); with it, each failure waits its 100 ms.
        accept_loop(&listener, Limits::default(), routes, stop).await;
        assert_eq!(listener.calls.load(Ordering::Relaxed), 5);
        assert!(started.elapsed() >= ACCEPT_BACKOFF * 4, "{:?}", started.elapsed());
    }
}
