//! The frame CSV reader (`io::frame_csv::read_frame_csv_from`), strict and lenient: no
//! panic, hang or unbounded allocation; `read = accepted + rejects`; a file strict mode
//! accepts reads the same in lenient mode with no rejects; and what was read, written back
//! by `write_frame_csv_to` and read again, is the same frames bit for bit (NaN as NaN).
#![no_main]

use bms_core::io::ReadMode;
use bms_core::io::frame_csv::{read_frame_csv_from, write_frame_csv_to};
use bms_fuzz::assert_same_frames;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let lenient = read_frame_csv_from(data, None, ReadMode::Lenient);
    let strict = read_frame_csv_from(data, None, ReadMode::Strict);
    if let Ok(r) = &lenient {
        assert_eq!(r.read, r.accepted + r.rejects.len() as u64);
        assert_eq!(r.accepted, r.data.len() as u64);
    }
    if let Ok(s) = &strict {
        let l = lenient.as_ref().expect("lenient reads what strict reads");
        assert!(l.rejects.is_empty());
        assert_same_frames(&s.data, &l.data, "strict vs lenient");
    }
    let Ok(first) = lenient else { return };
    if first.data.is_empty() {
        return;
    }
    let mut text = Vec::new();
    write_frame_csv_to(&mut text, &first.data).expect("frames read from one file write back");
    let again = read_frame_csv_from(&text[..], None, ReadMode::Strict)
        .unwrap_or_else(|e| panic!("written frames do not read back: {e}"));
    assert!(again.rejects.is_empty());
    assert_same_frames(&first.data, &again.data, "write then read");
});
