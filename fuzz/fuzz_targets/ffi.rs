//! The C ABI's buffer entry points (`bms-ffi`), called as C calls them, with the fuzzer's
//! bytes as a script of calls: `bms_model_load_bytes` on the remaining bytes,
//! `bms_model_predict` with any `x_len`/`n_rows`/`probs_len`, `bms_frame_compute_features`
//! and `bms_monitor_push_frame` with any cells/temperatures (NaN and ±inf included),
//! `bms_monitor_advance_to`, `_predict`, `_day`, `_current_day`, a new monitor with any
//! configuration, NULL buffers with a length, and the GB/T 32960 decoder
//! (`bms_gbt32960_decoder_push` of script bytes in any pieces, `_next_frame` until it needs
//! more, `_finish`, `_counts`; each decoded frame pushed to the monitor). Checked on every call: no
//! `BMS_STATUS_PANIC` (nor any panic), out-parameters written only on success, statuses
//! that fit the arguments (a length mismatch is `LENGTH_MISMATCH`, NULL with a length
//! `NULL_POINTER`), and a non-NULL last-error message after a failure.
#![no_main]

use std::ffi::CStr;
use std::ptr;
use std::sync::OnceLock;

use bms_fuzz::abort_on_panics_outside_caught_crates;
use bms_fuzz::ffi::*;
use libfuzzer_sys::fuzz_target;

/// The smallest fixture that carries a `bms.*` contract (a monitor needs one).
static MODEL_BYTES: &[u8] = include_bytes!("../../models/fixtures/xgb_metadata.onnx");

struct Shared(*mut BmsModel);
// SAFETY: a bms_model is immutable and shareable by threads (bms.h).
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

fn model() -> *const BmsModel {
    static MODEL: OnceLock<Shared> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let mut m = ptr::null_mut();
            // SAFETY: a valid buffer and out-pointer.
            let s =
                unsafe { bms_model_load_bytes(MODEL_BYTES.as_ptr(), MODEL_BYTES.len(), &mut m) };
            assert_eq!(s, BmsStatus::Ok, "the fixture model loads");
            Shared(m)
        })
        .0
}

struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for o in &mut out {
            *o = self.byte();
        }
        out
    }
    fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.bytes())
    }
    /// A reading: mostly plausible volts/degrees, sometimes NaN, ±inf or any bits.
    fn reading(&mut self) -> f64 {
        match self.byte() {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => f64::NEG_INFINITY,
            3 => f64::from_bits(u64::from_le_bytes(self.bytes())),
            b => 3.0 + (f64::from(b) - 128.0) / 64.0,
        }
    }
    fn readings(&mut self, max: u8) -> Vec<f64> {
        let n = self.byte() % (max + 1);
        (0..n).map(|_| self.reading()).collect()
    }
    fn flags(&mut self) -> i64 {
        match self.byte() % 4 {
            0 => BMS_NO_ALARM_FLAGS,
            1 => i64::from(u32::from_le_bytes(self.bytes())),
            2 => i64::from(BMS_CONSISTENCY_ALARM_MASK),
            _ => self.i64(),
        }
    }
}

/// Fails the run on a panic status; after any other failure the last-error message must
/// be a non-empty C string.
fn check(status: BmsStatus, call: &str) -> BmsStatus {
    // SAFETY: never NULL, NUL-terminated (bms.h).
    let msg = unsafe { CStr::from_ptr(bms_last_error_message()) };
    assert_ne!(
        status,
        BmsStatus::Panic,
        "{call}: {}",
        msg.to_string_lossy()
    );
    if status != BmsStatus::Ok {
        assert!(
            !msg.to_bytes().is_empty(),
            "{call} failed with {status:?} and no message"
        );
    }
    status
}

fn model_width(m: *const BmsModel) -> usize {
    let mut w = 0usize;
    // SAFETY: a live model and a writable out-pointer.
    assert_eq!(
        check(unsafe { bms_model_width(m, &mut w) }, "bms_model_width"),
        BmsStatus::Ok
    );
    w
}

/// `bms_model_predict` with lengths from the script; the buffers are as long as the
/// lengths say. `probability`: the model gives probabilities (the fixture), not any value.
fn predict(m: *const BmsModel, s: &mut Script<'_>, probability: bool) {
    let width = model_width(m);
    let n_rows = usize::from(s.byte() % 4);
    let x_len = match s.byte() % 4 {
        0 => (n_rows * width).saturating_sub(1),
        1 => n_rows * width + 1,
        _ => n_rows * width,
    };
    let x: Vec<f32> = (0..x_len).map(|_| s.reading() as f32).collect();
    let probs_len = usize::from(s.byte() % 5);
    let mut probs = vec![-7.0f32; probs_len];
    // SAFETY: buffers of the lengths passed.
    let status = check(
        unsafe { bms_model_predict(m, x.as_ptr(), x_len, n_rows, probs.as_mut_ptr(), probs_len) },
        "bms_model_predict",
    );
    let fits = x_len == n_rows * width && probs_len >= n_rows;
    if fits {
        assert_eq!(status, BmsStatus::Ok, "well-shaped buffers");
        if probability {
            assert!(probs[..n_rows].iter().all(|p| p.is_nan() || (0.0..=1.0).contains(p)));
        }
        assert!(
            probs[n_rows..].iter().all(|&p| p == -7.0),
            "wrote past n_rows"
        );
    } else {
        assert_eq!(status, BmsStatus::LengthMismatch);
        assert!(probs.iter().all(|&p| p == -7.0), "wrote on failure");
    }
}

fn new_monitor(s: &mut Script<'_>, default: bool) -> *mut BmsMonitor {
    let config = BmsMonitorConfig {
        utc_offset_seconds: i32::from_le_bytes(s.bytes()) % 100_000,
        chemistry: u32::from(s.byte() % 3),
        alarm_spread_v: s.reading() / 10.0,
    };
    let mut mon = ptr::null_mut();
    let cfg = if default {
        ptr::null()
    } else {
        &config as *const _
    };
    // SAFETY: a live model, a readable config or NULL, a writable out-pointer.
    let status = check(
        unsafe { bms_monitor_new(model(), cfg, &mut mon) },
        "bms_monitor_new",
    );
    if status == BmsStatus::Ok {
        assert!(!mon.is_null());
    } else {
        assert!(mon.is_null(), "wrote on failure");
        assert!(!default, "the default configuration is refused: {status:?}");
    }
    mon
}

/// Pushes the next script bytes to the decoder, drains it (after `finish` when asked) and
/// checks every frame and status; frames go to the monitor.
fn decode(d: *mut BmsGbt32960Decoder, mon: *mut BmsMonitor, s: &mut Script<'_>) {
    let n = usize::from(s.byte());
    let finish = s.byte() % 4 == 0;
    let n = n.min(s.0.len());
    let (piece, rest) = s.0.split_at(n);
    s.0 = rest;
    let mut before = BmsGbt32960Counts::default();
    // SAFETY: a live decoder, buffers of the lengths passed, writable out-pointers.
    unsafe {
        check(bms_gbt32960_decoder_counts(d, &mut before), "counts");
        let st = check(bms_gbt32960_decoder_push(d, piece.as_ptr(), piece.len()), "push");
        assert_eq!(st, BmsStatus::Ok);
        if finish {
            assert_eq!(check(bms_gbt32960_decoder_finish(d), "finish"), BmsStatus::Ok);
        }
        let (mut frames, mut bad) = (0u64, 0u64);
        loop {
            let mut f = BmsGbt32960Frame {
                vin: ptr::null(),
                timestamp_ms: 0,
                pack_voltage: 0.0,
                pack_current: 0.0,
                soc: 0.0,
                cells: ptr::null(),
                n_cells: usize::MAX,
                temps: ptr::null(),
                n_temps: 0,
                alarm_flags: 0,
                offset: 0,
                edition: 0,
                command: 0,
            };
            match check(bms_gbt32960_decoder_next_frame(d, &mut f), "next_frame") {
                BmsStatus::NotReady => {
                    assert_eq!(f.n_cells, usize::MAX, "wrote on NOT_READY");
                    break;
                }
                BmsStatus::BadPacket => bad += 1,
                BmsStatus::Ok => {
                    frames += 1;
                    let vin = CStr::from_ptr(f.vin).to_bytes();
                    assert!(!vin.is_empty() && vin.len() <= 17, "VIN {vin:?}");
                    assert!(f.n_cells > 0 && f.n_temps > 0);
                    assert!(f.edition == 2016 || f.edition == 2025);
                    assert!(f.command == 0x02 || f.command == 0x03);
                    // Every borrowed value is readable (AddressSanitizer checks the reads).
                    let cells = std::slice::from_raw_parts(f.cells, f.n_cells);
                    let temps = std::slice::from_raw_parts(f.temps, f.n_temps);
                    std::hint::black_box(cells.iter().sum::<f64>() + temps.iter().sum::<f64>());
                    check(
                        bms_monitor_push_frame(
                            mon,
                            f.timestamp_ms,
                            f.pack_voltage,
                            f.pack_current,
                            f.soc,
                            f.cells,
                            f.n_cells,
                            f.temps,
                            f.n_temps,
                            f.alarm_flags,
                        ),
                        "bms_monitor_push_frame(decoded)",
                    );
                }
                other => panic!("next_frame returned {other:?}"),
            }
        }
        let mut after = BmsGbt32960Counts::default();
        check(bms_gbt32960_decoder_counts(d, &mut after), "counts");
        assert_eq!(after.frames - before.frames, frames, "frames counted");
        assert_eq!(after.errors - before.errors, bad, "refusals counted");
        assert!(after.bytes <= before.bytes + piece.len() as u64 + 65_556);
        assert!(after.bytes >= before.bytes);
    }
}

fuzz_target!(|data: &[u8]| {
    abort_on_panics_outside_caught_crates();
    let mut s = Script(data);
    let mut mon = new_monitor(&mut s, true);
    let mut dec = ptr::null_mut();
    // SAFETY: a writable out-pointer.
    assert_eq!(unsafe { bms_gbt32960_decoder_new(&mut dec) }, BmsStatus::Ok);
    // What the monitor was given: its latest frame and the floor `advance_to` set.
    let (mut last_ms, mut floor_ms): (Option<i64>, Option<i64>) = (None, None);
    while !s.0.is_empty() {
        match s.byte() % 11 {
            0 => {
                let ts = match s.byte() % 3 {
                    0 => s.i64(),
                    1 => last_ms
                        .unwrap_or(0)
                        .saturating_add(i64::from(u16::from_le_bytes(s.bytes())) * 1000),
                    _ => last_ms
                        .unwrap_or(1_704_067_200_000)
                        .saturating_add(i64::from(s.byte()) * 3_600_000),
                };
                let (v, i, soc) = (s.reading() * 100.0, s.reading(), s.reading() * 20.0);
                let cells = s.readings(24);
                let temps = s.readings(6);
                let flags = s.flags();
                let mut before = 0u64;
                // SAFETY: a live monitor and buffers of the lengths passed.
                unsafe {
                    bms_monitor_days_closed(mon, &mut before);
                    let st = check(
                        bms_monitor_push_frame(
                            mon,
                            ts,
                            v,
                            i,
                            soc,
                            cells.as_ptr(),
                            cells.len(),
                            temps.as_ptr(),
                            temps.len(),
                            flags,
                        ),
                        "bms_monitor_push_frame",
                    );
                    let mut after = 0u64;
                    bms_monitor_days_closed(mon, &mut after);
                    if st == BmsStatus::Ok {
                        assert!(last_ms.is_none_or(|l| ts > l), "accepted an older frame");
                        assert!(
                            floor_ms.is_none_or(|f| ts >= f),
                            "accepted a frame before the floor"
                        );
                        last_ms = Some(ts);
                        assert!(after >= before);
                    } else {
                        assert_eq!(after, before, "a refused frame closed days");
                    }
                    if cells.is_empty() || temps.is_empty() {
                        assert_eq!(st, BmsStatus::InvalidArgument);
                    }
                }
            }
            1 => {
                let ts = s.i64();
                // SAFETY: a live monitor.
                let st = check(
                    unsafe { bms_monitor_advance_to(mon, ts) },
                    "bms_monitor_advance_to",
                );
                if st == BmsStatus::Ok {
                    assert!(
                        last_ms.is_none_or(|l| ts >= l),
                        "advanced before the latest frame"
                    );
                    assert!(
                        floor_ms.is_none_or(|f| ts >= f),
                        "advanced before the floor"
                    );
                    floor_ms = Some(ts);
                }
            }
            2 => {
                let mut p = -7.0f32;
                // SAFETY: a live monitor, a writable out-pointer.
                let st = check(
                    unsafe { bms_monitor_predict(mon, &mut p) },
                    "bms_monitor_predict",
                );
                if st == BmsStatus::Ok {
                    assert!(p.is_nan() || (0.0..=1.0).contains(&p), "probability {p}");
                } else {
                    assert_eq!(p, -7.0, "wrote on failure");
                }
            }
            3 => {
                let age = usize::from(s.byte());
                let (mut held, mut row) = (0usize, None::<BmsDailyRow>);
                let mut out = std::mem::MaybeUninit::<BmsDailyRow>::zeroed();
                // SAFETY: a live monitor, writable out-pointers.
                unsafe {
                    bms_monitor_days(mon, &mut held);
                    let st = check(
                        bms_monitor_day(mon, age, out.as_mut_ptr()),
                        "bms_monitor_day",
                    );
                    if st == BmsStatus::Ok {
                        row = Some(out.assume_init());
                    }
                    assert_eq!(st == BmsStatus::Ok, age < held, "age {age} of {held} days");
                }
                if let Some(r) = row {
                    assert!(r.frames >= 0.0);
                }
            }
            4 => {
                let mut d = i64::MIN;
                // SAFETY: a live monitor, a writable out-pointer.
                let st = check(
                    unsafe { bms_monitor_current_day(mon, &mut d) },
                    "bms_monitor_current_day",
                );
                assert_eq!(st == BmsStatus::Ok, d != i64::MIN);
            }
            5 => {
                let chemistry = u32::from(s.byte() % 3);
                let spread = s.reading() / 10.0;
                let soc = s.reading() * 20.0;
                let cells = s.readings(24);
                let temps = s.readings(6);
                let flags = s.flags();
                let mut out = std::mem::MaybeUninit::<BmsFrameFeatures>::zeroed();
                // SAFETY: buffers of the lengths passed, a writable out-pointer.
                let st = check(
                    unsafe {
                        bms_frame_compute_features(
                            chemistry,
                            spread,
                            soc,
                            cells.as_ptr(),
                            cells.len(),
                            temps.as_ptr(),
                            temps.len(),
                            flags,
                            out.as_mut_ptr(),
                        )
                    },
                    "bms_frame_compute_features",
                );
                if st == BmsStatus::Ok {
                    // SAFETY: written on success.
                    let f = unsafe { out.assume_init() };
                    assert!(f.cell_v_max_idx < cells.len() as i64);
                    assert!(f.cell_v_min_idx < cells.len() as i64);
                    if !f.cell_v_max.is_nan() && !f.cell_v_min.is_nan() {
                        assert!(f.cell_v_min <= f.cell_v_max);
                    }
                }
            }
            6 => predict(model(), &mut s, true),
            7 => {
                let default = s.byte() % 4 == 0;
                let fresh = new_monitor(&mut s, default);
                if !fresh.is_null() {
                    // SAFETY: a live monitor, freed once.
                    unsafe { bms_monitor_free(mon) };
                    mon = fresh;
                    (last_ms, floor_ms) = (None, None);
                }
            }
            8 => {
                let len = usize::from(s.byte()) + 1;
                let mut out = BmsFrameFeatures {
                    cell_v_max: 0.0,
                    cell_v_min: 0.0,
                    cell_v_spread: 0.0,
                    cell_v_mean: 0.0,
                    cell_v_std: 0.0,
                    cell_v_max_idx: 0,
                    cell_v_min_idx: 0,
                    temp_max: 0.0,
                    temp_min: 0.0,
                    temp_delta: 0.0,
                    temp_mean: 0.0,
                    soc_deviation: 0.0,
                    soc_bias: 0.0,
                    consistency_alarm: false,
                };
                let temps = [25.0f64];
                // SAFETY: NULL buffers are checked before use (bms.h).
                unsafe {
                    let st = check(
                        bms_frame_compute_features(
                            0,
                            0.1,
                            50.0,
                            ptr::null(),
                            len,
                            temps.as_ptr(),
                            1,
                            -1,
                            &mut out,
                        ),
                        "bms_frame_compute_features(NULL)",
                    );
                    assert_eq!(st, BmsStatus::NullPointer);
                    let st = check(
                        bms_monitor_push_frame(
                            mon,
                            0,
                            0.0,
                            0.0,
                            0.0,
                            ptr::null(),
                            len,
                            temps.as_ptr(),
                            1,
                            -1,
                        ),
                        "bms_monitor_push_frame(NULL)",
                    );
                    assert_eq!(st, BmsStatus::NullPointer);
                    let mut p = 0f32;
                    let st = check(
                        bms_model_predict(model(), ptr::null(), len, 1, &mut p, 1),
                        "bms_model_predict(NULL)",
                    );
                    assert_eq!(st, BmsStatus::NullPointer);
                }
            }
            10 => decode(dec, mon, &mut s),
            _ => {
                // The rest of the script is a model.
                let bytes = std::mem::take(&mut s.0);
                let mut m = ptr::null_mut();
                // SAFETY: a buffer of the length passed, a writable out-pointer.
                let st = check(
                    unsafe { bms_model_load_bytes(bytes.as_ptr(), bytes.len(), &mut m) },
                    "bms_model_load_bytes",
                );
                if st == BmsStatus::Ok {
                    let mut inner = Script(&[1, 2, 4, 9, 9, 9, 9]);
                    predict(m, &mut inner, false);
                    // SAFETY: a live model, freed once.
                    unsafe { bms_model_free(m) };
                } else {
                    assert!(m.is_null(), "wrote on failure");
                }
            }
        }
    }
    // SAFETY: a live monitor (or NULL) and decoder, each freed once.
    unsafe {
        bms_monitor_free(mon);
        bms_gbt32960_decoder_free(dec);
    }
});
