//! The CSV request body of `bms serve`'s `/invocations` (`bms::serve::codec::parse_csv`,
//! over `io::batch_csv::read_scoring_csv`), with the widths the first line implies (plain
//! feature rows, or `VIN,Date,…` batch lines): no panic, hang or unbounded allocation; the
//! rows have the width asked for; and a body made only of batch lines gives exactly what
//! the batch file reader (`bms predict`) reads from it. The request headers that choose
//! the formats (`Content-Type`, `Accept`) are parsed from the body's first line too.
#![no_main]

use bms::serve::codec::{accept_format, content_format, parse_csv};
use bms_core::io::ReadMode;
use bms_core::io::batch_csv::{BatchOptions, read_batch_csv_from};
use bms_fuzz::same_f32s;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let first = data
        .split(|&b| b == b'\n')
        .find(|l| !l.iter().all(u8::is_ascii_whitespace))
        .unwrap_or(b"");
    if let Ok(header) = std::str::from_utf8(first) {
        let _ = content_format(Some(header));
        let _ = accept_format(Some(header));
    }
    let fields = first.iter().filter(|&&b| b == b',').count() + 1;
    let mut widths = vec![fields.max(1), fields.saturating_sub(2).max(1)];
    widths.dedup();
    for width in widths {
        let Ok(rows) = parse_csv(data, width) else {
            continue;
        };
        assert_eq!(rows.x.len(), rows.n * width, "rows × width values");
        assert!(rows.keys.windows(2).all(|k| k[0].0 < k[1].0));
        assert!(rows.keys.iter().all(|k| k.0 < rows.n));
        if rows.n > 0 && rows.keys.len() == rows.n {
            let batch = read_batch_csv_from(
                data,
                None,
                BatchOptions {
                    width,
                    labels: false,
                    mode: ReadMode::Strict,
                },
            )
            .unwrap_or_else(|e| {
                panic!("the server read batch lines the batch reader refuses: {e}")
            });
            let b = &batch.data;
            assert_eq!(b.keys.len(), rows.n);
            for (k, (_, vin, date)) in b.keys.iter().zip(&rows.keys) {
                assert_eq!((&k.vin, &k.date), (vin, date));
            }
            assert!(
                same_f32s(b.x.iter(), rows.x.iter()),
                "values differ from the batch reader's"
            );
        }
    }
});
