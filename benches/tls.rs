//! Micro-benchmarks of the TLS hot paths, in memory (no sockets): the server configuration is
//! tlsnet's own (`tlsnet::tls::ServerTlsOptions::build`), the certificates its development PKI
//! (ECDSA P-256), the client a plain rustls client offering one key-exchange group.
//!
//! `cargo bench --bench tls` (add `-- handshake` to run only the handshakes). The numbers are
//! client + server work together; `bench/run` measures the server alone over TCP.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rustls::client::Resumption;
use rustls::crypto::{aws_lc_rs, SupportedKxGroup};
use rustls::{
    ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection,
};
use tlsnet::pki::dev::DevPki;
use tlsnet::tls::{load_certs, server_name, Identity, ServerTlsOptions};

struct Pki {
    _dir: tempfile::TempDir,
    server: Identity,
    client: Identity,
    ca: Vec<rustls::pki_types::CertificateDer<'static>>,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("temp dir");
    let dev = DevPki::at(dir.path().join("pki"));
    dev.ensure().expect("dev PKI");
    Pki {
        server: Identity::from_files(&dev.server_cert(), &dev.server_key())
            .expect("server identity"),
        client: Identity::from_files(&dev.client_cert(), &dev.client_key())
            .expect("client identity"),
        ca: load_certs(&dev.ca_cert()).expect("CA"),
        _dir: dir,
    }
}

fn server_config(pki: &Pki, mutual: bool) -> Arc<ServerConfig> {
    let options = ServerTlsOptions::new(pki.server.clone());
    let options = if mutual {
        options.require_client_certs(pki.ca.clone())
    } else {
        options
    };
    options.build().expect("server config")
}

fn client_config(
    pki: &Pki,
    group: &'static dyn SupportedKxGroup,
    mutual: bool,
    resume: bool,
) -> Arc<ClientConfig> {
    let mut provider = aws_lc_rs::default_provider();
    provider.kx_groups = vec![group];
    let mut roots = RootCertStore::empty();
    for ca in &pki.ca {
        roots.add(ca.clone()).expect("root");
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots);
    let mut config = if mutual {
        builder
            .with_client_auth_cert(pki.client.chain.clone(), pki.client.key.clone_key())
            .expect("client cert")
    } else {
        builder.with_no_client_auth()
    };
    config.resumption = if resume {
        Resumption::in_memory_sessions(64)
    } else {
        Resumption::disabled()
    };
    Arc::new(config)
}

/// Moves TLS bytes from one side to the other until it has nothing more to send.
fn transfer(from: &mut Connection, to: &mut Connection, buf: &mut Vec<u8>) {
    buf.clear();
    while from.wants_write() {
        from.write_tls(buf).expect("write_tls");
    }
    let mut slice = &buf[..];
    while !slice.is_empty() {
        to.read_tls(&mut slice).expect("read_tls");
        to.process_new_packets().expect("process_new_packets");
    }
}

/// One complete handshake (tickets included); returns both ends.
fn handshake(
    client: &Arc<ClientConfig>,
    server: &Arc<ServerConfig>,
    buf: &mut Vec<u8>,
) -> (Connection, Connection) {
    let name = server_name("localhost").expect("name");
    let mut c: Connection = ClientConnection::new(client.clone(), name)
        .expect("client")
        .into();
    let mut s: Connection = ServerConnection::new(server.clone())
        .expect("server")
        .into();
    while c.is_handshaking() || s.is_handshaking() || c.wants_write() || s.wants_write() {
        transfer(&mut c, &mut s, buf);
        transfer(&mut s, &mut c, buf);
    }
    (c, s)
}

fn handshakes(cr: &mut Criterion) {
    let pki = pki();
    let mut group = cr.benchmark_group("handshake");
    let mut buf = Vec::with_capacity(64 * 1024);
    let kx: [(&str, &'static dyn SupportedKxGroup); 2] = [
        ("X25519", aws_lc_rs::kx_group::X25519),
        ("X25519MLKEM768", aws_lc_rs::kx_group::X25519MLKEM768),
    ];
    for (gname, g) in kx {
        for (mode, mutual) in [("full-server-auth", false), ("full-mutual", true)] {
            let server = server_config(&pki, mutual);
            let client = client_config(&pki, g, mutual, false);
            group.bench_function(BenchmarkId::new(mode, gname), |b| {
                b.iter(|| black_box(handshake(&client, &server, &mut buf)))
            });
        }
        // Resumption: server-auth only (tlsnet does not resume mutual-TLS sessions).
        let server = server_config(&pki, false);
        let client = client_config(&pki, g, false, true);
        let (c, _) = handshake(&client, &server, &mut buf);
        assert!(c.handshake_kind().is_some());
        group.bench_function(BenchmarkId::new("resumed-server-auth", gname), |b| {
            b.iter(|| {
                let (c, s) = handshake(&client, &server, &mut buf);
                debug_assert_eq!(c.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
                black_box((c, s))
            })
        });
    }
    group.finish();
}

fn records(cr: &mut Criterion) {
    let pki = pki();
    let server = server_config(&pki, false);
    let client = client_config(&pki, aws_lc_rs::kx_group::X25519, false, false);
    let mut buf = Vec::with_capacity(1 << 20);
    let (mut c, mut s) = handshake(&client, &server, &mut buf);
    // The whole chunk is encrypted before it is moved: lift the 64 KiB default limit.
    c.set_buffer_limit(None);
    let chunk = vec![0x5au8; 256 * 1024];
    let mut sink = vec![0u8; 256 * 1024];
    let mut group = cr.benchmark_group("records");
    group.throughput(Throughput::Bytes(chunk.len() as u64));
    group.bench_function(
        "client-to-server 256 KiB (AES-256-GCM, 16 KiB records)",
        |b| {
            b.iter(|| {
                use std::io::{Read, Write};
                c.writer().write_all(&chunk).expect("write");
                buf.clear();
                while c.wants_write() {
                    c.write_tls(&mut buf).expect("write_tls");
                }
                let mut slice = &buf[..];
                let mut got = 0;
                while !slice.is_empty() {
                    s.read_tls(&mut slice).expect("read_tls");
                    s.process_new_packets().expect("process");
                    loop {
                        match s.reader().read(&mut sink) {
                            Ok(0) => break,
                            Ok(n) => got += n,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(e) => panic!("read: {e}"),
                        }
                    }
                }
                assert_eq!(got, chunk.len());
            })
        },
    );
    group.finish();
}

criterion_group!(benches, handshakes, records);
criterion_main!(benches);
