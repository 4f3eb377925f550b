//! A local HTTP/1.1 server speaking just enough for the responders' tests: it
//! records each request body and answers as told (a body, a status, slowly, a
//! flood of bytes, a redirect, or whichever of those the request asks for).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Clone)]
pub enum Answer {
    Json(u16, String),
    Slow(Duration, String),
    /// A status with extra header fields, e.g. `Retry-After`.
    Headed(u16, Vec<(&'static str, String)>, String),
    /// A 200 whose body is this many bytes, streamed; with `announced`, its
    /// length is sent first (`Content-Length`), else it ends when the connection does.
    Flood {
        bytes: usize,
        announced: bool,
    },
    /// A 302 to this URL.
    Redirect(String),
    /// The answer for the request's JSON body.
    Route(Arc<dyn Fn(&serde_json::Value) -> Answer + Send + Sync>),
}

/// Each request's head (request line and header fields) and body.
type Requests = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

pub struct Stub {
    pub url: String,
    pub requests: Requests,
    /// Body bytes of each flood answer written before the client hung up (what
    /// it read, plus what the sockets' buffers held).
    pub flooded: Arc<Mutex<Vec<usize>>>,
}

impl Stub {
    pub fn bodies(&self) -> Vec<serde_json::Value> {
        let requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        requests.iter().map(|(_, body)| serde_json::from_slice(body).unwrap_or_default()).collect()
    }

    pub fn raw_bodies(&self) -> Vec<Vec<u8>> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(_, body)| body.clone()).collect()
    }

    pub fn request_lines(&self) -> Vec<String> {
        self.heads().iter().map(|head| head.lines().next().unwrap_or_default().to_owned()).collect()
    }

    /// Each request's header field, by lower-case name.
    pub fn header(&self, name: &str) -> Vec<Option<String>> {
        let prefix = format!("{name}:");
        self.heads()
            .iter()
            .map(|head| {
                head.lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix(&prefix).map(|v| v.trim().to_owned()))
            })
            .collect()
    }

    fn heads(&self) -> Vec<String> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(head, _)| head.clone()).collect()
    }
}

pub async fn serve(answer: Answer) -> Stub {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let flooded = Arc::new(Mutex::new(Vec::new()));
    let (log, flood_log) = (requests.clone(), flooded.clone());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut answer = answer.clone();
            let (log, flood_log) = (log.clone(), flood_log.clone());
            tokio::spawn(async move {
                let Some((head, body)) = read_request(&mut socket).await else { return };
                if let Answer::Route(route) = &answer {
                    answer = route(&serde_json::from_slice(&body).unwrap_or_default());
                }
                log.lock().unwrap_or_else(|p| p.into_inner()).push((head, body));
                let (status, headers, body) = match answer {
                    Answer::Json(status, body) => (status, vec![], body),
                    Answer::Slow(delay, body) => {
                        tokio::time::sleep(delay).await;
                        (200, vec![], body)
                    }
                    Answer::Headed(status, headers, body) => (status, headers, body),
                    Answer::Redirect(location) => (302, vec![("location", location)], String::new()),
                    Answer::Flood { bytes, announced } => {
                        let taken = flood(&mut socket, bytes, announced).await;
                        flood_log.lock().unwrap_or_else(|p| p.into_inner()).push(taken);
                        return;
                    }
                    Answer::Route(_) => (500, vec![], "a route chose a route".into()),
                };
                let extra: String =
                    headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    Stub { url, requests, flooded }
}

/// Writes a 200 with `bytes` of body (a JSON string that never ends) until the
/// client stops taking it; returns how many body bytes it took.
async fn flood(socket: &mut tokio::net::TcpStream, bytes: usize, announced: bool) -> usize {
    let length = if announced { format!("content-length: {bytes}\r\n") } else { String::new() };
    let head =
        format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{length}connection: close\r\n\r\n");
    if socket.write_all(head.as_bytes()).await.is_err() {
        return 0;
    }
    let mut chunk = vec![b'a'; 64 * 1024];
    chunk[..9].copy_from_slice(br#"{"text":""#);
    let mut taken = 0;
    while taken < bytes {
        let n = chunk.len().min(bytes - taken);
        if socket.write_all(&chunk[..n]).await.is_err() {
            break;
        }
        taken += n;
        chunk[..9].fill(b'a');
    }
    let _ = socket.shutdown().await;
    taken
}

async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let n = socket.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some((head, buf[end + 4..end + 4 + length].to_vec()));
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
