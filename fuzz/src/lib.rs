//! What the fuzz targets share: exact, NaN-aware comparison of what a reader produced
//! (a round trip must give back the same bits, and NaN reads back as NaN), a scratch file
//! for the readers that take a path, and the panic policy of the targets that load models.

use std::path::PathBuf;

/// The C ABI (`bms-ffi`), compiled from its source into this crate: a dependency on the
/// `bms-ffi` package would also build its `cdylib` and `staticlib` (1.1 GB under ASan,
/// and minutes of linking) that no target uses. The functions are the same code the C
/// library exports.
#[path = "../../bms-ffi/src/lib.rs"]
pub mod ffi;

use bms_core::daily::{DailyRow, DailyTable};
use bms_core::frame::{FrameRef, Frames};

/// The same value: equal bits, or both NaN (a NaN's payload is not kept by text formats).
pub fn same_f64(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

pub fn same_f32(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

pub fn same_f64s(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| same_f64(x, y))
}

pub fn same_f32s<'a>(
    a: impl IntoIterator<Item = &'a f32>,
    b: impl IntoIterator<Item = &'a f32>,
) -> bool {
    let (a, b): (Vec<f32>, Vec<f32>) = (
        a.into_iter().copied().collect(),
        b.into_iter().copied().collect(),
    );
    a.len() == b.len() && a.iter().zip(&b).all(|(&x, &y)| same_f32(x, y))
}

pub fn same_frame(a: &FrameRef<'_>, b: &FrameRef<'_>) -> bool {
    a.vin == b.vin
        && a.timestamp_ms == b.timestamp_ms
        && same_f64(a.pack_voltage, b.pack_voltage)
        && same_f64(a.pack_current, b.pack_current)
        && same_f64(a.soc, b.soc)
        && same_f64s(a.cell_voltages, b.cell_voltages)
        && same_f64s(a.temperatures, b.temperatures)
        && a.alarm_flags == b.alarm_flags
}

/// Panics with the first frame that differs (source lines are not compared: a round trip
/// drops blank lines and rejects).
pub fn assert_same_frames(first: &Frames, again: &Frames, what: &str) {
    assert_eq!(first.len(), again.len(), "{what}: frame count");
    for (i, (a, b)) in first.iter().zip(again.iter()).enumerate() {
        assert!(
            same_frame(&a, &b),
            "{what}: frame {i} differs:\n{a:?}\n{b:?}"
        );
    }
}

pub fn same_row(a: &DailyRow, b: &DailyRow) -> bool {
    a.vin == b.vin
        && a.date == b.date
        && same_f64(a.label, b.label)
        && same_f64s(&a.values, &b.values)
}

pub fn assert_same_tables(first: &DailyTable, again: &DailyTable, what: &str) {
    assert_eq!(first.rows.len(), again.rows.len(), "{what}: row count");
    for (i, (a, b)) in first.rows.iter().zip(&again.rows).enumerate() {
        assert!(same_row(a, b), "{what}: row {i} differs:\n{a:?}\n{b:?}");
    }
}

/// A file of this process in the temporary directory (`scripts/fuzz.sh` points `TMPDIR`
/// at its scratch directory), for the readers and writers that take a path.
pub fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("bms-fuzz-{}-{name}", std::process::id()))
}

/// The crates whose panics the library catches by design: `Model::from_bytes` builds the
/// engine's plan (tract) inside `catch_unwind`, and the Parquet readers decode inside
/// `catch_unwind` (the parquet and arrow crates panic on some malformed files); either
/// panic becomes an error (`BmsError::Model`, `BmsError::Parquet`).
///
/// tract's panics are sometimes raised in a container crate it calls (`smallvec`'s
/// `remove` when a Squeeze axis is past the rank: `tests/data/fuzz-model-squeeze-axis.onnx`
/// of bms-core), so those count too; a panic there that the library does not catch still
/// fails the run.
pub const CAUGHT_CRATES: [&str; 4] = ["/tract-", "/parquet-", "/arrow-", "/smallvec-"];

/// libFuzzer's panic hook aborts on every panic, even one the library catches. This hook
/// lets a panic raised in one of [`CAUGHT_CRATES`] unwind (to the library's
/// `catch_unwind`) and aborts on every other panic. Such a panic that escapes the library
/// still fails the run: libfuzzer-sys aborts on any panic out of the target.
pub fn abort_on_panics_outside_caught_crates() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let caught = info.location().is_some_and(|l| {
                let file = l.file().replace('\\', "/");
                CAUGHT_CRATES.iter().any(|c| file.contains(c))
            });
            if !caught {
                default(info);
                std::process::abort();
            }
        }));
    });
}
