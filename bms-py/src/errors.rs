//! The exception hierarchy of the Python package and the mapping from the core's errors.
//!
//! ```text
//! BmsError(Exception)
//! ├── InvalidInputError(BmsError, ValueError)   bad data, bad arguments, bad files' contents
//! ├── ModelError(BmsError)                      a model that cannot be loaded or used
//! └── BmsIOError(BmsError, OSError)             a file that cannot be read or written
//!     ├── BmsFileNotFoundError(BmsIOError, FileNotFoundError)
//!     └── BmsPermissionError(BmsIOError, PermissionError)
//! ```
//!
//! I/O errors map by kind: a missing file is also a `FileNotFoundError`, a forbidden one a
//! `PermissionError`, so `except FileNotFoundError` works as for Python's own `open`.
//!
//! The classes are made at import with `type(...)` because `InvalidInputError` and
//! `BmsIOError` inherit from two bases. Messages are the core's `Display`, which names file,
//! line, column and value.

use pyo3::exceptions::{
    PyException, PyFileNotFoundError, PyOSError, PyPermissionError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

use bms_core::BmsError;

static BMS_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static INVALID_INPUT: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static MODEL_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static IO_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static NOT_FOUND: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static PERMISSION: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// Which Python exception a core error becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Invalid,
    Model,
    Io,
    NotFound,
    PermissionDenied,
}

impl Kind {
    /// The class of an I/O error of `kind`.
    pub fn of_io(kind: std::io::ErrorKind) -> Kind {
        match kind {
            std::io::ErrorKind::NotFound => Kind::NotFound,
            std::io::ErrorKind::PermissionDenied => Kind::PermissionDenied,
            _ => Kind::Io,
        }
    }
}

fn make_type<'py>(
    py: Python<'py>,
    name: &str,
    bases: Vec<Bound<'py, PyAny>>,
    doc: &str,
) -> PyResult<Bound<'py, PyType>> {
    let ns = PyDict::new(py);
    ns.set_item("__doc__", doc)?;
    ns.set_item("__module__", "bms")?;
    let t = py
        .get_type::<PyType>()
        .call1((name, PyTuple::new(py, bases)?, ns))?;
    Ok(t.cast_into::<PyType>()?)
}

/// Creates the classes and adds them to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let base = make_type(
        py,
        "BmsError",
        vec![py.get_type::<PyException>().into_any()],
        "Base class of every error raised by bms.",
    )?;
    let invalid = make_type(
        py,
        "InvalidInputError",
        vec![
            base.clone().into_any(),
            py.get_type::<PyValueError>().into_any(),
        ],
        "Input data or an argument is not acceptable (wrong dtype, shape, value, a bad line of a file). Also a ValueError.",
    )?;
    let model = make_type(
        py,
        "ModelError",
        vec![base.clone().into_any()],
        "A model file cannot be loaded or used (not ONNX, unsupported, inconsistent contract).",
    )?;
    let io = make_type(
        py,
        "BmsIOError",
        vec![
            base.clone().into_any(),
            py.get_type::<PyOSError>().into_any(),
        ],
        "A file cannot be read or written. Also an OSError.",
    )?;
    let not_found = make_type(
        py,
        "BmsFileNotFoundError",
        vec![
            io.clone().into_any(),
            py.get_type::<PyFileNotFoundError>().into_any(),
        ],
        "A file does not exist. Also a FileNotFoundError.",
    )?;
    let permission = make_type(
        py,
        "BmsPermissionError",
        vec![
            io.clone().into_any(),
            py.get_type::<PyPermissionError>().into_any(),
        ],
        "A file may not be read or written. Also a PermissionError.",
    )?;
    m.add("BmsError", &base)?;
    m.add("InvalidInputError", &invalid)?;
    m.add("ModelError", &model)?;
    m.add("BmsIOError", &io)?;
    m.add("BmsFileNotFoundError", &not_found)?;
    m.add("BmsPermissionError", &permission)?;
    let _ = BMS_ERROR.set(py, base.unbind());
    let _ = INVALID_INPUT.set(py, invalid.unbind());
    let _ = MODEL_ERROR.set(py, model.unbind());
    let _ = IO_ERROR.set(py, io.unbind());
    let _ = NOT_FOUND.set(py, not_found.unbind());
    let _ = PERMISSION.set(py, permission.unbind());
    Ok(())
}

pub(crate) fn raise(kind: Kind, message: String) -> PyErr {
    Python::attach(|py| {
        let cell = match kind {
            Kind::Invalid => &INVALID_INPUT,
            Kind::Model => &MODEL_ERROR,
            Kind::Io => &IO_ERROR,
            Kind::NotFound => &NOT_FOUND,
            Kind::PermissionDenied => &PERMISSION,
        };
        match cell.get(py) {
            Some(t) => match t.bind(py).call1((message.clone(),)) {
                Ok(v) => PyErr::from_value(v),
                Err(e) => e,
            },
            // Only reachable if the module's init failed half-way.
            None => match BMS_ERROR.get(py) {
                Some(t) => match t.bind(py).call1((message.clone(),)) {
                    Ok(v) => PyErr::from_value(v),
                    Err(e) => e,
                },
                None => PyValueError::new_err(message),
            },
        }
    })
}

/// An `InvalidInputError` with `message`.
pub fn invalid(message: impl Into<String>) -> PyErr {
    raise(Kind::Invalid, message.into())
}

/// The natural Python class of a core error. No wildcard: a new variant must be given a
/// class here.
pub fn kind_of(e: &BmsError) -> Kind {
    match e {
        BmsError::Model { .. } => Kind::Model,
        BmsError::Io { source, .. } => Kind::of_io(source.kind()),
        BmsError::Parse { .. }
        | BmsError::Header { .. }
        | BmsError::DuplicateDay { .. }
        | BmsError::DuplicateFrame { .. }
        | BmsError::OutOfOrder { .. }
        | BmsError::TimestampTooOld { .. }
        | BmsError::DuplicateTimestamp { .. }
        | BmsError::NotReady { .. }
        | BmsError::Shape { .. }
        | BmsError::Invalid { .. }
        | BmsError::Parquet { .. } => Kind::Invalid,
    }
}

/// Converts a core error to its Python exception.
pub fn to_py(e: BmsError) -> PyErr {
    raise(kind_of(&e), e.to_string())
}

/// Converts a core error raised while loading a model: anything but an unreadable file is
/// a `ModelError`.
pub fn to_py_model(e: BmsError) -> PyErr {
    match kind_of(&e) {
        k @ (Kind::Io | Kind::NotFound | Kind::PermissionDenied) => raise(k, e.to_string()),
        Kind::Invalid | Kind::Model => raise(Kind::Model, e.to_string()),
    }
}
