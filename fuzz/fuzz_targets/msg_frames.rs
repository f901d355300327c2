//! The tlsnet-msg/1 frame decoder on arbitrary bytes, fed in arbitrary pieces: it never
//! panics, never takes more than it was given, never buffers more than its limit, and what it
//! decodes encodes back to a frame that decodes the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tlsnet::msg::codec::{decode_all, Decoded, Decoder};

const LIMIT: u32 = 4096;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the piece size, the rest is the stream.
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut decoder = Decoder::new(LIMIT);
    let mut rest = stream;
    let mut frames = Vec::new();
    'feed: while !rest.is_empty() {
        let piece = &rest[..step.min(rest.len())];
        let mut offset = 0;
        while offset < piece.len() {
            match decoder.feed(&piece[offset..]) {
                Ok((used, decoded)) => {
                    assert!(used <= piece.len() - offset);
                    if used == 0 && decoded.is_none() {
                        break;
                    }
                    offset += used;
                    frames.extend(decoded);
                }
                Err(e) => {
                    let _ = e.to_string();
                    let _ = e.code();
                    break 'feed;
                }
            }
        }
        rest = &rest[piece.len()..];
    }
    // Piece by piece decodes as the whole does.
    let (whole, _) = decode_all(LIMIT, stream);
    assert_eq!(whole.len(), frames.len());
    for decoded in frames {
        if let Decoded::Frame(frame) = decoded {
            let bytes = frame.encode();
            let (again, err) = decode_all(u32::MAX, &bytes);
            assert!(err.is_none());
            match again.as_slice() {
                [Decoded::Frame(f)] => assert_eq!(*f, frame),
                _ => panic!("re-encoded frame did not decode"),
            }
        }
    }
});
