//! The tunnel: mutual TLS in front of a plain TCP service, and from a local port to a TLS
//! server (what ghostunnel and stunnel do).
//!
//! - **server** ([`TunnelService`]): runs in the ordinary [`crate::net::Server`] as the
//!   default service of its router. The server terminates TLS and applies the access policy;
//!   the service connects each admitted client to the [`Target`] (`HOST:PORT` or
//!   `unix:PATH`), optionally sends a PROXY v2 header ([`proxy`]), and relays both ways.
//! - **client** ([`TunnelClient`]): a plain listener on this machine; each connection goes
//!   over TLS to the upstream, whose certificate is verified and checked against rules.
//!
//! ```no_run
//! # async fn demo(tls: std::sync::Arc<rustls::ServerConfig>) -> tlsnet::Result<()> {
//! use tlsnet::net::{bind, Server};
//! use tlsnet::tunnel::{TunnelOptions, TunnelService};
//! let target = "127.0.0.1:6379".parse().map_err(|e| tlsnet::Error::BadValue {
//!     what: "target".into(),
//!     source: e,
//! })?;
//! let tunnel = TunnelService::new(target, TunnelOptions::default());
//! Server::new(tls, tunnel)
//!     .run(bind("127.0.0.1:6380").await?, async { let _ = tokio::signal::ctrl_c().await; })
//!     .await
//! # }
//! ```

pub mod client;
pub mod proxy;
pub mod server;
pub mod set;
pub mod target;

pub use client::{TunnelClient, TunnelClientOptions};
pub use server::{TunnelError, TunnelOptions, TunnelService};
pub use set::{Applied, TunnelSet};
pub use target::{Backend, Target};
