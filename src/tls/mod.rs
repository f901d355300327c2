//! TLS: configuration, trust and verification, who the peer is, what a handshake negotiated
//! and why one failed. No sockets here: the network side is in [`crate::net`].
//!
//! | module | concern |
//! |---|---|
//! | [`config`] | the crypto provider, versions, suites and groups; client and server settings |
//! | [`files`] | certificates, keys and CRLs from PEM/DER |
//! | [`source`] | the server's material from files, hot reload |
//! | [`sni`] | several server certificates on one listener |
//! | [`verify`] | server verification with an optional SPKI pin |
//! | [`pin`] | SPKI pins (`sha256/BASE64`) |
//! | [`identity`] | the peer's certificate as typed facts |
//! | [`keylog`] | connection secrets to a key-log file, for Wireshark (`--keylog`) |
//! | [`policy`] | which client certificates are admitted (`--allow-*`) |
//! | [`report`] | what a handshake negotiated |
//! | [`failure`] | a handshake error turned into a cause in words |

pub mod config;
pub mod failure;
pub mod files;
pub mod identity;
pub mod keylog;
pub mod pin;
pub mod policy;
pub mod report;
pub mod sni;
pub mod source;
pub mod verify;

pub use config::{
    cipher_suites, cpu_has_hardware_rng, is_post_quantum, kx_groups, provider, server_name,
    system_roots, ClientAuth, ClientTlsOptions, ServerTlsOptions, ServerTrust,
};
pub use failure::{FailureCause, Side};
pub use files::{
    certs_from_pem, crls_from_bytes, key_from_pem, load_certs, load_crls, load_key, Identity,
};
pub use identity::PeerIdentity;
pub use keylog::{KeyLogTarget, KeyLogWriter};
pub use pin::SpkiPin;
pub use policy::{AccessPolicy, Pattern, Rule};
pub use report::HandshakeReport;
pub use source::{ReloadOutcome, Reloader, ServerTlsSource, TlsHandle};
