//! `ferrograd bench`: training throughput of the presets and matmul speed, natively. The
//! browser benchmark (bench/) measures the same in the page.

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
}

#[derive(Serialize)]
struct Report {
    training: Vec<Training>,
    matmul: Vec<Matmul>,
}

#[derive(Serialize)]
struct Training {
    model: &'static str,
    batch_size: usize,
    samples_per_second: f64,
}

#[derive(Serialize)]
struct Matmul {
    size: usize,
    gflops: f64,
}

const WINDOWS: usize = 3;
const BATCH: usize = 64;

pub fn bench(args: BenchArgs) -> Result<()> {
    let mnist = data::load_mnist(&args.data)?;
    let mut training = Vec::new();
    for model in ["mlp", "cnn", "lstm"] {
        let spec = ModelSpec::preset(model).expect("a preset");
        let mut trainer = Trainer::new(spec, &OptimizerSpec::adam(1e-3), 0)?;
        let order: Vec<usize> = (0..mnist.train.len()).collect();
        let mut batches = order.chunks(BATCH).cycle();
        // One warm-up step, so allocation of the first step is not measured.
        let (images, labels) = mnist.train.batch(batches.next().expect("data"));
        trainer.step(images, &labels)?;
        let mut rates = Vec::with_capacity(WINDOWS);
        for _ in 0..WINDOWS {
            let (start, mut samples) = (Instant::now(), 0);
            while start.elapsed().as_secs_f64() < args.seconds {
                let (images, labels) = mnist.train.batch(batches.next().expect("cycles"));
                samples += trainer.step(images, &labels)?.samples;
            }
            rates.push(samples as f64 / start.elapsed().as_secs_f64());
        }
        training.push(Training { model, batch_size: BATCH, samples_per_second: median(rates) });
    }
    let matmul =
        [256, 1024, 2048].map(|size| Matmul { size, gflops: matmul_gflops(size, args.seconds) }).into();
    let report = Report { training, matmul };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{:<6} {:>14}", "model", "samples/s");
        for t in &report.training {
            println!("{:<6} {:>14.0}", t.model, t.samples_per_second);
        }
        println!("\n{:<6} {:>14}", "matmul", "GFLOP/s");
        for m in &report.matmul {
            println!("{:<6} {:>14.1}", m.size, m.gflops);
        }
    }
    Ok(())
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
