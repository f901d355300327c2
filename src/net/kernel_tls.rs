//! Kernel TLS (Linux's `tls` module) for the data path of a server connection, optional
//! (`--ktls`), with rustls as the fallback.
//!
//! rustls makes the handshake as always. Then, if the server's configuration allows it
//! ([`crate::tls::ServerTlsOptions::kernel_tls`]), [`offload`] attaches the `tls` ULP to the
//! socket and gives the kernel the traffic keys, and the connection goes on as a
//! [`KernelStream`]: the kernel encrypts what is written and decrypts what is read, with no
//! copy through user space. When it cannot, the connection stays on rustls and the reason is
//! counted and logged ([`Fallback`]): no `tls` module (this kernel, ENOENT), a cipher the
//! kernel lacks, or bytes of a later record that had already left the socket.
//!
//! What the kernel path does not do, and how it ends instead:
//! - a key update from the peer (TLS 1.3 KeyUpdate): the connection fails with
//!   [`KernelTlsError::KeyUpdate`] (rustls clients send one only after about 2^24 records;
//!   OpenSSL only when asked);
//! - more records under one send key than the suite allows (RFC 8446 5.5): the connection
//!   fails with [`KernelTlsError::KeyLimit`] before the limit, instead of a key update.

use std::fmt;
use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use rustls::{AlertDescription, ConnectionTrafficSecrets, SupportedCipherSuite};
use tlsnet_ktls as ktls;
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use super::server::ServerStream;

/// The most plaintext a TLS record carries.
const RECORD: usize = 16 * 1024;

/// The most a read asks the kernel for once a read has filled a record's worth (a bulk
/// transfer; the kernel returns the data of several records in one read).
const READ_AHEAD: usize = super::read_ahead::READ_AHEAD;

/// Why a connection stays on rustls.
#[derive(Debug)]
pub enum Fallback {
    /// The `tls` ULP could not be attached (ENOENT: the kernel has no TLS module).
    NoModule(io::Error),
    /// The negotiated cipher suite has no kernel implementation.
    Cipher(&'static str),
    /// Bytes of a record after the handshake had already been read from the socket.
    Buffered,
    /// The peer had already closed, or rustls still had records to send.
    NotIdle,
}

impl Fallback {
    /// A short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Fallback::NoModule(_) => "no_module",
            Fallback::Cipher(_) => "cipher",
            Fallback::Buffered => "buffered",
            Fallback::NotIdle => "not_idle",
        }
    }
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fallback::NoModule(e) => write!(f, "the kernel has no TLS module ({e})"),
            Fallback::Cipher(suite) => write!(f, "the kernel has no {suite}"),
            Fallback::Buffered => f.write_str("application data came with the handshake"),
            Fallback::NotIdle => f.write_str("the connection was closing or still sending"),
        }
    }
}

/// How a connection on the kernel path ended with an error of its own.
#[derive(Debug, thiserror::Error)]
pub enum KernelTlsError {
    /// The peer sent a TLS 1.3 KeyUpdate, which this path does not follow.
    #[error("the peer updated its TLS keys (KeyUpdate), which the kernel TLS path does not do")]
    KeyUpdate,
    /// The send key is near the most records the suite allows under one key.
    #[error("the kernel TLS send key is near its record limit ({0} records)")]
    KeyLimit(u64),
    /// A record the protocol does not allow here.
    #[error("the peer sent an unexpected TLS record (content type {0})")]
    Unexpected(u8),
    /// The keys could not be handed to the kernel after rustls gave them up.
    #[error("cannot give the traffic keys to the kernel")]
    Install(#[source] io::Error),
    /// rustls refused to give up the keys.
    #[error("cannot take the traffic keys from rustls")]
    Secrets(#[source] rustls::Error),
}

/// Whether the running kernel has its TLS module loaded (then [`offload`] can succeed).
pub fn kernel_has_tls() -> bool {
    ktls::ulp_loaded()
}

/// The result of [`offload`].
pub enum Offload {
    /// The kernel carries the connection's records from now on.
    Kernel(KernelStream),
    /// The connection stays on rustls, intact.
    Rustls(Box<ServerStream>, Fallback),
    /// The keys had left rustls, but the kernel refused them: the connection is gone.
    Lost(KernelTlsError),
}

/// Moves an established connection's records to the kernel, or says why not (see the module
/// docs). The stream's reader must have been made with
/// [`super::read_ahead::ReadAhead::whole_records`].
pub fn offload(mut stream: ServerStream) -> Offload {
    let (reader, conn) = stream.get_mut();
    let whole = reader.between_records();
    // Whatever happens next, the handshake is over: reads go back to reading ahead.
    reader.read_ahead();
    if !whole {
        return Offload::Rustls(Box::new(stream), Fallback::Buffered);
    }
    let state = match conn.process_new_packets() {
        Ok(state) => state,
        Err(_) => return Offload::Rustls(Box::new(stream), Fallback::NotIdle),
    };
    if state.peer_has_closed() || state.tls_bytes_to_write() > 0 {
        return Offload::Rustls(Box::new(stream), Fallback::NotIdle);
    }
    let Some(suite) = conn.negotiated_cipher_suite() else {
        return Offload::Rustls(Box::new(stream), Fallback::NotIdle);
    };
    let (version, limit) = match suite {
        SupportedCipherSuite::Tls13(s) => (ktls::Version::Tls13, s.common.confidentiality_limit),
        SupportedCipherSuite::Tls12(s) => (ktls::Version::Tls12, s.common.confidentiality_limit),
    };
    let Some(cipher) = kernel_cipher(suite) else {
        let name = suite.suite().as_str().unwrap_or("cipher suite");
        return Offload::Rustls(Box::new(stream), Fallback::Cipher(name));
    };
    if let Err(e) = ktls::attach(reader.get_ref().as_fd()) {
        // The socket is unchanged: rustls goes on.
        return Offload::Rustls(Box::new(stream), Fallback::NoModule(e));
    }
    // Plaintext rustls decrypted with the handshake's last records is the stream's first.
    let mut early = BytesMut::new();
    if state.plaintext_bytes_to_read() > 0 {
        early.resize(state.plaintext_bytes_to_read(), 0);
        if std::io::Read::read_exact(&mut conn.reader(), &mut early).is_err() {
            return Offload::Rustls(Box::new(stream), Fallback::NotIdle);
        }
    }
    let (reader, conn) = stream.into_inner();
    let tcp = reader.into_inner();
    let secrets = match conn.dangerous_extract_secrets() {
        Ok(secrets) => secrets,
        Err(e) => return Offload::Lost(KernelTlsError::Secrets(e)),
    };
    let (tx_seq, tx) = secrets.tx;
    let (rx_seq, rx) = secrets.rx;
    let install = |direction, seq, secrets| install(&tcp, direction, version, cipher, seq, secrets);
    let installed = install(ktls::Direction::Transmit, tx_seq, &tx)
        .and_then(|()| install(ktls::Direction::Receive, rx_seq, &rx));
    match installed {
        Ok(()) => Offload::Kernel(KernelStream {
            tcp,
            buf: early,
            want: RECORD,
            read_closed: false,
            write_closed: false,
            // Stop a safe margin before the limit: a write may be split into more records
            // than this count assumes.
            records_left: limit.saturating_sub(tx_seq).saturating_sub(1 << 16),
        }),
        Err(e) => Offload::Lost(e),
    }
}

/// The kernel's cipher for a suite, if it has one.
fn kernel_cipher(suite: SupportedCipherSuite) -> Option<ktls::Cipher> {
    use rustls::CipherSuite as S;
    match suite.suite() {
        S::TLS13_AES_128_GCM_SHA256
        | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => Some(ktls::Cipher::Aes128Gcm),
        S::TLS13_AES_256_GCM_SHA384
        | S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => Some(ktls::Cipher::Aes256Gcm),
        S::TLS13_CHACHA20_POLY1305_SHA256
        | S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        | S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => Some(ktls::Cipher::Chacha20Poly1305),
        _ => None,
    }
}

/// Gives the kernel one direction's keys, for the cipher [`kernel_cipher`] chose (the secrets
/// come from the same suite; [`ktls::install`] checks their lengths).
fn install(
    tcp: &TcpStream,
    direction: ktls::Direction,
    version: ktls::Version,
    cipher: ktls::Cipher,
    seq: u64,
    secrets: &ConnectionTrafficSecrets,
) -> Result<(), KernelTlsError> {
    let (key, iv) = match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv }
        | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
        | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (key, iv),
        _ => {
            return Err(KernelTlsError::Install(io::Error::new(
                io::ErrorKind::Unsupported,
                "a cipher the kernel lacks",
            )))
        }
    };
    let keys = ktls::Keys {
        version,
        cipher,
        key: key.as_ref(),
        iv: iv.as_ref(),
        seq,
    };
    ktls::install(tcp.as_fd(), direction, &keys).map_err(KernelTlsError::Install)
}

/// A server connection whose records the kernel encrypts and decrypts: a [`crate::service::
/// Stream`] like the rustls one. Reading ends at the peer's close_notify; shutting down sends
/// one, then the TCP FIN (half-close, as with rustls).
#[derive(Debug)]
pub struct KernelStream {
    tcp: TcpStream,
    /// Plaintext read and not yet consumed; empty and unallocated while idle.
    buf: BytesMut,
    /// How much the next read asks for: a record, or [`READ_AHEAD`] once a read filled that.
    want: usize,
    read_closed: bool,
    write_closed: bool,
    /// How many more records may be sent under the current key.
    records_left: u64,
}

impl KernelStream {
    /// Reads a record that is not application data (the kernel said so with EIO) and acts on
    /// it: close_notify ends the reading side, application data (a race) is kept, anything
    /// else is an error.
    fn control_record(&mut self) -> io::Result<()> {
        let mut record = vec![0u8; RECORD + 256];
        let got = self.tcp.try_io(Interest::READABLE, || {
            ktls::recv_record(self.tcp.as_fd(), &mut record)
        })?;
        let body = &record[..got.len];
        match (got.content_type, body) {
            (ktls::ALERT, [_, 0]) => {
                self.read_closed = true;
                Ok(())
            }
            (ktls::ALERT, [_, desc]) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                rustls::Error::AlertReceived(AlertDescription::from(*desc)),
            )),
            // KeyUpdate (handshake type 24).
            (ktls::HANDSHAKE, [24, ..]) => Err(io::Error::other(KernelTlsError::KeyUpdate)),
            (ktls::APPLICATION_DATA, data) => {
                self.buf.extend_from_slice(data);
                Ok(())
            }
            (other, _) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                KernelTlsError::Unexpected(other),
            )),
        }
    }
}

impl AsyncBufRead for KernelStream {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        while this.buf.is_empty() && !this.read_closed {
            this.buf.reserve(this.want);
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.tcp), cx, &mut this.buf) {
                Poll::Ready(Ok(0)) => {
                    this.buf = BytesMut::new();
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection without sending TLS close_notify",
                    )));
                }
                Poll::Ready(Ok(n)) => {
                    if n >= this.want {
                        this.want = READ_AHEAD;
                    }
                }
                Poll::Ready(Err(e)) if ktls::is_other_record(&e) => match this.control_record() {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(e)),
                },
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // Nothing more for now: an idle connection keeps no buffer.
                    this.buf = BytesMut::new();
                    return Poll::Pending;
                }
            }
        }
        Poll::Ready(Ok(&this.buf[..]))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        self.get_mut().buf.advance(amt);
    }
}

impl AsyncRead for KernelStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let got = ready!(self.as_mut().poll_fill_buf(cx))?;
        let n = got.len().min(out.remaining());
        out.put_slice(&got[..n]);
        self.consume(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for KernelStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let records = buf.len().div_ceil(RECORD) as u64;
        if records > this.records_left {
            return Poll::Ready(Err(io::Error::other(KernelTlsError::KeyLimit(
                this.records_left,
            ))));
        }
        let n = ready!(Pin::new(&mut this.tcp).poll_write(cx, buf))?;
        this.records_left -= n.div_ceil(RECORD) as u64;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while !this.write_closed {
            ready!(this.tcp.poll_write_ready(cx))?;
            // A warning-level close_notify alert.
            match this.tcp.try_io(Interest::WRITABLE, || {
                ktls::send_record(this.tcp.as_fd(), ktls::ALERT, &[1, 0])
            }) {
                Ok(_) => this.write_closed = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}
