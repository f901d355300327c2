//! A mutual-TLS echo server in a few lines of the library.
//!
//! ```text
//! cargo run --example echo_server -- CERT KEY CLIENT_CA [ADDR]
//! ```
//! With `tlsnet serve` run once, the development PKI has all three files:
//! `~/.local/state/tlsnet/dev-pki/{server.pem,server-key.pem,ca.pem}`.

use std::path::PathBuf;

use tlsnet::net::{bind, Server};
use tlsnet::service::Echo;
use tlsnet::tls::{load_certs, Identity, ServerTlsOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [cert, key, client_ca, rest @ ..] = args.as_slice() else {
        eprintln!("usage: echo_server CERT KEY CLIENT_CA [ADDR]");
        std::process::exit(2);
    };
    let addr = rest.first().map(String::as_str).unwrap_or("127.0.0.1:8443");

    let identity = Identity::from_files(&PathBuf::from(cert), &PathBuf::from(key))?;
    let tls = ServerTlsOptions::new(identity)
        .require_client_certs(load_certs(&PathBuf::from(client_ca))?)
        .build()?;

    let listeners = bind(addr).await?;
    println!("echo server on {addr}; Ctrl-C stops it");
    Server::new(tls, Echo)
        .run(listeners, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
