//! The Linux kernel TLS (kTLS) system calls that tlsnet's optional offload needs, as safe
//! functions: attach the `tls` upper-layer protocol to a TCP socket ([`attach`]), give the
//! kernel one direction's keys ([`install`]), and send or receive one record whose content type
//! is not application data ([`send_record`], [`recv_record`]).
//!
//! Everything else stays with the caller: the handshake (rustls), which records may be sent
//! and what a received alert or handshake message means. Once the keys of a direction are
//! installed, plain `read`/`write` on the socket move application data, which the kernel
//! decrypts and encrypts; a plain `read` fails with `EIO` when the next record is of another
//! type, which [`recv_record`] then reads with its type.
//!
//! On other systems than Linux every function returns [`io::ErrorKind::Unsupported`].
//!
//! Reference: the kernel's Documentation/networking/tls.rst and include/uapi/linux/tls.h.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

use std::io;
use std::os::fd::BorrowedFd;

/// TLS record content type `alert` (RFC 8446, section 5.1).
pub const ALERT: u8 = 21;
/// TLS record content type `handshake`.
pub const HANDSHAKE: u8 = 22;
/// TLS record content type `application_data`.
pub const APPLICATION_DATA: u8 = 23;

/// The TLS version whose record format the kernel uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// TLS 1.2: an explicit nonce in every record.
    Tls12,
    /// TLS 1.3: the content type inside the encrypted record.
    Tls13,
}

/// The AEAD ciphers the kernel offers that tlsnet's suites use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    /// AES-128-GCM: 16-byte key.
    Aes128Gcm,
    /// AES-256-GCM: 32-byte key.
    Aes256Gcm,
    /// ChaCha20-Poly1305: 32-byte key.
    Chacha20Poly1305,
}

impl Cipher {
    /// The key's length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Cipher::Aes128Gcm => 16,
            Cipher::Aes256Gcm | Cipher::Chacha20Poly1305 => 32,
        }
    }
}

/// Which direction's keys [`install`] sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// What the socket sends (`TLS_TX`).
    Transmit,
    /// What the socket receives (`TLS_RX`).
    Receive,
}

/// One direction's traffic keys, as the TLS library derived them.
#[derive(Clone, Copy)]
pub struct Keys<'a> {
    /// The record format.
    pub version: Version,
    /// The AEAD.
    pub cipher: Cipher,
    /// The traffic key: [`Cipher::key_len`] bytes.
    pub key: &'a [u8],
    /// The 12-byte IV of RFC 8446 section 5.3 (for TLS 1.2 with AES-GCM: the 4-byte implicit
    /// salt followed by the 8-byte initial explicit nonce).
    pub iv: &'a [u8],
    /// The sequence number of the next record in this direction.
    pub seq: u64,
}

impl std::fmt::Debug for Keys<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("version", &self.version)
            .field("cipher", &self.cipher)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// A record read by [`recv_record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Its content type ([`ALERT`], [`HANDSHAKE`], [`APPLICATION_DATA`], ...).
    pub content_type: u8,
    /// How many bytes of its (decrypted) content were written to the buffer; 0 at the end of
    /// the stream.
    pub len: usize,
}

/// Whether a plain read's error means that the next record is not application data (the
/// kernel's `EIO`): read it with [`recv_record`].
pub fn is_other_record(error: &io::Error) -> bool {
    error.raw_os_error() == Some(EIO)
}

#[cfg(target_os = "linux")]
const EIO: i32 = libc::EIO;
#[cfg(not(target_os = "linux"))]
const EIO: i32 = -1;

/// Whether the running kernel has the `tls` upper-layer protocol loaded
/// (`/proc/sys/net/ipv4/tcp_available_ulp`). [`attach`] also loads the module on demand when
/// it may, so `false` here does not prove that [`attach`] fails.
pub fn ulp_loaded() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp")
        .map(|list| list.split_whitespace().any(|ulp| ulp == "tls"))
        .unwrap_or(false)
}

/// Attaches the `tls` upper-layer protocol to a connected TCP socket. Until keys are
/// installed the socket behaves as before, so a caller may still go on without kernel TLS
/// after this. Fails with `ENOENT` when the kernel has no TLS module.
pub fn attach(socket: BorrowedFd<'_>) -> io::Result<()> {
    sys::attach(socket)
}

/// Gives the kernel one direction's keys: from now on it encrypts what is written (or
/// decrypts what is read) on this socket. The socket must have the ULP ([`attach`]). Refuses
/// a key or IV of the wrong length with [`io::ErrorKind::InvalidInput`].
pub fn install(socket: BorrowedFd<'_>, direction: Direction, keys: &Keys<'_>) -> io::Result<()> {
    if keys.key.len() != keys.cipher.key_len() || keys.iv.len() != 12 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "kernel TLS keys: a {:?} key is {} bytes and the IV 12 (got {} and {})",
                keys.cipher,
                keys.cipher.key_len(),
                keys.key.len(),
                keys.iv.len()
            ),
        ));
    }
    sys::install(socket, direction, keys)
}

/// Sends `payload` as one record of `content_type` (an alert, say), encrypted by the kernel.
/// Does not block: fails with [`io::ErrorKind::WouldBlock`] when the socket is full.
pub fn send_record(socket: BorrowedFd<'_>, content_type: u8, payload: &[u8]) -> io::Result<usize> {
    sys::send_record(socket, content_type, payload)
}

/// Reads the next record's content (or as much of it as `buf` holds) with its type. Does not
/// block: fails with [`io::ErrorKind::WouldBlock`] when nothing has arrived.
pub fn recv_record(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Record> {
    sys::recv_record(socket, buf)
}

#[cfg(target_os = "linux")]
mod sys {
    use std::io;
    use std::mem::{size_of, size_of_val, zeroed};
    use std::os::fd::{AsRawFd, BorrowedFd};

    use super::{Cipher, Direction, Keys, Record, Version, APPLICATION_DATA};

    // include/uapi/linux/tls.h and tcp.h.
    const TCP_ULP: libc::c_int = 31;
    const SOL_TLS: libc::c_int = 282;
    const TLS_TX: libc::c_int = 1;
    const TLS_RX: libc::c_int = 2;
    const TLS_SET_RECORD_TYPE: libc::c_int = 1;
    const TLS_GET_RECORD_TYPE: libc::c_int = 2;
    const TLS_1_2_VERSION: u16 = 0x0303;
    const TLS_1_3_VERSION: u16 = 0x0304;
    const TLS_CIPHER_AES_GCM_128: u16 = 51;
    const TLS_CIPHER_AES_GCM_256: u16 = 52;
    const TLS_CIPHER_CHACHA20_POLY1305: u16 = 54;

    /// `struct tls12_crypto_info_*`: the header, then IV, key, salt and sequence number, all
    /// byte arrays (no padding).
    #[repr(C)]
    struct CryptoInfo<const IV: usize, const KEY: usize, const SALT: usize> {
        version: u16,
        cipher_type: u16,
        iv: [u8; IV],
        key: [u8; KEY],
        salt: [u8; SALT],
        rec_seq: [u8; 8],
    }

    impl<const IV: usize, const KEY: usize, const SALT: usize> CryptoInfo<IV, KEY, SALT> {
        /// Splits the 12-byte IV into the kernel's salt (first) and IV (the rest).
        fn new(cipher_type: u16, keys: &Keys<'_>) -> Self {
            let mut info = CryptoInfo {
                version: match keys.version {
                    Version::Tls12 => TLS_1_2_VERSION,
                    Version::Tls13 => TLS_1_3_VERSION,
                },
                cipher_type,
                iv: [0; IV],
                key: [0; KEY],
                salt: [0; SALT],
                rec_seq: keys.seq.to_be_bytes(),
            };
            info.salt.copy_from_slice(&keys.iv[..SALT]);
            info.iv.copy_from_slice(&keys.iv[SALT..SALT + IV]);
            info.key.copy_from_slice(keys.key);
            info
        }

        fn set(mut self, socket: BorrowedFd<'_>, option: libc::c_int) -> io::Result<()> {
            // SAFETY: `self` is a live `repr(C)` value of exactly the layout the kernel reads
            // for this cipher, and the length passed is its size.
            let rc = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    SOL_TLS,
                    option,
                    (&self as *const Self).cast(),
                    size_of::<Self>() as libc::socklen_t,
                )
            };
            let result = check(rc as isize).map(drop);
            // Best effort: do not leave the key in this stack frame.
            self.key = [0; KEY];
            std::hint::black_box(&mut self.key);
            result
        }
    }

    fn check(rc: isize) -> io::Result<usize> {
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc as usize)
        }
    }

    pub(super) fn attach(socket: BorrowedFd<'_>) -> io::Result<()> {
        let name = b"tls";
        // SAFETY: `name` outlives the call and its length is passed with it.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_TCP,
                TCP_ULP,
                name.as_ptr().cast(),
                name.len() as libc::socklen_t,
            )
        };
        check(rc as isize).map(drop)
    }

    pub(super) fn install(
        socket: BorrowedFd<'_>,
        direction: Direction,
        keys: &Keys<'_>,
    ) -> io::Result<()> {
        let option = match direction {
            Direction::Transmit => TLS_TX,
            Direction::Receive => TLS_RX,
        };
        match keys.cipher {
            Cipher::Aes128Gcm => {
                CryptoInfo::<8, 16, 4>::new(TLS_CIPHER_AES_GCM_128, keys).set(socket, option)
            }
            Cipher::Aes256Gcm => {
                CryptoInfo::<8, 32, 4>::new(TLS_CIPHER_AES_GCM_256, keys).set(socket, option)
            }
            Cipher::Chacha20Poly1305 => {
                CryptoInfo::<12, 32, 0>::new(TLS_CIPHER_CHACHA20_POLY1305, keys).set(socket, option)
            }
        }
    }

    /// Room for one `cmsghdr` with a byte of data, aligned as `cmsghdr` requires.
    #[repr(C, align(8))]
    struct Control([u8; 64]);

    pub(super) fn send_record(
        socket: BorrowedFd<'_>,
        content_type: u8,
        payload: &[u8],
    ) -> io::Result<usize> {
        let mut control = Control([0; 64]);
        let mut iov = libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        };
        // SAFETY: an all-zero `msghdr` is valid (no name, no iovecs, no control).
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE only computes a size.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(1) } as _;
        debug_assert!(msg.msg_controllen <= size_of_val(&control.0) as _);
        // SAFETY: `msg` points at `control`, which is aligned and large enough for one header
        // and one byte of data (CMSG_SPACE(1) <= 64), so CMSG_FIRSTHDR returns a valid,
        // non-null pointer into it, and CMSG_DATA the byte after the header.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = SOL_TLS;
            (*cmsg).cmsg_type = TLS_SET_RECORD_TYPE;
            (*cmsg).cmsg_len = libc::CMSG_LEN(1) as _;
            *libc::CMSG_DATA(cmsg) = content_type;
        }
        // SAFETY: `msg`, its iovec (pointing at `payload`, only read) and `control` live
        // through the call.
        let rc = unsafe {
            libc::sendmsg(
                socket.as_raw_fd(),
                &msg,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        check(rc)
    }

    pub(super) fn recv_record(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Record> {
        let mut control = Control([0; 64]);
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: an all-zero `msghdr` is valid.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&control.0) as _;
        // SAFETY: the iovec points at `buf` (writable, `buf.len()` bytes) and the control
        // buffer at `control`; both live through the call.
        let rc = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        let len = check(rc)?;
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::other(
                "kernel TLS: the record type did not fit the control buffer",
            ));
        }
        let mut content_type = APPLICATION_DATA;
        // SAFETY: the kernel filled `msg_controllen` bytes of `control` with well-formed
        // headers; CMSG_FIRSTHDR/CMSG_NXTHDR stay within them and return null at the end, and
        // a TLS_GET_RECORD_TYPE header carries one byte of data.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == SOL_TLS
                    && (*cmsg).cmsg_type == TLS_GET_RECORD_TYPE
                    && (*cmsg).cmsg_len as usize >= libc::CMSG_LEN(1) as usize
                {
                    content_type = *libc::CMSG_DATA(cmsg);
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        Ok(Record { content_type, len })
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::io;
    use std::os::fd::BorrowedFd;

    use super::{Direction, Keys, Record};

    fn unsupported() -> io::Error {
        io::Error::new(
            io::ErrorKind::Unsupported,
            "kernel TLS exists only on Linux",
        )
    }

    pub(super) fn attach(_: BorrowedFd<'_>) -> io::Result<()> {
        Err(unsupported())
    }

    pub(super) fn install(_: BorrowedFd<'_>, _: Direction, _: &Keys<'_>) -> io::Result<()> {
        Err(unsupported())
    }

    pub(super) fn send_record(_: BorrowedFd<'_>, _: u8, _: &[u8]) -> io::Result<usize> {
        Err(unsupported())
    }

    pub(super) fn recv_record(_: BorrowedFd<'_>, _: &mut [u8]) -> io::Result<Record> {
        Err(unsupported())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    #[test]
    fn wrong_key_lengths_are_refused_before_any_system_call() {
        let (client, _server) = pair();
        let keys = Keys {
            version: Version::Tls13,
            cipher: Cipher::Aes256Gcm,
            key: &[0; 16],
            iv: &[0; 12],
            seq: 0,
        };
        let e = install(client.as_fd(), Direction::Transmit, &keys).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("Aes256Gcm key is 32 bytes"), "{e}");
    }

    /// On a kernel without the module (as on the machines CI runs on), attaching fails with
    /// ENOENT and the socket still carries plain bytes both ways; with the module, the same
    /// holds until keys are installed. Either way nothing is lost.
    #[test]
    #[cfg(target_os = "linux")]
    fn attach_fails_cleanly_or_leaves_the_socket_usable() {
        use std::io::{Read, Write};
        let (mut client, mut server) = pair();
        match attach(server.as_fd()) {
            Ok(()) => assert!(ulp_loaded(), "attached, yet `tls` is not listed"),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}"),
        }
        client.write_all(b"ping").unwrap();
        let mut got = [0; 4];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        server.write_all(b"pong").unwrap();
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"pong");
    }

    /// With the module (run it with `scripts/ktls-vm`; `TLSNET_REQUIRE_KTLS=1` makes a missing
    /// module a failure instead of a skip): one socket's transmit keys are the other's
    /// receive keys, application data arrives as written, an alert arrives with its type,
    /// and a plain read stops at it with EIO.
    #[test]
    #[cfg(target_os = "linux")]
    fn kernel_encrypts_and_decrypts_records_when_the_module_is_there() {
        use std::io::{Read, Write};
        if let Err(e) = attach(pair().0.as_fd()) {
            assert!(
                std::env::var_os("TLSNET_REQUIRE_KTLS").is_none(),
                "TLSNET_REQUIRE_KTLS is set, but attaching the tls ULP failed: {e}"
            );
            eprintln!("skipped: this kernel has no TLS module ({e})");
            return;
        }
        for cipher in [
            Cipher::Aes128Gcm,
            Cipher::Aes256Gcm,
            Cipher::Chacha20Poly1305,
        ] {
            let (mut client, mut server) = pair();
            attach(client.as_fd()).unwrap();
            attach(server.as_fd()).unwrap();
            let key = vec![7u8; cipher.key_len()];
            let keys = Keys {
                version: Version::Tls13,
                cipher,
                key: &key,
                iv: &[9; 12],
                seq: 5,
            };
            install(client.as_fd(), Direction::Transmit, &keys).unwrap();
            install(server.as_fd(), Direction::Receive, &keys).unwrap();
            client.write_all(b"through the kernel").unwrap();
            assert_eq!(send_record(client.as_fd(), ALERT, &[1, 0]).unwrap(), 2);
            let mut got = [0u8; 18];
            server.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"through the kernel", "{cipher:?}");
            let mut byte = [0u8; 1];
            let e = server.read(&mut byte).unwrap_err();
            assert!(is_other_record(&e), "{cipher:?}: {e}");
            let mut alert = [0u8; 16];
            let record = recv_record(server.as_fd(), &mut alert).unwrap();
            assert_eq!((record.content_type, record.len), (ALERT, 2), "{cipher:?}");
            assert_eq!(&alert[..2], &[1, 0]);
        }
    }
}
