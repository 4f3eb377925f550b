//! Counting proxies: what a worker actually sends to PostgreSQL and Redis, read
//! off the wire, so query and round-trip budgets are measured, not self-reported.
//! The integration tests use them for their budgets, `loadtest bench` for its
//! round trips per message.
//!
//! Bytes are copied both ways unchanged. The PostgreSQL proxy splits the
//! client's stream, after the startup packet, into frontend messages (a type
//! byte, then a 4-byte big-endian length that counts itself): every `Q` (simple
//! query) and `S` (Sync, which ends an extended-protocol exchange) is a round
//! trip, one wait for the server. [`postgres`] also logs every executed
//! statement, following the extended protocol: Parse remembers a statement's
//! SQL, Bind ties a portal to it, Execute runs it; a simple Query carries its SQL
//! itself. [`postgres_counting`] only counts, for a load whose log would grow
//! without end. The Redis proxy logs every command (RESP array) with its
//! arguments; [`tcp`] parses nothing. Every proxy can be cut off, as an
//! unreachable service.
//!
//! The PostgreSQL stream must stay plaintext to be read: clients connect with
//! `sslmode=disable`, and should one ask for TLS anyway, the proxy answers "no"
//! itself rather than passing the request to a server that has ssl = on. The
//! proxy's own hop adds a little latency to every round trip.

mod postgres;
mod resp;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a proxy counted.
#[derive(Debug, Default)]
pub struct Counts {
    /// PostgreSQL simple queries (`Q`).
    pub queries: AtomicU64,
    /// PostgreSQL Syncs (`S`).
    pub syncs: AtomicU64,
    /// Connections relayed to the upstream.
    pub connections: AtomicU64,
}

/// What a proxy saw: its entries (statements, commands) and its counts.
#[derive(Clone, Default)]
pub struct Log {
    entries: Arc<Mutex<Vec<String>>>,
    counts: Arc<Counts>,
}

impl Log {
    /// PostgreSQL: simple Queries and Syncs, each answered by ReadyForQuery.
    pub fn round_trips(&self) -> usize {
        let c = &self.counts;
        (c.queries.load(Ordering::Relaxed) + c.syncs.load(Ordering::Relaxed)) as usize
    }

    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    fn push(&self, entry: String) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).push(entry);
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct Proxy {
    pub addr: SocketAddr,
    pub log: Log,
    /// Cut: drop every connection and refuse new ones, as an unreachable service.
    cut: Arc<AtomicBool>,
    cut_now: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        let _ = self.cut_now.send(true);
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
        let _ = self.cut_now.send(false);
    }
}

/// A PostgreSQL proxy to `upstream` (host:port) that counts round trips and logs
/// every executed statement.
pub async fn postgres(upstream: &str) -> std::io::Result<Proxy> {
    start(upstream, Kind::Postgres { statements: true }).await
}

/// A PostgreSQL proxy that counts round trips and connections, and logs nothing.
pub async fn postgres_counting(upstream: &str) -> std::io::Result<Proxy> {
    start(upstream, Kind::Postgres { statements: false }).await
}

/// A Redis proxy that logs every command.
pub async fn redis(upstream: &str) -> std::io::Result<Proxy> {
    start(upstream, Kind::Redis).await
}

/// A plain relay (nothing parsed), for cutting a service off.
pub async fn tcp(upstream: &str) -> std::io::Result<Proxy> {
    start(upstream, Kind::Tcp).await
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Postgres { statements: bool },
    Redis,
    Tcp,
}

/// Reads the client's side of a connection.
trait Parser: Send {
    fn feed(&mut self, bytes: &[u8], log: &Log);
}

struct Opaque;

impl Parser for Opaque {
    fn feed(&mut self, _: &[u8], _: &Log) {}
}

/// Listens on a free local port and relays every connection to `upstream`.
async fn start(upstream: &str, kind: Kind) -> std::io::Result<Proxy> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let log = Log::default();
    let cut = Arc::new(AtomicBool::new(false));
    let (cut_now, watch) = tokio::sync::watch::channel(false);
    let (accept_log, is_cut, upstream) = (log.clone(), cut.clone(), upstream.to_owned());
    tokio::spawn(async move {
        loop {
            let client = match listener.accept().await {
                Ok((client, _)) => client,
                Err(_) => {
                    // Out of descriptors, say: try again in a moment.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            if is_cut.load(Ordering::SeqCst) {
                continue; // dropped: the connection is refused
            }
            let (log, upstream, mut watch) = (accept_log.clone(), upstream.clone(), watch.clone());
            tokio::spawn(async move {
                tokio::select! {
                    // A connection's end (a client stopping, the server closing) is not news.
                    _ = connect(client, &upstream, kind, &log) => {}
                    _ = watch.wait_for(|cut| *cut) => {}
                }
            });
        }
    });
    Ok(Proxy { addr, log, cut, cut_now })
}

/// Connects to the upstream (for PostgreSQL once the client's startup packet is
/// in) and relays the connection.
async fn connect(mut client: TcpStream, upstream: &str, kind: Kind, log: &Log) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let startup = match kind {
        Kind::Postgres { .. } => Some(postgres::startup(&mut client).await?),
        Kind::Redis | Kind::Tcp => None,
    };
    let mut server = TcpStream::connect(upstream).await?;
    server.set_nodelay(true)?;
    if let Some(startup) = startup {
        server.write_all(&startup).await?;
    }
    log.counts.connections.fetch_add(1, Ordering::Relaxed);
    match kind {
        Kind::Postgres { statements } => {
            relay(client, server, postgres::Frontend::new(statements), log).await
        }
        Kind::Redis => relay(client, server, resp::Commands::default(), log).await,
        Kind::Tcp => relay(client, server, Opaque, log).await,
    }
    Ok(())
}

async fn relay(client: TcpStream, server: TcpStream, mut parser: impl Parser, log: &Log) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upward = async move {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            parser.feed(&chunk[..n], log);
            if server_write.write_all(&chunk[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let downward = async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upward, downward);
}
