//! Echo (every byte back) and discard (read and drop, for benchmarks).
//!
//! Both read rustls's plaintext where it was decrypted (`fill_buf`), so an idle connection
//! holds no buffer of ours; echo copies what it got once, to write it back. A peer that does
//! not read its echo stops us reading too (backpressure), so buffers stay bounded. Neither
//! stops at draining: a byte stream has no message boundary to stop at, so an in-flight
//! transfer finishes (or is closed when the grace period ends).

use std::io;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use super::{BoxFuture, BoxStream, Context, End, Service};

/// The ALPN id that selects echo.
pub const ECHO_ALPN: &[u8] = b"tlsnet-echo";
/// The ALPN id that selects discard.
pub const DISCARD_ALPN: &[u8] = b"tlsnet-discard";

/// Largest chunk echo copies at a time (one TLS record's plaintext).
const CHUNK: usize = 16 * 1024;

/// Sends every byte back.
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

/// Reads and drops every byte (for benchmarks).
#[derive(Debug, Default, Clone, Copy)]
pub struct Discard;

impl Service for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }

    fn serve<'a>(&'a self, stream: BoxStream, ctx: &'a Context) -> BoxFuture<'a, End> {
        Box::pin(pump(stream, ctx, true))
    }
}

impl Service for Discard {
    fn name(&self) -> &'static str {
        "discard"
    }

    fn serve<'a>(&'a self, stream: BoxStream, ctx: &'a Context) -> BoxFuture<'a, End> {
        Box::pin(pump(stream, ctx, false))
    }
}

async fn pump(mut stream: BoxStream, ctx: &Context, echo: bool) -> End {
    // No buffer until the peer sends something: an idle connection holds none.
    let mut buf: Vec<u8> = Vec::new();
    let end = loop {
        let step = tokio::select! {
            _ = ctx.shutdown.forced() => break End::Shutdown,
            r = step(&mut stream, &mut buf, echo) => r,
        };
        match step {
            Ok(0) => break End::Closed,
            Ok(_) => {}
            Err(e) => return End::from_io(e),
        }
    };
    // Our close_notify; bounded, since a peer that does not read could block it forever.
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
    end
}

/// Reads once (waiting for the peer), and writes back what it read when `echo` is set.
async fn step(stream: &mut BoxStream, buf: &mut Vec<u8>, echo: bool) -> io::Result<usize> {
    let data = stream.fill_buf().await?;
    let n = if echo {
        data.len().min(CHUNK)
    } else {
        data.len()
    };
    if n == 0 {
        return Ok(0);
    }
    if echo {
        buf.clear();
        buf.extend_from_slice(&data[..n]);
    }
    stream.consume(n);
    if echo {
        stream.write_all(buf).await?;
        stream.flush().await?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, BufReader};

    use super::*;
    use crate::service::Shutdown;
    use crate::tls::HandshakeReport;

    fn context() -> Context {
        Context::new(
            "127.0.0.1:9".parse().unwrap(),
            Arc::new(HandshakeReport::in_memory(None)),
            Shutdown::new(),
        )
    }

    /// The service interface needs no socket and no TLS: echo over an in-memory pipe.
    #[tokio::test]
    async fn echo_over_an_in_memory_stream() {
        let (ours, theirs) = tokio::io::duplex(1024);
        let ctx = context();
        let serving = tokio::spawn(async move {
            let stream: BoxStream = Box::new(BufReader::new(theirs));
            Echo.serve(stream, &ctx).await
        });
        let mut ours = ours;
        ours.write_all(b"over duplex").await.unwrap();
        let mut got = [0u8; 11];
        ours.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"over duplex");
        ours.shutdown().await.unwrap();
        let end = serving.await.unwrap();
        assert!(matches!(end, End::Closed), "{end}");
    }

    #[tokio::test]
    async fn forced_shutdown_ends_an_idle_connection() {
        let (_ours, theirs) = tokio::io::duplex(64);
        let ctx = context();
        let shutdown = ctx.shutdown.clone();
        let serving = tokio::spawn(async move {
            let stream: BoxStream = Box::new(BufReader::new(theirs));
            Discard.serve(stream, &ctx).await
        });
        shutdown.start_draining();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!serving.is_finished(), "discard must not stop at draining");
        shutdown.force();
        let end = tokio::time::timeout(Duration::from_secs(5), serving)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(end, End::Shutdown), "{end}");
    }

    /// An idle connection is mostly its service future: keep it small.
    #[test]
    fn pump_future_is_small() {
        fn size<F>(_: &impl Fn(BoxStream, &'static Context) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let pump = size(&|s, c| pump(s, c, true));
        assert!(pump < 512, "pump future: {pump} bytes");
    }
}
