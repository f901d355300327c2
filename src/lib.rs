//! # tlsnet
//!
//! A secure network on TLS 1.3 and mutual TLS: a server that terminates TLS and runs a
//! [`service`] on every connection, a client that verifies the server (system roots, a CA file
//! or a pinned key, plus the host name), a small private CA for development, and a handshake
//! report that shows what was negotiated.
//!
//! The library is layered so that each concern can be read on its own:
//!
//! | module | concern |
//! |---|---|
//! | [`tls`] | rustls configuration: versions, groups, trust, identities (no I/O) |
//! | [`pin`] | SPKI pins (`sha256/BASE64`) |
//! | [`x509`] | human-readable certificate summaries |
//! | [`failure`] | a handshake error turned into a cause in words |
//! | [`report`] | what a handshake negotiated |
//! | [`inspect`] | certificates from files and remote servers |
//! | [`reload`] | hot reload of certificates, keys, client CA and CRL |
//! | [`server`] | accept loop, limits, handshake deadline, graceful shutdown |
//! | [`service`] | what runs on an established connection (echo, discard, ...) |
//! | [`client`] | connect, verify, report |
//! | [`pki`] | certificate authority and the first-run development PKI |
//! | [`verify`] | server verification with an optional SPKI pin |
//! | [`telemetry`] | Prometheus metrics and health endpoint |
//! | [`danger`] | everything that weakens verification, in one place |
//!
//! Start with `examples/echo_server.rs` and `examples/echo_client.rs`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod danger;
pub mod duration;
pub mod error;
pub mod failure;
pub mod inspect;
pub mod pin;
pub mod pkcs12;
pub mod pki;
pub mod reload;
pub mod report;
pub mod server;
pub mod service;
pub mod telemetry;
pub mod tls;
pub mod verify;
pub mod x509;

pub use error::{Error, Result};
