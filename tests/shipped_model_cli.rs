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
