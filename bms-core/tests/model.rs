//! Model loading and inference against the committed fixtures in `models/fixtures`
//! (made by `make_fixtures.py`): probabilities from the training framework itself and
//! from onnxruntime, on rows that include NaN.

mod common;

use common::{TOL, assert_close, floats};
use std::path::PathBuf;
use std::sync::OnceLock;

use bms_core::model::{ContractSource, Model};
use bms_core::{BmsError, DailyColumn, WindowSpec};
use ndarray::{Array2, s};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures")
}

fn inputs() -> &'static Value {
    static INPUTS: OnceLock<Value> = OnceLock::new();
    INPUTS.get_or_init(|| {
        let text = std::fs::read_to_string(fixtures().join("inputs.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    })
}

struct Golden {
    rows: Array2<f32>,
    framework: Vec<f32>,
    onnxruntime: Vec<f32>,
    framework_label: Option<Vec<i64>>,
    onnxruntime_label: Option<Vec<i64>>,
}

fn ints(v: Option<&Value>) -> Option<Vec<i64>> {
    v.map(|v| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect()
    })
}

fn golden(name: &str) -> Golden {
    let text = std::fs::read_to_string(fixtures().join(format!("{name}.json"))).unwrap();
    let g: Value = serde_json::from_str(&text).unwrap();
    let set = &inputs()[g["inputs"].as_str().unwrap()];
    let width = g["width"].as_u64().unwrap() as usize;
    let rows: Vec<Vec<f32>> = set.as_array().unwrap().iter().map(floats).collect();
    let mut a = Array2::<f32>::zeros((rows.len(), width));
    for (i, r) in rows.iter().enumerate() {
        for j in 0..width {
            a[[i, j]] = r[j];
        }
    }
    Golden {
        rows: a,
        framework: floats(&g["framework"]),
        onnxruntime: floats(&g["onnxruntime"]),
        framework_label: ints(g.get("framework_label")),
        onnxruntime_label: ints(g.get("onnxruntime_label")),
    }
}

fn load(name: &str) -> Model {
    Model::load(fixtures().join(format!("{name}.onnx")))
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

fn check_fixture(name: &str) {
    let model = load(name);
    let g = golden(name);
    let (p, labels) = model.predict_with_labels(g.rows.view()).unwrap();
    let p = p.to_vec();
    assert_close(name, "the training framework", &p, &g.framework);
    assert_close(name, "onnxruntime", &p, &g.onnxruntime);
    if let Some(want) = &g.onnxruntime_label {
        let got = labels.unwrap_or_else(|| panic!("{name}: no label output"));
        assert_eq!(got.to_vec(), *want, "{name}: labels vs onnxruntime");
        if let Some(fw) = &g.framework_label {
            assert_eq!(got.to_vec(), *fw, "{name}: labels vs framework");
        }
    }
    for (i, row) in g.rows.outer_iter().enumerate().take(5) {
        let one = model
            .predict(row.insert_axis(ndarray::Axis(0)).view())
            .unwrap();
        assert_eq!(one.len(), 1);
        assert!(
            (one[0] - p[i]).abs() <= TOL,
            "{name}: single-row result differs at row {i}"
        );
    }
    let empty = model.predict(g.rows.slice(s![0..0, ..])).unwrap();
    assert_eq!(empty.len(), 0, "{name}: batch of 0");
}

#[test]
fn xgboost_classifier_matches_xgboost_and_onnxruntime() {
    check_fixture("xgb_classifier");
    let g = golden("xgb_classifier");
    assert!(
        g.rows.outer_iter().any(|r| r.iter().any(|v| v.is_nan())),
        "the goldens include NaN rows"
    );
}

#[test]
fn xgboost_regressor_matches_xgboost_and_onnxruntime() {
    check_fixture("xgb_regressor");
}

#[test]
fn lightgbm_classifier_matches_lightgbm_and_onnxruntime() {
    check_fixture("lgbm_classifier");
}

#[test]
fn sklearn_gradient_boosting_matches_sklearn_and_onnxruntime() {
    check_fixture("sklearn_gbc");
}

#[test]
fn sklearn_random_forest_matches_sklearn_and_onnxruntime() {
    check_fixture("sklearn_rf");
}

#[test]
fn sklearn_mlp_pipeline_matches_sklearn_and_onnxruntime() {
    check_fixture("sklearn_mlp");
}

#[test]
fn zipmap_is_dropped_and_probabilities_become_the_output() {
    check_fixture("sklearn_rf_zipmap");
    let model = load("sklearn_rf_zipmap");
    assert_eq!(model.probability_output(), "probabilities");
    assert!(
        !model
            .output_names()
            .iter()
            .any(|n| n == "output_probability")
    );
}

#[test]
fn single_probability_outputs_n1_and_n() {
    check_fixture("logreg_n1");
    check_fixture("logreg_n");
    assert_eq!(load("logreg_n1").probability_output(), "probability");
    assert_eq!(load("logreg_n").probability_output(), "prob_flat");
}

#[test]
fn large_batch_equals_row_by_row() {
    let model = load("xgb_classifier");
    let g = golden("xgb_classifier");
    let big = ndarray::concatenate(
        ndarray::Axis(0),
        &[g.rows.view(), g.rows.view(), g.rows.view()],
    )
    .unwrap();
    let p = model.predict(big.view()).unwrap();
    assert_eq!(p.len(), 3 * g.rows.nrows());
    for (i, v) in p.iter().enumerate() {
        assert!((v - g.onnxruntime[i % g.rows.nrows()]).abs() <= TOL);
    }
}

#[test]
fn width_mismatch_on_predict_names_both_numbers() {
    let model = load("xgb_classifier");
    let x = Array2::<f32>::zeros((3, 80));
    let err = model.predict(x.view()).unwrap_err();
    assert!(matches!(
        err,
        BmsError::Shape {
            expected: 84,
            found: 80,
            ..
        }
    ));
    let msg = err.to_string();
    assert!(msg.contains("84") && msg.contains("80"), "{msg}");
}

#[test]
fn contract_from_metadata() {
    let model = load("xgb_metadata");
    assert_eq!(model.contract_source(), ContractSource::Metadata);
    let c = model.contract();
    assert_eq!(c.spec.context, 7);
    assert_eq!(c.spec.horizon, 10);
    assert_eq!(c.spec.features, DailyColumn::ALL.to_vec());
    assert_eq!(c.spec.fill, -2.5);
    assert_eq!(c.threshold, 0.35);
    assert_eq!(c.model_id, "fixture-xgb-ctx7");
    assert_eq!(model.input_width(), 77);
    check_fixture("xgb_metadata");
}

#[test]
fn plain_export_gets_the_reference_defaults() {
    let model = load("xgb_classifier");
    assert_eq!(model.contract_source(), ContractSource::Defaulted);
    let c = model.contract();
    assert_eq!(c.spec, WindowSpec::default());
    assert_eq!(c.threshold, 0.5);
    assert!(
        c.model_id.starts_with("onnx-") && c.model_id.len() == 17,
        "{}",
        c.model_id
    );
    let again =
        Model::from_bytes(&std::fs::read(fixtures().join("xgb_classifier.onnx")).unwrap()).unwrap();
    assert_eq!(again.contract().model_id, c.model_id);
}

fn load_err(name: &str) -> BmsError {
    Model::load(fixtures().join(name)).expect_err(name)
}

fn reason(e: &BmsError) -> String {
    match e {
        BmsError::Model { reason, .. } => reason.clone(),
        other => panic!("expected a model error, got {other:?}"),
    }
}

#[test]
fn missing_file_is_an_io_error_naming_the_path() {
    let e = load_err("does_not_exist.onnx");
    match &e {
        BmsError::Io { path, source } => {
            assert!(path.ends_with("does_not_exist.onnx"));
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn truncated_file_is_refused() {
    let bytes = std::fs::read(fixtures().join("xgb_classifier.onnx")).unwrap();
    for cut in [1, 10, bytes.len() / 3, bytes.len() / 2, bytes.len() - 7] {
        let e = Model::from_bytes(&bytes[..cut]).expect_err("truncated");
        assert!(matches!(e, BmsError::Model { .. }), "cut {cut}: {e:?}");
    }
    let e = Model::from_bytes(&[]).expect_err("empty");
    assert!(reason(&e).contains("no graph"), "{e}");
}

#[test]
fn random_bytes_are_refused() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for len in [16usize, 100, 4096] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let e = Model::from_bytes(&bytes).expect_err("random bytes");
        assert!(matches!(e, BmsError::Model { .. }), "{e:?}");
    }
}

/// Found by the `model_onnx` fuzz target: a Squeeze whose axis is past its input's rank
/// makes tract panic (smallvec's `remove`) while it builds the plan. The panic is caught
/// and the file refused, never a crash.
#[test]
fn a_graph_that_panics_the_engine_is_refused() {
    let bytes = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/fuzz-model-squeeze-axis.onnx"),
    )
    .unwrap();
    let e = Model::from_bytes(&bytes).expect_err("the engine cannot build this graph");
    assert!(matches!(e, BmsError::Model { .. }), "{e:?}");
}

#[test]
fn unsupported_op_is_named_with_the_fix() {
    let e = load_err("unsupported_op.onnx");
    let r = reason(&e);
    assert!(r.contains("com.example.FancyOp"), "{r}");
    assert!(r.contains("re-export"), "{r}");
    assert!(e.to_string().contains("unsupported_op.onnx"), "{e}");
}

#[test]
fn zipmap_inside_the_graph_asks_for_zipmap_false() {
    use prost::Message;
    let bytes = std::fs::read(fixtures().join("sklearn_rf_zipmap.onnx")).unwrap();
    let mut proto = bms_core::model::onnx::ModelProto::decode(bytes.as_slice()).unwrap();
    let graph = proto.graph.as_mut().unwrap();
    let zip_out = graph
        .node
        .iter()
        .find(|n| n.op_type == "ZipMap")
        .unwrap()
        .output[0]
        .clone();
    graph.node.push(bms_core::model::onnx::NodeProto {
        op_type: "Identity".into(),
        input: vec![zip_out],
        output: vec!["copy".into()],
        ..Default::default()
    });
    let e = Model::from_bytes(&proto.encode_to_vec()).expect_err("zipmap inside");
    let r = reason(&e);
    assert!(r.contains("ZipMap") && r.contains("zipmap=False"), "{r}");
}

#[test]
fn two_inputs_are_refused() {
    let r = reason(&load_err("two_inputs.onnx"));
    assert!(r.contains("2 inputs") && r.contains("a, b"), "{r}");
}

#[test]
fn integer_input_is_refused() {
    let r = reason(&load_err("int_input.onnx"));
    assert!(r.contains("int64") && r.contains("float32"), "{r}");
}

#[test]
fn contract_width_mismatch_is_refused_with_both_numbers() {
    let e = load_err("bad_contract_width.onnx");
    match &e {
        BmsError::Shape {
            expected, found, ..
        } => {
            assert_eq!((*expected, *found), (77, 154));
        }
        other => panic!("expected Shape, got {other:?}"),
    }
    let msg = e.to_string();
    assert!(msg.contains("77") && msg.contains("154"), "{msg}");
}

#[test]
fn model_is_send_and_sync_and_threads_agree() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Model>();

    let model = load("lgbm_classifier");
    let g = golden("lgbm_classifier");
    let reference = model.predict(g.rows.view()).unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let model = &model;
                let rows = &g.rows;
                s.spawn(move || {
                    let mut out = Vec::new();
                    for k in 0..20 {
                        let n = 1 + (t * 7 + k) % rows.nrows();
                        out.push((n, model.predict(rows.slice(s![..n, ..])).unwrap()));
                    }
                    out
                })
            })
            .collect();
        for h in handles {
            for (n, p) in h.join().unwrap() {
                assert_eq!(p, reference.slice(s![..n]));
            }
        }
    });
}

/// Bitwise equality of the direct path and the engine's plan on `x`, whole and row by row.
fn assert_direct_equals_plan(name: &str, model: &Model, x: ndarray::ArrayView2<f32>) {
    let (p, labels) = model.predict_with_labels(x).unwrap();
    let (want_p, want_labels) = model.predict_with_labels_via_plan(x).unwrap();
    assert_eq!(
        p.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        want_p.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        "{name}: probabilities, direct vs plan"
    );
    assert_eq!(labels, want_labels, "{name}: labels, direct vs plan");
    for r in 0..x.nrows() {
        let one = model.predict(x.slice(s![r..r + 1, ..])).unwrap();
        assert_eq!(
            one[0].to_bits(),
            want_p[r].to_bits(),
            "{name}: row {r} alone"
        );
    }
}

#[test]
fn direct_tree_path_equals_the_engine_plan_on_every_fixture() {
    let direct = [
        "xgb_classifier",
        "xgb_regressor",
        "xgb_metadata",
        "sklearn_rf",
    ];
    let planned = ["sklearn_mlp", "logreg_n1", "logreg_n"];
    // Tree exports with extra nodes (lightgbm's and scikit-learn's label and probability
    // post-processing) may run through the plan; compared all the same.
    let other = ["lgbm_classifier", "sklearn_gbc", "sklearn_rf_zipmap"];
    for name in direct.iter().chain(&planned).chain(&other) {
        let model = load(name);
        if direct.contains(name) {
            assert!(model.is_direct(), "{name} should take the direct path");
        }
        if planned.contains(name) {
            assert!(!model.is_direct(), "{name} is not a bare tree ensemble");
        }
        let g = golden(name);
        // 3 × 48 + 5 rows: full bulk blocks plus a remainder walked tree by tree.
        let big = ndarray::concatenate(
            ndarray::Axis(0),
            &[
                g.rows.view(),
                g.rows.view(),
                g.rows.view(),
                g.rows.slice(s![..5, ..]),
            ],
        )
        .unwrap();
        assert_direct_equals_plan(name, &model, big.view());
        let columns = big.t().to_owned();
        assert_direct_equals_plan(name, &model, columns.t());
    }
}

#[test]
fn direct_path_equals_the_engine_plan_on_the_bench_model() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../benches/data/xgb_ref.onnx");
    let model = Model::load(path).unwrap();
    assert!(model.is_direct());
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let x = Array2::from_shape_fn((203, model.input_width()), |_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        if state.is_multiple_of(30) {
            f32::NAN
        } else {
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 6.0
        }
    });
    assert_direct_equals_plan("xgb_ref", &model, x.view());
}

#[test]
fn an_unknown_contract_key_is_refused_naming_it() {
    use bms_core::model::ModelContract;
    let bytes = b"model bytes";
    let ok =
        ModelContract::from_metadata([("bms.context_days", "7"), ("other", "x")], bytes).unwrap();
    assert_eq!(ok.spec.context, 7);
    let e = ModelContract::from_metadata([("bms.context_dayz", "7")], bytes).unwrap_err();
    let msg = reason(&e);
    assert!(
        msg.contains("bms.context_dayz") && msg.contains("bms.context_days"),
        "{msg}"
    );
}

#[test]
fn a_graph_without_outputs_or_nodes_is_described_as_such() {
    use prost::Message;
    let bytes = std::fs::read(fixtures().join("xgb_classifier.onnx")).unwrap();
    let mut proto = bms_core::model::onnx::ModelProto::decode(bytes.as_slice()).unwrap();
    let graph = proto.graph.as_mut().unwrap();
    graph.output.clear();
    let no_outputs = proto.clone();
    let r = reason(&Model::from_bytes(&no_outputs.encode_to_vec()).unwrap_err());
    assert_eq!(r, "the graph has no output");
    proto.graph.as_mut().unwrap().node.clear();
    let r = reason(&Model::from_bytes(&proto.encode_to_vec()).unwrap_err());
    assert_eq!(
        r, "the graph has no output",
        "no outputs (and no nodes): the outputs"
    );
    let mut nodes_only = bms_core::model::onnx::ModelProto::decode(bytes.as_slice()).unwrap();
    nodes_only.graph.as_mut().unwrap().node.clear();
    let r = reason(&Model::from_bytes(&nodes_only.encode_to_vec()).unwrap_err());
    assert_eq!(r, "the graph has no nodes");
}

fn with_metadata(name: &str, key: &str, value: &str) -> Vec<u8> {
    use prost::Message;
    let bytes = std::fs::read(fixtures().join(format!("{name}.onnx"))).unwrap();
    let mut proto = bms_core::model::onnx::ModelProto::decode(bytes.as_slice()).unwrap();
    proto
        .metadata_props
        .push(bms_core::model::onnx::StringStringEntryProto {
            key: key.into(),
            value: value.into(),
        });
    proto.encode_to_vec()
}

/// SPEC §7: a model whose input feeds anything but tree ensembles gives NaN for a row
/// with a missing value, as onnxruntime does (the engine's clamped sigmoid gave 4.5e-7);
/// tree ensembles send the value down their missing branch and give a probability.
#[test]
fn a_missing_value_gives_nan_on_models_that_do_not_handle_it() {
    let g = golden("logreg_n");
    let mut rows = g.rows.slice(s![0..4, ..]).to_owned();
    rows[[1, 5]] = f32::NAN;
    rows[[3, 83]] = f32::NAN;
    for (name, op) in [
        ("logreg_n", "MatMul"),
        ("logreg_n1", "MatMul"),
        ("sklearn_mlp", "Scaler"),
    ] {
        let model = load(name);
        assert!(!model.handles_missing(), "{name}");
        let why = model.missing_values_refusal().unwrap();
        assert!(why.contains(op), "{name}: {why}");
        let want = golden(name).onnxruntime;
        let p = model.predict(rows.view()).unwrap();
        assert!(p[1].is_nan() && p[3].is_nan(), "{name}: {p}");
        for i in [0, 2] {
            assert!((p[i] - want[i]).abs() <= TOL, "{name} row {i}: {p}");
        }
    }
    for name in [
        "xgb_classifier",
        "lgbm_classifier",
        "sklearn_rf",
        "xgb_regressor",
    ] {
        let model = load(name);
        assert!(model.handles_missing(), "{name}");
        assert_eq!(model.missing_values_refusal(), None);
        let p = model.predict(rows.view()).unwrap();
        assert!(p.iter().all(|v| v.is_finite()), "{name}: {p}");
    }
    let model = Model::load("../models/consistency-ref14x6.onnx").unwrap();
    assert!(model.handles_missing());
}

#[test]
fn a_nan_fill_value_is_refused_for_a_model_that_does_not_handle_missing_values() {
    let e = Model::from_bytes(&with_metadata("logreg_n", "bms.fill_value", "nan")).unwrap_err();
    let r = reason(&e);
    assert!(r.contains("bms.fill_value") && r.contains("MatMul"), "{r}");
    let m = Model::from_bytes(&with_metadata("xgb_classifier", "bms.fill_value", "nan")).unwrap();
    assert!(m.contract().spec.fill.is_nan());
    let e =
        Model::from_bytes(&with_metadata("xgb_classifier", "bms.fill_value", "1e39")).unwrap_err();
    assert!(reason(&e).contains("32-bit"), "{}", reason(&e));
}

/// Issue 20: a regressor's output (e.g. 5968) was taken as a probability, so every row
/// alarmed. Alarm surfaces call `require_probability` at load; `predict` stays raw.
#[test]
fn an_output_that_is_not_a_probability_is_refused_for_alarms() {
    for name in [
        "xgb_classifier",
        "lgbm_classifier",
        "sklearn_gbc",
        "sklearn_rf",
        "sklearn_rf_zipmap",
        "sklearn_mlp",
        "logreg_n",
        "logreg_n1",
        "xgb_metadata",
    ] {
        load(name)
            .require_probability()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    Model::load("../models/consistency-ref14x6.onnx")
        .unwrap()
        .require_probability()
        .unwrap();
    let reg = load("xgb_regressor");
    let e = reason(&reg.require_probability().unwrap_err());
    assert!(
        e.contains("`variable`")
            && e.contains("TreeEnsembleRegressor, post_transform NONE")
            && e.contains("bms.output = probability"),
        "{e}"
    );
    // predict itself stays the graph's output (parity with onnxruntime above).
    assert!(reg.predict(golden("xgb_regressor").rows.view()).unwrap()[1] > 1.0);
    let declared =
        Model::from_bytes(&with_metadata("xgb_regressor", "bms.output", "probability")).unwrap();
    declared.require_probability().unwrap();
    let e = Model::from_bytes(&with_metadata("xgb_regressor", "bms.output", "score")).unwrap_err();
    assert!(reason(&e).contains("bms.output"), "{}", reason(&e));

    // A logistic regression without its Sigmoid: the logit, not a probability.
    use prost::Message;
    let bytes = std::fs::read(fixtures().join("logreg_n1.onnx")).unwrap();
    let mut proto = bms_core::model::onnx::ModelProto::decode(bytes.as_slice()).unwrap();
    let graph = proto.graph.as_mut().unwrap();
    let at = graph
        .node
        .iter()
        .position(|n| n.op_type == "Sigmoid")
        .unwrap();
    let sigmoid = graph.node.remove(at);
    let out = &sigmoid.output[0];
    for n in &mut graph.node {
        for o in &mut n.output {
            if *o == sigmoid.input[0] {
                o.clone_from(out);
            }
        }
    }
    let logit = Model::from_bytes(&proto.encode_to_vec()).unwrap();
    let e = reason(&logit.require_probability().unwrap_err());
    assert!(e.contains("comes from Add"), "{e}");
}

/// Issue 20 §2: an inconsistent contract is refused at load naming the key.
#[test]
fn an_inconsistent_contract_is_refused_naming_the_key() {
    for (key, value, want) in [
        ("bms.context_days", "0", "at least 1 day"),
        ("bms.horizon_days", "0", "at least 1 day"),
        ("bms.context_days", "-3", "whole number"),
        ("bms.features", "TotalVoltage,NoSuchColumn", "NoSuchColumn"),
        ("bms.features", "", ""),
        ("bms.fill_value", "inf", "not a finite number"),
        ("bms.threshold", "1.5", "probability"),
    ] {
        let e = Model::from_bytes(&with_metadata("xgb_classifier", key, value)).unwrap_err();
        let r = reason(&e);
        assert!(
            r.contains(key) && r.contains(want),
            "{key} = {value:?}: {r}"
        );
    }
    // A width that disagrees with the graph input names both numbers.
    let e =
        Model::from_bytes(&with_metadata("xgb_classifier", "bms.context_days", "7")).unwrap_err();
    let r = e.to_string();
    assert!(r.contains("84") && r.contains("42"), "{r}");
}
