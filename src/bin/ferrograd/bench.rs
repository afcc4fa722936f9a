//! `ferrograd bench`: training throughput of the presets and matmul speed, natively, on the
//! CPU and on the GPU when wgpu finds an adapter (a software one included, named as such).
//! The browser benchmark (bench/) measures the same in the page.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use ferrograd::backend::cpu;
use ferrograd::data;
use ferrograd::nn::ModelSpec;
use ferrograd::optim::OptimizerSpec;
use ferrograd::train::Trainer;
use ndarray::Array2;
use serde::Serialize;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Folder with the four standard MNIST files.
    #[arg(long, default_value = "data/mnist")]
    data: PathBuf,
    /// Length of each measuring window; the median of three windows is reported.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// The presets to train, comma-separated (by default mlp, cnn, convnet, lstm, resnet and vit);
    /// `none` measures only the matmul.
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
}

#[derive(Serialize)]
struct Report {
    /// The GPU adapter measured, or why there is none.
    gpu: String,
    training: Vec<Training>,
    matmul: Vec<Matmul>,
}

#[derive(Serialize)]
struct Training {
    model: &'static str,
    backend: &'static str,
    batch_size: usize,
    samples_per_second: f64,
    /// On the GPU: commands and bytes between the CPU and the GPU per step.
    step: Option<GpuStep>,
}

/// What a training step on the GPU submits and moves (see `ferrograd::gpu_step::StepCost`).
#[derive(Serialize)]
pub struct GpuStep {
    dispatches: usize,
    clears: usize,
    uploaded_bytes: usize,
    downloaded_bytes: usize,
}

#[derive(Serialize)]
struct Matmul {
    size: usize,
    backend: &'static str,
    gflops: f64,
}

const WINDOWS: usize = 3;
const BATCH: usize = 64;
/// The presets measured, as in the browser benchmark.
const MODELS: [&str; 6] = ["mlp", "cnn", "convnet", "lstm", "resnet", "vit"];

pub fn bench(args: BenchArgs) -> Result<()> {
    let mnist = data::load_mnist(&args.data)?;
    let gpu = gpu::adapter();
    let mut training = Vec::new();
    let mut matmul = Vec::new();
    if let Some(unknown) = args.models.iter().find(|m| *m != "none" && !MODELS.contains(&m.as_str())) {
        anyhow::bail!("--models: no preset {unknown} in the benchmark; it has {}", MODELS.join(", "));
    }
    let models: Vec<&'static str> =
        MODELS.into_iter().filter(|m| args.models.is_empty() || args.models.iter().any(|a| a == m)).collect();
    for &model in &models {
        for backend in ["cpu", "gpu"] {
            let mut trainer =
                Trainer::new(ModelSpec::preset(model).expect("a preset"), &OptimizerSpec::adam(1e-3), 0)?;
            if backend == "gpu" && !gpu::train_on_gpu(&mut trainer, BATCH)? {
                continue;
            }
            let samples_per_second = throughput(&mut trainer, &mnist.train, args.seconds)?;
            let step = gpu::step(&trainer, BATCH);
            training.push(Training { model, backend, batch_size: BATCH, samples_per_second, step });
        }
    }
    for size in [256, 1024, 2048] {
        matmul.push(Matmul { size, backend: "cpu", gflops: matmul_gflops(size, args.seconds) });
        if let Some(gflops) = gpu::matmul_gflops(size, args.seconds)? {
            matmul.push(Matmul { size, backend: "gpu", gflops });
        }
    }
    let report = Report { gpu, training, matmul };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!("gpu: {}\n", report.gpu);
    println!(
        "{:<8} {:>14} {:>14} {:>8} {:>14} {:>18}",
        "model", "cpu samples/s", "gpu samples/s", "gpu/cpu", "gpu dispatches", "gpu bytes up/down"
    );
    for &model in &models {
        let rate = |backend| report.training.iter().find(|t| t.model == model && t.backend == backend);
        let (cpu, gpu) =
            (rate("cpu").map(|t| t.samples_per_second), rate("gpu").map(|t| t.samples_per_second));
        let ratio = cpu.zip(gpu).map_or("-".into(), |(c, g)| format!("{:.2}x", g / c));
        let gpu = gpu.map_or("-".into(), |g| format!("{g:.0}"));
        let step = rate("gpu").and_then(|t| t.step.as_ref());
        let dispatches = step.map_or("-".into(), |s| format!("{} + {} clears", s.dispatches, s.clears));
        let bytes = step.map_or("-".into(), |s| format!("{} / {}", s.uploaded_bytes, s.downloaded_bytes));
        println!(
            "{model:<8} {:>14.0} {gpu:>14} {ratio:>8} {dispatches:>14} {bytes:>18}",
            cpu.unwrap_or(f64::NAN)
        );
    }
    println!("\n{:<6} {:>12} {:>12}", "matmul", "cpu GFLOP/s", "gpu GFLOP/s");
    for size in [256, 1024, 2048] {
        let rate =
            |backend| report.matmul.iter().find(|m| m.size == size && m.backend == backend).map(|m| m.gflops);
        let gpu = rate("gpu").map_or("-".into(), |g| format!("{g:.1}"));
        println!("{size:<6} {:>12.1} {gpu:>12}", rate("cpu").unwrap_or(f64::NAN));
    }
    Ok(())
}

/// Median training samples/s over three windows of `seconds`, after one warm-up step (which
/// allocates, and on the GPU compiles the step).
fn throughput(trainer: &mut Trainer, train: &data::Dataset, seconds: f64) -> Result<f64> {
    {
        let order: Vec<usize> = (0..train.len()).collect();
        let mut batches = order.chunks(BATCH).cycle();
        let (images, labels) = train.batch(batches.next().expect("data"));
        trainer.step(images, &labels)?;
        let mut rates = Vec::with_capacity(WINDOWS);
        for _ in 0..WINDOWS {
            let (start, mut samples) = (Instant::now(), 0);
            while start.elapsed().as_secs_f64() < seconds {
                let (images, labels) = train.batch(batches.next().expect("cycles"));
                samples += trainer.step(images, &labels)?.samples;
            }
            rates.push(samples as f64 / start.elapsed().as_secs_f64());
        }
        Ok(median(rates))
    }
}

#[cfg(feature = "webgpu")]
mod gpu {
    use std::time::Instant;

    use anyhow::Result;
    use ferrograd::backend::gpu::Gpu;
    use ferrograd::train::Trainer;

    /// The adapter, or why there is none.
    pub fn adapter() -> String {
        match Gpu::blocking() {
            Ok(gpu) if gpu.is_software() => {
                format!("{} (software: says nothing of a real GPU)", gpu.adapter())
            }
            Ok(gpu) => gpu.adapter().to_string(),
            Err(e) => e.to_string(),
        }
    }

    /// What a step at `batch` cost on the GPU, once one ran there.
    pub fn step(trainer: &Trainer, batch: usize) -> Option<super::GpuStep> {
        let cost = trainer.gpu_step_cost(batch)?;
        Some(super::GpuStep {
            dispatches: cost.dispatches,
            clears: cost.clears,
            uploaded_bytes: cost.uploaded,
            downloaded_bytes: cost.downloaded,
        })
    }

    /// Moves `trainer` onto the GPU; false when there is none.
    pub fn train_on_gpu(trainer: &mut Trainer, batch: usize) -> Result<bool> {
        let Ok(gpu) = Gpu::blocking() else { return Ok(false) };
        trainer.use_gpu(gpu, batch)?;
        Ok(true)
    }

    /// Median GFLOP/s of the matmul kernel on `size` x `size` matrices, None without a GPU.
    pub fn matmul_gflops(size: usize, seconds: f64) -> Result<Option<f64>> {
        let Ok(gpu) = Gpu::blocking() else { return Ok(None) };
        let a: Vec<f32> = (0..size * size).map(|i| (i % 11) as f32 / 11.0).collect();
        let (a, b, c) = (gpu.upload(&a), gpu.upload(&a), gpu.zeros(size * size));
        let product = gpu.square_product(size, &a, &b, &c);
        gpu.run(&[], &[&product]);
        gpu.wait()?;
        let rates = (0..super::WINDOWS)
            .map(|_| {
                let (start, mut products) = (Instant::now(), 0u32);
                while products == 0 || start.elapsed().as_secs_f64() < seconds / 2.0 {
                    gpu.run(&[], &[&product]);
                    gpu.wait()?;
                    products += 1;
                }
                Ok(2.0 * (size as f64).powi(3) * f64::from(products) / start.elapsed().as_secs_f64() / 1e9)
            })
            .collect::<Result<Vec<f64>, ferrograd::Error>>()?;
        Ok(Some(super::median(rates)))
    }
}

#[cfg(not(feature = "webgpu"))]
mod gpu {
    use anyhow::Result;
    use ferrograd::train::Trainer;

    pub fn adapter() -> String {
        "none: built without the `webgpu` feature".into()
    }

    pub fn train_on_gpu(_: &mut Trainer, _: usize) -> Result<bool> {
        Ok(false)
    }

    pub fn step(_: &Trainer, _: usize) -> Option<super::GpuStep> {
        None
    }

    pub fn matmul_gflops(_: usize, _: f64) -> Result<Option<f64>> {
        Ok(None)
    }
}

/// Median GFLOP/s of `size` x `size` products (2 n^3 flops each) over three windows.
fn matmul_gflops(size: usize, seconds: f64) -> f64 {
    let a = Array2::from_shape_fn((size, size), |(i, j)| ((i * 7 + j * 3) % 11) as f32 / 11.0);
    let b = a.t().to_owned();
    let rates = (0..WINDOWS)
        .map(|_| {
            let (start, mut products) = (Instant::now(), 0u32);
            while products == 0 || start.elapsed().as_secs_f64() < seconds / 2.0 {
                std::hint::black_box(cpu::matmul(&a.view(), &b.view()));
                products += 1;
            }
            2.0 * (size as f64).powi(3) * f64::from(products) / start.elapsed().as_secs_f64() / 1e9
        })
        .collect();
    median(rates)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
