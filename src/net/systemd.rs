//! systemd integration: socket activation (`LISTEN_FDS`) and readiness (`NOTIFY_SOCKET`), for
//! `Type=notify` units and `.socket` units. Both do nothing outside systemd.

use std::io;

use tokio::net::TcpListener;

use crate::error::{Error, Result};

/// The TCP listening sockets systemd passed (`LISTEN_FDS`, `LISTEN_PID`), ready for tokio; empty
/// when the process was not socket-activated. The environment variables are cleared, so
/// children do not take the sockets for theirs.
pub fn activated_listeners() -> Result<Vec<TcpListener>> {
    let mut fds = listenfd::ListenFd::from_env();
    let mut listeners = Vec::new();
    for index in 0..fds.len() {
        let taken = fds
            .take_tcp_listener(index)
            .map_err(|e| activation_error(index, e))?;
        let Some(listener) = taken else {
            return Err(activation_error(
                index,
                io::Error::new(io::ErrorKind::InvalidInput, "not a TCP listening socket"),
            ));
        };
        listener
            .set_nonblocking(true)
            .map_err(|e| activation_error(index, e))?;
        listeners.push(TcpListener::from_std(listener).map_err(|e| activation_error(index, e))?);
    }
    Ok(listeners)
}

fn activation_error(index: usize, source: io::Error) -> Error {
    Error::Network {
        action: "use the socket systemd passed as",
        peer: format!("file descriptor {}", 3 + index),
        source,
    }
}

/// What the service tells systemd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Listening and serving: `READY=1`.
    Ready,
    /// Draining before exit: `STOPPING=1`.
    Stopping,
}

/// Sends `notice` to systemd when `NOTIFY_SOCKET` names a socket (a path, or `@name` in the
/// abstract namespace); does nothing otherwise. A failure is returned, for a log line: it
/// never stops the service.
pub fn notify(notice: Notice) -> io::Result<()> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let message: &[u8] = match notice {
        Notice::Ready => b"READY=1\n",
        Notice::Stopping => b"STOPPING=1\n",
    };
    send(&target, message)
}

#[cfg(target_os = "linux")]
fn send(target: &std::ffi::OsStr, message: &[u8]) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
    let bytes = target.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => UnixAddr::from_abstract_name(name)?,
        None => UnixAddr::from_pathname(std::path::Path::new(target))?,
    };
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(message, &addr).map(|_| ())
}

#[cfg(not(target_os = "linux"))]
fn send(target: &std::ffi::OsStr, message: &[u8]) -> io::Result<()> {
    std::os::unix::net::UnixDatagram::unbound()?
        .send_to(message, target)
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_reaches_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), b"READY=1\n").unwrap();
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");
    }
}
