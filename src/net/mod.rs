//! The network side: listening, accepting, the server's connection pipeline, the client, and
//! the relay between two streams.
//!
//! | module | concern |
//! |---|---|
//! | [`bind`] | listening sockets for every address a name resolves to |
//! | [`accept`] | the reusable accept loop: connection limit, backoff, task tracking |
//! | [`sniff`] | the first bytes of a connection (sans-I/O) |
//! | [`server`] | sniff, handshake, policy, route, metered service, drain |
//! | [`metered`] | byte counting and last activity around a stream |
//! | [`read_ahead`] | large socket reads under rustls |
//! | [`kernel_tls`] | optional kernel TLS for the data path, rustls as the fallback |
//! | [`stats`] | a server's counters |
//! | [`client`] | connect, verify, report |
//! | [`relay`] | copy both ways with half-close and an idle deadline |
//! | [`systemd`] | socket activation and readiness notification |

pub mod accept;
pub mod bind;
pub mod client;
pub mod kernel_tls;
pub mod metered;
pub mod read_ahead;
pub mod relay;
pub mod server;
pub mod sniff;
pub mod stats;
pub mod systemd;

pub use bind::bind;
pub use client::{ClientStream, Connector};
pub use relay::{relay, RelayOptions, Until};
pub use server::{Server, ServerOptions, ServerStream};
pub use stats::ServerStats;
