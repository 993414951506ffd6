use super::*;

fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn close(a: Option<f64>, b: Option<f64>, what: &str) {
    match (a, b) {
        (Some(a), Some(b)) => assert!((a - b).abs() < 1e-12, "{what}: {a} vs {b}"),
        (a, b) => assert_eq!(a, b, "{what}"),
    }
}

#[test]
fn window_metrics_equal_scikit_learn() {
    let text = include_str!("../../tests/data/evaluate_golden.json");
    let golden: serde_json::Value = serde_json::from_str(text).unwrap();
    let cases = golden["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let scores = c["scores"].as_array().unwrap();
        let labels = c["labels"].as_array().unwrap();
        let pairs: Vec<(f32, bool)> = scores
            .iter()
            .zip(labels)
            .map(|(s, l)| (s.as_f64().unwrap() as f32, l.as_i64().unwrap() == 1))
            .collect();
        let m = window_metrics(&pairs, c["threshold"].as_f64().unwrap() as f32);
        assert_eq!(m.windows, pairs.len() as u64, "{name}");
        let g = |k: &str| c[k].as_f64();
        close(m.roc_auc, g("roc_auc"), &format!("{name} roc_auc"));
        close(
            m.average_precision,
            g("average_precision"),
            &format!("{name} ap"),
        );
        close(m.precision, g("precision"), &format!("{name} precision"));
        close(m.recall, g("recall"), &format!("{name} recall"));
        close(m.f1, g("f1"), &format!("{name} f1"));
    }
}

#[test]
fn window_metrics_of_one_class_or_nothing() {
    let m = window_metrics(&[(0.9, false), (0.1, false)], 0.5);
    assert_eq!(
        (m.roc_auc, m.average_precision, m.recall),
        (None, None, None)
    );
    assert_eq!((m.precision, m.f1, m.alerts), (Some(0.0), Some(0.0), 1));
    let m = window_metrics(&[], 0.5);
    assert_eq!(m, WindowMetrics::default());
    // The legacy summary figure (bms-batch's Mann–Whitney) agrees on a tie.
    let m = window_metrics(&[(0.5, true), (0.5, false), (0.2, false)], 0.5);
    assert_eq!(m.roc_auc, Some(0.75));
}

/// A daily table of one vehicle from `first`, `n` days, alarm on the given day offsets.
fn daily(vin: &str, first: &str, n: i64, alarms: &[i64]) -> Vec<crate::DailyRow> {
    (0..n)
        .map(|i| {
            let mut r = crate::DailyRow::empty(vin, d(first) + chrono::Days::new(i as u64));
            r.label = if alarms.contains(&i) { 1.0 } else { 0.0 };
            r
        })
        .collect()
}

fn scored<'a>(vin: &'a str, first: &str, probs: &[f32]) -> Vec<Scored<'a>> {
    probs
        .iter()
        .enumerate()
        .map(|(i, &prob)| Scored {
            vin,
            date: d(first) + chrono::Days::new(i as u64),
            prob,
        })
        .collect()
}

#[test]
fn daily_labels_give_window_labels_lead_times_and_false_alarms() {
    // A: 30 days from Jan 1, alarms on days 20 and 25 (Jan 21, Jan 26).
    // B: 30 days, never alarms. C: alarms on its first day (Jan 1).
    let mut rows = daily("A", "2024-01-01", 30, &[20, 25]);
    rows.extend(daily("B", "2024-01-01", 30, &[]));
    rows.extend(daily("C", "2024-01-01", 30, &[0]));
    let labels = AlarmHistory::from_daily(&DailyTable { rows });
    assert_eq!(labels.source(), LabelSource::Daily);
    assert_eq!(labels.vehicles(), 3);

    // Windows from Jan 15 (day 14) to Jan 31 (day 30, after the table: unlabelled).
    let mut a = vec![0.1f32; 17];
    a[3] = 0.7; // Jan 18: warns 3 days before Jan 21.
    a[8] = 0.9; // Jan 23: later alerts do not change the lead.
    let mut b = vec![0.2f32; 17];
    b[5] = 0.6;
    b[6] = 0.55; // two false-alarm days on B.
    let c = vec![0.3f32; 17];
    let mut preds = scored("A", "2024-01-15", &a);
    preds.extend(scored("B", "2024-01-15", &b));
    preds.extend(scored("C", "2024-01-15", &c));
    preds.extend(scored("Z", "2024-01-15", &[0.9, 0.9])); // not in the labels

    let cfg = EvalConfig {
        threshold: 0.5,
        horizon: 5,
    };
    let e = evaluate(&preds, &labels, &cfg).unwrap();
    assert_eq!(e.predictions, 53);
    assert_eq!((e.unmatched, e.unmatched_vehicles), (2, 1));
    assert_eq!(e.unlabelled, 3); // Jan 31 of A, B and C
    assert_eq!(e.window.windows + e.unmatched + e.unlabelled, e.predictions);
    // A's windows dated Jan 17..=Jan 26 see an alarm day within 5 days: 10 positives.
    assert_eq!(e.window.windows, 48);
    assert_eq!(e.window.positives, 10);
    assert_eq!(e.window.alerts, 4);
    // Jan 18 and Jan 23 are positives; B's two alerts are not.
    assert_eq!(e.window.precision, Some(0.5));
    assert_eq!(e.window.recall, Some(0.2));

    let [va, vb, vc] = &e.vehicles[..] else {
        panic!("{:?}", e.vehicles)
    };
    assert_eq!(va.vin, "A");
    assert_eq!(va.first_alarm, Some(d("2024-01-21")));
    assert_eq!(va.alarm_days, 2);
    assert_eq!(va.first_alert, Some(d("2024-01-18")));
    assert_eq!(va.lead_days, Some(3));
    assert!(va.warnable);
    assert_eq!((va.windows, va.alerts, va.max_prob), (17, 2, 0.9));
    assert_eq!((vb.first_alarm, vb.lead_days, vb.alerts), (None, None, 2));
    assert_eq!(vc.first_alarm, Some(d("2024-01-01")));
    assert_eq!(
        (vc.first_alert, vc.lead_days, vc.warnable),
        (None, None, false)
    );

    let ev = e.events.unwrap();
    assert_eq!((ev.alarm_vehicles, ev.warnable_vehicles), (2, 1));
    assert_eq!((ev.detected_1d, ev.detected_3d, ev.detected_7d), (1, 1, 0));
    assert_eq!(ev.detection_rate_3d, Some(0.5));
    assert_eq!(ev.detection_rate_7d, Some(0.0));
    assert_eq!(ev.missed, 1);
    assert_eq!(ev.median_lead_days, Some(3.0));
    let hist: Vec<u64> = ev.lead_histogram.iter().map(|h| h.vehicles).collect();
    assert_eq!(hist, [1, 0, 0, 0, 1, 0, 0]);
    assert_eq!((ev.healthy_vehicles, ev.false_alarm_vehicles), (1, 1));
    assert_eq!(ev.false_alarm_vehicles_per_100, Some(100.0));
    // B: 17 windows scored, 2 alerts.
    assert_eq!((ev.healthy_windows, ev.false_alarm_windows), (17, 2));
    close(ev.false_alarm_days_per_1000, Some(2000.0 / 17.0), "fa days");
}

#[test]
fn a_late_warning_has_a_negative_lead() {
    let labels = AlarmHistory::from_first_alarms([("A", Some(d("2024-01-05")))]).unwrap();
    let preds = scored("A", "2024-01-01", &[0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.9]);
    let e = evaluate(&preds, &labels, &EvalConfig::default()).unwrap();
    assert_eq!(e.vehicles[0].lead_days, Some(-2));
    // Truth labels know only the first alarm: windows after it are unlabelled.
    assert_eq!((e.window.windows, e.unlabelled), (5, 2));
    assert_eq!(e.window.positives, 5);
    let ev = e.events.unwrap();
    assert_eq!(ev.detected_1d, 0);
    assert_eq!(
        ev.lead_histogram[1],
        LeadBin {
            bin: "late".into(),
            vehicles: 1
        }
    );
    assert_eq!(ev.healthy_vehicles, 0);
    assert_eq!(ev.false_alarm_vehicles_per_100, None);
}

#[test]
fn truth_csv_is_read_by_column_name_and_errors_name_the_line() {
    let text = "vin,weak,weak_cell,mechanism,onset_date,first_alarm_date,repair_date,alarm_days\n\
                V1,1,17,capacity,2024-01-01,2024-02-03,,4\n\
                V2,0,,,,,,0\n";
    let h = AlarmHistory::from_truth_csv(text.as_bytes(), None).unwrap();
    assert_eq!(h.source(), LabelSource::FirstAlarms);
    assert_eq!(
        h,
        AlarmHistory::from_first_alarms([("V1", Some(d("2024-02-03"))), ("V2", None)]).unwrap()
    );
    // Columns in another order, with a BOM.
    let h2 = AlarmHistory::from_truth_csv(
        "\u{feff}first_alarm_date,vin\n2024-02-03,V1\n,V2\n".as_bytes(),
        None,
    )
    .unwrap();
    assert_eq!(h, h2);

    let file = Path::new("truth.csv");
    let err = |t: &str| {
        AlarmHistory::from_truth_csv(t.as_bytes(), Some(file))
            .unwrap_err()
            .to_string()
    };
    let e = err("vin,first_alarm_date\nV1,2024-02-30\n");
    assert!(
        e.contains("truth.csv") && e.contains("line 2") && e.contains("first_alarm_date"),
        "{e}"
    );
    let e = err("vin,first_alarm_date\nV1,\nV1,\n");
    assert!(
        e.contains("line 3") && e.contains("line 2") && e.contains("V1"),
        "{e}"
    );
    let e = err("vin,date\nV1,2024-01-01\n");
    assert!(e.contains("first_alarm_date"), "{e}");
    let e = err("");
    assert!(e.contains("empty file"), "{e}");
    let e = err("vin,first_alarm_date\nV1\n");
    assert!(e.contains("line 2"), "{e}");
}

#[test]
fn window_labels_give_window_metrics_only() {
    let labels = AlarmHistory::from_windows([
        ("A", d("2024-01-01"), false),
        ("A", d("2024-01-02"), true),
        ("B", d("2024-01-01"), false),
    ])
    .unwrap();
    assert_eq!(labels.vehicles(), 2);
    let mut preds = scored("A", "2024-01-01", &[0.2, 0.8, 0.9]);
    preds.extend(scored("B", "2024-01-01", &[0.3]));
    preds.extend(scored("Q", "2024-01-01", &[0.3]));
    let e = evaluate(&preds, &labels, &EvalConfig::default()).unwrap();
    assert_eq!((e.window.windows, e.unlabelled, e.unmatched), (3, 1, 1));
    assert_eq!(e.window.roc_auc, Some(1.0));
    assert!(e.events.is_none() && e.vehicles.is_empty());
    assert!(AlarmHistory::from_windows([("A", d("2024-01-01"), false); 2]).is_err());
}

#[test]
fn bad_calls_are_errors_that_say_why() {
    let labels = AlarmHistory::from_first_alarms([("A", None::<NaiveDate>)]).unwrap();
    let preds = scored("A", "2024-01-01", &[0.2, 0.3]);
    let msg = |p: &[Scored<'_>], c: EvalConfig| evaluate(p, &labels, &c).unwrap_err().to_string();
    let zero = EvalConfig {
        horizon: 0,
        ..EvalConfig::default()
    };
    assert!(msg(&preds, zero).contains("horizon"));
    let nan = EvalConfig {
        threshold: f32::NAN,
        ..EvalConfig::default()
    };
    assert!(msg(&preds, nan).contains("threshold"));
    let mut twice = preds.clone();
    twice.push(preds[1]);
    let e = msg(&twice, EvalConfig::default());
    assert!(e.contains("twice") && e.contains("2024-01-02"), "{e}");
    let other = scored("B", "2024-01-01", &[0.2]);
    let e = msg(&other, EvalConfig::default());
    assert!(e.contains("no prediction") && e.contains("B"), "{e}");
    let mut nanp = preds.clone();
    nanp[0].prob = f32::NAN;
    assert!(msg(&nanp, EvalConfig::default()).contains("NaN"));
    assert!(AlarmHistory::from_first_alarms([("A", None), ("A", None::<NaiveDate>)]).is_err());
}

#[test]
fn labelled_windows_and_scored_csv_are_read_with_located_errors() {
    let w = "\"V1\",2024-01-15,1.0,2.0,0.0\nV1,2024-01-16,1.0,2.0,1.0\n";
    let h = AlarmHistory::from_labelled_windows_csv(w.as_bytes(), None).unwrap();
    assert_eq!(
        h,
        AlarmHistory::from_windows([
            ("V1", d("2024-01-15"), false),
            ("V1", d("2024-01-16"), true)
        ])
        .unwrap()
    );
    let file = Some(Path::new("w.csv"));
    let e = AlarmHistory::from_labelled_windows_csv("V1,2024-01-15,1,2,0.5\n".as_bytes(), file)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("w.csv") && e.contains("line 1") && e.contains("labelled"),
        "{e}"
    );
    let e = AlarmHistory::from_labelled_windows_csv("V1,2024-13-15,1,2,0\n".as_bytes(), file)
        .unwrap_err()
        .to_string();
    assert!(e.contains("Date"), "{e}");

    let p =
        "vin,date,predicted_prob,alarm\n\"V1\",2024-01-15,0.25,false\nV2,2024-01-15,0.75,true\n";
    let rows = read_scored_csv(p.as_bytes(), None).unwrap();
    assert_eq!(
        rows,
        [
            ("V1".to_owned(), d("2024-01-15"), 0.25),
            ("V2".to_owned(), d("2024-01-15"), 0.75)
        ]
    );
    let f = Some(Path::new("p.csv"));
    let e = read_scored_csv("vin,date,predicted_prob\nV1,2024-01-15,1.5\n".as_bytes(), f)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("p.csv") && e.contains("line 2") && e.contains("predicted_prob"),
        "{e}"
    );
    let e = read_scored_csv("vin,day,prob\n".as_bytes(), f)
        .unwrap_err()
        .to_string();
    assert!(e.contains("predicted_prob"), "{e}");
}
