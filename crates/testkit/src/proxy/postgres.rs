//! The PostgreSQL side of the proxy: the startup packet, and the client's stream
//! split into frontend messages across reads of any size.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Log, Parser};

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
/// A startup packet longer than this is not PostgreSQL speaking.
const MAX_STARTUP: usize = 10_000;

/// The startup packet the client opens with, after answering "no" to any
/// request for TLS or GSS encryption.
pub(super) async fn startup(client: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    loop {
        let packet = startup_packet(client).await?;
        match packet.get(4..8).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])) {
            Some(SSL_REQUEST | GSSENC_REQUEST) => client.write_all(b"N").await?,
            _ => return Ok(packet),
        }
    }
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

/// Frontend messages after the startup packet: counts `Q` and `S` as they
/// start, and with `statements` keeps the bodies it needs to log SQL.
#[derive(Debug, Default)]
pub(super) struct Frontend {
    header: [u8; 5],
    have: usize,
    /// Body bytes of the current message still to come.
    remaining: usize,
    body: Vec<u8>,
    statements: Option<Statements>,
}

/// Prepared statements and bound portals by name, to the SQL they run.
#[derive(Debug, Default)]
struct Statements {
    statements: HashMap<String, String>,
    portals: HashMap<String, String>,
}

impl Frontend {
    pub(super) fn new(statements: bool) -> Self {
        Self { statements: statements.then(Statements::default), ..Self::default() }
    }

    fn kind(&self) -> u8 {
        self.header[0]
    }

    /// The current message's body matters: its SQL is logged.
    fn keeps_body(&self) -> bool {
        self.statements.is_some() && matches!(self.kind(), b'Q' | b'P' | b'B' | b'E')
    }

    fn end_of_message(&mut self, log: &Log) {
        let body = std::mem::take(&mut self.body);
        let kind = self.kind();
        let Some(known) = &mut self.statements else { return };
        match kind {
            b'Q' => log.push(cstr(&body).0),
            b'P' => {
                let (name, rest) = cstr(&body);
                known.statements.insert(name, cstr(rest).0);
            }
            b'B' => {
                let (portal, rest) = cstr(&body);
                let sql = known.statements.get(&cstr(rest).0).cloned().unwrap_or_default();
                known.portals.insert(portal, sql);
            }
            b'E' => log.push(known.portals.get(&cstr(&body).0).cloned().unwrap_or_default()),
            _ => {}
        }
    }
}

impl Parser for Frontend {
    fn feed(&mut self, mut bytes: &[u8], log: &Log) {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(bytes.len());
                if self.keeps_body() {
                    self.body.extend_from_slice(&bytes[..n]);
                }
                self.remaining -= n;
                bytes = &bytes[n..];
                if self.remaining == 0 {
                    self.end_of_message(log);
                }
                continue;
            }
            let n = (5 - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == 5 {
                let [kind, a, b, c, d] = self.header;
                self.remaining = (u32::from_be_bytes([a, b, c, d]) as usize).saturating_sub(4);
                self.have = 0;
                match kind {
                    b'Q' => log.counts.queries.fetch_add(1, Ordering::Relaxed),
                    b'S' => log.counts.syncs.fetch_add(1, Ordering::Relaxed),
                    _ => 0,
                };
                if self.remaining == 0 {
                    self.end_of_message(log);
                }
            }
        }
    }
}

/// A NUL-terminated string at the front of `body`, and what follows it.
fn cstr(body: &[u8]) -> (String, &[u8]) {
    let end = body.iter().position(|b| *b == 0).unwrap_or(body.len());
    (String::from_utf8_lossy(&body[..end]).into_owned(), body.get(end + 1..).unwrap_or_default())
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

    fn stream() -> Vec<u8> {
        let mut stream = message(b'P', b"s1\0SELECT 1\0\0\0");
        stream.extend(message(b'B', b"\0s1\0\0\0\0\0\0\0"));
        stream.extend(message(b'E', b"\0\0\0\0\0"));
        stream.extend(message(b'S', b""));
        stream.extend(message(b'Q', b"BEGIN\0"));
        stream
    }

    #[test]
    fn counts_queries_and_syncs_however_the_stream_is_cut() {
        let stream = stream();
        for statements in [false, true] {
            for cut in [1, 2, 3, 7, stream.len()] {
                let log = Log::default();
                let mut parser = Frontend::new(statements);
                for chunk in stream.chunks(cut) {
                    parser.feed(chunk, &log);
                }
                let counts = log.counts();
                assert_eq!(
                    (counts.queries.load(Ordering::Relaxed), counts.syncs.load(Ordering::Relaxed)),
                    (1, 1)
                );
                assert_eq!(log.round_trips(), 2);
            }
        }
    }

    #[test]
    fn logs_each_executed_statement_only_when_asked() {
        let stream = stream();
        for cut in [1, 4, stream.len()] {
            let (log, quiet) = (Log::default(), Log::default());
            let (mut parser, mut counting) = (Frontend::new(true), Frontend::new(false));
            for chunk in stream.chunks(cut) {
                parser.feed(chunk, &log);
                counting.feed(chunk, &quiet);
            }
            assert_eq!(log.snapshot(), ["SELECT 1", "BEGIN"]);
            assert!(quiet.is_empty());
        }
    }
}
