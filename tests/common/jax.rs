//! Reading jax's reference fixtures (`tests/fixtures/*_reference.json`, written by the scripts
//! in `scripts/reference/`), shared by `tests/reference.rs` and `tests/transformer_reference.rs`.

use ferrograd::tensor::Tensor;
use ndarray::IxDyn;
use serde_json::Value;

/// Absolute and relative. The fixtures' values are exact to the 7 digits written; ferrograd's
/// f32 rounding over the short sums of their cases leaves at most about 1e-6, a hundredth of
/// this.
pub const TOLERANCE: f32 = 1e-4;

/// A `{"shape": [...], "data": [...]}` object as a tensor.
#[track_caller]
pub fn tensor(v: &Value) -> Tensor {
    let shape: Vec<usize> = serde_json::from_value(v["shape"].clone()).expect("a shape");
    let data: Vec<f32> = v["data"]
        .as_array()
        .expect("a data array")
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect();
    Tensor::from_shape_vec(IxDyn(&shape), data).expect("data fits the shape")
}

/// Asserts that `got` matches `expected` within [`TOLERANCE`] absolute plus relative, naming
/// `what` and every element that does not.
#[track_caller]
pub fn assert_matches(what: &str, got: &Tensor, expected: &Tensor) {
    assert_eq!(got.shape(), expected.shape(), "{what}: shape");
    let got = got.as_standard_layout();
    let failures: Vec<String> = got
        .iter()
        .zip(expected.iter())
        .enumerate()
        .filter(|(_, (g, e))| (*g - *e).abs() > TOLERANCE + TOLERANCE * e.abs())
        .map(|(j, (g, e))| {
            format!("{what}: element {:?}: ferrograd {g}, jax {e}", super::unravel(j, got.shape()))
        })
        .collect();
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}
