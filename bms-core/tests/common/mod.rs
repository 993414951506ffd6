//! Helpers shared by the model tests.

/// Largest absolute difference accepted between our probabilities and a reference's.
pub const TOL: f32 = 1e-6;

/// Asserts `got` equals `want` (what `what` computed for model `name`) within [`TOL`].
pub fn assert_close(name: &str, what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}: {what} length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= TOL,
            "{name}: row {i}: got {g}, {what} says {w} (diff {})",
            (g - w).abs()
        );
    }
}

/// A JSON array of numbers as `f32`, `null` read as NaN (how the golden files write NaN).
pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().map_or(f32::NAN, |f| f as f32))
        .collect()
}
