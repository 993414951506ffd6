//! `read_daily_csv`, `read_batch_csv`: the core's readers (`bms_core::io`).

use std::collections::HashMap;
use std::path::PathBuf;

use numpy::{IntoPyArray, PyArray2};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use bms_core::daily::day_of_date;
use bms_core::io::batch_csv::BatchOptions;

use crate::errors::to_py;

use crate::convert::*;

/// Reads a daily CSV file. Returns `(table columns, rejects, read, accepted)`.
#[pyfunction]
#[pyo3(signature = (path, strict=true))]
pub(crate) fn read_daily_csv<'py>(
    py: Python<'py>,
    path: PathBuf,
    strict: bool,
) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyDict>, u64, u64)> {
    let report = py
        .detach(|| bms_core::io::read_daily_csv(&path, mode(strict)))
        .map_err(to_py)?;
    Ok((
        table_to_py(py, &report.data)?,
        rejects_to_py(py, &report.rejects)?,
        report.read,
        report.accepted,
    ))
}

/// Reads a batch scoring CSV file (SPEC §6). Returns `(data, rejects, read, accepted)`
/// where data has `vins`, `codes`, `days`, `x` `[n, width]` float32, `labels` (or None) and
/// `lines`.
#[pyfunction]
#[pyo3(signature = (path, width=84, labels=false, strict=false))]
pub(crate) fn read_batch_csv<'py>(
    py: Python<'py>,
    path: PathBuf,
    width: usize,
    labels: bool,
    strict: bool,
) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyDict>, u64, u64)> {
    let options = BatchOptions {
        width,
        labels,
        mode: mode(strict),
    };
    let report = py
        .detach(|| bms_core::io::read_batch_csv(&path, options))
        .map_err(to_py)?;
    let data = report.data;
    let mut vins: Vec<&str> = Vec::new();
    let mut lookup: HashMap<&str, i64> = HashMap::new();
    let codes: Vec<i64> = data
        .keys
        .iter()
        .map(|k| {
            *lookup.entry(k.vin.as_str()).or_insert_with(|| {
                vins.push(k.vin.as_str());
                (vins.len() - 1) as i64
            })
        })
        .collect();
    let d = PyDict::new(py);
    d.set_item("vins", PyList::new(py, &vins)?)?;
    d.set_item("codes", codes.into_pyarray(py))?;
    let days: Vec<i64> = data.keys.iter().map(|k| day_of_date(k.date)).collect();
    d.set_item("days", days.into_pyarray(py))?;
    d.set_item("x", PyArray2::from_owned_array(py, data.x))?;
    match data.labels {
        Some(l) => d.set_item("labels", l.into_pyarray(py))?,
        None => d.set_item("labels", py.None())?,
    }
    let lines: Vec<i64> = data.lines.iter().map(|&l| l as i64).collect();
    d.set_item("lines", lines.into_pyarray(py))?;
    Ok((
        d,
        rejects_to_py(py, &report.rejects)?,
        report.read,
        report.accepted,
    ))
}
