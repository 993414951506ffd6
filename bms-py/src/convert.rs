//! Shared conversions of the bindings: OCV curves, alarm flags, VIN lists, daily tables and rejects to Python.

use std::collections::HashMap;
use std::str::FromStr;

use ndarray::ArrayView2;
use numpy::{IntoPyArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use bms_core::daily::{DailyColumn, day_of_date};
use bms_core::io::{ReadMode, Reject};
use bms_core::{BmsError, Chemistry, DailyTable, FeatureConfig, OcvCurve};

use crate::arrays::{Floats2, floats2};
use crate::errors::{invalid, to_py};

/// Rows of a 2-D float array as f64 slices: borrowed from C-contiguous float64 data,
/// copied row by row otherwise (float32, strided views).
pub(crate) enum Rows<'a> {
    Contiguous(&'a [f64], usize),
    F64(ArrayView2<'a, f64>),
    F32(ArrayView2<'a, f32>),
}

impl<'a> Rows<'a> {
    pub(crate) fn new(a: &'a Floats2<'_>) -> Self {
        match a {
            // `as_slice` also accepts Fortran order: only C order is rows back to back.
            Floats2::F64(a) => match a.as_slice() {
                Ok(s) if a.is_c_contiguous() => Rows::Contiguous(s, a.shape()[1]),
                _ => Rows::F64(a.as_array()),
            },
            Floats2::F32(a) => Rows::F32(a.as_array()),
        }
    }

    pub(crate) fn row<'b>(&'b self, i: usize, buf: &'b mut Vec<f64>) -> &'b [f64] {
        match self {
            Rows::Contiguous(s, w) => &s[i * w..(i + 1) * w],
            Rows::F64(v) => {
                buf.clear();
                buf.extend(v.row(i).iter().copied());
                buf
            }
            Rows::F32(v) => {
                buf.clear();
                buf.extend(v.row(i).iter().map(|&x| f64::from(x)));
                buf
            }
        }
    }
}

/// The OCV curve from `ocv`: a chemistry name (`"nmc"`, `"lfp"`) or a `[k, 2]` float array
/// of (soc %, volts) points.
pub(crate) fn ocv_curve(ocv: &Bound<'_, PyAny>) -> PyResult<OcvCurve> {
    if let Ok(s) = ocv.cast::<PyString>() {
        let name = s.to_cow()?;
        let chem = Chemistry::from_str(&name).map_err(to_py)?;
        return Ok(OcvCurve::for_chemistry(chem));
    }
    let a = floats2(ocv, "ocv table")?;
    let (k, w) = a.shape();
    if w != 2 {
        return Err(invalid(format!(
            "ocv table: expected a [k, 2] array of (soc %, volts) points, got {k} × {w}"
        )));
    }
    let rows = Rows::new(&a);
    let mut buf = Vec::new();
    let points: Vec<(f64, f64)> = (0..k)
        .map(|i| {
            let r = rows.row(i, &mut buf);
            (r[0], r[1])
        })
        .collect();
    OcvCurve::new(&points).map_err(to_py)
}

pub(crate) fn feature_config(
    ocv: &Bound<'_, PyAny>,
    alarm_spread_v: f64,
) -> PyResult<FeatureConfig> {
    FeatureConfig::new(ocv_curve(ocv)?, alarm_spread_v).map_err(to_py)
}

/// Optional alarm flags given as int64 with negative = absent.
pub(crate) fn alarm_flag(v: i64, row: usize) -> Result<Option<u32>, BmsError> {
    if v < 0 {
        Ok(None)
    } else {
        u32::try_from(v).map(Some).map_err(|_| {
            BmsError::invalid(
                "alarm_flags",
                format!("row {}: {v} does not fit in 32 bits", row + 1),
            )
        })
    }
}

pub(crate) fn vin_strings(vins: &Bound<'_, PyList>) -> PyResult<Vec<String>> {
    vins.iter()
        .enumerate()
        .map(|(i, v)| {
            v.extract::<String>()
                .map_err(|_| invalid(format!("VIN #{}: expected a string", i + 1)))
        })
        .collect()
}

/// Columnar form of a daily table for Python: unique VINs (first-appearance order), a code
/// per row, day numbers (days since 1970-01-01), every numeric column, `Label`.
pub(crate) fn table_to_py<'py>(
    py: Python<'py>,
    table: &DailyTable,
) -> PyResult<Bound<'py, PyDict>> {
    let n = table.rows.len();
    let mut vins: Vec<&str> = Vec::new();
    let mut codes = Vec::with_capacity(n);
    let mut days = Vec::with_capacity(n);
    let mut cols: Vec<Vec<f64>> = (0..DailyColumn::ALL.len())
        .map(|_| Vec::with_capacity(n))
        .collect();
    let mut label = Vec::with_capacity(n);
    let mut lookup: HashMap<&str, i64> = HashMap::new();
    for r in &table.rows {
        let code = match vins.last() {
            Some(&last) if last == r.vin => (vins.len() - 1) as i64,
            _ => *lookup.entry(r.vin.as_str()).or_insert_with(|| {
                vins.push(r.vin.as_str());
                (vins.len() - 1) as i64
            }),
        };
        codes.push(code);
        days.push(day_of_date(r.date));
        for (c, col) in cols.iter_mut().enumerate() {
            col.push(r.values[c]);
        }
        label.push(r.label);
    }
    let d = PyDict::new(py);
    d.set_item("vins", PyList::new(py, vins)?)?;
    d.set_item("codes", codes.into_pyarray(py))?;
    d.set_item("days", days.into_pyarray(py))?;
    for (c, col) in DailyColumn::ALL.iter().zip(cols) {
        d.set_item(c.name(), col.into_pyarray(py))?;
    }
    d.set_item("Label", label.into_pyarray(py))?;
    Ok(d)
}

pub(crate) fn rejects_to_py<'py>(
    py: Python<'py>,
    rejects: &[Reject],
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let lines: Vec<i64> = rejects.iter().map(|r| r.line as i64).collect();
    d.set_item("line", lines.into_pyarray(py))?;
    d.set_item(
        "reason",
        PyList::new(py, rejects.iter().map(|r| r.reason.as_str()))?,
    )?;
    Ok(d)
}

pub(crate) fn mode(strict: bool) -> ReadMode {
    if strict {
        ReadMode::Strict
    } else {
        ReadMode::Lenient
    }
}
