//! The shipped models in `models/` (made by `models/train.py`): each carries the contract
//! its model card states, and scores the committed golden test-set rows exactly as XGBoost
//! itself (`predict_proba`) and onnxruntime did.

mod common;

use common::{TOL, assert_close, floats};
use std::path::PathBuf;

use bms_core::DailyColumn;
use bms_core::daily::{EXTENDED_COLUMNS, REFERENCE_COLUMNS};
use bms_core::model::{ContractSource, Model};
use ndarray::{Array2, Axis};
use serde_json::Value;

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

struct Golden {
    contract: Value,
    rows: Array2<f32>,
    xgboost: Vec<f32>,
    onnxruntime: Vec<f32>,
}

fn golden(name: &str) -> Golden {
    let path = models_dir().join(format!("golden/{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let g: Value = serde_json::from_str(&text).unwrap();
    let width = g["width"].as_u64().unwrap() as usize;
    let rows: Vec<Vec<f32>> = g["rows"].as_array().unwrap().iter().map(floats).collect();
    let mut a = Array2::<f32>::zeros((rows.len(), width));
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r.len(), width, "{name}: golden row {i} width");
        for (j, v) in r.iter().enumerate() {
            a[[i, j]] = *v;
        }
    }
    Golden {
        contract: g["contract"].clone(),
        rows: a,
        xgboost: floats(&g["xgboost"]),
        onnxruntime: floats(&g["onnxruntime"]),
    }
}

/// The `bms.*` table of a model card: `| `key` | `value` |` lines.
fn card_value(name: &str, key: &str) -> String {
    let text = std::fs::read_to_string(models_dir().join(format!("{name}.md"))).unwrap();
    let prefix = format!("| `{key}` | `");
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("{name}.md has no {key} row"));
    line[prefix.len()..]
        .trim_end_matches(" |")
        .trim_end_matches('`')
        .to_owned()
}

/// Loads a shipped model and checks its contract against the card and the golden file;
/// returns the model and its feature list.
fn check_contract(name: &str, model_id: &str) -> (Model, Vec<DailyColumn>) {
    let path = models_dir().join(format!("{name}.onnx"));
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size < 5 * 1024 * 1024, "{name}.onnx is {size} bytes");
    let model = Model::load(&path).unwrap_or_else(|e| panic!("loading {name}: {e}"));
    assert_eq!(model.contract_source(), ContractSource::Metadata);
    let c = model.contract();
    let g = golden(name);

    assert_eq!(c.spec.context, 14);
    assert_eq!(c.spec.horizon, 14);
    assert_eq!(c.spec.fill, -1.0);
    assert_eq!(c.model_id, model_id);
    assert_eq!(card_value(name, "bms.model_id"), model_id);

    let card_threshold: f32 = card_value(name, "bms.threshold").parse().unwrap();
    assert_eq!(
        c.threshold, card_threshold,
        "{name}: threshold vs model card"
    );
    assert_eq!(
        c.threshold,
        g.contract["threshold"].as_f64().unwrap() as f32,
        "{name}: threshold vs golden file"
    );
    assert!(
        c.threshold > 0.0 && c.threshold < 1.0,
        "{name}: threshold {}",
        c.threshold
    );

    let card_features = DailyColumn::parse_list(&card_value(name, "bms.features")).unwrap();
    assert_eq!(
        c.spec.features, card_features,
        "{name}: features vs model card"
    );
    let golden_features: Vec<&str> = g.contract["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        c.spec.features.iter().map(|f| f.name()).collect::<Vec<_>>(),
        golden_features
    );
    assert_eq!(model.input_width(), 14 * c.spec.features.len());
    assert_eq!(model.input_width(), g.rows.ncols());
    assert_eq!(
        card_value(name, "bms.fill_value").parse::<f64>().unwrap(),
        -1.0
    );
    let features = c.spec.features.clone();
    (model, features)
}

fn check_golden(name: &str, model: &Model) {
    let g = golden(name);
    assert!(
        g.rows.nrows() >= 200,
        "{name}: only {} rows",
        g.rows.nrows()
    );
    assert!(
        g.rows.iter().filter(|v| **v == -1.0).count() > 100,
        "{name}: the goldens include fill values"
    );
    assert!(
        g.rows.outer_iter().any(|r| r.iter().all(|v| v.is_nan())),
        "{name}: the goldens include an all-NaN row"
    );
    let p = model.predict(g.rows.view()).unwrap().to_vec();
    assert_close(name, "XGBoost predict_proba", &p, &g.xgboost);
    assert_close(name, "onnxruntime", &p, &g.onnxruntime);
    // Rows one at a time give the same answers as the batch.
    for (i, row) in g.rows.outer_iter().enumerate().step_by(37) {
        let one = model.predict(row.insert_axis(Axis(0))).unwrap();
        assert!((one[0] - p[i]).abs() <= TOL, "{name}: row {i} alone");
    }
    // The model separates the classes on these rows: not a constant.
    let (lo, hi) = p
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    assert!(
        lo < 0.05 && hi > 0.9,
        "{name}: probabilities span {lo}..{hi}"
    );
}

#[test]
fn reference_model_contract_and_golden_rows() {
    let (model, features) = check_contract("consistency-ref14x6", "consistency-ref14x6-v1");
    assert_eq!(features, REFERENCE_COLUMNS.to_vec());
    assert_eq!(model.input_width(), 84);
    check_golden("consistency-ref14x6", &model);
}

#[test]
fn extended_model_contract_and_golden_rows() {
    let (model, features) = check_contract("consistency-ext", "consistency-ext-v1");
    // The reference six keep their names and order; extended columns follow them, and the
    // interval-dependent frame count is not among them.
    assert_eq!(features[..6], REFERENCE_COLUMNS);
    assert!(features.len() > 6);
    for f in &features[6..] {
        assert!(EXTENDED_COLUMNS.contains(f), "{f:?}");
        assert_ne!(*f, DailyColumn::Frames);
    }
    check_golden("consistency-ext", &model);
}
