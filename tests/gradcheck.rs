//! Central-difference gradient checks of every op's backward rule and of the dense model.
//!
//! Each check reduces an op's output to a scalar `L = sum(w * y)` with fixed random weights `w`,
//! so every output element contributes with its own weight, and compares `dL/dx` from
//! `Tape::backward` with `(L(x + eps) - L(x - eps)) / 2eps` for every element of every input;
//! the check itself and its tolerance are in `tests/common/mod.rs`, shared with
//! `tests/layers.rs`.

mod common;

use std::slice;

use common::{away_from_zero, check_model, gradcheck, rng, uniform, unravel};
use ferrograd::autograd::{Params, Tape, Var};
use ferrograd::backend::cpu::recurrent::Cell;
use ferrograd::nn::{Model, ModelSpec};
use ferrograd::tensor::{self, Tensor};
use ferrograd::Result;
use ndarray::{Axis, IxDyn, Slice};

/// Operand shapes for the broadcasting binary ops: equal, a trailing vector, two size-1 axes
/// against each other, a scalar on either side, and batch 1.
const BROADCAST_CASES: &[(&[usize], &[usize])] = &[
    (&[4, 3], &[4, 3]),
    (&[4, 3], &[3]),
    (&[3], &[4, 3]),
    (&[2, 1], &[1, 5]),
    (&[1, 5], &[2, 1]),
    (&[], &[2, 3]),
    (&[2, 3], &[]),
    (&[1, 4], &[4]),
    (&[2, 3, 4], &[3, 1]),
];

fn check_binary(op: &str, seed: u64, f: fn(&mut Tape, Var, Var) -> Result<Var>) {
    let mut rng = rng(seed);
    for &(a, b) in BROADCAST_CASES {
        let x = uniform(&mut rng, a, -2.0, 2.0);
        // Kept in [0.5, 2) by magnitude, so a denominator is never near 0.
        let y = away_from_zero(&mut rng, b, 0.5, 2.0);
        gradcheck(&format!("{op} {a:?} {b:?}"), &[x, y], |t, v| f(t, v[0], v[1]));
    }
}

#[test]
fn add_broadcasting() {
    // d(a + b)/da = 1, summed over every position a broadcast operand was copied to.
    check_binary("add", 1, |t, a, b| t.add(a, b));
}

#[test]
fn sub_broadcasting() {
    check_binary("sub", 2, |t, a, b| t.sub(a, b));
}

#[test]
fn mul_broadcasting() {
    check_binary("mul", 3, |t, a, b| t.mul(a, b));
}

#[test]
fn div_broadcasting() {
    // d(a/b)/db = -a/b^2, at most 2/0.25 = 8 here.
    check_binary("div", 4, |t, a, b| t.div(a, b));
}

#[test]
fn variable_used_twice_sums_both_paths() {
    // d/dx sum(w * x * x) = 2 w x: each operand path contributes w x.
    let x = uniform(&mut rng(5), &[3, 4], -2.0, 2.0);
    gradcheck("mul x x", &[x], |t, v| t.mul(v[0], v[0]));
}

#[test]
fn matmul() {
    let mut rng = rng(6);
    for (a, b) in [([1, 5], [5, 3]), ([7, 2], [2, 4]), ([3, 3], [3, 1]), ([1, 1], [1, 6])] {
        let x = uniform(&mut rng, &a, -1.0, 1.0);
        let y = uniform(&mut rng, &b, -1.0, 1.0);
        gradcheck(&format!("matmul {a:?} {b:?}"), &[x, y], |t, v| t.matmul(v[0], v[1]));
    }
}

#[test]
fn batched_matmul() {
    // One product per leading index: dA_i = dC_i B_i^T, dB_i = A_i^T dC_i.
    let mut rng = rng(19);
    for (a, b) in
        [([3, 2, 4], [3, 4, 5]), ([1, 3, 2], [1, 2, 3]), ([4, 1, 1], [4, 1, 6]), ([2, 5, 3], [2, 3, 1])]
    {
        let x = uniform(&mut rng, &a, -1.0, 1.0);
        let y = uniform(&mut rng, &b, -1.0, 1.0);
        gradcheck(&format!("matmul {a:?} {b:?}"), &[x, y], |t, v| t.matmul(v[0], v[1]));
    }
}

#[test]
fn matmul_refuses_operands_that_do_not_pair() {
    let params = Params::default();
    let mut tape = Tape::new(&params);
    for (a, b) in
        [(&[2, 3][..], &[4, 5][..]), (&[2, 3, 4], &[3, 4, 5]), (&[3, 4], &[1, 4, 5]), (&[24], &[24, 1])]
    {
        let x = tape.input(Tensor::zeros(IxDyn(a)));
        let y = tape.input(Tensor::zeros(IxDyn(b)));
        let err = tape.matmul(x, y).expect_err("operands that do not pair");
        assert_eq!(err.to_string(), format!("matmul: shapes {a:?} and {b:?} are incompatible"));
    }
}

#[test]
fn sum_and_mean_over_each_axis() {
    let mut rng = rng(7);
    for shape in [[2, 3, 4], [1, 4, 3]] {
        let x = uniform(&mut rng, &shape, -2.0, 2.0);
        for axis in 0..3 {
            // d sum/dx = 1 and d mean/dx = 1/n for every element along the axis.
            gradcheck(&format!("sum {shape:?} axis {axis}"), slice::from_ref(&x), |t, v| t.sum(v[0], axis));
            gradcheck(&format!("mean {shape:?} axis {axis}"), slice::from_ref(&x), |t, v| t.mean(v[0], axis));
        }
    }
}

#[test]
fn reshape_permute_transpose() {
    let mut rng = rng(8);
    let x = uniform(&mut rng, &[2, 3, 4], -2.0, 2.0);
    for shape in [vec![6, 4], vec![4, 6], vec![24], vec![1, 2, 12]] {
        gradcheck(&format!("reshape [2, 3, 4] to {shape:?}"), slice::from_ref(&x), |t, v| {
            t.reshape(v[0], &shape)
        });
    }
    for axes in [[2, 0, 1], [1, 2, 0], [0, 2, 1], [2, 1, 0]] {
        gradcheck(&format!("permute [2, 3, 4] by {axes:?}"), slice::from_ref(&x), |t, v| {
            t.permute(v[0], &axes)
        });
    }
    gradcheck("transpose [2, 3, 4]", &[x], |t, v| t.transpose(v[0]));
    let m = uniform(&mut rng, &[3, 5], -2.0, 2.0);
    gradcheck("transpose [3, 5]", &[m], |t, v| t.transpose(v[0]));
}

const ACTIVATION_SHAPES: &[&[usize]] = &[&[1, 6], &[4, 3], &[2, 3, 2]];

#[test]
fn relu_and_leaky_relu_away_from_the_kink() {
    let mut rng = rng(9);
    for &shape in ACTIVATION_SHAPES {
        // |x| >= 0.05 while the step is 1e-3, so x +- eps stays on one side of 0.
        let x = away_from_zero(&mut rng, shape, 0.05, 2.0);
        gradcheck(&format!("relu {shape:?}"), slice::from_ref(&x), |t, v| Ok(t.relu(v[0])));
        gradcheck(&format!("leaky_relu 0.1 {shape:?}"), slice::from_ref(&x), |t, v| {
            Ok(t.leaky_relu(v[0], 0.1))
        });
        gradcheck(&format!("leaky_relu 0.01 {shape:?}"), &[x], |t, v| Ok(t.leaky_relu(v[0], 0.01)));
    }
}

#[test]
fn sigmoid_and_tanh() {
    let mut rng = rng(10);
    for &shape in ACTIVATION_SHAPES {
        let x = uniform(&mut rng, shape, -3.0, 3.0);
        gradcheck(&format!("sigmoid {shape:?}"), slice::from_ref(&x), |t, v| Ok(t.sigmoid(v[0])));
        gradcheck(&format!("tanh {shape:?}"), &[x], |t, v| Ok(t.tanh(v[0])));
    }
}

#[test]
fn gelu() {
    // GELU is smooth everywhere; the range covers both tails and the dip near -0.75.
    let mut rng = rng(20);
    for &shape in ACTIVATION_SHAPES {
        let x = uniform(&mut rng, shape, -4.0, 4.0);
        gradcheck(&format!("gelu {shape:?}"), &[x], |t, v| Ok(t.gelu(v[0])));
    }
}

#[test]
fn gelu_closed_form_values() {
    // gelu(0) = 0; gelu(x) -> x for large x and -> 0 for large -x; at x = 1 the tanh form
    // gives 0.5 (1 + tanh(0.7978846 * 1.044715)) = 0.8411920.
    let params = Params::default();
    let mut tape = Tape::new(&params);
    let x = tape.input(tensor::from_vec(&[4], vec![0.0, 1.0, 10.0, -10.0]).unwrap());
    let y = tape.gelu(x);
    let expected = [0.0, 0.841_192, 10.0, 0.0];
    for (got, want) in tape.value(y).iter().zip(expected) {
        assert!((got - want).abs() < 1e-6, "gelu: {got} against {want}");
    }
}

#[test]
fn softmax_and_log_softmax() {
    let mut rng = rng(11);
    for shape in [&[1, 5][..], &[4, 3], &[2, 3, 4], &[6]] {
        let x = uniform(&mut rng, shape, -2.0, 2.0);
        gradcheck(&format!("softmax {shape:?}"), slice::from_ref(&x), |t, v| t.softmax(v[0]));
        gradcheck(&format!("log_softmax {shape:?}"), &[x], |t, v| t.log_softmax(v[0]));
    }
}

#[test]
fn softmax_cross_entropy_wrt_logits() {
    // d(mean CE)/dlogits = (softmax(logits) - onehot(labels)) / batch.
    let mut rng = rng(12);
    let cases: [(&[usize], &[u8]); 3] = [(&[1, 4], &[2]), (&[5, 3], &[2, 0, 1, 1, 2]), (&[2, 2], &[1, 0])];
    for (shape, labels) in cases {
        let logits = uniform(&mut rng, shape, -2.0, 2.0);
        gradcheck(&format!("softmax_cross_entropy {shape:?}"), &[logits], |t, v| {
            t.softmax_cross_entropy(v[0], labels)
        });
    }
}

#[test]
fn softmax_cross_entropy_closed_form_at_uniform_logits() {
    // Equal logits give softmax 1/c, so for batch n the gradient is (1/c - onehot) / n:
    // with c = 4, n = 2 that is 0.125 off the label and (0.25 - 1) / 2 = -0.375 on it.
    let params = Params::default();
    let mut tape = Tape::new(&params);
    let logits = tape.variable(Tensor::zeros(IxDyn(&[2, 4])));
    let loss = tape.softmax_cross_entropy(logits, &[1, 3]).unwrap();
    let grads = tape.backward(loss).unwrap();
    let g = grads.wrt(logits).unwrap();
    let expected =
        tensor::from_vec(&[2, 4], vec![0.125, -0.375, 0.125, 0.125, 0.125, 0.125, 0.125, -0.375]).unwrap();
    assert!(
        g.iter().zip(&expected).all(|(a, e)| (a - e).abs() < 1e-6),
        "softmax_cross_entropy at zero logits: gradient {g:?}, expected {expected:?}"
    );
}

#[test]
fn mean_squared_error_wrt_both_operands() {
    // d mean((a - b)^2)/da = 2(a - b)/n = -d/db.
    let mut rng = rng(13);
    for shape in [&[4, 3][..], &[1, 5], &[2, 3, 2], &[]] {
        let a = uniform(&mut rng, shape, -2.0, 2.0);
        let b = uniform(&mut rng, shape, -2.0, 2.0);
        gradcheck(&format!("mean_squared_error {shape:?}"), &[a, b], |t, v| t.mean_squared_error(v[0], v[1]));
    }
}

#[test]
fn dropout_with_a_fixed_mask() {
    // With the mask m fixed (0 or 1 / (1 - rate)), y = x * m and dL/dx = w * m exactly.
    let mut rng = rng(14);
    for (shape, rate) in [(&[4, 3][..], 0.25), (&[1, 7], 0.5), (&[2, 2, 3], 0.0)] {
        let x = uniform(&mut rng, shape, -2.0, 2.0);
        gradcheck(&format!("dropout {shape:?} rate {rate}"), &[x], |t, v| {
            // Drops every third element; a fresh counter per forward gives the same mask each time.
            let mut count = 0;
            t.dropout(v[0], rate, || {
                count += 1;
                count % 3 != 0
            })
        });
    }
}

#[test]
fn recurrent_cells_wrt_inputs_hu_and_state() {
    // One step, in the middle of three, of each cell; the LSTM's state is h then c. Inputs
    // stay within [-1.5, 1.5], where no gate saturates.
    let mut rng = rng(15);
    for (cell, blocks) in [(Cell::Simple, 1), (Cell::Lstm, 2), (Cell::Gru, 1)] {
        for (batch, units) in [(1, 1), (3, 4)] {
            let width = cell.gates() * units;
            let x = uniform(&mut rng, &[batch, 3, width], -1.5, 1.5);
            let hu = uniform(&mut rng, &[batch, width], -1.5, 1.5);
            let state = uniform(&mut rng, &[batch, blocks * units], -1.0, 1.0);
            gradcheck(&format!("{} batch {batch} units {units}", cell.name()), &[x, hu, state], |t, v| {
                Ok(t.recurrent_cell(cell, (v[0], 1), v[1], v[2], false)?.0)
            });
        }
    }
}

#[test]
fn layer_norm_wrt_input_scale_and_shift() {
    // Rows of one feature (every output beta), of a few, and tokens of a sequence.
    let mut rng = rng(16);
    for shape in [&[3, 1][..], &[4, 5], &[2, 3, 7]] {
        let d = *shape.last().unwrap();
        let x = uniform(&mut rng, shape, -2.0, 2.0);
        let gamma = uniform(&mut rng, &[d], 0.5, 1.5);
        let beta = uniform(&mut rng, &[d], -1.0, 1.0);
        gradcheck(&format!("layer_norm {shape:?}"), &[x, gamma, beta], |t, v| {
            t.layer_norm(v[0], v[1], v[2], 1e-3)
        });
    }
    let params = Params::default();
    let mut tape = Tape::new(&params);
    let x = tape.input(Tensor::zeros(vec![2, 4]));
    let wrong = tape.input(Tensor::zeros(vec![3]));
    let error = tape.layer_norm(x, wrong, wrong, 1e-5).unwrap_err();
    assert!(error.to_string().contains("layer_norm"), "{error}");
}

#[test]
fn batch_norm_wrt_input_scale_and_shift() {
    // Features of a dense layer, and channels of images (statistics over batch and positions).
    let mut rng = rng(17);
    for shape in [&[6, 3][..], &[2, 3, 4, 5], &[3, 1, 2, 2]] {
        let c = shape[1];
        let x = uniform(&mut rng, shape, -2.0, 2.0);
        let gamma = uniform(&mut rng, &[c], 0.5, 1.5);
        let beta = uniform(&mut rng, &[c], -1.0, 1.0);
        gradcheck(&format!("batch_norm {shape:?}"), &[x, gamma, beta], |t, v| {
            t.batch_norm(v[0], (v[1], v[2]), 1e-3, None)
        });
    }
    let params = Params::default();
    let mut tape = Tape::new(&params);
    let one = tape.input(Tensor::zeros(vec![1, 3]));
    let scale = tape.input(Tensor::ones(vec![3]));
    let error = tape.batch_norm(one, (scale, scale), 1e-5, None).unwrap_err();
    assert!(error.to_string().contains("more than one value per channel"), "{error}");
    let four = tape.input(Tensor::zeros(vec![2, 4]));
    assert!(tape.batch_norm(four, (scale, scale), 1e-5, None).is_err());
}

#[test]
fn recurrent_cell_refuses_shapes_that_do_not_fit() {
    let params = Params::default();
    let mut tape = Tape::new(&params);
    let x = tape.input(Tensor::zeros(vec![2, 3, 8]));
    let hu = tape.input(Tensor::zeros(vec![2, 8]));
    let state = tape.input(Tensor::zeros(vec![2, 4]));
    // The LSTM's state is [batch, 2 units]: 4 columns make 2 units, 8 gate columns 2 units.
    assert!(tape.recurrent_cell(Cell::Lstm, (x, 1), hu, state, false).is_ok());
    let error = tape.recurrent_cell(Cell::Lstm, (x, 3), hu, state, false).unwrap_err();
    assert!(error.to_string().contains("step 3 is past the last of 3"), "{error}");
    assert!(tape.recurrent_cell(Cell::Gru, (x, 0), hu, state, false).is_err());
    let short = tape.input(Tensor::zeros(vec![1, 8]));
    assert!(tape.recurrent_cell(Cell::Lstm, (x, 0), short, state, false).is_err());
    let flat = tape.input(Tensor::zeros(vec![2, 8]));
    assert!(tape.recurrent_cell(Cell::Lstm, (flat, 0), hu, state, false).is_err());
}

#[test]
fn composite_graph() {
    // tanh(x W + b) then log_softmax and a weighted sum: many ops, gradients through all of them.
    let mut rng = rng(15);
    let x = uniform(&mut rng, &[3, 4], -1.0, 1.0);
    let w = uniform(&mut rng, &[4, 5], -1.0, 1.0);
    let b = uniform(&mut rng, &[5], -0.5, 0.5);
    gradcheck("tanh(x W + b) -> log_softmax", &[x, w, b], |t, v| {
        let z = t.matmul(v[0], v[1])?;
        let z = t.add(z, v[2])?;
        let h = t.tanh(z);
        t.log_softmax(h)
    });
}

#[test]
fn dense_model_parameter_gradients() {
    let json = r#"{"input":[6],"layers":[{"type":"dense","units":4,"activation":"tanh"},{"type":"dense","units":3}]}"#;
    let mut rng = rng(16);
    let batch5 = uniform(&mut rng, &[5, 6], -1.0, 1.0);
    check_model("dense tanh, batch 5", json, 1, &batch5, &[0, 2, 1, 2, 0]);
    let batch1 = uniform(&mut rng, &[1, 6], -1.0, 1.0);
    check_model("dense tanh, batch 1", json, 2, &batch1, &[1]);
}

#[test]
fn flatten_relu_model_parameter_gradients() {
    let json = r#"{"input":[1,2,3],"layers":[{"type":"flatten"},{"type":"dense","units":5,"activation":"relu"},{"type":"dense","units":3}]}"#;
    let mut rng = rng(17);
    let x = uniform(&mut rng, &[4, 1, 2, 3], -1.0, 1.0);
    let labels = [2, 0, 1, 0];
    // The relu kink: a step of 1e-3 on a first-layer weight or on an input moves a
    // pre-activation by at most 1e-3 * |x| or 1e-3 * |W|, both below 1e-3 (|x| < 1, and
    // Glorot-uniform weights of a 6 -> 5 layer stay under sqrt(6 / 11) = 0.74), so every
    // pre-activation must be further than that from 0 (the bias starts at 0, so
    // z = flatten(x) W).
    let model = Model::new(ModelSpec::from_json(json).unwrap(), 3).unwrap();
    let w = model.params().iter().find(|p| p.name == "layers.1.weight").unwrap();
    let flat = x.to_shape((4, 6)).unwrap();
    let w = w.value.to_shape((6, 5)).unwrap();
    let z = flat.dot(&w);
    let margin = z.iter().fold(f32::INFINITY, |m, v| m.min(v.abs()));
    assert!(
        margin > 0.01,
        "pre-activation {margin} is too near the relu kink for a gradient check; change the seed"
    );
    check_model("flatten + dense relu, batch 4", json, 3, &x, &labels);
    check_model(
        "flatten + dense relu, batch 1",
        json,
        3,
        &x.slice_axis(Axis(0), Slice::from(0..1)).to_owned(),
        &labels[..1],
    );
}

#[test]
fn parameter_used_twice_gets_the_sum_of_both_gradients() {
    // L = sum(a * p) + sum(p * p) with p fetched from the store twice:
    // dL/dp = a + 2p, the first use giving a and the second (one op, both operands) 2p.
    let mut rng = rng(18);
    let a = uniform(&mut rng, &[2, 3], -1.0, 1.0);
    let p = uniform(&mut rng, &[2, 3], -1.0, 1.0);
    let mut params = Params::default();
    let id = params.add("p", p.clone());
    let grads = {
        let mut tape = Tape::new(&params);
        let first = tape.param(id);
        let input = tape.input(a.clone());
        let l1 = tape.mul(input, first).unwrap();
        let l1 = tape.sum(l1, 0).unwrap();
        let l1 = tape.sum(l1, 0).unwrap();
        let second = tape.param(id);
        let l2 = tape.mul(second, second).unwrap();
        let l2 = tape.sum(l2, 1).unwrap();
        let l2 = tape.sum(l2, 0).unwrap();
        let loss = tape.add(l1, l2).unwrap();
        tape.backward(loss).unwrap()
    };
    params.accumulate(&grads);
    let expected = &a + &(&p * 2.0);
    let got = &params.get(id).grad;
    for (j, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert!(
            (g - e).abs() < 1e-6,
            "param used twice: element {:?}: accumulated {g}, expected a + 2p = {e}",
            unravel(j, got.shape())
        );
    }
}

#[test]
fn inference_tape_refuses_backward() {
    let params = Params::default();
    let mut tape = Tape::inference(&params);
    assert!(!tape.is_recording());
    let x = tape.variable(tensor::from_vec(&[3], vec![1.0, 2.0, 3.0]).unwrap());
    let y = tape.tanh(x);
    let loss = tape.sum(y, 0).unwrap();
    let err = tape.backward(loss).err().expect("an inference tape must refuse backward");
    assert_eq!(err.to_string(), "backward: an inference tape records no graph");
}

#[test]
fn backward_refuses_a_loss_of_more_than_one_element() {
    let params = Params::default();
    let mut tape = Tape::new(&params);
    let x = tape.variable(Tensor::ones(IxDyn(&[2, 3])));
    let y = tape.sum(x, 0).unwrap();
    let err = tape.backward(y).err().expect("a [3] loss must be refused");
    assert!(err.to_string().starts_with("backward:"), "{err}");
}
