//! The WebGPU backend against the CPU backend, natively through wgpu on whatever adapter the
//! machine has (Mesa's lavapipe, a CPU Vulkan, where there is no GPU: the README's test
//! command installs it).
//!
//! - Every WGSL file parses and validates with naga.
//! - Every op's forward kernel and backward rule, on random inputs of awkward sizes (1, 7, 33,
//!   257), matches the CPU within a relative error of 1e-4: the output, and the gradient of
//!   `sum(w * y)` for random `w` with respect to every input; the wide products on both
//!   matmul kernels.
//! - Fifty seeded training steps of each preset on the GPU follow the CPU's loss curve within
//!   1e-3 relative (twenty of 16 for the resnet, whose steps are the slowest on a software
//!   adapter).
//!
//! Without an adapter these tests fail, saying so: they never pass by skipping.

#![cfg(all(feature = "webgpu", not(target_arch = "wasm32")))]

mod common;

use std::path::Path;
use std::sync::OnceLock;

use common::gpu_cases::{cases, compare};
use ferrograd::backend::gpu::{Gpu, Kernel};
use ferrograd::data::load_mnist;
use ferrograd::nn::ModelSpec;
use ferrograd::optim::{Horizon, LrSchedule, OptimizerSpec};
use ferrograd::train::Trainer;

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

#[test]
fn every_op_matches_the_cpu() {
    every_op_matches_the_cpu_on(gpu());
}

/// The same with the products of 64 rows and columns or more on matmul_tiled.wgsl, which a
/// software adapter does not use by default.
#[test]
fn every_op_matches_the_cpu_with_tiled_products() {
    every_op_matches_the_cpu_on(&gpu().clone().with_tiled_products(true));
}

fn every_op_matches_the_cpu_on(gpu: &Gpu) {
    let failures: Vec<String> =
        cases().iter().filter_map(|case| pollster::block_on(compare(gpu, case)).err()).collect();
    assert!(failures.is_empty(), "{} ops differ:\n{}", failures.len(), failures.join("\n"));
}

/// Fifty steps of `preset` with `optimizer` from the same seed on the CPU and on the GPU.
fn follow_cpu(preset: &str, optimizer: OptimizerSpec, clip_norm: Option<f32>) {
    let setup = |t: &mut Trainer| t.set_clip_norm(clip_norm).unwrap();
    follow_cpu_with(preset, ModelSpec::preset(preset).unwrap(), optimizer, setup, (50, 64));
}

/// `steps` steps of `spec` on batches of `batch`, from the same seed on the CPU and on the GPU.
fn follow_cpu_with(
    preset: &str,
    spec: ModelSpec,
    optimizer: OptimizerSpec,
    setup: impl Fn(&mut Trainer),
    (steps, batch): (usize, usize),
) {
    let data = load_mnist(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist"))
        .expect("the bundled MNIST sample (scripts/test.sh fetches it)");
    let mut cpu = Trainer::new(spec.clone(), &optimizer, 3).unwrap();
    let mut gpu_trainer = Trainer::new(spec, &optimizer, 3).unwrap();
    setup(&mut cpu);
    setup(&mut gpu_trainer);
    gpu_trainer.use_gpu(Gpu::blocking().unwrap(), batch).unwrap();
    let mut worst = 0f32;
    for step in 0..steps {
        let indices: Vec<usize> = (step * batch..(step + 1) * batch).collect();
        let (images, labels) = data.train.batch(&indices);
        // Batch norm's averages re-estimated on the CPU go to the GPU, whose last steps move
        // them on from there.
        if step + 2 == steps && cpu.model().has_batch_norm() {
            gpu_trainer.sync().unwrap();
            let calibration =
                || (0..4).map(|b| data.train.batch(&(b * 32..b * 32 + 32).collect::<Vec<_>>()).0);
            cpu.recalibrate_batch_norm(calibration()).unwrap();
            gpu_trainer.recalibrate_batch_norm(calibration()).unwrap();
        }
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
    eprintln!(
        "{preset}: {steps} steps, worst loss difference {worst:e} relative, test loss {}",
        gpu_eval.loss
    );
}

#[test]
fn training_allocates_nothing_after_the_first_step_and_sync() {
    let data = load_mnist(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist")).unwrap();
    let gpu = Gpu::blocking().unwrap();
    let mut trainer = Trainer::new(ModelSpec::preset("cnn").unwrap(), &OptimizerSpec::adam(1e-3), 0).unwrap();
    trainer.use_gpu(gpu.clone(), 64).unwrap();
    let mut batches =
        (0..).map(|b: usize| data.train.batch(&(b * 64 % 7936..b * 64 % 7936 + 64).collect::<Vec<_>>()));
    let (images, labels) = batches.next().unwrap();
    trainer.step(images, &labels).unwrap();
    trainer.sync().unwrap();
    let created = gpu.buffers_created();
    for _ in 0..20 {
        let (images, labels) = batches.next().unwrap();
        trainer.step(images, &labels).unwrap();
    }
    trainer.sync().unwrap();
    assert_eq!(gpu.buffers_created(), created, "buffers were created after the first step");
}

#[test]
fn mlp_follows_the_cpu() {
    follow_cpu("mlp", OptimizerSpec::adam(1e-3), None);
}

/// The schedule's rate reaches the GPU's update step by step: a warm-up from a tenth of the
/// rate and a cosine down to a hundredth of it within the fifty steps.
#[test]
fn mlp_with_a_cosine_schedule_follows_the_cpu() {
    let schedule = LrSchedule::Cosine { warmup: 1.0, min_lr: 3e-5 };
    let setup =
        |t: &mut Trainer| t.set_lr_schedule(schedule, Horizon { steps_per_epoch: 10, epochs: 5 }).unwrap();
    follow_cpu_with(
        "mlp + cosine",
        ModelSpec::preset("mlp").unwrap(),
        OptimizerSpec::adam(3e-3),
        setup,
        (50, 64),
    );
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

/// Every other layer: batch norm (whose running statistics the GPU computes too, and which the
/// test loss in inference mode depends on), average pooling, dropout, leaky relu, sigmoid,
/// standardised input.
#[test]
fn the_other_layers_follow_the_cpu() {
    let spec = ModelSpec::from_json(
        r#"{"input": [1, 28, 28], "normalize": {"mean": 0.1307, "std": 0.3081}, "layers": [
            {"type": "conv2d", "filters": 6, "kernel_size": 3, "stride": 2, "padding": "same"},
            {"type": "batch_norm"}, {"type": "leaky_relu", "alpha": 0.1},
            {"type": "avg_pool2d", "pool_size": 2},
            {"type": "flatten"}, {"type": "dropout", "rate": 0.2},
            {"type": "dense", "units": 32, "activation": "sigmoid"}, {"type": "batch_norm"},
            {"type": "dense", "units": 10}]}"#,
    )
    .unwrap();
    follow_cpu_with("other layers", spec, OptimizerSpec::adam(1e-3), |_| {}, (50, 64));
}

/// Layers whose bias and activation the GPU step runs in their products' epilogues, one for
/// each kind of activation slope: leaky relu and GELU need the value before the activation,
/// kept by the epilogue; the last convolution's product is split along k (4 x 4 x 128 values
/// per output), so its bias and activation run as their own dispatches, differentiated
/// fused.
#[test]
fn fused_layers_follow_the_cpu() {
    let spec = ModelSpec::from_json(
        r#"{"input": [1, 28, 28], "layers": [
            {"type": "conv2d", "filters": 6, "kernel_size": 3, "activation": "leaky_relu"},
            {"type": "conv2d", "filters": 128, "kernel_size": 6, "stride": 6, "activation": "tanh"},
            {"type": "conv2d", "filters": 8, "kernel_size": 4, "activation": "sigmoid"},
            {"type": "flatten"},
            {"type": "dense", "units": 24, "activation": "gelu"},
            {"type": "dense", "units": 16, "activation": "leaky_relu", "bias": false},
            {"type": "dense", "units": 10}]}"#,
    )
    .unwrap();
    follow_cpu_with("fused layers", spec, OptimizerSpec::adam(1e-3), |_| {}, (30, 16));
}

#[test]
fn gru_follows_the_cpu() {
    follow_cpu("gru", OptimizerSpec::adam(1e-3), None);
}

#[test]
fn vit_follows_the_cpu() {
    follow_cpu("vit", OptimizerSpec::adam(1e-3), None);
}

/// Keras's convnet: 32 and 64 filters of 3x3, dropout; twenty steps of 16 on a software
/// adapter, as for the resnet.
#[test]
fn convnet_follows_the_cpu() {
    let spec = ModelSpec::preset("convnet").unwrap();
    follow_cpu_with("convnet", spec, OptimizerSpec::adam(1e-3), |_| {}, (20, 16));
}

/// Twenty steps of 16: its convolutions over 28x28 planes are by far the slowest work of any
/// preset on a software adapter (fifty steps of 64 took minutes on lavapipe).
#[test]
fn resnet_follows_the_cpu() {
    let spec = ModelSpec::preset("resnet").unwrap();
    follow_cpu_with("resnet", spec, OptimizerSpec::adam(1e-3), |_| {}, (20, 16));
}

/// `--backend auto` times the model on the CPU and on the GPU and says what it measured; on a
/// software adapter (lavapipe, where these tests run without a GPU) the CPU wins by far.
#[test]
fn auto_measures_the_gpu_against_the_cpu_before_it_chooses() {
    use ferrograd::measure::StepTimer;
    let spec = ModelSpec::preset("mlp").unwrap();
    let mut timer =
        StepTimer::new(spec, &OptimizerSpec::adam(1e-3), 32).unwrap().on_gpu(gpu().clone()).unwrap();
    assert!(timer.samples_per_second(0.05).unwrap() > 0.0);
    // At least the warm-up step (which alone may outlast the budget on a busy machine).
    assert!(timer.finished().unwrap() >= 1);

    let data = tiny_mnist("auto");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ferrograd"))
        .args(["train", "--data"])
        .arg(&data)
        .args(["--epochs", "1", "--backend", "auto"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let ratio: f64 = stderr
        .split("measured ")
        .nth(1)
        .and_then(|rest| rest.split('x').next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no measured ratio in: {stderr}"));
    if gpu().is_software() {
        assert!(ratio < 1.0, "{stderr}");
        assert!(stderr.contains("training on the CPU: the GPU"), "{stderr}");
    } else {
        assert_eq!(
            stderr.contains("training on the CPU"),
            ratio < ferrograd::measure::GPU_MARGIN,
            "{stderr}"
        );
    }
}

/// A step's cost on the GPU, as the benchmark reports it: the batch, the labels, dropout's
/// mask and the optimizer's three step values go up; the loss and accuracy come back.
#[test]
fn a_step_reports_its_dispatches_and_the_bytes_it_moves() {
    let data = load_mnist(&tiny_mnist("cost")).unwrap();
    let (images, labels) = data.train.batch(&(0..32).collect::<Vec<_>>());
    let mut trainer =
        Trainer::new(ModelSpec::preset("convnet").unwrap(), &OptimizerSpec::adam(1e-3), 0).unwrap();
    trainer.use_gpu(gpu().clone(), 32).unwrap();
    // The step is compiled for the batch size as training moves to the GPU; none for others.
    assert_eq!(trainer.gpu_step_cost(16), None);
    trainer.step(images, &labels).unwrap();
    let cost = trainer.gpu_step_cost(32).unwrap();
    assert_eq!(cost.uploaded, 4 * (32 * 784 + 32 + 32 * 1600 + 3));
    assert_eq!(cost.downloaded, 8);
    // A dispatch forward and one backward for each of its four layers (the poolings' within
    // the convolutions', the dropout's its own), and the optimizer's, at the least.
    assert!(cost.dispatches > 4 * 2, "{cost:?}");
}

/// A folder of its own holding a small MNIST-shaped data set (300 training and 300 test images
/// of a fixed pattern, uncompressed IDX), so that an epoch ends soon.
fn tiny_mnist(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrograd-gpu-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let idx = |dims: &[u32], body: Vec<u8>| {
        let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
        dims.iter().for_each(|d| bytes.extend(d.to_be_bytes()));
        bytes.extend(body);
        bytes
    };
    let images = idx(&[300, 28, 28], (0..300 * 784).map(|i| (i * 7919 % 256) as u8).collect());
    let labels = idx(&[300], (0..300).map(|i| (i % 10) as u8).collect());
    for split in ["train", "t10k"] {
        std::fs::write(dir.join(format!("{split}-images-idx3-ubyte")), &images).unwrap();
        std::fs::write(dir.join(format!("{split}-labels-idx1-ubyte")), &labels).unwrap();
    }
    dir
}

/// Fusion at least halves the dispatches of a step of every preset: one optimizer dispatch
/// for every parameter, each layer's bias and activation in its product's epilogue, and their
/// gradients (with a following pooling's) in one dispatch; a recurrent step's gates, a layer
/// norm and a batch norm one op each way. One dispatch per primitive op, as the step compiler
/// had before, took these counts at batch 64 (now 9, 20, 22, 204, 176, 131 and 121).
#[test]
fn fusion_halves_the_dispatches_of_a_step() {
    for (preset, unfused) in [
        ("mlp", 19),
        ("cnn", 41),
        ("convnet", 44),
        ("lstm", 1080),
        ("gru", 1333),
        ("vit", 313),
        ("resnet", 398),
    ] {
        let mut trainer =
            Trainer::new(ModelSpec::preset(preset).unwrap(), &OptimizerSpec::adam(1e-3), 0).unwrap();
        trainer.use_gpu(gpu().clone(), 64).unwrap();
        let cost = trainer.gpu_step_cost(64).unwrap();
        assert!(2 * cost.dispatches <= unfused, "{preset}: {cost:?}, {unfused} unfused");
    }
}
