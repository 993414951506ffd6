//! `frame_features`: the per-frame features of `bms_core::features`.

use numpy::IntoPyArray;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use bms_core::features::FRAME_FEATURE_FLOAT_NAMES;
use bms_core::{BmsError, FrameRef};

use crate::arrays::{array1, floats2, slice1};
use crate::errors::{invalid, to_py};

use crate::convert::*;

/// Frame features (SPEC §3) of every row: `cells` is `[frames, cells]`, `temps`
/// `[frames, probes]` (float32 or float64; NaN = invalid reading), `soc` the BMS SOC per
/// frame (float64), `alarm_flags` int64 per frame (negative = absent), `ocv` a chemistry
/// name or a `[k, 2]` table. Returns a dict of columns.
#[pyfunction]
#[pyo3(signature = (cells, temps, soc=None, alarm_flags=None, ocv=None, alarm_spread_v=0.10))]
pub(crate) fn frame_features<'py>(
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
