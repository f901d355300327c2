//! The client: resolve, connect, handshake under a deadline, report what was negotiated.
//!
//! In TLS 1.3 the server checks a client certificate after the client has finished its part
//! of the handshake, so a rejection often arrives as an alert on the first read: use
//! [`read_error_cause`] to turn that read error into words.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::read_ahead::ReadAhead;
use crate::error::{Error, Result};
use crate::tls::{FailureCause, HandshakeReport, Side};

/// The client end of an established TLS connection. As on the server, the socket is read in
/// large pieces ([`ReadAhead`]), not one TLS record per `recv` (a 2 GiB download made 132,000
/// `recvfrom` calls of 16 KiB without it).
pub type ClientStream = tokio_rustls::client::TlsStream<ReadAhead<TcpStream>>;

/// Connects to TLS servers with one configuration.
#[derive(Clone)]
pub struct Connector {
    config: Arc<ClientConfig>,
    /// Deadline for the TCP connection.
    pub connect_timeout: Duration,
    /// Deadline for the TLS handshake.
    pub handshake_timeout: Duration,
}

impl Connector {
    /// A connector with 10 s deadlines for connecting and for the handshake.
    pub fn new(config: Arc<ClientConfig>) -> Self {
        Connector {
            config,
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
        }
    }

    /// Connects to `addr` (`host:port`, `[v6]:port`), checking the certificate against
    /// `server_name`, and reports the handshake.
    pub async fn connect(
        &self,
        addr: &str,
        server_name: ServerName<'static>,
    ) -> Result<(ClientStream, HandshakeReport)> {
        let tcp = connect_tcp(addr, self.connect_timeout).await?;
        let _ = tcp.set_nodelay(true);
        self.handshake(tcp, addr, server_name).await
    }

    /// Runs the handshake on an already connected socket.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        addr: &str,
        server_name: ServerName<'static>,
    ) -> Result<(ClientStream, HandshakeReport)> {
        let started = Instant::now();
        let sni = match &server_name {
            ServerName::DnsName(name) => Some(name.as_ref().to_owned()),
            _ => None,
        };
        let connector = TlsConnector::from(self.config.clone());
        let stream = tokio::time::timeout(
            self.handshake_timeout,
            connector.connect(server_name, ReadAhead::new(tcp)),
        )
        .await
        .map_err(|_| Error::Handshake {
            peer: addr.to_owned(),
            cause: FailureCause::Timeout(self.handshake_timeout),
        })?
        .map_err(|e| Error::Handshake {
            peer: addr.to_owned(),
            cause: FailureCause::classify(&e, Side::Client),
        })?;
        let (_, conn) = stream.get_ref();
        let report = HandshakeReport::from_state(conn, sni.as_deref(), started.elapsed())
            .with_peer_chain(conn);
        Ok((stream, report))
    }
}

/// Resolves `addr` and connects to the first address that answers.
pub async fn connect_tcp(addr: &str, timeout: Duration) -> Result<TcpStream> {
    let addrs = super::bind::resolve(addr).await?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolves to no address");
    for candidate in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(candidate)).await {
            Ok(Ok(tcp)) => return Ok(tcp),
            Ok(Err(e)) => last = e,
            Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, "connection timed out"),
        }
    }
    Err(Error::Network {
        action: "connect to",
        peer: addr.to_owned(),
        source: last,
    })
}

/// Splits `host:port` or `[v6]:port` into host and port.
pub fn split_host_port(addr: &str) -> Result<(String, u16)> {
    let bad = || Error::InvalidInput(format!("'{addr}' is not HOST:PORT (for IPv6: [::1]:8443)"));
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || (host.contains(':') && !addr.starts_with('[')) {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

/// The cause of an error from reading or writing an established client stream, in words:
/// the server's refusal of our certificate shows up here in TLS 1.3.
pub fn read_error_cause(e: &io::Error) -> String {
    if e.get_ref().is_some_and(|i| i.is::<rustls::Error>()) {
        FailureCause::classify(e, Side::Client).to_string()
    } else if e.kind() == io::ErrorKind::UnexpectedEof {
        "server closed the connection without close_notify (data may be truncated)".into()
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_addresses() {
        assert_eq!(
            split_host_port("localhost:8443").unwrap(),
            ("localhost".into(), 8443)
        );
        assert_eq!(split_host_port("[::1]:443").unwrap(), ("::1".into(), 443));
        assert!(split_host_port("localhost").is_err());
        assert!(split_host_port("::1:443").is_err());
        assert!(split_host_port(":443").is_err());
        assert!(split_host_port("host:99999").is_err());
    }
}
