//! `bms._bms`: the native module of the `bms` Python package, a thin layer over `bms-core`.
//!
//! Functions here take and return plain numpy arrays, lists and dicts; the pure-Python
//! package `bms` (bms-py/python/bms) turns them into pandas DataFrames and validates the
//! friendlier arguments. Every compute call releases the interpreter lock
//! ([`Python::detach`]); C-contiguous float arrays are borrowed, not copied.

mod arrays;
mod batch;
mod errors;
mod vins;

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::NaiveDate;
use ndarray::{Array2, ArrayView2};
use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyUntypedArrayMethods};
use pyo3::exceptions::PyMemoryError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use rayon::prelude::*;

use bms_core::daily::{DailyColumn, EXTENDED_COLUMNS, REFERENCE_COLUMNS, day_of_date};
use bms_core::features::{FRAME_FEATURE_FLOAT_NAMES, FRAME_FEATURE_NAMES};
use bms_core::io::batch_csv::BatchOptions;
use bms_core::io::{ReadMode, Reject};
use bms_core::simulate::for_each_frame;
use bms_core::{
    BmsError, Chemistry, ColumnPlan, ContractSource, DailyColumns, DailyConfig, DailyTable,
    FeatureConfig, FrameRef, Frames, Model, OcvCurve, SimConfig, UtcOffset, WindowSpec,
};

use arrays::{Buffer, Floats2, array1, floats2, slice1, view};
use errors::{invalid, to_py, to_py_model};

// ---------------------------------------------------------------------------------------
// Shared conversions

/// Rows of a 2-D float array as f64 slices: borrowed from C-contiguous float64 data,
/// copied row by row otherwise (float32, strided views).
enum Rows<'a> {
    Contiguous(&'a [f64], usize),
    F64(ArrayView2<'a, f64>),
    F32(ArrayView2<'a, f32>),
}

impl<'a> Rows<'a> {
    fn new(a: &'a Floats2<'_>) -> Self {
        match a {
            // `as_slice` also accepts Fortran order: only C order is rows back to back.
            Floats2::F64(a) => match a.as_slice() {
                Ok(s) if a.is_c_contiguous() => Rows::Contiguous(s, a.shape()[1]),
                _ => Rows::F64(a.as_array()),
            },
            Floats2::F32(a) => Rows::F32(a.as_array()),
        }
    }

    fn row<'b>(&'b self, i: usize, buf: &'b mut Vec<f64>) -> &'b [f64] {
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

fn feature_config(ocv: &Bound<'_, PyAny>, alarm_spread_v: f64) -> PyResult<FeatureConfig> {
    FeatureConfig::new(ocv_curve(ocv)?, alarm_spread_v).map_err(to_py)
}

/// Optional alarm flags given as int64 with negative = absent.
fn alarm_flag(v: i64, row: usize) -> Result<Option<u32>, BmsError> {
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

fn vin_strings(vins: &Bound<'_, PyList>) -> PyResult<Vec<String>> {
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
fn table_to_py<'py>(py: Python<'py>, table: &DailyTable) -> PyResult<Bound<'py, PyDict>> {
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

fn rejects_to_py<'py>(py: Python<'py>, rejects: &[Reject]) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let lines: Vec<i64> = rejects.iter().map(|r| r.line as i64).collect();
    d.set_item("line", lines.into_pyarray(py))?;
    d.set_item(
        "reason",
        PyList::new(py, rejects.iter().map(|r| r.reason.as_str()))?,
    )?;
    Ok(d)
}

fn mode(strict: bool) -> ReadMode {
    if strict {
        ReadMode::Strict
    } else {
        ReadMode::Lenient
    }
}

// ---------------------------------------------------------------------------------------
// Frame features

/// Frame features (SPEC §3) of every row: `cells` is `[frames, cells]`, `temps`
/// `[frames, probes]` (float32 or float64; NaN = invalid reading), `soc` the BMS SOC per
/// frame (float64), `alarm_flags` int64 per frame (negative = absent), `ocv` a chemistry
/// name or a `[k, 2]` table. Returns a dict of columns.
#[pyfunction]
#[pyo3(signature = (cells, temps, soc=None, alarm_flags=None, ocv=None, alarm_spread_v=0.10))]
fn frame_features<'py>(
    py: Python<'py>,
    cells: &Bound<'py, PyAny>,
    temps: &Bound<'py, PyAny>,
    soc: Option<&Bound<'py, PyAny>>,
    alarm_flags: Option<&Bound<'py, PyAny>>,
    ocv: Option<&Bound<'py, PyAny>>,
    alarm_spread_v: f64,
) -> PyResult<Bound<'py, PyDict>> {
    let cells = floats2(cells, "cell_voltages")?;
    let temps = floats2(temps, "temperatures")?;
    let (n, nc) = cells.shape();
    let (nt, np_) = temps.shape();
    if nt != n {
        return Err(invalid(format!(
            "temperatures: expected {n} rows (one per frame, as cell_voltages), got {nt}"
        )));
    }
    if n > 0 && (nc == 0 || np_ == 0) {
        return Err(invalid(format!(
            "frames need at least one cell and one probe, got {nc} cells and {np_} probes"
        )));
    }
    let soc = soc.map(|s| array1::<f64>(s, "soc", Some(n))).transpose()?;
    let flags = alarm_flags
        .map(|s| array1::<i64>(s, "alarm_flags", Some(n)))
        .transpose()?;
    let config = match ocv {
        Some(o) => feature_config(o, alarm_spread_v)?,
        None => feature_config(&PyString::new(py, "nmc").into_any(), alarm_spread_v)?,
    };
    let soc_s = soc.as_ref().map(slice1);
    let flags_s = flags.as_ref().map(slice1);
    let cell_rows = Rows::new(&cells);
    let temp_rows = Rows::new(&temps);
    let result = py.detach(|| -> Result<_, BmsError> {
        let mut f64s: Vec<Vec<f64>> = (0..FRAME_FEATURE_FLOAT_NAMES.len())
            .map(|_| Vec::with_capacity(n))
            .collect();
        let mut idx: [Vec<i64>; 2] = [Vec::with_capacity(n), Vec::with_capacity(n)];
        let mut alarm = Vec::with_capacity(n);
        let (mut cb, mut tb) = (Vec::new(), Vec::new());
        for i in 0..n {
            let frame = FrameRef {
                vin: "-",
                timestamp_ms: 0,
                pack_voltage: f64::NAN,
                pack_current: f64::NAN,
                soc: soc_s.as_ref().map_or(f64::NAN, |s| s[i]),
                cell_voltages: cell_rows.row(i, &mut cb),
                temperatures: temp_rows.row(i, &mut tb),
                alarm_flags: match &flags_s {
                    Some(f) => alarm_flag(f[i], i)?,
                    None => None,
                },
            };
            let f = bms_core::frame_features(&frame, &config);
            for (col, v) in f64s.iter_mut().zip(f.floats()) {
                col.push(v);
            }
            idx[0].push(f.cell_v_max_idx.map_or(-1, |v| v as i64));
            idx[1].push(f.cell_v_min_idx.map_or(-1, |v| v as i64));
            alarm.push(f.consistency_alarm);
        }
        Ok((f64s, idx, alarm))
    });
    let (f64s, idx, alarm) = result.map_err(to_py)?;
    let d = PyDict::new(py);
    for (name, col) in FRAME_FEATURE_FLOAT_NAMES.iter().zip(f64s) {
        d.set_item(name, col.into_pyarray(py))?;
    }
    let [max_idx, min_idx] = idx;
    d.set_item("cell_v_max_idx", max_idx.into_pyarray(py))?;
    d.set_item("cell_v_min_idx", min_idx.into_pyarray(py))?;
    d.set_item("consistency_alarm", alarm.into_pyarray(py))?;
    Ok(d)
}

// ---------------------------------------------------------------------------------------
// Daily aggregation

/// Aggregates frames into the daily table (SPEC §4). Frames are columns: `codes[i]` indexes
/// `vins`; cell voltages of frame `i` are `cells[cell_offsets[i]..cell_offsets[i + 1]]`
/// (likewise temperatures); `alarm_flags` int64, negative = absent. Errors name the
/// 1-based row (as "line").
#[pyfunction]
#[pyo3(signature = (vins, codes, timestamp_ms, pack_voltage, pack_current, soc, cells, cell_offsets, temps, temp_offsets, alarm_flags=None, utc_offset_seconds=0, ocv=None, alarm_spread_v=0.10))]
#[allow(clippy::too_many_arguments)]
fn daily<'py>(
    py: Python<'py>,
    vins: &Bound<'py, PyList>,
    codes: &Bound<'py, PyAny>,
    timestamp_ms: &Bound<'py, PyAny>,
    pack_voltage: &Bound<'py, PyAny>,
    pack_current: &Bound<'py, PyAny>,
    soc: &Bound<'py, PyAny>,
    cells: &Bound<'py, PyAny>,
    cell_offsets: &Bound<'py, PyAny>,
    temps: &Bound<'py, PyAny>,
    temp_offsets: &Bound<'py, PyAny>,
    alarm_flags: Option<&Bound<'py, PyAny>>,
    utc_offset_seconds: i32,
    ocv: Option<&Bound<'py, PyAny>>,
    alarm_spread_v: f64,
) -> PyResult<Bound<'py, PyDict>> {
    let vins = vin_strings(vins)?;
    let codes = Codes::new(codes, vins.len(), "frames")?;
    let n = codes.slice().len();
    let ts = array1::<i64>(timestamp_ms, "timestamp", Some(n))?;
    let pv = array1::<f64>(pack_voltage, "pack_voltage", Some(n))?;
    let pc = array1::<f64>(pack_current, "pack_current", Some(n))?;
    let soc = array1::<f64>(soc, "soc", Some(n))?;
    let cells = array1::<f64>(cells, "cell voltages", None)?;
    let co = array1::<i64>(cell_offsets, "cell offsets", Some(n + 1))?;
    let temps = array1::<f64>(temps, "temperatures", None)?;
    let to = array1::<i64>(temp_offsets, "temperature offsets", Some(n + 1))?;
    let flags = alarm_flags
        .map(|f| array1::<i64>(f, "alarm_flags", Some(n)))
        .transpose()?;
    let utc_offset = UtcOffset::from_seconds(utc_offset_seconds).map_err(to_py)?;
    let features = match ocv {
        Some(o) => feature_config(o, alarm_spread_v)?,
        None => feature_config(&PyString::new(py, "nmc").into_any(), alarm_spread_v)?,
    };
    let (codes, ts, pv, pc, soc) = (
        codes.slice(),
        slice1(&ts),
        slice1(&pv),
        slice1(&pc),
        slice1(&soc),
    );
    let (cells, co, temps, to) = (slice1(&cells), slice1(&co), slice1(&temps), slice1(&to));
    for (what, off, len) in [
        ("cell offsets", &co, cells.len()),
        ("temperature offsets", &to, temps.len()),
    ] {
        let bad = off.first().is_some_and(|&o| o != 0)
            || off.windows(2).any(|w| w[1] < w[0])
            || off.last().is_some_and(|&o| o as usize != len);
        if bad {
            return Err(invalid(format!(
                "{what}: must start at 0, never decrease and end at {len}"
            )));
        }
    }
    let flags = flags.as_ref().map(slice1);
    let config = DailyConfig {
        features,
        utc_offset,
    };
    let table = py
        .detach(|| -> Result<DailyTable, BmsError> {
            let mut frames = Frames::new();
            for i in 0..n {
                let frame = FrameRef {
                    vin: &vins[codes[i] as usize],
                    timestamp_ms: ts[i],
                    pack_voltage: pv[i],
                    pack_current: pc[i],
                    soc: soc[i],
                    cell_voltages: &cells[co[i] as usize..co[i + 1] as usize],
                    temperatures: &temps[to[i] as usize..to[i + 1] as usize],
                    alarm_flags: match &flags {
                        Some(f) => alarm_flag(f[i], i)?,
                        None => None,
                    },
                };
                frame.validate().map_err(|e| match e {
                    BmsError::Invalid { what, reason } => {
                        BmsError::invalid(what, format!("row {}: {reason}", i + 1))
                    }
                    other => other,
                })?;
                frames.push(frame, i as u64 + 1);
            }
            bms_core::daily::aggregate(&frames, &config, None)
        })
        .map_err(to_py)?;
    table_to_py(py, &table)
}

// ---------------------------------------------------------------------------------------
// Windows

fn spec_from(
    features: &[String],
    context: usize,
    horizon: usize,
    fill: f64,
    full_horizon: bool,
) -> PyResult<WindowSpec> {
    let features = features
        .iter()
        .map(|f| DailyColumn::from_name(f))
        .collect::<Result<Vec<_>, _>>()
        .map_err(to_py)?;
    let spec = WindowSpec {
        context,
        horizon,
        features,
        fill,
        full_horizon,
    };
    spec.validate().map_err(to_py)?;
    Ok(spec)
}

/// Nanoseconds per day: key dates go back as datetime64[ns] values.
const NS_PER_DAY: i64 = bms_core::window::NANOS_PER_DAY;

/// Vehicle codes, each an index into the VINs: uint32 (borrowed when contiguous) or int64
/// (a negative code is a missing VIN), checked against the number of VINs.
enum Codes<'py> {
    U32(PyReadonlyArray1<'py, u32>),
    I64(Vec<u32>),
}

impl<'py> Codes<'py> {
    fn new(codes: &Bound<'py, PyAny>, n_vins: usize, what: &str) -> PyResult<Self> {
        if let Ok(c) = array1::<u32>(codes, "VIN codes", None) {
            let codes = Codes::U32(c);
            if let Some((i, &c)) = codes
                .slice()
                .iter()
                .enumerate()
                .find(|&(_, &c)| c as usize >= n_vins)
            {
                return Err(no_vin(what, i, i64::from(c)));
            }
            return Ok(codes);
        }
        let c = array1::<i64>(codes, "VIN codes", None).map_err(|_| {
            invalid(format!(
                "VIN codes: expected a 1-D int64 or uint32 array, got {}",
                codes
                    .getattr("dtype")
                    .map(|d| d.to_string())
                    .unwrap_or_else(|_| "something else".into())
            ))
        })?;
        let s = slice1(&c);
        if let Some((i, &c)) = s
            .iter()
            .enumerate()
            .find(|&(_, &c)| c < 0 || c as usize >= n_vins)
        {
            return Err(no_vin(what, i, c));
        }
        Ok(Codes::I64(s.iter().map(|&c| c as u32).collect()))
    }

    fn slice(&self) -> Cow<'_, [u32]> {
        match self {
            Codes::U32(c) => slice1(c),
            Codes::I64(c) => Cow::Borrowed(c),
        }
    }
}

/// The VIN column handed to `windows`.
enum Vins<'py> {
    /// Distinct VINs and a code per row.
    Numbered(Vec<String>, Codes<'py>),
    /// Arrow strings, numbered by first appearance in the call.
    Arrow(vins::ArrowStrings<'py>),
}

/// The error of a missing (or unknown) VIN code at 0-based row `i`.
fn no_vin(what: &str, i: usize, code: i64) -> PyErr {
    invalid(format!(
        "{what}: row {} has no VIN (code {code}; missing VINs are not allowed)",
        i + 1
    ))
}

/// The VIN of every window as Arrow `large_string` buffers: `offsets` (one more than the
/// windows) and `data`; vehicle `v` has `counts[v]` windows, the output holds them in
/// vehicle order.
fn key_strings_into(vins: &[String], counts: &[usize], offsets: &mut [i64], data: &mut [u8]) {
    offsets[0] = 0;
    let (mut k, mut b) = (1, 0);
    for (vin, &c) in vins.iter().zip(counts) {
        let s = vin.as_bytes();
        for (j, o) in offsets[k..k + c].iter_mut().enumerate() {
            *o = (b + (j + 1) * s.len()) as i64;
        }
        // The VIN once, then the filled stretch copied onto what follows (doubling).
        let run = &mut data[b..b + c * s.len()];
        if c > 0 {
            run[..s.len()].copy_from_slice(s);
            let mut done = s.len();
            while done < run.len() {
                let more = done.min(run.len() - done);
                run.copy_within(..more, done);
                done += more;
            }
        }
        k += c;
        b += c * s.len();
    }
}

/// Windows (SPEC §5) of a daily table given as columns. The VINs come either numbered —
/// `vins` a list of the distinct VINs and `codes[i]` (int64 or uint32) the index of row
/// i's — or, with `vins` None, as Arrow strings: `codes` a list of `(offsets, data)` per
/// chunk (int32/int64 offsets sliced to the chunk, uint8 data; no nulls), numbered here
/// by first appearance. `days` are day numbers since 1970-01-01 or, with `day_unit`,
/// counts of `1 / day_unit` days (a datetime64 column's int64 view; NaT is an error),
/// `columns[k]` holds feature `features[k]` (float64), `labels` the Label column
/// (float64; None = no labels).
///
/// Returns `(x, y, key_vins, key_dates)`: key_vins is the uint32 code of each window's VIN
/// (in `vins` order), or with `key_strings` the Arrow `large_string` buffers
/// `(offsets int64, data uint8)` of the VINs themselves; key_dates are int64 nanoseconds
/// since 1970-01-01 (a datetime64[ns] view). The arrays are views of two allocations
/// (`x`'s own, and one for the rest).
#[pyfunction]
#[pyo3(signature = (vins, codes, days, columns, features, labels=None, context=14, horizon=14, fill=-1.0, full_horizon=false, day_unit=None, key_strings=false))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn windows<'py>(
    py: Python<'py>,
    vins: Option<&Bound<'py, PyList>>,
    codes: &Bound<'py, PyAny>,
    days: &Bound<'py, PyAny>,
    columns: Vec<Bound<'py, PyAny>>,
    features: Vec<String>,
    labels: Option<&Bound<'py, PyAny>>,
    context: usize,
    horizon: usize,
    fill: f64,
    full_horizon: bool,
    day_unit: Option<i64>,
    key_strings: bool,
) -> PyResult<(
    Bound<'py, PyArray2<f32>>,
    Bound<'py, PyArray1<f32>>,
    Bound<'py, PyAny>,
    Bound<'py, PyArray1<i64>>,
)> {
    let spec = spec_from(&features, context, horizon, fill, full_horizon)?;
    if columns.len() != spec.features.len() {
        return Err(invalid(format!(
            "windows: {} feature names but {} columns",
            spec.features.len(),
            columns.len()
        )));
    }
    if day_unit.is_some_and(|u| u < 1) {
        return Err(invalid("day_unit: must be at least 1 per day"));
    }
    let input = match vins {
        Some(v) => {
            let v = vin_strings(v)?;
            let c = Codes::new(codes, v.len(), "daily table")?;
            Vins::Numbered(v, c)
        }
        None => {
            let chunks = codes
                .extract::<Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>>()
                .map_err(|_| {
                    invalid(
                        "VIN codes: without a VIN list, expected a list of Arrow (offsets, \
                         data) chunks",
                    )
                })?;
            Vins::Arrow(vins::ArrowStrings::new(&chunks)?)
        }
    };
    let numbered = match &input {
        Vins::Numbered(v, c) => VinSlices::Numbered(v, c.slice()),
        Vins::Arrow(s) => VinSlices::Arrow(s.segments()),
    };
    let n = match &numbered {
        VinSlices::Numbered(_, c) => c.len(),
        VinSlices::Arrow(s) => s.iter().map(vins::Segment::rows).sum(),
    };
    let days = array1::<i64>(days, "Date", Some(n))?;
    let cols = columns
        .iter()
        .zip(&features)
        .map(|(c, name)| array1::<f64>(c, name, Some(n)))
        .collect::<PyResult<Vec<_>>>()?;
    let labels = labels
        .map(|l| array1::<f64>(l, "Label", Some(n)))
        .transpose()?;
    let days = slice1(&days);
    let cols: Vec<Cow<'_, [f64]>> = cols.iter().map(slice1).collect();
    let labels = labels.as_ref().map(slice1);
    let features: Vec<&[f64]> = cols.iter().map(|c| &c[..]).collect();
    let width = spec.width();
    let done = py.detach(|| {
        in_pool(|| -> Result<Written, Failure> {
            let (vins, vehicle): (Cow<'_, [String]>, Cow<'_, [u32]>) = match numbered {
                VinSlices::Numbered(v, c) => (Cow::Borrowed(v), c),
                VinSlices::Arrow(segments) => {
                    let (uniques, codes) = vins::factorize(segments).map_err(Failure::Invalid)?;
                    let names = vins::utf8(&uniques).map_err(Failure::Invalid)?;
                    (Cow::Owned(names), Cow::Owned(codes))
                }
            };
            let table = DailyColumns {
                vins: &vins,
                vehicle: &vehicle,
                day: &days,
                ticks_per_day: day_unit.unwrap_or(1),
                features: &features,
                label: labels.as_deref(),
            };
            let plan = ColumnPlan::new(&table, &spec).map_err(Failure::Core)?;
            let n = plan.len();
            let counts: Vec<usize> = plan.window_counts().collect();
            let vin_bytes: usize = if key_strings {
                counts
                    .iter()
                    .zip(vins.iter())
                    .map(|(&c, v)| c * v.len())
                    .sum()
            } else {
                0
            };
            // y, the key dates and the key VINs share one buffer, X has its own.
            let x = Buffer::new(&[4 * n * width]).map_err(Failure::Memory)?;
            let sizes = if key_strings {
                [4 * n, 8 * n, 8 * (n + 1), vin_bytes]
            } else {
                [4 * n, 8 * n, 4 * n, 0]
            };
            let rest = Buffer::new(&sizes).map_err(Failure::Memory)?;
            // SAFETY: distinct parts, typed and sized as laid out above, written here
            // before any view of them exists.
            let (xs, ys, dates) = unsafe {
                (
                    x.part::<f32>(0, n * width),
                    rest.part::<f32>(0, n),
                    rest.part::<i64>(1, n),
                )
            };
            rayon::join(
                || {
                    let codes = (!key_strings).then(|| unsafe { rest.part::<u32>(2, n) });
                    plan.write(xs, ys, codes, dates);
                },
                || {
                    if key_strings {
                        let (offsets, data) =
                            unsafe { (rest.part::<i64>(2, n + 1), rest.part::<u8>(3, vin_bytes)) };
                        key_strings_into(&vins, &counts, offsets, data);
                    }
                },
            );
            // Every window's day lies between two days of the table: datetime64[ns] holds
            // them unless the table itself goes beyond 1677–2262.
            dates
                .par_chunks_mut(1 << 16)
                .try_for_each(|dates| {
                    for d in dates {
                        *d = d.checked_mul(NS_PER_DAY).ok_or(*d)?;
                    }
                    Ok(())
                })
                .map_err(|d: i64| {
                    Failure::Invalid(format!(
                        "daily table: the window date {} is outside the range of \
                         datetime64[ns] (1677-09-21 to 2262-04-11)",
                        bms_core::daily::date_of_day(d)
                            .map(|d| d.to_string())
                            .unwrap_or_else(|| format!("{d} days after 1970-01-01"))
                    ))
                })?;
            Ok(Written {
                x,
                rest,
                n,
                vin_bytes,
            })
        })
    });
    let Written {
        x,
        rest,
        n,
        vin_bytes,
    } = done.map_err(|e| match e {
        Failure::Core(e) => to_py(e),
        Failure::Invalid(m) => invalid(m),
        Failure::Memory(m) => PyMemoryError::new_err(m),
    })?;
    let (x, rest) = (Bound::new(py, x)?, Bound::new(py, rest)?);
    // SAFETY: every part was written above.
    unsafe {
        let key_vins = if key_strings {
            let offsets = view::<i64, _>(&rest, 2, n + 1);
            let data = view::<u8, _>(&rest, 3, vin_bytes);
            (offsets, data).into_pyobject(py)?.into_any()
        } else {
            view::<u32, _>(&rest, 2, n).into_any()
        };
        Ok((
            view::<f32, _>(&x, 0, [n, width]),
            view::<f32, _>(&rest, 0, n),
            key_vins,
            view::<i64, _>(&rest, 1, n),
        ))
    }
}

/// The VIN column of `windows` as slices, for the work without the interpreter lock.
enum VinSlices<'a> {
    Numbered(&'a [String], Cow<'a, [u32]>),
    Arrow(Vec<vins::Segment<'a>>),
}

/// What `windows` computes without the interpreter lock.
struct Written {
    x: Buffer,
    rest: Buffer,
    n: usize,
    vin_bytes: usize,
}

/// Why `windows` failed without the interpreter lock (turned into an exception after).
enum Failure {
    Core(BmsError),
    Invalid(String),
    Memory(String),
}

/// Runs `f` on a thread of the bindings' rayon pool while the caller waits (`f`'s parallel
/// parts use that pool): its sequential parts then do not compete for a core with the
/// pool's threads, which look for work for a while before they sleep (on two cores, two
/// busy threads rather than three).
pub(crate) fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    pool().install(f)
}

/// The bindings' thread pool (one thread per core), made again in a process forked from
/// one that had it: threads do not survive `fork()`, and a child handing work to its
/// parent's pool (rayon's global one, say) would wait for them forever.
fn pool() -> Arc<rayon::ThreadPool> {
    static POOL: Mutex<Option<(u32, Arc<rayon::ThreadPool>)>> = Mutex::new(None);
    let pid = std::process::id();
    let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((owner, p)) = pool.as_ref()
        && *owner == pid
    {
        return p.clone();
    }
    let new = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("bms-{i}"))
            .build()
            .expect("a thread pool"),
    );
    // A pool inherited from the parent has no threads here: forget it rather than ask
    // them to stop.
    if let Some(inherited) = pool.replace((pid, new.clone())) {
        std::mem::forget(inherited);
    }
    new
}

// ---------------------------------------------------------------------------------------
// Files

/// Reads a daily CSV file. Returns `(table columns, rejects, read, accepted)`.
#[pyfunction]
#[pyo3(signature = (path, strict=true))]
fn read_daily_csv<'py>(
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
fn read_batch_csv<'py>(
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

// ---------------------------------------------------------------------------------------
// Simulator

fn parse_date(s: &str, what: &str) -> PyResult<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| invalid(format!("{what}: '{s}' is not a date (YYYY-MM-DD)")))
}

/// Simulates a fleet. Returns `(daily columns, truth columns, frames or None, n_frames)`;
/// frames (columns with `cells` `[n, cells]` and `temps` `[n, probes]`) only when
/// `frames` is true.
#[pyfunction]
#[pyo3(signature = (vehicles=200, days=120, seed=0, start="2024-01-01", cells=96, probes=32, interval_ms=10_000, chemistry="nmc", weak_fraction=0.05, parked_fraction=0.35, alarm_spread_v=0.10, frames=false))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn simulate<'py>(
    py: Python<'py>,
    vehicles: usize,
    days: u32,
    seed: u64,
    start: &str,
    cells: usize,
    probes: usize,
    interval_ms: u32,
    chemistry: &str,
    weak_fraction: f64,
    parked_fraction: f64,
    alarm_spread_v: f64,
    frames: bool,
) -> PyResult<(
    Bound<'py, PyDict>,
    Bound<'py, PyDict>,
    Option<Bound<'py, PyDict>>,
    u64,
)> {
    let config = SimConfig {
        vehicles,
        days,
        seed,
        start: parse_date(start, "start")?,
        cells,
        probes,
        interval_ms,
        chemistry: Chemistry::from_str(chemistry).map_err(to_py)?,
        weak_fraction,
        parked_fraction,
        alarm_spread_v,
    };
    config.validate().map_err(to_py)?;
    let out = py
        .detach(|| in_pool(|| bms_core::simulate_daily(&config)))
        .map_err(to_py)?;
    let raw = if frames {
        let all = py
            .detach(|| -> Result<Frames, BmsError> {
                let mut all = Frames::new();
                let mut line = 0u64;
                for i in 0..config.vehicles {
                    for_each_frame(&config, i, |f| {
                        line += 1;
                        all.push(*f, line);
                        Ok(())
                    })?;
                }
                Ok(all)
            })
            .map_err(to_py)?;
        Some(frames_to_py(py, &all, cells, probes)?)
    } else {
        None
    };
    let t = PyDict::new(py);
    let truth = &out.truth;
    let date_opt = |d: Option<NaiveDate>| d.map_or(i64::MIN, day_of_date);
    t.set_item(
        "vin",
        PyList::new(py, truth.iter().map(|v| v.vin.as_str()))?,
    )?;
    t.set_item(
        "weak",
        truth
            .iter()
            .map(|v| v.weak)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    t.set_item(
        "weak_cell",
        truth
            .iter()
            .map(|v| v.weak_cell.map_or(-1, |c| c as i64))
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    t.set_item(
        "mechanism",
        PyList::new(
            py,
            truth
                .iter()
                .map(|v| v.mechanism.map(|m| m.name()).unwrap_or("")),
        )?,
    )?;
    for (name, f) in [
        (
            "onset_date",
            (|v: &bms_core::VehicleTruth| v.onset_date) as fn(&_) -> _,
        ),
        ("first_alarm_date", |v| v.first_alarm_date),
        ("repair_date", |v| v.repair_date),
    ] {
        let col: Vec<i64> = truth.iter().map(|v| date_opt(f(v))).collect();
        t.set_item(name, col.into_pyarray(py))?;
    }
    t.set_item(
        "alarm_days",
        truth
            .iter()
            .map(|v| i64::from(v.alarm_days))
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    Ok((table_to_py(py, &out.table)?, t, raw, out.frames))
}

fn frames_to_py<'py>(
    py: Python<'py>,
    frames: &Frames,
    cells: usize,
    probes: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let n = frames.len();
    let mut vins: Vec<&str> = Vec::new();
    let mut codes = Vec::with_capacity(n);
    let mut ts = Vec::with_capacity(n);
    let (mut pv, mut pc, mut soc) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut cv = Vec::with_capacity(n * cells);
    let mut tv = Vec::with_capacity(n * probes);
    let mut flags = Vec::with_capacity(n);
    for f in frames.iter() {
        if vins.last() != Some(&f.vin) {
            vins.push(f.vin);
        }
        codes.push((vins.len() - 1) as i64);
        ts.push(f.timestamp_ms);
        pv.push(f.pack_voltage);
        pc.push(f.pack_current);
        soc.push(f.soc);
        cv.extend_from_slice(f.cell_voltages);
        tv.extend_from_slice(f.temperatures);
        flags.push(f.alarm_flags.map_or(-1, i64::from));
    }
    let d = PyDict::new(py);
    d.set_item("vins", PyList::new(py, vins)?)?;
    d.set_item("codes", codes.into_pyarray(py))?;
    d.set_item("timestamp_ms", ts.into_pyarray(py))?;
    d.set_item("pack_voltage", pv.into_pyarray(py))?;
    d.set_item("pack_current", pc.into_pyarray(py))?;
    d.set_item("soc", soc.into_pyarray(py))?;
    let cv = Array2::from_shape_vec((n, cells), cv).map_err(|e| invalid(e.to_string()))?;
    let tv = Array2::from_shape_vec((n, probes), tv).map_err(|e| invalid(e.to_string()))?;
    d.set_item("cells", PyArray2::from_owned_array(py, cv))?;
    d.set_item("temps", PyArray2::from_owned_array(py, tv))?;
    d.set_item("alarm_flags", flags.into_pyarray(py))?;
    Ok(d)
}

// ---------------------------------------------------------------------------------------
// Model

/// The f64 whose shortest decimal form is the f32's (0.2f32 → 0.2, not 0.20000000298…).
pub(crate) fn f32_as_shown(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(f64::from(v))
}

/// An ONNX model with its feature contract (SPEC §7), loaded once and usable from many
/// threads at once.
#[pyclass(frozen, name = "Model", module = "bms._bms")]
pub(crate) struct PyModel {
    pub(crate) inner: Arc<Model>,
    path: String,
}

#[pymethods]
impl PyModel {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let shown = path.display().to_string();
        let model = py.detach(|| Model::load(&path)).map_err(to_py_model)?;
        Ok(PyModel {
            inner: Arc::new(model),
            path: shown,
        })
    }

    /// Positive-class probability of every row of `x` (`[n, width]` float32, borrowed; float64
    /// is converted to float32 as XGBoost and onnxruntime do).
    fn predict<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let x = floats2(x, "x")?;
        let model = &self.inner;
        let p = match &x {
            Floats2::F32(a) => {
                let view = a.as_array();
                py.detach(|| model.predict(view))
            }
            Floats2::F64(a) => {
                let view = a.as_array();
                py.detach(|| model.predict(view.mapv(|v| v as f32).view()))
            }
        }
        .map_err(to_py)?;
        Ok(p.into_pyarray(py))
    }

    /// The feature contract: context, horizon, features, fill, threshold, model_id, width and
    /// whether it was defaulted (the model carried no `bms.*` metadata).
    #[getter]
    fn contract<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.inner.contract();
        let d = PyDict::new(py);
        d.set_item("context", c.spec.context)?;
        d.set_item("horizon", c.spec.horizon)?;
        d.set_item(
            "features",
            PyList::new(py, c.spec.features.iter().map(|f| f.name()))?,
        )?;
        d.set_item("fill", c.spec.fill)?;
        d.set_item("threshold", f32_as_shown(c.threshold))?;
        d.set_item("model_id", &c.model_id)?;
        d.set_item("width", self.inner.input_width())?;
        d.set_item("defaulted", c.source == ContractSource::Defaulted)?;
        Ok(d)
    }

    /// Values per input row.
    #[getter]
    fn width(&self) -> usize {
        self.inner.input_width()
    }

    /// Alarm threshold on the probability.
    #[getter]
    fn threshold(&self) -> f64 {
        f32_as_shown(self.inner.contract().threshold)
    }

    /// The model's identifier (from `bms.model_id`, or derived from the file's hash).
    #[getter]
    fn model_id(&self) -> String {
        self.inner.contract().model_id.clone()
    }

    /// The path the model was loaded from.
    #[getter]
    fn path(&self) -> String {
        self.path.clone()
    }

    /// Names of the graph outputs.
    #[getter]
    fn output_names(&self) -> Vec<String> {
        self.inner.output_names().to_vec()
    }

    fn __repr__(&self) -> String {
        let c = self.inner.contract();
        format!(
            "Model({:?}, model_id={:?}, context={}, features={}, threshold={})",
            self.path,
            c.model_id,
            c.spec.context,
            c.spec.features.len(),
            c.threshold
        )
    }
}

// ---------------------------------------------------------------------------------------

/// Every default value of the Python API, from the core (what the command line uses):
/// the Python wrappers take their signatures' defaults from here.
fn defaults(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    let spec = bms_core::WindowSpec::default();
    d.set_item("alarm_spread_v", bms_core::features::DEFAULT_ALARM_SPREAD_V)?;
    d.set_item("ocv", chemistry_name(Chemistry::default()))?;
    d.set_item("utc_offset", bms_core::UtcOffset::default().to_string())?;
    d.set_item("context", spec.context)?;
    d.set_item("horizon", spec.horizon)?;
    d.set_item(
        "features",
        PyList::new(py, spec.features.iter().map(|f| f.name()))?,
    )?;
    d.set_item("fill", spec.fill)?;
    d.set_item("full_horizon", spec.full_horizon)?;
    d.set_item("batch_width", spec.width())?;
    let sim = bms_core::SimConfig::default();
    let s = PyDict::new(py);
    s.set_item("vehicles", sim.vehicles)?;
    s.set_item("days", sim.days)?;
    s.set_item("seed", sim.seed)?;
    s.set_item("start", sim.start.format("%Y-%m-%d").to_string())?;
    s.set_item("cells", sim.cells)?;
    s.set_item("probes", sim.probes)?;
    s.set_item("interval_ms", sim.interval_ms)?;
    s.set_item("chemistry", chemistry_name(sim.chemistry))?;
    s.set_item("weak_fraction", sim.weak_fraction)?;
    s.set_item("parked_fraction", sim.parked_fraction)?;
    s.set_item("alarm_spread_v", sim.alarm_spread_v)?;
    d.set_item("simulate", s)?;
    Ok(d)
}

/// The name a chemistry is given by in arguments.
fn chemistry_name(c: Chemistry) -> &'static str {
    match c {
        Chemistry::Nmc => "nmc",
        Chemistry::Lfp => "lfp",
    }
}

#[pymodule]
fn _bms(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("FRAME_FEATURE_NAMES", FRAME_FEATURE_NAMES.to_vec())?;
    m.add(
        "DAILY_COLUMNS",
        DailyColumn::ALL
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>(),
    )?;
    m.add(
        "REFERENCE_COLUMNS",
        REFERENCE_COLUMNS
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>(),
    )?;
    m.add(
        "EXTENDED_COLUMNS",
        EXTENDED_COLUMNS
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>(),
    )?;
    m.add("DEFAULTS", defaults(m.py())?)?;
    m.add_function(wrap_pyfunction!(frame_features, m)?)?;
    m.add_function(wrap_pyfunction!(daily, m)?)?;
    m.add_function(wrap_pyfunction!(windows, m)?)?;
    m.add_function(wrap_pyfunction!(vins::factorize_strings, m)?)?;
    m.add_function(wrap_pyfunction!(vins::first_appearance, m)?)?;
    m.add_function(wrap_pyfunction!(read_daily_csv, m)?)?;
    m.add_function(wrap_pyfunction!(read_batch_csv, m)?)?;
    m.add_function(wrap_pyfunction!(simulate, m)?)?;
    m.add_class::<PyModel>()?;
    m.add_class::<batch::PySummary>()?;
    m.add_class::<batch::PyEvaluation>()?;
    m.add_function(wrap_pyfunction!(batch::score_file, m)?)?;
    m.add_function(wrap_pyfunction!(batch::event_ids, m)?)?;
    m.add_function(wrap_pyfunction!(batch::parse_utc_offset, m)?)?;
    m.add_function(wrap_pyfunction!(batch::parse_alarm_flags, m)?)?;
    Ok(())
}
