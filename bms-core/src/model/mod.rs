//! ONNX inference (SPEC §7). tract is the graph engine; the ONNX-ML tree ensembles and
//! `Scaler` are the project's own operators ([`tree`], [`ops`]), registered in place of
//! tract's. The graph is normalised on the protobuf first ([`normalize`]), the feature
//! contract is read from `metadata_props` ([`contract`]), and the runnable plan is built
//! once, with a symbolic batch dimension, at load.
//!
//! When every output of the optimised graph comes straight from one tree ensemble fed by
//! the graph input (the usual tree-model export), `predict` calls that ensemble's
//! [`tree::CompiledEnsemble`] on the caller's rows directly: the same code tract would
//! run, without the plan's per-call tensor copies and bookkeeping.

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

/// The graph is `input → tree ensemble → outputs`: graph output `i` is output
/// `slots[i]` of the ensemble op (classifier: 0 label, 1 scores; regressor: 0 values).
struct Direct {
    ensemble: Arc<tree::CompiledEnsemble>,
    slots: Vec<usize>,
}

/// A loaded, optimised model: immutable and shareable across threads; each call reuses
/// a per-thread run state from a pool.
pub struct Model {
    plan: Arc<Plan>,
    states: Mutex<Vec<State>>,
    direct: Option<Direct>,
    contract: ModelContract,
    width: usize,
    probability: (usize, Take),
    label: Option<usize>,
    output_names: Vec<String>,
    /// `None` when the model handles missing values; else the operator its input feeds.
    no_missing: Option<String>,
    /// `None` when the probability output is one (by its producer or the contract); else
    /// why it is not known to be.
    not_probability: Option<String>,
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

fn tract_error(context: &str, e: TractError) -> BmsError {
    BmsError::Model {
        file: None,
        reason: format!("{context}: {e:#}"),
        source: Some(e.into()),
    }
}

fn with_file(e: BmsError, path: &Path) -> BmsError {
    match e {
        BmsError::Model {
            file: None,
            reason,
            source,
        } => BmsError::Model {
            file: Some(path.to_path_buf()),
            reason,
            source,
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
        let mut proto = ModelProto::decode(bytes).map_err(|e| BmsError::Model {
            file: None,
            reason: format!(
                "not an ONNX model (protobuf decoding failed: {e}); the file may be truncated or corrupt"
            ),
            source: Some(Box::new(e)),
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
        let no_missing = consumer_without_missing(&proto);
        if let Some(op) = &no_missing
            && contract.spec.fill.is_nan()
        {
            return Err(BmsError::model(format!(
                "metadata {} = nan leaves missing values in windows, but the model does not \
                 handle them (its input feeds {op}, not a tree ensemble): give a number",
                contract::KEY_FILL_VALUE
            )));
        }

        let built = catch_unwind(AssertUnwindSafe(|| build_plan(&framework, &proto, width)))
            .map_err(|_| BmsError::model("the engine panicked while loading the model"))??;
        let (plan, facts, direct) = built;
        let (probability, label) = choose_outputs(&output_names, &facts)?;
        let not_probability = if contract.output_is_probability {
            None
        } else {
            not_a_probability(&proto, &output_names[probability.0])
        };

        let model = Model {
            plan,
            states: Mutex::new(Vec::new()),
            direct,
            contract,
            width,
            probability,
            label,
            output_names,
            no_missing,
            not_probability,
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

    /// Whether the model gives a probability for rows with missing (NaN) values: true when
    /// its input feeds only tree ensembles (which send a missing value down its branch) or
    /// imputers. For any other model a row with a NaN gets a NaN probability, as
    /// onnxruntime gives (SPEC §7) — never a number the graph did not compute.
    pub fn handles_missing(&self) -> bool {
        self.no_missing.is_none()
    }

    /// Why the model does not handle missing values (the operator its input feeds), for
    /// messages; `None` when it [handles](Model::handles_missing) them.
    pub fn missing_values_refusal(&self) -> Option<String> {
        self.no_missing.as_ref().map(|op| {
            format!("the model does not handle missing values (its input feeds {op}, not a tree ensemble)")
        })
    }

    /// `Err` when the output read as the probability is not known to be one: it comes from
    /// a regressor without a logistic or softmax post-transform, or from arithmetic, rather
    /// than from a classifier, a `Sigmoid` or a `Softmax` (SPEC §7). Everything that
    /// compares the output with a threshold (`bms predict`, `bms serve`, the monitor) calls
    /// this at load; [`Model::predict`] itself returns the output as it is. A contract key
    /// `bms.output = probability` declares the output a probability.
    pub fn require_probability(&self) -> Result<()> {
        match &self.not_probability {
            None => Ok(()),
            Some(why) => Err(BmsError::model(format!(
                "output `{}` is not a probability: {why}; a model for alarms must output the \
                 positive-class probability (export the classifier, or end the graph with a \
                 Sigmoid); if this output is one, declare it with metadata {} = probability",
                self.probability_output(),
                contract::KEY_OUTPUT
            ))),
        }
    }

    /// Name of the output the probability is read from.
    pub fn probability_output(&self) -> &str {
        &self.output_names[self.probability.0]
    }

    /// The positive-class probability of every row of `x` (`[N, width]`, any N).
    pub fn predict(&self, x: ArrayView2<f32>) -> Result<Array1<f32>> {
        self.run(x, false).map(|(p, _)| p)
    }

    /// Whether `predict` evaluates the tree ensemble directly rather than through the
    /// engine's plan (see the module documentation).
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// [`Model::predict_with_labels`] through the engine's plan even when the model
    /// [`is_direct`](Model::is_direct): the reference the direct path is tested against.
    #[doc(hidden)]
    pub fn predict_with_labels_via_plan(
        &self,
        x: ArrayView2<f32>,
    ) -> Result<(Array1<f32>, Option<Array1<i64>>)> {
        self.check_width(x)?;
        self.run_plan(x, true)
    }

    /// Like [`Model::predict`], with the model's integer label output when it has one
    /// (tree-ensemble and scikit-learn classifiers do).
    pub fn predict_with_labels(
        &self,
        x: ArrayView2<f32>,
    ) -> Result<(Array1<f32>, Option<Array1<i64>>)> {
        self.run(x, true)
    }

    fn check_width(&self, x: ArrayView2<f32>) -> Result<()> {
        let w = x.ncols();
        if w != self.width {
            return Err(BmsError::Shape {
                what: "model input width (values per row)".into(),
                expected: self.width,
                found: w,
            });
        }
        Ok(())
    }

    fn run(
        &self,
        x: ArrayView2<f32>,
        want_labels: bool,
    ) -> Result<(Array1<f32>, Option<Array1<i64>>)> {
        self.check_width(x)?;
        let (mut p, labels) = match &self.direct {
            Some(direct) => self.run_direct(direct, x, want_labels)?,
            None => self.run_plan(x, want_labels)?,
        };
        if self.no_missing.is_some() {
            // The engine's kernels do not all carry a NaN through (a clamped sigmoid gave
            // 4.5e-7 where onnxruntime gives NaN).
            for (p, row) in p.iter_mut().zip(x.rows()) {
                if row.iter().any(|v| v.is_nan()) {
                    *p = f32::NAN;
                }
            }
        }
        Ok((p, labels))
    }

    fn run_direct(
        &self,
        direct: &Direct,
        x: ArrayView2<f32>,
        want_labels: bool,
    ) -> Result<(Array1<f32>, Option<Array1<i64>>)> {
        let n = x.nrows();
        let out = direct.ensemble.eval(x)?;
        let slot_of = |i: usize| {
            direct
                .slots
                .get(i)
                .copied()
                .ok_or_else(|| BmsError::model("the model produced too few outputs"))
        };
        let scores_slot = usize::from(out.label_index.is_some());
        let (ix, take) = self.probability;
        if slot_of(ix)? != scores_slot {
            return Err(BmsError::model(
                "the probability output is not the ensemble's scores",
            ));
        }
        let p: Array1<f32> = match take {
            Take::Column(c) if c < out.scores.ncols() => out.scores.column(c).to_owned(),
            Take::Whole if out.scores.ncols() == 1 => out.scores.column(0).to_owned(),
            _ => {
                return Err(BmsError::model(format!(
                    "the ensemble's scores have {} columns, which does not fit the probability output",
                    out.scores.ncols()
                )));
            }
        };
        let labels = match self.label.filter(|_| want_labels) {
            None => None,
            Some(li) => {
                let (0, tree::EnsembleKind::Classifier { labels }, Some(ix)) = (
                    slot_of(li)?,
                    direct.ensemble.kind(),
                    out.label_index.as_ref(),
                ) else {
                    return Err(BmsError::model(
                        "the label output is not the ensemble's label",
                    ));
                };
                let tree::ClassLabels::Int64(values) = labels else {
                    return Err(BmsError::model("the ensemble's labels are not integers"));
                };
                Some(
                    ix.iter()
                        .map(|&i| {
                            values
                                .get(i)
                                .copied()
                                .ok_or_else(|| BmsError::model("label index out of range"))
                        })
                        .collect::<Result<Array1<i64>>>()?,
                )
            }
        };
        if p.len() != n {
            return Err(BmsError::Shape {
                what: "probability output rows vs. input rows".into(),
                expected: n,
                found: p.len(),
            });
        }
        Ok((p, labels))
    }

    fn run_plan(
        &self,
        x: ArrayView2<f32>,
        want_labels: bool,
    ) -> Result<(Array1<f32>, Option<Array1<i64>>)> {
        let n = x.nrows();
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
                .map_err(|e| tract_error("probability output", e.into()))?
                .to_owned(),
            Take::Column(c) => out
                .into_dimensionality::<ndarray::Ix2>()
                .map_err(|e| tract_error("probability output", e.into()))?
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
) -> Result<(Arc<Plan>, Vec<TypedFact>, Option<Direct>)> {
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
    let direct = direct_ensemble(&typed);
    let plan = typed
        .into_runnable()
        .map_err(|e| tract_error("the engine could not plan the graph", e))?;
    Ok((plan, facts, direct))
}

/// The ensemble when every graph output is an output of one [`ops::TreeEnsemble`] node
/// whose only input is the graph's only input; then nothing else in the graph can affect
/// an output.
fn direct_ensemble(typed: &TypedModel) -> Option<Direct> {
    let input = match typed.input_outlets().ok()? {
        [one] => *one,
        _ => return None,
    };
    let outputs = typed.output_outlets().ok()?;
    let node = outputs.first()?.node;
    if outputs.iter().any(|o| o.node != node) {
        return None;
    }
    let node = typed.node(node);
    if node.inputs != [input] {
        return None;
    }
    let op = node.op_as::<ops::TreeEnsemble>()?;
    Some(Direct {
        ensemble: Arc::clone(&op.ensemble),
        slots: outputs.iter().map(|o| o.slot).collect(),
    })
}

/// Operators that pass their first input's values through (reshaping, selecting or
/// converting them), looked through when finding where an output comes from.
const PASS_THROUGH: [&str; 9] = [
    "Identity",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Cast",
    "Slice",
    "Gather",
    "Transpose",
];

/// Why the graph output `name` is not known to be a probability; `None` when it comes
/// (through pass-through operators, `Mul` by 1, `Sub` from 1 and `Concat` of such parts,
/// as skl2onnx writes `[1 − p, p]`) from a classifier's scores, a `Sigmoid` or
/// `Softmax`, or a regressor whose post-transform is one.
fn not_a_probability(proto: &ModelProto, name: &str) -> Option<String> {
    let graph = proto.graph.as_ref()?;
    origin(graph, name, graph.node.len() + 1)
}

fn origin(graph: &tract_onnx::pb::GraphProto, tensor: &str, budget: usize) -> Option<String> {
    if budget == 0 {
        return Some("its producers form a cycle".into());
    }
    let Some(node) = graph
        .node
        .iter()
        .find(|n| n.output.iter().any(|o| o == tensor))
    else {
        return Some("it does not come from an operator".into());
    };
    let op = node.op_type.as_str();
    let inputs = node.input.as_slice();
    let next = |t: &str| origin(graph, t, budget - 1);
    if PASS_THROUGH.contains(&op) {
        return next(inputs.first()?);
    }
    match (op, inputs) {
        // onnxmltools ends LightGBM classifiers with `Mul(probabilities, 1.0)`.
        ("Mul", [a, b]) if initializer_is_one(graph, b) => return next(a),
        ("Mul", [a, b]) if initializer_is_one(graph, a) => return next(b),
        ("Sub", [one, p]) if initializer_is_one(graph, one) => return next(p),
        ("Concat", parts) if !parts.is_empty() => return parts.iter().find_map(|t| next(t)),
        _ => {}
    }
    let post = node
        .attribute
        .iter()
        .find(|a| a.name == "post_transform")
        .map(|a| String::from_utf8_lossy(&a.s).into_owned())
        .unwrap_or_else(|| "NONE".into());
    match op {
        "TreeEnsembleClassifier" | "LinearClassifier" | "SVMClassifier" | "Sigmoid" | "Softmax" => {
            None
        }
        "TreeEnsembleRegressor" | "LinearRegressor" | "SVMRegressor" | "TreeEnsemble"
            if matches!(post.as_str(), "LOGISTIC" | "SOFTMAX" | "SOFTMAX_ZERO") =>
        {
            None
        }
        "TreeEnsembleRegressor" | "LinearRegressor" | "SVMRegressor" | "TreeEnsemble" => Some(
            format!("it is a regressor's value ({op}, post_transform {post})"),
        ),
        other => Some(format!(
            "it comes from {other}, not from a classifier, Sigmoid or Softmax"
        )),
    }
}

/// Whether `name` is a float initializer whose values are all 1.
fn initializer_is_one(graph: &tract_onnx::pb::GraphProto, name: &str) -> bool {
    let Some(t) = graph.initializer.iter().find(|t| t.name == name) else {
        return false;
    };
    // data_type 1: FLOAT.
    if t.data_type != 1 {
        return false;
    }
    if !t.float_data.is_empty() {
        return t.float_data.iter().all(|&v| v == 1.0);
    }
    !t.raw_data.is_empty()
        && t.raw_data.len() % 4 == 0
        && t.raw_data
            .chunks_exact(4)
            .all(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) == 1.0)
}

/// Operators that treat a NaN input as a missing value (ONNX-ML): tree ensembles follow
/// the missing-value branch, an imputer replaces it.
const HANDLE_MISSING: [&str; 4] = [
    "TreeEnsembleClassifier",
    "TreeEnsembleRegressor",
    "TreeEnsemble",
    "Imputer",
];

/// The first operator fed by a graph input that does not handle missing values, `None`
/// when every one does.
fn consumer_without_missing(proto: &ModelProto) -> Option<String> {
    let graph = proto.graph.as_ref()?;
    let initializers: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&str> = graph
        .input
        .iter()
        .map(|i| i.name.as_str())
        .filter(|n| !initializers.contains(n))
        .collect();
    graph
        .node
        .iter()
        .filter(|n| n.input.iter().any(|i| inputs.contains(&i.as_str())))
        .find(|n| !HANDLE_MISSING.contains(&n.op_type.as_str()))
        .map(|n| n.op_type.clone())
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
