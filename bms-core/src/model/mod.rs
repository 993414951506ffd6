//! ONNX inference (SPEC §7). tract is the graph engine; the ONNX-ML tree ensembles and
//! `Scaler` are the project's own operators ([`tree`], [`ops`]), registered in place of
//! tract's. The graph is normalised on the protobuf first ([`normalize`]), the feature
//! contract is read from `metadata_props` ([`contract`]), and the runnable plan is built
//! once, with a symbolic batch dimension, at load.

pub mod contract;
pub mod normalize;
pub mod ops;
pub mod tree;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::{Arc, Mutex};

use ndarray::{Array1, ArrayView2};
use prost::Message;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::DimLike;

pub use contract::{ContractSource, ModelContract};

use crate::error::{BmsError, Result};

/// Output names that hold a probability, most specific first.
const PROBABILITY_NAMES: [&str; 7] = [
    "probabilities",
    "probability",
    "output_probability",
    "probas",
    "proba",
    "probs",
    "prob",
];

/// How the positive-class probability is read from the chosen output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Take {
    /// `[N, k]`: column `k - 1` (column 1 of `[N, 2]`, column 0 of `[N, 1]`).
    Column(usize),
    /// `[N]`.
    Whole,
}

type Plan = TypedRunnableModel;
type State = TypedSimpleState;

/// A loaded, optimised model: immutable and shareable across threads; each call reuses
/// a per-thread run state from a pool.
pub struct Model {
    plan: Arc<Plan>,
    states: Mutex<Vec<State>>,
    contract: ModelContract,
    width: usize,
    probability: (usize, Take),
    label: Option<usize>,
    output_names: Vec<String>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("contract", &self.contract)
            .field("width", &self.width)
            .field("outputs", &self.output_names)
            .finish()
    }
}

fn tract_error(context: &str, e: impl std::fmt::Display) -> BmsError {
    BmsError::model(format!("{context}: {e:#}"))
}

fn with_file(e: BmsError, path: &Path) -> BmsError {
    match e {
        BmsError::Model { file: None, reason } => BmsError::Model {
            file: Some(path.to_path_buf()),
            reason,
        },
        other => other,
    }
}

impl Model {
    /// Loads an ONNX file. Errors: [`BmsError::Io`] when the file cannot be read,
    /// [`BmsError::Model`] when it is not a usable model, [`BmsError::Shape`] when its
    /// contract's width differs from its input width.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| BmsError::io(path, e))?;
        Self::from_bytes(&bytes).map_err(|e| with_file(e, path))
    }

    /// Loads a model from the bytes of an ONNX file. See [`Model::load`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut proto = ModelProto::decode(bytes).map_err(|e| {
            BmsError::model(format!(
                "not an ONNX model (protobuf decoding failed: {e}); the file may be truncated or corrupt"
            ))
        })?;
        let framework = ops::framework();
        let input = normalize::normalize(&mut proto, &framework)?;
        let contract = ModelContract::from_metadata(
            proto
                .metadata_props
                .iter()
                .map(|p| (p.key.as_str(), p.value.as_str())),
            bytes,
        )?;
        let width = match input.width {
            Some(w) => w,
            None => contract.spec.width(),
        };
        if contract.spec.width() != width {
            return Err(BmsError::Shape {
                what: format!(
                    "model input width vs. its contract ({} days × {} features, {})",
                    contract.spec.context,
                    contract.spec.features.len(),
                    match contract.source {
                        ContractSource::Metadata => "from bms.* metadata",
                        ContractSource::Defaulted => "defaulted: the model has no bms.* metadata",
                    }
                ),
                expected: width,
                found: contract.spec.width(),
            });
        }
        let output_names: Vec<String> = proto
            .graph
            .as_ref()
            .map(|g| g.output.iter().map(|o| o.name.clone()).collect())
            .unwrap_or_default();

        let built = catch_unwind(AssertUnwindSafe(|| build_plan(&framework, &proto, width)))
            .map_err(|_| BmsError::model("the engine panicked while loading the model"))??;
        let (plan, facts) = built;
        let (probability, label) = choose_outputs(&output_names, &facts)?;

        let model = Model {
            plan,
            states: Mutex::new(Vec::new()),
            contract,
            width,
            probability,
            label,
            output_names,
        };
        let probe = ndarray::Array2::<f32>::zeros((1, width));
        let p = model.predict(probe.view())?;
        if p.len() != 1 {
            return Err(BmsError::model(format!(
                "the probability output gave {} values for one row",
                p.len()
            )));
        }
        Ok(model)
    }

    /// The feature contract (window spec, threshold, model id).
    pub fn contract(&self) -> &ModelContract {
        &self.contract
    }

    /// Whether the contract came from the model's metadata or was defaulted.
    pub fn contract_source(&self) -> ContractSource {
        self.contract.source
    }

    /// Values per input row.
    pub fn input_width(&self) -> usize {
        self.width
    }

    /// Names of the graph outputs (after normalisation), in order.
    pub fn output_names(&self) -> &[String] {
        &self.output_names
    }

    /// Name of the output the probability is read from.
    pub fn probability_output(&self) -> &str {
        &self.output_names[self.probability.0]
    }

    /// The positive-class probability of every row of `x` (`[N, width]`, any N).
    pub fn predict(&self, x: ArrayView2<f32>) -> Result<Array1<f32>> {
        self.run(x, false).map(|(p, _)| p)
    }

    /// Like [`Model::predict`], with the model's integer label output when it has one
    /// (tree-ensemble and scikit-learn classifiers do).
    pub fn predict_with_labels(
        &self,
        x: ArrayView2<f32>,
    ) -> Result<(Array1<f32>, Option<Array1<i64>>)> {
        self.run(x, true)
    }

    fn run(
        &self,
        x: ArrayView2<f32>,
        want_labels: bool,
    ) -> Result<(Array1<f32>, Option<Array1<i64>>)> {
        let (n, w) = x.dim();
        if w != self.width {
            return Err(BmsError::Shape {
                what: "model input width (values per row)".into(),
                expected: self.width,
                found: w,
            });
        }
        if n == 0 {
            let labels = (want_labels && self.label.is_some()).then(|| Array1::zeros(0));
            return Ok((Array1::zeros(0), labels));
        }
        let input = Tensor::from(x.as_standard_layout().into_owned()).into_tvalue();
        let mut state = match self.states.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            Some(s) => s,
            None => State::new(&self.plan).map_err(|e| tract_error("creating run state", e))?,
        };
        let outputs = state.run(tvec!(input));
        self.states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(state);
        let outputs = outputs.map_err(|e| tract_error("running the model", e))?;
        let (ix, take) = self.probability;
        let out = outputs
            .get(ix)
            .ok_or_else(|| BmsError::model("the model produced too few outputs"))?;
        let out = out
            .to_plain_array_view::<f32>()
            .map_err(|e| tract_error("reading the probability output", e))?;
        let p: Array1<f32> = match take {
            Take::Whole => out
                .into_dimensionality::<ndarray::Ix1>()
                .map_err(|e| tract_error("probability output", e))?
                .to_owned(),
            Take::Column(c) => out
                .into_dimensionality::<ndarray::Ix2>()
                .map_err(|e| tract_error("probability output", e))?
                .column(c)
                .to_owned(),
        };
        if p.len() != n {
            return Err(BmsError::Shape {
                what: "probability output rows vs. input rows".into(),
                expected: n,
                found: p.len(),
            });
        }
        let labels = match self.label.filter(|_| want_labels) {
            None => None,
            Some(li) => {
                let t = outputs
                    .get(li)
                    .ok_or_else(|| BmsError::model("the model produced too few outputs"))?;
                let t = t
                    .cast_to::<i64>()
                    .map_err(|e| tract_error("reading the label output", e))?;
                let v = t
                    .to_plain_array_view::<i64>()
                    .map_err(|e| tract_error("reading the label output", e))?;
                Some(v.iter().copied().collect())
            }
        };
        Ok((p, labels))
    }
}

fn build_plan(
    framework: &tract_onnx::model::Onnx,
    proto: &ModelProto,
    width: usize,
) -> Result<(Arc<Plan>, Vec<TypedFact>)> {
    let mut model = framework
        .model_for_proto_model(proto)
        .map_err(|e| tract_error("the engine refused the graph", e))?;
    let batch = model.symbols.sym("N");
    model
        .set_input_fact(0, f32::fact([TDim::from(batch), width.to_dim()]).into())
        .map_err(|e| tract_error("setting the input shape", e))?;
    let typed = model
        .into_optimized()
        .map_err(|e| tract_error("the engine could not type or optimise the graph", e))?;
    let facts = typed
        .output_outlets()
        .map_err(|e| tract_error("reading outputs", e))?
        .iter()
        .map(|o| typed.outlet_fact(*o).cloned())
        .collect::<TractResult<Vec<_>>>()
        .map_err(|e| tract_error("reading outputs", e))?;
    let plan = typed
        .into_runnable()
        .map_err(|e| tract_error("the engine could not plan the graph", e))?;
    Ok((plan, facts))
}

/// Picks the probability output by name and shape, and the label output if any.
fn choose_outputs(names: &[String], facts: &[TypedFact]) -> Result<((usize, Take), Option<usize>)> {
    if names.len() != facts.len() {
        return Err(BmsError::model(format!(
            "the graph declares {} outputs but the engine sees {}",
            names.len(),
            facts.len()
        )));
    }
    let describe = || {
        names
            .iter()
            .zip(facts)
            .map(|(n, f)| format!("{n}: {f:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut candidates: Vec<(usize, Take)> = Vec::new();
    for (i, f) in facts.iter().enumerate() {
        if f.datum_type != f32::datum_type() {
            continue;
        }
        match f.rank() {
            1 => candidates.push((i, Take::Whole)),
            2 => match f.shape[1].to_usize() {
                Ok(2) => candidates.push((i, Take::Column(1))),
                Ok(1) => candidates.push((i, Take::Column(0))),
                Ok(k) => {
                    return Err(BmsError::model(format!(
                        "output `{}` has {k} columns: only binary classifiers ([N, 2]) and \
                         single-probability outputs ([N, 1] or [N]) are supported",
                        names[i]
                    )));
                }
                Err(_) => {}
            },
            _ => {}
        }
    }
    let rank_of = |name: &str| {
        let lower = name.to_ascii_lowercase();
        PROBABILITY_NAMES
            .iter()
            .position(|p| lower == *p)
            .or_else(|| PROBABILITY_NAMES.iter().position(|p| lower.contains(p)))
    };
    let probability = match candidates.as_slice() {
        [] => {
            return Err(BmsError::model(format!(
                "no output holds a float probability ([N, 2], [N, 1] or [N]); outputs: {}",
                describe()
            )));
        }
        [one] => *one,
        many => {
            let best = many
                .iter()
                .filter_map(|c| rank_of(&names[c.0]).map(|r| (r, *c)))
                .min_by_key(|(r, _)| *r);
            match best {
                Some((_, c)) => c,
                None => {
                    return Err(BmsError::model(format!(
                        "several outputs could hold the probability and none is named like one \
                         ({}); outputs: {}",
                        PROBABILITY_NAMES.join(", "),
                        describe()
                    )));
                }
            }
        }
    };
    let label = facts.iter().enumerate().position(|(i, f)| {
        i != probability.0
            && f.rank() == 1
            && matches!(
                f.datum_type,
                DatumType::I64 | DatumType::I32 | DatumType::I16 | DatumType::I8 | DatumType::TDim
            )
    });
    Ok((probability, label))
}
