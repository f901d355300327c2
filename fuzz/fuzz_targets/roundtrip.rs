//! Values to text and back: any SPKI pin reads back from its text, and any duration up to the
//! parser's limit reads back from what `duration::format` writes (to the millisecond).
//! The input is the key bytes of a pin, and its first 12 bytes also make a duration.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tlsnet::tls::SpkiPin;

fuzz_target!(|data: &[u8]| {
    let pin = SpkiPin::of_spki(data);
    let text = pin.to_string();
    assert!(
        text.starts_with("sha256/") && text.len() == 7 + 44,
        "{text}"
    );
    assert_eq!(text.parse::<SpkiPin>().ok(), Some(pin));

    if let (Some(secs), Some(nanos)) = (data.get(0..8), data.get(8..12)) {
        let secs = u64::from_le_bytes(secs.try_into().unwrap()) % 1_000_000_001;
        let nanos = u32::from_le_bytes(nanos.try_into().unwrap()) % 1_000_000_000;
        let d = Duration::new(secs, nanos).min(Duration::from_secs(1_000_000_000));
        let shown = tlsnet::duration::format(d);
        let back = tlsnet::duration::parse(&shown)
            .unwrap_or_else(|e| panic!("{d:?} formatted as {shown:?}, which does not parse: {e}"));
        assert!(
            back.abs_diff(d) < Duration::from_millis(1),
            "{d:?} formatted as {shown:?}, which parses as {back:?}"
        );
    }
});
