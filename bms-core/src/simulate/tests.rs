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
