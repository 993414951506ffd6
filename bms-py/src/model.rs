//! `Model`: an ONNX model with its contract (`bms_core::model`).

use std::path::PathBuf;
use std::sync::Arc;

use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use bms_core::{ContractSource, Model};

use crate::arrays::{Floats2, floats2};
use crate::errors::{to_py, to_py_model};

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
