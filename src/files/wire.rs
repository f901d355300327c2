//! Frames over an async byte stream: the only I/O around the [`codec`](super::codec).

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::codec::{payload_buffer, CodecError, Frame, Header, HEADER_LEN};

/// Reading or writing a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The connection failed (or the peer closed it inside a frame).
    #[error("the connection failed")]
    Io(#[source] io::Error),
    /// The peer sent bytes that are not a valid frame.
    #[error("the peer sent an invalid frame")]
    Codec(#[source] CodecError),
}

/// Reads one frame. `Ok(None)`: the peer closed cleanly between frames.
pub async fn read_frame<R: AsyncRead + Unpin + ?Sized>(
    reader: &mut R,
) -> Result<Option<Frame>, WireError> {
    let mut head = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = reader.read(&mut head[got..]).await.map_err(WireError::Io)?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(WireError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        got += n;
    }
    // The limit is checked before the payload is allocated.
    let header = Header::parse(&head).map_err(WireError::Codec)?;
    // DATA payloads reuse spare buffers (see `codec::payload_buffer`).
    let mut payload = payload_buffer(header.len);
    reader
        .read_exact(&mut payload)
        .await
        .map_err(WireError::Io)?;
    Frame::decode(header, payload)
        .map(Some)
        .map_err(WireError::Codec)
}

/// Writes one frame (not flushed). A DATA frame's bytes are written as they are, without
/// a copy; other frames are encoded into `scratch` first.
pub async fn write_frame<W: AsyncWrite + Unpin + ?Sized>(
    writer: &mut W,
    frame: &Frame,
    scratch: &mut Vec<u8>,
) -> Result<(), WireError> {
    match frame {
        Frame::Data(chunk) => {
            writer
                .write_all(&chunk.header())
                .await
                .map_err(WireError::Io)?;
            writer
                .write_all(chunk.payload())
                .await
                .map_err(WireError::Io)?;
        }
        other => {
            scratch.clear();
            other.encode(scratch).map_err(WireError::Codec)?;
            writer.write_all(scratch).await.map_err(WireError::Io)?;
        }
    }
    Ok(())
}
