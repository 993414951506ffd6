//! The daily CSV reader (`io::daily_csv::read_daily_csv_from`), strict and lenient: no
//! panic, hang or unbounded allocation; `read = accepted + rejects`; strict success reads
//! the same in lenient mode; and the table written back by `write_daily_csv_to` (with and
//! without the extended columns) reads again to the same rows, bit for bit (NaN as NaN).
#![no_main]

use bms_core::daily::EXTENDED_COLUMNS;
use bms_core::io::ReadMode;
use bms_core::io::daily_csv::{read_daily_csv_from, write_daily_csv_to};
use bms_fuzz::assert_same_tables;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let lenient = read_daily_csv_from(data, None, ReadMode::Lenient);
    let strict = read_daily_csv_from(data, None, ReadMode::Strict);
    if let Ok(r) = &lenient {
        assert_eq!(r.read, r.accepted + r.rejects.len() as u64);
        assert_eq!(r.accepted, r.data.len() as u64);
    }
    if let Ok(s) = &strict {
        let l = lenient.as_ref().expect("lenient reads what strict reads");
        assert!(l.rejects.is_empty());
        assert_same_tables(&s.data, &l.data, "strict vs lenient");
    }
    let Ok(first) = lenient else { return };
    for extended in [true, false] {
        let mut text = Vec::new();
        write_daily_csv_to(&mut text, &first.data, extended).expect("writing to memory");
        let again = read_daily_csv_from(&text[..], None, ReadMode::Strict).unwrap_or_else(|e| {
            panic!("written table does not read back (extended {extended}): {e}")
        });
        let mut want = first.data.clone();
        if !extended {
            // Without the extended columns they read back as NaN.
            for row in &mut want.rows {
                for c in EXTENDED_COLUMNS {
                    row.set(c, f64::NAN);
                }
            }
        }
        assert_same_tables(
            &want,
            &again.data,
            &format!("write (extended {extended}) then read"),
        );
    }
});
