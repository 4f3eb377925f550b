//! A stand-in agent service for `RESPONDER_DELAY_MS`: answers every POST after a
//! fixed delay with a fixed answer in the `http` responder's format
//! (`{text, confidence, handoff, references}`), so the bench shows how the worker
//! behaves when answering is slow (an LLM) rather than CPU-bound.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const ANSWER: &str = r#"{"text":"Thanks for your message! Here is what we have for you.","confidence":0.9,"handoff":false,"references":[]}"#;

/// Starts the stub on a free local port; it lives as long as the bench.
pub async fn start(delay: Duration) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| answer(request, delay));
                // Connections end when the workers stop; nothing to report.
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok(addr)
}

async fn answer(request: Request<Incoming>, delay: Duration) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read the whole context, as a real service would, so the connection can be reused.
    let _ = request.into_body().collect().await;
    tokio::time::sleep(delay).await;
    let mut response = Response::new(Full::new(Bytes::from_static(ANSWER.as_bytes())));
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    Ok(response)
}
