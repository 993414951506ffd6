//! `daily`: frames to the daily table (`bms_core::daily`).

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use bms_core::{BmsError, DailyConfig, DailyTable, FrameRef, Frames, UtcOffset};

use crate::arrays::{array1, slice1};
use crate::errors::{invalid, to_py};

use crate::convert::*;
use crate::window::*;

/// Aggregates frames into the daily table (SPEC §4). Frames are columns: `codes[i]` indexes
/// `vins`; cell voltages of frame `i` are `cells[cell_offsets[i]..cell_offsets[i + 1]]`
/// (likewise temperatures); `alarm_flags` int64, negative = absent. Errors name the
/// 1-based row (as "line").
#[pyfunction]
#[pyo3(signature = (vins, codes, timestamp_ms, pack_voltage, pack_current, soc, cells, cell_offsets, temps, temp_offsets, alarm_flags=None, utc_offset_seconds=0, ocv=None, alarm_spread_v=0.10))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn daily<'py>(
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
