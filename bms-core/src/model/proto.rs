//! Reading ONNX nodes and tensors from the protobuf ([`super::onnx`]): attribute values,
//! initializer tensors, and the project's ONNX-ML operators built from their nodes. Both
//! engines use these (the graph engine's operator registry and the lean interpreter), so
//! an operator means the same in both builds.

use ndarray::{ArrayD, IxDyn};

use super::onnx::{AttributeProto, NodeProto, TensorProto};
use super::tree::{
    Aggregate, ClassLabels, CompiledEnsemble, EnsembleDef, EnsembleKind, NodeMode, PostTransform,
};
use crate::error::{BmsError, Result};

/// A tensor's values: float, integer (every ONNX integer and bool type, held as i64) or
/// string.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Data {
    F32(ArrayD<f32>),
    I64(ArrayD<i64>),
    Str(ArrayD<String>),
}

impl Data {
    pub(crate) fn shape(&self) -> &[usize] {
        match self {
            Data::F32(a) => a.shape(),
            Data::I64(a) => a.shape(),
            Data::Str(a) => a.shape(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.shape().iter().product()
    }

    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Data::F32(_) => "float32",
            Data::I64(_) => "integer",
            Data::Str(_) => "string",
        }
    }
}

/// The name of an ONNX `TensorProto.DataType`.
pub(crate) fn elem_type_name(t: i32) -> &'static str {
    match t {
        1 => "float32",
        2 => "uint8",
        3 => "int8",
        4 => "uint16",
        5 => "int16",
        6 => "int32",
        7 => "int64",
        8 => "string",
        9 => "bool",
        10 => "float16",
        11 => "float64",
        12 => "uint32",
        13 => "uint64",
        16 => "bfloat16",
        _ => "an unsupported element type",
    }
}

pub(crate) fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

pub(crate) fn ints(node: &NodeProto, name: &str) -> Vec<i64> {
    attr(node, name).map(|a| a.ints.clone()).unwrap_or_default()
}

pub(crate) fn int(node: &NodeProto, name: &str) -> Option<i64> {
    attr(node, name).map(|a| a.i)
}

pub(crate) fn float(node: &NodeProto, name: &str) -> Option<f32> {
    attr(node, name).map(|a| a.f)
}

pub(crate) fn string(node: &NodeProto, name: &str) -> Option<String> {
    attr(node, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

pub(crate) fn strings(node: &NodeProto, name: &str) -> Option<Vec<String>> {
    attr(node, name).map(|a| {
        a.strings
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect()
    })
}

/// A float list attribute, or its `<name>_as_tensor` (float or double) form.
pub(crate) fn floats(node: &NodeProto, name: &str) -> Result<Vec<f32>> {
    if let Some(a) = attr(node, name) {
        return Ok(a.floats.clone());
    }
    match attr(node, &format!("{name}_as_tensor")).and_then(|a| a.t.as_ref()) {
        None => Ok(Vec::new()),
        Some(t) => match tensor(t, true)? {
            Data::F32(a) => Ok(a.into_iter().collect()),
            other => Err(bad_node(
                node,
                format!(
                    "attribute {name}_as_tensor is {}, not float",
                    other.type_name()
                ),
            )),
        },
    }
}

fn bad_node(node: &NodeProto, reason: impl std::fmt::Display) -> BmsError {
    BmsError::model(format!("{} node `{}`: {reason}", node.op_type, node.name))
}

fn le_chunks<const N: usize>(raw: &[u8], what: &str) -> Result<impl Iterator<Item = [u8; N]>> {
    if !raw.len().is_multiple_of(N) {
        return Err(BmsError::model(format!(
            "tensor {what}: raw_data has {} bytes, not a multiple of {N}",
            raw.len()
        )));
    }
    Ok(raw
        .chunks_exact(N)
        .map(|c| <[u8; N]>::try_from(c).expect("chunks_exact")))
}

/// A tensor's values, checked against its dims. Doubles become floats when `doubles` is
/// set (the ONNX-ML `*_as_tensor` attributes); elsewhere a float64 tensor is refused.
pub(crate) fn tensor(t: &TensorProto, doubles: bool) -> Result<Data> {
    let what = if t.name.is_empty() {
        "(unnamed)".to_owned()
    } else {
        format!("`{}`", t.name)
    };
    if t.data_location == Some(1) || !t.external_data.is_empty() {
        return Err(BmsError::model(format!(
            "tensor {what} keeps its data in an external file; save the model with its \
             tensors inside (onnx.save(model, path, save_as_external_data=False))"
        )));
    }
    let mut shape = Vec::with_capacity(t.dims.len());
    let mut count = 1usize;
    for &d in &t.dims {
        let d = usize::try_from(d)
            .map_err(|_| BmsError::model(format!("tensor {what} has a negative dimension {d}")))?;
        count = count
            .checked_mul(d)
            .ok_or_else(|| BmsError::model(format!("tensor {what}: dimensions overflow")))?;
        shape.push(d);
    }
    let raw = !t.raw_data.is_empty() || count == 0;
    let data = match t.data_type {
        1 => Data::F32(values(
            what.as_str(),
            &shape,
            if raw {
                le_chunks::<4>(&t.raw_data, &what)?
                    .map(f32::from_le_bytes)
                    .collect()
            } else {
                t.float_data.clone()
            },
        )?),
        11 if doubles => Data::F32(values(
            what.as_str(),
            &shape,
            if raw {
                le_chunks::<8>(&t.raw_data, &what)?
                    .map(|b| f64::from_le_bytes(b) as f32)
                    .collect()
            } else {
                t.double_data.iter().map(|&v| v as f32).collect()
            },
        )?),
        7 => Data::I64(values(
            what.as_str(),
            &shape,
            if raw {
                le_chunks::<8>(&t.raw_data, &what)?
                    .map(i64::from_le_bytes)
                    .collect()
            } else {
                t.int64_data.clone()
            },
        )?),
        // int32, int16, int8, uint16, uint8 and bool: int32_data (or raw little-endian).
        6 | 5 | 3 | 4 | 2 | 9 => {
            let v: Vec<i64> = if raw {
                match t.data_type {
                    6 => le_chunks::<4>(&t.raw_data, &what)?
                        .map(|b| i64::from(i32::from_le_bytes(b)))
                        .collect(),
                    5 => le_chunks::<2>(&t.raw_data, &what)?
                        .map(|b| i64::from(i16::from_le_bytes(b)))
                        .collect(),
                    4 => le_chunks::<2>(&t.raw_data, &what)?
                        .map(|b| i64::from(u16::from_le_bytes(b)))
                        .collect(),
                    3 => t.raw_data.iter().map(|&b| i64::from(b as i8)).collect(),
                    _ => t.raw_data.iter().map(|&b| i64::from(b)).collect(),
                }
            } else {
                t.int32_data.iter().map(|&v| i64::from(v)).collect()
            };
            Data::I64(values(what.as_str(), &shape, v)?)
        }
        8 => Data::Str(values(
            what.as_str(),
            &shape,
            t.string_data
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect(),
        )?),
        other => {
            return Err(BmsError::model(format!(
                "tensor {what} is {}; the lean build holds float32, integer and string \
                 tensors (the full build, feature onnx-graph, runs the others)",
                elem_type_name(other)
            )));
        }
    };
    Ok(data)
}

fn values<T>(what: &str, shape: &[usize], v: Vec<T>) -> Result<ArrayD<T>> {
    let want: usize = shape.iter().product();
    if v.len() != want {
        return Err(BmsError::model(format!(
            "tensor {what} has {} values for dimensions {shape:?} ({want} values)",
            v.len()
        )));
    }
    ArrayD::from_shape_vec(IxDyn(shape), v)
        .map_err(|e| BmsError::model(format!("tensor {what}: {e}")))
}

fn ensemble_def(node: &NodeProto, prefix: &str) -> Result<EnsembleDef> {
    let modes = strings(node, "nodes_modes")
        .unwrap_or_default()
        .iter()
        .map(|s| NodeMode::parse(s))
        .collect::<Result<Vec<_>>>()?;
    let post_transform =
        PostTransform::parse(&string(node, "post_transform").unwrap_or_else(|| "NONE".to_owned()))?;
    Ok(EnsembleDef {
        nodes_treeids: ints(node, "nodes_treeids"),
        nodes_nodeids: ints(node, "nodes_nodeids"),
        nodes_featureids: ints(node, "nodes_featureids"),
        nodes_modes: modes,
        nodes_values: floats(node, "nodes_values")?,
        nodes_truenodeids: ints(node, "nodes_truenodeids"),
        nodes_falsenodeids: ints(node, "nodes_falsenodeids"),
        nodes_missing_value_tracks_true: ints(node, "nodes_missing_value_tracks_true")
            .into_iter()
            .map(|v| v != 0)
            .collect(),
        leaf_treeids: ints(node, &format!("{prefix}_treeids")),
        leaf_nodeids: ints(node, &format!("{prefix}_nodeids")),
        leaf_ids: ints(node, &format!("{prefix}_ids")),
        leaf_weights: floats(node, &format!("{prefix}_weights"))?,
        base_values: floats(node, "base_values")?,
        post_transform,
    })
}

/// The compiled ensemble of a `TreeEnsembleClassifier` or `TreeEnsembleRegressor` node.
pub(crate) fn ensemble(node: &NodeProto) -> Result<CompiledEnsemble> {
    match node.op_type.as_str() {
        "TreeEnsembleClassifier" => {
            let labels = match (
                attr(node, "classlabels_int64s"),
                strings(node, "classlabels_strings"),
            ) {
                (Some(a), None) => ClassLabels::Int64(a.ints.clone()),
                (None, Some(s)) => ClassLabels::Strings(s),
                _ => {
                    return Err(bad_node(
                        node,
                        "needs exactly one of classlabels_int64s, classlabels_strings",
                    ));
                }
            };
            ensemble_def(node, "class")?.compile(EnsembleKind::Classifier { labels })
        }
        "TreeEnsembleRegressor" => {
            let n_targets = int(node, "n_targets").unwrap_or(1);
            let n_targets = usize::try_from(n_targets)
                .map_err(|_| bad_node(node, format!("negative n_targets {n_targets}")))?;
            let aggregate = Aggregate::parse(
                &string(node, "aggregate_function").unwrap_or_else(|| "SUM".to_owned()),
            )?;
            ensemble_def(node, "target")?.compile(EnsembleKind::Regressor {
                n_targets,
                aggregate,
            })
        }
        other => Err(bad_node(node, format!("{other} is not a tree ensemble"))),
    }
}

/// The `(offset, scale)` of an ai.onnx.ml `Scaler` node (empty: 0 and 1).
pub(crate) fn scaler(node: &NodeProto) -> (Vec<f32>, Vec<f32>) {
    let get = |name| {
        attr(node, name)
            .map(|a| a.floats.clone())
            .unwrap_or_default()
    };
    (get("offset"), get("scale"))
}
