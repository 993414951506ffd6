//! The full build's engine: tract's ONNX graph engine (feature `onnx-graph`), with the
//! project's tree-ensemble and `Scaler` operators registered in place of tract's
//! ([`super::ops`]). The plan is built once, with a symbolic batch dimension, at load.

use std::sync::{Arc, Mutex};

use ndarray::{Array1, ArrayView2};
use prost::Message;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::DimLike;

use super::onnx::ModelProto;
use super::{Direct, OutFact, Take, ops};
use crate::error::{BmsError, Result};

type Plan = TypedRunnableModel;
type State = TypedSimpleState;

/// A runnable plan and a pool of per-thread run states.
pub(crate) struct GraphEngine {
    plan: Arc<Plan>,
    states: Mutex<Vec<State>>,
}

fn tract_error(context: &str, e: TractError) -> BmsError {
    BmsError::Model {
        file: None,
        reason: format!("{context}: {e:#}"),
        source: Some(e.into()),
    }
}

/// Whether the graph engine (with the project's operators) knows `op_type`.
pub(crate) fn supports(framework: &tract_onnx::model::Onnx, op_type: &str) -> bool {
    framework.op_register.0.contains_key(op_type)
}

impl GraphEngine {
    /// Types, optimises and plans the normalised graph for `[N, width]` float input; the
    /// facts of its outputs, and the direct ensemble when the graph is one.
    pub(crate) fn build(
        framework: &tract_onnx::model::Onnx,
        proto: &ModelProto,
        width: usize,
    ) -> Result<(Self, Vec<OutFact>, Option<Direct>)> {
        // The engine has its own (identical) protobuf types: hand it the same bytes.
        let theirs = tract_onnx::pb::ModelProto::decode(proto.encode_to_vec().as_slice())
            .map_err(|e| BmsError::model(format!("re-reading the normalised graph: {e}")))?;
        let mut model = framework
            .model_for_proto_model(&theirs)
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
            .map(|o| typed.outlet_fact(*o).map(out_fact))
            .collect::<TractResult<Vec<_>>>()
            .map_err(|e| tract_error("reading outputs", e))?;
        let direct = direct_ensemble(&typed);
        let plan = typed
            .into_runnable()
            .map_err(|e| tract_error("the engine could not plan the graph", e))?;
        Ok((
            GraphEngine {
                plan,
                states: Mutex::new(Vec::new()),
            },
            facts,
            direct,
        ))
    }

    /// Runs the plan on `x` (at least one row): the probability column `probability`
    /// selects, and the label output `label` when given.
    pub(crate) fn run(
        &self,
        x: ArrayView2<f32>,
        probability: (usize, Take),
        label: Option<usize>,
    ) -> Result<(Array1<f32>, Option<Array1<i64>>)> {
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
        let (ix, take) = probability;
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
        let labels = match label {
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

fn out_fact(f: &TypedFact) -> OutFact {
    OutFact {
        float: f.datum_type == f32::datum_type(),
        int: matches!(
            f.datum_type,
            DatumType::I64 | DatumType::I32 | DatumType::I16 | DatumType::I8 | DatumType::TDim
        ),
        rank: f.rank(),
        cols: (f.rank() >= 2)
            .then(|| f.shape[1].to_usize().ok())
            .flatten(),
        description: format!("{f:?}"),
    }
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
