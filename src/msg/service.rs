//! The server side of `tlsnet-msg/1`.
