//! For the tunnel tests: `tlsnet tunnel server|client` processes, in-process backends that
//! count what reaches them, a PROXY protocol v2 decoder written from HAProxy's specification
//! (doc/proxy-protocol.txt, section 2.2), and a process's resident memory.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{start_listening_peer, tlsnet_command, Proc, TestPki, STEP};

/// `tlsnet tunnel server` with this PKI's server certificate, client certificates from its CA
/// required, to `target`, with `extra` flags (an `--allow-*` rule or `--allow-all`), on a
/// free port. Returns the process and `127.0.0.1:PORT` once it serves.
pub async fn start_tunnel_server(pki: &TestPki, target: &str, extra: &[&str]) -> (Proc, String) {
    let (server, port) =
        start_listening_peer("tlsnet tunnel server", "tlsnet tunnel serving", |port| {
            let mut command = tlsnet_command();
            command
                .args(["tunnel", "server", "--target", target])
                .arg("--cert")
                .arg(pki.path("server.pem"))
                .arg("--key")
                .arg(pki.path("server-key.pem"))
                .arg("--client-ca")
                .arg(pki.path("ca.pem"))
                .args(extra)
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"));
            command
        })
        .await;
    (server, format!("127.0.0.1:{port}"))
}

/// `tlsnet tunnel client` on a free loopback port to `upstream`, trusting this PKI's CA for
/// the name `localhost` and presenting its `client` certificate, with `extra` flags.
pub async fn start_tunnel_client(pki: &TestPki, upstream: &str, extra: &[&str]) -> (Proc, String) {
    let (client, port) = start_listening_peer(
        "tlsnet tunnel client",
        "tlsnet tunnel client listening",
        |port| {
            let mut command = tlsnet_command();
            command
                .args(["tunnel", "client", "--target", upstream])
                .args(["--servername", "localhost"])
                .arg("--ca")
                .arg(pki.path("ca.pem"))
                .arg("--cert")
                .arg(pki.path("client.pem"))
                .arg("--key")
                .arg(pki.path("client-key.pem"))
                .args(extra)
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"));
            command
        },
    )
    .await;
    (client, format!("127.0.0.1:{port}"))
}

/// A `[[tunnel]]` table (TOML) of a server tunnel named `name` on `listen` to `target`, with
/// this PKI's server certificate and client certificates from its CA required, and `extra`
/// lines (an `allow_*` rule or `allow_all = true`).
pub fn server_tunnel_table(
    pki: &TestPki,
    name: &str,
    listen: &str,
    target: &str,
    extra: &str,
) -> String {
    let path = |n: &str| pki.path(n).display().to_string();
    format!(
        "[[tunnel]]\nname = \"{name}\"\nmode = \"server\"\nlisten = [\"{listen}\"]\ntarget = \"{target}\"\n\
         cert = [\"{}\"]\nkey = [\"{}\"]\nclient_ca = \"{}\"\n{extra}\n",
        path("server.pem"),
        path("server-key.pem"),
        path("ca.pem"),
    )
}

/// A `[[tunnel]]` table of a client tunnel named `name` on `listen` to the TLS server
/// `upstream`, trusting this PKI's CA for `localhost` and presenting its `client`
/// certificate, with `extra` lines.
pub fn client_tunnel_table(
    pki: &TestPki,
    name: &str,
    listen: &str,
    upstream: &str,
    extra: &str,
) -> String {
    let path = |n: &str| pki.path(n).display().to_string();
    format!(
        "[[tunnel]]\nname = \"{name}\"\nmode = \"client\"\nlisten = [\"{listen}\"]\ntarget = \"{upstream}\"\n\
         servername = \"localhost\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n{extra}\n",
        path("ca.pem"),
        path("client.pem"),
        path("client-key.pem"),
    )
}

/// `tlsnet tunnel --config FILE`, once all its tunnels run.
pub async fn start_tunnel_config(file: &Path) -> Proc {
    let mut command = tlsnet_command();
    command.args(["tunnel", "--config"]).arg(file);
    let mut tunnels = Proc::spawn("tlsnet tunnel --config", command);
    tunnels.wait_for_stderr("tunnels file applied").await;
    tunnels
}

/// Replaces `path` at once (a new file renamed over it), as editors and deployment tools do.
pub fn replace_file(path: &Path, contents: &str) {
    let new = path.with_extension("new");
    std::fs::write(&new, contents).unwrap();
    std::fs::rename(&new, path).unwrap();
}

/// `total` bytes of a pattern that shows a lost, repeated or reordered chunk.
pub fn pattern(total: usize) -> Vec<u8> {
    (0..total)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_right(13) as u8)
        .collect()
}

/// Writes `data` to `stream` in `chunk`-sized pieces with `pause` after each while reading
/// what comes back; then closes the write side and returns everything read until the end.
pub async fn paced_round_trip<S>(stream: S, data: &[u8], chunk: usize, pause: Duration) -> Vec<u8>
where
    S: AsyncRead + AsyncWrite,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let writing = async {
        for piece in data.chunks(chunk) {
            writer.write_all(piece).await.expect("paced write");
            tokio::time::sleep(pause).await;
        }
        writer
            .shutdown()
            .await
            .expect("shutdown after the paced writes");
    };
    let reading = async {
        let mut got = Vec::with_capacity(data.len());
        reader.read_to_end(&mut got).await.expect("paced read");
        got
    };
    let limit = STEP + pause * (data.len() / chunk.max(1)) as u32;
    let ((), got) = tokio::time::timeout(limit, async { tokio::join!(writing, reading) })
        .await
        .expect("paced round trip in time");
    got
}

/// A plain TCP backend in this process that runs `handle` on every connection and counts
/// them.
pub struct TestBackend {
    pub addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TestBackend {
    pub async fn start<H, F>(handle: H) -> Self
    where
        H: Fn(TcpStream) -> F + Send + 'static,
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().unwrap();
        let accepts = Arc::new(AtomicUsize::new(0));
        let counted = accepts.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(handle(tcp));
            }
        });
        TestBackend {
            addr,
            accepts,
            task,
        }
    }

    /// Sends every byte back; closes when the client has closed.
    pub async fn echo() -> Self {
        Self::start(|mut tcp| async move {
            let (mut r, mut w) = tcp.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        })
        .await
    }

    /// How many connections reached it.
    pub fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    pub fn target(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads a whole PROXY v2 header from `tcp` (the 16 fixed bytes, then the length they give).
pub async fn read_proxy_v2(tcp: &mut TcpStream) -> Vec<u8> {
    let mut header = vec![0u8; 16];
    tcp.read_exact(&mut header).await.expect("PROXY header");
    let len = u16::from_be_bytes([header[14], header[15]]) as usize;
    let mut rest = vec![0u8; len];
    tcp.read_exact(&mut rest).await.expect("PROXY header body");
    header.extend(rest);
    header
}

/// A PROXY protocol v2 header, decoded.
#[derive(Debug)]
pub struct ProxyV2 {
    /// 0x0 LOCAL, 0x1 PROXY.
    pub command: u8,
    /// 0x11 TCP over IPv4, 0x21 TCP over IPv6.
    pub family: u8,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    /// The TLVs after the addresses, in order.
    pub tlvs: Vec<(u8, Vec<u8>)>,
}

/// The value of a PP2_TYPE_SSL TLV: `client` flags, `verify`, then sub-TLVs.
#[derive(Debug)]
pub struct SslTlv {
    pub client: u8,
    pub verify: u32,
    pub subs: Vec<(u8, Vec<u8>)>,
}

impl ProxyV2 {
    /// The first TLV of `kind`.
    pub fn tlv(&self, kind: u8) -> Option<&[u8]> {
        self.tlvs
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| v.as_slice())
    }

    /// The PP2_TYPE_SSL (0x20) TLV, decoded.
    pub fn ssl(&self) -> Option<SslTlv> {
        let value = self.tlv(0x20)?;
        assert!(
            value.len() >= 5,
            "PP2_TYPE_SSL shorter than its 5-byte head"
        );
        let subs = parse_tlvs(&value[5..]).expect("PP2_TYPE_SSL sub-TLVs");
        Some(SslTlv {
            client: value[0],
            verify: u32::from_be_bytes([value[1], value[2], value[3], value[4]]),
            subs,
        })
    }
}

impl SslTlv {
    pub fn sub(&self, kind: u8) -> Option<&[u8]> {
        self.subs
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| v.as_slice())
    }
}

/// Decodes a version 2 header as the specification describes it: the 12-byte signature,
/// the version (high nibble 2) and command (low nibble), the family and transport, the
/// length of what follows (big-endian), the addresses of the family, then TLVs (type, 16-bit
/// big-endian length, value) filling the rest of the length exactly.
pub fn parse_proxy_v2(bytes: &[u8]) -> Result<ProxyV2, String> {
    const SIG: &[u8; 12] = b"\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A";
    if bytes.len() < 16 || &bytes[..12] != SIG {
        return Err("no v2 signature".into());
    }
    if bytes[12] >> 4 != 2 {
        return Err(format!("version {} is not 2", bytes[12] >> 4));
    }
    let command = bytes[12] & 0x0F;
    let family = bytes[13];
    let len = u16::from_be_bytes([bytes[14], bytes[15]]) as usize;
    let body = bytes
        .get(16..16 + len)
        .ok_or_else(|| format!("header says {len} bytes follow, {} do", bytes.len() - 16))?;
    if bytes.len() != 16 + len {
        return Err("bytes after the header".into());
    }
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    let (source, destination, rest) = match family {
        0x11 => {
            let a = body.get(..12).ok_or("IPv4 addresses need 12 bytes")?;
            let ip = |b: &[u8]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
            (
                SocketAddr::new(ip(&a[0..4]), port(&a[8..10])),
                SocketAddr::new(ip(&a[4..8]), port(&a[10..12])),
                &body[12..],
            )
        }
        0x21 => {
            let a = body.get(..36).ok_or("IPv6 addresses need 36 bytes")?;
            let ip = |b: &[u8]| {
                let octets: [u8; 16] = b.try_into().unwrap();
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            (
                SocketAddr::new(ip(&a[0..16]), port(&a[32..34])),
                SocketAddr::new(ip(&a[16..32]), port(&a[34..36])),
                &body[36..],
            )
        }
        other => return Err(format!("family {other:#04x} is not TCP over IPv4 or IPv6")),
    };
    Ok(ProxyV2 {
        command,
        family,
        source,
        destination,
        tlvs: parse_tlvs(rest)?,
    })
}

/// TLVs filling `bytes` exactly.
pub fn parse_tlvs(mut bytes: &[u8]) -> Result<Vec<(u8, Vec<u8>)>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 3 {
            return Err(format!(
                "{} stray bytes where a TLV should start",
                bytes.len()
            ));
        }
        let len = u16::from_be_bytes([bytes[1], bytes[2]]) as usize;
        let value = bytes
            .get(3..3 + len)
            .ok_or_else(|| format!("TLV {:#04x} says {len} bytes, fewer follow", bytes[0]))?;
        out.push((bytes[0], value.to_vec()));
        bytes = &bytes[3 + len..];
    }
    Ok(out)
}

/// The resident memory of a process, in KiB (VmRSS of /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    line.split_whitespace()
        .nth(1)
        .and_then(|kb| kb.parse().ok())
        .expect("VmRSS value")
}
