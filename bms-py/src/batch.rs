//! The batch pipeline of `bms predict --out` ([`bms_batch::score`]) and the event ids of
//! its stores, for Python: `bms.score_file`, `bms.Summary`, `bms._bms.event_ids`.

use std::path::PathBuf;

use numpy::PyReadonlyArray1;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use bms_batch::{InputFormat, Job, NoObserver, Summary};
use bms_core::{DailyConfig, FeatureConfig, UtcOffset};

use crate::errors::{Kind, invalid, raise};
use crate::{PyModel, in_pool, ocv_curve};

/// Converts an error of the batch pipeline: the class comes from the first core error or
/// I/O error in its chain (by kind: a missing file is a `BmsFileNotFoundError`, also a
/// `FileNotFoundError`), the message is the whole chain.
pub(crate) fn batch_error(e: anyhow::Error) -> PyErr {
    let message = bms_batch::error_text(&e);
    for cause in e.chain() {
        if let Some(core) = cause.downcast_ref::<bms_core::BmsError>() {
            return raise(crate::errors::kind_of(core), message);
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return io_error(io.kind(), message);
        }
        if cause
            .downcast_ref::<parquet::errors::ParquetError>()
            .is_some()
            || cause.downcast_ref::<rusqlite::Error>().is_some()
        {
            return raise(Kind::Io, message);
        }
    }
    raise(Kind::Invalid, message)
}

fn io_error(kind: std::io::ErrorKind, message: String) -> PyErr {
    raise(Kind::of_io(kind), message)
}

/// The counts and facts of a `score_file` run: what `summary.json` holds.
#[pyclass(frozen, get_all, name = "Summary", module = "bms._bms")]
pub struct PySummary {
    input: String,
    format: Option<String>,
    model_id: String,
    threshold: f64,
    rows_read: u64,
    rows_rejected: u64,
    scored: u64,
    alarms: u64,
    vehicles: u64,
    feature_names: Vec<String>,
    fill_value: f64,
    horizon_days: Option<u32>,
    partitioned: bool,
    seconds: f64,
    /// For labelled input: the scores against the labels.
    evaluation: Option<Py<PyEvaluation>>,
}

/// Scores against labels (labelled batch input): ROC AUC, average precision, and
/// precision, recall and F1 at the threshold.
#[pyclass(frozen, get_all, name = "Evaluation", module = "bms._bms")]
pub struct PyEvaluation {
    labelled: u64,
    positives: u64,
    roc_auc: Option<f64>,
    average_precision: Option<f64>,
    precision: Option<f64>,
    recall: Option<f64>,
    f1: Option<f64>,
}

#[pymethods]
impl PyEvaluation {
    fn __repr__(&self) -> String {
        let f = |v: Option<f64>| v.map_or("None".to_owned(), |v| format!("{v:.4}"));
        format!(
            "Evaluation(labelled={}, positives={}, roc_auc={}, average_precision={}, precision={}, recall={}, f1={})",
            self.labelled,
            self.positives,
            f(self.roc_auc),
            f(self.average_precision),
            f(self.precision),
            f(self.recall),
            f(self.f1)
        )
    }
}

impl PySummary {
    fn new(py: Python<'_>, s: Summary) -> PyResult<Self> {
        let evaluation = s
            .evaluation
            .map(|e| {
                Py::new(
                    py,
                    PyEvaluation {
                        labelled: e.labelled,
                        positives: e.positives,
                        roc_auc: e.roc_auc,
                        average_precision: e.average_precision,
                        precision: e.precision,
                        recall: e.recall,
                        f1: e.f1,
                    },
                )
            })
            .transpose()?;
        Ok(PySummary {
            input: s.input,
            format: s.format.map(|f| f.name().to_owned()),
            model_id: s.model_id,
            threshold: crate::f32_as_shown(s.threshold),
            rows_read: s.rows_read,
            rows_rejected: s.rows_rejected,
            scored: s.scored,
            alarms: s.alarms,
            vehicles: s.vehicles,
            feature_names: s.feature_names,
            fill_value: s.fill_value,
            horizon_days: s.horizon_days,
            partitioned: s.partitioned,
            seconds: s.seconds,
            evaluation,
        })
    }
}

#[pymethods]
impl PySummary {
    /// Reads a `summary.json` written by `bms predict --out` or `score_file`.
    #[staticmethod]
    fn read(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let s = py.detach(|| Summary::read(&path)).map_err(batch_error)?;
        PySummary::new(py, s)
    }

    /// The fields as a dict (the keys of `summary.json`).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("input", &self.input)?;
        d.set_item("format", &self.format)?;
        d.set_item("model_id", &self.model_id)?;
        d.set_item("threshold", self.threshold)?;
        d.set_item("rows_read", self.rows_read)?;
        d.set_item("rows_rejected", self.rows_rejected)?;
        d.set_item("scored", self.scored)?;
        d.set_item("alarms", self.alarms)?;
        d.set_item("vehicles", self.vehicles)?;
        d.set_item("feature_names", PyList::new(py, &self.feature_names)?)?;
        d.set_item("fill_value", self.fill_value)?;
        if let Some(h) = self.horizon_days {
            d.set_item("horizon_days", h)?;
        }
        d.set_item("partitioned", self.partitioned)?;
        d.set_item("seconds", self.seconds)?;
        if let Some(e) = &self.evaluation {
            let e = e.get();
            let ed = PyDict::new(py);
            ed.set_item("labelled", e.labelled)?;
            ed.set_item("positives", e.positives)?;
            ed.set_item("roc_auc", e.roc_auc)?;
            ed.set_item("average_precision", e.average_precision)?;
            ed.set_item("precision", e.precision)?;
            ed.set_item("recall", e.recall)?;
            ed.set_item("f1", e.f1)?;
            d.set_item("evaluation", ed)?;
        }
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "Summary(input={:?}, format={}, model_id={:?}, rows_read={}, rows_rejected={}, scored={}, alarms={}, vehicles={})",
            self.input,
            self.format.as_deref().unwrap_or("None"),
            self.model_id,
            self.rows_read,
            self.rows_rejected,
            self.scored,
            self.alarms,
            self.vehicles
        )
    }
}

/// Scores a file exactly as `bms predict --out DIR` does, with the same library: the
/// stores of `out` (predictions Parquet, events.jsonl, results.sqlite, rejects.csv,
/// summary.json) replaced only when the whole input was read.
#[pyfunction]
#[pyo3(signature = (model, input, *, out, format=None, partition_by=None, strict=false, threshold=None, utc_offset=None, ocv=None))]
#[allow(clippy::too_many_arguments)]
pub fn score_file(
    py: Python<'_>,
    model: &PyModel,
    input: PathBuf,
    out: PathBuf,
    format: Option<&str>,
    partition_by: Option<&str>,
    strict: bool,
    threshold: Option<f32>,
    utc_offset: Option<&str>,
    ocv: Option<&Bound<'_, PyAny>>,
) -> PyResult<PySummary> {
    let format = format
        .map(|f| f.parse::<InputFormat>().map_err(invalid))
        .transpose()?;
    let partition_by_date = match partition_by {
        None => false,
        Some("date") => true,
        Some(other) => {
            return Err(invalid(format!(
                "partition_by: '{other}' is not a partition scheme (only 'date')"
            )));
        }
    };
    let mut daily_config = DailyConfig::default();
    if let Some(ocv) = ocv {
        daily_config.features =
            FeatureConfig::new(ocv_curve(ocv)?, bms_core::features::DEFAULT_ALARM_SPREAD_V)
                .map_err(crate::errors::to_py)?;
    }
    if let Some(offset) = utc_offset {
        daily_config.utc_offset = offset.parse::<UtcOffset>().map_err(crate::errors::to_py)?;
    }
    let job = Job {
        format,
        strict,
        threshold,
        daily_config,
        partition_by_date,
        ..Job::default()
    };
    let model = model.inner.clone();
    let summary = py
        .detach(|| in_pool(|| bms_batch::score_to_dir(&input, &model, &job, &out, &NoObserver)))
        .map_err(batch_error)?;
    PySummary::new(py, summary)
}

/// The event id of each (vin, day) key for `model_id`: days since 1970-01-01.
#[pyfunction]
pub fn event_ids(
    py: Python<'_>,
    vins: Vec<String>,
    days: PyReadonlyArray1<'_, i64>,
    model_id: &str,
) -> PyResult<Vec<String>> {
    let days = days
        .as_slice()
        .map_err(|_| invalid("days: not contiguous"))?;
    if days.len() != vins.len() {
        return Err(invalid(format!(
            "event_ids: {} VINs but {} days",
            vins.len(),
            days.len()
        )));
    }
    let dates = days
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            bms_core::daily::date_of_day(d)
                .ok_or_else(|| invalid(format!("days[{i}]: {d} is not a representable date")))
        })
        .collect::<PyResult<Vec<_>>>()?;
    Ok(py.detach(|| {
        vins.iter()
            .zip(dates)
            .map(|(v, d)| bms_batch::store::event_id(v, d, model_id))
            .collect()
    }))
}

/// Parses a UTC offset as the command line does (`Z`, `UTC`, `±HH`, `±HHMM`,
/// `±HH:MM`): its seconds east of UTC.
#[pyfunction]
pub fn parse_utc_offset(s: &str) -> PyResult<i32> {
    s.parse::<UtcOffset>()
        .map(|o| o.seconds())
        .map_err(crate::errors::to_py)
}

/// Parses alarm flags given as text as the frames CSV reader does (decimal or `0x` hex,
/// a u32; `None` when blank).
#[pyfunction]
pub fn parse_alarm_flags(s: &str) -> PyResult<Option<u32>> {
    bms_core::io::frame_csv::parse_alarm_flags(s).map_err(invalid)
}
