//! Evaluation of scored files against labels (SPEC §9), as every surface runs it: the
//! files `bms evaluate` and `bms.evaluate` read, the threshold and horizon they settle on,
//! and the text and JSON they show. The measures themselves are
//! [`bms_core::evaluate`]'s.

use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use chrono::NaiveDate;

use bms_core::evaluate::{self, AlarmHistory, EvalConfig, Evaluation, Scored};
use bms_core::io::{self, ReadMode};

use crate::FileKind;
use crate::store::SUMMARY_FILE;
use crate::summary::Summary;

/// Where the labels come from: exactly one of a daily table (CSV or Parquet; `-` for a
/// CSV on stdin), the simulator's truth file, or labelled windows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelFiles {
    pub daily: Option<PathBuf>,
    pub truth: Option<PathBuf>,
    pub windows: Option<PathBuf>,
}

fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Predictions read from a run directory or a CSV, with the run's summary if any.
pub struct ReadScores {
    pub rows: Vec<(String, NaiveDate, f32)>,
    pub summary: Option<Summary>,
}

/// Reads predictions: a `bms predict --out` directory or a CSV (`-`: stdin).
pub fn read_scores(path: &Path) -> Result<ReadScores> {
    if path.is_dir() {
        let preds = crate::store::parquet::read_predictions(path)?;
        let summary = Summary::read(&path.join(SUMMARY_FILE))?;
        let rows = preds
            .rows
            .into_iter()
            .map(|p| (p.vin, p.date, p.predicted_prob))
            .collect();
        return Ok(ReadScores {
            rows,
            summary: Some(summary),
        });
    }
    let rows = if is_stdio(path) {
        evaluate::read_scored_csv(std::io::stdin().lock(), Some(Path::new("<stdin>")))?
    } else {
        let f = std::fs::File::open(path)
            .with_context(|| format!("cannot open predictions {}", path.display()))?;
        evaluate::read_scored_csv(BufReader::new(f), Some(path))?
    };
    Ok(ReadScores {
        rows,
        summary: None,
    })
}

fn open(path: &Path, what: &str) -> Result<BufReader<std::fs::File>> {
    let f = std::fs::File::open(path)
        .with_context(|| format!("cannot open {what} {}", path.display()))?;
    Ok(BufReader::new(f))
}

/// Reads the labels named by `args` (one of them must be given).
pub fn read_labels(args: &LabelFiles) -> Result<AlarmHistory> {
    let given = [&args.daily, &args.truth, &args.windows]
        .iter()
        .filter(|p| p.is_some())
        .count();
    if given > 1 {
        bail!("give one label source: a daily table, a truth file or labelled windows");
    }
    if let Some(path) = &args.daily {
        let kind = if is_stdio(path) {
            FileKind::Csv
        } else {
            FileKind::of(path)?
        };
        let table = match kind {
            FileKind::Csv => {
                let report = if is_stdio(path) {
                    io::daily_csv::read_daily_csv_from(
                        std::io::stdin().lock(),
                        Some(Path::new("<stdin>")),
                        ReadMode::Strict,
                    )?
                } else {
                    io::read_daily_csv(path, ReadMode::Strict)?
                };
                report.data
            }
            FileKind::Parquet => io::read_daily_parquet(path)?,
            FileKind::Capture => bail!(
                "{}: a GB/T 32960 capture holds frames, not a daily table (run `bms daily` on it first)",
                path.display()
            ),
        };
        if table.rows.iter().all(|r| r.label.is_nan()) {
            bail!(
                "{}: no row has a Label (0 or 1): nothing to evaluate against",
                if is_stdio(path) {
                    Path::new("<stdin>")
                } else {
                    path
                }
                .display()
            );
        }
        return Ok(AlarmHistory::from_daily(&table));
    }
    if let Some(path) = &args.truth {
        return Ok(AlarmHistory::from_truth_csv(
            open(path, "truth file")?,
            Some(path),
        )?);
    }
    if let Some(path) = &args.windows {
        return Ok(AlarmHistory::from_labelled_windows_csv(
            open(path, "labelled windows")?,
            Some(path),
        )?);
    }
    bail!("no labels: give --daily FILE, --truth FILE or --windows FILE")
}

/// Evaluates `scores` against `labels`.
pub fn evaluate_scores(
    scores: &[(String, NaiveDate, f32)],
    labels: &AlarmHistory,
    config: &EvalConfig,
) -> Result<Evaluation> {
    let scored: Vec<Scored<'_>> = scores
        .iter()
        .map(|(vin, date, prob)| Scored {
            vin,
            date: *date,
            prob: *prob,
        })
        .collect();
    Ok(evaluate::evaluate(&scored, labels, config)?)
}

fn pct(v: Option<f64>) -> String {
    v.map_or("n/a".to_owned(), |v| format!("{:.1} %", 100.0 * v))
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or("n/a".to_owned(), |v| format!("{v:.digits$}"))
}

/// The evaluation as text for a terminal.
pub fn render_text(e: &Evaluation) -> String {
    let w = &e.window;
    let mut s = format!(
        "predictions {}: {} evaluated, {} without a label, {} not in the labels ({} vehicles)\n",
        e.predictions, w.windows, e.unlabelled, e.unmatched, e.unmatched_vehicles
    );
    s += &format!(
        "windows: {} ({} positive, horizon {} days): ROC AUC {}, average precision {}\n",
        w.windows,
        w.positives,
        e.horizon,
        num(w.roc_auc, 4),
        num(w.average_precision, 4)
    );
    s += &format!(
        "  at threshold {}: {} alerts, precision {}, recall {}, F1 {}\n",
        e.threshold,
        w.alerts,
        num(w.precision, 4),
        num(w.recall, 4),
        num(w.f1, 4)
    );
    if let Some(ev) = &e.events {
        s += &format!(
            "vehicles that alarm: {} ({} alarm after their first scored window)\n",
            ev.alarm_vehicles, ev.warnable_vehicles
        );
        s += &format!(
            "  warned ≥ 1 day ahead {} ({}), ≥ 3 days {} ({}), ≥ 7 days {} ({}); never warned {}; median lead {} days\n",
            ev.detected_1d,
            pct(ev.detection_rate_1d),
            ev.detected_3d,
            pct(ev.detection_rate_3d),
            ev.detected_7d,
            pct(ev.detection_rate_7d),
            ev.missed,
            num(ev.median_lead_days, 1)
        );
        let hist: Vec<String> = ev
            .lead_histogram
            .iter()
            .map(|b| format!("{}: {}", b.bin, b.vehicles))
            .collect();
        s += &format!("  lead time (days): {}\n", hist.join(", "));
        s += &format!(
            "vehicles that never alarm: {}, {} with a false alarm ({} per 100); {} false-alarm days of {} ({} per 1,000 vehicle-days)\n",
            ev.healthy_vehicles,
            ev.false_alarm_vehicles,
            num(ev.false_alarm_vehicles_per_100, 1),
            ev.false_alarm_windows,
            ev.healthy_windows,
            num(ev.false_alarm_days_per_1000, 1)
        );
    }
    s
}

/// The evaluation as pretty JSON with a final newline.
pub fn to_json(e: &Evaluation) -> String {
    let mut s = serde_json::to_string_pretty(e).expect("an evaluation serialises");
    s.push('\n');
    s
}

/// The threshold and horizon: given, else the run's, else the model's, else (horizon) 14.
pub fn config(
    threshold: Option<f32>,
    horizon: Option<u32>,
    model: Option<&Path>,
    summary: Option<&Summary>,
) -> Result<EvalConfig> {
    let contract = model
        .map(|m| bms_core::Model::load(m).map(|m| m.contract().clone()))
        .transpose()?;
    let threshold = threshold
        .or(summary.map(|s| s.threshold))
        .or(contract.as_ref().map(|c| c.threshold));
    let Some(threshold) = threshold else {
        bail!(
            "no threshold: CSV predictions do not say which threshold made their alarms; give --threshold or --model"
        );
    };
    if !(0.0..=1.0).contains(&threshold) {
        bail!("--threshold {threshold}: must be between 0 and 1");
    }
    let horizon = horizon
        .or(summary.and_then(|s| s.horizon_days))
        .or(contract.and_then(|c| u32::try_from(c.spec.horizon).ok()))
        .unwrap_or(14);
    if horizon == 0 {
        bail!("--horizon 0: a window's label looks at least one day ahead");
    }
    Ok(EvalConfig { threshold, horizon })
}
