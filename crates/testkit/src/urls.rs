//! Database URLs taken apart for a proxy: where the server is, which database,
//! and the same URL pointed at the proxy.

use std::net::SocketAddr;

use anyhow::Context as _;
use url::Url;

fn parse(database_url: &str) -> anyhow::Result<Url> {
    Url::parse(database_url).context("the database URL is not a URL")
}

/// The database's name, as PostgreSQL's process titles show it (the URL's
/// path, without its options).
pub fn database_name(database_url: &str) -> anyhow::Result<String> {
    Ok(parse(database_url)?.path().trim_start_matches('/').to_owned())
}

/// host:port of a service's URL, with `default_port` when it names none: where
/// a proxy forwards to.
pub fn upstream(service_url: &str, default_port: u16) -> anyhow::Result<String> {
    let url = parse(service_url)?;
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .context("the URL has no host (a socket path cannot be proxied)")?;
    Ok(format!("{host}:{}", url.port().unwrap_or(default_port)))
}

/// The database URL with the proxy's address and `sslmode=disable`, so the
/// proxy sees plaintext it can parse; user, database and other options kept.
pub fn proxied(database_url: &str, proxy: SocketAddr) -> anyhow::Result<String> {
    let mut url = parse(database_url)?;
    url.set_host(Some(&proxy.ip().to_string())).context("setting the proxy's host")?;
    url.set_port(Some(proxy.port())).map_err(|()| anyhow::anyhow!("the database URL cannot take a port"))?;
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "sslmode")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.query_pairs_mut().clear().extend_pairs(kept).append_pair("sslmode", "disable");
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "postgres://postgres:secret@db.local:6543/cw_test_1?sslmode=require&application_name=x";

    #[test]
    fn takes_a_database_url_apart_and_points_it_at_a_proxy() -> anyhow::Result<()> {
        assert_eq!(database_name(URL)?, "cw_test_1");
        assert_eq!(upstream(URL, 5432)?, "db.local:6543");
        assert_eq!(upstream("redis://127.0.0.1/0", 6379)?, "127.0.0.1:6379");
        let proxy: SocketAddr = "127.0.0.1:40000".parse()?;
        assert_eq!(
            proxied(URL, proxy)?,
            "postgres://postgres:secret@127.0.0.1:40000/cw_test_1?application_name=x&sslmode=disable"
        );
        Ok(())
    }
}
