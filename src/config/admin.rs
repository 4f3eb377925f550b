//! `[admin]`: the `/metrics`, `/healthz`, `/readyz` endpoint, and what it may
//! cost the worker.

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::validate::{MAX_SECS, invalid, quoted, require, within};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// `/metrics`, `/healthz`, `/readyz`; port 0 picks a free port (logged at start).
    pub addr: String,
    /// How often the inbound queue's depth and consumers are read from the broker.
    pub queue_poll_secs: u64,
    /// Connections served at once; more wait (unaccepted) until one ends.
    pub max_connections: usize,
    /// A connection that has not sent its request's headers by then is closed.
    pub header_read_timeout_secs: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:9464".into(),
            queue_poll_secs: 15,
            max_connections: 64,
            header_read_timeout_secs: 5,
        }
    }
}

impl AdminConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        within(&[
            ("admin.queue_poll_secs", self.queue_poll_secs, MAX_SECS),
            ("admin.max_connections", self.max_connections as u64, 10_000),
            ("admin.header_read_timeout_secs", self.header_read_timeout_secs, 300),
        ])?;
        if !listen_address(&self.addr) {
            return Err(invalid(
                "admin.addr",
                format!(
                    "`{}` is not an address and port such as 127.0.0.1:9464, 0.0.0.0:9464 or localhost:9464 \
                     (port 0 picks a free one)",
                    quoted(&self.addr)
                ),
            ));
        }
        require(self.queue_poll_secs > 0, "admin.queue_poll_secs", "must be at least 1")?;
        require(self.max_connections > 0, "admin.max_connections", "must be at least 1")?;
        require(self.header_read_timeout_secs > 0, "admin.header_read_timeout_secs", "must be at least 1")
    }
}

/// An address the admin endpoint can listen on: an IP address and port, or a
/// host name (resolved when binding, as `localhost`) and port.
fn listen_address(addr: &str) -> bool {
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return true;
    }
    addr.rsplit_once(':').is_some_and(|(host, port)| {
        port.parse::<u16>().is_ok()
            && !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_admin_address_is_an_ip_or_a_host_name_with_a_port() {
        for ok in ["127.0.0.1:9464", "0.0.0.0:0", "[::1]:9464", "localhost:9464", "worker-0.chat.svc:9464"] {
            assert!(super::listen_address(ok), "{ok}");
        }
        for bad in ["localhost", ":9464", "a b:1", "host:99999", "host:", "x..y:1", ""] {
            assert!(!super::listen_address(bad), "{bad}");
        }
    }
}
