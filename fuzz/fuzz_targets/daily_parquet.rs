//! The daily Parquet reader (`io::parquet::read_daily_parquet`), on the bytes as a file:
//! no panic, hang or unbounded allocation; and the table written back by
//! `write_daily_parquet` reads again to the same rows bit for bit (NaN as NaN).
#![no_main]

use bms_core::io::parquet::{read_daily_parquet, write_daily_parquet};
use bms_fuzz::{abort_on_panics_outside_caught_crates, assert_same_tables, scratch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    abort_on_panics_outside_caught_crates();
    let input = scratch("daily-in.parquet");
    std::fs::write(&input, data).expect("scratch file");
    let Ok(first) = read_daily_parquet(&input) else {
        return;
    };
    let output = scratch("daily-out.parquet");
    write_daily_parquet(&output, &first).expect("a table read back writes");
    let again = read_daily_parquet(&output)
        .unwrap_or_else(|e| panic!("written table does not read back: {e}"));
    assert_same_tables(&first, &again, "write then read");
});
