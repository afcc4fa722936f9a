//! Command-line parsing and the commands.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use ferrograd::checkpoint;
use ferrograd::data::{self, Dataset};
use ferrograd::metrics::ConfusionMatrix;
use ferrograd::nn::{ModelSpec, Normalize};
use ferrograd::optim::OptimizerSpec;
use ferrograd::train::{Evaluation, Trainer};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

#[derive(Parser)]
#[command(name = "ferrograd", version, about = "Train, evaluate and save small neural networks on MNIST")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model and report its test accuracy.
    Train(TrainArgs),
    /// Evaluate a saved model on the test set.
    Eval(EvalArgs),
    /// Export a saved model to ONNX.
    Export(ExportArgs),
    /// Measure training throughput and matmul speed on this machine.
    Bench(crate::bench::BenchArgs),
    /// Serve the playground page on this machine.
    Serve(crate::serve::ServeArgs),
}

#[derive(clap::Args)]
struct TrainArgs {
    /// Folder with the four standard MNIST files, gzipped or not.
    #[arg(long)]
    data: PathBuf,
    /// A preset name (mlp, cnn, lstm, gru, resnet, vit) or a JSON model spec file.
    #[arg(long, default_value = "mlp")]
    model: String,
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, value_enum, default_value_t = OptimizerName::Adam)]
    optimizer: OptimizerName,
    /// Learning rate [default: 0.001 for adam, 0.01 for sgd].
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f32>,
    /// Seeds the weights, the data order and dropout.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Input normalisation: unit keeps pixels in [0, 1], standard applies MNIST's mean and
    /// std inside the model (and so in saved models too).
    #[arg(long, value_enum, default_value_t = Normalization::Unit)]
    normalize: Normalization,
    /// Clip gradients to this global norm before each step.
    #[arg(long)]
    clip_norm: Option<f32>,
    /// Drop unreadable training images (blank or noise) before training.
    #[arg(long)]
    clean: bool,
    /// Shift and rotate training images at random.
    #[arg(long)]
    augment: bool,
    /// Write the trained model and its training state here (safetensors, with the spec in
    /// its metadata), to evaluate, export or resume.
    #[arg(long)]
    save: Option<PathBuf>,
    /// Continue training a file written by --save (its model and settings win over --model,
    /// --optimizer, --lr, --normalize, --augment and --clip-norm).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Where training steps run: auto takes a hardware GPU when wgpu finds one (through
    /// Vulkan) and the CPU otherwise; gpu takes any adapter, a software one included.
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    backend: Backend,
    /// Print one JSON object on stdout instead of progress and tables.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Auto,
    Cpu,
    Gpu,
}

#[derive(clap::Args)]
struct EvalArgs {
    /// Folder with the four standard MNIST files, gzipped or not.
    #[arg(long)]
    data: PathBuf,
    /// A model saved by `ferrograd train --save`.
    #[arg(long)]
    load: PathBuf,
    /// Print one JSON object on stdout instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ExportArgs {
    /// A model saved by `ferrograd train --save`.
    #[arg(long)]
    load: PathBuf,
    /// Where to write the ONNX file.
    #[arg(long)]
    onnx: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum Normalization {
    Unit,
    Standard,
}

#[derive(Clone, Copy, ValueEnum)]
enum OptimizerName {
    Adam,
    Sgd,
}

#[derive(Serialize)]
struct EpochRecord {
    epoch: usize,
    train_loss: f32,
    train_accuracy: f32,
    test_loss: f32,
    test_accuracy: f32,
    seconds: f64,
}

#[derive(Serialize)]
struct TrainReport<'a> {
    backend: &'a str,
    model: &'a ModelSpec,
    optimizer: &'a OptimizerSpec,
    epochs: usize,
    batch_size: usize,
    seed: u64,
    dropped: usize,
    augment: bool,
    final_loss: f32,
    test_loss: f32,
    test_accuracy: f32,
    samples_per_second: f64,
    confusion_matrix: &'a [Vec<u64>],
    per_class: &'a [ferrograd::metrics::ClassScores],
    history: &'a [EpochRecord],
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(args) => train(args),
        Command::Eval(args) => eval(args),
        Command::Export(args) => export(args),
        Command::Bench(args) => crate::bench::bench(args),
        Command::Serve(args) => crate::serve::serve(args),
    }
}

fn train(args: TrainArgs) -> Result<()> {
    let mut spec = load_spec(&args.model)?;
    if let Normalization::Standard = args.normalize {
        spec.normalize = Some(Normalize::MNIST);
    }
    let optimizer = match args.optimizer {
        OptimizerName::Adam => OptimizerSpec::adam(args.lr.unwrap_or(1e-3)),
        OptimizerName::Sgd => OptimizerSpec::sgd(args.lr.unwrap_or(1e-2)),
    };
    if args.epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let mut mnist = load_data(&args.data)?;
    let mut dropped = 0;
    if args.clean {
        (mnist.train, dropped) = mnist.train.cleaned();
        check_not_empty(&mnist.train, "cleaned training", &args.data)?;
        if !args.json {
            eprintln!("cleaning dropped {dropped} unreadable training images");
        }
    }
    let mut trainer = match &args.resume {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            checkpoint::load_trainer(&bytes).with_context(|| format!("resuming from {}", path.display()))?
        }
        None => {
            let mut trainer = Trainer::new(spec, &optimizer, args.seed)?;
            trainer.set_augment(args.augment);
            trainer.set_clip_norm(args.clip_norm)?;
            trainer
        }
    };
    choose_backend(&mut trainer, args.backend, args.batch_size, args.json)?;
    let backend = trainer.backend();
    let spec = trainer.model().spec().clone();
    let optimizer = trainer.training_state().0.optimizer;
    let mut history = Vec::with_capacity(args.epochs);
    let started = Instant::now();
    let mut trained_samples = 0usize;
    for epoch in 1..=args.epochs {
        let bar = progress_bar(args.json, mnist.train.len(), epoch, args.epochs);
        let epoch_start = Instant::now();
        let stats = trainer.train_epoch(&mnist.train, args.batch_size, |step| {
            bar.inc(step.samples as u64);
            let rate = bar.position() as f64 / epoch_start.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("loss {:.4}  acc {:.3}  {rate:.0} samples/s", step.loss, step.accuracy));
        })?;
        let seconds = epoch_start.elapsed().as_secs_f64();
        trained_samples += mnist.train.len();
        bar.finish_and_clear();
        trainer.sync()?;
        let test = trainer.evaluate(&mnist.test)?;
        if !args.json {
            eprintln!(
                "epoch {epoch}/{}: train loss {:.4} acc {:.4} | test loss {:.4} acc {:.4} | {:.0} samples/s",
                args.epochs,
                stats.loss,
                stats.accuracy,
                test.loss,
                test.accuracy,
                mnist.train.len() as f64 / seconds
            );
        }
        history.push(EpochRecord {
            epoch,
            train_loss: stats.loss,
            train_accuracy: stats.accuracy,
            test_loss: test.loss,
            test_accuracy: test.accuracy,
            seconds,
        });
    }
    let samples_per_second = trained_samples as f64 / started.elapsed().as_secs_f64();
    let test = trainer.evaluate(&mnist.test)?;
    if let Some(path) = &args.save {
        std::fs::write(path, checkpoint::save_trainer(&trainer))
            .with_context(|| format!("writing the model to {}", path.display()))?;
    }
    if args.json {
        let report = TrainReport {
            backend: &backend,
            model: &spec,
            optimizer: &optimizer,
            epochs: args.epochs,
            batch_size: args.batch_size,
            seed: args.seed,
            dropped,
            augment: args.augment,
            final_loss: history.last().map_or(f32::NAN, |h| h.train_loss),
            test_loss: test.loss,
            test_accuracy: test.accuracy,
            samples_per_second,
            confusion_matrix: test.confusion_matrix.counts(),
            per_class: &test.per_class,
            history: &history,
        };
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_evaluation(&test);
        println!("{samples_per_second:.0} samples/s over {} epochs", args.epochs);
        if let Some(path) = &args.save {
            println!("saved to {}", path.display());
        }
    }
    Ok(())
}

/// Moves training onto the GPU as `--backend` asks, saying where it runs and why.
#[cfg(feature = "webgpu")]
fn choose_backend(trainer: &mut Trainer, backend: Backend, batch_size: usize, quiet: bool) -> Result<()> {
    use ferrograd::backend::gpu::Gpu;
    let note = |message: String| {
        if !quiet {
            eprintln!("{message}");
        }
    };
    if backend == Backend::Cpu {
        return Ok(());
    }
    let gpu = match (Gpu::blocking(), backend) {
        (Ok(gpu), Backend::Gpu) => gpu,
        (Ok(gpu), _) if !gpu.is_software() => gpu,
        (Ok(gpu), _) => {
            note(format!(
                "training on the CPU: the only GPU is {}, a software one (--backend gpu takes it)",
                gpu.adapter()
            ));
            return Ok(());
        }
        (Err(e), Backend::Gpu) => return Err(e).context("--backend gpu"),
        (Err(e), _) => {
            note(format!("training on the CPU: {e}"));
            return Ok(());
        }
    };
    match trainer.use_gpu(gpu, batch_size) {
        Ok(()) => note(format!("training on the {}", trainer.backend())),
        Err(e) if backend == Backend::Gpu => return Err(e).context("--backend gpu"),
        Err(e) => note(format!("training on the CPU: {e}")),
    }
    Ok(())
}

#[cfg(not(feature = "webgpu"))]
fn choose_backend(_: &mut Trainer, backend: Backend, _: usize, _: bool) -> Result<()> {
    if backend == Backend::Gpu {
        bail!("--backend gpu: this build has no GPU backend (build with the `webgpu` feature)");
    }
    Ok(())
}

fn eval(args: EvalArgs) -> Result<()> {
    let bytes = std::fs::read(&args.load).with_context(|| format!("reading {}", args.load.display()))?;
    let model = checkpoint::load(&bytes).with_context(|| format!("loading {}", args.load.display()))?;
    let spec = model.spec().clone();
    let mnist = load_data(&args.data)?;
    // The optimizer is never stepped; a trainer is just the evaluation driver.
    let trainer = Trainer::from_model(model, &OptimizerSpec::adam(1e-3), 0)?;
    let test = trainer.evaluate(&mnist.test)?;
    if args.json {
        #[derive(Serialize)]
        struct EvalReport<'a> {
            model: &'a ModelSpec,
            test_loss: f32,
            test_accuracy: f32,
            confusion_matrix: &'a [Vec<u64>],
            per_class: &'a [ferrograd::metrics::ClassScores],
        }
        let report = EvalReport {
            model: &spec,
            test_loss: test.loss,
            test_accuracy: test.accuracy,
            confusion_matrix: test.confusion_matrix.counts(),
            per_class: &test.per_class,
        };
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_evaluation(&test);
    }
    Ok(())
}

fn export(args: ExportArgs) -> Result<()> {
    let bytes = std::fs::read(&args.load).with_context(|| format!("reading {}", args.load.display()))?;
    let model = checkpoint::load(&bytes).with_context(|| format!("loading {}", args.load.display()))?;
    let onnx = ferrograd::export::onnx::export(&model)?;
    std::fs::write(&args.onnx, onnx).with_context(|| format!("writing {}", args.onnx.display()))?;
    eprintln!(
        "wrote {} (input `pixels` [N, {}], outputs `logits` and `probabilities`)",
        args.onnx.display(),
        model.spec().input.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
    );
    Ok(())
}

/// A preset by name, or else a JSON spec file.
fn load_spec(model: &str) -> Result<ModelSpec> {
    if let Some(spec) = ModelSpec::preset(model) {
        return Ok(spec);
    }
    let path = Path::new(model);
    if !path.exists() {
        bail!(
            "--model {model}: neither a preset ({}) nor an existing JSON file",
            ModelSpec::PRESETS.join(", ")
        );
    }
    let json = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    ModelSpec::from_json(&json).with_context(|| format!("{}", path.display()))
}

fn load_data(dir: &Path) -> Result<data::Mnist> {
    let mnist = data::load_mnist(dir)?;
    check_not_empty(&mnist.train, "training", dir)?;
    check_not_empty(&mnist.test, "test", dir)?;
    Ok(mnist)
}

fn check_not_empty(set: &Dataset, which: &str, dir: &Path) -> Result<()> {
    if set.is_empty() {
        bail!("{}: the {which} set holds no images", dir.display());
    }
    Ok(())
}

fn progress_bar(hidden: bool, samples: usize, epoch: usize, epochs: usize) -> ProgressBar {
    if hidden || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(samples as u64);
    bar.set_style(
        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} (eta {eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{epoch}/{epochs}"));
    bar
}

fn print_evaluation(eval: &Evaluation) {
    println!("test loss {:.4}, test accuracy {:.2}%", eval.loss, eval.accuracy * 100.0);
    print_confusion(&eval.confusion_matrix);
    println!("\nclass  precision  recall     f1  support");
    for (c, s) in eval.per_class.iter().enumerate() {
        println!("{c:>5}  {:>9.3}  {:>6.3}  {:>5.3}  {:>7}", s.precision, s.recall, s.f1, s.support);
    }
}

fn print_confusion(m: &ConfusionMatrix) {
    println!("\nconfusion matrix (rows: true digit, columns: predicted)");
    print!("     ");
    for c in 0..m.classes() {
        print!("{c:>5}");
    }
    println!();
    for (t, row) in m.counts().iter().enumerate() {
        print!("{t:>5}");
        for n in row {
            print!("{n:>5}");
        }
        println!();
    }
}
