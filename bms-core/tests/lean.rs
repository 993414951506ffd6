//! The lean engine (the on-vehicle build's interpreter) against tract's graph engine, in
//! one process: every fixture and both shipped models, and a small graph for each
//! operator the lean engine runs, on the same rows (with NaN where the model handles
//! missing values) agree within 1e-6, labels exactly.
#![cfg(feature = "onnx-graph")]

use std::path::PathBuf;

use bms_core::DailyColumn;
use bms_core::model::onnx::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, tensor_shape_proto, type_proto,
};
use bms_core::model::{EngineKind, Model, contract, lean};
use ndarray::Array2;
use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const TOL: f32 = 1e-6;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `n` rows of `width` values in [-3, 3] (a tenth of them NaN when `nan`).
fn rows(n: usize, width: usize, nan: bool, seed: u64) -> Array2<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_fn((n, width), |_| {
        if nan && rng.random_bool(0.1) {
            f32::NAN
        } else {
            rng.random_range(-3.0f32..3.0)
        }
    })
}

fn both(bytes: &[u8], name: &str) -> (Model, Model) {
    let graph = Model::from_bytes_with(bytes, EngineKind::Graph)
        .unwrap_or_else(|e| panic!("{name}: graph engine: {e}"));
    let lean = Model::from_bytes_with(bytes, EngineKind::Lean)
        .unwrap_or_else(|e| panic!("{name}: lean engine: {e}"));
    assert_eq!(graph.engine_kind(), EngineKind::Graph);
    assert_eq!(lean.engine_kind(), EngineKind::Lean);
    (graph, lean)
}

/// Both engines on the same rows: probabilities within [`TOL`] (NaN where the other
/// gives NaN), labels equal.
fn agree(name: &str, graph: &Model, lean: &Model, x: &Array2<f32>) {
    let (pg, lg) = graph.predict_with_labels_via_plan(x.view()).unwrap();
    let (pl, ll) = lean.predict_with_labels_via_plan(x.view()).unwrap();
    assert_eq!(pg.len(), pl.len(), "{name}: rows");
    for (i, (g, l)) in pg.iter().zip(&pl).enumerate() {
        assert!(
            (g.is_nan() && l.is_nan()) || (g - l).abs() <= TOL,
            "{name}: row {i}: graph engine {g}, lean engine {l}"
        );
    }
    assert_eq!(lg, ll, "{name}: labels");
    // The public path (direct or not) gives the same as the plan on either engine.
    let (pd, _) = lean.predict_with_labels(x.view()).unwrap();
    for (i, (a, b)) in pd.iter().zip(&pl).enumerate() {
        assert!(
            (a.is_nan() && b.is_nan()) || a == b,
            "{name}: row {i}: lean direct {a}, lean plan {b}"
        );
    }
}

#[test]
fn every_fixture_and_shipped_model_agrees_with_the_graph_engine() {
    let mut files: Vec<PathBuf> = ["models", "models/fixtures"]
        .iter()
        .flat_map(|d| std::fs::read_dir(repo().join(d)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
        .collect();
    files.sort();
    let mut compared = 0;
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(path).unwrap();
        let graph = Model::from_bytes_with(&bytes, EngineKind::Graph);
        let lean = Model::from_bytes_with(&bytes, EngineKind::Lean);
        match (graph, lean) {
            (Ok(graph), Ok(lean)) => {
                let width = graph.input_width();
                assert_eq!(lean.input_width(), width, "{name}");
                assert_eq!(lean.output_names(), graph.output_names(), "{name}");
                assert_eq!(
                    lean.probability_output(),
                    graph.probability_output(),
                    "{name}"
                );
                assert_eq!(lean.handles_missing(), graph.handles_missing(), "{name}");
                assert_eq!(lean.is_direct(), graph.is_direct(), "{name}");
                assert_eq!(
                    lean.require_probability().is_ok(),
                    graph.require_probability().is_ok(),
                    "{name}"
                );
                for (seed, n) in [(1, 1), (2, 7), (3, 300)] {
                    agree(
                        &name,
                        &graph,
                        &lean,
                        &rows(n, width, graph.handles_missing(), seed),
                    );
                }
                compared += 1;
            }
            // Fixtures that are meant to be refused are refused by both, for the same
            // reason (the lean build's unsupported-operator message says more).
            (Err(g), Err(l)) => {
                let (g, l) = (g.to_string(), l.to_string());
                assert!(l.starts_with(&g[..g.len().min(40)]), "{name}: {g} vs {l}");
            }
            (g, l) => panic!("{name}: graph engine {g:?}, lean engine {l:?}"),
        }
    }
    // 2 shipped models, 10 loadable fixtures.
    assert!(compared >= 12, "only {compared} models compared");
}

#[test]
fn the_lean_build_names_an_operator_it_does_not_run_and_the_build_that_does() {
    // Erf is a standard operator the graph engine runs and the lean engine does not.
    let bytes = model(
        vec![
            node("Erf", &["input"], &["e"]),
            node("Sigmoid", &["e"], &["p"]),
        ],
        vec![],
        1,
        &["p"],
        13,
    );
    Model::from_bytes_with(&bytes, EngineKind::Graph).expect("the graph engine runs Erf");
    let e = Model::from_bytes_with(&bytes, EngineKind::Lean).unwrap_err();
    let r = e.to_string();
    assert!(r.contains("Erf (node `Erf_e`)"), "{r}");
    assert!(r.contains("lean build") && r.contains("onnx-graph"), "{r}");
    assert!(r.contains("TreeEnsembleClassifier"), "{r}");
}

fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        name: format!("{op}_{}", outputs.first().unwrap_or(&"")),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn with_ints(mut n: NodeProto, name: &str, v: &[i64]) -> NodeProto {
    n.attribute.push(bms_core::model::onnx::AttributeProto {
        name: name.into(),
        ints: v.to_vec(),
        r#type: 7,
        ..Default::default()
    });
    n
}

fn with_floats(mut n: NodeProto, name: &str, v: &[f32]) -> NodeProto {
    n.attribute.push(bms_core::model::onnx::AttributeProto {
        name: name.into(),
        floats: v.to_vec(),
        r#type: 6,
        ..Default::default()
    });
    n
}

fn with_string(mut n: NodeProto, name: &str, v: &str) -> NodeProto {
    n.attribute.push(bms_core::model::onnx::AttributeProto {
        name: name.into(),
        s: v.as_bytes().to_vec(),
        r#type: 3,
        ..Default::default()
    });
    n
}

fn with_int(mut n: NodeProto, name: &str, v: i64) -> NodeProto {
    n.attribute.push(bms_core::model::onnx::AttributeProto {
        name: name.into(),
        i: v,
        r#type: 2,
        ..Default::default()
    });
    n
}

fn floats(name: &str, dims: &[i64], v: Vec<f32>) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: 1,
        float_data: v,
        ..Default::default()
    }
}

fn int64s(name: &str, dims: &[i64], v: Vec<i64>) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: 7,
        int64_data: v,
        ..Default::default()
    }
}

fn model(
    nodes: Vec<NodeProto>,
    init: Vec<TensorProto>,
    width: i64,
    outputs: &[&str],
    opset: i64,
) -> Vec<u8> {
    let dim = |v: Option<i64>| tensor_shape_proto::Dimension {
        value: Some(match v {
            Some(v) => tensor_shape_proto::dimension::Value::DimValue(v),
            None => tensor_shape_proto::dimension::Value::DimParam("N".into()),
        }),
        ..Default::default()
    };
    let input = ValueInfoProto {
        name: "input".into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: 1,
                shape: Some(TensorShapeProto {
                    dim: vec![dim(None), dim(Some(width))],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    ModelProto {
        ir_version: 8,
        opset_import: vec![
            OperatorSetIdProto {
                domain: String::new(),
                version: opset,
            },
            OperatorSetIdProto {
                domain: "ai.onnx.ml".into(),
                version: 1,
            },
        ],
        graph: Some(GraphProto {
            name: "g".into(),
            node: nodes,
            initializer: init,
            input: vec![input],
            output: outputs
                .iter()
                .map(|o| ValueInfoProto {
                    name: o.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        // A contract of `width` days of one feature, so that the input width fits it.
        metadata_props: vec![
            StringStringEntryProto {
                key: contract::KEY_CONTEXT_DAYS.into(),
                value: width.to_string(),
            },
            StringStringEntryProto {
                key: contract::KEY_FEATURES.into(),
                value: DailyColumn::ALL[0].name().into(),
            },
        ],
        ..Default::default()
    }
    .encode_to_vec()
}

fn check(name: &str, bytes: Vec<u8>, width: usize) {
    let (graph, lean) = both(&bytes, name);
    for (seed, n) in [(11, 1), (12, 5), (13, 64)] {
        agree(name, &graph, &lean, &rows(n, width, false, seed));
    }
}

#[test]
fn each_lean_operator_agrees_with_the_graph_engine() {
    let w = |n: &str, r: i64, c: i64, seed: u64| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        floats(
            n,
            &[r, c],
            (0..r * c).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
        )
    };
    // Gemm (transposed B, alpha, beta, bias) → Tanh → Softmax over 2 columns.
    let mut gemm = node("Gemm", &["input", "w", "b"], &["z"]);
    gemm = with_int(gemm, "transB", 1);
    gemm.attribute.push(bms_core::model::onnx::AttributeProto {
        name: "alpha".into(),
        f: 0.7,
        r#type: 1,
        ..Default::default()
    });
    check(
        "gemm-tanh-softmax",
        model(
            vec![
                gemm,
                node("Tanh", &["z"], &["t"]),
                with_int(node("Softmax", &["t"], &["probabilities"]), "axis", 1),
            ],
            vec![w("w", 2, 4, 1), floats("b", &[2], vec![0.1, -0.2])],
            4,
            &["probabilities"],
            13,
        ),
        4,
    );
    // Softmax under opset 11 (flattening semantics) on [N, 2].
    check(
        "softmax-opset11",
        model(
            vec![
                node("MatMul", &["input", "w"], &["z"]),
                node("Softmax", &["z"], &["probabilities"]),
            ],
            vec![w("w", 3, 2, 2)],
            3,
            &["probabilities"],
            11,
        ),
        3,
    );
    // Exp, Neg, Abs, Div, Sub, Add, Relu, Dropout, Constant, Flatten, Transpose twice.
    let mut constant = node("Constant", &[], &["two"]);
    constant
        .attribute
        .push(bms_core::model::onnx::AttributeProto {
            name: "value".into(),
            t: Some(floats("", &[], vec![2.0])),
            r#type: 4,
            ..Default::default()
        });
    check(
        "elementwise",
        model(
            vec![
                constant,
                node("Abs", &["input"], &["a"]),
                node("Neg", &["a"], &["n"]),
                node("Exp", &["n"], &["e"]),
                node("Div", &["e", "two"], &["half"]),
                node("Relu", &["input"], &["r"]),
                node("Dropout", &["r"], &["d"]),
                node("Add", &["d", "half"], &["d2"]),
                node("Sub", &["e", "d2"], &["s"]),
                with_ints(node("Transpose", &["s"], &["st"]), "perm", &[1, 0]),
                node("Transpose", &["st"], &["s2"]),
                node("MatMul", &["s2", "w"], &["m"]),
                node("Flatten", &["m"], &["f"]),
                node("Sigmoid", &["f"], &["probability"]),
            ],
            vec![w("w", 5, 1, 3)],
            5,
            &["probability"],
            13,
        ),
        5,
    );
    // Gather of two columns, Unsqueeze/Squeeze (opset 13 inputs and opset 11 attributes),
    // Concat, ArgMax and ArrayFeatureExtractor for an integer label, Cast, Reshape.
    let gather = with_int(node("Gather", &["input", "cols"], &["g"]), "axis", 1);
    check(
        "select-and-label",
        model(
            vec![
                gather,
                node("Sigmoid", &["g"], &["sg"]),
                node("Unsqueeze", &["sg", "ax2"], &["u"]),
                node("Squeeze", &["u", "ax2"], &["sq"]),
                node("Cast", &["sq"], &["probabilities"]),
                with_int(node("ArgMax", &["probabilities"], &["am"]), "axis", 1),
                node("ArrayFeatureExtractor", &["classes", "am"], &["lab"]),
                node("Reshape", &["lab", "flat"], &["label0"]),
                with_int(node("Cast", &["label0"], &["label"]), "to", 7),
            ]
            .into_iter()
            .map(|n| {
                if n.op_type == "Cast" && n.attribute.is_empty() {
                    with_int(n, "to", 1)
                } else {
                    n
                }
            })
            .collect(),
            vec![
                int64s("cols", &[2], vec![3, 0]),
                int64s("ax2", &[1], vec![2]),
                int64s("classes", &[2], vec![4, 9]),
                int64s("flat", &[1], vec![-1]),
            ],
            5,
            &["label", "probabilities"],
            13,
        ),
        5,
    );
    let sq11 = with_ints(node("Squeeze", &["u"], &["probability"]), "axes", &[1]);
    check(
        "squeeze-unsqueeze-opset11",
        model(
            vec![
                node("MatMul", &["input", "w"], &["z"]),
                node("Sigmoid", &["z"], &["s"]),
                with_ints(node("Squeeze", &["s"], &["s1"]), "axes", &[1]),
                with_ints(node("Unsqueeze", &["s1"], &["u"]), "axes", &[1]),
                sq11,
            ],
            vec![w("w", 4, 1, 4)],
            4,
            &["probability"],
            11,
        ),
        4,
    );
    // Normalizer (ai.onnx.ml), every norm, on [N, 2] positive scores.
    for norm in ["MAX", "L1", "L2"] {
        let mut n = node("Normalizer", &["a"], &["probabilities"]);
        n.domain = "ai.onnx.ml".into();
        n.attribute.push(bms_core::model::onnx::AttributeProto {
            name: "norm".into(),
            s: norm.as_bytes().to_vec(),
            r#type: 3,
            ..Default::default()
        });
        check(
            &format!("normalizer-{norm}"),
            model(
                vec![
                    node("MatMul", &["input", "w"], &["z"]),
                    node("Exp", &["z"], &["a"]),
                    n,
                ],
                vec![w("w", 3, 2, 5)],
                3,
                &["probabilities"],
                13,
            ),
            3,
        );
    }
    // LinearClassifier (binary with one row of coefficients under each post-transform,
    // and two rows with softmax) and LinearRegressor.
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let mut coef =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
    for (post, rows, intercepts) in [
        ("LOGISTIC", 1, vec![0.3]),
        ("NONE", 1, vec![-0.1]),
        ("SOFTMAX", 1, vec![0.2]),
        ("SOFTMAX", 2, vec![0.1, -0.4]),
        ("LOGISTIC", 2, vec![0.0, 0.5]),
    ] {
        let mut n = node("LinearClassifier", &["input"], &["label", "probabilities"]);
        n.domain = "ai.onnx.ml".into();
        n = with_ints(n, "classlabels_ints", &[3, 8]);
        n = with_floats(n, "coefficients", &coef(4 * rows));
        n = with_floats(n, "intercepts", &intercepts);
        n = with_string(n, "post_transform", post);
        check(
            &format!("linear-classifier-{post}-{rows}"),
            model(vec![n], vec![], 4, &["label", "probabilities"], 13),
            4,
        );
    }
    for post in ["NONE", "LOGISTIC"] {
        let mut n = node("LinearRegressor", &["input"], &["variable"]);
        n.domain = "ai.onnx.ml".into();
        n = with_floats(n, "coefficients", &coef(4));
        n = with_floats(n, "intercepts", &[0.25]);
        n = with_string(n, "post_transform", post);
        check(
            &format!("linear-regressor-{post}"),
            model(vec![n], vec![], 4, &["variable"], 13),
            4,
        );
    }
    assert!(lean::supports("", "Gemm") && !lean::supports("com.example", "Gemm"));
}

#[test]
fn the_lean_engine_refuses_what_it_cannot_run_with_a_reason() {
    let lean_err = |bytes: &[u8]| {
        Model::from_bytes_with(bytes, EngineKind::Lean)
            .expect_err("refused")
            .to_string()
    };
    // Nodes out of dependency order.
    let unsorted = model(
        vec![
            node("Sigmoid", &["z"], &["probability"]),
            node("MatMul", &["input", "w"], &["z"]),
        ],
        vec![floats("w", &[2, 1], vec![0.5, -0.5])],
        2,
        &["probability"],
        13,
    );
    let r = lean_err(&unsorted);
    assert!(
        r.contains("reads `z`") && r.contains("dependency order"),
        "{r}"
    );
    // A value that doubles at every node: refused before it exhausts memory.
    let mut nodes = vec![node("Identity", &["input"], &["v0"])];
    for k in 0..40 {
        let (a, b) = (format!("v{k}"), format!("v{}", k + 1));
        nodes.push(with_int(node("Concat", &[&a, &a], &[&b]), "axis", 1));
    }
    nodes.push(node("Sigmoid", &["v40"], &["probability"]));
    let r = lean_err(&model(nodes, vec![], 2, &["probability"], 13));
    assert!(r.contains("more than") && r.contains("Concat"), "{r}");
    // A float64 initializer.
    let mut w = floats("w", &[2, 1], vec![]);
    w.data_type = 11;
    w.double_data = vec![0.5, -0.5];
    let doubles = model(
        vec![
            node("MatMul", &["input", "w"], &["z"]),
            node("Sigmoid", &["z"], &["probability"]),
        ],
        vec![w],
        2,
        &["probability"],
        13,
    );
    let r = lean_err(&doubles);
    assert!(r.contains("float64") && r.contains("full build"), "{r}");
    // A tensor whose data does not fill its dimensions.
    let short = model(
        vec![
            node("MatMul", &["input", "w"], &["z"]),
            node("Sigmoid", &["z"], &["probability"]),
        ],
        vec![floats("w", &[2, 1], vec![0.5])],
        2,
        &["probability"],
        13,
    );
    let r = lean_err(&short);
    assert!(r.contains("`w` has 1 values for dimensions [2, 1]"), "{r}");
}
