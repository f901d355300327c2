//! The tunnel server's service: for each admitted client, connect to the backend (optionally
//! send a PROXY v2 header), then relay both ways with half-close.
//!
//! It runs in the ordinary [`crate::net::Server`] pipeline, as the default service of a
//! [`crate::service::Router`]: the handshake, the access policy (in the client verifier, so
//! a refused client never reaches the backend), the connection limit, the idle deadline and
//! the drain are the server's. The service adds the backend's connect deadline, the
//! connection's maximum lifetime, and the closing rules: a backend that refuses or does not
//! answer in time closes the client's connection with close_notify and a log line saying
//! why; nothing is retried.

use std::io;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tracing::{debug, info, warn};

use super::proxy::{openssl_cipher_name, ClientCert, ProxyError, ProxyHeader, TlsFacts};
use super::target::{Backend, Target};
use crate::error::chain;
use crate::net::relay::{relay, Direction, RelayError, RelayOptions, Until};
use crate::service::{BoxFuture, BoxStream, Context, End, Service};

/// How a tunnel treats each connection.
#[derive(Clone, Debug)]
pub struct TunnelOptions {
    /// The backend must accept within this time.
    pub connect_timeout: Duration,
    /// Close a connection this long after it was opened, busy or not (`None`: never).
    pub max_lifetime: Option<Duration>,
    /// Send a PROXY protocol v2 header to the backend first (see [`super::proxy`]).
    pub proxy_protocol: bool,
}

impl Default for TunnelOptions {
    fn default() -> Self {
        TunnelOptions {
            connect_timeout: Duration::from_secs(10),
            max_lifetime: None,
            proxy_protocol: false,
        }
    }
}

/// Why a tunnelled connection failed on the backend's side.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The backend refused, was unreachable, or did not accept in time.
    #[error("cannot connect to the backend {target}")]
    Connect {
        /// The backend.
        target: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The PROXY header could not be made.
    #[error("cannot make the PROXY header for {target}")]
    ProxyHeader {
        /// The backend.
        target: String,
        /// Why.
        #[source]
        source: ProxyError,
    },
    /// Reading from or writing to the backend failed.
    #[error("backend {target}: {action} failed")]
    Backend {
        /// The backend.
        target: String,
        /// `read`, `write`, `send the PROXY header`.
        action: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// The tunnel: a [`Service`] that connects each client to one backend.
#[derive(Debug)]
pub struct TunnelService {
    target: Target,
    options: TunnelOptions,
}

impl TunnelService {
    /// A tunnel to `target`.
    pub fn new(target: Target, options: TunnelOptions) -> Self {
        TunnelService { target, options }
    }

    /// The backend.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The PROXY v2 header for this connection.
    pub fn proxy_header(&self, ctx: &Context) -> Result<Vec<u8>, ProxyError> {
        let report = &ctx.handshake;
        let cipher = openssl_cipher_name(&report.cipher_suite);
        ProxyHeader {
            source: ctx.peer,
            destination: ctx.local,
            alpn: ctx.alpn().map(str::as_bytes),
            authority: ctx.sni(),
            tls: Some(TlsFacts {
                version: &report.protocol,
                cipher: &cipher,
                client_cert: ctx.identity().map(|id| ClientCert {
                    common_name: id.common_name.as_deref(),
                    der: id.der(),
                }),
            }),
        }
        .encode()
    }

    fn failed(&self, error: TunnelError) -> End {
        warn!(
            target = %self.target,
            error = %chain(&error),
            "tunnel: backend failed; closing the client's connection with close_notify"
        );
        End::Failed(Box::new(error))
    }

    async fn open_backend(&self, ctx: &Context) -> Result<Backend, TunnelError> {
        let target = || self.target.to_string();
        let mut backend = self
            .target
            .connect(self.options.connect_timeout)
            .await
            .map_err(|source| TunnelError::Connect {
                target: target(),
                source,
            })?;
        if self.options.proxy_protocol {
            let header = self
                .proxy_header(ctx)
                .map_err(|source| TunnelError::ProxyHeader {
                    target: target(),
                    source,
                })?;
            let sent = tokio::time::timeout(self.options.connect_timeout, async {
                backend.write_all(&header).await?;
                backend.flush().await
            })
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the backend does not read",
                ))
            });
            sent.map_err(|source| TunnelError::Backend {
                target: target(),
                action: "send the PROXY header",
                source,
            })?;
        }
        debug!(target = %self.target, "tunnel: backend connected");
        Ok(backend)
    }

    async fn run(&self, mut stream: BoxStream, ctx: &Context) -> End {
        let opened = tokio::select! {
            opened = self.open_backend(ctx) => opened,
            _ = ctx.shutdown.forced() => {
                close(&mut stream).await;
                return End::Shutdown;
            }
        };
        let mut backend = match opened {
            Ok(backend) => backend,
            Err(error) => {
                close(&mut stream).await;
                return self.failed(error);
            }
        };
        let outcome = {
            let options = RelayOptions {
                idle_timeout: None,
                until: Until::BothClosed,
            };
            let relaying = relay(&mut stream, &mut backend, options);
            tokio::pin!(relaying);
            tokio::select! {
                result = &mut relaying => Outcome::Relayed(result),
                _ = ctx.shutdown.forced() => Outcome::Forced,
                _ = sleep_or_forever(self.options.max_lifetime) => Outcome::Lifetime,
            }
        };
        match outcome {
            Outcome::Relayed(Ok(_)) => End::Closed,
            Outcome::Forced => {
                close(&mut stream).await;
                End::Shutdown
            }
            Outcome::Lifetime => {
                info!(
                    target = %self.target,
                    max_lifetime = %crate::duration::format(self.options.max_lifetime.unwrap_or_default()),
                    "tunnel: connection reached its maximum lifetime; closing"
                );
                close(&mut stream).await;
                End::Closed
            }
            Outcome::Relayed(Err(RelayError::Io {
                direction,
                action,
                source,
                ..
            })) => match (direction, action) {
                // The client's side: reading from it, or writing to it.
                (Direction::AToB, "read") | (Direction::BToA, "write") => End::from_io(source),
                _ => {
                    close(&mut stream).await;
                    self.failed(TunnelError::Backend {
                        target: self.target.to_string(),
                        action,
                        source,
                    })
                }
            },
            // No idle timeout is given to the relay: the server enforces it (forced above).
            Outcome::Relayed(Err(other @ RelayError::Idle(_))) => {
                close(&mut stream).await;
                End::Failed(Box::new(other))
            }
        }
    }
}

enum Outcome {
    Relayed(Result<crate::net::relay::Transferred, RelayError>),
    Forced,
    Lifetime,
}

impl Service for TunnelService {
    fn name(&self) -> &'static str {
        "tunnel"
    }

    fn serve<'a>(&'a self, stream: BoxStream, ctx: &'a Context) -> BoxFuture<'a, End> {
        Box::pin(self.run(stream, ctx))
    }
}

/// Sends close_notify, bounded: a client that does not read could block it forever.
async fn close(stream: &mut BoxStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
}

async fn sleep_or_forever(limit: Option<Duration>) {
    match limit {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, BufReader};
    use tokio::net::TcpListener;

    use super::*;
    use crate::service::Shutdown;
    use crate::tls::HandshakeReport;

    fn ctx() -> Context {
        Context::new(
            "127.0.0.1:40000".parse().unwrap(),
            "127.0.0.1:8443".parse().unwrap(),
            Arc::new(HandshakeReport::in_memory(None)),
            Shutdown::new(),
        )
    }

    #[tokio::test]
    async fn relays_to_the_backend_with_half_close() {
        let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target: Target = backend.local_addr().unwrap().to_string().parse().unwrap();
        tokio::spawn(async move {
            let (mut tcp, _) = backend.accept().await.unwrap();
            let mut request = Vec::new();
            tcp.read_to_end(&mut request).await.unwrap();
            tcp.write_all(&[b"got ", &request[..]].concat())
                .await
                .unwrap();
        });
        let tunnel = TunnelService::new(target, TunnelOptions::default());
        let (ours, mut client) = tokio::io::duplex(1024);
        let ctx = ctx();
        let serving = tunnel.serve(Box::new(BufReader::new(ours)), &ctx);
        let talking = async {
            client.write_all(b"ping").await.unwrap();
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        };
        let (end, got) = tokio::join!(serving, talking);
        assert_eq!(got, b"got ping");
        assert!(matches!(end, End::Closed), "{end}");
    }

    #[tokio::test]
    async fn a_refusing_backend_fails_with_its_cause() {
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let target: Target = format!("127.0.0.1:{port}").parse().unwrap();
        let tunnel = TunnelService::new(target, TunnelOptions::default());
        let (ours, mut client) = tokio::io::duplex(1024);
        let ctx = ctx();
        let end = tunnel.serve(Box::new(BufReader::new(ours)), &ctx).await;
        let End::Failed(error) = end else {
            panic!("expected a failure, got {end}");
        };
        let text = chain(error.as_ref()).to_string();
        assert!(
            text.contains("cannot connect to the backend 127.0.0.1:"),
            "{text}"
        );
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }
}
