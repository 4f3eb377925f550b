//! A local HTTP/1.1 server speaking just enough for a worker's responders: it
//! answers as told (a body, a status, slowly, a flood of bytes, a redirect, or
//! whichever of those the request asks for).
//!
//! [`serve`] is the tests' stub: it records each request and closes each
//! connection after one answer. [`agent`] is a stand-in agent service for load:
//! every answer after a fixed delay, on connections kept open for the next
//! request (as a real service's would be), nothing recorded.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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

/// How a stub treats its connections.
#[derive(Debug, Clone, Copy)]
struct Manner {
    /// Keep each request in `Stub::requests`.
    record: bool,
    /// Answer further requests on a connection rather than closing it.
    keep_alive: bool,
}

/// The tests' stub: records every request, one answer per connection.
pub async fn serve(answer: Answer) -> std::io::Result<Stub> {
    start(answer, Manner { record: true, keep_alive: false }).await
}

/// A stand-in agent service: answers every request with a 200 and `body` after
/// `delay`, keeping connections open, recording nothing.
pub async fn agent(delay: Duration, body: &str) -> std::io::Result<Stub> {
    start(Answer::Slow(delay, body.to_owned()), Manner { record: false, keep_alive: true }).await
}

async fn start(answer: Answer, manner: Manner) -> std::io::Result<Stub> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let requests = Arc::new(Mutex::new(Vec::new()));
    let flooded = Arc::new(Mutex::new(Vec::new()));
    let (log, flood_log) = (requests.clone(), flooded.clone());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let _ = socket.set_nodelay(true);
            let answer = answer.clone();
            let (log, flood_log) = (log.clone(), flood_log.clone());
            tokio::spawn(connection(socket, answer, manner, log, flood_log));
        }
    });
    Ok(Stub { url, requests, flooded })
}

/// Answers the requests of one connection, until it closes (or after the
/// first, unless `keep_alive`).
async fn connection(
    mut socket: TcpStream,
    answer: Answer,
    manner: Manner,
    log: Requests,
    flood_log: Arc<Mutex<Vec<usize>>>,
) {
    let mut received = Vec::new();
    loop {
        let Some((head, body)) = read_request(&mut socket, &mut received).await else { return };
        let mut answer = answer.clone();
        if let Answer::Route(route) = &answer {
            answer = route(&serde_json::from_slice(&body).unwrap_or_default());
        }
        if manner.record {
            log.lock().unwrap_or_else(|p| p.into_inner()).push((head, body));
        }
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
        let extra: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
        let close = if manner.keep_alive { "" } else { "connection: close\r\n" };
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}{close}\r\n{body}",
            body.len()
        );
        let written = socket.write_all(response.as_bytes()).await;
        if written.is_err() || !manner.keep_alive {
            let _ = socket.shutdown().await;
            return;
        }
    }
}

/// Writes a 200 with `bytes` of body (a JSON string that never ends) until the
/// client stops taking it; returns how many body bytes it took.
async fn flood(socket: &mut TcpStream, bytes: usize, announced: bool) -> usize {
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

/// The next request's head and body (`Content-Length` bytes); `buf` keeps what
/// was read past it, the start of the next request.
async fn read_request(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
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
            let body = buf[end + 4..end + 4 + length].to_vec();
            buf.drain(..end + 4 + length);
            return Some((head, body));
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &[u8] = b"POST /answer HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}";

    /// Sends `requests` requests on one connection; returns everything read back
    /// until the server closed it or went quiet.
    async fn exchange(url: &str, requests: usize) -> std::io::Result<String> {
        let mut socket = TcpStream::connect(url.trim_start_matches("http://")).await?;
        let mut answers = String::new();
        for _ in 0..requests {
            socket.write_all(REQUEST).await?;
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(Duration::from_secs(5), socket.read(&mut chunk)).await {
                Ok(Ok(n)) => answers.push_str(&String::from_utf8_lossy(&chunk[..n])),
                _ => break,
            }
        }
        Ok(answers)
    }

    #[tokio::test]
    async fn the_agent_answers_one_request_after_another_on_a_connection() -> std::io::Result<()> {
        let agent = agent(Duration::from_millis(1), r#"{"text":"hi"}"#).await?;
        let answers = exchange(&agent.url, 2).await?;
        assert_eq!(answers.matches("HTTP/1.1 200 X\r\n").count(), 2, "{answers}");
        assert!(!answers.contains("connection: close"), "{answers}");
        assert!(agent.requests.lock().unwrap_or_else(|p| p.into_inner()).is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn the_tests_stub_records_the_request_and_closes_after_one_answer() -> std::io::Result<()> {
        let stub = serve(Answer::Json(200, "{}".into())).await?;
        let answers = exchange(&stub.url, 2).await?;
        assert_eq!(answers.matches("HTTP/1.1 200 X\r\n").count(), 1, "{answers}");
        assert!(answers.contains("connection: close"), "{answers}");
        assert_eq!(stub.request_lines(), ["POST /answer HTTP/1.1"]);
        Ok(())
    }
}
