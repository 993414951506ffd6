//! ONNX inference (SPEC §7). The file is read with the project's own protobuf types, the
//! graph is normalised (`normalize`) and the feature contract read from
//! `metadata_props` ([`contract`]); then one of two engines runs it ([`EngineKind`]):
//! tract's general graph engine (feature `onnx-graph`, the default), with the ONNX-ML
//! tree ensembles and `Scaler` as the project's own operators ([`tree`], `ops`)
//! registered in place of tract's, or the lean interpreter ([`lean`]) of the graphs those
//! operators, linear layers and the small nodes around them make — the on-vehicle build,
//! without the graph engine. Both give the same answers within 1e-6.
//!
//! When every output of the graph comes straight from one tree ensemble fed by the
//! graph input (the usual tree-model export), `predict` calls that ensemble's
//! [`tree::CompiledEnsemble`] on the caller's rows directly: the same code either
//! engine would run, without its per-call tensor copies and bookkeeping.

pub mod contract;
#[cfg(feature = "onnx-graph")]
mod graph;
pub mod lean;
mod normalize;
#[doc(hidden)]
pub mod onnx;
#[cfg(feature = "onnx-graph")]
pub mod ops;
mod proto;
pub mod tree;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;

use ndarray::{Array1, ArrayView2};
use prost::Message;

use onnx::ModelProto;

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
pub(crate) enum Take {
    /// `[N, k]`: column `k - 1` (column 1 of `[N, 2]`, column 0 of `[N, 1]`).
    Column(usize),
    /// `[N]`.
    Whole,
}

/// What an engine says of one graph output: enough to choose the probability and
/// label outputs.
#[derive(Debug, Clone)]
pub(crate) struct OutFact {
    float: bool,
    int: bool,
    rank: usize,
    /// The second dimension, when known.
    cols: Option<usize>,
    /// For messages.
    description: String,
}

/// The engine that runs the graph.
enum Engine {
    /// tract's general graph engine (feature `onnx-graph`).
    #[cfg(feature = "onnx-graph")]
    Graph(graph::GraphEngine),
    /// The lean interpreter ([`lean`]).
    Lean(lean::LeanGraph),
}

/// Which engine [`Model::from_bytes_with`] loads a model on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineKind {
    /// tract's general ONNX graph engine: every standard operator (the default where the
    /// crate is built with feature `onnx-graph`).
    #[cfg(feature = "onnx-graph")]
    Graph,
    /// The lean interpreter: tree ensembles, linear layers and the small nodes around
    /// them ([`lean::OPERATORS`]); the only engine without feature `onnx-graph`.
    Lean,
}

impl Default for EngineKind {
    fn default() -> Self {
        #[cfg(feature = "onnx-graph")]
        return EngineKind::Graph;
        #[cfg(not(feature = "onnx-graph"))]
        return EngineKind::Lean;
    }
}

/// The graph is `input → tree ensemble → outputs`: graph output `i` is output
/// `slots[i]` of the ensemble op (classifier: 0 label, 1 scores; regressor: 0 values).
pub(crate) struct Direct {
    pub(crate) ensemble: Arc<tree::CompiledEnsemble>,
    pub(crate) slots: Vec<usize>,
}

/// A loaded, optimised model: immutable and shareable across threads; each call reuses
/// a per-thread run state from a pool.
pub struct Model {
    engine: Engine,
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
            .field("engine", &self.engine_kind())
            .finish()
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
        Self::from_bytes_with(bytes, EngineKind::default())
    }

    /// [`Model::from_bytes`] on the given engine (both builds' answers agree within
    /// 1e-6; the full build uses the lean engine only when asked).
    pub fn from_bytes_with(bytes: &[u8], engine: EngineKind) -> Result<Self> {
        let mut proto = ModelProto::decode(bytes).map_err(|e| BmsError::Model {
            file: None,
            reason: format!(
                "not an ONNX model (protobuf decoding failed: {e}); the file may be truncated or corrupt"
            ),
            source: Some(Box::new(e)),
        })?;
        #[cfg(feature = "onnx-graph")]
        let framework = ops::framework();
        let input = match engine {
            #[cfg(feature = "onnx-graph")]
            EngineKind::Graph => normalize::normalize(&mut proto, &|op: &onnx::NodeProto| {
                graph::supports(&framework, &op.op_type)
            })?,
            EngineKind::Lean => normalize::normalize(&mut proto, &|op: &onnx::NodeProto| {
                lean::supports(&op.domain, &op.op_type)
            })
            .map_err(|e| match e {
                BmsError::Model { reason, .. } if reason.starts_with("unsupported operator") => {
                    BmsError::model(format!(
                        "{reason}. This is the lean build, which runs {}; the full build \
                         (bms-core feature `onnx-graph`, the default) runs every standard ONNX \
                         operator",
                        lean::OPERATORS.join(", ")
                    ))
                }
                other => other,
            })?,
        };
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

        let built = catch_unwind(AssertUnwindSafe(|| -> Result<_> {
            match engine {
                #[cfg(feature = "onnx-graph")]
                EngineKind::Graph => {
                    let (g, facts, direct) = graph::GraphEngine::build(&framework, &proto, width)?;
                    Ok((Engine::Graph(g), facts, direct))
                }
                EngineKind::Lean => {
                    let g = lean::LeanGraph::new(&proto, &input.name)?;
                    let facts = g.facts(width)?;
                    let direct = g
                        .direct()
                        .map(|(ensemble, slots)| Direct { ensemble, slots });
                    Ok((Engine::Lean(g), facts, direct))
                }
            }
        }))
        .map_err(|_| BmsError::model("the engine panicked while loading the model"))??;
        let (engine, facts, direct) = built;
        let (probability, label) = choose_outputs(&output_names, &facts)?;
        let not_probability = if contract.output_is_probability {
            None
        } else {
            not_a_probability(&proto, &output_names[probability.0])
        };

        let model = Model {
            engine,
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

    /// The engine the model runs on.
    pub fn engine_kind(&self) -> EngineKind {
        match self.engine {
            #[cfg(feature = "onnx-graph")]
            Engine::Graph(_) => EngineKind::Graph,
            Engine::Lean(_) => EngineKind::Lean,
        }
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
        let label = self.label.filter(|_| want_labels);
        if n == 0 {
            return Ok((Array1::zeros(0), label.map(|_| Array1::zeros(0))));
        }
        let (p, labels) = match &self.engine {
            #[cfg(feature = "onnx-graph")]
            Engine::Graph(g) => g.run(x, self.probability, label)?,
            Engine::Lean(g) => g.run_selected(x, self.probability, label)?,
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

fn origin(graph: &onnx::GraphProto, tensor: &str, budget: usize) -> Option<String> {
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
fn initializer_is_one(graph: &onnx::GraphProto, name: &str) -> bool {
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
fn choose_outputs(names: &[String], facts: &[OutFact]) -> Result<((usize, Take), Option<usize>)> {
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
            .map(|(n, f)| format!("{n}: {}", f.description))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut candidates: Vec<(usize, Take)> = Vec::new();
    for (i, f) in facts.iter().enumerate() {
        if !f.float {
            continue;
        }
        match f.rank {
            1 => candidates.push((i, Take::Whole)),
            2 => match f.cols {
                Some(2) => candidates.push((i, Take::Column(1))),
                Some(1) => candidates.push((i, Take::Column(0))),
                Some(k) => {
                    return Err(BmsError::model(format!(
                        "output `{}` has {k} columns: only binary classifiers ([N, 2]) and \
                         single-probability outputs ([N, 1] or [N]) are supported",
                        names[i]
                    )));
                }
                None => {}
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
    let label = facts
        .iter()
        .enumerate()
        .position(|(i, f)| i != probability.0 && f.rank == 1 && f.int);
    Ok((probability, label))
}
