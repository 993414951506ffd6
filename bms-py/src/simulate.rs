//! `simulate`: the fleet simulator (`bms_core::simulate`).

use std::str::FromStr;

use chrono::NaiveDate;
use ndarray::Array2;
use numpy::{IntoPyArray, PyArray2};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use bms_core::daily::day_of_date;
use bms_core::simulate::for_each_frame;
use bms_core::{BmsError, Chemistry, Frames, SimConfig};

use crate::errors::{invalid, to_py};

use crate::convert::*;
use crate::window::*;

pub(crate) fn parse_date(s: &str, what: &str) -> PyResult<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| invalid(format!("{what}: '{s}' is not a date (YYYY-MM-DD)")))
}

/// Simulates a fleet. Returns `(daily columns, truth columns, frames or None, n_frames)`;
/// frames (columns with `cells` `[n, cells]` and `temps` `[n, probes]`) only when
/// `frames` is true.
#[pyfunction]
#[pyo3(signature = (vehicles=200, days=120, seed=0, start="2024-01-01", cells=96, probes=32, interval_ms=10_000, chemistry="nmc", weak_fraction=0.05, parked_fraction=0.35, alarm_spread_v=0.10, frames=false))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
pub(crate) fn simulate<'py>(
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

pub(crate) fn frames_to_py<'py>(
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
