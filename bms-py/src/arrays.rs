//! Reading numpy arrays handed in from Python: dtype, ndim and length checks with messages
//! that name the argument, and borrowing (not copying) C-contiguous data.

use numpy::{
    PyArrayDescrMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArray, PyUntypedArrayMethods,
    dtype,
};
use pyo3::prelude::*;

use crate::errors::invalid;

/// A 2-D float array, float32 or float64, borrowed from numpy.
pub enum Floats2<'py> {
    F64(PyReadonlyArray2<'py, f64>),
    F32(PyReadonlyArray2<'py, f32>),
}

impl Floats2<'_> {
    pub fn shape(&self) -> (usize, usize) {
        let s = match self {
            Floats2::F64(a) => a.shape(),
            Floats2::F32(a) => a.shape(),
        };
        (s[0], s[1])
    }
}

fn describe(a: &Bound<'_, PyUntypedArray>) -> String {
    format!("a {}-D {} array", a.ndim(), a.dtype())
}

fn untyped<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Bound<'py, PyUntypedArray>> {
    obj.cast::<PyUntypedArray>().cloned().map_err(|_| {
        let t = obj
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into());
        invalid(format!("{what}: expected a numpy array, got {t}"))
    })
}

/// `obj` as a 2-D float32/float64 array.
pub fn floats2<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Floats2<'py>> {
    let py = obj.py();
    let a = untyped(obj, what)?;
    if a.ndim() != 2 {
        return Err(invalid(format!(
            "{what}: expected a 2-D float32 or float64 array, got {}",
            describe(&a)
        )));
    }
    let dt = a.dtype();
    if dt.is_equiv_to(&dtype::<f64>(py)) {
        Ok(Floats2::F64(obj.extract::<PyReadonlyArray2<'py, f64>>()?))
    } else if dt.is_equiv_to(&dtype::<f32>(py)) {
        Ok(Floats2::F32(obj.extract::<PyReadonlyArray2<'py, f32>>()?))
    } else {
        Err(invalid(format!(
            "{what}: expected a 2-D float32 or float64 array, got {}",
            describe(&a)
        )))
    }
}

/// `obj` as a 1-D array of `T` with `len` elements (`None` = any length).
pub fn array1<'py, T: numpy::Element>(
    obj: &Bound<'py, PyAny>,
    what: &str,
    len: Option<usize>,
) -> PyResult<PyReadonlyArray1<'py, T>> {
    let py = obj.py();
    let a = untyped(obj, what)?;
    let want = dtype::<T>(py);
    if a.ndim() != 1 || !a.dtype().is_equiv_to(&want) {
        return Err(invalid(format!(
            "{what}: expected a 1-D {want} array, got {}",
            describe(&a)
        )));
    }
    if let Some(n) = len
        && a.len() != n
    {
        return Err(invalid(format!(
            "{what}: expected {n} values (one per row), got {}",
            a.len()
        )));
    }
    obj.extract::<PyReadonlyArray1<'py, T>>()
}

/// A 1-D array as a contiguous slice: borrowed when contiguous, copied otherwise.
pub fn slice1<'a, T: numpy::Element + Copy>(
    a: &'a PyReadonlyArray1<'_, T>,
) -> std::borrow::Cow<'a, [T]> {
    match a.as_slice() {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => std::borrow::Cow::Owned(a.as_array().iter().copied().collect()),
    }
}
