//! Central-difference gradient checks of the heavy ops (conv2d, max and average pooling), of
//! the ops the composite layers are built from (pow, slice, concat), and of the layers
//! themselves through a model spec: convolution and pooling, batch norm in training mode, and
//! the recurrent cells over one step and over short sequences. The check and its tolerance are
//! in `tests/common/mod.rs`; `tests/reference.rs` compares the same layers with jax.

mod common;

use std::slice;

use common::{build_model, check_model_gradients, gradcheck, jitter_params, rng, uniform, Phase, EPS};
use ferrograd::autograd::Tape;
use ferrograd::nn::{conv_window, Mode, ModelSpec, Padding, Trace};
use ferrograd::optim::OptimizerSpec;
use ferrograd::tensor::Tensor;
use ferrograd::train::Trainer;
use ndarray::{Array2, Axis, Ix4, IxDyn};
use rand::seq::SliceRandom;
use rand_pcg::Pcg64;

/// A convolution's geometry: batch, (input, output) channels, input (h, w), kernel (kh, kw),
/// stride and padding (top, bottom, left, right).
type ConvCase =
    (usize, (usize, usize), (usize, usize), (usize, usize), (usize, usize), (usize, usize, usize, usize));

const CONV_CASES: &[ConvCase] = &[
    // Valid, 1 -> 3 channels, batch 1.
    (1, (1, 3), (5, 5), (3, 3), (1, 1), (0, 0, 0, 0)),
    // Same at stride 1 (symmetric pads), non-square input, batch 3.
    (3, (2, 4), (7, 6), (3, 3), (1, 1), (1, 1, 1, 1)),
    // Same at stride 2 on 7x6: ceil(7/2) = 4 rows need 2 rows of padding (1, 1), ceil(6/2) = 3
    // columns need 1 (0, 1): asymmetric, the extra one at the right.
    (1, (2, 4), (7, 6), (3, 3), (2, 2), (1, 1, 0, 1)),
    // Kernel 2 padded at the bottom and right only, at stride 2 and at stride 1 (where it is
    // the layer's `same`).
    (3, (1, 3), (7, 6), (2, 2), (2, 2), (0, 1, 0, 1)),
    (1, (2, 4), (7, 6), (2, 2), (1, 1), (0, 1, 0, 1)),
    // Kernel 2, stride 1, valid, wide input.
    (1, (2, 4), (6, 7), (2, 2), (1, 1), (0, 0, 0, 0)),
    // Valid at stride 2 with a remainder: the last row and column are never read.
    (3, (2, 3), (6, 6), (3, 3), (2, 2), (0, 0, 0, 0)),
    // Different strides per axis and a non-square kernel.
    (1, (2, 3), (7, 6), (2, 3), (2, 1), (1, 0, 1, 1)),
];

#[test]
#[should_panic(expected = "gradient mismatches")]
fn the_check_catches_a_rule_off_by_one_percent() {
    // The forward that the numeric side sees is 1.01 times the one the tape differentiated,
    // as if a backward rule dropped 1% of the gradient: the tolerance must not let it pass.
    let calls = std::cell::Cell::new(0);
    let x = uniform(&mut rng(100), &[3, 4], -1.0, 1.0);
    gradcheck("x * 1.01 after the first forward", &[x], |t, v| {
        calls.set(calls.get() + 1);
        let scale = t.input(ferrograd::tensor::scalar(if calls.get() == 1 { 1.0 } else { 1.01 }));
        t.mul(v[0], scale)
    });
}

#[test]
fn conv2d_wrt_input_and_weights() {
    let mut rng = rng(101);
    for case in CONV_CASES {
        let (batch, (c_in, c_out), (h, w), (kh, kw), stride, padding) = *case;
        let x = uniform(&mut rng, &[batch, c_in, h, w], -1.0, 1.0);
        let weight = uniform(&mut rng, &[c_out, c_in, kh, kw], -1.0, 1.0);
        let name = format!(
            "conv2d x [{batch}, {c_in}, {h}, {w}] weight [{c_out}, {c_in}, {kh}, {kw}] stride {stride:?} padding {padding:?}"
        );
        gradcheck(&name, &[x, weight], |t, v| t.conv2d(v[0], v[1], stride, padding));
    }
}

#[test]
fn conv2d_same_padding_cases_match_the_layer_window() {
    // The padded cases above are the windows the layer builds for `same`, so the op checks
    // cover what the layer runs.
    assert_eq!(conv_window(3, 1, Padding::Same, (7, 6)).padding, (1, 1, 1, 1));
    assert_eq!(conv_window(3, 2, Padding::Same, (7, 6)).padding, (1, 1, 0, 1));
    // Kernel 2 at stride 1 needs one row and one column more, both at the bottom and right.
    assert_eq!(conv_window(2, 1, Padding::Same, (7, 6)).padding, (0, 1, 0, 1));
}

/// Distinct values at least 0.1 apart, so that a step of 1e-3 never changes which element of
/// a pooling window is the largest: a random permutation of 0..n, centred, times 0.1.
fn distinct(rng: &mut Pcg64, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    let values = order.into_iter().map(|k| (k as f32 - n as f32 / 2.0) * 0.1).collect();
    Tensor::from_shape_vec(IxDyn(shape), values).unwrap()
}

/// A pooling geometry: input shape, kernel and stride.
type PoolCase = (&'static [usize], (usize, usize), (usize, usize));

/// Kernel 2 stride 2, kernel 3 stride 1, odd sizes that leave a remainder, and a rectangular
/// window.
const POOL_CASES: &[PoolCase] = &[
    (&[2, 3, 6, 6], (2, 2), (2, 2)),
    (&[1, 2, 5, 7], (3, 3), (1, 1)),
    (&[3, 1, 7, 5], (2, 2), (2, 2)),
    (&[1, 2, 4, 6], (2, 3), (2, 3)),
    (&[1, 1, 6, 5], (3, 3), (2, 1)),
];

#[test]
fn max_pool2d_with_well_separated_values() {
    // dL/dx = w at each window's maximum and 0 elsewhere (summed where windows overlap).
    let mut rng = rng(102);
    for &(shape, kernel, stride) in POOL_CASES {
        let x = distinct(&mut rng, shape);
        gradcheck(&format!("max_pool2d x {shape:?} kernel {kernel:?} stride {stride:?}"), &[x], |t, v| {
            t.max_pool2d(v[0], kernel, stride)
        });
    }
}

#[test]
fn avg_pool2d() {
    // dL/dx = sum over the windows holding x of w / (kh * kw).
    let mut rng = rng(103);
    for &(shape, kernel, stride) in POOL_CASES {
        let x = uniform(&mut rng, shape, -2.0, 2.0);
        gradcheck(&format!("avg_pool2d x {shape:?} kernel {kernel:?} stride {stride:?}"), &[x], |t, v| {
            t.avg_pool2d(v[0], kernel, stride)
        });
    }
}

#[test]
fn pow_of_positive_inputs() {
    // d(x^p)/dx = p x^(p-1); x in [0.5, 2) keeps x^(p-1) bounded for the negative exponents
    // (batch norm uses p = -0.5).
    let mut rng = rng(104);
    for shape in [&[4, 3][..], &[1, 5], &[2, 3, 2]] {
        let x = uniform(&mut rng, shape, 0.5, 2.0);
        for exponent in [2.0, 3.0, 0.5, -0.5, -1.0, 1.5] {
            gradcheck(&format!("pow x {shape:?} exponent {exponent}"), slice::from_ref(&x), |t, v| {
                Ok(t.pow(v[0], exponent))
            });
        }
    }
}

#[test]
fn slice_along_each_axis() {
    // dL/dx = w inside the slice and 0 outside it.
    let x = uniform(&mut rng(105), &[3, 4, 5], -2.0, 2.0);
    for (axis, start, len) in [(0, 1, 2), (0, 0, 3), (1, 0, 1), (1, 2, 2), (2, 1, 3), (2, 4, 1)] {
        gradcheck(
            &format!("slice x [3, 4, 5] axis {axis} {start}..{}", start + len),
            slice::from_ref(&x),
            |t, v| t.slice(v[0], axis, start, len),
        );
    }
}

#[test]
fn concat_along_each_axis() {
    // Each input gets back the part of dL/dy at its own position along the axis.
    let mut rng = rng(106);
    let cases: [(&[&[usize]], usize); 4] = [
        (&[&[1, 4, 5], &[2, 4, 5]], 0),
        (&[&[3, 2, 5], &[3, 1, 5], &[3, 3, 5]], 1),
        (&[&[3, 4, 2], &[3, 4, 3]], 2),
        (&[&[2, 5], &[2, 5], &[2, 5], &[2, 5]], 1),
    ];
    for (shapes, axis) in cases {
        let inputs: Vec<Tensor> = shapes.iter().map(|s| uniform(&mut rng, s, -2.0, 2.0)).collect();
        gradcheck(&format!("concat {shapes:?} axis {axis}"), &inputs, |t, v| t.concat(v, axis));
    }
    // The same variable twice: its gradient is the sum of both halves of dL/dy.
    let x = uniform(&mut rng, &[2, 3], -2.0, 2.0);
    gradcheck("concat [x, x] axis 0", &[x], |t, v| t.concat(&[v[0], v[0]], 0));
}

/// Checks the parameter and input gradients of the model `json`, with its trainable parameters
/// moved off their initial values (zero biases, unit batch-norm scales) by up to 0.3.
#[track_caller]
fn check_layers(name: &str, json: &str, seed: u64, x: &Tensor, labels: &[u8], phase: Phase) {
    let mut model = build_model(json, seed);
    jitter_params(&mut model, seed + 1000, 0.3);
    check_model_gradients(&format!("{name} ({json})"), &mut model, x, labels, phase);
}

/// The smallest gap between the largest and second-largest value of any pooling window of
/// `x` `[batch, channels, h, w]`.
fn pool_margin(x: &Tensor, size: usize, stride: usize) -> f32 {
    let x = x.view().into_dimensionality::<Ix4>().unwrap();
    let (n, c, h, w) = x.dim();
    let mut margin = f32::INFINITY;
    for b in 0..n {
        for ch in 0..c {
            for y in (0..=h - size).step_by(stride) {
                for x0 in (0..=w - size).step_by(stride) {
                    let mut window: Vec<f32> =
                        (0..size * size).map(|k| x[[b, ch, y + k / size, x0 + k % size]]).collect();
                    window.sort_by(|a, b| b.total_cmp(a));
                    margin = margin.min(window[0] - window[1]);
                }
            }
        }
    }
    margin
}

/// Spec-built convolution models: valid and same padding at strides 1 and 2, each followed by
/// a pooling layer; tanh rather than relu keeps them smooth.
const CONV_MODELS: &[(&str, u64, &str)] = &[
    (
        "conv2d valid + max_pool2d 2",
        202,
        r#"{"input":[2,7,6],"layers":[{"type":"conv2d","filters":3,"kernel_size":3,"activation":"tanh"},{"type":"max_pool2d","pool_size":2},{"type":"flatten"},{"type":"dense","units":3}]}"#,
    ),
    (
        "conv2d same + avg_pool2d 3 stride 1",
        201,
        r#"{"input":[2,7,6],"layers":[{"type":"conv2d","filters":3,"kernel_size":3,"padding":"same","activation":"tanh"},{"type":"avg_pool2d","pool_size":3,"stride":1},{"type":"flatten"},{"type":"dense","units":3}]}"#,
    ),
    (
        "conv2d same stride 2 + max_pool2d 2 stride 1",
        227,
        r#"{"input":[2,7,6],"layers":[{"type":"conv2d","filters":3,"kernel_size":3,"stride":2,"padding":"same","activation":"tanh"},{"type":"max_pool2d","pool_size":2,"stride":1},{"type":"flatten"},{"type":"dense","units":3}]}"#,
    ),
    (
        "conv2d kernel 2 same (pads bottom and right) + avg_pool2d 2",
        203,
        r#"{"input":[1,5,6],"layers":[{"type":"conv2d","filters":2,"kernel_size":2,"padding":"same","activation":"tanh"},{"type":"avg_pool2d","pool_size":2},{"type":"flatten"},{"type":"dense","units":3}]}"#,
    ),
    (
        "conv2d valid, conv2d same stride 2, no bias",
        204,
        r#"{"input":[1,7,6],"layers":[{"type":"conv2d","filters":2,"kernel_size":3,"activation":"tanh"},{"type":"conv2d","filters":3,"kernel_size":2,"stride":2,"padding":"same","bias":false},{"type":"flatten"},{"type":"dense","units":3}]}"#,
    ),
];

#[test]
fn conv_and_pooling_layers_through_the_spec() {
    // Each model has its own seed, for its weights and its input.
    for &(name, seed, json) in CONV_MODELS {
        let mut model = build_model(json, seed);
        jitter_params(&mut model, seed + 1000, 0.3);
        let spec = ModelSpec::from_json(json).unwrap();
        let mut shape = vec![3];
        shape.extend_from_slice(&spec.input);
        let x = uniform(&mut rng(seed), &shape, -1.0, 1.0);
        let labels = [0, 2, 1];

        if let Some((size, stride)) = spec.layers.iter().find_map(|l| match *l {
            ferrograd::nn::LayerSpec::MaxPool2d { pool_size, stride } => {
                Some((pool_size, stride.unwrap_or(pool_size)))
            }
            _ => None,
        }) {
            // Max pooling's kink: a step of eps on one weight or one input moves each
            // convolution output by at most eps * max(|x|, |w|) (an input meets each weight once
            // per output; the tanh after it only shrinks steps), so two values of a window can
            // approach each other by twice that. Their gap must stay wider, with a factor of 2
            // to spare, or the argmax flips under the step.
            let mut trace = Trace::default();
            let mut tape = Tape::inference(model.params());
            let input = tape.input(x.clone());
            model.forward_traced(&mut tape, input, Mode::Eval, Some(&mut trace)).unwrap();
            let conv_out = tape.value(trace.outputs[0].1);
            let largest = |t: &Tensor| t.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let weight = model.params().iter().find(|p| p.name == "layers.0.weight").unwrap();
            let bound = 2.0 * EPS * largest(&x).max(largest(&weight.value));
            let margin = pool_margin(conv_out, size, stride);
            assert!(
                margin > 2.0 * bound,
                "{name}: pooling margin {margin} is not twice the {bound} a step can close; change the seed"
            );
        }
        check_model_gradients(&format!("{name} ({json})"), &mut model, &x, &labels, Phase::Eval);
    }
}

#[test]
fn batch_norm_after_dense_in_training() {
    // Training mode normalises by the batch's own mean and variance, so every sample's output
    // depends on every other sample: the checks cover the gradient through both statistics.
    let json = r#"{"input":[5],"layers":[{"type":"dense","units":4},{"type":"batch_norm"},{"type":"tanh"},{"type":"dense","units":3}]}"#;
    let mut rng = rng(108);
    let x = uniform(&mut rng, &[6, 5], -1.0, 1.0);
    check_layers("dense + batch_norm, training, batch 6", json, 30, &x, &[0, 1, 2, 2, 1, 0], Phase::Train);
    let x = uniform(&mut rng, &[2, 5], -1.0, 1.0);
    check_layers("dense + batch_norm, training, batch 2", json, 31, &x, &[1, 0], Phase::Train);
}

#[test]
fn batch_norm_after_conv_in_training() {
    // For images the statistics run over the batch and both spatial axes of each channel:
    // 2 * 5 * 4 = 40 values per channel here.
    let json = r#"{"input":[2,5,4],"layers":[{"type":"conv2d","filters":3,"kernel_size":3,"padding":"same"},{"type":"batch_norm"},{"type":"tanh"},{"type":"flatten"},{"type":"dense","units":3}]}"#;
    let x = uniform(&mut rng(109), &[2, 2, 5, 4], -1.0, 1.0);
    check_layers("conv2d + batch_norm, training", json, 32, &x, &[2, 0], Phase::Train);
}

#[test]
fn batch_norm_in_evaluation_with_running_statistics() {
    // In evaluation the running statistics are constants of the forward pass; moved off their
    // initial 0 and 1 so that the check sees them, and their gradients are checked as well.
    let json = r#"{"input":[5],"layers":[{"type":"dense","units":4},{"type":"batch_norm"},{"type":"tanh"},{"type":"dense","units":3}]}"#;
    let mut model = build_model(json, 33);
    jitter_params(&mut model, 34, 0.3);
    let mut rng = rng(110);
    for p in model.params_mut().iter_mut() {
        match p.name.as_str() {
            "layers.1.running_mean" => p.value = uniform(&mut rng, &[4], -0.5, 0.5),
            "layers.1.running_var" => p.value = uniform(&mut rng, &[4], 0.5, 1.5),
            _ => {}
        }
    }
    let x = uniform(&mut rng, &[3, 5], -1.0, 1.0);
    check_model_gradients(
        &format!("dense + batch_norm, evaluation ({json})"),
        &mut model,
        &x,
        &[2, 1, 0],
        Phase::Eval,
    );
}

/// The running mean and variance of layer `index` of the trainer's model.
fn running_stats(trainer: &Trainer, index: usize) -> (Vec<f32>, Vec<f32>) {
    let get = |part: &str| {
        let name = format!("layers.{index}.{part}");
        let p = trainer.model().params().iter().find(|p| p.name == name).unwrap();
        p.value.iter().copied().collect::<Vec<f32>>()
    };
    (get("running_mean"), get("running_var"))
}

/// Asserts that one SGD step on `x` leaves the running statistics of the batch norm at layer 1
/// at `0.9 * 0 + 0.1 * mean` and `0.9 * 1 + 0.1 * unbiased variance` of `z`, the per-feature
/// samples that reach it (`[features][samples]`).
#[track_caller]
fn assert_running_stats_after_one_step(
    name: &str,
    mut trainer: Trainer,
    x: Tensor,
    labels: &[u8],
    z: &[Vec<f64>],
) {
    trainer.step(x, labels).unwrap();
    let (mean, var) = running_stats(&trainer, 1);
    for (f, samples) in z.iter().enumerate() {
        let n = samples.len() as f64;
        let batch_mean = samples.iter().sum::<f64>() / n;
        let unbiased = samples.iter().map(|v| (v - batch_mean).powi(2)).sum::<f64>() / (n - 1.0);
        let expected = (0.9 * 0.0 + 0.1 * batch_mean, 0.9 * 1.0 + 0.1 * unbiased);
        let got = (f64::from(mean[f]), f64::from(var[f]));
        assert!(
            (got.0 - expected.0).abs() < 1e-6 && (got.1 - expected.1).abs() < 1e-6,
            "{name}: feature {f}: running (mean, var) {got:?}, expected {expected:?}"
        );
    }
}

fn sgd() -> OptimizerSpec {
    OptimizerSpec::Sgd { lr: 0.1, momentum: 0.0, weight_decay: 0.0 }
}

#[test]
fn batch_norm_running_statistics_after_one_step() {
    // With momentum m = 0.1 (PyTorch's convention, the default), the trainer stores
    // running <- (1 - m) * running + m * batch statistic after the step. The running mean
    // starts at 0 and the running variance at 1, so after one step
    //   running_mean = 0.9 * 0 + 0.1 * mean(z)
    //   running_var  = 0.9 * 1 + 0.1 * sum((z - mean(z))^2) / (n - 1)   (unbiased, as PyTorch)
    // where z = x W + b is the batch norm's input, computed with the weights as they were
    // before the optimizer step (the statistics are taken in the forward pass), b = 0 at start.
    let json = r#"{"input":[3],"layers":[{"type":"dense","units":4},{"type":"batch_norm"},{"type":"dense","units":10}]}"#;
    let trainer = Trainer::new(ModelSpec::from_json(json).unwrap(), &sgd(), 40).unwrap();
    let weight = trainer.model().params().iter().find(|p| p.name == "layers.0.weight").unwrap();
    let w: Array2<f64> = weight.value.mapv(f64::from).into_dimensionality().unwrap();
    let x = uniform(&mut rng(111), &[5, 3], -1.0, 1.0);
    let z = x.mapv(f64::from).into_dimensionality::<ndarray::Ix2>().unwrap().dot(&w);
    let per_feature: Vec<Vec<f64>> = z.axis_iter(Axis(1)).map(|col| col.to_vec()).collect();
    assert_running_stats_after_one_step("dense + batch_norm", trainer, x, &[3, 1, 4, 1, 5], &per_feature);
}

#[test]
fn batch_norm_running_statistics_over_channels_after_one_step() {
    // As above, per channel, over the batch and both spatial axes: z is the 2x2 output plane
    // of a valid 3x3 convolution (bias 0) of 3 images, 3 * 2 * 2 = 12 samples per channel,
    // computed here by the definition
    //   z[b, f, y, x] = sum over ky, kx of x[b, 0, y + ky, x + kx] * w[f, 0, ky, kx].
    let json = r#"{"input":[1,4,4],"layers":[{"type":"conv2d","filters":2,"kernel_size":3},{"type":"batch_norm"},{"type":"flatten"},{"type":"dense","units":10}]}"#;
    let trainer = Trainer::new(ModelSpec::from_json(json).unwrap(), &sgd(), 41).unwrap();
    let weight = trainer.model().params().iter().find(|p| p.name == "layers.0.weight").unwrap().value.clone();
    let x = uniform(&mut rng(112), &[3, 1, 4, 4], -1.0, 1.0);
    let mut per_channel = vec![Vec::new(); 2];
    for (f, samples) in per_channel.iter_mut().enumerate() {
        for b in 0..3 {
            for y in 0..2 {
                for x0 in 0..2 {
                    let mut sum = 0.0f64;
                    for ky in 0..3 {
                        for kx in 0..3 {
                            sum += f64::from(x[[b, 0, y + ky, x0 + kx]]) * f64::from(weight[[f, 0, ky, kx]]);
                        }
                    }
                    samples.push(sum);
                }
            }
        }
    }
    assert_running_stats_after_one_step("conv2d + batch_norm", trainer, x, &[7, 0, 9], &per_channel);
}

/// The per-feature batch-norm inputs `z = x W` (bias 0 at start) of the dense + batch norm
/// model below, for the inputs `x` `[samples, 3]`: `[features][samples]`.
fn dense_outputs(trainer: &Trainer, x: &Tensor) -> Vec<Vec<f64>> {
    let weight = trainer.model().params().iter().find(|p| p.name == "layers.0.weight").unwrap();
    let w: Array2<f64> = weight.value.mapv(f64::from).into_dimensionality().unwrap();
    let z = x.mapv(f64::from).into_dimensionality::<ndarray::Ix2>().unwrap().dot(&w);
    z.axis_iter(Axis(1)).map(|col| col.to_vec()).collect()
}

/// Mean and unbiased variance.
fn mean_and_unbiased(samples: &[f64]) -> (f64, f64) {
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    (mean, samples.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0))
}

#[test]
fn recalibration_replaces_the_running_statistics_with_their_mean_over_the_batches() {
    // Precise BN: after batches of 5 and 7 samples at fixed weights, the running mean is
    // (5 mean_1 + 7 mean_2) / 12 and the running variance (5 var_1 + 7 var_2) / 12, each
    // batch's unbiased variance, whatever the averages were before (here a training step's).
    // Dropout draws from a generator of its own, so the run's generator is left as it was.
    let json = r#"{"input":[3],"layers":[{"type":"dense","units":4},{"type":"batch_norm"},{"type":"dropout","rate":0.5},{"type":"dense","units":10}]}"#;
    let mut trainer = Trainer::new(ModelSpec::from_json(json).unwrap(), &sgd(), 42).unwrap();
    trainer.step(uniform(&mut rng(113), &[4, 3], -1.0, 1.0), &[1, 2, 3, 4]).unwrap();
    let before = serde_json::to_string(&trainer.training_state().0).unwrap();
    let (a, b) = (uniform(&mut rng(114), &[5, 3], -1.0, 1.0), uniform(&mut rng(115), &[7, 3], -2.0, 3.0));
    let (za, zb) = (dense_outputs(&trainer, &a), dense_outputs(&trainer, &b));
    trainer.recalibrate_batch_norm([a, b]).unwrap();
    let (mean, var) = running_stats(&trainer, 1);
    for f in 0..4 {
        let ((mean_a, var_a), (mean_b, var_b)) = (mean_and_unbiased(&za[f]), mean_and_unbiased(&zb[f]));
        let expected = ((5.0 * mean_a + 7.0 * mean_b) / 12.0, (5.0 * var_a + 7.0 * var_b) / 12.0);
        let got = (f64::from(mean[f]), f64::from(var[f]));
        assert!(
            (got.0 - expected.0).abs() < 1e-6 && (got.1 - expected.1).abs() < 1e-5 * expected.1,
            "feature {f}: running (mean, var) {got:?}, expected {expected:?}"
        );
    }
    assert_eq!(
        serde_json::to_string(&trainer.training_state().0).unwrap(),
        before,
        "the training state moved"
    );
}

#[test]
fn recalibration_leaves_a_model_without_batch_norm_alone() {
    let mut trainer = Trainer::new(ModelSpec::preset("mlp").unwrap(), &sgd(), 43).unwrap();
    let before: Vec<Tensor> = trainer.model().params().iter().map(|p| p.value.clone()).collect();
    trainer.recalibrate_batch_norm([uniform(&mut rng(116), &[8, 1, 28, 28], 0.0, 1.0)]).unwrap();
    let after: Vec<Tensor> = trainer.model().params().iter().map(|p| p.value.clone()).collect();
    assert_eq!(before, after);
}

#[test]
fn recalibration_refuses_images_the_model_cannot_take() {
    let json = r#"{"input":[3],"layers":[{"type":"dense","units":4},{"type":"batch_norm"},{"type":"dense","units":10}]}"#;
    let mut trainer = Trainer::new(ModelSpec::from_json(json).unwrap(), &sgd(), 44).unwrap();
    let err = trainer.recalibrate_batch_norm([uniform(&mut rng(117), &[5, 4], 0.0, 1.0)]).unwrap_err();
    assert!(err.to_string().contains("model input"), "{err}");
}

/// A recurrent layer over `[time, 3]` with 5 units, then a dense layer to 3 scores; with
/// `return_sequences` the whole sequence of states is flattened into the dense layer, so the
/// loss depends on every step's state directly.
fn recurrent_spec(cell: &str, time: usize, return_sequences: bool) -> String {
    let flatten = if return_sequences { r#"{"type":"flatten"},"# } else { "" };
    format!(
        r#"{{"input":[{time},3],"layers":[{{"type":"{cell}","units":5,"return_sequences":{return_sequences}}},{flatten}{{"type":"dense","units":3}}]}}"#
    )
}

/// One step and sequences of 3 and 4 steps, returning the last state or all of them.
fn check_recurrent(cell: &str, seed: u64) {
    let mut rng = rng(seed);
    for (time, batch) in [(1, 2), (3, 3), (4, 2)] {
        let x = uniform(&mut rng, &[batch, time, 3], -1.0, 1.0);
        let labels: Vec<u8> = (0..batch as u8).map(|b| b % 3).collect();
        for return_sequences in [false, true] {
            let json = recurrent_spec(cell, time, return_sequences);
            let name = format!("{cell}, time {time}, batch {batch}, return_sequences {return_sequences}");
            check_layers(&name, &json, seed + time as u64, &x, &labels, Phase::Eval);
        }
    }
}

#[test]
fn simple_rnn_cell_and_sequences() {
    // h_t = tanh(x_t W + h_{t-1} U + b): through time, dL/dU collects one term per step.
    check_recurrent("simple_rnn", 120);
}

#[test]
fn lstm_cell_and_sequences() {
    check_recurrent("lstm", 130);
}

#[test]
fn gru_cell_and_sequences() {
    check_recurrent("gru", 140);
}

#[test]
fn recurrent_parameter_names() {
    // The names tests/reference.rs overwrites, and the layout of each cell's gate blocks.
    for (cell, gates, names) in [
        ("simple_rnn", 1, &["w", "u", "bias"][..]),
        ("lstm", 4, &["w", "u", "bias"][..]),
        ("gru", 3, &["w", "u", "bias", "recurrent_bias"][..]),
    ] {
        let model = build_model(&recurrent_spec(cell, 2, false), 1);
        for part in names {
            let name = format!("layers.0.{part}");
            let p = model.params().iter().find(|p| p.name == name);
            let p = p.unwrap_or_else(|| panic!("{cell}: no parameter {name}"));
            let expected: &[usize] = match *part {
                "w" => &[3, gates * 5],
                "u" => &[5, gates * 5],
                _ => &[gates * 5],
            };
            assert_eq!(p.value.shape(), expected, "{cell}: {name}");
        }
    }
}

/// Samples of `shape` (without the batch axis) for a batch of `batch`, and labels cycling
/// through three classes.
fn batch_of(seed: u64, batch: usize, shape: &[usize]) -> (Tensor, Vec<u8>) {
    let mut full = vec![batch];
    full.extend_from_slice(shape);
    let x = uniform(&mut rng(seed), &full, -1.0, 1.0);
    (x, (0..batch as u8).map(|b| b % 3).collect())
}

#[test]
fn layer_norm_over_features_and_tokens() {
    // Each sample's (each token's) statistics: one input element moves its row's mean and
    // variance, so the gradient has the row-coupled terms of the closed form
    // dx = (g - mean(g) - xhat mean(g xhat)) / sqrt(var + eps), g = dy * gamma.
    for (name, json, shape) in [
        (
            "layer_norm on features",
            r#"{"input":[6],"layers":[{"type":"layer_norm"},{"type":"dense","units":3}]}"#,
            &[6][..],
        ),
        (
            "layer_norm on tokens",
            r#"{"input":[3,5],"layers":[{"type":"layer_norm","eps":1e-3},{"type":"flatten"},{"type":"dense","units":3}]}"#,
            &[3, 5],
        ),
    ] {
        let (x, labels) = batch_of(300, 2, shape);
        check_layers(name, json, 301, &x, &labels, Phase::Eval);
    }
}

#[test]
fn dense_with_gelu_on_a_sequence() {
    let json = r#"{"input":[3,4],"layers":[{"type":"dense","units":5,"activation":"gelu"},{"type":"gelu"},{"type":"flatten"},{"type":"dense","units":3}]}"#;
    let (x, labels) = batch_of(302, 2, &[3, 4]);
    check_layers("dense gelu on tokens", json, 303, &x, &labels, Phase::Eval);
}

#[test]
fn multi_head_attention() {
    // Two heads of d / heads, then three heads of a key size that does not divide d; in
    // training with dropout on the attention weights (a fixed mask: see model_forward).
    for (name, json, phase) in [
        (
            "attention, 2 heads",
            r#"{"input":[4,6],"layers":[{"type":"multi_head_attention","heads":2},{"type":"flatten"},{"type":"dense","units":3}]}"#,
            Phase::Eval,
        ),
        (
            "attention, 3 heads of 2",
            r#"{"input":[4,5],"layers":[{"type":"multi_head_attention","heads":3,"key_size":2},{"type":"global_avg_pool"},{"type":"dense","units":3}]}"#,
            Phase::Eval,
        ),
        (
            "attention with dropout, training",
            r#"{"input":[5,4],"layers":[{"type":"multi_head_attention","heads":2,"dropout":0.3},{"type":"flatten"},{"type":"dense","units":3}]}"#,
            Phase::Train,
        ),
    ] {
        let spec = ModelSpec::from_json(json).unwrap();
        let (x, labels) = batch_of(304, 3, &spec.input);
        check_layers(name, json, 305, &x, &labels, phase);
    }
}

#[test]
fn patch_embed_and_global_average_pooling() {
    for (name, json) in [
        (
            "patch_embed 2x2 then the mean over tokens",
            r#"{"input":[2,4,6],"layers":[{"type":"patch_embed","patch_size":2,"dim":3},{"type":"global_avg_pool"},{"type":"dense","units":3}]}"#,
        ),
        (
            "conv2d then the mean over each plane",
            r#"{"input":[2,4,5],"layers":[{"type":"conv2d","filters":3,"kernel_size":3,"activation":"tanh"},{"type":"global_avg_pool"},{"type":"dense","units":3}]}"#,
        ),
    ] {
        let spec = ModelSpec::from_json(json).unwrap();
        let (x, labels) = batch_of(306, 2, &spec.input);
        check_layers(name, json, 307, &x, &labels, Phase::Eval);
    }
}

#[test]
fn residual_blocks_with_and_without_a_shortcut_and_nested() {
    // d(x + f(x))/dx = 1 + f'(x): the input's gradient is the sum of both paths. The second
    // block changes the channels, so its shortcut (a 1x1 convolution) maps x first; batch
    // norm in training couples the samples. Tanh keeps everything smooth.
    let json = r#"{"input":[2,4,4],"layers":[
        {"type":"residual","layers":[
            {"type":"conv2d","filters":2,"kernel_size":3,"padding":"same","activation":"tanh"},
            {"type":"conv2d","filters":2,"kernel_size":3,"padding":"same"}]},
        {"type":"tanh"},
        {"type":"residual","layers":[
            {"type":"conv2d","filters":3,"kernel_size":3,"padding":"same","bias":false},
            {"type":"batch_norm"}],
         "shortcut":[{"type":"conv2d","filters":3,"kernel_size":1,"bias":false}]},
        {"type":"global_avg_pool"},
        {"type":"residual","layers":[
            {"type":"residual","layers":[{"type":"dense","units":3,"activation":"tanh"}]},
            {"type":"dense","units":3}]},
        {"type":"dense","units":3}]}"#;
    let (x, labels) = batch_of(308, 3, &[2, 4, 4]);
    check_layers("residual blocks", json, 309, &x, &labels, Phase::Train);
}

#[test]
fn a_small_vision_transformer() {
    // The vit preset's structure at toy sizes: patches, a pre-norm encoder block, the mean
    // over tokens.
    let json = r#"{"input":[1,4,4],"layers":[
        {"type":"patch_embed","patch_size":2,"dim":4},
        {"type":"residual","layers":[{"type":"layer_norm"},{"type":"multi_head_attention","heads":2}]},
        {"type":"residual","layers":[{"type":"layer_norm"},{"type":"dense","units":6,"activation":"gelu"},{"type":"dense","units":4}]},
        {"type":"layer_norm"},{"type":"global_avg_pool"},{"type":"dense","units":3}]}"#;
    let (x, labels) = batch_of(310, 2, &[1, 4, 4]);
    check_layers("small vit", json, 311, &x, &labels, Phase::Eval);
}

#[test]
fn block_parameters_are_named_by_their_path() {
    let model = build_model(
        r#"{"input":[4,6],"layers":[{"type":"residual","layers":[{"type":"layer_norm"},{"type":"multi_head_attention","heads":2,"key_size":5}],
            "shortcut":[{"type":"dense","units":6}]}]}"#,
        1,
    );
    let names: Vec<(&str, &[usize])> =
        model.params().iter().map(|p| (p.name.as_str(), p.value.shape())).collect();
    assert_eq!(
        names,
        [
            ("layers.0.layers.0.gamma", &[6][..]),
            ("layers.0.layers.0.beta", &[6]),
            ("layers.0.layers.1.query.weight", &[6, 10]),
            ("layers.0.layers.1.query.bias", &[10]),
            ("layers.0.layers.1.key.weight", &[6, 10]),
            ("layers.0.layers.1.key.bias", &[10]),
            ("layers.0.layers.1.value.weight", &[6, 10]),
            ("layers.0.layers.1.value.bias", &[10]),
            ("layers.0.layers.1.output.weight", &[10, 6]),
            ("layers.0.layers.1.output.bias", &[6]),
            ("layers.0.shortcut.0.weight", &[6, 6]),
            ("layers.0.shortcut.0.bias", &[6]),
        ]
    );
}

#[test]
fn attention_weights_are_traced_and_each_row_sums_to_one() {
    let model = build_model(
        r#"{"input":[5,4],"layers":[{"type":"multi_head_attention","heads":2},{"type":"residual","layers":[{"type":"multi_head_attention","heads":1}]}]}"#,
        2,
    );
    let (x, _) = batch_of(312, 3, &[5, 4]);
    let mut tape = Tape::inference(model.params());
    let input = tape.input(x);
    let mut trace = Trace::default();
    model.forward_traced(&mut tape, input, Mode::Eval, Some(&mut trace)).unwrap();
    let shapes: Vec<(usize, &[usize])> =
        trace.attention.iter().map(|a| (a.heads, tape.value(a.weights).shape())).collect();
    assert_eq!(shapes, [(2, &[6, 5, 5][..]), (1, &[3, 5, 5])]);
    for a in &trace.attention {
        for row in tape.value(a.weights).lanes(Axis(2)) {
            assert!((row.sum() - 1.0).abs() < 1e-5, "a row of attention weights sums to {}", row.sum());
        }
    }
}
