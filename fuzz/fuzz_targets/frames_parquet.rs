//! The frame Parquet reader (`io::parquet::read_frames_parquet`, SPEC §2), strict and
//! lenient, on the bytes as a file: no panic, hang or unbounded allocation;
//! `read = accepted + rejects`; strict success reads the same in lenient mode; and the
//! frames written back by `write_frames_parquet` read again to the same frames bit for bit.
#![no_main]

use bms_core::io::ReadMode;
use bms_core::io::parquet::{read_frames_parquet, write_frames_parquet};
use bms_fuzz::{abort_on_panics_outside_caught_crates, assert_same_frames, scratch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    abort_on_panics_outside_caught_crates();
    let input = scratch("frames-in.parquet");
    std::fs::write(&input, data).expect("scratch file");
    let lenient = read_frames_parquet(&input, ReadMode::Lenient);
    let strict = read_frames_parquet(&input, ReadMode::Strict);
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
    let output = scratch("frames-out.parquet");
    write_frames_parquet(&output, &first.data).expect("frames read back write");
    let again = read_frames_parquet(&output, ReadMode::Strict)
        .unwrap_or_else(|e| panic!("written frames do not read back: {e}"));
    assert_same_frames(&first.data, &again.data, "write then read");
});
