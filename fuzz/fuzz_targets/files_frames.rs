//! The frames of `tlsnet-files/1` as a peer sends them: any bytes are decoded frame after
//! frame without a panic, a header never makes the decoder wait for (or allocate) more than
//! its kind's limit, and every frame that decodes encodes back to the same bytes. The remote
//! names inside go through the name rules, which must never accept `..`, an absolute path or
//! a control character.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tlsnet::files::codec::{decode_prefix, Frame, Header, HEADER_LEN};
use tlsnet::files::RemotePath;

fn check_name(name: &str) {
    if let Ok(path) = RemotePath::parse(name) {
        let text = path.as_str();
        assert!(!text.starts_with('/'), "{text:?}");
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert!(
            text.split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."),
            "{text:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Some(head) = rest.get(..HEADER_LEN) {
        if let Ok(header) = Header::parse(head.try_into().unwrap()) {
            assert!(header.len <= header.kind.max_len());
        }
        match decode_prefix(rest) {
            Ok(Some((frame, used))) => {
                let mut again = Vec::new();
                frame.encode(&mut again).expect("a decoded frame encodes");
                // What we decode, we encode to bytes that decode to the same frame (an
                // unknown error code from a newer peer reads as `Other`, so the bytes
                // themselves may differ).
                let back = decode_prefix(&again).expect("a re-encoded frame decodes");
                assert_eq!(back, Some((frame.clone(), again.len())), "{frame:?}");
                assert!(used <= rest.len());
                match &frame {
                    Frame::Open(o) => {
                        check_name(&o.path);
                        check_name(&o.to);
                    }
                    Frame::Get(g) => check_name(&g.path),
                    Frame::List { path, .. } | Frame::Remove { path, .. } | Frame::Ok { path } => {
                        check_name(path)
                    }
                    Frame::Entry(e) => check_name(&e.path),
                    Frame::Data(chunk) => {
                        for size in [
                            chunk.data().len() as u64,
                            chunk.offset().saturating_add(chunk.data().len() as u64),
                            u64::MAX,
                        ] {
                            let _ = (chunk.fits(size), chunk.verify(size));
                        }
                    }
                    _ => {}
                }
                rest = &rest[used..];
            }
            Ok(None) | Err(_) => break,
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        check_name(text);
    }
});
