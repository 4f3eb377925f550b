//! A local HTTP/1.1 server speaking just enough for the responders' tests: it
//! records each request body and answers as told (a body, a status, or slowly).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Clone)]
pub enum Answer {
    Json(u16, String),
    Slow(Duration, String),
}

/// Each request's head (request line and header fields) and body.
type Requests = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

pub struct Stub {
    pub url: String,
    pub requests: Requests,
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
    let log = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let answer = answer.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let Some((head, body)) = read_request(&mut socket).await else { return };
                log.lock().unwrap_or_else(|p| p.into_inner()).push((head, body));
                let (status, body) = match answer {
                    Answer::Json(status, body) => (status, body),
                    Answer::Slow(delay, body) => {
                        tokio::time::sleep(delay).await;
                        (200, body)
                    }
                };
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    Stub { url, requests }
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
