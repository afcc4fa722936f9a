//! The central-difference gradient check shared by `tests/gradcheck.rs` (the ops and dense
//! models) and `tests/layers.rs` (convolution, pooling, batch norm, the recurrent cells).
//!
//! An op's check reduces its output to a scalar `L = sum(w * y)` with fixed random weights `w`,
//! so every output element contributes with its own weight, and compares `dL/dx` from
//! `Tape::backward` with `(L(x + eps) - L(x - eps)) / 2eps` for every element of every input.
//! A model's check does the same for the softmax cross-entropy of its outputs, with respect to
//! every element of every parameter and of the input batch.

// Each test binary that includes this module uses only part of it.
#![allow(dead_code)]

#[cfg(feature = "webgpu")]
pub mod gpu_cases;
pub mod jax;

use std::collections::HashMap;

use ferrograd::autograd::{Params, Tape, Var};
use ferrograd::nn::{Mode, Model, ModelSpec};
use ferrograd::tensor::Tensor;
use ferrograd::Result;
use ndarray::IxDyn;
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;

/// The step: in f32 a smaller one loses digits to rounding, a larger one to the curvature
/// (the truncation error is eps^2 / 6 * f''', about 2e-7 per unit of third derivative).
pub const EPS: f32 = 1e-3;
/// Passes when |analytic - numeric| <= ATOL + RTOL * max(|analytic|, |numeric|).
///
/// Tighter than the usual 2e-3 + 2e-2 for f32, which lets a rule that is off by 1% pass (a
/// matmul gradient scaled by 1.01 went unnoticed under it). The error left here is f32
/// rounding in the forward values, about 6e-8 relative and divided by 2eps, plus the
/// truncation above. No check in `tests/gradcheck.rs` uses more than 16% of this tolerance;
/// in `tests/layers.rs` the most is 32%, on the input gradient of a convolution followed by
/// batch norm in training, where one input element moves the statistics of all 40 samples of
/// a channel and so the f32 rounding of every later value (a step of 4e-3 brings it under 10%:
/// noise that shrinks as 1/eps, not a wrong rule).
pub const ATOL: f32 = 5e-4;
pub const RTOL: f32 = 5e-3;

pub fn rng(seed: u64) -> Pcg64 {
    Pcg64::seed_from_u64(seed)
}

pub fn uniform(rng: &mut Pcg64, shape: &[usize], lo: f32, hi: f32) -> Tensor {
    Tensor::from_shape_simple_fn(IxDyn(shape), || rng.random_range(lo..hi))
}

/// Values whose magnitude lies in `[lo, hi)`, with random signs: away from a kink at 0, or
/// from a zero denominator.
pub fn away_from_zero(rng: &mut Pcg64, shape: &[usize], lo: f32, hi: f32) -> Tensor {
    Tensor::from_shape_simple_fn(IxDyn(shape), || {
        let magnitude = rng.random_range(lo..hi);
        if rng.random_range(0..2) == 0 {
            magnitude
        } else {
            -magnitude
        }
    })
}

pub fn close(analytic: f32, numeric: f32) -> bool {
    (analytic - numeric).abs() <= ATOL + RTOL * analytic.abs().max(numeric.abs())
}

/// The multi-index of the `flat`-th element, in row-major order.
pub fn unravel(flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut rest = flat;
    let mut index = vec![0; shape.len()];
    for (i, &size) in shape.iter().enumerate().rev() {
        index[i] = rest % size;
        rest /= size;
    }
    index
}

/// `sum(w * y)` on the tape, reducing one axis at a time down to a scalar.
pub fn weighted_sum(tape: &mut Tape, y: Var, weights: &Tensor) -> Result<Var> {
    let w = tape.input(weights.clone());
    let mut total = tape.mul(y, w)?;
    while tape.value(total).ndim() > 0 {
        total = tape.sum(total, 0)?;
    }
    Ok(total)
}

/// Builds the graph of `build` on a fresh tape from `inputs` and returns the output's value.
pub fn forward(inputs: &[Tensor], build: &impl Fn(&mut Tape, &[Var]) -> Result<Var>) -> Result<Tensor> {
    let params = Params::default();
    let mut tape = Tape::new(&params);
    let vars: Vec<Var> = inputs.iter().map(|x| tape.variable(x.clone())).collect();
    let y = build(&mut tape, &vars)?;
    Ok(tape.value(y).clone())
}

/// The central difference of `loss` at element `j` of `values`, which it restores; returns the
/// slope over the step actually taken, after f32 rounding of `center +- eps`.
fn central_difference(values: &mut Tensor, j: usize, mut loss: impl FnMut(&Tensor) -> f64) -> f32 {
    fn slot(t: &mut Tensor, j: usize) -> &mut f32 {
        &mut t.as_slice_mut().expect("checked tensors are contiguous")[j]
    }
    let center = *slot(values, j);
    let (up, down) = (center + EPS, center - EPS);
    *slot(values, j) = up;
    let l_up = loss(values);
    *slot(values, j) = down;
    let l_down = loss(values);
    *slot(values, j) = center;
    ((l_up - l_down) / f64::from(up - down)) as f32
}

/// Checks the gradient of `sum(w * build(inputs))` with respect to every element of every input
/// against central differences; `op` names the check in failure messages.
#[track_caller]
pub fn gradcheck(op: &str, inputs: &[Tensor], build: impl Fn(&mut Tape, &[Var]) -> Result<Var>) {
    let params = Params::default();
    let mut tape = Tape::new(&params);
    let vars: Vec<Var> = inputs.iter().map(|x| tape.variable(x.clone())).collect();
    let y = build(&mut tape, &vars).unwrap_or_else(|e| panic!("{op}: forward failed: {e}"));
    let out_shape = tape.value(y).shape().to_vec();
    let weights = uniform(&mut rng(0x5eed), &out_shape, -1.0, 1.0);
    let loss = weighted_sum(&mut tape, y, &weights).unwrap();
    let grads = tape.backward(loss).unwrap_or_else(|e| panic!("{op}: backward failed: {e}"));

    // The numeric side reduces in f64: outputs that the perturbed element does not reach are
    // then identical in both evaluations and cancel exactly, instead of adding f32 rounding
    // noise from a long f32 sum to the difference.
    let numeric_loss = |perturbed: &[Tensor]| -> f64 {
        let y = forward(perturbed, &build).unwrap_or_else(|e| panic!("{op}: forward failed: {e}"));
        assert_eq!(y.shape(), &out_shape[..], "{op}: the output shape changed under perturbation");
        y.iter().zip(&weights).map(|(&y, &w)| f64::from(y) * f64::from(w)).sum()
    };

    let mut failures = Vec::new();
    let mut perturbed = inputs.to_vec();
    for (i, &var) in vars.iter().enumerate() {
        let shape = inputs[i].shape().to_vec();
        let analytic = grads.wrt(var).unwrap_or_else(|| panic!("{op}: no gradient reached input {i}"));
        assert_eq!(analytic.shape(), &shape[..], "{op}: the gradient of input {i} has the wrong shape");
        let analytic = analytic.as_standard_layout();
        for (j, &a) in analytic.iter().enumerate() {
            let mut values = perturbed[i].clone();
            let numeric = central_difference(&mut values, j, |v| {
                perturbed[i] = v.clone();
                numeric_loss(&perturbed)
            });
            perturbed[i] = values;
            if !close(a, numeric) {
                failures.push(format!(
                    "{op}: input {i} {shape:?} element {:?}: analytic {a}, numeric {numeric}",
                    unravel(j, &shape)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{} gradient mismatches:\n{}", failures.len(), failures.join("\n"));
}

/// How a model's layers behave in a check: batch norm on the batch's statistics in `Train`,
/// on its running averages in `Eval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Eval,
    Train,
}

/// The model's output on `x`. In training the generator feeds dropout only; a fresh one per
/// call draws the same mask every time, so the loss is one fixed function of the weights.
pub fn model_forward(model: &Model, tape: &mut Tape, x: Var, phase: Phase) -> Result<Var> {
    match phase {
        Phase::Eval => model.forward(tape, x, Mode::Eval),
        Phase::Train => model.forward(tape, x, Mode::Train(&mut rng(0xd20b))),
    }
}

/// The mean softmax cross-entropy of `logits` `[batch, classes]`, in f64.
fn cross_entropy(logits: &Tensor, labels: &[u8]) -> f64 {
    let classes = logits.shape()[1];
    let flat = logits.as_standard_layout();
    let flat = flat.as_slice().unwrap();
    let total: f64 = labels
        .iter()
        .enumerate()
        .map(|(row, &label)| {
            let z: Vec<f64> =
                flat[row * classes..(row + 1) * classes].iter().map(|&v| f64::from(v)).collect();
            let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let log_sum = z.iter().map(|v| (v - max).exp()).sum::<f64>().ln() + max;
            log_sum - z[usize::from(label)]
        })
        .sum();
    total / labels.len() as f64
}

/// The model `json` with weights drawn from `seed`.
#[track_caller]
pub fn build_model(json: &str, seed: u64) -> Model {
    let spec = ModelSpec::from_json(json).unwrap_or_else(|e| panic!("{json}: {e}"));
    Model::new(spec, seed).unwrap_or_else(|e| panic!("{json}: {e}"))
}

/// Adds uniform noise in `[-scale, scale)` to every trainable parameter, so that no check runs
/// at the special point of zero biases and unit scales, where a rule that drops a bias or a
/// gamma term would still pass.
pub fn jitter_params(model: &mut Model, seed: u64, scale: f32) {
    let mut rng = rng(seed);
    for p in model.params_mut().iter_mut().filter(|p| p.trainable) {
        p.value.mapv_inplace(|v| v + rng.random_range(-scale..scale));
    }
}

/// Checks every parameter gradient of the model `json` (weights from `seed`), and the gradient
/// of its input batch `x`, against central differences of its cross-entropy on `labels`, in
/// evaluation mode.
#[track_caller]
pub fn check_model(name: &str, json: &str, seed: u64, x: &Tensor, labels: &[u8]) {
    let mut model = build_model(json, seed);
    check_model_gradients(name, &mut model, x, labels, Phase::Eval);
}

/// Checks the gradient of the mean softmax cross-entropy of `model`'s outputs on `x` with
/// respect to every element of every parameter and of `x`. A parameter the loss does not reach
/// (a running statistic in training) has a zero gradient, which is checked too; a trainable
/// parameter that gets no gradient fails.
#[track_caller]
pub fn check_model_gradients(name: &str, model: &mut Model, x: &Tensor, labels: &[u8], phase: Phase) {
    let (analytic, input_grad): (HashMap<String, Tensor>, Tensor) = {
        let mut tape = Tape::new(model.params());
        let input = tape.variable(x.clone());
        let out = model_forward(model, &mut tape, input, phase).unwrap_or_else(|e| panic!("{name}: {e}"));
        let loss = tape.softmax_cross_entropy(out, labels).unwrap_or_else(|e| panic!("{name}: {e}"));
        let grads = tape.backward(loss).unwrap();
        let params = grads.params().map(|(id, g)| (model.params().get(id).name.clone(), g.clone())).collect();
        let input_grad = grads.wrt(input).unwrap_or_else(|| panic!("{name}: no gradient reached the input"));
        (params, input_grad.as_standard_layout().into_owned())
    };
    for p in model.params().iter().filter(|p| p.trainable) {
        assert!(analytic.contains_key(&p.name), "{name}: parameter {} got no gradient", p.name);
    }
    // The numeric side computes the loss in f64 from the model's f32 outputs, so that f32
    // rounding in the loss itself adds nothing to the difference.
    let loss = |model: &Model, x: &Tensor| -> f64 {
        let mut tape = Tape::inference(model.params());
        let input = tape.input(x.clone());
        let out = model_forward(model, &mut tape, input, phase).unwrap();
        cross_entropy(tape.value(out), labels)
    };

    let mut failures = Vec::new();
    let mut report = |what: String, shape: &[usize], j: usize, a: f32, numeric: f32| {
        if !close(a, numeric) {
            failures.push(format!(
                "{name}: {what} {shape:?} element {:?}: analytic {a}, numeric {numeric}",
                unravel(j, shape)
            ));
        }
    };
    for k in 0..model.params().len() {
        let (param, shape) = {
            let p = model.params().iter().nth(k).unwrap();
            (p.name.clone(), p.value.shape().to_vec())
        };
        let grad = match analytic.get(&param) {
            Some(g) => g.as_standard_layout().into_owned(),
            None => Tensor::zeros(IxDyn(&shape)),
        };
        assert_eq!(grad.shape(), &shape[..], "{name}: the gradient of {param} has the wrong shape");
        let mut values = model.params().iter().nth(k).unwrap().value.clone();
        for (j, &a) in grad.iter().enumerate() {
            let numeric = central_difference(&mut values, j, |v| {
                model.params_mut().iter_mut().nth(k).unwrap().value.assign(v);
                loss(model, x)
            });
            model.params_mut().iter_mut().nth(k).unwrap().value.assign(&values);
            report(format!("parameter {param}"), &shape, j, a, numeric);
        }
    }
    let mut values = x.clone();
    let shape = x.shape().to_vec();
    for (j, &a) in input_grad.iter().enumerate() {
        let numeric = central_difference(&mut values, j, |v| loss(model, v));
        report("input".to_string(), &shape, j, a, numeric);
    }
    assert!(failures.is_empty(), "{} gradient mismatches:\n{}", failures.len(), failures.join("\n"));
}
