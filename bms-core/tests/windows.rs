//! Windows and labels (SPEC §5): worked examples, and equality with the reference
//! notebook's loop on random sorted dense tables.

use bms_core::daily::{DailyColumn, DailyRow, DailyTable, N_DAILY_COLUMNS, REFERENCE_COLUMNS};
use bms_core::{BmsError, ColumnWindows, DailyColumns, WindowSpec, windows, windows_of_columns};
use chrono::{Days, NaiveDate};
use proptest::prelude::*;

fn date(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

/// A row whose reference columns are `base + k` (k = column index) and label `label`.
fn row(vin: &str, day: &str, base: f64, label: f64) -> DailyRow {
    let mut values = [f64::NAN; N_DAILY_COLUMNS];
    for (k, c) in REFERENCE_COLUMNS.iter().enumerate() {
        values[c.index()] = base + k as f64;
    }
    DailyRow {
        vin: vin.into(),
        date: date(day),
        values,
        label,
    }
}

fn spec(context: usize, horizon: usize) -> WindowSpec {
    WindowSpec {
        context,
        horizon,
        ..WindowSpec::default()
    }
}

#[test]
fn worked_example_day_major_with_fill_and_labels() {
    // Days 1..=5; day 3 missing (gap), day 5 alarm.
    let t = DailyTable {
        rows: vec![
            row("V", "2024-01-01", 10.0, 0.0),
            row("V", "2024-01-02", 20.0, 0.0),
            row("V", "2024-01-04", 40.0, 0.0),
            row("V", "2024-01-05", 50.0, 1.0),
        ],
    };
    let b = windows(&t, &spec(2, 2)).unwrap();
    // Dense days: 1,2,3(gap),4,5 → positions 2,3,4 → windows dated 01-03, 01-04, 01-05.
    assert_eq!(b.len(), 3);
    assert_eq!(b.x.ncols(), 12);
    let dates: Vec<String> = b.keys.iter().map(|k| k.date.to_string()).collect();
    assert_eq!(dates, ["2024-01-03", "2024-01-04", "2024-01-05"]);
    // Window 0 = day 1 then day 2, each day's six columns in reference order.
    let w0: Vec<f32> = b.x.row(0).to_vec();
    assert_eq!(
        w0,
        vec![10., 11., 12., 13., 14., 15., 20., 21., 22., 23., 24., 25.]
    );
    // Window 1 = day 2 then the gap day (filled with −1).
    let w1: Vec<f32> = b.x.row(1).to_vec();
    assert_eq!(&w1[..6], &[20., 21., 22., 23., 24., 25.]);
    assert_eq!(&w1[6..], &[-1.0; 6]);
    // Labels: horizon [i, i+2): 01-03..01-04 → 0; 01-04..01-05 → 1; 01-05 (cut short) → 1.
    assert_eq!(b.y.to_vec(), vec![0.0, 1.0, 1.0]);
}

#[test]
fn full_horizon_drops_windows_whose_horizon_is_cut() {
    let rows: Vec<DailyRow> = (1..=6)
        .map(|d| row("V", &format!("2024-01-0{d}"), d as f64, 0.0))
        .collect();
    let t = DailyTable { rows };
    let cut = windows(&t, &spec(2, 3)).unwrap();
    assert_eq!(cut.len(), 4); // positions 2..6
    let full = windows(
        &t,
        &WindowSpec {
            full_horizon: true,
            ..spec(2, 3)
        },
    )
    .unwrap();
    // Positions i with i + 3 ≤ 6: 2 and 3.
    assert_eq!(full.len(), 2);
    assert_eq!(full.keys[1].date, date("2024-01-04"));
    assert_eq!(full.x.row(1), cut.x.row(1));
}

#[test]
fn short_vehicles_yield_nothing_and_vehicles_keep_table_order() {
    let mut rows = vec![];
    for d in 1..=3 {
        rows.push(row("B", &format!("2024-02-0{d}"), 1.0, 0.0));
    }
    rows.push(row("A", "2024-01-01", 1.0, 0.0)); // one day only: no window
    for d in 4..=5 {
        rows.push(row("B", &format!("2024-02-0{d}"), 1.0, 0.0));
    }
    rows.push(row("C", "2024-01-01", 1.0, 0.0));
    rows.push(row("C", "2024-01-03", 1.0, 1.0));
    let b = windows(&DailyTable { rows }, &spec(2, 14)).unwrap();
    let vins: Vec<&str> = b.keys.iter().map(|k| k.vin.as_str()).collect();
    assert_eq!(vins, ["B", "B", "B", "C"]);
    assert_eq!(b.y.to_vec(), vec![0.0, 0.0, 0.0, 1.0]);
}

#[test]
fn nan_labels_count_as_no_alarm_and_nan_features_get_the_fill() {
    let mut r2 = row("V", "2024-01-02", 5.0, f64::NAN);
    r2.values[DailyColumn::TotalCurrent.index()] = f64::NAN;
    let t = DailyTable {
        rows: vec![row("V", "2024-01-01", 1.0, 0.0), r2],
    };
    let s = WindowSpec {
        fill: 7.5,
        ..spec(1, 1)
    };
    let b = windows(&t, &s).unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b.y[0], 0.0);
    let s2 = WindowSpec {
        features: vec![DailyColumn::TotalCurrent],
        ..spec(1, 1)
    };
    let t2 = DailyTable {
        rows: vec![t.rows[1].clone(), row("V", "2024-01-03", 0.0, 0.0)],
    };
    assert_eq!(
        windows(&t2, &WindowSpec { fill: 7.5, ..s2 })
            .unwrap()
            .x
            .row(0)
            .to_vec(),
        vec![7.5]
    );
}

#[test]
fn duplicates_and_bad_specs_are_errors() {
    let t = DailyTable {
        rows: vec![
            row("V", "2024-01-01", 1.0, 0.0),
            row("W", "2024-01-01", 1.0, 0.0),
            row("V", "2024-01-01", 2.0, 0.0),
        ],
    };
    match windows(&t, &spec(1, 1)).unwrap_err() {
        BmsError::DuplicateDay {
            first_line,
            second_line,
            ..
        } => assert_eq!((first_line, second_line), (1, 3)),
        other => panic!("{other}"),
    }
    for bad in [
        spec(0, 1),
        spec(1, 0),
        WindowSpec {
            features: vec![],
            ..spec(1, 1)
        },
    ] {
        assert!(matches!(windows(&t, &bad), Err(BmsError::Invalid { .. })));
    }
}

#[test]
fn spec_serde_round_trip_and_width() {
    let s = WindowSpec {
        features: vec![DailyColumn::SpreadMean, DailyColumn::TotalVoltage],
        ..WindowSpec::default()
    };
    assert_eq!(s.width(), 28);
    let json = serde_json::to_string(&s).unwrap();
    assert!(json.contains("\"spread_mean\""), "{json}");
    assert_eq!(serde_json::from_str::<WindowSpec>(&json).unwrap(), s);
    assert!(serde_json::from_str::<WindowSpec>(&json.replace("spread_mean", "nope")).is_err());
}

/// Features, labels and (vin, date) keys of every window.
type Loop = (Vec<Vec<f32>>, Vec<f32>, Vec<(String, NaiveDate)>);

/// The reference notebook's loop, ported literally: `df.fillna(-1)`, then per VIN in order
/// of first appearance, `for i in range(C, len(v))`.
fn notebook_loop(t: &DailyTable, s: &WindowSpec) -> Loop {
    let filled: Vec<DailyRow> = t
        .rows
        .iter()
        .map(|r| {
            let mut r = r.clone();
            for v in r.values.iter_mut() {
                if v.is_nan() {
                    *v = s.fill;
                }
            }
            if r.label.is_nan() {
                r.label = s.fill;
            }
            r
        })
        .collect();
    let mut vins: Vec<&str> = vec![];
    for r in &filled {
        if !vins.contains(&r.vin.as_str()) {
            vins.push(&r.vin);
        }
    }
    let (mut xs, mut ys, mut keys) = (vec![], vec![], vec![]);
    for vin in vins {
        let v: Vec<&DailyRow> = filled.iter().filter(|r| r.vin == vin).collect();
        for i in s.context..v.len() {
            if s.full_horizon && i + s.horizon > v.len() {
                continue;
            }
            let mut x = vec![];
            for r in &v[i - s.context..i] {
                for c in &s.features {
                    x.push(r.get(*c) as f32);
                }
            }
            let end = (i + s.horizon).min(v.len());
            let y = if v[i..end].iter().any(|r| r.label == 1.0) {
                1.0
            } else {
                0.0
            };
            xs.push(x);
            ys.push(y);
            keys.push((vin.to_owned(), v[i].date));
        }
    }
    (xs, ys, keys)
}

fn arb_value() -> impl Strategy<Value = f64> {
    prop_oneof![3 => -500.0f64..500.0, 1 => Just(f64::NAN)]
}

fn arb_label() -> impl Strategy<Value = f64> {
    prop_oneof![6 => Just(0.0), 2 => Just(1.0), 1 => Just(f64::NAN)]
}

/// Random sorted dense tables: 1–4 vehicles, 0–40 consecutive days each.
fn arb_table() -> impl Strategy<Value = DailyTable> {
    prop::collection::vec(
        (
            0usize..40,
            0u64..30,
            prop::collection::vec((prop::array::uniform11(arb_value()), arb_label()), 40),
        ),
        1..4,
    )
    .prop_map(|vehicles| {
        let mut rows = vec![];
        for (k, (days, start, vals)) in vehicles.into_iter().enumerate() {
            let d0 = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap() + Days::new(start);
            for (d, (values, label)) in vals.into_iter().take(days).enumerate() {
                rows.push(DailyRow {
                    vin: format!("VIN{k}"),
                    date: d0 + Days::new(d as u64),
                    values,
                    label,
                });
            }
        }
        DailyTable { rows }
    })
}

fn arb_spec() -> impl Strategy<Value = WindowSpec> {
    (
        1usize..8,
        1usize..8,
        prop::sample::subsequence(DailyColumn::ALL.to_vec(), 1..=N_DAILY_COLUMNS),
        prop_oneof![Just(-1.0), Just(0.0), Just(-999.0)],
        any::<bool>(),
    )
        .prop_map(
            |(context, horizon, features, fill, full_horizon)| WindowSpec {
                context,
                horizon,
                features,
                fill,
                full_horizon,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn equals_the_notebook_loop_on_sorted_dense_data(t in arb_table(), s in arb_spec()) {
        let b = windows(&t, &s).unwrap();
        let (xs, ys, keys) = notebook_loop(&t, &s);
        prop_assert_eq!(b.len(), xs.len());
        for (i, x) in xs.iter().enumerate() {
            prop_assert_eq!(&b.x.row(i).to_vec(), x);
        }
        prop_assert_eq!(b.y.to_vec(), ys);
        let got: Vec<(String, NaiveDate)> = b.keys.iter().map(|k| (k.vin.clone(), k.date)).collect();
        prop_assert_eq!(got, keys);
    }

    #[test]
    fn order_and_missing_empty_days_do_not_matter(t in arb_table(), s in arb_spec(), seed in any::<u64>()) {
        // Drop interior rows whose selected features and label are all NaN (densification
        // restores them) and shuffle: the windows must not change.
        let want = windows(&t, &s).unwrap();
        let mut rows: Vec<DailyRow> = vec![];
        for (i, r) in t.rows.iter().enumerate() {
            let first = i == 0 || t.rows[i - 1].vin != r.vin;
            let last = i + 1 == t.rows.len() || t.rows[i + 1].vin != r.vin;
            let empty = r.label.is_nan() && s.features.iter().all(|&c| r.get(c).is_nan());
            if first || last || !empty {
                rows.push(r.clone());
            }
        }
        // Deterministic shuffle that keeps each VIN's first row first among VINs.
        let mut x = seed | 1;
        let n = rows.len();
        for i in (1..n).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            let j = (x % (i as u64 + 1)) as usize;
            rows.swap(i, j);
        }
        let got = windows(&DailyTable { rows }, &s).unwrap();
        // Vehicle order may change with the shuffle; compare per (vin, date).
        let mut a: Vec<(String, NaiveDate, Vec<f32>, f32)> = (0..want.len())
            .map(|i| (want.keys[i].vin.clone(), want.keys[i].date, want.x.row(i).to_vec(), want.y[i]))
            .collect();
        let mut b: Vec<(String, NaiveDate, Vec<f32>, f32)> = (0..got.len())
            .map(|i| (got.keys[i].vin.clone(), got.keys[i].date, got.x.row(i).to_vec(), got.y[i]))
            .collect();
        a.sort_by(|p, q| (&p.0, p.1).cmp(&(&q.0, q.1)));
        b.sort_by(|p, q| (&p.0, p.1).cmp(&(&q.0, q.1)));
        prop_assert_eq!(a, b);
    }
}

/// A table as columns: VINs, vehicle index, day number, feature columns, labels.
type Columns = (Vec<String>, Vec<u32>, Vec<i64>, Vec<Vec<f64>>, Vec<f64>);

/// The table as columns, VINs numbered by first appearance.
fn columns_of(t: &DailyTable, s: &WindowSpec) -> Columns {
    let mut vins: Vec<String> = vec![];
    let mut vehicle = vec![];
    for r in &t.rows {
        let v = match vins.iter().position(|v| *v == r.vin) {
            Some(v) => v,
            None => {
                vins.push(r.vin.clone());
                vins.len() - 1
            }
        };
        vehicle.push(v as u32);
    }
    let day = t
        .rows
        .iter()
        .map(|r| bms_core::daily::day_of_date(r.date))
        .collect();
    let features = s
        .features
        .iter()
        .map(|c| t.rows.iter().map(|r| r.get(*c)).collect())
        .collect();
    let label = t.rows.iter().map(|r| r.label).collect();
    (vins, vehicle, day, features, label)
}

fn column_windows(t: &DailyTable, s: &WindowSpec) -> bms_core::Result<ColumnWindows> {
    let (vins, vehicle, day, features, label) = columns_of(t, s);
    let cols: Vec<&[f64]> = features.iter().map(Vec::as_slice).collect();
    windows_of_columns(
        &DailyColumns {
            vins: &vins,
            vehicle: &vehicle,
            day: &day,
            ticks_per_day: 1,
            features: &cols,
            label: Some(&label),
        },
        s,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The columnar path gives `windows`' answer on tables in any row order with gaps.
    #[test]
    fn columns_equal_rows(
        (rows, keep) in arb_table().prop_flat_map(|t| {
            let n = t.rows.len();
            (Just(t.rows).prop_shuffle(), prop::collection::vec(prop::bool::weighted(0.8), n))
        }),
        s in arb_spec(),
    ) {
        let rows: Vec<DailyRow> = rows.iter().zip(&keep).filter(|(_, k)| **k).map(|(r, _)| r.clone()).collect();
        let t = DailyTable { rows };
        let want = windows(&t, &s).unwrap();
        let got = column_windows(&t, &s).unwrap();
        prop_assert_eq!(&got.x, &want.x);
        prop_assert_eq!(&got.y, &want.y);
        let (vins, ..) = columns_of(&t, &s);
        let keys: Vec<(String, NaiveDate)> = got
            .vehicle
            .iter()
            .zip(&got.day)
            .map(|(&v, &d)| (vins[v as usize].clone(), bms_core::daily::date_of_day(d).unwrap()))
            .collect();
        let want_keys: Vec<(String, NaiveDate)> = want.keys.iter().map(|k| (k.vin.clone(), k.date)).collect();
        prop_assert_eq!(keys, want_keys);
    }
}

#[test]
fn columns_report_duplicates_and_bad_shapes_like_rows() {
    let t = DailyTable {
        rows: vec![
            row("A", "2024-01-01", 1.0, 0.0),
            row("B", "2024-01-01", 1.0, 0.0),
            row("A", "2024-01-02", 1.0, 0.0),
            row("A", "2024-01-01", 2.0, 0.0),
        ],
    };
    let s = spec(1, 1);
    let want = windows(&t, &s).unwrap_err().to_string();
    let got = column_windows(&t, &s).unwrap_err().to_string();
    assert_eq!(got, want);
    assert!(got.contains("lines 1 and 4"), "{got}");
    let vins = vec!["A".to_string()];
    let one = [1.0];
    let bad = windows_of_columns(
        &DailyColumns {
            vins: &vins,
            vehicle: &[0],
            day: &[19_723],
            ticks_per_day: 1,
            features: &[&one],
            label: None,
        },
        &s,
    )
    .unwrap_err();
    assert!(
        matches!(
            bad,
            BmsError::Shape {
                expected: 6,
                found: 1,
                ..
            }
        ),
        "{bad}"
    );
    let six: [&[f64]; 6] = [&one; 6];
    let bad = windows_of_columns(
        &DailyColumns {
            vins: &vins,
            vehicle: &[1],
            day: &[19_723],
            ticks_per_day: 1,
            features: &six,
            label: None,
        },
        &s,
    )
    .unwrap_err();
    assert!(bad.to_string().contains("row 1: vehicle index 1"), "{bad}");
}

/// A larger table than the property tests': `nv` vehicles over `days` days, values and
/// labels varying, every third vehicle with its rows shuffled and some days dropped.
fn big_table(nv: usize, days: u64) -> DailyTable {
    let mut rows = vec![];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for v in 0..nv {
        let vin = format!("VIN{v:05}");
        let start = date("2023-03-01") + Days::new(next() % 40);
        let mut own = vec![];
        for d in 0..days {
            if v % 3 == 2 && next() % 10 == 0 {
                continue;
            }
            let day = (start + Days::new(d)).to_string();
            let label = if next() % 50 == 0 { 1.0 } else { 0.0 };
            let mut r = row(&vin, &day, (next() % 1000) as f64, label);
            if next() % 20 == 0 {
                r.values[REFERENCE_COLUMNS[(next() % 6) as usize].index()] = f64::NAN;
            }
            own.push(r);
        }
        if v % 3 == 2 {
            for i in (1..own.len()).rev() {
                own.swap(i, (next() % (i as u64 + 1)) as usize);
            }
        }
        rows.extend(own);
    }
    DailyTable { rows }
}

#[test]
fn columns_written_in_parallel_equal_rows() {
    let t = big_table(70, 300);
    let s = WindowSpec::default();
    let want = windows(&t, &s).unwrap();
    assert!(
        want.len() > 16_384,
        "{} windows: too few to be split",
        want.len()
    );
    for threads in [1, 2, 5] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let got = pool.install(|| column_windows(&t, &s)).unwrap();
        assert_eq!(got.x, want.x, "{threads} threads");
        assert_eq!(got.y, want.y, "{threads} threads");
        let (vins, ..) = columns_of(&t, &s);
        for (i, k) in want.keys.iter().enumerate() {
            assert_eq!(vins[got.vehicle[i] as usize], k.vin);
            assert_eq!(bms_core::daily::date_of_day(got.day[i]).unwrap(), k.date);
        }
    }
}

#[test]
fn dates_in_ticks_fall_on_their_day() {
    // The table moved before 1970, its dates given as nanoseconds with a time of day:
    // each row is on the day its time falls in (a floor, also before the epoch).
    const NS: i64 = bms_core::window::NANOS_PER_DAY;
    let t = big_table(12, 90);
    let s = spec(7, 5);
    let (vins, vehicle, day, features, label) = columns_of(&t, &s);
    let cols: Vec<&[f64]> = features.iter().map(Vec::as_slice).collect();
    let run = |day: &[i64], ticks_per_day: i64| {
        windows_of_columns(
            &DailyColumns {
                vins: &vins,
                vehicle: &vehicle,
                day,
                ticks_per_day,
                features: &cols,
                label: Some(&label),
            },
            &s,
        )
    };
    let early: Vec<i64> = day.iter().map(|d| d - 20_000).collect();
    assert!(early.iter().all(|&d| d < 0));
    let want = run(&early, 1).unwrap();
    for time in [0, 1, NS / 2 + 3, NS - 1] {
        let ns: Vec<i64> = early.iter().map(|d| d * NS + time).collect();
        assert_eq!(run(&ns, NS).unwrap(), want, "time of day {time} ns");
        let s_: Vec<i64> = early
            .iter()
            .map(|d| d * 86_400 + time / 1_000_000_000)
            .collect();
        assert_eq!(run(&s_, 86_400).unwrap(), want);
        let odd: Vec<i64> = early.iter().map(|d| d * 24 + time / (NS / 24)).collect();
        assert_eq!(run(&odd, 24).unwrap(), want, "hours");
    }
    // Times varying from row to row (no stretch of evenly spaced dates).
    let ns: Vec<i64> = early
        .iter()
        .enumerate()
        .map(|(i, d)| d * NS + (i as i64 * 7_919_000_000_013) % NS)
        .collect();
    assert_eq!(run(&ns, NS).unwrap(), want, "varying times");
    // NaT is a missing date, named by its row; a unit below one tick a day is refused.
    let mut ns: Vec<i64> = early.iter().map(|d| d * NS).collect();
    ns[40] = i64::MIN;
    let e = run(&ns, NS).unwrap_err().to_string();
    assert!(e.contains("row 41, column Date: missing date"), "{e}");
    let e = run(&early, 0).unwrap_err().to_string();
    assert!(e.contains("ticks per day"), "{e}");
}

#[test]
fn a_missing_date_comes_before_other_errors_and_names_the_first_row() {
    const NS: i64 = bms_core::window::NANOS_PER_DAY;
    let t = big_table(6, 40);
    let s = spec(3, 2);
    let (vins, vehicle, day, features, label) = columns_of(&t, &s);
    let cols: Vec<&[f64]> = features.iter().map(Vec::as_slice).collect();
    let mut ns: Vec<i64> = day.iter().map(|d| d * NS).collect();
    // A duplicate day in the first vehicle, NaT in later vehicles (one of them a stretch
    // whose first date is NaT).
    ns[1] = ns[0];
    ns[150] = i64::MIN;
    ns[100] = i64::MIN;
    let first_of_vehicle_4 = vehicle.iter().position(|&v| v == 4).unwrap();
    ns[first_of_vehicle_4] = i64::MIN;
    let e = windows_of_columns(
        &DailyColumns {
            vins: &vins,
            vehicle: &vehicle,
            day: &ns,
            ticks_per_day: NS,
            features: &cols,
            label: Some(&label),
        },
        &s,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("row 101, column Date: missing date"), "{e}");
}
