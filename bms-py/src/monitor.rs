//! `bms._bms.Monitor`: the streaming monitor of one vehicle, a thin class over
//! [`bms_core::monitor::Monitor`] (the code the C library's `bms_monitor` runs too).

use std::sync::Arc;

use numpy::{PyArray1, PyReadwriteArray1};
use pyo3::exceptions::PyIndexError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use bms_core::daily::DailyColumn;
use bms_core::monitor::{Monitor, MonitorConfig};
use bms_core::{FrameRef, UtcOffset};

use crate::arrays::{array1, slice1};
use crate::convert::feature_config;
use crate::errors::{invalid, to_py};
use crate::model::PyModel;

/// The streaming monitor of one vehicle: frames in time order become daily rows, and the
/// last `context` closed days the model's window. Not for concurrent use by two threads
/// (a second caller while one is inside gets a `RuntimeError`, never a corrupt monitor).
#[pyclass(name = "Monitor", module = "bms._bms")]
pub(crate) struct PyMonitor {
    inner: Monitor,
}

#[pymethods]
impl PyMonitor {
    /// A monitor scored by `model`; days start at `utc_offset_seconds` east of UTC, `ocv`
    /// (a chemistry name or a `[k, 2]` table, default NMC) and `alarm_spread_v` define the
    /// frame features as for `daily`.
    #[new]
    #[pyo3(signature = (model, utc_offset_seconds=0, ocv=None, alarm_spread_v=0.10))]
    fn new(
        py: Python<'_>,
        model: PyRef<'_, PyModel>,
        utc_offset_seconds: i32,
        ocv: Option<&Bound<'_, PyAny>>,
        alarm_spread_v: f64,
    ) -> PyResult<Self> {
        let features = match ocv {
            Some(o) => feature_config(o, alarm_spread_v)?,
            None => feature_config(&PyString::new(py, "nmc").into_any(), alarm_spread_v)?,
        };
        let config = MonitorConfig {
            features,
            utc_offset: UtcOffset::from_seconds(utc_offset_seconds).map_err(to_py)?,
        };
        let inner = Monitor::new(Arc::clone(&model.inner), config).map_err(to_py)?;
        Ok(PyMonitor { inner })
    }

    /// Adds one frame: `cells` and `temps` are 1-D float64 arrays (borrowed; NaN = invalid
    /// reading), `alarm_flags` the GB/T 32960 general alarm flags or None. An older or
    /// repeated timestamp raises `InvalidInputError` and changes nothing.
    #[pyo3(signature = (timestamp_ms, pack_voltage, pack_current, soc, cells, temps, alarm_flags=None))]
    #[allow(clippy::too_many_arguments)]
    fn push_frame(
        &mut self,
        timestamp_ms: i64,
        pack_voltage: f64,
        pack_current: f64,
        soc: f64,
        cells: &Bound<'_, PyAny>,
        temps: &Bound<'_, PyAny>,
        alarm_flags: Option<i64>,
    ) -> PyResult<()> {
        let cells = array1::<f64>(cells, "cells", None)?;
        let temps = array1::<f64>(temps, "temps", None)?;
        let alarm_flags = alarm_flags
            .map(|f| {
                u32::try_from(f).map_err(|_| {
                    invalid(format!(
                        "alarm_flags: {f} is not a 32-bit flag set (0 to 4294967295, or None)"
                    ))
                })
            })
            .transpose()?;
        let (cells, temps) = (slice1(&cells), slice1(&temps));
        let frame = FrameRef {
            vin: "",
            timestamp_ms,
            pack_voltage,
            pack_current,
            soc,
            cell_voltages: &cells,
            temperatures: &temps,
            alarm_flags,
        };
        self.inner.push_frame(&frame).map_err(to_py)
    }

    /// Moves the clock to `timestamp_ms` without a frame, closing the open day (and empty
    /// days) if that is on a later day; later frames must not be older.
    fn advance_to(&mut self, timestamp_ms: i64) -> PyResult<()> {
        self.inner.advance_to(timestamp_ms).map_err(to_py)
    }

    /// A held closed day as a dict: `day` (days since 1970-01-01), every daily column and
    /// `Label`. `age` 0 is the most recent; `IndexError` beyond `days_held - 1`.
    fn day<'py>(&self, py: Python<'py>, age: usize) -> PyResult<Bound<'py, PyDict>> {
        let d = self.inner.day(age).ok_or_else(|| {
            PyIndexError::new_err(format!(
                "age {age} but {} closed days are held",
                self.inner.days_held()
            ))
        })?;
        let out = PyDict::new(py);
        out.set_item("day", d.day())?;
        for c in DailyColumn::ALL {
            out.set_item(c.name(), d.get(c))?;
        }
        out.set_item("Label", d.label())?;
        Ok(out)
    }

    /// The open day (days since 1970-01-01), the date the current window scores; None
    /// before the first frame.
    #[getter]
    fn current_day(&self) -> Option<i64> {
        self.inner.current_day()
    }

    /// Closed days held (at most `context`).
    #[getter]
    fn days_held(&self) -> usize {
        self.inner.days_held()
    }

    /// Days closed since the monitor was made, including those no longer held.
    #[getter]
    fn days_closed(&self) -> u64 {
        self.inner.days_closed()
    }

    /// Days per window (the model's context).
    #[getter]
    fn context(&self) -> usize {
        self.inner.context()
    }

    /// Values per window.
    #[getter]
    fn width(&self) -> usize {
        self.inner.width()
    }

    /// Whether `context` days have closed (a window exists).
    #[getter]
    fn is_ready(&self) -> bool {
        self.inner.is_ready()
    }

    /// Writes the current window into `out`, a writable contiguous 1-D float32 array of
    /// `width` values; written only on success.
    fn window_into(&self, out: &Bound<'_, PyAny>) -> PyResult<()> {
        // Checks dtype and dimensions (with the message every array argument gets).
        drop(array1::<f32>(out, "out", None)?);
        let mut out = out
            .extract::<PyReadwriteArray1<'_, f32>>()
            .map_err(|_| invalid("out: the array is not writable"))?;
        let out = out
            .as_slice_mut()
            .map_err(|_| invalid("out: expected a contiguous array"))?;
        self.inner.window_into(out).map_err(to_py)
    }

    /// The current window as a new float32 array of `width` values.
    fn window<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let mut w = vec![0f32; self.inner.width()];
        self.inner.window_into(&mut w).map_err(to_py)?;
        Ok(PyArray1::from_vec(py, w))
    }

    /// The model's probability for the current window (released GIL while scoring).
    fn predict(&mut self, py: Python<'_>) -> PyResult<f64> {
        let inner = &mut self.inner;
        let p = py.detach(|| inner.predict()).map_err(to_py)?;
        Ok(f64::from(p))
    }

    fn __repr__(&self) -> String {
        format!(
            "Monitor(context={}, days_held={}, days_closed={}, current_day={:?})",
            self.inner.context(),
            self.inner.days_held(),
            self.inner.days_closed(),
            self.inner.current_day()
        )
    }
}
