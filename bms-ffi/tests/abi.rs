//! The C ABI called from Rust exactly as C calls it (raw pointers, status codes), checked
//! against the Rust pipeline: the monitor gives the batch pipeline's daily rows and
//! probabilities, error paths return their documented status and leave state untouched.

mod common;

use std::ffi::{CStr, CString};
use std::ptr;

use bms_core::daily::{DailyRow, VehicleAggregator, day_of_date};
use bms_core::features::frame_features;
use bms_core::simulate::SimConfig;
use bms_core::{DailyTable, Model, windows};
use bms_ffi::*;
use common::{last_error, load_model, model_path, new_monitor, push, vehicle_frames};

fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn assert_row_eq(got: &BmsDailyRow, want: &DailyRow) {
    let ours = [
        got.total_voltage,
        got.total_current,
        got.cell_max_voltage,
        got.cell_min_voltage,
        got.max_temperature,
        got.min_temperature,
        got.spread_mean,
        got.spread_max,
        got.temp_delta_max,
        got.soc_deviation_mean,
        got.frames,
    ];
    assert_eq!(got.day, day_of_date(want.date), "day of {want:?}");
    for (i, (&a, &b)) in ours.iter().zip(&want.values).enumerate() {
        assert!(
            same(a, b),
            "{} column {i}: monitor {a} vs batch {b}",
            want.date
        );
    }
    assert!(same(got.label, want.label), "{} label", want.date);
}

/// Everything observable about a monitor.
#[derive(Debug, PartialEq)]
struct Snapshot {
    days: usize,
    closed: u64,
    current: Option<i64>,
    rows: Vec<[u64; 13]>,
    prob: Option<u32>,
}

fn snapshot(mon: *mut BmsMonitor) -> Snapshot {
    unsafe {
        let mut days = 0;
        assert_eq!(bms_monitor_days(mon, &mut days), BmsStatus::Ok);
        let mut closed = 0;
        assert_eq!(bms_monitor_days_closed(mon, &mut closed), BmsStatus::Ok);
        let mut day = 0;
        let current = (bms_monitor_current_day(mon, &mut day) == BmsStatus::Ok).then_some(day);
        let rows = (0..days)
            .map(|age| {
                let mut r = std::mem::zeroed::<BmsDailyRow>();
                assert_eq!(bms_monitor_day(mon, age, &mut r), BmsStatus::Ok);
                [
                    r.day as u64,
                    r.total_voltage.to_bits(),
                    r.total_current.to_bits(),
                    r.cell_max_voltage.to_bits(),
                    r.cell_min_voltage.to_bits(),
                    r.max_temperature.to_bits(),
                    r.min_temperature.to_bits(),
                    r.spread_mean.to_bits(),
                    r.spread_max.to_bits(),
                    r.temp_delta_max.to_bits(),
                    r.soc_deviation_mean.to_bits(),
                    r.frames.to_bits(),
                    r.label.to_bits(),
                ]
            })
            .collect();
        let mut p = 0f32;
        let prob = (bms_monitor_predict(mon, &mut p) == BmsStatus::Ok).then_some(p.to_bits());
        Snapshot {
            days,
            closed,
            current,
            rows,
            prob,
        }
    }
}

#[test]
fn version_and_contract_getters() {
    let v = unsafe { CStr::from_ptr(bms_version()) }.to_str().unwrap();
    assert_eq!(v, env!("CARGO_PKG_VERSION"));
    let m = load_model();
    let rust = Model::load(model_path().to_str().unwrap()).unwrap();
    let c = rust.contract();
    unsafe {
        let (mut ctx, mut hor, mut width, mut thr) = (0usize, 0usize, 0usize, 0f32);
        let mut id = ptr::null();
        assert_eq!(bms_model_context(m, &mut ctx), BmsStatus::Ok);
        assert_eq!(bms_model_horizon(m, &mut hor), BmsStatus::Ok);
        assert_eq!(bms_model_width(m, &mut width), BmsStatus::Ok);
        assert_eq!(bms_model_threshold(m, &mut thr), BmsStatus::Ok);
        assert_eq!(bms_model_id(m, &mut id), BmsStatus::Ok);
        assert_eq!(
            (ctx, hor, width, thr),
            (
                c.spec.context,
                c.spec.horizon,
                rust.input_width(),
                c.threshold
            )
        );
        assert_eq!(ctx, 14);
        assert_eq!(width, 84);
        assert_eq!(CStr::from_ptr(id).to_str().unwrap(), c.model_id);
        bms_model_free(m);
    }
}

#[test]
fn load_from_memory_and_batch_predict_match_the_rust_model() {
    let bytes = std::fs::read(model_path().to_str().unwrap()).unwrap();
    let rust = Model::from_bytes(&bytes).unwrap();
    let mut m = ptr::null_mut();
    unsafe {
        assert_eq!(
            bms_model_load_bytes(bytes.as_ptr(), bytes.len(), &mut m),
            BmsStatus::Ok
        );
    }
    let rows = 37;
    let width = rust.input_width();
    let x: Vec<f32> = (0..rows * width)
        .map(|i| match i % 7 {
            0 => f32::NAN,
            k => 3.0 + (i % 13) as f32 * 0.01 * k as f32,
        })
        .collect();
    let want = rust
        .predict(ndarray::ArrayView2::from_shape((rows, width), &x).unwrap())
        .unwrap();
    let mut probs = vec![-1f32; rows + 3];
    unsafe {
        let s = bms_model_predict(
            m,
            x.as_ptr(),
            x.len(),
            rows,
            probs.as_mut_ptr(),
            probs.len(),
        );
        assert_eq!(s, BmsStatus::Ok, "{}", last_error());
    }
    assert_eq!(&probs[..rows], want.as_slice().unwrap());
    assert!(
        probs[rows..].iter().all(|&p| p == -1.0),
        "wrote past n_rows"
    );
    unsafe { bms_model_free(m) };
}

#[test]
fn model_errors_have_statuses_and_messages() {
    unsafe {
        let mut m = ptr::null_mut();
        // Bad bytes, empty bytes, NULL with a length, NULL out, missing file, NULL path.
        let junk = b"this is not an onnx model at all";
        assert_eq!(
            bms_model_load_bytes(junk.as_ptr(), junk.len(), &mut m),
            BmsStatus::Model
        );
        assert!(m.is_null(), "out written on failure");
        assert!(
            last_error().contains("not an ONNX model"),
            "{}",
            last_error()
        );
        assert_eq!(
            bms_model_load_bytes(junk.as_ptr(), 0, &mut m),
            BmsStatus::Model
        );
        assert_eq!(
            bms_model_load_bytes(ptr::null(), 10, &mut m),
            BmsStatus::NullPointer
        );
        assert_eq!(
            bms_model_load_bytes(junk.as_ptr(), junk.len(), ptr::null_mut()),
            BmsStatus::NullPointer
        );
        let missing = CString::new("/nonexistent/model.onnx").unwrap();
        assert_eq!(bms_model_load(missing.as_ptr(), &mut m), BmsStatus::Io);
        assert!(last_error().contains("/nonexistent/model.onnx"));
        assert_eq!(bms_model_load(ptr::null(), &mut m), BmsStatus::NullPointer);
        assert!(m.is_null());
        // Truncated model.
        let bytes = std::fs::read(model_path().to_str().unwrap()).unwrap();
        assert_eq!(
            bms_model_load_bytes(bytes.as_ptr(), bytes.len() / 2, &mut m),
            BmsStatus::Model
        );
        assert!(m.is_null());

        // Getters and predict on NULL or with wrong lengths.
        let mut n = 99usize;
        assert_eq!(bms_model_width(ptr::null(), &mut n), BmsStatus::NullPointer);
        assert_eq!(n, 99);
        let m = load_model();
        assert_eq!(bms_model_width(m, ptr::null_mut()), BmsStatus::NullPointer);
        let x = vec![0f32; 84 * 2];
        let mut p = [7f32; 2];
        assert_eq!(
            bms_model_predict(m, x.as_ptr(), x.len() - 1, 2, p.as_mut_ptr(), 2),
            BmsStatus::LengthMismatch
        );
        assert!(last_error().contains("x_len 167"), "{}", last_error());
        assert_eq!(
            bms_model_predict(m, x.as_ptr(), x.len(), 2, p.as_mut_ptr(), 1),
            BmsStatus::LengthMismatch
        );
        assert_eq!(
            bms_model_predict(m, x.as_ptr(), x.len(), usize::MAX, p.as_mut_ptr(), 2),
            BmsStatus::LengthMismatch
        );
        assert_eq!(
            bms_model_predict(m, ptr::null(), x.len(), 2, p.as_mut_ptr(), 2),
            BmsStatus::NullPointer
        );
        assert_eq!(
            bms_model_predict(m, x.as_ptr(), x.len(), 2, ptr::null_mut(), 2),
            BmsStatus::NullPointer
        );
        assert_eq!(p, [7.0; 2], "out written on failure");
        assert_eq!(
            bms_model_predict(m, ptr::null(), 0, 0, ptr::null_mut(), 0),
            BmsStatus::Ok
        );
        bms_model_free(m);
        bms_model_free(ptr::null_mut());
        bms_monitor_free(ptr::null_mut());
    }
}

#[test]
fn frame_features_match_the_core() {
    let config = SimConfig {
        vehicles: 1,
        days: 3,
        interval_ms: 60_000,
        ..SimConfig::default()
    };
    let frames = vehicle_frames(&config, 0);
    assert!(frames.len() > 50);
    let core = config.daily_config().features;
    for (i, f) in frames.iter().enumerate().step_by(7) {
        // Every other frame without flags (the spread rule decides the alarm).
        let mut f = f.clone();
        if i % 2 == 0 {
            f.alarm_flags = None;
            f.cell_voltages[3] = f64::NAN;
        }
        let want = frame_features(&f.as_ref(), &core);
        let mut got = std::mem::MaybeUninit::<BmsFrameFeatures>::uninit();
        let s = unsafe {
            bms_frame_compute_features(
                BmsChemistry::Nmc as u32,
                core.alarm_spread_v,
                f.soc,
                f.cell_voltages.as_ptr(),
                f.cell_voltages.len(),
                f.temperatures.as_ptr(),
                f.temperatures.len(),
                f.alarm_flags.map_or(-1, i64::from),
                got.as_mut_ptr(),
            )
        };
        assert_eq!(s, BmsStatus::Ok);
        let got = unsafe { got.assume_init() };
        let pairs = [
            (got.cell_v_max, want.cell_v_max),
            (got.cell_v_min, want.cell_v_min),
            (got.cell_v_spread, want.cell_v_spread),
            (got.cell_v_mean, want.cell_v_mean),
            (got.cell_v_std, want.cell_v_std),
            (got.temp_max, want.temp_max),
            (got.temp_min, want.temp_min),
            (got.temp_delta, want.temp_delta),
            (got.temp_mean, want.temp_mean),
            (got.soc_deviation, want.soc_deviation),
            (got.soc_bias, want.soc_bias),
        ];
        for (a, b) in pairs {
            assert!(same(a, b), "frame {i}: {a} vs {b}");
        }
        assert_eq!(got.cell_v_max_idx, want.cell_v_max_idx.unwrap() as i64);
        assert_eq!(got.cell_v_min_idx, want.cell_v_min_idx.unwrap() as i64);
        assert_eq!(got.consistency_alarm, want.consistency_alarm);
    }
    // All-NaN cells: NaN statistics, index -1. Errors: zero cells, NULL, bad chemistry,
    // flags out of range.
    let cells = [f64::NAN; 4];
    let temps = [20.0];
    unsafe {
        let mut out = std::mem::zeroed::<BmsFrameFeatures>();
        let call = |chem: u32, cells: *const f64, n: usize, flags: i64, out: *mut _| {
            bms_frame_compute_features(chem, 0.1, 50.0, cells, n, temps.as_ptr(), 1, flags, out)
        };
        assert_eq!(call(0, cells.as_ptr(), 4, -1, &mut out), BmsStatus::Ok);
        assert!(out.cell_v_max.is_nan() && out.cell_v_spread.is_nan());
        assert_eq!((out.cell_v_max_idx, out.cell_v_min_idx), (-1, -1));
        assert!(!out.consistency_alarm);
        assert_eq!(
            call(0, cells.as_ptr(), 0, -1, &mut out),
            BmsStatus::InvalidArgument
        );
        assert!(last_error().contains("n_cells is 0"), "{}", last_error());
        assert_eq!(
            call(0, ptr::null(), 4, -1, &mut out),
            BmsStatus::NullPointer
        );
        assert_eq!(
            call(7, cells.as_ptr(), 4, -1, &mut out),
            BmsStatus::InvalidArgument
        );
        assert!(last_error().contains("chemistry 7"));
        assert_eq!(
            call(0, cells.as_ptr(), 4, 1 << 40, &mut out),
            BmsStatus::InvalidArgument
        );
        assert_eq!(call(0, cells.as_ptr(), 4, 0x400, &mut out), BmsStatus::Ok);
        assert!(out.consistency_alarm);
        assert_eq!(
            call(0, cells.as_ptr(), 4, -1, ptr::null_mut()),
            BmsStatus::NullPointer
        );
    }
}

/// The equivalence of the issue: every vehicle of a small simulated fleet streamed through
/// the monitor gives the batch pipeline's daily rows (VehicleAggregator, as `bms daily`)
/// and, each time a day opens, the probability `windows` + `Model::predict` give the
/// window dated that day.
#[test]
fn monitor_streaming_equals_the_batch_pipeline() {
    let config = SimConfig {
        vehicles: 6,
        days: 60,
        seed: 11,
        interval_ms: 60_000,
        weak_fraction: 0.5,
        ..SimConfig::default()
    };
    let model_c = load_model();
    let rust = Model::load(model_path().to_str().unwrap()).unwrap();
    let spec = rust.contract().spec.clone();
    let (mut rows_checked, mut probs_checked, mut alarm_days, mut dropped) = (0, 0, 0, 0u64);
    let mut high = 0;
    for v in 0..config.vehicles {
        let frames = vehicle_frames(&config, v);
        // Batch: the daily aggregation of `bms daily`, then windows and the model.
        let mut agg = VehicleAggregator::new(&frames[0].vin, config.daily_config());
        for (i, f) in frames.iter().enumerate() {
            agg.push(&f.as_ref(), i as u64 + 1).unwrap();
        }
        let rows = agg.finish();
        let batch = windows(&DailyTable { rows: rows.clone() }, &spec).unwrap();
        let probs = rust.predict(batch.x.view()).unwrap();
        let prob_of = |day: i64| {
            batch
                .keys
                .iter()
                .position(|k| day_of_date(k.date) == day)
                .map(|i| probs[i])
        };
        alarm_days += rows.iter().filter(|r| r.label == 1.0).count();

        // Streaming through the C ABI.
        let mon = new_monitor(model_c);
        let mut closed_before = 0u64;
        let (mut rows_v, mut dropped_v, mut probs_v) = (0usize, 0u64, 0usize);
        let check_new_days = |mon, closed_before: &mut u64, rows_v: &mut usize| {
            let mut closed = 0u64;
            let mut held = 0usize;
            unsafe {
                assert_eq!(bms_monitor_days_closed(mon, &mut closed), BmsStatus::Ok);
                assert_eq!(bms_monitor_days(mon, &mut held), BmsStatus::Ok);
            }
            let new = (closed - *closed_before) as usize;
            for age in 0..new.min(held) {
                let mut r = unsafe { std::mem::zeroed::<BmsDailyRow>() };
                assert_eq!(unsafe { bms_monitor_day(mon, age, &mut r) }, BmsStatus::Ok);
                assert_row_eq(&r, &rows[closed as usize - 1 - age]);
                *rows_v += 1;
            }
            *closed_before = closed;
            (new > 0, (new - new.min(held)) as u64)
        };
        for f in &frames {
            assert_eq!(push(mon, f), BmsStatus::Ok, "{}", last_error());
            let (opened, lost) = check_new_days(mon, &mut closed_before, &mut rows_v);
            dropped_v += lost;
            if !opened {
                continue;
            }
            let mut day = 0;
            let mut p = f32::NAN;
            unsafe {
                assert_eq!(bms_monitor_current_day(mon, &mut day), BmsStatus::Ok);
                let s = bms_monitor_predict(mon, &mut p);
                if closed_before < spec.context as u64 {
                    assert_eq!(s, BmsStatus::NotReady);
                    assert!(p.is_nan(), "prob written although not ready");
                    assert!(prob_of(day).is_none(), "batch has a window for day {day}");
                    continue;
                }
                assert_eq!(s, BmsStatus::Ok, "{}", last_error());
            }
            let want = prob_of(day).expect("batch window for the open day");
            assert_eq!(p.to_bits(), want.to_bits(), "vehicle {v} day {day}");
            probs_v += 1;
            high += usize::from(p >= rust.contract().threshold);
        }
        // Close the last day by moving the clock to the next midnight.
        let last_day = day_of_date(rows.last().unwrap().date);
        let s = unsafe { bms_monitor_advance_to(mon, (last_day + 1) * 86_400_000) };
        assert_eq!(s, BmsStatus::Ok);
        dropped_v += check_new_days(mon, &mut closed_before, &mut rows_v).1;
        assert_eq!(
            closed_before,
            rows.len() as u64,
            "vehicle {v}: every day closed"
        );
        assert_eq!(rows_v + dropped_v as usize, rows.len());
        // The monitor scored exactly the windows dated on days with frames.
        let scored_days = batch
            .keys
            .iter()
            .filter(|k| rows.iter().any(|r| r.date == k.date && r.values[10] > 0.0))
            .count();
        assert_eq!(probs_v, scored_days, "vehicle {v}");
        unsafe { bms_monitor_free(mon) };
        rows_checked += rows_v;
        probs_checked += probs_v;
        dropped += dropped_v;
    }
    unsafe { bms_model_free(model_c) };
    assert!(
        rows_checked > 6 * 50,
        "rows {rows_checked} (dropped {dropped})"
    );
    assert!(probs_checked > 6 * 20, "probabilities {probs_checked}");
    assert!(alarm_days > 0, "the fleet has alarm days");
    assert!(high > 0, "some windows are above the threshold");
}

#[test]
fn out_of_order_and_duplicate_frames_are_rejected_without_changing_state() {
    let config = SimConfig {
        vehicles: 1,
        days: 30,
        seed: 3,
        interval_ms: 120_000,
        parked_fraction: 0.0,
        ..SimConfig::default()
    };
    let frames = vehicle_frames(&config, 0);
    let model = load_model();
    let mon = new_monitor(model);
    let clean = new_monitor(model);
    let half = frames.len() * 2 / 3;
    for f in &frames[..half] {
        assert_eq!(push(mon, f), BmsStatus::Ok);
        assert_eq!(push(clean, f), BmsStatus::Ok);
    }
    let before = snapshot(mon);
    assert!(
        before.prob.is_some(),
        "enough days for a window: {before:?}"
    );
    let last = &frames[half - 1];
    let mut older = frames[half - 2].clone();
    older.cell_voltages[0] += 0.5;
    assert_eq!(push(mon, &older), BmsStatus::OutOfOrder);
    assert!(last_error().contains("older"), "{}", last_error());
    let mut dup = last.clone();
    dup.pack_voltage += 10.0;
    assert_eq!(push(mon, &dup), BmsStatus::DuplicateTimestamp);
    // A frame weeks in the past, one from before the epoch, and advance_to into the past.
    let mut ancient = frames[0].clone();
    ancient.timestamp_ms = -86_400_000 * 400;
    assert_eq!(push(mon, &ancient), BmsStatus::OutOfOrder);
    assert_eq!(
        unsafe { bms_monitor_advance_to(mon, last.timestamp_ms - 1) },
        BmsStatus::OutOfOrder
    );
    // Wrong lengths and NULLs are rejected the same way.
    let s = unsafe {
        bms_monitor_push_frame(
            mon,
            last.timestamp_ms + 1,
            1.0,
            1.0,
            1.0,
            ptr::null(),
            96,
            last.temperatures.as_ptr(),
            last.temperatures.len(),
            -1,
        )
    };
    assert_eq!(s, BmsStatus::NullPointer);
    let s = unsafe {
        bms_monitor_push_frame(
            mon,
            last.timestamp_ms + 1,
            1.0,
            1.0,
            1.0,
            last.cell_voltages.as_ptr(),
            last.cell_voltages.len(),
            last.temperatures.as_ptr(),
            0,
            -1,
        )
    };
    assert_eq!(s, BmsStatus::InvalidArgument);
    let mut bad_flags = frames[half].clone();
    bad_flags.alarm_flags = None;
    let s = unsafe {
        bms_monitor_push_frame(
            mon,
            bad_flags.timestamp_ms,
            1.0,
            1.0,
            1.0,
            bad_flags.cell_voltages.as_ptr(),
            bad_flags.cell_voltages.len(),
            bad_flags.temperatures.as_ptr(),
            bad_flags.temperatures.len(),
            -2,
        )
    };
    assert_eq!(s, BmsStatus::InvalidArgument);
    assert_eq!(
        unsafe {
            bms_monitor_push_frame(
                ptr::null_mut(),
                0,
                0.0,
                0.0,
                0.0,
                last.cell_voltages.as_ptr(),
                1,
                last.temperatures.as_ptr(),
                1,
                -1,
            )
        },
        BmsStatus::NullPointer
    );
    assert_eq!(snapshot(mon), before, "rejected frames changed the monitor");
    // The rest of the stream gives exactly what a monitor that never saw them gives.
    for f in &frames[half..] {
        assert_eq!(push(mon, f), BmsStatus::Ok);
        assert_eq!(push(clean, f), BmsStatus::Ok);
    }
    let after = snapshot(mon);
    assert_eq!(after, snapshot(clean));
    assert!(after.closed > before.closed);
    unsafe {
        bms_monitor_free(mon);
        bms_monitor_free(clean);
        bms_model_free(model);
    }
}

#[test]
fn monitor_getters_errors_and_long_gaps() {
    let model = load_model();
    let mon = new_monitor(model);
    let cells = [3.7f64; 8];
    let temps = [25.0f64; 2];
    let at = |t: i64| unsafe {
        bms_monitor_push_frame(
            mon,
            t,
            300.0,
            10.0,
            50.0,
            cells.as_ptr(),
            8,
            temps.as_ptr(),
            2,
            0,
        )
    };
    unsafe {
        let mut p = 0.5f32;
        assert_eq!(bms_monitor_predict(mon, &mut p), BmsStatus::NotReady);
        assert_eq!(p, 0.5);
        let mut day = 0i64;
        assert_eq!(bms_monitor_current_day(mon, &mut day), BmsStatus::NotReady);
        let mut r = std::mem::zeroed::<BmsDailyRow>();
        assert_eq!(bms_monitor_day(mon, 0, &mut r), BmsStatus::OutOfRange);
        // One frame, then one 1000 days later: 999 empty days closed, only 14 held, and
        // the window is all empty days (the fill value everywhere).
        let t0 = 1_700_000_000_000;
        assert_eq!(at(t0), BmsStatus::Ok);
        assert_eq!(at(t0 + 1000 * 86_400_000), BmsStatus::Ok);
        let mut closed = 0;
        assert_eq!(bms_monitor_days_closed(mon, &mut closed), BmsStatus::Ok);
        assert_eq!(closed, 1000);
        let mut held = 0;
        assert_eq!(bms_monitor_days(mon, &mut held), BmsStatus::Ok);
        assert_eq!(held, 14);
        assert_eq!(bms_monitor_day(mon, 0, &mut r), BmsStatus::Ok);
        assert_eq!(r.frames, 0.0);
        assert!(r.total_voltage.is_nan() && r.label.is_nan());
        assert_eq!(bms_monitor_current_day(mon, &mut day), BmsStatus::Ok);
        assert_eq!(day, t0 / 86_400_000 + 1000);
        assert_eq!(r.day, day - 1);
        assert_eq!(bms_monitor_day(mon, 14, &mut r), BmsStatus::OutOfRange);
        assert_eq!(bms_monitor_predict(mon, &mut p), BmsStatus::Ok);
        let rust = Model::load(model_path().to_str().unwrap()).unwrap();
        let want = rust
            .predict(ndarray::Array2::from_elem((1, 84), -1.0f32).view())
            .unwrap();
        assert_eq!(p, want[0]);
        // Beyond the calendar.
        assert_eq!(at(i64::MAX), BmsStatus::InvalidArgument);
        assert!(last_error().contains("calendar"), "{}", last_error());
        // NULL handles and outputs.
        assert_eq!(
            bms_monitor_predict(mon, ptr::null_mut()),
            BmsStatus::NullPointer
        );
        assert_eq!(
            bms_monitor_predict(ptr::null_mut(), &mut p),
            BmsStatus::NullPointer
        );
        assert_eq!(
            bms_monitor_days(ptr::null(), &mut held),
            BmsStatus::NullPointer
        );
        let mut m2 = ptr::null_mut();
        assert_eq!(
            bms_monitor_new(ptr::null(), ptr::null(), &mut m2),
            BmsStatus::NullPointer
        );
        let bad = BmsMonitorConfig {
            utc_offset_seconds: 90_000,
            ..bms_monitor_config_default()
        };
        assert_eq!(
            bms_monitor_new(model, &bad, &mut m2),
            BmsStatus::InvalidArgument
        );
        assert!(last_error().contains("UTC offset"), "{}", last_error());
        let bad = BmsMonitorConfig {
            alarm_spread_v: f64::NAN,
            ..bms_monitor_config_default()
        };
        assert_eq!(
            bms_monitor_new(model, &bad, &mut m2),
            BmsStatus::InvalidArgument
        );
        assert!(m2.is_null());
        // The monitor keeps the model alive: free the model first, keep predicting.
        bms_model_free(model);
        assert_eq!(bms_monitor_predict(mon, &mut p), BmsStatus::Ok);
        assert_eq!(p, want[0]);
        bms_monitor_free(mon);
    }
}

#[test]
fn utc_offset_moves_the_day_boundary() {
    let model = load_model();
    let beijing = BmsMonitorConfig {
        utc_offset_seconds: 8 * 3600,
        ..bms_monitor_config_default()
    };
    let mut mon = ptr::null_mut();
    unsafe {
        assert_eq!(bms_monitor_new(model, &beijing, &mut mon), BmsStatus::Ok);
    }
    let cells = [3.7f64; 4];
    let temps = [25.0f64];
    // 2024-01-01 15:00 UTC and 17:00 UTC: the same UTC day, but 23:00 and 01:00 in Beijing.
    let t = 1_704_121_200_000;
    for ts in [t, t + 2 * 3_600_000] {
        let s = unsafe {
            bms_monitor_push_frame(
                mon,
                ts,
                1.0,
                1.0,
                1.0,
                cells.as_ptr(),
                4,
                temps.as_ptr(),
                1,
                -1,
            )
        };
        assert_eq!(s, BmsStatus::Ok);
    }
    let (mut closed, mut day) = (0u64, 0i64);
    unsafe {
        assert_eq!(bms_monitor_days_closed(mon, &mut closed), BmsStatus::Ok);
        assert_eq!(bms_monitor_current_day(mon, &mut day), BmsStatus::Ok);
        bms_monitor_free(mon);
        bms_model_free(model);
    }
    assert_eq!(closed, 1);
    assert_eq!(day, t / 86_400_000 + 1);
}

/// A model is shared by threads: concurrent batch predictions through one handle give the
/// single-threaded answer.
#[test]
fn a_model_is_shared_by_threads() {
    let m = load_model() as usize;
    let x: Vec<f32> = (0..84 * 5).map(|i| 3.5 + (i % 11) as f32 * 0.02).collect();
    let mut want = vec![0f32; 5];
    unsafe {
        assert_eq!(
            bms_model_predict(m as *const _, x.as_ptr(), x.len(), 5, want.as_mut_ptr(), 5),
            BmsStatus::Ok
        );
    }
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..50 {
                    let mut p = vec![0f32; 5];
                    let st = unsafe {
                        bms_model_predict(m as *const _, x.as_ptr(), x.len(), 5, p.as_mut_ptr(), 5)
                    };
                    assert_eq!(st, BmsStatus::Ok);
                    assert_eq!(p, want);
                }
            });
        }
    });
    unsafe { bms_model_free(m as *mut _) };
}
