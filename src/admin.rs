//! The admin HTTP endpoint (CONTRACT §7): `/metrics` (Prometheus text),
//! `/healthz` (the process answers) and `/readyz` (connected to RabbitMQ, Redis
//! and PostgreSQL, and consuming). hyper's HTTP/1 server, no framework: three
//! routes do not need one.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::telemetry::metrics::Metrics;

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
}

impl Health {
    pub fn ready(&self) -> bool {
        self.consuming.load(Ordering::Relaxed)
            && self.publishing.load(Ordering::Relaxed)
            && self.redis.load(Ordering::Relaxed)
            && self.database.load(Ordering::Relaxed)
    }

    fn describe(&self) -> String {
        let word = |ok: bool| if ok { "ok" } else { "down" };
        format!(
            "rabbitmq={} publishing={} redis={} postgresql={}\n",
            word(self.consuming.load(Ordering::Relaxed)),
            word(self.publishing.load(Ordering::Relaxed)),
            word(self.redis.load(Ordering::Relaxed)),
            word(self.database.load(Ordering::Relaxed))
        )
    }
}

/// Serves on an already bound listener until `stop`.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin endpoint accept failed");
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        let health = health.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = route(request.uri().path(), &metrics, &health);
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(error = %e, "admin connection ended");
            }
        });
    }
}

fn route(path: &str, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", metrics.render()),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" if health.ready() => (StatusCode::OK, "text/plain", health.describe()),
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", health.describe()),
        _ => {
            (StatusCode::NOT_FOUND, "text/plain", "not found: try /metrics, /healthz or /readyz\n".to_owned())
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}
