//! Echo (every byte back) and discard (read and drop, for benchmarks).
//!
//! Both read rustls's plaintext where it was decrypted (`fill_buf`), so an idle connection
//! holds no buffer of ours; echo copies what it got once, to write it back. A peer that does
//! not read its echo stops us reading too (backpressure), so buffers stay bounded. A byte
//! stream has no message boundary to stop at, so when the server drains, both end a
//! connection only once it has been quiet for [`DRAIN_QUIET`]: idle sessions close at once,
//! transfers in progress finish (or are closed when the grace period ends).

use std::io;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::time::Sleep;

use super::{BoxFuture, BoxStream, Context, End, Service};

/// The ALPN id that selects echo.
pub const ECHO_ALPN: &[u8] = b"tlsnet-echo";
/// The ALPN id that selects discard.
pub const DISCARD_ALPN: &[u8] = b"tlsnet-discard";

/// Largest chunk echo copies at a time (one TLS record's plaintext).
const CHUNK: usize = 16 * 1024;

/// Once the server drains, a connection that has been quiet this long is closed (with
/// close_notify): an idle session does not hold the shutdown for the whole grace period, and
/// a transfer in progress goes on.
pub const DRAIN_QUIET: Duration = Duration::from_secs(1);

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
    // Set when draining starts: the connection ends once it has been quiet this long.
    let mut quiet: Option<Pin<Box<Sleep>>> = None;
    let end = loop {
        // Only waiting for data races the signals: once bytes are in, they are echoed whole.
        let ready = tokio::select! {
            _ = ctx.shutdown.forced() => break End::Shutdown,
            _ = ctx.shutdown.draining(), if quiet.is_none() => {
                quiet = Some(Box::pin(tokio::time::sleep(DRAIN_QUIET)));
                continue;
            }
            _ = async { if let Some(q) = quiet.as_mut() { q.await } }, if quiet.is_some() => {
                break End::Drained;
            }
            r = stream.fill_buf() => r.map(|data| data.len()),
        };
        let step = match ready {
            Ok(0) => break End::Closed,
            Ok(_) => tokio::select! {
                _ = ctx.shutdown.forced() => break End::Shutdown,
                r = step(&mut stream, &mut buf, echo) => r,
            },
            Err(e) => return End::from_io(e),
        };
        if let Err(e) = step {
            return End::from_io(e);
        }
        if let Some(q) = quiet.as_mut() {
            q.as_mut().reset(tokio::time::Instant::now() + DRAIN_QUIET);
        }
    };
    // Our close_notify; bounded, since a peer that does not read could block it forever.
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
    end
}

/// Takes what rustls has decrypted (there is some: the caller waited for it) and writes it
/// back when `echo` is set.
async fn step(stream: &mut BoxStream, buf: &mut Vec<u8>, echo: bool) -> io::Result<usize> {
    let data = stream.fill_buf().await?;
    let n = if echo {
        data.len().min(CHUNK)
    } else {
        data.len()
    };
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
            "127.0.0.1:8443".parse().unwrap(),
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
    async fn forced_shutdown_ends_a_connection_at_once() {
        let (_ours, theirs) = tokio::io::duplex(64);
        let ctx = context();
        let shutdown = ctx.shutdown.clone();
        let serving = tokio::spawn(async move {
            let stream: BoxStream = Box::new(BufReader::new(theirs));
            Discard.serve(stream, &ctx).await
        });
        shutdown.force();
        let end = tokio::time::timeout(Duration::from_secs(5), serving)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(end, End::Shutdown), "{end}");
    }

    /// Draining: a transfer goes on while bytes keep coming, and the connection is closed
    /// once it has been quiet for DRAIN_QUIET.
    #[tokio::test(start_paused = true)]
    async fn draining_waits_for_a_quiet_moment() {
        let (mut ours, theirs) = tokio::io::duplex(1024);
        let ctx = context();
        let shutdown = ctx.shutdown.clone();
        let serving = tokio::spawn(async move {
            let stream: BoxStream = Box::new(BufReader::new(theirs));
            Echo.serve(stream, &ctx).await
        });
        shutdown.start_draining();
        for _ in 0..5 {
            tokio::time::sleep(DRAIN_QUIET / 2).await;
            ours.write_all(b"more").await.unwrap();
            let mut got = [0u8; 4];
            ours.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"more");
        }
        assert!(
            !serving.is_finished(),
            "echo stopped while the peer was sending"
        );
        tokio::time::sleep(DRAIN_QUIET * 2).await;
        let end = serving.await.unwrap();
        assert!(matches!(end, End::Drained), "{end}");
        let mut rest = Vec::new();
        ours.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
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
