//! Configuration section `[server]`: the listener, CORS origins and trusted proxies.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::reader::Reader;
use super::render::{d, list, q};

/// The keys of `[server]`.
pub(super) const KEYS: &[&str] = &[
    "bind",
    "body_limit",
    "shutdown_grace",
    "cors_origins",
    "trusted_proxies",
    "hsts",
    // Slow and greedy clients (docs/SECURITY.md).
    "header_read_timeout",
    "body_read_timeout",
    "write_timeout",
    "max_connections_per_ip",
];

/// The keys of `[server]` whose environment value is a comma-separated list.
pub(super) const LIST_KEYS: &[&str] = &["server.cors_origins", "server.trusted_proxies"];

#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// `server.bind` (`AUTHD_SERVER__BIND`), default `127.0.0.1:8080`.
    pub bind: SocketAddr,
    /// `server.body_limit` in bytes, default 16384.
    pub body_limit: u64,
    /// `server.shutdown_grace`, default 30s: how long in-flight requests may take after SIGTERM.
    pub shutdown_grace: Duration,
    /// `server.cors_origins`: exact origins allowed for CORS (and for CSRF checks).
    pub cors_origins: Vec<String>,
    /// `server.trusted_proxies`: peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// `server.hsts`: send `Strict-Transport-Security`.
    pub hsts: bool,
    /// Slow and greedy clients: every connection's wait for a client is bounded.
    pub limits: ConnectionLimits,
}

/// How long authd waits for a client, and how many connections one client may hold
/// (docs/SECURITY.md, "Slow clients").
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// `server.header_read_timeout` (`AUTHD_SERVER__HEADER_READ_TIMEOUT`), default 10s, above
    /// zero: how long a request's head (request line and headers) may take to arrive, counted
    /// from its first byte, and how long a kept-alive connection may idle between requests.
    /// Past it the connection is closed without an answer.
    pub header_read_timeout: Duration,
    /// `server.body_read_timeout` (`AUTHD_SERVER__BODY_READ_TIMEOUT`), default 10s, above
    /// zero: how long a request body may take to arrive, in all; past it the answer is 408
    /// `REQUEST_TIMEOUT` and the connection is closed.
    pub body_read_timeout: Duration,
    /// `server.write_timeout` (`AUTHD_SERVER__WRITE_TIMEOUT`), default 10s, above zero: how
    /// long a response may wait for a client that reads nothing; past it the connection is
    /// closed.
    pub write_timeout: Duration,
    /// `server.max_connections_per_ip` (`AUTHD_SERVER__MAX_CONNECTIONS_PER_IP`), default 256,
    /// 0 for no cap: open connections from one socket peer address (IPv4-mapped addresses as
    /// IPv4). A connection past the cap is closed at once. Peers in `server.trusted_proxies`
    /// are not capped (every client behind a proxy arrives from its address).
    pub max_connections_per_ip: u32,
}

impl ServerSettings {
    pub(super) fn read(r: &mut Reader) -> Self {
        let bind_raw = r.string("server.bind");
        let bind = bind_raw.parse::<SocketAddr>().unwrap_or_else(|_| {
            r.fail::<()>(
                "server.bind",
                format!("expected IP:PORT such as 127.0.0.1:8080, got '{bind_raw}'"),
            );
            SocketAddr::from(([127, 0, 0, 1], 8080))
        });
        let cors_origins = r.list("server.cors_origins");
        for origin in &cors_origins {
            if let Err(why) = check_origin(origin) {
                r.fail::<()>("server.cors_origins", format!("'{origin}': {why}"));
            }
        }
        let trusted_proxies = r
            .list("server.trusted_proxies")
            .into_iter()
            .filter_map(|s| match parse_net(&s) {
                Some(net) => Some(net),
                None => r.fail(
                    "server.trusted_proxies",
                    format!("'{s}' is not an IP address or CIDR range"),
                ),
            })
            .collect();
        ServerSettings {
            bind,
            body_limit: r.uint("server.body_limit", 64, 64 * 1024 * 1024),
            shutdown_grace: r.duration("server.shutdown_grace", true),
            cors_origins,
            trusted_proxies,
            hsts: r.boolean("server.hsts"),
            limits: ConnectionLimits {
                header_read_timeout: r.duration("server.header_read_timeout", false),
                body_read_timeout: r.duration("server.body_read_timeout", false),
                write_timeout: r.duration("server.write_timeout", false),
                max_connections_per_ip: r.uint("server.max_connections_per_ip", 0, 1_000_000)
                    as u32,
            },
        }
    }

    pub(super) fn to_toml(&self) -> String {
        let proxies: Vec<String> = self.trusted_proxies.iter().map(|n| n.to_string()).collect();
        format!(
            "[server]\nbind = {}\nbody_limit = {}\nshutdown_grace = {}\ncors_origins = {}\ntrusted_proxies = {}\nhsts = {}\n\
             header_read_timeout = {}\nbody_read_timeout = {}\nwrite_timeout = {}\nmax_connections_per_ip = {}\n",
            q(&self.bind.to_string()),
            self.body_limit,
            d(self.shutdown_grace),
            list(&self.cors_origins),
            list(&proxies),
            self.hsts,
            d(self.limits.header_read_timeout),
            d(self.limits.body_read_timeout),
            d(self.limits.write_timeout),
            self.limits.max_connections_per_ip,
        )
    }
}

fn check_origin(origin: &str) -> Result<(), &'static str> {
    if origin == "*" {
        return Err("wildcards are not allowed; list exact origins");
    }
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or("must start with http:// or https://")?;
    if rest.is_empty()
        || rest.contains('/')
        || rest.contains('*')
        || rest.contains(char::is_whitespace)
    {
        return Err("must be scheme://host[:port] with no path");
    }
    Ok(())
}

/// An IP address or CIDR range; an IPv4-mapped one is its IPv4 form (contract section 9).
fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
        .map(crate::domain::ip::canonical_net)
}
