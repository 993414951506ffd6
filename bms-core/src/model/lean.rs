//! The lean engine: an interpreter of the ONNX graphs the project's own operators cover,
//! for builds without the general graph engine (the on-vehicle C library). It runs tree
//! ensembles ([`super::tree`]), `Scaler`, linear layers (`MatMul`, `Gemm`, `Add`…),
//! activations and the small pre/post-processing nodes exporters write around them
//! ([`OPERATORS`]); any other operator is refused at load, naming it.
//!
//! Nodes run in file order (ONNX requires a topologically sorted graph; one that is not
//! is refused at load) on whole tensors. Integers of every ONNX width are held as i64,
//! floats as f32 (float64 tensors are refused: the full build runs them).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use ndarray::{Array1, ArrayD, ArrayView2, Axis, Ix2, IxDyn, Zip};

use super::onnx::{GraphProto, ModelProto, NodeProto};
use super::proto::{self, Data};
use super::tree::{ClassLabels, CompiledEnsemble, EnsembleKind};
use super::{OutFact, Take};
use crate::error::{BmsError, Result};

/// Every operator the lean engine runs (default ONNX domain, or ai.onnx.ml for the
/// ML operators).
pub const OPERATORS: [&str; 32] = [
    "TreeEnsembleClassifier",
    "TreeEnsembleRegressor",
    "LinearClassifier",
    "LinearRegressor",
    "Scaler",
    "MatMul",
    "Gemm",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Sigmoid",
    "Softmax",
    "Relu",
    "Tanh",
    "Exp",
    "Neg",
    "Abs",
    "Identity",
    "Cast",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Concat",
    "Gather",
    "ArgMax",
    "ArrayFeatureExtractor",
    "Constant",
    "Dropout",
    "Normalizer",
];

/// Whether the lean engine runs `op_type` of `domain`.
pub fn supports(domain: &str, op_type: &str) -> bool {
    matches!(domain, "" | "ai.onnx" | "ai.onnx.ml") && OPERATORS.contains(&op_type)
}

#[derive(Debug, Clone, Copy)]
enum Binary {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, Copy)]
enum Unary {
    Sigmoid,
    Relu,
    Tanh,
    Exp,
    Neg,
    Abs,
}

#[derive(Debug, Clone, Copy)]
enum Norm {
    Max,
    L1,
    L2,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum LinearPost {
    None,
    Logistic,
    Softmax,
}

/// ai.onnx.ml `LinearClassifier` / `LinearRegressor`: `scores = x · coefficientsᵀ +
/// intercepts`, then the post-transform; a classifier also gives the label of the
/// highest score. A binary classifier with one row of coefficients gives `[−s, s]`
/// (`[1 − σ(s), σ(s)]` under LOGISTIC, their softmax under SOFTMAX), as the graph engine
/// does.
#[derive(Debug)]
struct Linear {
    /// `[width, outputs]`.
    weights: ndarray::Array2<f32>,
    intercepts: Option<Vec<f32>>,
    post: LinearPost,
    /// `None` for a regressor.
    labels: Option<ClassLabels>,
    binary: bool,
}

#[derive(Debug)]
enum Op {
    Tree(Arc<CompiledEnsemble>),
    Linear(Box<Linear>),
    Scaler {
        offset: Vec<f32>,
        scale: Vec<f32>,
    },
    MatMul,
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
    },
    Binary(Binary),
    Unary(Unary),
    /// `coerce`: opset < 13 semantics (flatten to 2-D at `axis`).
    Softmax {
        axis: i64,
        coerce: bool,
    },
    Identity,
    Cast(i32),
    Reshape {
        allow_zero: bool,
    },
    Flatten(i64),
    /// Axes from the attribute (opset < 13) or, when `None`, from the second input.
    Squeeze(Option<Vec<i64>>),
    Unsqueeze(Option<Vec<i64>>),
    Transpose(Option<Vec<i64>>),
    Concat(i64),
    Gather(i64),
    ArgMax {
        axis: i64,
        keep_dims: bool,
        last: bool,
    },
    ArrayFeatureExtractor,
    Normalizer(Norm),
}

#[derive(Debug)]
struct Step {
    op: Op,
    /// Value slots of the inputs; `None` for an omitted optional input.
    inputs: Vec<Option<usize>>,
    outputs: Vec<usize>,
    /// `op_type` and node name, for errors.
    what: String,
}

/// A graph ready to run: steps over numbered value slots.
#[derive(Debug)]
pub(crate) struct LeanGraph {
    steps: Vec<Step>,
    slots: usize,
    consts: Vec<(usize, Data)>,
    input: usize,
    outputs: Vec<usize>,
}

fn step_error(what: &str, reason: impl std::fmt::Display) -> BmsError {
    BmsError::model(format!("{what}: {reason}"))
}

/// The opset version of the default domain (1 when the model names none).
fn default_opset(proto: &ModelProto) -> i64 {
    proto
        .opset_import
        .iter()
        .filter(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .max()
        .unwrap_or(1)
}

impl LeanGraph {
    /// Compiles the normalised graph whose one input is `input`.
    pub(crate) fn new(proto: &ModelProto, input: &str) -> Result<Self> {
        let graph: &GraphProto = proto
            .graph
            .as_ref()
            .ok_or_else(|| BmsError::model("the file holds no graph"))?;
        let opset = default_opset(proto);
        let mut slot_of: HashMap<String, usize> = HashMap::new();
        let mut consts = Vec::new();
        for t in &graph.initializer {
            let id = slot_of.len();
            slot_of.insert(t.name.clone(), id);
            consts.push((id, proto::tensor(t, false)?));
        }
        let input_slot = slot_of.len();
        slot_of.insert(input.to_owned(), input_slot);
        let mut steps = Vec::with_capacity(graph.node.len());
        for node in &graph.node {
            let what = format!("{} node `{}`", node.op_type, node.name);
            let inputs = node
                .input
                .iter()
                .map(|name| {
                    if name.is_empty() {
                        return Ok(None);
                    }
                    slot_of.get(name).copied().map(Some).ok_or_else(|| {
                        step_error(
                            &what,
                            format!(
                                "reads `{name}`, which no earlier node, initializer or input \
                                 gives (ONNX graphs list their nodes in dependency order)"
                            ),
                        )
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            if node.op_type == "Constant" {
                let value = proto::attr(node, "value")
                    .and_then(|a| a.t.as_ref())
                    .ok_or_else(|| step_error(&what, "only a `value` tensor is supported"))?;
                let out = node
                    .output
                    .first()
                    .ok_or_else(|| step_error(&what, "no output"))?;
                let id = slot_of.len();
                slot_of.insert(out.clone(), id);
                consts.push((id, proto::tensor(value, false)?));
                continue;
            }
            // Identity (and Dropout at inference) only name their input anew.
            if matches!(node.op_type.as_str(), "Identity" | "Dropout")
                && node.output.len() == 1
                && let Some(Some(src)) = inputs.first()
            {
                slot_of.insert(node.output[0].clone(), *src);
                continue;
            }
            let op = op_of(node, opset, &what)?;
            let outputs = node
                .output
                .iter()
                .map(|name| {
                    let id = slot_of.len();
                    slot_of.insert(name.clone(), id);
                    id
                })
                .collect();
            steps.push(Step {
                op,
                inputs,
                outputs,
                what,
            });
        }
        let outputs = graph
            .output
            .iter()
            .map(|o| {
                slot_of.get(&o.name).copied().ok_or_else(|| {
                    BmsError::model(format!("graph output `{}` is computed by no node", o.name))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(LeanGraph {
            steps,
            slots: slot_of.len(),
            consts,
            input: input_slot,
            outputs,
        })
    }

    /// The ensemble when the graph is one tree-ensemble node on the input whose outputs
    /// are the graph's, with the graph-output → ensemble-output map.
    pub(crate) fn direct(&self) -> Option<(Arc<CompiledEnsemble>, Vec<usize>)> {
        let [step] = self.steps.as_slice() else {
            return None;
        };
        let Op::Tree(e) = &step.op else { return None };
        if step.inputs != [Some(self.input)] {
            return None;
        }
        let slots = self
            .outputs
            .iter()
            .map(|o| step.outputs.iter().position(|s| s == o))
            .collect::<Option<Vec<_>>>()?;
        Some((Arc::clone(e), slots))
    }

    /// What the outputs are, from a run on one row of zeros.
    pub(crate) fn facts(&self, width: usize) -> Result<Vec<OutFact>> {
        let probe = ndarray::Array2::<f32>::zeros((1, width));
        Ok(self
            .run(probe.view())?
            .iter()
            .map(|d| {
                let shape = d.shape();
                OutFact {
                    float: matches!(d, Data::F32(_)),
                    int: matches!(d, Data::I64(_)),
                    rank: shape.len(),
                    cols: shape.get(1).copied(),
                    description: format!("{} {shape:?} for one row", d.type_name()),
                }
            })
            .collect())
    }

    /// Runs the graph on `x`: the probability column `probability` selects, and the label
    /// output `label` when given.
    pub(crate) fn run_selected(
        &self,
        x: ArrayView2<f32>,
        probability: (usize, Take),
        label: Option<usize>,
    ) -> Result<(Array1<f32>, Option<Array1<i64>>)> {
        let mut outputs = self.run(x)?;
        let take = |outputs: &mut Vec<Data>, i: usize| {
            if i < outputs.len() {
                Ok(std::mem::replace(
                    &mut outputs[i],
                    Data::I64(ArrayD::zeros(IxDyn(&[0]))),
                ))
            } else {
                Err(BmsError::model("the model produced too few outputs"))
            }
        };
        let labels = match label {
            None => None,
            Some(li) => match take(&mut outputs, li)? {
                Data::I64(a) if a.ndim() == 1 => Some(a.into_iter().collect()),
                other => {
                    return Err(BmsError::model(format!(
                        "the label output is {} {:?}, not integer [N]",
                        other.type_name(),
                        other.shape()
                    )));
                }
            },
        };
        let (ix, how) = probability;
        let Data::F32(out) = take(&mut outputs, ix)? else {
            return Err(BmsError::model("the probability output is not float32"));
        };
        let p = match (how, out.ndim()) {
            (Take::Whole, 1) => out.into_iter().collect(),
            (Take::Column(c), 2) if c < out.shape()[1] => {
                out.index_axis(Axis(1), c).iter().copied().collect()
            }
            _ => {
                return Err(BmsError::model(format!(
                    "the probability output has shape {:?}, which its first run did not have",
                    out.shape()
                )));
            }
        };
        Ok((p, labels))
    }

    /// Runs the graph on `x` (`[N, width]`): the graph outputs in order.
    pub(crate) fn run(&self, x: ArrayView2<f32>) -> Result<Vec<Data>> {
        let mut values: Vec<Option<Cow<'_, Data>>> = vec![None; self.slots];
        for (id, c) in &self.consts {
            values[*id] = Some(Cow::Borrowed(c));
        }
        values[self.input] = Some(Cow::Owned(Data::F32(x.to_owned().into_dyn())));
        for step in &self.steps {
            let args = step
                .inputs
                .iter()
                .map(|i| i.and_then(|i| values[i].as_deref()))
                .collect::<Vec<Option<&Data>>>();
            let out = eval(&step.op, &args).map_err(|e| match e {
                BmsError::Model { reason, .. } => step_error(&step.what, reason),
                other => other,
            })?;
            // A graph can grow its values at every node (Concat of a value with itself):
            // no value may hold more than this, so a hostile file cannot exhaust memory.
            let limit = (1usize << 24).max(x.len().saturating_mul(4096));
            if let Some(big) = out.iter().find(|d| d.len() > limit) {
                return Err(step_error(
                    &step.what,
                    format!(
                        "gives a tensor of shape {:?}, more than {limit} values for an input of {}",
                        big.shape(),
                        x.len()
                    ),
                ));
            }
            if out.len() < step.outputs.len() {
                return Err(step_error(
                    &step.what,
                    format!(
                        "gives {} outputs, the graph wires {}",
                        out.len(),
                        step.outputs.len()
                    ),
                ));
            }
            for (slot, v) in step.outputs.iter().zip(out) {
                values[*slot] = Some(Cow::Owned(v));
            }
        }
        self.outputs
            .iter()
            .map(|&o| {
                values[o]
                    .as_deref()
                    .cloned()
                    .ok_or_else(|| BmsError::model("a graph output was not computed"))
            })
            .collect()
    }
}

fn op_of(node: &NodeProto, opset: i64, what: &str) -> Result<Op> {
    let i = |name: &str, default: i64| proto::int(node, name).unwrap_or(default);
    let axes_attr = || proto::attr(node, "axes").map(|a| a.ints.clone());
    Ok(match node.op_type.as_str() {
        "TreeEnsembleClassifier" | "TreeEnsembleRegressor" => {
            Op::Tree(Arc::new(proto::ensemble(node)?))
        }
        "LinearClassifier" | "LinearRegressor" => Op::Linear(Box::new(linear(node, what)?)),
        "Scaler" => {
            let (offset, scale) = proto::scaler(node);
            Op::Scaler { offset, scale }
        }
        "MatMul" => Op::MatMul,
        "Gemm" => Op::Gemm {
            alpha: proto::float(node, "alpha").unwrap_or(1.0),
            beta: proto::float(node, "beta").unwrap_or(1.0),
            trans_a: i("transA", 0) != 0,
            trans_b: i("transB", 0) != 0,
        },
        "Add" => Op::Binary(Binary::Add),
        "Sub" => Op::Binary(Binary::Sub),
        "Mul" => Op::Binary(Binary::Mul),
        "Div" => Op::Binary(Binary::Div),
        "Sigmoid" => Op::Unary(Unary::Sigmoid),
        "Relu" => Op::Unary(Unary::Relu),
        "Tanh" => Op::Unary(Unary::Tanh),
        "Exp" => Op::Unary(Unary::Exp),
        "Neg" => Op::Unary(Unary::Neg),
        "Abs" => Op::Unary(Unary::Abs),
        "Softmax" => Op::Softmax {
            axis: i("axis", if opset < 13 { 1 } else { -1 }),
            coerce: opset < 13,
        },
        "Identity" | "Dropout" => Op::Identity,
        "Cast" => {
            let to =
                proto::int(node, "to").ok_or_else(|| step_error(what, "has no `to` attribute"))?;
            let to = i32::try_from(to).map_err(|_| step_error(what, format!("bad type {to}")))?;
            match to {
                1 | 7 | 6 | 5 | 3 | 4 | 2 | 9 | 12 | 13 => Op::Cast(to),
                other => {
                    return Err(step_error(
                        what,
                        format!(
                            "casts to {}; the lean build holds float32, integer and string \
                             tensors (the full build, feature onnx-graph, runs it)",
                            proto::elem_type_name(other)
                        ),
                    ));
                }
            }
        }
        "Reshape" => Op::Reshape {
            allow_zero: i("allowzero", 0) != 0,
        },
        "Flatten" => Op::Flatten(i("axis", 1)),
        "Squeeze" => Op::Squeeze(if opset < 13 { axes_attr() } else { None }),
        "Unsqueeze" => {
            if opset < 13 {
                Op::Unsqueeze(Some(
                    axes_attr().ok_or_else(|| step_error(what, "no axes"))?,
                ))
            } else {
                Op::Unsqueeze(None)
            }
        }
        "Transpose" => Op::Transpose(proto::attr(node, "perm").map(|a| a.ints.clone())),
        "Concat" => {
            Op::Concat(proto::int(node, "axis").ok_or_else(|| step_error(what, "has no axis"))?)
        }
        "Gather" => Op::Gather(i("axis", 0)),
        "ArgMax" => Op::ArgMax {
            axis: i("axis", 0),
            keep_dims: i("keepdims", 1) != 0,
            last: i("select_last_index", 0) != 0,
        },
        "ArrayFeatureExtractor" => Op::ArrayFeatureExtractor,
        "Normalizer" => Op::Normalizer(
            match proto::string(node, "norm").as_deref().unwrap_or("MAX") {
                "MAX" => Norm::Max,
                "L1" => Norm::L1,
                "L2" => Norm::L2,
                other => return Err(step_error(what, format!("unknown norm {other}"))),
            },
        ),
        other => {
            return Err(BmsError::model(format!(
                "{other} is not an operator of the lean build"
            )));
        }
    })
}

fn linear(node: &NodeProto, what: &str) -> Result<Linear> {
    let classifier = node.op_type == "LinearClassifier";
    let post = match proto::string(node, "post_transform")
        .as_deref()
        .unwrap_or("NONE")
    {
        "NONE" => LinearPost::None,
        "LOGISTIC" => LinearPost::Logistic,
        "SOFTMAX" => LinearPost::Softmax,
        other => {
            return Err(step_error(
                what,
                format!("post_transform {other} is not supported (NONE, LOGISTIC, SOFTMAX)"),
            ));
        }
    };
    let coefficients = proto::floats(node, "coefficients")?;
    if coefficients.is_empty() {
        return Err(step_error(what, "has no coefficients"));
    }
    let intercepts = proto::attr(node, "intercepts").map(|a| a.floats.clone());
    let (labels, models, binary) = if classifier {
        let labels = match (
            proto::attr(node, "classlabels_ints"),
            proto::strings(node, "classlabels_strings"),
        ) {
            (Some(a), None) => ClassLabels::Int64(a.ints.clone()),
            (None, Some(s)) => ClassLabels::Strings(s),
            _ => {
                return Err(step_error(
                    what,
                    "needs exactly one of classlabels_ints, classlabels_strings",
                ));
            }
        };
        let n = labels.len();
        let multi = proto::int(node, "multi_class").unwrap_or(0);
        let models = match &intercepts {
            Some(v) => v.len(),
            None if n == 2 && multi == 0 => 1,
            None => n,
        };
        let binary = n == 2 && models == 1 && multi == 0;
        if !binary && models != n {
            return Err(step_error(
                what,
                format!("{n} class labels for {models} rows of coefficients"),
            ));
        }
        (Some(labels), models, binary)
    } else {
        let targets = proto::int(node, "targets").unwrap_or(1);
        let targets = usize::try_from(targets)
            .ok()
            .filter(|&t| t > 0)
            .ok_or_else(|| step_error(what, format!("targets {targets} must be > 0")))?;
        (None, targets, false)
    };
    if models == 0 || !coefficients.len().is_multiple_of(models) {
        return Err(step_error(
            what,
            format!(
                "{} coefficients do not make {models} rows",
                coefficients.len()
            ),
        ));
    }
    if intercepts.as_ref().is_some_and(|v| v.len() != models) {
        return Err(step_error(
            what,
            "one intercept per row of coefficients is required",
        ));
    }
    let width = coefficients.len() / models;
    let weights = ndarray::Array2::from_shape_vec((models, width), coefficients)
        .map_err(|e| step_error(what, e))?
        .reversed_axes()
        .as_standard_layout()
        .into_owned();
    Ok(Linear {
        weights,
        intercepts,
        post,
        labels,
        binary,
    })
}

fn eval_linear(l: &Linear, x: &Data) -> Result<Vec<Data>> {
    let x = match x {
        Data::F32(a) => a.clone(),
        Data::I64(a) => a.mapv(|v| v as f32),
        Data::Str(_) => return Err(bad("the input is string")),
    };
    let x = match x.ndim() {
        1 => reshaped(&x, vec![1, x.len()])?,
        _ => x,
    };
    let x = matrix(&x, "the input")?;
    if x.ncols() != l.weights.nrows() {
        return Err(bad(format!(
            "the input has {} columns, the coefficients {}",
            x.ncols(),
            l.weights.nrows()
        )));
    }
    let mut scores = x.dot(&l.weights);
    if let Some(b) = &l.intercepts {
        for mut row in scores.rows_mut() {
            row.iter_mut().zip(b).for_each(|(s, b)| *s += b);
        }
    }
    let scores = if l.binary {
        let s = scores.column(0).to_owned();
        let mut two = ndarray::Array2::<f32>::zeros((s.len(), 2));
        for (i, &v) in s.iter().enumerate() {
            let (a, b) = match l.post {
                LinearPost::None => (-v, v),
                LinearPost::Logistic => {
                    let p = sigmoid(v);
                    (1.0 - p, p)
                }
                LinearPost::Softmax => {
                    let m = v.abs();
                    let (ea, eb) = ((-v - m).exp(), (v - m).exp());
                    (ea / (ea + eb), eb / (ea + eb))
                }
            };
            two[[i, 0]] = a;
            two[[i, 1]] = b;
        }
        two.into_dyn()
    } else {
        let s = scores.into_dyn();
        match l.post {
            LinearPost::None => s,
            LinearPost::Logistic => s.mapv(sigmoid),
            LinearPost::Softmax => softmax(&s, 1),
        }
    };
    let Some(labels) = &l.labels else {
        return Ok(vec![Data::F32(scores)]);
    };
    let best: Vec<usize> = scores
        .lanes(Axis(1))
        .into_iter()
        .map(|lane| {
            let mut best = 0;
            for (i, &v) in lane.iter().enumerate() {
                if v > lane[best] {
                    best = i;
                }
            }
            best
        })
        .collect();
    let label = match labels {
        ClassLabels::Int64(v) => Data::I64(
            best.iter()
                .map(|&i| v.get(i).copied().unwrap_or(0))
                .collect::<Array1<_>>()
                .into_dyn(),
        ),
        ClassLabels::Strings(v) => Data::Str(
            best.iter()
                .map(|&i| v.get(i).cloned().unwrap_or_default())
                .collect::<Array1<_>>()
                .into_dyn(),
        ),
    };
    Ok(vec![label, Data::F32(scores)])
}

fn bad(reason: impl Into<String>) -> BmsError {
    BmsError::model(reason.into())
}

fn arg<'a>(args: &[Option<&'a Data>], i: usize) -> Result<&'a Data> {
    args.get(i)
        .copied()
        .flatten()
        .ok_or_else(|| bad(format!("input {i} is missing")))
}

fn float_arg<'a>(args: &[Option<&'a Data>], i: usize) -> Result<&'a ArrayD<f32>> {
    match arg(args, i)? {
        Data::F32(a) => Ok(a),
        other => Err(bad(format!(
            "input {i} is {}, not float32",
            other.type_name()
        ))),
    }
}

fn int_list(args: &[Option<&Data>], i: usize) -> Result<Option<Vec<i64>>> {
    match args.get(i).copied().flatten() {
        None => Ok(None),
        Some(Data::I64(a)) => Ok(Some(a.iter().copied().collect())),
        Some(other) => Err(bad(format!(
            "input {i} is {}, not integer",
            other.type_name()
        ))),
    }
}

/// `axis` (negative counts from the end) as an index below `rank`.
fn axis_index(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(bad(format!("axis {axis} is out of range for rank {rank}")))
    }
}

fn reshaped<T: Clone>(a: &ArrayD<T>, shape: Vec<usize>) -> Result<ArrayD<T>> {
    a.as_standard_layout()
        .into_owned()
        .into_shape_with_order(IxDyn(&shape))
        .map_err(|e| bad(format!("cannot reshape {:?} to {shape:?}: {e}", a.shape())))
}

macro_rules! each {
    ($d:expr, $a:ident => $e:expr) => {
        match $d {
            Data::F32($a) => Data::F32($e),
            Data::I64($a) => Data::I64($e),
            Data::Str($a) => Data::Str($e),
        }
    };
}

/// [`each!`] for numbers only: strings (class labels) go through the shape operators
/// exporters apply to labels (Reshape, Squeeze, ArrayFeatureExtractor), not through
/// these (each type's copy of the code costs the vehicle build's size).
macro_rules! each_number {
    ($d:expr, $a:ident => $e:expr) => {
        match $d {
            Data::F32($a) => Data::F32($e),
            Data::I64($a) => Data::I64($e),
            Data::Str(_) => return Err(bad("string tensors are not supported here")),
        }
    };
}

fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let n = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        let k = n - s.len();
        if i < k { 1 } else { s[i - k] }
    };
    (0..n)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(bad(format!("shapes {a:?} and {b:?} do not broadcast"))),
        })
        .collect()
}

// Function pointers rather than closures: one copy of the loop per element type keeps
// the lean library small (the vehicle build's size goal).
fn binary<T: Copy>(a: &ArrayD<T>, b: &ArrayD<T>, f: fn(T, T) -> T) -> Result<ArrayD<T>> {
    let shape = broadcast_shape(a.shape(), b.shape())?;
    let av = a.broadcast(IxDyn(&shape)).ok_or_else(|| bad("broadcast"))?;
    let bv = b.broadcast(IxDyn(&shape)).ok_or_else(|| bad("broadcast"))?;
    Ok(Zip::from(&av).and(&bv).map_collect(|&x, &y| f(x, y)))
}

fn matrix(a: &ArrayD<f32>, what: &str) -> Result<ndarray::Array2<f32>> {
    a.view()
        .into_dimensionality::<Ix2>()
        .map(|v| v.to_owned())
        .map_err(|_| {
            bad(format!(
                "{what} must be a matrix, it has shape {:?}",
                a.shape()
            ))
        })
}

fn matmul(a: &ArrayD<f32>, b: &ArrayD<f32>) -> Result<ArrayD<f32>> {
    // numpy semantics for 1-D operands; batched products are not supported.
    let (a2, squeeze_a) = match a.ndim() {
        1 => (reshaped(a, vec![1, a.len()])?, true),
        _ => (a.clone(), false),
    };
    let (b2, squeeze_b) = match b.ndim() {
        1 => (reshaped(b, vec![b.len(), 1])?, true),
        _ => (b.clone(), false),
    };
    let a2 = matrix(&a2, "MatMul's first input")?;
    let b2 = matrix(&b2, "MatMul's second input")?;
    if a2.ncols() != b2.nrows() {
        return Err(bad(format!(
            "cannot multiply {:?} by {:?}",
            a.shape(),
            b.shape()
        )));
    }
    let c = a2.dot(&b2);
    let mut shape = vec![c.nrows(), c.ncols()];
    if squeeze_b {
        shape.pop();
    }
    if squeeze_a {
        shape.remove(0);
    }
    reshaped(&c.into_dyn(), shape)
}

fn f32_add(a: f32, b: f32) -> f32 {
    a + b
}

fn f32_sub(a: f32, b: f32) -> f32 {
    a - b
}

fn f32_mul(a: f32, b: f32) -> f32 {
    a * b
}

fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Softmax of every lane along `axis`.
fn softmax(a: &ArrayD<f32>, axis: usize) -> ArrayD<f32> {
    let mut out = a.clone();
    for mut lane in out.lanes_mut(Axis(axis)) {
        let max = lane.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        lane.mapv_inplace(|v| (v - max).exp());
        let sum: f32 = lane.iter().sum();
        lane.mapv_inplace(|v| v / sum);
    }
    out
}

fn eval(op: &Op, args: &[Option<&Data>]) -> Result<Vec<Data>> {
    Ok(match op {
        Op::Tree(ensemble) => {
            let cast;
            let x = match arg(args, 0)? {
                Data::F32(a) => a,
                Data::I64(a) => {
                    cast = a.mapv(|v| v as f32);
                    &cast
                }
                Data::Str(_) => return Err(bad("tree ensemble input is string")),
            };
            let x = x
                .view()
                .into_dimensionality::<Ix2>()
                .map_err(|_| bad("tree ensemble input must be [N, width]"))?;
            let out = ensemble.eval(x)?;
            let scores = Data::F32(out.scores.into_dyn());
            match (ensemble.kind(), out.label_index) {
                (EnsembleKind::Classifier { labels }, Some(ix)) => {
                    let label = match labels {
                        ClassLabels::Int64(l) => Data::I64(
                            ix.iter()
                                .map(|&i| l[i])
                                .collect::<ndarray::Array1<_>>()
                                .into_dyn(),
                        ),
                        ClassLabels::Strings(l) => Data::Str(
                            ix.iter()
                                .map(|&i| l[i].clone())
                                .collect::<ndarray::Array1<_>>()
                                .into_dyn(),
                        ),
                    };
                    vec![label, scores]
                }
                _ => vec![scores],
            }
        }
        Op::Linear(l) => eval_linear(l, arg(args, 0)?)?,
        Op::Scaler { offset, scale } => {
            let x = match arg(args, 0)? {
                Data::F32(a) => a.clone(),
                Data::I64(a) => a.mapv(|v| v as f32),
                Data::Str(_) => return Err(bad("Scaler input is string")),
            };
            let per = |v: &[f32], default: f32| -> Result<ArrayD<f32>> {
                match v.len() {
                    0 => Ok(ArrayD::from_elem(IxDyn(&[1]), default)),
                    n => ArrayD::from_shape_vec(IxDyn(&[n]), v.to_vec())
                        .map_err(|e| bad(e.to_string())),
                }
            };
            let y = binary(&x, &per(offset, 0.0)?, f32_sub)?;
            vec![Data::F32(binary(&y, &per(scale, 1.0)?, f32_mul)?)]
        }
        Op::MatMul => vec![Data::F32(matmul(float_arg(args, 0)?, float_arg(args, 1)?)?)],
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => {
            let mut a = matrix(float_arg(args, 0)?, "Gemm's A")?;
            let mut b = matrix(float_arg(args, 1)?, "Gemm's B")?;
            if *trans_a {
                a = a.reversed_axes();
            }
            if *trans_b {
                b = b.reversed_axes();
            }
            if a.ncols() != b.nrows() {
                return Err(bad(format!(
                    "Gemm cannot multiply {:?} by {:?}",
                    a.shape(),
                    b.shape()
                )));
            }
            let mut y = a.dot(&b).into_dyn();
            if *alpha != 1.0 {
                y.mapv_inplace(|v| v * alpha);
            }
            match args.get(2).copied().flatten() {
                None => {}
                Some(Data::F32(c)) => {
                    let c = c.mapv(|v| v * beta);
                    y = binary(&y, &c, f32_add)?;
                }
                Some(other) => {
                    return Err(bad(format!(
                        "Gemm's C is {}, not float32",
                        other.type_name()
                    )));
                }
            }
            vec![Data::F32(y)]
        }
        Op::Binary(kind) => {
            let out = match (arg(args, 0)?, arg(args, 1)?) {
                (Data::F32(a), Data::F32(b)) => Data::F32(binary(
                    a,
                    b,
                    match kind {
                        Binary::Add => f32_add,
                        Binary::Sub => f32_sub,
                        Binary::Mul => f32_mul,
                        Binary::Div => |x, y| x / y,
                    },
                )?),
                (Data::I64(a), Data::I64(b)) => Data::I64(match kind {
                    Binary::Add => binary(a, b, i64::wrapping_add)?,
                    Binary::Sub => binary(a, b, i64::wrapping_sub)?,
                    Binary::Mul => binary(a, b, i64::wrapping_mul)?,
                    Binary::Div => {
                        if b.iter().any(|&v| v == 0) {
                            return Err(bad("integer division by zero"));
                        }
                        binary(a, b, i64::wrapping_div)?
                    }
                }),
                (a, b) => {
                    return Err(bad(format!(
                        "operands are {} and {}",
                        a.type_name(),
                        b.type_name()
                    )));
                }
            };
            vec![out]
        }
        Op::Unary(kind) => {
            let x = float_arg(args, 0)?;
            let f: fn(f32) -> f32 = match kind {
                Unary::Sigmoid => sigmoid,
                Unary::Relu => |v| if v > 0.0 || v.is_nan() { v } else { 0.0 },
                Unary::Tanh => f32::tanh,
                Unary::Exp => f32::exp,
                Unary::Neg => |v| -v,
                Unary::Abs => f32::abs,
            };
            vec![Data::F32(x.mapv(f))]
        }
        Op::Softmax { axis, coerce } => {
            let x = float_arg(args, 0)?;
            let rank = x.ndim();
            let ax = axis_index(*axis, rank)?;
            if *coerce && ax + 1 != rank {
                let outer: usize = x.shape()[..ax].iter().product();
                let inner: usize = x.shape()[ax..].iter().product();
                let flat = reshaped(x, vec![outer, inner])?;
                vec![Data::F32(reshaped(&softmax(&flat, 1), x.shape().to_vec())?)]
            } else {
                vec![Data::F32(softmax(x, ax))]
            }
        }
        Op::Identity => vec![arg(args, 0)?.clone()],
        Op::Cast(to) => {
            let x = arg(args, 0)?;
            vec![match (to, x) {
                (1, Data::F32(a)) => Data::F32(a.clone()),
                (1, Data::I64(a)) => Data::F32(a.mapv(|v| v as f32)),
                (9, Data::F32(a)) => Data::I64(a.mapv(|v| i64::from(v != 0.0))),
                (9, Data::I64(a)) => Data::I64(a.mapv(|v| i64::from(v != 0))),
                (_, Data::F32(a)) => Data::I64(a.mapv(|v| v as i64)),
                (_, Data::I64(a)) => Data::I64(a.clone()),
                (_, Data::Str(_)) => return Err(bad("cannot cast strings")),
            }]
        }
        Op::Reshape { allow_zero } => {
            let x = arg(args, 0)?;
            let spec = int_list(args, 1)?.ok_or_else(|| bad("Reshape needs a shape input"))?;
            let total: usize = x.shape().iter().product();
            let mut shape = Vec::with_capacity(spec.len());
            let mut infer = None;
            for (i, &d) in spec.iter().enumerate() {
                match d {
                    -1 if infer.is_none() => {
                        infer = Some(i);
                        shape.push(1);
                    }
                    0 if !allow_zero => {
                        shape.push(*x.shape().get(i).ok_or_else(|| {
                            bad(format!("shape {spec:?}: no dimension {i} to copy"))
                        })?)
                    }
                    d if d >= 0 => shape.push(d as usize),
                    _ => return Err(bad(format!("bad shape {spec:?}"))),
                }
            }
            if let Some(i) = infer {
                let known: usize = shape.iter().product();
                if known == 0 || !total.is_multiple_of(known) {
                    return Err(bad(format!("cannot reshape {:?} to {spec:?}", x.shape())));
                }
                shape[i] = total / known;
            }
            vec![each!(x, a => reshaped(a, shape)?)]
        }
        Op::Flatten(axis) => {
            let x = arg(args, 0)?;
            let rank = x.shape().len();
            let ax = if *axis == rank as i64 {
                rank
            } else {
                axis_index(*axis, rank)?
            };
            let outer: usize = x.shape()[..ax].iter().product();
            let inner: usize = x.shape()[ax..].iter().product();
            vec![each_number!(x, a => reshaped(a, vec![outer, inner])?)]
        }
        Op::Squeeze(attr_axes) => {
            let x = arg(args, 0)?;
            let axes = match attr_axes {
                Some(a) => Some(a.clone()),
                None => int_list(args, 1)?,
            };
            let rank = x.shape().len();
            let drop: Vec<usize> = match axes {
                None => (0..rank).filter(|&i| x.shape()[i] == 1).collect(),
                Some(axes) => axes
                    .iter()
                    .map(|&a| axis_index(a, rank))
                    .collect::<Result<Vec<_>>>()?,
            };
            if drop.iter().any(|&i| x.shape()[i] != 1) {
                return Err(bad(format!("cannot squeeze {:?} at {drop:?}", x.shape())));
            }
            let shape = (0..rank)
                .filter(|i| !drop.contains(i))
                .map(|i| x.shape()[i])
                .collect();
            vec![each!(x, a => reshaped(a, shape)?)]
        }
        Op::Unsqueeze(attr_axes) => {
            let x = arg(args, 0)?;
            let axes = match attr_axes {
                Some(a) => a.clone(),
                None => int_list(args, 1)?.ok_or_else(|| bad("Unsqueeze needs axes"))?,
            };
            let rank = x.shape().len() + axes.len();
            let mut add = axes
                .iter()
                .map(|&a| axis_index(a, rank))
                .collect::<Result<Vec<_>>>()?;
            add.sort_unstable();
            let mut dims = x.shape().iter();
            let shape = (0..rank)
                .map(|i| {
                    if add.contains(&i) {
                        Ok(1)
                    } else {
                        dims.next().copied().ok_or_else(|| bad("repeated axes"))
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            vec![each!(x, a => reshaped(a, shape)?)]
        }
        Op::Transpose(perm) => {
            let x = arg(args, 0)?;
            let rank = x.shape().len();
            let perm: Vec<usize> = match perm {
                None => (0..rank).rev().collect(),
                Some(p) => p
                    .iter()
                    .map(|&a| axis_index(a, rank))
                    .collect::<Result<Vec<_>>>()?,
            };
            let mut seen = perm.clone();
            seen.sort_unstable();
            if seen != (0..rank).collect::<Vec<_>>() {
                return Err(bad(format!("bad permutation {perm:?}")));
            }
            vec![
                each_number!(x, a => a.clone().permuted_axes(IxDyn(&perm)).as_standard_layout().into_owned()),
            ]
        }
        Op::Concat(axis) => {
            let parts = (0..args.len())
                .map(|i| arg(args, i))
                .collect::<Result<Vec<_>>>()?;
            let first = parts.first().ok_or_else(|| bad("Concat of nothing"))?;
            let ax = axis_index(*axis, first.shape().len())?;
            macro_rules! cat {
                ($v:ident) => {{
                    let views = parts
                        .iter()
                        .map(|p| match p {
                            Data::$v(a) => Ok(a.view()),
                            other => Err(bad(format!(
                                "Concat of {} and {}",
                                first.type_name(),
                                other.type_name()
                            ))),
                        })
                        .collect::<Result<Vec<_>>>()?;
                    Data::$v(
                        ndarray::concatenate(Axis(ax), &views)
                            .map_err(|e| bad(format!("Concat: {e}")))?,
                    )
                }};
            }
            vec![match first {
                Data::F32(_) => cat!(F32),
                Data::I64(_) => cat!(I64),
                Data::Str(_) => return Err(bad("Concat of strings is not supported")),
            }]
        }
        Op::Gather(axis) => {
            let x = arg(args, 0)?;
            let Data::I64(ix) = arg(args, 1)? else {
                return Err(bad("Gather indices must be integers"));
            };
            let ax = axis_index(*axis, x.shape().len())?;
            let n = x.shape()[ax] as i64;
            let idx = ix
                .iter()
                .map(|&i| {
                    let j = if i < 0 { i + n } else { i };
                    if (0..n).contains(&j) {
                        Ok(j as usize)
                    } else {
                        Err(bad(format!("Gather index {i} out of range 0..{n}")))
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            let mut shape = x.shape()[..ax].to_vec();
            shape.extend_from_slice(ix.shape());
            shape.extend_from_slice(&x.shape()[ax + 1..]);
            vec![each_number!(x, a => reshaped(&a.select(Axis(ax), &idx), shape)?)]
        }
        Op::ArgMax {
            axis,
            keep_dims,
            last,
        } => {
            let x = float_arg(args, 0)?;
            let ax = axis_index(*axis, x.ndim())?;
            if x.shape()[ax] == 0 {
                return Err(bad("ArgMax over an empty axis"));
            }
            let mut out = x.map_axis(Axis(ax), |lane| {
                let mut best = 0usize;
                for (i, &v) in lane.iter().enumerate() {
                    let b = lane[best];
                    if v > b || (*last && v == b) {
                        best = i;
                    }
                }
                best as i64
            });
            if *keep_dims {
                out.insert_axis_inplace(Axis(ax));
            }
            vec![Data::I64(out)]
        }
        Op::ArrayFeatureExtractor => {
            let x = arg(args, 0)?;
            let Data::I64(ix) = arg(args, 1)? else {
                return Err(bad("ArrayFeatureExtractor indices must be integers"));
            };
            let rank = x.shape().len();
            if rank == 0 {
                return Err(bad("ArrayFeatureExtractor of a scalar"));
            }
            let n = x.shape()[rank - 1];
            let idx = ix
                .iter()
                .map(|&i| {
                    usize::try_from(i)
                        .ok()
                        .filter(|&j| j < n)
                        .ok_or_else(|| bad(format!("index {i} out of range 0..{n}")))
                })
                .collect::<Result<Vec<_>>>()?;
            // onnxruntime: the last axis becomes the indices; a 1-D input gives [1, k].
            let mut shape = if rank == 1 {
                vec![1]
            } else {
                x.shape()[..rank - 1].to_vec()
            };
            shape.push(idx.len());
            vec![each!(x, a => reshaped(&a.select(Axis(rank - 1), &idx), shape)?)]
        }
        Op::Normalizer(norm) => {
            let x = match arg(args, 0)? {
                Data::F32(a) => a.clone(),
                Data::I64(a) => a.mapv(|v| v as f32),
                Data::Str(_) => return Err(bad("Normalizer input is string")),
            };
            let x = matrix(&x, "Normalizer's input")?;
            let mut y = x;
            for mut row in y.rows_mut() {
                let d = match norm {
                    Norm::Max => row.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                    Norm::L1 => row.iter().map(|v| v.abs()).sum(),
                    Norm::L2 => row.iter().map(|v| v * v).sum::<f32>().sqrt(),
                };
                if d != 0.0 {
                    row.mapv_inplace(|v| v / d);
                }
            }
            vec![Data::F32(y.into_dyn())]
        }
    })
}
