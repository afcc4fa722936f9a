//! The WebGPU backend against the CPU backend, natively through wgpu on whatever adapter the
//! machine has (Mesa's lavapipe, a CPU Vulkan, where there is no GPU: the README's test
//! command installs it).
//!
//! - Every WGSL file parses and validates with naga.
//! - Every op's forward kernel and backward rule, on random inputs of awkward sizes (1, 7, 33,
//!   257), matches the CPU within a relative error of 1e-4: the output, and the gradient of
//!   `sum(w * y)` for random `w` with respect to every input.
//! - Fifty seeded training steps of each preset on the GPU follow the CPU's loss curve within
//!   1e-3 relative.
//!
//! Without an adapter these tests fail, saying so: they never pass by skipping.

#![cfg(feature = "webgpu")]

mod common;

use std::path::Path;
use std::sync::OnceLock;

use common::{away_from_zero, rng, uniform, weighted_sum};
use ferrograd::autograd::{Params, Tape, Var};
use ferrograd::backend::gpu::{run_on_gpu, Gpu, Kernel};
use ferrograd::data::load_mnist;
use ferrograd::nn::ModelSpec;
use ferrograd::optim::OptimizerSpec;
use ferrograd::tensor::Tensor;
use ferrograd::train::Trainer;
use ferrograd::Result;
use rand::Rng;

const TOLERANCE: f32 = 1e-4;

fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        Gpu::blocking().unwrap_or_else(|e| {
            panic!(
                "{e}\nThese tests need a WebGPU/Vulkan adapter. Without a GPU, install Mesa's CPU \
                 Vulkan (`apt-get install libvulkan1 mesa-vulkan-drivers`), as scripts/test.sh does."
            )
        })
    })
}

#[test]
fn every_kernel_parses_and_validates() {
    for kernel in Kernel::ALL {
        let (file, source) = kernel.source();
        let module = naga::front::wgsl::parse_str(source)
            .unwrap_or_else(|e| panic!("{file}: {}", e.emit_to_string(source)));
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::empty())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{file}: {}", e.emit_to_string(source)));
        assert!(module.entry_points.iter().any(|e| e.name == "main"), "{file}: no entry point `main`");
    }
}

/// `max |gpu - cpu| / max |cpu|`: the error relative to the size of the values.
fn relative_error(gpu: &[f32], cpu: &Tensor) -> f32 {
    let cpu: Vec<f32> = cpu.iter().copied().collect();
    assert_eq!(gpu.len(), cpu.len(), "element counts differ");
    let scale = cpu.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let worst = gpu.iter().zip(&cpu).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    if gpu.iter().any(|v| !v.is_finite()) {
        return f32::INFINITY;
    }
    worst / scale
}

/// Runs `build` on the CPU and on the GPU and compares the output and every input gradient.
fn compare(name: &str, inputs: &[Tensor], build: impl Fn(&mut Tape, &[Var]) -> Result<Var>) {
    let params = Params::default();
    let mut tape = Tape::new(&params);
    let vars: Vec<Var> = inputs.iter().map(|x| tape.variable(x.clone())).collect();
    let y = build(&mut tape, &vars).unwrap_or_else(|e| panic!("{name}: {e}"));
    let loss = if tape.value(y).len() == 1 {
        y
    } else {
        let weights = uniform(&mut rng(7), tape.value(y).shape(), -1.0, 1.0);
        weighted_sum(&mut tape, y, &weights).unwrap()
    };
    let grads = tape.backward(loss).unwrap();
    let (value, gpu_grads) =
        run_on_gpu(gpu(), &tape, y, loss, &vars).unwrap_or_else(|e| panic!("{name}: {e}"));
    let error = relative_error(&value, tape.value(y));
    assert!(error <= TOLERANCE, "{name}: the output differs by {error:e} relative");
    for (i, (&var, gpu_grad)) in vars.iter().zip(&gpu_grads).enumerate() {
        let error = relative_error(gpu_grad, grads.wrt(var).unwrap());
        assert!(error <= TOLERANCE, "{name}: the gradient of input {i} differs by {error:e} relative");
    }
}

#[test]
fn matmul() {
    let mut r = rng(1);
    for (m, k, n) in [(7, 33, 257), (1, 257, 1), (33, 1, 7), (257, 7, 33), (1, 1, 1)] {
        let inputs = [uniform(&mut r, &[m, k], -1.0, 1.0), uniform(&mut r, &[k, n], -1.0, 1.0)];
        compare(&format!("matmul {m}x{k} · {k}x{n}"), &inputs, |t, v| t.matmul(v[0], v[1]));
    }
}

#[test]
fn broadcasting_binary_ops() {
    type Op = fn(&mut Tape, Var, Var) -> Result<Var>;
    let ops: [(&str, Op); 4] = [
        ("add", |t, a, b| t.add(a, b)),
        ("sub", |t, a, b| t.sub(a, b)),
        ("mul", |t, a, b| t.mul(a, b)),
        ("div", |t, a, b| t.div(a, b)),
    ];
    let shapes: [(&[usize], &[usize]); 7] = [
        (&[7, 33], &[33]),
        (&[33, 1], &[1, 7]),
        (&[257], &[1]),
        (&[1, 7, 33], &[7, 1]),
        (&[257, 7], &[257, 7]),
        (&[], &[7, 33]),
        (&[2, 7, 3, 33], &[7, 1, 1]),
    ];
    let mut r = rng(2);
    for (name, op) in ops {
        for (a, b) in shapes {
            let inputs = [uniform(&mut r, a, -2.0, 2.0), away_from_zero(&mut r, b, 0.5, 2.0)];
            compare(&format!("{name} {a:?} {b:?}"), &inputs, |t, v| op(t, v[0], v[1]));
        }
    }
}

#[test]
fn activations_and_powers() {
    let mut r = rng(3);
    let x = uniform(&mut r, &[33, 257], -4.0, 4.0);
    compare("relu", std::slice::from_ref(&x), |t, v| Ok(t.relu(v[0])));
    compare("leaky_relu", std::slice::from_ref(&x), |t, v| Ok(t.leaky_relu(v[0], 0.1)));
    compare("sigmoid", std::slice::from_ref(&x), |t, v| Ok(t.sigmoid(v[0])));
    compare("tanh", std::slice::from_ref(&x), |t, v| Ok(t.tanh(v[0])));
    let positive = uniform(&mut r, &[7, 33], 0.5, 3.0);
    compare("pow -0.5", std::slice::from_ref(&positive), |t, v| Ok(t.pow(v[0], -0.5)));
    compare("pow 2", std::slice::from_ref(&positive), |t, v| Ok(t.pow(v[0], 2.0)));
}

#[test]
fn reductions() {
    let mut r = rng(4);
    let x = uniform(&mut r, &[7, 33, 257], -1.0, 1.0);
    for axis in 0..3 {
        compare(&format!("sum axis {axis}"), std::slice::from_ref(&x), |t, v| t.sum(v[0], axis));
        compare(&format!("mean axis {axis}"), std::slice::from_ref(&x), |t, v| t.mean(v[0], axis));
    }
    compare("mean of [1]", &[uniform(&mut r, &[1], -1.0, 1.0)], |t, v| t.mean(v[0], 0));
}

#[test]
fn softmax_cross_entropy() {
    let mut r = rng(5);
    for (batch, classes) in [(33, 7), (1, 10), (257, 10), (7, 1)] {
        let logits = uniform(&mut r, &[batch, classes], -5.0, 5.0);
        let labels: Vec<u8> = (0..batch).map(|_| r.random_range(0..classes as u8)).collect();
        compare(&format!("softmax_cross_entropy {batch}x{classes}"), &[logits], |t, v| {
            t.softmax_cross_entropy(v[0], &labels)
        });
    }
}

#[test]
fn slices_concatenation_and_permutations() {
    let mut r = rng(6);
    let x = uniform(&mut r, &[7, 257], -1.0, 1.0);
    compare("slice axis 1", std::slice::from_ref(&x), |t, v| t.slice(v[0], 1, 33, 7));
    compare("slice axis 0", std::slice::from_ref(&x), |t, v| t.slice(v[0], 0, 6, 1));
    let cube = uniform(&mut r, &[33, 7, 9], -1.0, 1.0);
    compare("slice of a cube", &[cube], |t, v| t.slice(v[0], 1, 1, 5));
    let parts = [
        uniform(&mut r, &[7, 1, 33], -1.0, 1.0),
        uniform(&mut r, &[7, 7, 33], -1.0, 1.0),
        uniform(&mut r, &[7, 33, 33], -1.0, 1.0),
    ];
    compare("concat axis 1", &parts, |t, v| t.concat(v, 1));
    let x4 = uniform(&mut r, &[7, 1, 33, 3], -1.0, 1.0);
    compare("permute", &[x4], |t, v| t.permute(v[0], &[2, 0, 3, 1]));
    compare("transpose", &[uniform(&mut r, &[33, 257], -1.0, 1.0)], |t, v| t.transpose(v[0]));
    compare("reshape then mul", &[uniform(&mut r, &[7, 33], -1.0, 1.0)], |t, v| {
        let flat = t.reshape(v[0], &[231])?;
        t.mul(flat, flat)
    });
}

#[test]
fn convolution() {
    let mut r = rng(7);
    // (input, weights, stride, padding)
    let cases: [(&[usize], &[usize], usize, usize); 4] = [
        (&[7, 3, 33, 33], &[8, 3, 5, 5], 1, 0),
        (&[1, 1, 7, 7], &[1, 1, 3, 3], 2, 1),
        (&[2, 7, 9, 9], &[33, 7, 3, 3], 1, 1),
        (&[3, 2, 8, 7], &[4, 2, 2, 3], 2, 0),
    ];
    for (x, w, stride, pad) in cases {
        let inputs = [uniform(&mut r, x, -1.0, 1.0), uniform(&mut r, w, -1.0, 1.0)];
        compare(&format!("conv2d {x:?} * {w:?} stride {stride} pad {pad}"), &inputs, |t, v| {
            t.conv2d(v[0], v[1], (stride, stride), (pad, pad, pad, pad))
        });
    }
}

#[test]
fn pooling() {
    let mut r = rng(8);
    for (shape, size, stride) in
        [(&[7, 3, 33, 33][..], 2, 2), (&[1, 1, 7, 7][..], 3, 2), (&[2, 5, 9, 9][..], 3, 3)]
    {
        let x = uniform(&mut r, shape, -1.0, 1.0);
        compare(&format!("max_pool2d {shape:?} {size}/{stride}"), std::slice::from_ref(&x), |t, v| {
            t.max_pool2d(v[0], (size, size), (stride, stride))
        });
        compare(&format!("avg_pool2d {shape:?} {size}/{stride}"), std::slice::from_ref(&x), |t, v| {
            t.avg_pool2d(v[0], (size, size), (stride, stride))
        });
    }
}

#[test]
fn dropout() {
    let x = uniform(&mut rng(9), &[33, 257], -1.0, 1.0);
    let mut draws = rng(10);
    let keep: Vec<bool> = (0..x.len()).map(|_| draws.random::<f32>() >= 0.3).collect();
    compare("dropout 0.3", &[x], |t, v| {
        let mut k = keep.iter();
        t.dropout(v[0], 0.3, || *k.next().unwrap())
    });
}

/// Fifty steps of `preset` with `optimizer` from the same seed on the CPU and on the GPU.
fn follow_cpu(preset: &str, optimizer: OptimizerSpec, clip_norm: Option<f32>) {
    let data = load_mnist(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist"))
        .expect("the bundled MNIST sample (scripts/test.sh fetches it)");
    let spec = ModelSpec::preset(preset).unwrap();
    let mut cpu = Trainer::new(spec.clone(), &optimizer, 3).unwrap();
    let mut gpu_trainer = Trainer::new(spec, &optimizer, 3).unwrap();
    cpu.set_clip_norm(clip_norm).unwrap();
    gpu_trainer.set_clip_norm(clip_norm).unwrap();
    gpu_trainer.use_gpu(Gpu::blocking().unwrap(), 64).unwrap();
    let mut worst = 0f32;
    for step in 0..50 {
        let indices: Vec<usize> = (step * 64..(step + 1) * 64).collect();
        let (images, labels) = data.train.batch(&indices);
        let a = cpu.step(images.clone(), &labels).unwrap();
        let b = gpu_trainer.step(images, &labels).unwrap();
        let error = (a.loss - b.loss).abs() / a.loss.abs();
        worst = worst.max(error);
        assert!(
            error <= 1e-3,
            "{preset}: step {step}: CPU loss {} and GPU loss {} differ by {error:e}",
            a.loss,
            b.loss
        );
    }
    // The weights come back for evaluation, and agree too.
    gpu_trainer.sync().unwrap();
    let (cpu_eval, gpu_eval) = (cpu.evaluate(&data.test).unwrap(), gpu_trainer.evaluate(&data.test).unwrap());
    let error = (cpu_eval.loss - gpu_eval.loss).abs() / cpu_eval.loss;
    assert!(
        error <= 1e-3,
        "{preset}: test loss {} on the CPU, {} after GPU training",
        cpu_eval.loss,
        gpu_eval.loss
    );
    eprintln!("{preset}: 50 steps, worst loss difference {worst:e} relative, test loss {}", gpu_eval.loss);
}

#[test]
fn mlp_follows_the_cpu() {
    follow_cpu("mlp", OptimizerSpec::adam(1e-3), None);
}

#[test]
fn mlp_with_sgd_and_clipping_follows_the_cpu() {
    follow_cpu("mlp", OptimizerSpec::Sgd { lr: 0.05, momentum: 0.9, weight_decay: 1e-4 }, Some(0.5));
}

#[test]
fn cnn_follows_the_cpu() {
    follow_cpu("cnn", OptimizerSpec::adam(1e-3), None);
}

#[test]
fn lstm_follows_the_cpu() {
    follow_cpu("lstm", OptimizerSpec::adam(1e-3), Some(1.0));
}

#[test]
fn gru_follows_the_cpu() {
    follow_cpu("gru", OptimizerSpec::adam(1e-3), None);
}
