//! Messaging (`tlsnet-msg/1`): users are the identities in client certificates; direct
//! messages, rooms, presence, history and receipts; store-and-forward with durable
//! acknowledgements.
//!
//! | module | concern |
//! |---|---|
//! | [`codec`] | the frames, sans I/O (no sockets, no TLS, no runtime) |
//! | [`store`] | the crash-safe store with group commit |
//! | [`service`] | the server side, a [`crate::service::Service`] |
//! | [`client`] | a client, for `tlsnet chat` and tests |

pub mod client;
pub mod codec;
pub mod service;
pub mod store;

pub use codec::ALPN;
