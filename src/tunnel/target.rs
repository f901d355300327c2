//! Where a tunnel server sends its clients' bytes: `HOST:PORT` or `unix:PATH`, and the
//! loopback rule.
//!
//! Behind the tunnel the bytes are plain text. A target on this machine (a loopback address,
//! `localhost`, a unix socket) keeps them here; any other target sends them over a network,
//! which must be a choice ([`Target::is_local`] is false, and `tlsnet tunnel server` asks for
//! `--unsafe-target`), as in ghostunnel.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use crate::error::ParseError;
use crate::net::client::split_host_port;

/// A tunnel's backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A TCP address: a name or an IP address, and a port.
    Tcp {
        /// The name or address (IPv6 without brackets).
        host: String,
        /// The port.
        port: u16,
    },
    /// A unix stream socket.
    Unix(PathBuf),
}

impl Target {
    /// Whether the bytes stay on this machine: a unix socket, `localhost`, or a loopback
    /// address (127.0.0.0/8, ::1). Other names are not: what they resolve to can change.
    pub fn is_local(&self) -> bool {
        match self {
            Target::Unix(_) => true,
            Target::Tcp { host, .. } => is_loopback_host(host),
        }
    }

    /// Connects, giving up after `timeout`. A name is resolved and its addresses tried in
    /// turn, the deadline covering them all.
    pub async fn connect(&self, timeout: Duration) -> Result<Backend, io::Error> {
        let connecting = async {
            match self {
                Target::Unix(path) => UnixStream::connect(path).await.map(Backend::Unix),
                Target::Tcp { host, port } => {
                    let tcp = TcpStream::connect((host.as_str(), *port)).await?;
                    let _ = tcp.set_nodelay(true);
                    Ok(Backend::Tcp(tcp))
                }
            }
        };
        match tokio::time::timeout(timeout, connecting).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no connection within {} (--connect-timeout)",
                    crate::duration::format(timeout)
                ),
            )),
        }
    }
}

/// Whether `host` names this machine: `localhost` or a loopback IP address.
pub fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// Whether a listening address (`HOST:PORT`) is on loopback only.
pub fn is_loopback_listen(addr: &str) -> bool {
    split_host_port(addr).is_ok_and(|(host, _)| is_loopback_host(&host))
}

impl FromStr for Target {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(ParseError::new(
                    "unix: needs a socket path (unix:/run/app.sock)",
                ));
            }
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        let (host, port) = split_host_port(text).map_err(|e| {
            ParseError::caused_by(
                "a target is HOST:PORT, [IPv6]:PORT or unix:PATH",
                e.to_string(),
            )
        })?;
        if port == 0 {
            return Err(ParseError::new(format!("'{text}': port 0 is not a target")));
        }
        Ok(Target::Tcp { host, port })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
            Target::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Target::Tcp { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// A connection to a [`Target`].
#[derive(Debug)]
pub enum Backend {
    /// Over TCP.
    Tcp(TcpStream),
    /// Over a unix socket.
    Unix(UnixStream),
}

impl AsyncRead for Backend {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Backend::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Backend::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Backend {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Backend::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Backend::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Backend::Tcp(s) => Pin::new(s).poll_flush(cx),
            Backend::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Backend::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Backend::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert_eq!(
            "127.0.0.1:6379".parse::<Target>().unwrap(),
            Target::Tcp {
                host: "127.0.0.1".into(),
                port: 6379
            }
        );
        assert_eq!(
            "unix:/run/redis.sock".parse::<Target>().unwrap(),
            Target::Unix("/run/redis.sock".into())
        );
        assert_eq!(
            "[::1]:80".parse::<Target>().unwrap().to_string(),
            "[::1]:80"
        );
        for bad in ["unix:", "localhost", "host:0", ":80", "::1:80", "host:http"] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }

    #[test]
    fn only_this_machine_is_local() {
        let local = |t: &str| t.parse::<Target>().unwrap().is_local();
        assert!(local("127.0.0.1:1"));
        assert!(local("127.9.8.7:1"));
        assert!(local("[::1]:1"));
        assert!(local("LOCALHOST:1"));
        assert!(local("unix:/tmp/x.sock"));
        assert!(!local("10.0.0.1:1"));
        assert!(!local("[::]:1"));
        assert!(!local("0.0.0.0:1"));
        assert!(!local("db.internal:5432"));
        assert!(!local("localhost.evil.example:1"));
        assert!(is_loopback_listen("127.0.0.1:8080"));
        assert!(is_loopback_listen("[::1]:8080"));
        assert!(!is_loopback_listen("0.0.0.0:8080"));
        assert!(!is_loopback_listen("[::]:8080"));
        assert!(!is_loopback_listen("nonsense"));
    }
}
