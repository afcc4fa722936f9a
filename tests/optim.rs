//! The optimizers against reference numbers, plus the first steps derived by hand and the
//! range checks on their settings.

use ferrograd::autograd::Params;
use ferrograd::optim::{Optimizer, OptimizerSpec};
use ferrograd::tensor::{self, Tensor};
use ferrograd::Error;

// Produced by `python3 scripts/reference/optim_reference.py` (numpy, float64 arithmetic following
// torch.optim.SGD and torch.optim.Adam); the script holds the same W0, GRADS and settings as below.
const SGD_AFTER_3: [f32; 5] = [0.4596304, -1.1998795, 1.8416436, -0.7823071, 0.79551584];
const ADAM_AFTER_3: [f32; 5] = [0.47999072, -1.2308426, 1.9733534, -0.7699744, 0.77001286];

const W0: [f32; 5] = [0.5, -1.25, 2.0, -0.75, 0.8];
/// The gradient of each step. Element 4 has none, so it moves by weight decay alone.
const GRADS: [[f32; 5]; 3] =
    [[0.1, -0.2, 0.3, 0.05, 0.0], [-0.05, -0.1, 0.4, 0.2, 0.0], [0.2, 0.3, -0.1, -0.15, 0.0]];

fn sgd_spec() -> OptimizerSpec {
    OptimizerSpec::Sgd { lr: 0.1, momentum: 0.9, weight_decay: 0.01 }
}

fn adam_spec() -> OptimizerSpec {
    OptimizerSpec::Adam { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
}

fn vector(values: &[f32]) -> Tensor {
    tensor::from_vec(&[values.len()], values.to_vec()).unwrap()
}

/// One parameter holding `W0`, after a step with each gradient of `grads` in turn.
fn run(spec: &OptimizerSpec, grads: &[[f32; 5]]) -> Vec<f32> {
    let mut params = Params::default();
    let id = params.add("w", vector(&W0));
    let mut optimizer = Optimizer::new(spec, &params).unwrap();
    for g in grads {
        for p in params.iter_mut() {
            p.grad = vector(g);
        }
        optimizer.step(&mut params);
    }
    params.get(id).value.iter().copied().collect()
}

#[track_caller]
fn assert_close(what: &str, got: &[f32], expected: &[f32], rel: f32) {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    for (i, (&g, &e)) in got.iter().zip(expected).enumerate() {
        assert!(
            (g - e).abs() <= rel * e.abs(),
            "{what}: element {i} is {g}, expected {e} (relative error {:.2e}, allowed {rel:.0e})",
            (g - e).abs() / e.abs()
        );
    }
}

#[test]
fn sgd_matches_the_reference_after_three_steps() {
    assert_close("sgd, 3 steps", &run(&sgd_spec(), &GRADS), &SGD_AFTER_3, 1e-6);
}

#[test]
fn adam_matches_the_reference_after_three_steps() {
    assert_close("adam, 3 steps", &run(&adam_spec(), &GRADS), &ADAM_AFTER_3, 1e-6);
}

#[test]
fn first_sgd_step_is_a_plain_gradient_step() {
    // The velocity starts at zero, so v1 = 0.9 * 0 + (g + wd * w) and
    // w1 = w - lr * (g + wd * w): momentum has no effect yet. Element 0:
    // 0.5 - 0.1 * (0.1 + 0.01 * 0.5) = 0.5 - 0.0105 = 0.4895.
    let expected: Vec<f32> = W0.iter().zip(&GRADS[0]).map(|(&w, &g)| w - 0.1 * (g + 0.01 * w)).collect();
    assert!((expected[0] - 0.4895).abs() < 1e-7);
    assert_close("sgd, first step", &run(&sgd_spec(), &GRADS[..1]), &expected, 1e-6);
}

#[test]
fn first_adam_step_moves_each_weight_by_the_learning_rate() {
    // With g' = g + wd * w: m1 = (1 - b1) g' and v1 = (1 - b2) g'^2, so the bias-corrected
    // m1 / (1 - b1) = g' and sqrt(v1 / (1 - b2)) = |g'|, and the step is
    // lr * g' / (|g'| + eps) = lr * sign(g') up to a relative eps / |g'| <= 1e-8 / 0.008.
    // The sign is that of g', not g: element 4 has g = 0 and moves by lr through decay alone.
    let expected: Vec<f32> =
        W0.iter().zip(&GRADS[0]).map(|(&w, &g)| w - 0.01 * (g + 0.01 * w).signum()).collect();
    assert_eq!(expected[4], 0.8 - 0.01);
    assert_close("adam, first step", &run(&adam_spec(), &GRADS[..1]), &expected, 1e-6);
}

#[track_caller]
fn assert_rejected(spec: OptimizerSpec, setting: &str, value: &str) {
    let err = spec.validate().unwrap_err();
    assert!(
        matches!(err, Error::Config { name, .. } if name == setting),
        "{spec:?}: expected an error on `{setting}`, got {err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&format!("`{setting}`")) && message.contains(value),
        "{spec:?}: the message {message:?} should name `{setting}` and the value {value}"
    );
    let params = Params::default();
    assert!(Optimizer::new(&spec, &params).is_err(), "{spec:?}: Optimizer::new should refuse it");
}

#[test]
fn validate_names_the_setting_out_of_range() {
    assert_rejected(OptimizerSpec::Sgd { lr: 0.0, momentum: 0.9, weight_decay: 0.0 }, "lr", "0");
    assert_rejected(OptimizerSpec::Sgd { lr: f32::NAN, momentum: 0.0, weight_decay: 0.0 }, "lr", "NaN");
    assert_rejected(OptimizerSpec::adam(0.0), "lr", "0");
    assert_rejected(OptimizerSpec::adam(f32::NAN), "lr", "NaN");
    // Momentum 1 would never forget a gradient: the range is [0, 1).
    assert_rejected(OptimizerSpec::Sgd { lr: 0.1, momentum: 1.0, weight_decay: 0.0 }, "momentum", "1");
    assert!(sgd_spec().validate().is_ok());
    assert!(adam_spec().validate().is_ok());
}
