//! ONNX model bytes (`Model::from_bytes`, SPEC §7): a corrupt or unsupported model is an
//! error at load, never a panic, hang or unbounded allocation; a model that loads has a
//! contract as wide as its input, scores a row of zeros (loading checked that), gives one
//! value per row for rows of NaN (or an error, never a panic), and refuses a row of the
//! wrong width. Both engines: tract's graph engine and the lean interpreter.
#![no_main]

use bms_core::Model;
use bms_core::model::EngineKind;
use bms_fuzz::abort_on_panics_outside_caught_crates;
use libfuzzer_sys::fuzz_target;
use ndarray::Array2;

fuzz_target!(|data: &[u8]| {
    abort_on_panics_outside_caught_crates();
    for engine in [EngineKind::Graph, EngineKind::Lean] {
        if let Ok(model) = Model::from_bytes_with(data, engine) {
            check(&model);
        }
    }
});

fn check(model: &Model) {
    let width = model.input_width();
    assert!(width > 0);
    assert_eq!(model.contract().spec.width(), width);
    let zeros = Array2::<f32>::zeros((1, width));
    let p = model
        .predict(zeros.view())
        .unwrap_or_else(|e| panic!("a loaded model fails on a row of zeros: {e}"));
    assert_eq!(p.len(), 1);
    let mut x = Array2::<f32>::from_elem((2, width), f32::NAN);
    for (k, v) in x.row_mut(1).iter_mut().enumerate() {
        if k % 2 == 1 {
            *v = 0.0;
        }
    }
    if let Ok(p) = model.predict(x.view()) {
        assert_eq!(p.len(), 2);
    }
    let wrong = Array2::<f32>::zeros((1, width + 1));
    assert!(
        model.predict(wrong.view()).is_err(),
        "a row of the wrong width is refused"
    );
}
