//! tract glue: the project's tree-ensemble and `Scaler` operators as tract ops, and the
//! ONNX framework with them registered in place of tract's own.

use std::sync::Arc;

use prost::Message;
use tract_onnx::model::{Onnx, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_hir::internal::*;

use super::proto;
use super::tree::{ClassLabels, CompiledEnsemble, EnsembleKind};

/// The ONNX framework with the project's `TreeEnsembleClassifier`,
/// `TreeEnsembleRegressor` and `Scaler` in its operator registry.
pub fn framework() -> Onnx {
    let mut onnx = tract_onnx::onnx();
    onnx.op_register
        .insert("TreeEnsembleClassifier", tree_ensemble);
    onnx.op_register
        .insert("TreeEnsembleRegressor", tree_ensemble);
    onnx.op_register.insert("Scaler", scaler);
    onnx
}

/// The project's protobuf form of one of tract's nodes (the same onnx.proto messages).
fn ours(node: &NodeProto) -> TractResult<super::onnx::NodeProto> {
    Ok(super::onnx::NodeProto::decode(
        node.encode_to_vec().as_slice(),
    )?)
}

fn tree_ensemble(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let ensemble = proto::ensemble(&ours(node)?)?;
    Ok((
        expand(TreeEnsembleExpansion(TreeEnsemble {
            ensemble: Arc::new(ensemble),
        })),
        vec![],
    ))
}

/// The typed tract op evaluating a [`CompiledEnsemble`]. Outputs: classifier `(label [N],
/// scores [N, C])`, regressor `(values [N, T])`.
#[derive(Debug, Clone)]
pub struct TreeEnsemble {
    /// The compiled trees, shared by every copy of the op.
    pub ensemble: Arc<CompiledEnsemble>,
}

impl PartialEq for TreeEnsemble {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.ensemble, &other.ensemble) || self.ensemble == other.ensemble
    }
}

impl Eq for TreeEnsemble {}

impl TreeEnsemble {
    fn label_type(&self) -> Option<DatumType> {
        match self.ensemble.kind() {
            EnsembleKind::Classifier {
                labels: ClassLabels::Int64(_),
            } => Some(i64::datum_type()),
            EnsembleKind::Classifier {
                labels: ClassLabels::Strings(_),
            } => Some(String::datum_type()),
            EnsembleKind::Regressor { .. } => None,
        }
    }
}

impl Op for TreeEnsemble {
    fn name(&self) -> StaticName {
        match self.ensemble.kind() {
            EnsembleKind::Classifier { .. } => "BmsTreeEnsembleClassifier".into(),
            EnsembleKind::Regressor { .. } => "BmsTreeEnsembleRegressor".into(),
        }
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} trees, {} outputs",
            self.ensemble.n_trees(),
            self.ensemble.n_outputs()
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for TreeEnsemble {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let input = input.cast_to::<f32>()?;
        let view = input.to_plain_array_view::<f32>()?;
        let view = view
            .into_dimensionality::<ndarray::Ix2>()
            .map_err(|_| format_err!("tree ensemble input must be [N, width]"))?;
        let out = self.ensemble.eval(view)?;
        let scores = out.scores.into_tvalue();
        match (self.ensemble.kind(), out.label_index) {
            (EnsembleKind::Classifier { labels }, Some(ix)) => {
                let label: Tensor = match labels {
                    ClassLabels::Int64(l) => tensor1(&ix.iter().map(|&i| l[i]).collect::<Vec<_>>()),
                    ClassLabels::Strings(l) => {
                        tensor1(&ix.iter().map(|&i| l[i].clone()).collect::<Vec<_>>())
                    }
                };
                Ok(tvec!(label.into_tvalue(), scores))
            }
            _ => Ok(tvec!(scores)),
        }
    }
}

impl TypedOp for TreeEnsemble {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs[0].rank() == 2,
            "tree ensemble input must be [N, width]"
        );
        let n = inputs[0].shape[0].clone();
        let scores = f32::fact(&[n.clone(), self.ensemble.n_outputs().into()]);
        Ok(match self.label_type() {
            Some(dt) => tvec!(dt.fact(&[n]), scores),
            None => tvec!(scores),
        })
    }

    as_op!();
}

#[derive(Debug, Clone)]
struct TreeEnsembleExpansion(TreeEnsemble);

impl Expansion for TreeEnsembleExpansion {
    fn name(&self) -> StaticName {
        self.0.name()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(if self.0.label_type().is_some() { 2 } else { 1 })
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        s.equals(&inputs[0].rank, 2)?;
        let n_out = self.0.ensemble.n_outputs().to_dim();
        let scores = match self.0.label_type() {
            Some(dt) => {
                check_output_arity(outputs, 2)?;
                s.equals(&outputs[0].datum_type, dt)?;
                s.equals(&outputs[0].rank, 1)?;
                s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
                &outputs[1]
            }
            None => {
                check_output_arity(outputs, 1)?;
                &outputs[0]
            }
        };
        s.equals(&scores.datum_type, DatumType::F32)?;
        s.equals(&scores.rank, 2)?;
        s.equals(&scores.shape[0], &inputs[0].shape[0])?;
        s.equals(&scores.shape[1], n_out)?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, self.0.clone(), inputs)
    }
}

fn scaler(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let (offset, scale) = proto::scaler(&ours(node)?);
    Ok((expand(Scaler { offset, scale }), vec![]))
}

/// ai.onnx.ml `Scaler`: `y = (x - offset) * scale`, per feature (last axis) or with one
/// value for all; the output is float.
#[derive(Debug, Clone, PartialEq)]
pub struct Scaler {
    /// Subtracted first; empty means 0.
    pub offset: Vec<f32>,
    /// Multiplied after; empty means 1.
    pub scale: Vec<f32>,
}

impl Expansion for Scaler {
    fn name(&self) -> StaticName {
        "Scaler".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, DatumType::F32)?;
        s.equals(&outputs[0].shape, &inputs[0].shape)?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let rank = model.outlet_fact(inputs[0])?.rank();
        let mut x = model.wire_node(
            format!("{prefix}.cast"),
            tract_onnx::tract_core::ops::cast::cast(f32::datum_type()),
            inputs,
        )?;
        let as_const = |v: &[f32]| -> TractResult<Tensor> {
            let mut shape = vec![1usize; rank.max(1)];
            shape[rank.max(1) - 1] = v.len();
            tensor1(v).into_shape(&shape)
        };
        if !self.offset.is_empty() {
            let offset = model.add_const(format!("{prefix}.offset"), as_const(&self.offset)?)?;
            x = model.wire_node(
                format!("{prefix}.sub"),
                tract_onnx::tract_core::ops::math::sub(),
                &[x[0], offset],
            )?;
        }
        if !self.scale.is_empty() {
            let scale = model.add_const(format!("{prefix}.scale"), as_const(&self.scale)?)?;
            x = model.wire_node(
                format!("{prefix}.mul"),
                tract_onnx::tract_core::ops::math::mul(),
                &[x[0], scale],
            )?;
        }
        Ok(x)
    }
}
