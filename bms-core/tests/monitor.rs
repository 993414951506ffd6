//! The streaming monitor against the batch pipeline: simulated frames pushed one at a time
//! give bit for bit the daily rows of `daily::aggregate` (`bms daily`), the windows of
//! `windows` (`bms windows`) and the probabilities of `Model::predict` on them
//! (`bms predict`); every error leaves the monitor as it was.

use std::path::PathBuf;
use std::sync::Arc;

use bms_core::daily::{DailyConfig, DailyRow, aggregate, day_of_date};
use bms_core::simulate::{SimConfig, for_each_frame};
use bms_core::{
    BmsError, DailyTable, Frame, FrameRef, Frames, Model, Monitor, MonitorConfig, UtcOffset,
    windows,
};

fn model(name: &str) -> Arc<Model> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models")
        .join(name);
    Arc::new(Model::load(path).unwrap())
}

fn vehicle_frames(config: &SimConfig, index: usize) -> Vec<Frame> {
    let mut frames = Vec::new();
    for_each_frame(config, index, |f| {
        frames.push(f.to_owned());
        Ok(())
    })
    .unwrap();
    frames
}

fn bits(values: &[f64]) -> Vec<u64> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// A closed day equals the batch row bit for bit (NaN bits included: both come from the
/// same accumulator).
fn assert_day_eq(mon: &Monitor, age: usize, want: &DailyRow) {
    let got = mon.day(age).expect("held day");
    assert_eq!(got.date(), want.date);
    assert_eq!(got.day(), day_of_date(want.date));
    assert_eq!(bits(got.values()), bits(&want.values), "{}", want.date);
    assert_eq!(got.label().to_bits(), want.label.to_bits(), "{}", want.date);
    assert_eq!(&got.to_row(&want.vin), want);
}

/// What the streaming comparison covered.
#[derive(Debug, Default)]
struct Checked {
    rows: usize,
    windows: usize,
    alarms: usize,
    dropped: u64,
}

/// Streams every vehicle of `sim` through a monitor and compares with the batch pipeline
/// run on the same frames with `daily`.
fn stream_equals_batch(sim: &SimConfig, daily: &DailyConfig, model: &Arc<Model>) -> Checked {
    let spec = model.contract().spec.clone();
    let threshold = model.contract().threshold;
    let mut checked = Checked::default();
    for v in 0..sim.vehicles {
        let frames = vehicle_frames(sim, v);
        let vin = frames[0].vin.clone();
        let mut columnar = Frames::new();
        for (i, f) in frames.iter().enumerate() {
            columnar.push(f.as_ref(), i as u64 + 2);
        }
        let rows = aggregate(&columnar, daily, None).unwrap().rows;
        let batch = windows(&DailyTable { rows: rows.clone() }, &spec).unwrap();
        let probs = model.predict(batch.x.view()).unwrap();
        let window_of = |day: i64| {
            batch
                .keys
                .iter()
                .position(|k| k.vin == vin && day_of_date(k.date) == day)
        };

        let mut mon = Monitor::new(Arc::clone(model), daily.clone()).unwrap();
        let mut window = vec![f32::NAN; mon.width()];
        let mut closed_before = 0u64;
        let mut scored = 0;
        let mut check_new_days = |mon: &Monitor, checked: &mut Checked| {
            let closed = mon.days_closed();
            let new = (closed - closed_before) as usize;
            let held = new.min(mon.days_held());
            for age in 0..held {
                assert_day_eq(mon, age, &rows[closed as usize - 1 - age]);
            }
            checked.rows += held;
            checked.dropped += (new - held) as u64;
            closed_before = closed;
            new > 0
        };
        for f in &frames {
            mon.push_frame(&f.as_ref()).unwrap();
            if !check_new_days(&mon, &mut checked) {
                continue;
            }
            let day = mon.current_day().unwrap();
            if mon.days_closed() < spec.context as u64 {
                assert!(!mon.is_ready());
                assert!(matches!(
                    mon.window_into(&mut window),
                    Err(BmsError::NotReady { .. })
                ));
                assert!(matches!(mon.predict(), Err(BmsError::NotReady { .. })));
                assert!(window_of(day).is_none(), "batch has a window for day {day}");
                continue;
            }
            let i = window_of(day).expect("a batch window for the open day");
            mon.window_into(&mut window).unwrap();
            let want = batch.x.row(i);
            assert_eq!(
                window.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                "vehicle {v} day {day}: window"
            );
            let p = mon.predict().unwrap();
            assert_eq!(p.to_bits(), probs[i].to_bits(), "vehicle {v} day {day}");
            checked.windows += 1;
            checked.alarms += usize::from(p >= threshold);
            scored += 1;
        }
        // Close the last day by moving the clock to the next midnight.
        let last_day = day_of_date(rows.last().unwrap().date);
        let midnight = (last_day + 1) * 86_400_000 - i64::from(daily.utc_offset.seconds()) * 1000;
        mon.advance_to(midnight).unwrap();
        check_new_days(&mon, &mut checked);
        assert_eq!(mon.days_closed(), rows.len() as u64, "vehicle {v}");
        assert_eq!(mon.current_day(), Some(last_day + 1));
        // The monitor scored exactly the batch windows dated on days with frames.
        let on_frame_days = batch
            .keys
            .iter()
            .filter(|k| rows.iter().any(|r| r.date == k.date && r.values[10] > 0.0))
            .count();
        assert_eq!(scored, on_frame_days, "vehicle {v}");
    }
    checked
}

#[test]
fn streaming_equals_daily_windows_and_predict() {
    let sim = SimConfig {
        vehicles: 5,
        days: 60,
        seed: 11,
        interval_ms: 60_000,
        weak_fraction: 0.5,
        ..SimConfig::default()
    };
    let model = model("consistency-ref14x6.onnx");
    let c = stream_equals_batch(&sim, &sim.daily_config(), &model);
    assert!(c.rows > 5 * 50, "{c:?}");
    assert!(c.windows > 5 * 20, "{c:?}");
    assert!(c.alarms > 0, "some windows alarm: {c:?}");
}

#[test]
fn streaming_equals_batch_for_the_extended_model_in_beijing_time() {
    let sim = SimConfig {
        vehicles: 3,
        days: 45,
        seed: 4,
        interval_ms: 60_000,
        weak_fraction: 0.5,
        parked_fraction: 0.6,
        ..SimConfig::default()
    };
    let model = model("consistency-ext.onnx");
    let spec = &model.contract().spec;
    assert_ne!(spec.features, bms_core::WindowSpec::default().features);
    let daily = MonitorConfig {
        utc_offset: UtcOffset::BEIJING,
        ..sim.daily_config()
    };
    let c = stream_equals_batch(&sim, &daily, &model);
    assert!(c.rows > 3 * 35, "{c:?}");
    assert!(c.windows > 3 * 5, "{c:?}");
}

fn frame_at<'a>(t: i64, cells: &'a [f64], temps: &'a [f64]) -> FrameRef<'a> {
    FrameRef {
        vin: "",
        timestamp_ms: t,
        pack_voltage: 300.0,
        pack_current: 10.0,
        soc: 50.0,
        cell_voltages: cells,
        temperatures: temps,
        alarm_flags: Some(0),
    }
}

/// A gap longer than the ring: the closed empty days are counted, only C are held, and the
/// window (all empty days: the fill everywhere) is the batch window of the later day.
#[test]
fn long_gaps_close_empty_days_like_the_batch_table() {
    let model = model("consistency-ref14x6.onnx");
    let mut mon = Monitor::new(Arc::clone(&model), MonitorConfig::default()).unwrap();
    let (cells, temps) = ([3.7; 8], [25.0; 2]);
    let t0 = 1_700_000_000_000;
    let later = t0 + 1000 * 86_400_000;
    let mut columnar = Frames::new();
    for t in [t0, later] {
        let mut f = frame_at(t, &cells, &temps);
        mon.push_frame(&f).unwrap();
        f.vin = "V";
        columnar.push(f, 1);
    }
    assert_eq!(mon.days_closed(), 1000);
    assert_eq!(mon.days_held(), 14);
    assert_eq!(mon.current_day(), Some(t0 / 86_400_000 + 1000));
    let newest = mon.day(0).unwrap();
    assert_eq!(newest.day(), t0 / 86_400_000 + 999);
    assert_eq!(newest.get(bms_core::DailyColumn::Frames), 0.0);
    assert!(newest.label().is_nan());
    assert!(mon.day(14).is_none());

    let rows = aggregate(&columnar, &DailyConfig::default(), None)
        .unwrap()
        .rows;
    assert_eq!(rows.len(), 1001);
    for age in 0..14 {
        assert_day_eq(&mon, age, &rows[999 - age]);
    }
    let batch = windows(&DailyTable { rows }, &model.contract().spec).unwrap();
    let last = batch.len() - 1;
    let mut window = vec![0.0; 84];
    mon.window_into(&mut window).unwrap();
    assert!(window.iter().all(|&x| x == -1.0));
    assert_eq!(window.as_slice(), batch.x.row(last).as_slice().unwrap());
    let want = model
        .predict(batch.x.slice(ndarray::s![last.., ..]))
        .unwrap();
    assert_eq!(mon.predict().unwrap().to_bits(), want[0].to_bits());
}

/// Everything observable about a monitor, bit for bit.
#[derive(Debug, PartialEq)]
struct Snapshot {
    held: usize,
    closed: u64,
    current: Option<i64>,
    days: Vec<(i64, Vec<u64>, u64)>,
    window: Option<Vec<u32>>,
}

fn snapshot(mon: &mut Monitor) -> Snapshot {
    let mut window = vec![0f32; mon.width()];
    let window = mon
        .window_into(&mut window)
        .ok()
        .map(|()| window.iter().map(|x| x.to_bits()).collect());
    Snapshot {
        held: mon.days_held(),
        closed: mon.days_closed(),
        current: mon.current_day(),
        days: (0..mon.days_held())
            .map(|a| {
                let d = mon.day(a).unwrap();
                (d.day(), bits(d.values()), d.label().to_bits())
            })
            .collect(),
        window,
    }
}

#[test]
fn bad_frames_are_errors_that_change_nothing() {
    let sim = SimConfig {
        vehicles: 1,
        days: 30,
        seed: 3,
        interval_ms: 120_000,
        parked_fraction: 0.0,
        ..SimConfig::default()
    };
    let frames = vehicle_frames(&sim, 0);
    let model = model("consistency-ref14x6.onnx");
    let mut mon = Monitor::new(Arc::clone(&model), sim.daily_config()).unwrap();
    let mut clean = mon.clone();
    let half = frames.len() * 2 / 3;
    for f in &frames[..half] {
        mon.push_frame(&f.as_ref()).unwrap();
        clean.push_frame(&f.as_ref()).unwrap();
    }
    let before = snapshot(&mut mon);
    assert!(before.window.is_some(), "enough days for a window");
    let last = &frames[half - 1];

    let mut older = frames[half - 2].clone();
    older.cell_voltages[0] += 0.5;
    let e = mon.push_frame(&older.as_ref()).unwrap_err();
    assert!(
        matches!(e, BmsError::TimestampTooOld { timestamp_ms, latest_ms, advanced: false }
            if timestamp_ms == older.timestamp_ms && latest_ms == last.timestamp_ms),
        "{e:?}"
    );
    assert!(e.to_string().contains("older than the latest frame"), "{e}");

    let mut dup = last.clone();
    dup.pack_voltage += 10.0;
    let e = mon.push_frame(&dup.as_ref()).unwrap_err();
    assert!(
        matches!(e, BmsError::DuplicateTimestamp { timestamp_ms } if timestamp_ms == last.timestamp_ms),
        "{e:?}"
    );
    assert!(e.to_string().contains("already pushed"), "{e}");

    let mut ancient = frames[0].clone();
    ancient.timestamp_ms = -86_400_000 * 400;
    assert!(matches!(
        mon.push_frame(&ancient.as_ref()),
        Err(BmsError::TimestampTooOld { .. })
    ));
    assert!(matches!(
        mon.advance_to(last.timestamp_ms - 1),
        Err(BmsError::TimestampTooOld { .. })
    ));

    let mut no_cells = frames[half].clone();
    no_cells.cell_voltages.clear();
    let e = mon.push_frame(&no_cells.as_ref()).unwrap_err();
    assert!(matches!(e, BmsError::Invalid { .. }), "{e:?}");
    assert!(e.to_string().contains("no cell voltages"), "{e}");
    let mut no_temps = frames[half].clone();
    no_temps.temperatures.clear();
    let e = mon.push_frame(&no_temps.as_ref()).unwrap_err();
    assert!(e.to_string().contains("no temperatures"), "{e}");

    let mut beyond = frames[half].clone();
    beyond.timestamp_ms = i64::MAX;
    let e = mon.push_frame(&beyond.as_ref()).unwrap_err();
    assert!(matches!(e, BmsError::Invalid { .. }), "{e:?}");
    assert!(e.to_string().contains("calendar"), "{e}");
    assert!(matches!(
        mon.advance_to(i64::MAX),
        Err(BmsError::Invalid { .. })
    ));

    // A window buffer of the wrong length is an error naming both lengths; nothing is
    // written.
    let mut short = vec![7f32; mon.width() - 1];
    let e = mon.window_into(&mut short).unwrap_err();
    assert!(
        matches!(
            e,
            BmsError::Shape {
                expected: 84,
                found: 83,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(short.iter().all(|&x| x == 7.0));
    assert!(mon.window_into(&mut vec![0f32; 85]).is_err());

    assert_eq!(
        snapshot(&mut mon),
        before,
        "rejected input changed the monitor"
    );
    // The rest of the stream gives exactly what a monitor that never saw them gives.
    for f in &frames[half..] {
        mon.push_frame(&f.as_ref()).unwrap();
        clean.push_frame(&f.as_ref()).unwrap();
    }
    let after = snapshot(&mut mon);
    assert_eq!(after, snapshot(&mut clean));
    assert!(after.closed > before.closed);
    assert_eq!(mon.predict().unwrap(), clean.predict().unwrap());
}

#[test]
fn advance_to_closes_days_and_sets_a_floor() {
    let model = model("consistency-ref14x6.onnx");
    let mut mon = Monitor::new(model, MonitorConfig::default()).unwrap();
    let (cells, temps) = ([3.7; 4], [25.0]);
    let day = 19_700i64;
    let t = day * 86_400_000 + 3_600_000;
    // Before the first frame: only a floor.
    mon.advance_to(t).unwrap();
    assert_eq!((mon.current_day(), mon.days_closed()), (None, 0));
    assert!(matches!(
        mon.push_frame(&frame_at(t - 1, &cells, &temps)),
        Err(BmsError::TimestampTooOld { advanced: true, .. })
    ));
    let e = mon
        .push_frame(&frame_at(t - 1, &cells, &temps))
        .unwrap_err();
    assert!(e.to_string().contains("advanced to"), "{e}");
    // A frame at the floor itself is fine.
    mon.push_frame(&frame_at(t, &cells, &temps)).unwrap();
    assert_eq!(mon.current_day(), Some(day));
    // Later the same day: nothing closes; three days later: the day and two empty days.
    mon.advance_to(t + 1000).unwrap();
    assert_eq!(mon.days_closed(), 0);
    mon.advance_to((day + 3) * 86_400_000).unwrap();
    assert_eq!((mon.current_day(), mon.days_closed()), (Some(day + 3), 3));
    assert_eq!(mon.day(2).unwrap().get(bms_core::DailyColumn::Frames), 1.0);
    assert_eq!(mon.day(2).unwrap().label(), 0.0);
    assert_eq!(mon.day(0).unwrap().get(bms_core::DailyColumn::Frames), 0.0);
    let e = mon.window_into(&mut vec![0.0; 84]).unwrap_err();
    assert!(
        e.to_string().contains("3 of the model's 14 days closed"),
        "{e}"
    );
}

#[test]
fn configurations_are_checked() {
    let model = model("consistency-ref14x6.onnx");
    let mut config = MonitorConfig::default();
    config.features.alarm_spread_v = f64::NAN;
    let e = Monitor::new(Arc::clone(&model), config).unwrap_err();
    assert!(matches!(e, BmsError::Invalid { .. }), "{e:?}");
    let mon = Monitor::new(Arc::clone(&model), MonitorConfig::default()).unwrap();
    assert_eq!((mon.context(), mon.width()), (14, 84));
    assert!(Arc::ptr_eq(mon.model(), &model));
}
