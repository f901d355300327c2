//! A client of `tlsnet-msg/1`.
