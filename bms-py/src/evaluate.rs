//! Predictions against labels (SPEC §9) for Python: `bms.evaluate`. Files go through
//! [`bms_batch::evaluate`] exactly as `bms evaluate` reads them; in-memory tables arrive
//! as columns. Both return the evaluation as the JSON text `bms evaluate --json` writes.

use std::path::PathBuf;

use numpy::PyReadonlyArray1;
use pyo3::prelude::*;

use bms_batch::evaluate::{LabelFiles, config, evaluate_scores, read_labels, read_scores, to_json};
use bms_core::evaluate::{AlarmHistory, EvalConfig, Scored, evaluate};
use bms_core::{DailyRow, DailyTable};

use crate::batch::batch_error;
use crate::errors::{invalid, to_py};

/// `bms evaluate` on files: a run directory or predictions CSV, and one label file.
#[pyfunction]
#[pyo3(signature = (predictions, *, daily=None, truth=None, windows=None, threshold=None, horizon=None, model=None))]
#[allow(clippy::too_many_arguments)]
pub fn evaluate_files(
    py: Python<'_>,
    predictions: PathBuf,
    daily: Option<PathBuf>,
    truth: Option<PathBuf>,
    windows: Option<PathBuf>,
    threshold: Option<f32>,
    horizon: Option<u32>,
    model: Option<PathBuf>,
) -> PyResult<String> {
    let files = LabelFiles {
        daily,
        truth,
        windows,
    };
    py.detach(|| {
        let scores = read_scores(&predictions)?;
        let cfg = config(
            threshold,
            horizon,
            model.as_deref(),
            scores.summary.as_ref(),
        )?;
        let labels = read_labels(&files)?;
        let e = evaluate_scores(&scores.rows, &labels, &cfg)?;
        Ok(to_json(&e))
    })
    .map_err(batch_error)
}

fn dates(days: &[i64], what: &str, none_allowed: bool) -> PyResult<Vec<Option<chrono::NaiveDate>>> {
    days.iter()
        .enumerate()
        .map(|(i, &d)| {
            if none_allowed && d == i64::MIN {
                return Ok(None);
            }
            bms_core::daily::date_of_day(d)
                .map(Some)
                .ok_or_else(|| invalid(format!("{what}[{i}]: {d} is not a representable date")))
        })
        .collect()
}

fn slice<'a, T: numpy::Element>(a: &'a PyReadonlyArray1<'_, T>, what: &str) -> PyResult<&'a [T]> {
    a.as_slice()
        .map_err(|_| invalid(format!("{what}: not a contiguous array")))
}

/// Columns in memory: predictions (`vins`, `days` since 1970-01-01, `probs`) and labels of
/// `kind` — `"daily"` (a day's `Label`), `"first_alarms"` (a vehicle's first alarm day,
/// `i64::MIN` for none; values unused) or `"windows"` (a window's label, 0 or 1).
#[pyfunction]
#[pyo3(signature = (vins, days, probs, *, kind, label_vins, label_days, label_values, threshold, horizon))]
#[allow(clippy::too_many_arguments)]
pub fn evaluate_arrays(
    py: Python<'_>,
    vins: Vec<String>,
    days: PyReadonlyArray1<'_, i64>,
    probs: PyReadonlyArray1<'_, f32>,
    kind: &str,
    label_vins: Vec<String>,
    label_days: PyReadonlyArray1<'_, i64>,
    label_values: PyReadonlyArray1<'_, f64>,
    threshold: f32,
    horizon: u32,
) -> PyResult<String> {
    let (days, probs) = (slice(&days, "days")?, slice(&probs, "probs")?);
    let (ldays, lvalues) = (
        slice(&label_days, "label_days")?,
        slice(&label_values, "label_values")?,
    );
    if days.len() != vins.len() || probs.len() != vins.len() {
        return Err(invalid(format!(
            "predictions: {} VINs, {} dates and {} probabilities",
            vins.len(),
            days.len(),
            probs.len()
        )));
    }
    if ldays.len() != label_vins.len() || lvalues.len() != label_vins.len() {
        return Err(invalid(format!(
            "labels: {} VINs, {} dates and {} values",
            label_vins.len(),
            ldays.len(),
            lvalues.len()
        )));
    }
    let pdates = dates(days, "days", false)?;
    let ldates = dates(ldays, "label_days", kind == "first_alarms")?;
    let labels = match kind {
        "daily" => {
            let rows = label_vins
                .iter()
                .zip(&ldates)
                .zip(lvalues)
                .map(|((v, d), &l)| {
                    let mut r = DailyRow::empty(v, d.expect("dates of daily labels are given"));
                    r.label = l;
                    r
                })
                .collect();
            AlarmHistory::from_daily(&DailyTable { rows })
        }
        "first_alarms" => {
            AlarmHistory::from_first_alarms(label_vins.iter().zip(ldates.iter().copied()))
                .map_err(to_py)?
        }
        "windows" => {
            let mut w = Vec::with_capacity(label_vins.len());
            for (i, ((v, d), &l)) in label_vins.iter().zip(&ldates).zip(lvalues).enumerate() {
                if l != 0.0 && l != 1.0 {
                    return Err(invalid(format!("window labels[{i}]: {l} is not 0 or 1")));
                }
                w.push((
                    v.as_str(),
                    d.expect("dates of window labels are given"),
                    l == 1.0,
                ));
            }
            AlarmHistory::from_windows(w).map_err(to_py)?
        }
        other => {
            return Err(invalid(format!(
                "kind: '{other}' is not one of 'daily', 'first_alarms', 'windows'"
            )));
        }
    };
    let scored: Vec<Scored<'_>> = vins
        .iter()
        .zip(pdates)
        .zip(probs)
        .map(|((vin, d), &prob)| Scored {
            vin,
            date: d.expect("prediction dates are given"),
            prob,
        })
        .collect();
    let e = py
        .detach(|| evaluate(&scored, &labels, &EvalConfig { threshold, horizon }))
        .map_err(to_py)?;
    Ok(to_json(&e))
}
