use super::*;
use crate::daily::DailyColumn;

fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty(), "median of nothing");
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The SPEC §4 statistics of a daily table.
#[derive(Debug)]
struct Stats {
    voltage_in_range: f64,
    empty_days: f64,
    alarm_days: f64,
    normal_spread: f64,
    alarm_spread: f64,
    temp_delta: f64,
}

fn stats(table: &DailyTable) -> Stats {
    let rows = &table.rows;
    let labelled: Vec<&DailyRow> = rows.iter().filter(|r| !r.label.is_nan()).collect();
    let spread =
        |r: &&DailyRow| r.get(DailyColumn::CellMaxVoltage) - r.get(DailyColumn::CellMinVoltage);
    let in_range = labelled
        .iter()
        .filter(|r| (340.0..=395.0).contains(&r.get(DailyColumn::TotalVoltage)))
        .count();
    Stats {
        voltage_in_range: in_range as f64 / labelled.len() as f64,
        empty_days: 1.0 - labelled.len() as f64 / rows.len() as f64,
        alarm_days: labelled.iter().filter(|r| r.label == 1.0).count() as f64
            / labelled.len() as f64,
        normal_spread: median(
            labelled
                .iter()
                .filter(|r| r.label == 0.0)
                .map(spread)
                .collect(),
        ),
        alarm_spread: median(
            labelled
                .iter()
                .filter(|r| r.label == 1.0)
                .map(spread)
                .collect(),
        ),
        temp_delta: median(
            labelled
                .iter()
                .map(|r| r.get(DailyColumn::MaxTemperature) - r.get(DailyColumn::MinTemperature))
                .collect(),
        ),
    }
}

#[test]
fn simulate_calibration_matches_spec() {
    let config = SimConfig {
        interval_ms: if cfg!(debug_assertions) {
            30_000
        } else {
            10_000
        },
        ..SimConfig::default()
    };
    assert_eq!((config.vehicles, config.days), (200, 120));
    let out = simulate_daily(&config).unwrap();
    let s = stats(&out.table);
    eprintln!("calibration: {s:?}, frames {}", out.frames);
    assert!(s.voltage_in_range > 0.9, "{s:?}");
    assert!((0.30..=0.40).contains(&s.empty_days), "{s:?}");
    assert!((0.01..=0.04).contains(&s.alarm_days), "{s:?}");
    assert!((0.010..=0.020).contains(&s.normal_spread), "{s:?}");
    assert!((0.06..=0.15).contains(&s.alarm_spread), "{s:?}");
    assert!((1.5..=4.0).contains(&s.temp_delta), "{s:?}");
}

fn small(vehicles: usize, days: u32, weak_fraction: f64) -> SimConfig {
    SimConfig {
        vehicles,
        days,
        seed: 42,
        interval_ms: 60_000,
        weak_fraction,
        ..SimConfig::default()
    }
}

fn same_rows(a: &DailyTable, b: &DailyTable) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.rows.iter().zip(&b.rows) {
        assert_eq!((&x.vin, x.date), (&y.vin, y.date));
        assert_eq!(x.label.to_bits(), y.label.to_bits(), "{} {}", x.vin, x.date);
        for (u, v) in x.values.iter().zip(&y.values) {
            assert_eq!(u.to_bits(), v.to_bits(), "{} {}", x.vin, x.date);
        }
    }
}

fn daily_csv_bytes(table: &DailyTable) -> Vec<u8> {
    let mut out = Vec::new();
    crate::io::daily_csv::write_daily_csv_to(&mut out, table, true).unwrap();
    out
}

#[test]
fn simulate_is_deterministic_across_thread_counts() {
    let config = small(7, 40, 0.4);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let frames = dir.path().join("f.csv");
        let truth = dir.path().join("t.csv");
        let (daily, with_frames) = pool.install(|| {
            let daily = simulate_daily(&config).unwrap();
            let with_frames =
                simulate_to_frames(&config, &frames, FrameFormat::Csv, &|_, _| {}).unwrap();
            (daily, with_frames)
        });
        write_truth_csv(&truth, &daily.truth).unwrap();
        (
            daily_csv_bytes(&daily.table),
            daily_csv_bytes(&with_frames.table),
            std::fs::read(&frames).unwrap(),
            std::fs::read(&truth).unwrap(),
        )
    };
    let one = run(1);
    let three = run(3);
    assert!(
        one.0 == three.0,
        "daily tables differ between 1 and 3 threads"
    );
    assert!(one.1 == one.0, "frames mode and daily-only mode disagree");
    assert!(
        one.2 == three.2,
        "frame files differ between 1 and 3 threads"
    );
    assert!(
        one.3 == three.3,
        "truth files differ between 1 and 3 threads"
    );
    let other_seed = simulate_daily(&SimConfig { seed: 43, ..config }).unwrap();
    assert!(
        daily_csv_bytes(&other_seed.table) != one.0,
        "the seed must matter"
    );
}

#[test]
fn frames_round_trip_and_aggregate_to_the_daily_only_table() {
    let config = small(4, 21, 0.5);
    let mut expected = Frames::new();
    for i in 0..config.vehicles {
        for_each_frame(&config, i, |f| {
            expected.push(*f, 0);
            Ok(())
        })
        .unwrap();
    }
    assert!(expected.len() > 1000, "{} frames", expected.len());
    let daily_only = simulate_daily(&config).unwrap();
    assert_eq!(daily_only.frames, expected.len() as u64);
    let dir = tempfile::tempdir().unwrap();
    for (name, format) in [
        ("f.csv", FrameFormat::Csv),
        ("f.parquet", FrameFormat::Parquet),
    ] {
        let path = dir.path().join(name);
        let out = simulate_to_frames(&config, &path, format, &|_, _| {}).unwrap();
        let back = match format {
            FrameFormat::Csv => crate::io::read_frame_csv(&path, crate::io::ReadMode::Strict),
            FrameFormat::Parquet => {
                crate::io::read_frames_parquet(&path, crate::io::ReadMode::Strict)
            }
        }
        .unwrap();
        assert!(back.rejects.is_empty());
        assert_eq!(back.data.len(), expected.len(), "{name}");
        for (a, b) in back.data.iter().zip(expected.iter()) {
            assert_eq!(a, b, "{name}");
        }
        same_rows(&out.table, &daily_only.table);
        let again =
            crate::daily::aggregate(&back.data, &config.daily_config(), Some(&path)).unwrap();
        same_rows(&again, &daily_only.table);
    }
}

#[test]
fn frames_are_physical_and_flags_follow_the_spread_rule() {
    let config = small(3, 30, 1.0);
    let features = FeatureConfig::default();
    for i in 0..config.vehicles {
        let mut last = i64::MIN;
        let mut n = 0;
        let truth = for_each_frame(&config, i, |f| {
            n += 1;
            assert!(f.timestamp_ms > last);
            last = f.timestamp_ms;
            assert_eq!(f.vin.len(), 17);
            assert_eq!((f.cell_voltages.len(), f.temperatures.len()), (96, 32));
            let sum: f64 = f.cell_voltages.iter().sum();
            assert!((sum - f.pack_voltage).abs() < 1e-6);
            for &v in f.cell_voltages {
                assert!((2.5..4.4).contains(&v), "{v}");
                assert_eq!(v, (v * 1000.0).round() / 1000.0);
            }
            for &t in f.temperatures {
                assert_eq!(t, t.round());
            }
            assert!((0.0..=100.0).contains(&f.soc));
            let rule = crate::features::frame_features(
                &FrameRef {
                    alarm_flags: None,
                    ..*f
                },
                &features,
            );
            let flagged = f.alarm_flags.unwrap() & crate::frame::CONSISTENCY_ALARM_MASK != 0;
            assert_eq!(flagged, rule.consistency_alarm);
            Ok(())
        })
        .unwrap();
        assert!(truth.weak && truth.weak_cell.is_some() && n > 0);
    }
}

#[test]
fn weak_cells_alarm_far_more_often_and_drift_first() {
    let config = small(40, 120, 0.5);
    let out = simulate_daily(&config).unwrap();
    let (weak, healthy): (Vec<&VehicleTruth>, Vec<&VehicleTruth>) =
        out.truth.iter().partition(|t| t.weak);
    assert!(weak.len() >= 10 && healthy.len() >= 10);
    let rate =
        |v: &[&VehicleTruth]| v.iter().map(|t| t.alarm_days as f64).sum::<f64>() / v.len() as f64;
    let (w, h) = (rate(&weak), rate(&healthy));
    eprintln!("alarm days per vehicle: weak {w:.2}, healthy {h:.2}");
    assert!(w > 5.0 && w > 10.0 * h, "weak {w}, healthy {h}");
    // Truth agrees with the labels, and the spread grows in the weeks before the alarm.
    let mut drifting = 0;
    let mut checked = 0;
    for t in &out.truth {
        let rows: Vec<&DailyRow> = out.table.rows.iter().filter(|r| r.vin == t.vin).collect();
        let labelled = rows.iter().filter(|r| r.label == 1.0).count() as u32;
        assert_eq!(labelled, t.alarm_days, "{}", t.vin);
        let Some(first) = t.first_alarm_date else {
            continue;
        };
        if !t.weak {
            continue;
        }
        let spread_between = |from: i64, to: i64| {
            let v: Vec<f64> = rows
                .iter()
                .filter(|r| (from..to).contains(&(first - r.date).num_days()))
                .map(|r| r.get(DailyColumn::SpreadMean))
                .filter(|x| !x.is_nan())
                .collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        if let (Some(recent), Some(early)) = (spread_between(1, 8), spread_between(28, 42)) {
            checked += 1;
            drifting += (recent > early + 0.005) as usize;
        }
    }
    assert!(
        checked >= 3 && drifting * 4 >= checked * 3,
        "{drifting} of {checked}"
    );
}

#[test]
fn bad_configs_are_refused_with_the_field_named() {
    let cases: [(SimConfig, &str); 6] = [
        (
            SimConfig {
                vehicles: 0,
                ..SimConfig::default()
            },
            "vehicles",
        ),
        (
            SimConfig {
                cells: 0,
                ..SimConfig::default()
            },
            "cells",
        ),
        (
            SimConfig {
                probes: 0,
                ..SimConfig::default()
            },
            "probes",
        ),
        (
            SimConfig {
                interval_ms: 0,
                ..SimConfig::default()
            },
            "interval",
        ),
        (
            SimConfig {
                days: 0,
                ..SimConfig::default()
            },
            "days",
        ),
        (
            SimConfig {
                weak_fraction: 1.5,
                ..SimConfig::default()
            },
            "weak fraction",
        ),
    ];
    for (config, field) in cases {
        let e = simulate_daily(&config).unwrap_err().to_string();
        assert!(e.contains(field), "{e}");
    }
    let slow = SimConfig {
        interval_ms: 60_000,
        ..SimConfig::default()
    };
    assert!(slow.validate().is_ok() && !slow.gbt_compliant_interval());
    assert!(SimConfig::default().gbt_compliant_interval());
    let json = serde_json::to_string(&SimConfig::default()).unwrap();
    let back: SimConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, SimConfig::default());
}

#[test]
fn lfp_packs_simulate() {
    let config = SimConfig {
        chemistry: crate::Chemistry::Lfp,
        ..small(3, 20, 0.0)
    };
    let out = simulate_daily(&config).unwrap();
    let v: Vec<f64> = out
        .table
        .rows
        .iter()
        .map(|r| r.get(DailyColumn::TotalVoltage))
        .filter(|x| !x.is_nan())
        .collect();
    assert!(
        !v.is_empty() && v.iter().all(|x| (290.0..340.0).contains(x)),
        "{v:?}"
    );
}
