//! Public-key infrastructure: a certificate authority that issues server and client
//! certificates ([`ca`]), safe file writing for keys ([`files`]) and the development PKI that
//! `tlsnet serve` creates on first run ([`dev`]).

pub mod ca;
pub mod dev;
pub mod files;
pub mod store;

pub use ca::{CertificateAuthority, Constraints, IssuedCert, KeyType, LeafSpec, Purpose, Revoked};
pub use store::{InitOptions, PkiDir};
