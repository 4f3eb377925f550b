//! The admin endpoint against hostile clients (issue 12): silent and dribbling
//! connections are dropped, a flood of them cannot keep `/metrics` from
//! answering, and request bodies are never read. No services needed: the
//! endpoint is served on its own listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chat_worker::admin::{self, Health, Limits};
use chat_worker::telemetry::metrics::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// A bound on a hang, far above the header timeouts used here.
const PATIENCE: Duration = Duration::from_secs(20);

struct Endpoint {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn endpoint(max_connections: usize, header_read_timeout: Duration) -> Endpoint {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let limits = Limits { max_connections, header_read_timeout };
    let health = Arc::new(Health::default());
    tokio::spawn(admin::serve(listener, limits, Arc::new(Metrics::new()), health, stop.clone()));
    Endpoint { addr, stop }
}

/// Sends `request` on a fresh connection and reads until the server closes it.
async fn exchange(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "no answer within {PATIENCE:?}");
    String::from_utf8_lossy(&answer).into_owned()
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: worker\r\n\r\n")
}

/// Waits for the server to close `stream`: reading gives end of file or an
/// error (a reset). Returns what was read before.
async fn closed_by_server(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let closing = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    assert!(tokio::time::timeout(PATIENCE, closing).await.is_ok(), "still open after {PATIENCE:?}");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_or_dribbling_client_is_dropped_while_healthz_answers_others() {
    let endpoint = endpoint(8, Duration::from_secs(1)).await;
    let mut silent = TcpStream::connect(endpoint.addr).await.expect("connect");
    let dribbling = TcpStream::connect(endpoint.addr).await.expect("connect");
    let (mut dribble_read, mut dribble_write) = dribbling.into_split();
    // A whole request, a byte every 200 ms: 8 s, far past the 1 s allowed.
    let dribbler = tokio::spawn(async move {
        for byte in get("/healthz").bytes() {
            if dribble_write.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    let answer = exchange(endpoint.addr, &get("/healthz")).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("ok\n"), "{answer}");

    let heard = closed_by_server(&mut silent).await;
    assert!(!String::from_utf8_lossy(&heard).contains("200 OK"));
    let mut heard = Vec::new();
    let closing = dribble_read.read_to_end(&mut heard);
    let closed = tokio::time::timeout(PATIENCE, closing).await;
    assert!(closed.is_ok(), "the dribbling client is still connected");
    assert!(!String::from_utf8_lossy(&heard).contains("200 OK"), "it never sent its whole request");
    dribbler.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_until_one_ends() {
    let endpoint = endpoint(2, Duration::from_secs(60)).await;
    let first = TcpStream::connect(endpoint.addr).await.expect("connect");
    let _second = TcpStream::connect(endpoint.addr).await.expect("connect");
    let mut third = TcpStream::connect(endpoint.addr).await.expect("connect");
    third.write_all(get("/healthz").as_bytes()).await.expect("send");
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(early.is_err(), "answered while two connections held both places: {early:?}");

    drop(first);
    let mut answer = Vec::new();
    let read = tokio::time::timeout(PATIENCE, third.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "not answered after a place freed up");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_connections_does_not_stop_metrics_once_they_are_dropped() {
    let endpoint = endpoint(2, Duration::from_secs(1)).await;
    let mut idle = Vec::new();
    for _ in 0..6 {
        idle.push(TcpStream::connect(endpoint.addr).await.expect("connect"));
    }
    let answer = exchange(endpoint.addr, &get("/metrics")).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.contains("chat_worker_messages_total"), "{answer}");
    for stream in &mut idle {
        closed_by_server(stream).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_is_never_read() {
    let endpoint = endpoint(2, Duration::from_secs(1)).await;
    // Announces 10 GB and sends a few bytes: the answer must not wait for the rest.
    let request = "POST /healthz HTTP/1.1\r\nHost: worker\r\nContent-Length: 10000000000\r\n\r\nsome";
    let answer = exchange(endpoint.addr, request).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("ok\n"), "{answer}");
    let answer = exchange(endpoint.addr, &get("/metrics")).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "still serving: {answer}");
}
