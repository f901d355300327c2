//! Messaging (`tlsnet-msg/1`): users are the identities in client certificates; direct
//! messages, rooms, presence, history and receipts; store-and-forward with durable
//! acknowledgements.
//!
//! | module | concern |
//! |---|---|
//! | [`codec`] | the frames, sans I/O (no sockets, no TLS, no runtime) |
//! | [`store`] | the crash-safe store with group commit (one machine) |
//! | [`nats`] | the NATS JetStream backend (several nodes, `--store nats://...`) |
//! | [`backend`] | which of the two a service uses |
//! | [`service`] | the server side, a [`crate::service::Service`] |
//! | [`client`] | a client, for `tlsnet chat` and tests |

pub mod backend;
pub mod client;
pub mod codec;
pub mod nats;
pub mod service;
pub mod store;

pub use codec::ALPN;
