//! Daily aggregation (SPEC §4) with hand-computed expectations.

use bms_core::daily::{DailyColumn as C, UtcOffset, aggregate, date_of_day};
use bms_core::{BmsError, DailyAggregator, DailyConfig, FrameRef, Frames, VehicleAggregator};
use chrono::NaiveDate;

const DAY: i64 = 86_400_000;
const HOUR: i64 = 3_600_000;

fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

/// 2024-01-01T00:00:00Z in ms.
const JAN1: i64 = 1_704_067_200_000;

struct F {
    vin: &'static str,
    ts: i64,
    pv: f64,
    pi: f64,
    cells: Vec<f64>,
    temps: Vec<f64>,
    flags: Option<u32>,
}

fn f(vin: &'static str, ts: i64, cells: &[f64], temps: &[f64]) -> F {
    F {
        vin,
        ts,
        pv: cells.iter().sum(),
        pi: 10.0,
        cells: cells.to_vec(),
        temps: temps.to_vec(),
        flags: None,
    }
}

fn frames(list: &[F]) -> Frames {
    let mut out = Frames::new();
    for (i, x) in list.iter().enumerate() {
        out.push(
            FrameRef {
                vin: x.vin,
                timestamp_ms: x.ts,
                pack_voltage: x.pv,
                pack_current: x.pi,
                soc: 50.0,
                cell_voltages: &x.cells,
                temperatures: &x.temps,
                alarm_flags: x.flags,
            },
            i as u64 + 2,
        );
    }
    out
}

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-12, "{a} != {b}");
}

#[test]
fn means_labels_and_extended_columns() {
    let mut a = f("V1", JAN1 + HOUR, &[3.70, 3.75], &[20.0, 22.0]);
    a.pi = -20.0;
    let mut b = f("V1", JAN1 + 2 * HOUR, &[3.60, 3.80], &[21.0, 25.0]); // spread 0.2 → alarm
    b.pi = 30.0;
    let t = aggregate(&frames(&[a, b]), &DailyConfig::default(), None).unwrap();
    assert_eq!(t.len(), 1);
    let r = &t.rows[0];
    assert_eq!(r.date, d("2024-01-01"));
    close(r.get(C::TotalVoltage), (7.45 + 7.40) / 2.0);
    close(r.get(C::TotalCurrent), 5.0);
    close(r.get(C::CellMaxVoltage), (3.75 + 3.80) / 2.0);
    close(r.get(C::CellMinVoltage), (3.70 + 3.60) / 2.0);
    close(r.get(C::MaxTemperature), 23.5);
    close(r.get(C::MinTemperature), 20.5);
    close(r.get(C::SpreadMean), (0.05 + 0.2) / 2.0);
    close(r.get(C::SpreadMax), 0.2);
    close(r.get(C::TempDeltaMax), 4.0);
    // NMC: 3.70 → 40 %, 3.75 → 50 %, 3.60 → 17.142857…, 3.80 → 57.142857… %
    let soc = |v: f64| bms_core::OcvCurve::nmc().soc_at(v);
    close(
        r.get(C::SocDeviationMean),
        (10.0 + (soc(3.80) - soc(3.60))) / 2.0,
    );
    close(r.get(C::Frames), 2.0);
    assert_eq!(r.label, 1.0);
}

#[test]
fn nan_readings_are_excluded_and_all_nan_frames_do_not_alarm() {
    let mut a = f("V1", JAN1, &[f64::NAN, f64::NAN], &[f64::NAN]);
    a.pv = f64::NAN;
    let b = f("V1", JAN1 + HOUR, &[3.7, 3.72], &[30.0]);
    let t = aggregate(&frames(&[a, b]), &DailyConfig::default(), None).unwrap();
    let r = &t.rows[0];
    close(r.get(C::TotalVoltage), 7.42);
    close(r.get(C::CellMaxVoltage), 3.72);
    close(r.get(C::MaxTemperature), 30.0);
    close(r.get(C::Frames), 2.0);
    assert_eq!(r.label, 0.0);
}

#[test]
fn gaps_become_all_nan_rows_and_output_is_sorted() {
    // Unsorted input, two vehicles, V2 with a three-day gap.
    let list = [
        f("V2", JAN1 + 4 * DAY, &[3.7], &[20.0]),
        f("V1", JAN1, &[3.7], &[20.0]),
        f("V2", JAN1, &[3.7], &[20.0]),
    ];
    let t = aggregate(&frames(&list), &DailyConfig::default(), None).unwrap();
    let keys: Vec<(String, NaiveDate)> = t.rows.iter().map(|r| (r.vin.clone(), r.date)).collect();
    assert_eq!(
        keys,
        vec![
            ("V1".into(), d("2024-01-01")),
            ("V2".into(), d("2024-01-01")),
            ("V2".into(), d("2024-01-02")),
            ("V2".into(), d("2024-01-03")),
            ("V2".into(), d("2024-01-04")),
            ("V2".into(), d("2024-01-05")),
        ]
    );
    for r in &t.rows[2..5] {
        assert!(
            C::ALL
                .iter()
                .filter(|&&c| c != C::Frames)
                .all(|&c| r.get(c).is_nan())
        );
        assert!(r.label.is_nan());
        assert_eq!(r.get(C::Frames), 0.0);
    }
    assert_eq!(t.rows[5].label, 0.0);
}

#[test]
fn day_boundaries_follow_the_utc_offset() {
    // 2024-01-01T17:00Z is 2024-01-02 01:00 in Beijing; 2024-01-01T15:00Z is 23:00 there.
    let list = [
        f("V1", JAN1 + 15 * HOUR, &[3.7], &[20.0]),
        f("V1", JAN1 + 17 * HOUR, &[3.7], &[20.0]),
    ];
    let utc = aggregate(&frames(&list), &DailyConfig::default(), None).unwrap();
    assert_eq!(utc.len(), 1);
    let cfg = DailyConfig {
        utc_offset: "+08:00".parse().unwrap(),
        ..Default::default()
    };
    let bj = aggregate(&frames(&list), &cfg, None).unwrap();
    assert_eq!(
        bj.rows.iter().map(|r| r.date).collect::<Vec<_>>(),
        vec![d("2024-01-01"), d("2024-01-02")]
    );
    // A negative offset moves early-UTC frames to the previous day.
    let cfg = DailyConfig {
        utc_offset: "-05:00".parse().unwrap(),
        ..Default::default()
    };
    let ny = aggregate(
        &frames(&[f("V1", JAN1 + 2 * HOUR, &[3.7], &[1.0])]),
        &cfg,
        None,
    )
    .unwrap();
    assert_eq!(ny.rows[0].date, d("2023-12-31"));
    // Timestamps before the epoch land on the right day too.
    let early = aggregate(
        &frames(&[f("V1", -1, &[3.7], &[1.0])]),
        &DailyConfig::default(),
        None,
    )
    .unwrap();
    assert_eq!(early.rows[0].date, d("1969-12-31"));
}

#[test]
fn utc_offsets_parse_and_print() {
    for (s, secs) in [
        ("+08:00", 28_800),
        ("-0530", -19_800),
        ("+8", 28_800),
        ("UTC", 0),
        ("Z", 0),
    ] {
        assert_eq!(s.parse::<UtcOffset>().unwrap().seconds(), secs, "{s}");
    }
    assert_eq!(UtcOffset::BEIJING.to_string(), "+08:00");
    for bad in [
        "08:00", "+25:00", "+08:75", "east", "", "-+8", "++8", "+-0530", "+08:+5", "+008:00",
        "+8:5",
    ] {
        let e = bad.parse::<UtcOffset>().unwrap_err().to_string();
        assert!(e.contains("UTC offset"), "{bad}: {e}");
    }
}

#[test]
fn duplicate_frames_name_both_lines() {
    let list = [
        f("V1", JAN1, &[3.7], &[20.0]),
        f("V1", JAN1 + HOUR, &[3.7], &[20.0]),
        f("V1", JAN1, &[3.8], &[20.0]),
    ];
    let e = aggregate(
        &frames(&list),
        &DailyConfig::default(),
        Some("x.csv".as_ref()),
    )
    .unwrap_err();
    match &e {
        BmsError::DuplicateFrame {
            first_line,
            second_line,
            vin,
            ..
        } => {
            assert_eq!((*first_line, *second_line), (2, 4));
            assert_eq!(vin, "V1");
        }
        other => panic!("unexpected {other}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("x.csv") && msg.contains("lines 2 and 4"),
        "{msg}"
    );
}

#[test]
fn streaming_aggregators_refuse_out_of_order_frames_and_stay_usable() {
    let cfg = DailyConfig::default();
    let a = f("V1", JAN1 + HOUR, &[3.7], &[20.0]);
    let b = f("V1", JAN1, &[3.7], &[20.0]);
    let fs = frames(&[a, b]);
    let mut agg = VehicleAggregator::new("V1", cfg.clone());
    agg.push(&fs.get(0), 1).unwrap();
    let e = agg.push(&fs.get(1), 2).unwrap_err();
    assert!(matches!(e, BmsError::OutOfOrder { .. }), "{e}");
    let e = agg.push(&fs.get(0), 3).unwrap_err();
    assert!(
        matches!(
            e,
            BmsError::DuplicateFrame {
                first_line: 1,
                second_line: 3,
                ..
            }
        ),
        "{e}"
    );
    let rows = agg.finish();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get(C::Frames), 1.0);

    // The multi-vehicle aggregator equals `aggregate` on interleaved input.
    let list = [
        f("B", JAN1, &[3.7, 3.8], &[20.0]),
        f("A", JAN1 + 5, &[3.7], &[21.0]),
        f("B", JAN1 + 2 * DAY, &[3.71, 3.8], &[20.0]),
        f("A", JAN1 + DAY, &[3.72], &[20.0]),
    ];
    let fs = frames(&list);
    let mut multi = DailyAggregator::new(cfg.clone());
    for (i, fr) in fs.iter().enumerate() {
        multi.push(&fr, i as u64).unwrap();
    }
    assert_eq!(multi.finish(), aggregate(&fs, &cfg, None).unwrap());
}

#[test]
fn empty_vin_and_frames_without_cells_are_refused() {
    let mut fs = Frames::new();
    fs.push(
        FrameRef {
            vin: "V1",
            timestamp_ms: 0,
            pack_voltage: 1.0,
            pack_current: 0.0,
            soc: 1.0,
            cell_voltages: &[],
            temperatures: &[1.0],
            alarm_flags: None,
        },
        7,
    );
    let e = aggregate(&fs, &DailyConfig::default(), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no cell voltages"), "{e}");
}

#[test]
fn day_numbers_round_trip() {
    assert_eq!(date_of_day(0), Some(d("1970-01-01")));
    assert_eq!(date_of_day(19_723), Some(d("2024-01-01")));
    assert_eq!(bms_core::daily::day_of_date(d("2024-01-01")), 19_723);
    assert_eq!(date_of_day(i64::MAX / 2), None);
}

/// Issue 20: frames of one vehicle centuries apart (a wrong clock) made a dense daily
/// table of millions of empty days silently; beyond 100 years it is refused, naming the
/// VIN, both dates and the line, and the aggregator stays usable.
#[test]
fn a_vehicle_spanning_more_than_a_century_is_refused() {
    let cfg = DailyConfig::default();
    let a = f("V1", JAN1, &[3.7], &[20.0]);
    let b = f("V1", JAN1 + 200 * 365 * DAY, &[3.7], &[20.0]);
    let c = f("V1", JAN1 + 3 * DAY, &[3.7], &[20.0]);
    let fs = frames(&[a, b, c]);
    let mut agg = VehicleAggregator::new("V1", cfg);
    agg.push(&fs.get(0), 1).unwrap();
    let e = agg.push(&fs.get(1), 2).unwrap_err().to_string();
    assert!(
        e.contains("line 2") && e.contains("VIN V1") && e.contains("36525 days"),
        "{e}"
    );
    agg.push(&fs.get(2), 3).unwrap();
    assert_eq!(agg.finish().len(), 4);
}
