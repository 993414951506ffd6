//! The batch scoring CSV reader (`io::batch_csv::read_batch_csv_from`, SPEC §6), with the
//! width the input's first line implies, without and with a label column, strict and
//! lenient: no panic, hang or unbounded allocation; `read = accepted + rejects`; the shape
//! of what was read; a round trip through `write_batch_csv_to` gives the same keys and
//! values bit for bit. Also the number readers on every field: `parse_f32` is exactly
//! `parse_f64` rounded to f32, errors included (its documented contract).
#![no_main]

use bms_core::io::batch_csv::{BatchOptions, read_batch_csv_from, write_batch_csv_to};
use bms_core::io::{ReadMode, parse_f32, parse_f64};
use bms_core::window::WindowBatch;
use bms_fuzz::same_f32s;
use libfuzzer_sys::fuzz_target;
use ndarray::Array1;

/// Fields of the first non-blank line, counted as the reader splits them (unquoted).
fn first_line_fields(data: &[u8]) -> usize {
    data.split(|&b| b == b'\n')
        .find(|l| !l.iter().all(u8::is_ascii_whitespace))
        .map_or(0, |l| l.iter().filter(|&&b| b == b',').count() + 1)
}

fuzz_target!(|data: &[u8]| {
    for field in data.split(|&b| b == b',' || b == b'\n') {
        let wide = parse_f64(field).map(|v| v as f32);
        let narrow = parse_f32(field);
        match (&wide, &narrow) {
            (Ok(a), Ok(b)) => assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "parse_f32 {b:?} vs parse_f64 as f32 {a:?} for {:?}",
                String::from_utf8_lossy(field)
            ),
            _ => assert_eq!(wide, narrow, "{:?}", String::from_utf8_lossy(field)),
        }
    }

    let fields = first_line_fields(data);
    for labels in [false, true] {
        let extra = 2 + usize::from(labels);
        let width = fields.saturating_sub(extra).max(1);
        for mode in [ReadMode::Lenient, ReadMode::Strict] {
            let options = BatchOptions {
                width,
                labels,
                mode,
            };
            let Ok(first) = read_batch_csv_from(data, None, options) else {
                assert_eq!(
                    mode,
                    ReadMode::Strict,
                    "lenient reading of in-memory text fails"
                );
                continue;
            };
            let d = &first.data;
            assert_eq!(first.read, first.accepted + first.rejects.len() as u64);
            assert_eq!(d.keys.len() as u64, first.accepted);
            assert_eq!(d.x.dim(), (d.keys.len(), width));
            assert_eq!(d.lines.len(), d.keys.len());
            assert_eq!(
                d.labels.as_ref().map(Vec::len),
                labels.then_some(d.keys.len())
            );
            if mode == ReadMode::Strict {
                assert!(first.rejects.is_empty());
            }

            let batch = WindowBatch {
                x: d.x.clone(),
                y: d.labels
                    .clone()
                    .map_or_else(|| Array1::zeros(d.keys.len()), Array1::from),
                keys: d.keys.clone(),
            };
            let mut text = Vec::new();
            write_batch_csv_to(&mut text, &batch, labels).expect("writing to memory");
            let again = read_batch_csv_from(
                &text[..],
                None,
                BatchOptions {
                    mode: ReadMode::Strict,
                    ..options
                },
            )
            .unwrap_or_else(|e| panic!("written batch does not read back: {e}"));
            let a = &again.data;
            assert_eq!(a.keys, d.keys, "keys after write then read");
            assert!(
                same_f32s(a.x.iter(), d.x.iter()),
                "values after write then read"
            );
            assert_eq!(a.labels, d.labels, "labels after write then read");
        }
    }
});
