//! Shared test helpers: a fresh PKI per test (made at test time, never checked in), an
//! in-process server on 127.0.0.1:0, and clients built with the library.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tlsnet::net::client::{ClientStream, Connector};
use tlsnet::net::{Server, ServerOptions, ServerStats};
use tlsnet::pki::{CertificateAuthority, KeyType, LeafSpec, Purpose};
use tlsnet::service::{Echo, Router};
use tlsnet::tls::HandshakeReport;
use tlsnet::tls::{
    load_certs, server_name, ClientAuth, ClientTlsOptions, Identity, ServerTlsOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

mod binary;
mod capture;
mod chains;
mod files;
mod msg;
mod nats;
mod process;
mod tunnel;
// Not every test crate spawns processes or needs certificate chains.
#[allow(unused_imports)]
pub use binary::*;
#[allow(unused_imports)]
pub use capture::*;
#[allow(unused_imports)]
pub use chains::*;
#[allow(unused_imports)]
pub use files::*;
#[allow(unused_imports)]
pub use msg::*;
#[allow(unused_imports)]
pub use nats::*;
#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)]
pub use tunnel::*;

/// Files of a test PKI in a temporary directory: a CA, a server certificate for localhost /
/// 127.0.0.1 / ::1, and a client certificate. `other_ca` is a second, unrelated CA.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca: CertificateAuthority,
    pub other_ca: CertificateAuthority,
}

impl TestPki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let year = Duration::from_secs(365 * 86400);
        let ca =
            CertificateAuthority::generate("tlsnet test CA", KeyType::EcdsaP256, year).expect("CA");
        let other_ca =
            CertificateAuthority::generate("some other CA", KeyType::EcdsaP256, year).expect("CA");
        let pki = TestPki { dir, ca, other_ca };
        std::fs::write(pki.path("ca.pem"), pki.ca.cert_pem()).unwrap();
        std::fs::write(pki.path("other-ca.pem"), pki.other_ca.cert_pem()).unwrap();
        pki.issue("server", &server_spec());
        pki.issue("client", &LeafSpec::new(Purpose::Client, "alice"));
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Issues `NAME.pem` + `NAME-key.pem` from the test CA; returns the cert path.
    pub fn issue(&self, name: &str, spec: &LeafSpec) -> PathBuf {
        self.issue_by(&self.ca, name, spec)
    }

    pub fn issue_by(&self, ca: &CertificateAuthority, name: &str, spec: &LeafSpec) -> PathBuf {
        let issued = ca.issue(spec).expect("issue");
        std::fs::write(self.path(&format!("{name}.pem")), &issued.chain_pem).unwrap();
        std::fs::write(self.path(&format!("{name}-key.pem")), &issued.key_pem).unwrap();
        self.path(&format!("{name}.pem"))
    }

    /// A client certificate `NAME.pem` + `NAME-key.pem` from the test CA with a common name and
    /// an organizational unit (which [`LeafSpec`] has no field for).
    pub fn issue_with_ou(&self, name: &str, cn: &str, ou: &str) -> PathBuf {
        let ca_key = rcgen::KeyPair::from_pem(&self.ca.key_pem()).expect("CA key");
        let issuer = rcgen::Issuer::from_ca_cert_pem(self.ca.cert_pem(), ca_key).expect("issuer");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationalUnitName, ou);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &issuer).expect("sign");
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(self.path(&format!("{name}-key.pem")), key.serialize_pem()).unwrap();
        self.path(&format!("{name}.pem"))
    }

    /// A leaf that expired yesterday.
    pub fn expired_spec(purpose: Purpose, cn: &str) -> LeafSpec {
        let mut spec = match purpose {
            Purpose::Server => server_spec(),
            Purpose::Client => LeafSpec::new(Purpose::Client, cn),
        };
        spec.valid_from = Some(time::OffsetDateTime::now_utc() - time::Duration::days(30));
        spec.validity = Duration::from_secs(29 * 86400);
        spec
    }

    pub fn identity(&self, name: &str) -> Identity {
        Identity::from_files(
            &self.path(&format!("{name}.pem")),
            &self.path(&format!("{name}-key.pem")),
        )
        .expect("identity")
    }

    pub fn ca_certs(&self) -> Vec<rustls::pki_types::CertificateDer<'static>> {
        load_certs(&self.path("ca.pem")).unwrap()
    }

    /// Server TLS options: this PKI's server certificate, client certificates required.
    pub fn server_tls(&self) -> ServerTlsOptions {
        ServerTlsOptions::new(self.identity("server")).require_client_certs(self.ca_certs())
    }

    /// Server TLS options without client authentication.
    pub fn server_tls_no_client_auth(&self) -> ServerTlsOptions {
        let mut o = ServerTlsOptions::new(self.identity("server"));
        o.client_auth = ClientAuth::None;
        o
    }

    /// Client TLS options trusting this CA, with the `client` certificate.
    pub fn client_tls(&self) -> ClientTlsOptions {
        ClientTlsOptions::with_roots(self.ca_certs()).with_identity(self.identity("client"))
    }
}

pub fn server_spec() -> LeafSpec {
    let mut spec = LeafSpec::new(Purpose::Server, "localhost");
    spec.dns = vec!["localhost".into()];
    spec.ips = vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    spec
}

/// Server options for tests: defaults, with a short shutdown grace period.
pub fn test_options() -> ServerOptions {
    ServerOptions {
        shutdown_timeout: Duration::from_secs(2),
        ..ServerOptions::default()
    }
}

/// A server running in this process on 127.0.0.1:0; stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub stats: Arc<ServerStats>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(tls: ServerTlsOptions) -> Self {
        Self::start_with(tls, Echo, test_options()).await
    }

    pub async fn start_with(
        tls: ServerTlsOptions,
        services: impl Into<Router>,
        options: ServerOptions,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let server = Server::with_options(tls.build().expect("server config"), services, options);
        let stats = server.stats();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(vec![listener], async {
                    let _ = stopped.await;
                })
                .await
                .expect("server run");
        });
        TestServer {
            addr,
            stats,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn addr_string(&self) -> String {
        self.addr.to_string()
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(40), task).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Connects with the library client, checking the name `localhost`.
pub async fn connect(
    addr: &str,
    tls: &ClientTlsOptions,
) -> tlsnet::Result<(ClientStream, HandshakeReport)> {
    let connector = Connector::new(tls.build()?);
    connector.connect(addr, server_name("localhost")?).await
}

/// Sends `data`, closes our side, and reads everything back until the server closes.
pub async fn echo_round_trip(stream: &mut ClientStream, data: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(data).await?;
    stream.flush().await?;
    let mut got = vec![0u8; data.len()];
    stream.read_exact(&mut got).await?;
    Ok(got)
}

/// A full mutual-TLS echo exchange under a 5 s deadline; panics if the server does not serve
/// it. The hostile-client tests run it while the hostile clients are connected.
pub async fn good_client_is_served(pki: &TestPki, addr: &str) {
    let (mut stream, _) =
        tokio::time::timeout(Duration::from_secs(5), connect(addr, &pki.client_tls()))
            .await
            .expect("good client: handshake in time")
            .expect("good client: handshake");
    let got = echo_round_trip(&mut stream, b"still served").await.unwrap();
    assert_eq!(got, b"still served");
}

/// Writes then reads, returning the first error: in TLS 1.3 a rejected client sees the
/// server's alert here, not during its handshake.
pub async fn send_and_read(stream: &mut ClientStream) -> std::io::Result<usize> {
    stream.write_all(b"ping").await?;
    stream.flush().await?;
    let mut buf = [0u8; 16];
    stream.read(&mut buf).await
}

/// The path of the built `tlsnet` binary.
pub fn tlsnet_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tlsnet"))
}

/// Whether a program is on PATH.
pub fn have(program: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Panics with a clear message when a peer program the tests need is missing: the project's
/// test script installs them, so a missing one is a broken setup, not a reason to skip.
pub fn require(program: &str) {
    assert!(
        have(program),
        "`{program}` is not installed: run the tests with scripts/test, which installs the peers"
    );
}

/// A free TCP port on 127.0.0.1 for a peer process to listen on.
///
/// The port is handed to another process, so it must stay free until that process binds it.
/// Two things could take it in between, and this avoids both: another `free_port` of this test
/// binary (ports are handed out once each, from a counter) and an outgoing connection of any
/// process (the ports come from below Linux's ephemeral range, 32768-60999, which `connect`
/// and `bind(0)` draw from).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    // Each test binary starts at its own place in the range (from its pid), so that test
    // binaries run one after another do not meet each other's lingering sockets.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 127.0.0.1:{FIRST}-{}", FIRST + SPAN);
}

/// Waits until something accepts TCP connections on `addr`.
pub async fn wait_for_port(addr: &str) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {addr} after 10 s");
}

/// A plain HTTP/1.1 GET (a metrics endpoint), bounded; returns the whole response.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(tcp, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).unwrap();
    text
}

pub fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap();
}

/// Waits (up to 5 s) until the server has counted a handshake failure with `label`.
pub async fn wait_for_failure(stats: &ServerStats, label: &str) {
    for _ in 0..100 {
        if stats.failures(label) > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "server never recorded a '{label}' failure; it recorded {:?}",
        stats.failures_by_cause()
    );
}

/// The client-side cause in words for a failed connect or a failed first read.
pub fn client_cause(err: &tlsnet::Error) -> String {
    match err {
        tlsnet::Error::Handshake { cause, .. } => cause.to_string(),
        other => panic!("expected a handshake failure, got: {other}"),
    }
}
