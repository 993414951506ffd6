//! `bms._bms`: the native module of the `bms` Python package, a thin layer over `bms-core`.
//!
//! Functions here take and return plain numpy arrays, lists and dicts; the pure-Python
//! package `bms` (bms-py/python/bms) turns them into pandas DataFrames and validates the
//! friendlier arguments. Every compute call releases the interpreter lock
//! ([`Python::detach`]); C-contiguous float arrays are borrowed, not copied.

mod arrays;
mod batch;
mod errors;
mod evaluate;
mod vins;

mod convert;
mod daily;
mod features;
mod gbt32960;
mod io;
mod model;
mod monitor;
mod simulate;
mod window;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use bms_core::Chemistry;
use bms_core::daily::{DailyColumn, EXTENDED_COLUMNS, REFERENCE_COLUMNS};
use bms_core::features::FRAME_FEATURE_NAMES;

pub(crate) use convert::ocv_curve;
pub(crate) use model::{PyModel, f32_as_shown};
pub(crate) use window::in_pool;

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
    m.add_function(wrap_pyfunction!(features::frame_features, m)?)?;
    m.add_function(wrap_pyfunction!(daily::daily, m)?)?;
    m.add_function(wrap_pyfunction!(window::windows, m)?)?;
    m.add_function(wrap_pyfunction!(vins::factorize_strings, m)?)?;
    m.add_function(wrap_pyfunction!(vins::first_appearance, m)?)?;
    m.add_function(wrap_pyfunction!(io::read_daily_csv, m)?)?;
    m.add_function(wrap_pyfunction!(io::read_batch_csv, m)?)?;
    m.add_function(wrap_pyfunction!(simulate::simulate, m)?)?;
    m.add_class::<PyModel>()?;
    m.add_class::<monitor::PyMonitor>()?;
    m.add_class::<gbt32960::PyGbt32960Decoder>()?;
    m.add_class::<batch::PySummary>()?;
    m.add_class::<batch::PyEvaluation>()?;
    m.add_function(wrap_pyfunction!(batch::score_file, m)?)?;
    m.add_function(wrap_pyfunction!(batch::event_ids, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate::evaluate_files, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate::evaluate_arrays, m)?)?;
    m.add_function(wrap_pyfunction!(batch::parse_utc_offset, m)?)?;
    m.add_function(wrap_pyfunction!(batch::parse_alarm_flags, m)?)?;
    Ok(())
}
