//! Graph normalisation on the ONNX protobuf, before an engine sees the model, and the
//! checks that turn an unusable model into a clear load error.

use super::onnx::{self as pb, ModelProto, NodeProto, type_proto};
use super::proto::elem_type_name;
use crate::error::{BmsError, Result};

/// ONNX `TensorProto.DataType.FLOAT`.
const ONNX_FLOAT: i32 = 1;

const ZIPMAP_FIX: &str = "export the classifier with zipmap=False (skl2onnx: \
     options={id(model): {'zipmap': False}}; onnxmltools: zipmap=False)";

/// The model's one input after normalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputInfo {
    /// Name of the graph input.
    pub name: String,
    /// Width (second dimension) when the file states it.
    pub width: Option<usize>,
}

/// Rewrites `proto` into the form the engine runs and checks what it cannot fix:
/// a `ZipMap` producing a graph output is removed and the probability tensor feeding
/// it becomes that output; every operator must be one the engine `supports`; the graph
/// must have exactly one float input of rank 2.
pub(crate) fn normalize(
    proto: &mut ModelProto,
    supports: &dyn Fn(&NodeProto) -> bool,
) -> Result<InputInfo> {
    let graph = proto
        .graph
        .as_mut()
        .ok_or_else(|| BmsError::model("the file holds no graph (not an ONNX model?)"))?;
    // Outputs first: a graph without outputs may well have no nodes either, and the
    // missing outputs are what its producer must fix.
    if graph.output.is_empty() {
        return Err(BmsError::model("the graph has no output"));
    }
    if graph.node.is_empty() {
        return Err(BmsError::model("the graph has no nodes"));
    }

    while let Some(at) = graph.node.iter().position(|n| n.op_type == "ZipMap") {
        let zipmap = &graph.node[at];
        let (Some(src), Some(dst)) = (zipmap.input.first(), zipmap.output.first()) else {
            return Err(BmsError::model(format!(
                "malformed ZipMap node `{}`; {ZIPMAP_FIX}",
                zipmap.name
            )));
        };
        let used_by_nodes = graph.node.iter().any(|n| n.input.iter().any(|i| i == dst));
        let out_pos = graph.output.iter().position(|o| &o.name == dst);
        let Some(out_pos) = out_pos.filter(|_| !used_by_nodes) else {
            return Err(BmsError::model(format!(
                "unsupported operator ZipMap (node `{}`) inside the graph; {ZIPMAP_FIX}",
                zipmap.name
            )));
        };
        let src = src.clone();
        graph.node.remove(at);
        let already = graph.output.iter().any(|o| o.name == src);
        if already {
            graph.output.remove(out_pos);
        } else {
            graph.output[out_pos] = pb::ValueInfoProto {
                name: src,
                ..Default::default()
            };
        }
    }

    let unsupported: Vec<String> = graph
        .node
        .iter()
        .filter(|n| !supports(n))
        .map(|n| {
            if n.domain.is_empty() {
                format!("{} (node `{}`)", n.op_type, n.name)
            } else {
                format!("{}.{} (node `{}`)", n.domain, n.op_type, n.name)
            }
        })
        .collect();
    if !unsupported.is_empty() {
        return Err(BmsError::model(format!(
            "unsupported operator(s): {}; re-export the model with standard ONNX / ONNX-ML \
             operators (tree ensembles, linear models, MLPs, Scaler) and without ZipMap",
            unsupported.join(", ")
        )));
    }

    let initializers: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&pb::ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(&i.name.as_str()))
        .collect();
    if inputs.len() != 1 {
        let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
        return Err(BmsError::model(format!(
            "the model has {} inputs ({}); exactly one float tensor [batch, width] is required",
            inputs.len(),
            names.join(", ")
        )));
    }
    let input = inputs[0];
    let tensor = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => t,
        None => {
            return Err(BmsError::model(format!(
                "input `{}` is not a tensor; a float tensor [batch, width] is required",
                input.name
            )));
        }
    };
    if tensor.elem_type != ONNX_FLOAT {
        return Err(BmsError::model(format!(
            "input `{}` is {}; a float32 tensor [batch, width] is required \
             (export with FloatTensorType)",
            input.name,
            elem_type_name(tensor.elem_type)
        )));
    }
    let width = match tensor.shape.as_ref().map(|s| s.dim.as_slice()) {
        None => None,
        Some([_, d]) => match d.value {
            Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if v > 0 => {
                Some(v as usize)
            }
            _ => None,
        },
        Some(dims) => {
            return Err(BmsError::model(format!(
                "input `{}` has rank {}; a float tensor [batch, width] is required",
                input.name,
                dims.len()
            )));
        }
    };
    let name = input.name.clone();

    Ok(InputInfo { name, width })
}
