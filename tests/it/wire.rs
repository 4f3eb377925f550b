//! Counting proxies: what a worker actually sends to PostgreSQL and Redis, read
//! off the wire, so query and round-trip budgets are measured, not self-reported.
//!
//! The PostgreSQL proxy follows the extended protocol: Parse remembers a
//! statement's SQL, Bind ties a portal to it, Execute runs it; a simple Query
//! carries its SQL itself. Every executed statement is logged. The Redis proxy
//! logs every command (RESP array) with its arguments.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>, Arc<std::sync::atomic::AtomicUsize>);

impl Log {
    /// PostgreSQL: a simple Query or a Sync, each answered by ReadyForQuery.
    fn push_round_trip(&self) {
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn round_trips(&self) -> usize {
        self.1.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn push(&self, entry: String) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(entry);
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

pub struct Proxy {
    pub addr: SocketAddr,
    pub log: Log,
    /// Cut: drop every connection and refuse new ones, as an unreachable service.
    cut: Arc<std::sync::atomic::AtomicBool>,
    cut_now: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.cut_now.send(true);
    }

    pub fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
        let _ = self.cut_now.send(false);
    }
}

/// Starts a proxy to `upstream` that parses the client's side with `parser`.
async fn start<P: Parser + Send + 'static>(upstream: String, make: fn(Log) -> P) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("proxy address");
    let log = Log::default();
    let accept_log = log.clone();
    let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (cut_now, watch) = tokio::sync::watch::channel(false);
    let is_cut = cut.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            if is_cut.load(std::sync::atomic::Ordering::SeqCst) {
                continue; // dropped: the connection is refused
            }
            let Ok(server) = TcpStream::connect(&upstream).await else { continue };
            let parser = make(accept_log.clone());
            let mut watch = watch.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = relay(client, server, parser) => {}
                    _ = watch.wait_for(|cut| *cut) => {}
                }
            });
        }
    });
    Proxy { addr, log, cut, cut_now }
}

pub async fn postgres(upstream: &str) -> Proxy {
    start(upstream.to_owned(), PgParser::new).await
}

pub async fn redis(upstream: &str) -> Proxy {
    start(upstream.to_owned(), RespParser::new).await
}

/// A plain relay (nothing parsed), for cutting a service off.
pub async fn tcp(upstream: &str) -> Proxy {
    start(upstream.to_owned(), |_| Opaque).await
}

struct Opaque;

impl Parser for Opaque {
    fn feed(&mut self, buf: &mut Vec<u8>) {
        buf.clear();
    }
}

trait Parser {
    /// Consumes complete messages from the front of `buf`.
    fn feed(&mut self, buf: &mut Vec<u8>);
}

async fn relay<P: Parser>(client: TcpStream, server: TcpStream, mut parser: P) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async move {
        let mut chunk = vec![0u8; 64 * 1024];
        let mut pending = Vec::new();
        loop {
            let n = match client_read.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            pending.extend_from_slice(&chunk[..n]);
            parser.feed(&mut pending);
            if server_write.write_all(&chunk[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let downstream = async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upstream, downstream);
}

struct PgParser {
    log: Log,
    started: bool,
    statements: HashMap<String, String>,
    portals: HashMap<String, String>,
}

impl PgParser {
    fn new(log: Log) -> Self {
        Self { log, started: false, statements: HashMap::new(), portals: HashMap::new() }
    }
}

fn cstr(body: &[u8]) -> (String, &[u8]) {
    let end = body.iter().position(|b| *b == 0).unwrap_or(body.len());
    (String::from_utf8_lossy(&body[..end]).into_owned(), body.get(end + 1..).unwrap_or_default())
}

impl Parser for PgParser {
    fn feed(&mut self, buf: &mut Vec<u8>) {
        loop {
            if !self.started {
                // Untyped: [length][code ...]; SSL/GSS requests come before the startup message.
                if buf.len() < 8 {
                    return;
                }
                let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                if buf.len() < len {
                    return;
                }
                let code = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
                self.started = !matches!(code, 80877103 | 80877104);
                buf.drain(..len);
                continue;
            }
            if buf.len() < 5 {
                return;
            }
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if buf.len() < 1 + len {
                return;
            }
            let kind = buf[0];
            let body = buf[5..1 + len].to_vec();
            buf.drain(..1 + len);
            match kind {
                b'Q' => {
                    self.log.push(cstr(&body).0);
                    self.log.push_round_trip();
                }
                b'S' => self.log.push_round_trip(),
                b'P' => {
                    let (name, rest) = cstr(&body);
                    self.statements.insert(name, cstr(rest).0);
                }
                b'B' => {
                    let (portal, rest) = cstr(&body);
                    let statement = cstr(rest).0;
                    let sql = self.statements.get(&statement).cloned().unwrap_or_default();
                    self.portals.insert(portal, sql);
                }
                b'E' => {
                    let portal = cstr(&body).0;
                    self.log.push(self.portals.get(&portal).cloned().unwrap_or_default());
                }
                _ => {}
            }
        }
    }
}

struct RespParser {
    log: Log,
}

impl RespParser {
    fn new(log: Log) -> Self {
        Self { log }
    }

    /// One command `*N\r\n($len\r\nbytes\r\n){N}`: its arguments and its length.
    fn command(buf: &[u8]) -> Option<(Vec<String>, usize)> {
        let line = |from: usize| -> Option<(usize, usize)> {
            let end = buf.get(from..)?.windows(2).position(|w| w == b"\r\n")? + from;
            let n = std::str::from_utf8(&buf[from + 1..end]).ok()?.parse().ok()?;
            Some((n, end + 2))
        };
        if buf.first() != Some(&b'*') {
            return None;
        }
        let (count, mut at) = line(0)?;
        let mut args = Vec::with_capacity(count);
        for _ in 0..count {
            let (len, start) = line(at)?;
            let end = start + len;
            if buf.len() < end + 2 {
                return None;
            }
            args.push(String::from_utf8_lossy(&buf[start..end]).into_owned());
            at = end + 2;
        }
        Some((args, at))
    }
}

impl Parser for RespParser {
    fn feed(&mut self, buf: &mut Vec<u8>) {
        while let Some((args, used)) = Self::command(buf) {
            self.log.push(args.join(" "));
            buf.drain(..used);
        }
    }
}
