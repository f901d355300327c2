//! # tlsnet
//!
//! A secure network on TLS 1.3 and mutual TLS: a server that terminates TLS, admits clients by
//! their certificates and runs the [`service`] each client chose on one port; a client that
//! verifies the server (system roots, a CA file or a pinned key, plus the host name); a small
//! private CA; and a handshake report that shows what was negotiated.
//!
//! The folders are the architecture:
//!
//! | module | concern |
//! |---|---|
//! | [`tls`] | configuration, verification, pins, identity, access policy, reload, reports, failure causes (no sockets) |
//! | [`net`] | listening, the accept loop, the server's connection pipeline, the client, the relay |
//! | [`service`] | the interface services implement, ALPN routing, echo and discard |
//! | [`msg`] | messaging: frames, the store, the service and a client |
//! | [`files`] | file transfer: per-user spaces, inboxes, resumable verified transfers |
//! | [`tunnel`] | TLS in front of plain TCP services, local ports to TLS servers, PROXY v2 |
//! | [`x509`] | certificate summaries and name formatting, for people |
//! | [`inspect`] | certificates from files and remote servers |
//! | [`pki`] | certificate authority and the first-run development PKI |
//! | [`config`] | configuration files (TOML) and the settings flags and files share |
//! | [`telemetry`] | Prometheus metrics and health endpoint |
//! | [`danger`] | everything that weakens verification, in one place |
//!
//! Start with `examples/echo_server.rs` and `examples/echo_client.rs`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod danger;
pub mod duration;
pub mod error;
pub mod files;
pub mod inspect;
pub mod msg;
pub mod net;
pub mod pkcs12;
pub mod pki;
pub mod service;
pub mod telemetry;
pub mod tls;
pub mod tunnel;
mod watch;
pub mod x509;

pub use error::{Error, Result};
