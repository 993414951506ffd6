//! End to end with the shipped reference model: `bms simulate` → `bms windows` →
//! `bms predict -m models/consistency-ref14x6.onnx`, on a fleet the model never saw.

mod common;

use common::{ok, p};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use chrono::NaiveDate;

fn model_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/consistency-ref14x6.onnx")
}

struct Truth {
    weak: bool,
    first_alarm: Option<NaiveDate>,
}

fn read_truth(path: &Path) -> HashMap<String, Truth> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (vin, weak, first) = (col("vin"), col("weak"), col("first_alarm_date"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let t = Truth {
                weak: f[weak] == "1",
                first_alarm: (!f[first].is_empty()).then(|| f[first].parse().unwrap()),
            };
            (f[vin].to_owned(), t)
        })
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn simulate_windows_predict_with_the_shipped_reference_model() {
    let model = bms_core::Model::load(model_path()).unwrap();
    let threshold = model.contract().threshold;
    assert_eq!(model.contract().model_id, "consistency-ref14x6-v1");

    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name);
    let (daily, truth, win) = (d("daily.csv"), d("truth.csv"), d("w.csv"));
    // A fleet the model was not trained on (other seed), enriched with weak cells so that
    // enough vehicles alarm inside 60 days.
    ok(&[
        "simulate",
        "--vehicles",
        "30",
        "--days",
        "60",
        "--seed",
        "4242",
        "--weak-fraction",
        "0.4",
        "--interval",
        "30s",
        "--daily",
        p(&daily),
        "--truth",
        p(&truth),
    ]);
    ok(&["windows", "-i", p(&daily), "-o", p(&win)]);
    let windows = std::fs::read_to_string(&win).unwrap();
    let n_windows = windows.lines().count();
    // One window per daily row after each vehicle's first 14 (a vehicle's table runs from
    // its first to its last day with data).
    let mut rows_per_vin: HashMap<String, usize> = HashMap::new();
    for line in std::fs::read_to_string(&daily).unwrap().lines().skip(1) {
        *rows_per_vin
            .entry(line.split(',').next().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(rows_per_vin.len(), 30);
    let expected: usize = rows_per_vin.values().map(|n| n.saturating_sub(14)).sum();
    assert_eq!(n_windows, expected);
    assert!(n_windows > 30 * 40, "{n_windows} windows");
    for line in windows.lines() {
        assert_eq!(line.split(',').count(), 2 + 84);
    }

    let out = ok(&["predict", "-m", p(&model_path()), "-i", p(&win)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("scored {n_windows}, rejected 0")),
        "{stderr}"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut lines = stdout.lines();
    assert_eq!(lines.next().unwrap(), "vin,date,predicted_prob,alarm");
    let preds: Vec<(String, NaiveDate, f64, bool)> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 4, "{l}");
            let prob: f64 = f[2].parse().unwrap();
            assert!((0.0..=1.0).contains(&prob), "{l}");
            let alarm = match f[3] {
                "1" => true,
                "0" => false,
                other => panic!("alarm column {other:?}"),
            };
            assert_eq!(
                alarm,
                prob as f32 >= threshold,
                "{l} vs threshold {threshold}"
            );
            (f[0].to_owned(), f[1].parse().unwrap(), prob, alarm)
        })
        .collect();
    // Every window line is scored, in order, under its own key.
    assert_eq!(preds.len(), n_windows);
    for (line, (vin, date, _, _)) in windows.lines().zip(&preds) {
        assert!(line.starts_with(&format!("{vin},{date},")), "{line}");
    }

    // The model learned the mechanism: weak-cell vehicles score higher in the two weeks
    // before their first alarm than healthy vehicles do on any day.
    let truth = read_truth(&truth);
    let mut before_first_alarm = Vec::new();
    let mut healthy = Vec::new();
    let mut warned: HashSet<&str> = HashSet::new();
    for (vin, date, prob, _) in &preds {
        let t = &truth[vin];
        if !t.weak {
            healthy.push(*prob);
        } else if let Some(first) = t.first_alarm {
            let lead = (first - *date).num_days();
            if (1..=14).contains(&lead) {
                before_first_alarm.push(*prob);
                warned.insert(vin);
            }
        }
    }
    assert!(
        warned.len() >= 4,
        "only {} weak vehicles with windows before their first alarm",
        warned.len()
    );
    assert!(healthy.len() > 200, "{} healthy windows", healthy.len());
    let (weak_mean, healthy_mean) = (mean(&before_first_alarm), mean(&healthy));
    eprintln!(
        "{} weak vehicles, {} windows before first alarm: mean {weak_mean:.4}; \
         {} healthy windows: mean {healthy_mean:.4}",
        warned.len(),
        before_first_alarm.len(),
        healthy.len()
    );
    assert!(
        weak_mean > 2.0 * healthy_mean && weak_mean - healthy_mean > 0.05,
        "weak vehicles before first alarm {weak_mean:.4} vs healthy {healthy_mean:.4}"
    );
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `bms evaluate` on a fleet the model never saw: the figures of a run directory equal
/// those of the same predictions as CSV, and each vehicle's first alert and lead time
/// equal what the predictions and the truth file say when read here independently.
#[test]
fn evaluate_measures_lead_times_against_the_truth_and_the_daily_labels() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name);
    let (daily, truth, run) = (d("daily.csv"), d("truth.csv"), d("run"));
    ok(&[
        "simulate",
        "--vehicles",
        "24",
        "--days",
        "70",
        "--seed",
        "9090",
        "--weak-fraction",
        "0.4",
        "--interval",
        "30s",
        "--daily",
        p(&daily),
        "--truth",
        p(&truth),
    ]);
    ok(&[
        "predict",
        "-m",
        p(&model_path()),
        "-i",
        p(&daily),
        "--out",
        p(&run),
    ]);
    let csv_out = ok(&["predict", "-m", p(&model_path()), "-i", p(&daily)]);
    std::fs::write(d("preds.csv"), &csv_out.stdout).unwrap();
    let threshold = bms_core::Model::load(model_path())
        .unwrap()
        .contract()
        .threshold;

    let by_dir = json(&ok(&[
        "evaluate",
        p(&run),
        "--truth",
        p(&truth),
        "--json",
        "-",
    ]));
    let by_csv = json(&ok(&[
        "evaluate",
        p(&d("preds.csv")),
        "--truth",
        p(&truth),
        "--json",
        "-",
        "--threshold",
        &threshold.to_string(),
    ]));
    assert_eq!(by_dir, by_csv);
    assert_eq!(by_dir["labels"], "first_alarms");
    assert_eq!(by_dir["horizon"], 14); // from summary.json
    let e = &by_dir;

    // Independently: predictions and truth as text.
    let truth = read_truth(&truth);
    let text = String::from_utf8(csv_out.stdout).unwrap();
    let mut first_alert: HashMap<String, NaiveDate> = HashMap::new();
    let mut windows: HashMap<String, u64> = HashMap::new();
    let mut unlabelled = 0u64;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let vin = f[0].trim_matches('"').to_owned();
        let date: NaiveDate = f[1].parse().unwrap();
        let prob: f32 = f[2].parse().unwrap();
        if truth[&vin].first_alarm.is_some_and(|a| date > a) {
            unlabelled += 1;
        }
        *windows.entry(vin.clone()).or_default() += 1;
        if prob >= threshold {
            first_alert.entry(vin).or_insert(date);
        }
    }
    let n: u64 = windows.values().sum();
    assert_eq!(e["predictions"], n);
    assert_eq!(e["unlabelled"], unlabelled);
    assert_eq!(e["window"]["windows"], n - unlabelled);
    let vehicles = e["vehicles"].as_array().unwrap();
    assert_eq!(vehicles.len(), windows.len());
    let (mut alarmed, mut d7, mut fa_vehicles) = (0u64, 0u64, 0u64);
    for v in vehicles {
        let vin = v["vin"].as_str().unwrap();
        let t = &truth[vin];
        assert_eq!(v["windows"], windows[vin], "{vin}");
        let alert = first_alert.get(vin).copied();
        assert_eq!(
            v["first_alert"],
            serde_json::json!(alert.map(|a| a.to_string())),
            "{vin}"
        );
        assert_eq!(
            v["first_alarm"],
            serde_json::json!(t.first_alarm.map(|a| a.to_string()))
        );
        let lead = t.first_alarm.zip(alert).map(|(a, w)| (a - w).num_days());
        assert_eq!(v["lead_days"], serde_json::json!(lead), "{vin}");
        if t.first_alarm.is_some() {
            alarmed += 1;
            d7 += u64::from(lead.is_some_and(|l| l >= 7));
        } else if alert.is_some() {
            fa_vehicles += 1;
        }
    }
    let ev = &e["events"];
    assert!(alarmed >= 4, "{alarmed} vehicles alarm");
    assert_eq!(ev["alarm_vehicles"], alarmed);
    assert_eq!(ev["detected_7d"], d7);
    assert_eq!(ev["false_alarm_vehicles"], fa_vehicles);
    let hist: u64 = ev["lead_histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["vehicles"].as_u64().unwrap())
        .sum();
    assert_eq!(hist, alarmed);
    let auc = e["window"]["roc_auc"].as_f64().unwrap();
    assert!(auc > 0.5, "ROC AUC {auc} on truth labels");

    // Daily labels know every alarm day: no window is unlabelled, and the text says so.
    let out = ok(&[
        "evaluate",
        p(&run),
        "--daily",
        p(&daily),
        "--json",
        p(&d("ev.json")),
    ]);
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(
        shown.contains("0 without a label") && shown.contains("ROC AUC"),
        "{shown}"
    );
    assert!(shown.contains("≥ 7 days"), "{shown}");
    let daily_e: serde_json::Value = serde_json::from_str(&common::text(&d("ev.json"))).unwrap();
    assert_eq!(daily_e["labels"], "daily");
    assert_eq!(daily_e["window"]["windows"], n);
    // The first alarm day is the same in both label sources.
    for (a, b) in daily_e["vehicles"].as_array().unwrap().iter().zip(vehicles) {
        assert_eq!(a["first_alarm"], b["first_alarm"], "{}", a["vin"]);
    }

    // Labelled windows: window metrics equal `bms predict`'s own evaluation of them.
    ok(&["windows", "-i", p(&daily), "--labels", "-o", p(&d("w.csv"))]);
    let wrun = d("wrun");
    ok(&[
        "predict",
        "-m",
        p(&model_path()),
        "-i",
        p(&d("w.csv")),
        "--out",
        p(&wrun),
    ]);
    let summary: serde_json::Value =
        serde_json::from_str(&common::text(&wrun.join("summary.json"))).unwrap();
    let w = json(&ok(&[
        "evaluate",
        p(&wrun),
        "--windows",
        p(&d("w.csv")),
        "--json",
        "-",
    ]));
    assert_eq!(w["labels"], "windows");
    assert!(w["events"].is_null());
    for k in ["roc_auc", "average_precision", "precision", "recall", "f1"] {
        assert_eq!(w["window"][k], summary["evaluation"][k], "{k}");
    }
    assert_eq!(w["window"]["windows"], summary["evaluation"]["labelled"]);
    // The daily table labels the windows the same way `bms windows --labels` does.
    assert_eq!(w["window"]["positives"], daily_e["window"]["positives"]);
    assert_eq!(w["window"]["roc_auc"], daily_e["window"]["roc_auc"]);
}

#[test]
fn evaluate_refuses_what_it_cannot_measure_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name);
    std::fs::write(
        d("p.csv"),
        "vin,date,predicted_prob,alarm\nV1,2024-01-15,0.3,0\n",
    )
    .unwrap();
    std::fs::write(d("t.csv"), "vin,first_alarm_date\nV1,2024-01-20\n").unwrap();
    let fails = |args: &[&str], want: &[&str]| {
        let out = common::bms(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let e = common::stderr(&out);
        for w in want {
            assert!(e.contains(w), "{args:?}: {e} lacks {w}");
        }
    };
    fails(&["evaluate", p(&d("p.csv"))], &["--daily", "--truth"]);
    fails(
        &["evaluate", p(&d("p.csv")), "--truth", p(&d("t.csv"))],
        &["--threshold"],
    );
    fails(
        &[
            "evaluate",
            p(&d("p.csv")),
            "--truth",
            p(&d("t.csv")),
            "--daily",
            p(&d("t.csv")),
        ],
        &["cannot be used with"],
    );
    fails(
        &[
            "evaluate",
            p(&d("nope.csv")),
            "--truth",
            p(&d("t.csv")),
            "--threshold",
            "0.5",
        ],
        &["nope.csv"],
    );
    std::fs::write(d("t2.csv"), "vin,first_alarm_date\nV9,2024-01-20\n").unwrap();
    fails(
        &[
            "evaluate",
            p(&d("p.csv")),
            "--truth",
            p(&d("t2.csv")),
            "--threshold",
            "0.5",
        ],
        &["no prediction", "V1"],
    );
    fails(
        &[
            "evaluate",
            p(&d("p.csv")),
            "--truth",
            p(&d("t.csv")),
            "--threshold",
            "1.5",
        ],
        &["between 0 and 1"],
    );
    std::fs::write(d("bad.csv"), "vin,date,predicted_prob\nV1,2024-01-15,x\n").unwrap();
    fails(
        &[
            "evaluate",
            p(&d("bad.csv")),
            "--truth",
            p(&d("t.csv")),
            "--threshold",
            "0.5",
        ],
        &["bad.csv", "line 2", "predicted_prob"],
    );
    // From stdin, with the threshold of a model's contract.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bms"))
        .args([
            "evaluate",
            "-",
            "--truth",
            p(&d("t.csv")),
            "-m",
            p(&model_path()),
        ])
        .stdin(std::fs::File::open(d("p.csv")).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("at threshold 0.2"), "{text}");
    assert!(text.contains("vehicles that alarm: 1"), "{text}");
}
