//! CLI: `authd healthcheck`: GET /healthz on the configured address; exit 0 when it answers
//! 200, else 1. Needs no curl (for container HEALTHCHECKs).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use super::CliError;
use crate::config::Settings;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to check (default: server.bind, with 0.0.0.0 or :: replaced by loopback)
    #[arg(long, value_name = "IP:PORT")]
    pub addr: Option<SocketAddr>,
    /// Give up after this long
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

pub async fn run(settings: Arc<Settings>, args: Args) -> Result<(), CliError> {
    let mut addr = args.addr.unwrap_or(settings.server.bind);
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    let timeout = args.timeout;
    let status = tokio::task::spawn_blocking(move || check(addr, timeout))
        .await
        .map_err(|e| CliError(format!("healthcheck failed: {e}")))?
        .map_err(|e| CliError(format!("http://{addr}/healthz unreachable: {e}")))?;
    if status == "200" {
        println!("ok");
        Ok(())
    } else {
        Err(CliError(format!("http://{addr}/healthz answered {status}")))
    }
}

/// The status code of `GET /healthz`.
fn check(addr: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: authd-healthcheck\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head)?;
    let line = String::from_utf8_lossy(&head[..n]);
    Ok(line
        .split_whitespace()
        .nth(1)
        .unwrap_or("no response")
        .to_string())
}
