//! A counting TCP proxy in front of PostgreSQL, so the bench can tell how many
//! round trips the workers make per message without touching their code.
//!
//! Bytes are copied both ways unchanged. On the client -> server side, after the
//! startup packet, the stream is split into frontend messages (a type byte, then
//! a 4-byte big-endian length that counts itself) and every `Q` (simple query)
//! and `S` (Sync, which ends an extended-protocol exchange) is counted: each is
//! one wait for the server.
//!
//! The stream must stay plaintext to be read: the workers' URL says
//! `sslmode=disable`, and should a client ask for TLS anyway, the proxy answers
//! "no" itself rather than passing the request to a server that has ssl = on.
//! The proxy's own hop adds a little latency to every round trip.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
/// A startup packet longer than this is not PostgreSQL speaking.
const MAX_STARTUP: usize = 10_000;

#[derive(Debug, Default)]
pub struct Counts {
    pub queries: AtomicU64,
    pub syncs: AtomicU64,
    pub connections: AtomicU64,
}

pub struct Proxy {
    pub addr: SocketAddr,
    pub counts: Arc<Counts>,
}

/// Listens on a free local port and forwards every connection to `upstream` (host:port).
pub async fn start(upstream: String) -> anyhow::Result<Proxy> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let counts = Arc::new(Counts::default());
    let shared = counts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else { continue };
            let counts = shared.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                // A connection's end (a worker stopping, PostgreSQL closing) is not news.
                let _ = relay(client, &upstream, &counts).await;
            });
        }
    });
    Ok(Proxy { addr, counts })
}

async fn relay(mut client: TcpStream, upstream: &str, counts: &Counts) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let startup = loop {
        let packet = startup_packet(&mut client).await?;
        match packet.get(4..8).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])) {
            Some(SSL_REQUEST | GSSENC_REQUEST) => client.write_all(b"N").await?,
            _ => break packet,
        }
    };
    let mut server = TcpStream::connect(upstream).await?;
    server.set_nodelay(true)?;
    server.write_all(&startup).await?;
    counts.connections.fetch_add(1, Ordering::Relaxed);

    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upward = async {
        let mut parser = Frontend::default();
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = client_read.read(&mut buffer).await?;
            if n == 0 {
                break;
            }
            parser.feed(&buffer[..n], counts);
            server_write.write_all(&buffer[..n]).await?;
        }
        server_write.shutdown().await
    };
    let downward = async {
        tokio::io::copy(&mut server_read, &mut client_write).await?;
        client_write.shutdown().await
    };
    tokio::try_join!(upward, downward)?;
    Ok(())
}

/// The length-prefixed packet a connection opens with (no type byte).
async fn startup_packet(client: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut length = [0u8; 4];
    client.read_exact(&mut length).await?;
    let total = u32::from_be_bytes(length) as usize;
    if !(8..=MAX_STARTUP).contains(&total) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "not a PostgreSQL startup packet"));
    }
    let mut packet = vec![0u8; total];
    packet[..4].copy_from_slice(&length);
    client.read_exact(&mut packet[4..]).await?;
    Ok(packet)
}

/// Splits the client's stream into messages across reads of any size.
#[derive(Debug, Default)]
struct Frontend {
    header: [u8; 5],
    have: usize,
    /// Body bytes of the current message still to pass.
    skip: usize,
}

impl Frontend {
    fn feed(&mut self, mut bytes: &[u8], counts: &Counts) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (5 - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == 5 {
                let [kind, a, b, c, d] = self.header;
                self.skip = (u32::from_be_bytes([a, b, c, d]) as usize).saturating_sub(4);
                self.have = 0;
                match kind {
                    b'Q' => counts.queries.fetch_add(1, Ordering::Relaxed),
                    b'S' => counts.syncs.fetch_add(1, Ordering::Relaxed),
                    _ => 0,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn counts_queries_and_syncs_however_the_stream_is_cut() {
        let mut stream = message(b'P', b"\0SELECT 1\0\0\0");
        stream.extend(message(b'B', &[0; 12]));
        stream.extend(message(b'E', &[0; 5]));
        stream.extend(message(b'S', b""));
        stream.extend(message(b'Q', b"BEGIN\0"));
        for cut in [1, 2, 3, 7, stream.len()] {
            let counts = Counts::default();
            let mut parser = Frontend::default();
            for chunk in stream.chunks(cut) {
                parser.feed(chunk, &counts);
            }
            assert_eq!(
                (counts.queries.load(Ordering::Relaxed), counts.syncs.load(Ordering::Relaxed)),
                (1, 1)
            );
        }
    }
}
