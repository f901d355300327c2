//! A mutual-TLS client: connect, print the handshake report, send a line, print the echo.
//!
//! ```text
//! cargo run --example echo_client -- CA CERT KEY [HOST:PORT]
//! ```

use std::path::PathBuf;

use tlsnet::net::client::Connector;
use tlsnet::tls::{load_certs, server_name, ClientTlsOptions, Identity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [ca, cert, key, rest @ ..] = args.as_slice() else {
        eprintln!("usage: echo_client CA CERT KEY [HOST:PORT]");
        std::process::exit(2);
    };
    let addr = rest.first().map(String::as_str).unwrap_or("localhost:8443");

    let tls = ClientTlsOptions::with_roots(load_certs(&PathBuf::from(ca))?)
        .with_identity(Identity::from_files(
            &PathBuf::from(cert),
            &PathBuf::from(key),
        )?)
        .build()?;
    let (host, _) = tlsnet::net::client::split_host_port(addr)?;
    let (mut stream, report) = Connector::new(tls)
        .connect(addr, server_name(&host)?)
        .await?;
    print!("{report}");

    stream.write_all(b"hello from the library\n").await?;
    let mut buf = vec![0u8; 64];
    let n = stream.read(&mut buf).await?;
    println!("echo: {}", String::from_utf8_lossy(&buf[..n]).trim_end());
    stream.shutdown().await?; // close_notify
    Ok(())
}
