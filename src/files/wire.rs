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

/// Whether `buffered` (bytes already read, not yet decoded) starts with a whole frame, or
/// with a header the codec refuses: then [`read_frame`] returns without waiting for input.
pub fn frame_buffered(buffered: &[u8]) -> bool {
    let Some(head) = buffered.first_chunk::<HEADER_LEN>() else {
        return false;
    };
    match Header::parse(head) {
        Ok(header) => buffered.len() - HEADER_LEN >= header.len,
        Err(_) => true,
    }
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

/// Writes frames in order (not flushed), with one write for each run of frames other than
/// DATA (encoded together into `scratch`): under TLS every write is a record and a system
/// call, so a batch of small answers costs one of each, not one per frame.
pub async fn write_frames<W: AsyncWrite + Unpin + ?Sized>(
    writer: &mut W,
    frames: &[Frame],
    scratch: &mut Vec<u8>,
) -> Result<(), WireError> {
    scratch.clear();
    for frame in frames {
        if let Frame::Data(_) = frame {
            if !scratch.is_empty() {
                writer.write_all(scratch).await.map_err(WireError::Io)?;
                scratch.clear();
            }
            write_frame(writer, frame, scratch).await?;
            scratch.clear();
        } else {
            frame.encode(scratch).map_err(WireError::Codec)?;
        }
    }
    if !scratch.is_empty() {
        writer.write_all(scratch).await.map_err(WireError::Io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::codec::Chunk;

    /// A batch written with `write_frames` reads back frame by frame, in order, DATA
    /// included, and its small frames take one write each run.
    #[test]
    fn a_buffered_frame_is_known_before_it_is_read() {
        let mut bytes = Vec::new();
        Frame::Ok { path: "abc".into() }.encode(&mut bytes).unwrap();
        assert!(frame_buffered(&bytes));
        assert!(!frame_buffered(&bytes[..bytes.len() - 1]));
        assert!(!frame_buffered(&bytes[..HEADER_LEN - 1]));
        assert!(!frame_buffered(&[]));
        // A header the codec refuses: reading it fails at once, so it counts as there.
        assert!(frame_buffered(&[0xee, 0, 0, 0, 0]));
    }

    #[test]
    fn a_batch_reads_back_in_order() {
        let frames = vec![
            Frame::Ok { path: "a".into() },
            Frame::Ok { path: "b".into() },
            Frame::Data(Chunk::new(5, 0, b"hello")),
            Frame::Ok { path: "c".into() },
            Frame::ListEnd { count: 3 },
        ];
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut out: Vec<u8> = Vec::new();
            let mut scratch = Vec::new();
            write_frames(&mut out, &frames, &mut scratch).await.unwrap();
            let mut read = out.as_slice();
            let mut back = Vec::new();
            while let Some(frame) = read_frame(&mut read).await.unwrap() {
                back.push(frame);
            }
            assert_eq!(back.len(), frames.len());
            for (got, want) in back.iter().zip(&frames) {
                assert_eq!(format!("{got:?}"), format!("{want:?}"));
            }
        });
    }
}
