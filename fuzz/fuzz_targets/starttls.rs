//! A malicious mail server's side of the STARTTLS exchange of `tlsnet inspect --starttls`:
//! the first byte picks SMTP, IMAP or POP3, the rest is everything the server sends (then it
//! closes). The exchange runs over a real loopback TCP connection, as `negotiate` takes a
//! `TcpStream`.

#![no_main]

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tlsnet::inspect::starttls::StartTls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

struct Loopback {
    runtime: Runtime,
    listener: TcpListener,
    addr: SocketAddr,
}

static LOOPBACK: LazyLock<Loopback> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let listener = runtime
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local address");
    Loopback {
        runtime,
        listener,
        addr,
    }
});

fuzz_target!(|data: &[u8]| {
    let Some((&which, server_says)) = data.split_first() else {
        return;
    };
    let protocol = StartTls::ALL[usize::from(which) % StartTls::ALL.len()];
    let lo = &*LOOPBACK;
    lo.runtime.block_on(async {
        let (client, accepted) = tokio::join!(TcpStream::connect(lo.addr), lo.listener.accept());
        let mut client = client.expect("connect to the loopback listener");
        let (mut server, _) = accepted.expect("accept on the loopback listener");
        let server = async move {
            // Send everything, close the sending side, and take whatever the client writes
            // until it is done.
            let _ = server.write_all(server_says).await;
            let _ = server.shutdown().await;
            let mut sink = Vec::new();
            let _ = server.read_to_end(&mut sink).await;
        };
        let client = async move {
            let _ = protocol
                .negotiate(&mut client, "fuzz.invalid:25", Duration::from_secs(10))
                .await;
            // Reset rather than close, so that no connection lingers in TIME_WAIT.
            #[allow(deprecated)]
            let _ = client.set_linger(Some(Duration::ZERO));
        };
        tokio::join!(server, client);
    });
});
