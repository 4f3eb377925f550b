//! The Redis side of the proxy: every command (a RESP array) the client sends,
//! logged with its arguments.

use super::{Log, Parser};

#[derive(Debug, Default)]
pub(super) struct Commands {
    /// Bytes of a command not yet complete.
    pending: Vec<u8>,
}

impl Commands {
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

impl Parser for Commands {
    fn feed(&mut self, bytes: &[u8], log: &Log) {
        self.pending.extend_from_slice(bytes);
        while let Some((args, used)) = Self::command(&self.pending) {
            log.push(args.join(" "));
            self.pending.drain(..used);
        }
    }
}
