//! Listening sockets: every address a name resolves to, IPv6 sockets IPv6-only.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tracing::warn;

use crate::error::{Error, Result};

/// Binds every address `spec` resolves to (`localhost:8443` gives 127.0.0.1 and ::1).
/// IPv6 sockets are IPv6-only, so `0.0.0.0:PORT` and `[::]:PORT` can both be given.
pub async fn bind(spec: &str) -> Result<Vec<TcpListener>> {
    let addrs = resolve(spec).await?;
    let mut listeners = Vec::new();
    let mut last_error = None;
    for addr in dedup(addrs) {
        match bind_one(addr) {
            Ok(l) => listeners.push(l),
            Err(e) => {
                warn!(%addr, error = %e, "cannot listen on this address");
                last_error = Some(Error::Network {
                    action: "listen on",
                    peer: addr.to_string(),
                    source: e,
                });
            }
        }
    }
    match (listeners.is_empty(), last_error) {
        (true, Some(e)) => Err(e),
        (true, None) => Err(Error::InvalidInput(format!(
            "'{spec}' resolves to no address"
        ))),
        (false, _) => Ok(listeners),
    }
}

/// Every address `spec` (`host:port`, `[v6]:port`) resolves to.
pub async fn resolve(spec: &str) -> Result<Vec<SocketAddr>> {
    Ok(tokio::net::lookup_host(spec)
        .await
        .map_err(|e| Error::Network {
            action: "resolve",
            peer: spec.to_owned(),
            source: e,
        })?
        .collect())
}

fn dedup(mut addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let mut seen = Vec::new();
    addrs.retain(|a| {
        let new = !seen.contains(a);
        seen.push(*a);
        new
    });
    addrs
}

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}
