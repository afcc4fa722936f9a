//! Command-line parsing and the commands.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use ferrograd::checkpoint;
use ferrograd::data::{self, Dataset, HoldOut, ValidationSplit};
use ferrograd::metrics::ConfusionMatrix;
use ferrograd::nn::{ModelSpec, Normalize};
use ferrograd::optim::{Horizon, LrSchedule, OptimizerSpec};
use ferrograd::sweep::{Param, Sweep, Trial};
use ferrograd::train::{batch_count, Evaluation, Trainer};
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
    /// Train one model per setting of a grid or random trials, and compare them.
    Sweep(SweepArgs),
    /// Print a model's layers, output shapes and parameter counts.
    Summary(SummaryArgs),
    /// Evaluate a saved model on the test set.
    Eval(EvalArgs),
    /// Export a saved model to ONNX.
    Export(ExportArgs),
    /// Measure training throughput and matmul speed on this machine.
    Bench(crate::bench::BenchArgs),
    /// Serve the playground page on this machine.
    Serve(crate::serve::ServeArgs),
}

/// The settings of one training run, shared by `train` and `sweep` (where each trial
/// overrides some of them).
#[derive(clap::Args, Clone)]
struct RunArgs {
    /// Folder with the four standard MNIST files, gzipped or not.
    #[arg(long)]
    data: PathBuf,
    /// A preset name (mlp, cnn, convnet, lstm, gru, resnet, vit) or a JSON model spec file.
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
    /// L2 weight decay added to the gradient.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    weight_decay: f32,
    /// How the learning rate changes: constant, step(every=E,gamma=G), exponential(gamma=G)
    /// or cosine(warmup=EPOCHS,min_lr=LR), per epoch of the run.
    #[arg(long, default_value = "constant")]
    lr_schedule: String,
    /// Hold out this share of the training data, stratified by class and chosen by the seed,
    /// to validate on after every epoch.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    val_split: f32,
    /// Stop once the validation loss has not reached a new low for this many epochs, and
    /// keep the best epoch's weights (needs --val-split).
    #[arg(long)]
    early_stop: Option<usize>,
    /// Seeds the weights, the data order, dropout and the validation split.
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
    /// Where training steps run: auto times a few steps of the model on the CPU and on the
    /// GPU wgpu finds (through Vulkan), and takes the GPU only where it measured at least
    /// 1.1x the CPU; gpu takes any adapter, a software one included.
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    backend: Backend,
}

#[derive(clap::Args)]
struct TrainArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Write the trained model and its training state here (safetensors, with the spec in
    /// its metadata), to evaluate, export or resume.
    #[arg(long)]
    save: Option<PathBuf>,
    /// Continue training a file written by --save (its model and settings win over --model,
    /// --optimizer, --lr, --weight-decay, --lr-schedule, --early-stop, --normalize,
    /// --augment and --clip-norm, and the pairs it held out over --val-split and --seed's
    /// split).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Print one JSON object on stdout instead of progress and tables.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct SweepArgs {
    #[command(flatten)]
    run: RunArgs,
    /// A grid axis: setting=value,value,... (lr, batch-size, optimizer, epochs, weight-decay,
    /// model, lr-schedule); every combination of the axes runs. Repeat for more axes.
    #[arg(long)]
    grid: Vec<String>,
    /// A range random trials draw from: setting=min:max, or min:max:log for log-uniform
    /// (lr, weight-decay, batch-size, epochs). Repeat for more settings.
    #[arg(long)]
    range: Vec<String>,
    /// Random trials per grid combination, drawing the --range settings.
    #[arg(long, default_value_t = 0)]
    trials: usize,
    /// Seeds the random trials' draws (each run still trains with --seed).
    #[arg(long, default_value_t = 0)]
    sweep_seed: u64,
    /// Trials trained at once, each on a thread of its own [default: one per core; 1 where
    /// training runs on a GPU, a single device]. Every trial gives the same run either way.
    #[arg(long)]
    jobs: Option<usize>,
    /// Write one row per run here as CSV: its settings, per-epoch-final scores and per-class
    /// precision, recall and F1 on the test set.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print one JSON object on stdout instead of progress and lines.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct SummaryArgs {
    /// A preset name, a JSON model spec file, or a model saved by `ferrograd train --save`.
    #[arg(long)]
    model: String,
    /// Print the rows as JSON instead of a table.
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

impl OptimizerName {
    /// The learning rate when --lr is not given.
    fn default_lr(self) -> f32 {
        match self {
            OptimizerName::Adam => 1e-3,
            OptimizerName::Sgd => 1e-2,
        }
    }
}

#[derive(Serialize)]
struct EpochRecord {
    epoch: usize,
    train_loss: f32,
    train_accuracy: f32,
    /// On the held-out share of the training data; absent without --val-split.
    val_loss: Option<f32>,
    val_accuracy: Option<f32>,
    test_loss: f32,
    test_accuracy: f32,
    /// The learning rate of the epoch's last step.
    lr: f32,
    seconds: f64,
}

#[derive(Serialize)]
struct TrainReport<'a> {
    backend: &'a str,
    model: &'a ModelSpec,
    optimizer: &'a OptimizerSpec,
    lr_schedule: String,
    epochs: usize,
    batch_size: usize,
    seed: u64,
    val_split: f32,
    dropped: usize,
    augment: bool,
    final_loss: f32,
    test_loss: f32,
    test_accuracy: f32,
    /// The epoch whose weights the model ends with under early stopping.
    best_epoch: Option<usize>,
    stopped_early: bool,
    samples_per_second: f64,
    confusion_matrix: &'a [Vec<u64>],
    per_class: &'a [ferrograd::metrics::ClassScores],
    history: &'a [EpochRecord],
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(args) => train(args),
        Command::Sweep(args) => sweep(args),
        Command::Summary(args) => summary(args),
        Command::Eval(args) => eval(args),
        Command::Export(args) => export(args),
        Command::Bench(args) => crate::bench::bench(args),
        Command::Serve(args) => crate::serve::serve(args),
    }
}

/// The data of a run: the training set less the validation share, that share, the test set,
/// and the unreadable training images cleaning dropped.
struct RunData {
    train: Dataset,
    validation: Option<Dataset>,
    test: Dataset,
    dropped: usize,
}

fn load_run_data(args: &RunArgs) -> Result<RunData> {
    let mut mnist = load_data(&args.data)?;
    let mut dropped = 0;
    if args.clean {
        (mnist.train, dropped) = mnist.train.cleaned();
        check_not_empty(&mnist.train, "cleaned training", &args.data)?;
    }
    let split = ValidationSplit::new(args.val_split, args.seed).context("--val-split")?;
    let (train, validation) = if args.val_split > 0.0 {
        let (train, validation) = split.split(&mnist.train);
        check_not_empty(&train, "training (after the validation split)", &args.data)?;
        if validation.is_empty() {
            bail!(
                "--val-split {}: holds out no image of the {} training images",
                args.val_split,
                mnist.train.len()
            );
        }
        (train, Some(validation))
    } else {
        (mnist.train, None)
    };
    Ok(RunData { train, validation, test: mnist.test, dropped })
}

/// A fresh trainer with `args`' model and settings.
fn new_trainer(args: &RunArgs, data: &RunData) -> Result<Trainer> {
    let mut spec = load_spec(&args.model)?;
    if let Normalization::Standard = args.normalize {
        spec.normalize = Some(Normalize::MNIST);
    }
    let lr = args.lr.unwrap_or(args.optimizer.default_lr());
    let optimizer = match args.optimizer {
        OptimizerName::Adam => OptimizerSpec::adam(lr),
        OptimizerName::Sgd => OptimizerSpec::sgd(lr),
    }
    .with_weight_decay(args.weight_decay);
    let mut trainer = Trainer::new(spec, &optimizer, args.seed)?;
    trainer.set_augment(args.augment);
    trainer.set_clip_norm(args.clip_norm)?;
    let schedule: LrSchedule = args.lr_schedule.parse().context("--lr-schedule")?;
    let horizon =
        Horizon { steps_per_epoch: batch_count(data.train.len(), args.batch_size), epochs: args.epochs };
    trainer.set_lr_schedule(schedule, horizon).context("--lr-schedule")?;
    trainer.set_early_stopping(args.early_stop).context("--early-stop")?;
    trainer.set_hold_out(HoldOut { share: args.val_split, seed: args.seed }).context("--val-split")?;
    Ok(trainer)
}

/// Checks the settings every run needs before any data is read.
fn check_run_args(args: &RunArgs) -> Result<()> {
    if args.epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if args.early_stop.is_some() && args.val_split == 0.0 {
        bail!("--early-stop watches the validation loss, so it needs --val-split (a share such as 0.1)");
    }
    Ok(())
}

/// What a run ended with.
struct RunOutcome {
    history: Vec<EpochRecord>,
    test: Evaluation,
    best_epoch: Option<usize>,
    stopped_early: bool,
    samples_per_second: f64,
}

/// Trains `trainer` for `epochs` epochs on `data`, evaluating after each; with early stopping,
/// stops when it says so and ends with the best epoch's weights. `on_step` sees every step,
/// `on_epoch` every finished epoch.
fn run_training(
    trainer: &mut Trainer,
    data: &RunData,
    epochs: usize,
    batch_size: usize,
    mut on_step: impl FnMut(&ferrograd::train::StepStats),
    mut on_epoch: impl FnMut(&EpochRecord),
) -> Result<RunOutcome> {
    let mut history = Vec::with_capacity(epochs);
    let started = Instant::now();
    let mut trained_samples = 0usize;
    let mut stopped_early = false;
    for epoch in 1..=epochs {
        let epoch_start = Instant::now();
        let stats = trainer.train_epoch(&data.train, batch_size, &mut on_step)?;
        let seconds = epoch_start.elapsed().as_secs_f64();
        trained_samples += data.train.len();
        trainer.sync()?;
        let validation = data.validation.as_ref().map(|v| trainer.evaluate(v)).transpose()?;
        let test = trainer.evaluate(&data.test)?;
        let record = EpochRecord {
            epoch,
            train_loss: stats.loss,
            train_accuracy: stats.accuracy,
            val_loss: validation.as_ref().map(|v| v.loss),
            val_accuracy: validation.as_ref().map(|v| v.accuracy),
            test_loss: test.loss,
            test_accuracy: test.accuracy,
            lr: trainer.lr_at(trainer.steps().saturating_sub(1)),
            seconds,
        };
        on_epoch(&record);
        history.push(record);
        if let Some(validation) = validation {
            if trainer.observe_validation(validation.loss)? {
                stopped_early = epoch < epochs;
                break;
            }
        }
    }
    let samples_per_second = trained_samples as f64 / started.elapsed().as_secs_f64();
    let best_epoch = trainer.restore_best()?;
    let test = trainer.evaluate(&data.test)?;
    Ok(RunOutcome { history, test, best_epoch, stopped_early, samples_per_second })
}

fn train(args: TrainArgs) -> Result<()> {
    check_run_args(&args.run)?;
    let resumed = match &args.resume {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            Some(
                checkpoint::load_trainer(&bytes)
                    .with_context(|| format!("resuming from {}", path.display()))?,
            )
        }
        None => None,
    };
    // A resumed run holds out the pairs it held out before, whatever --val-split says.
    let run = &match resumed.as_ref().and_then(Trainer::hold_out) {
        Some(hold_out) => RunArgs { val_split: hold_out.share, seed: hold_out.seed, ..args.run.clone() },
        None => args.run.clone(),
    };
    let data = load_run_data(run)?;
    if run.clean && !args.json {
        eprintln!("cleaning dropped {} unreadable training images", data.dropped);
    }
    let mut trainer = match resumed {
        Some(trainer) => trainer,
        None => new_trainer(run, &data)?,
    };
    choose_backend(&mut trainer, run.backend, run.batch_size, args.json)?;
    let backend = trainer.backend();
    let spec = trainer.model().spec().clone();
    let optimizer = trainer.training_state().0.optimizer;
    let bar = progress_bar(args.json, (run.epochs * data.train.len()) as u64, "epochs");
    let started = Instant::now();
    let outcome = run_training(
        &mut trainer,
        &data,
        run.epochs,
        run.batch_size,
        |step| {
            bar.inc(step.samples as u64);
            let rate = bar.position() as f64 / started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("loss {:.4}  acc {:.3}  {rate:.0} samples/s", step.loss, step.accuracy));
        },
        |record| {
            let validation = match (record.val_loss, record.val_accuracy) {
                (Some(loss), Some(accuracy)) => format!(" | val loss {loss:.4} acc {accuracy:.4}"),
                _ => String::new(),
            };
            let line = format!(
                "epoch {}/{}: train loss {:.4} acc {:.4}{validation} | test loss {:.4} acc {:.4} | lr {:.3e} | {:.0} samples/s",
                record.epoch,
                run.epochs,
                record.train_loss,
                record.train_accuracy,
                record.test_loss,
                record.test_accuracy,
                record.lr,
                data.train.len() as f64 / record.seconds
            );
            say(&bar, args.json, line);
        },
    )?;
    bar.finish_and_clear();
    if let Some(path) = &args.save {
        std::fs::write(path, checkpoint::save_trainer(&trainer))
            .with_context(|| format!("writing the model to {}", path.display()))?;
    }
    let RunOutcome { history, test, best_epoch, stopped_early, samples_per_second } = outcome;
    if args.json {
        let report = TrainReport {
            backend: &backend,
            model: &spec,
            optimizer: &optimizer,
            lr_schedule: trainer.lr_schedule().label(),
            epochs: run.epochs,
            batch_size: run.batch_size,
            seed: run.seed,
            val_split: run.val_split,
            dropped: data.dropped,
            augment: trainer.augment(),
            final_loss: history.last().map_or(f32::NAN, |h| h.train_loss),
            test_loss: test.loss,
            test_accuracy: test.accuracy,
            best_epoch,
            stopped_early,
            samples_per_second,
            confusion_matrix: test.confusion_matrix.counts(),
            per_class: &test.per_class,
            history: &history,
        };
        println!("{}", serde_json::to_string(&report)?);
    } else {
        if let Some(best) = best_epoch {
            let how = if stopped_early { "stopped early; " } else { "" };
            println!("{how}the model keeps epoch {best}'s weights, its lowest validation loss");
        }
        print_evaluation(&test);
        println!("{samples_per_second:.0} samples/s over {} epochs", history.len());
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
    use ferrograd::measure::{prefer_gpu, StepTimer};
    let note = |message: String| {
        if !quiet {
            eprintln!("{message}");
        }
    };
    if backend == Backend::Cpu {
        return Ok(());
    }
    let gpu = match (Gpu::blocking(), backend) {
        (Ok(gpu), _) => gpu,
        (Err(e), Backend::Gpu) => return Err(e).context("--backend gpu"),
        (Err(e), _) => {
            note(format!("training on the CPU: {e}"));
            return Ok(());
        }
    };
    if backend == Backend::Auto {
        // Measured, not guessed from the adapter's type: a second of steps on each.
        let spec = trainer.model().spec().clone();
        let optimizer = trainer.optimizer_spec().clone();
        let measured = StepTimer::new(spec.clone(), &optimizer, batch_size)
            .and_then(|mut cpu| cpu.samples_per_second(MEASURE_SECONDS))
            .and_then(|cpu| {
                let gpu = StepTimer::new(spec, &optimizer, batch_size)?
                    .on_gpu(gpu.clone())?
                    .samples_per_second(MEASURE_SECONDS)?;
                Ok((cpu, gpu))
            });
        let (cpu, gpu_rate) = match measured {
            Ok(rates) => rates,
            Err(e) => {
                note(format!(
                    "training on the CPU: the GPU ({}) could not train this model: {e}",
                    gpu.adapter()
                ));
                return Ok(());
            }
        };
        let (faster, ratio) = prefer_gpu(cpu, gpu_rate);
        if !faster {
            note(format!(
                "training on the CPU: the GPU ({}) measured {ratio:.2}x the CPU for this model at batch {batch_size} \
                 ({gpu_rate:.0} against {cpu:.0} samples/s; --backend gpu takes it)",
                gpu.adapter()
            ));
            return Ok(());
        }
        note(format!("the GPU measured {ratio:.1}x the CPU for this model at batch {batch_size}"));
    }
    match trainer.use_gpu(gpu, batch_size) {
        Ok(()) => note(format!("training on the {}", trainer.backend())),
        Err(e) if backend == Backend::Gpu => return Err(e).context("--backend gpu"),
        Err(e) => note(format!("training on the CPU: {e}")),
    }
    Ok(())
}

/// Seconds of steps each of the CPU and the GPU gets when `--backend auto` measures them.
#[cfg(feature = "webgpu")]
const MEASURE_SECONDS: f64 = 0.5;

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

/// A bar over `total` units on stderr, hidden for JSON output or when stderr is not a
/// terminal.
fn progress_bar(hidden: bool, total: u64, what: &str) -> ProgressBar {
    if hidden || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "[{{bar:30}}] {{percent}}% of the {what} {{msg}} (eta {{eta}})"
        ))
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar
}

/// A line on stderr, above the bar when it shows; nothing for JSON output.
fn say(bar: &ProgressBar, json: bool, line: String) {
    if json {
        return;
    }
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
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

/// `args` with a sweep trial's settings in place of their own.
fn with_trial(args: &RunArgs, trial: &Trial) -> RunArgs {
    let mut run = args.clone();
    for (param, value) in trial {
        match param {
            Param::Lr => run.lr = Some(value.number() as f32),
            Param::BatchSize => run.batch_size = value.number() as usize,
            Param::Epochs => run.epochs = value.number() as usize,
            Param::WeightDecay => run.weight_decay = value.number() as f32,
            Param::Optimizer => {
                run.optimizer = if value.text() == "sgd" { OptimizerName::Sgd } else { OptimizerName::Adam };
            }
            Param::Model => run.model = value.text(),
            Param::LrSchedule => run.lr_schedule = value.text(),
        }
    }
    run
}

/// `lr=0.003 batch-size=64`.
fn trial_label(trial: &Trial) -> String {
    trial.iter().map(|(param, value)| format!("{param}={}", value.text())).collect::<Vec<_>>().join(" ")
}

/// One finished (or failed) run of a sweep.
#[derive(Serialize)]
struct SweepRun {
    run: usize,
    settings: String,
    model: String,
    optimizer: String,
    lr: f32,
    weight_decay: f32,
    lr_schedule: String,
    batch_size: usize,
    epochs: usize,
    seed: u64,
    epochs_run: usize,
    best_epoch: Option<usize>,
    stopped_early: bool,
    train_loss: Option<f32>,
    train_accuracy: Option<f32>,
    val_loss: Option<f32>,
    val_accuracy: Option<f32>,
    test_loss: Option<f32>,
    test_accuracy: Option<f32>,
    seconds: f64,
    samples_per_second: Option<f64>,
    /// Why the run stopped without a result (a diverged loss, say).
    error: Option<String>,
    per_class: Vec<ferrograd::metrics::ClassScores>,
}

impl SweepRun {
    /// The score runs are ranked by: validation accuracy with a validation split, test
    /// accuracy without.
    fn score(&self) -> Option<f32> {
        self.val_accuracy.or(self.test_accuracy)
    }
}

fn sweep(args: SweepArgs) -> Result<()> {
    check_run_args(&args.run)?;
    let trials = Sweep::from_text(&args.grid, &args.range, args.trials, args.sweep_seed)
        .and_then(|sweep| sweep.trials())
        .context("--grid/--range/--trials")?;
    // Every trial's settings are checked before the first one trains.
    let runs: Vec<RunArgs> = trials.iter().map(|trial| with_trial(&args.run, trial)).collect();
    for (trial, run) in trials.iter().zip(&runs) {
        check_run_args(run).with_context(|| format!("trial {}", trial_label(trial)))?;
        load_spec(&run.model).with_context(|| format!("trial {}", trial_label(trial)))?;
        run.lr_schedule.parse::<LrSchedule>().with_context(|| format!("trial {}", trial_label(trial)))?;
    }
    let jobs = match args.jobs {
        Some(0) => bail!("--jobs must be at least 1"),
        Some(jobs) => jobs,
        None if args.run.backend == Backend::Gpu => 1,
        None => thread::available_parallelism().map_or(1, usize::from),
    }
    .min(runs.len());
    let data = load_run_data(&args.run)?;
    let total: u64 = runs.iter().map(|r| (r.epochs * data.train.len()) as u64).sum();
    let bar = progress_bar(args.json, total, "sweep");
    // Side by side, each trial shares only the data: a thread takes the next trial not taken.
    let next = AtomicUsize::new(0);
    let finished = Mutex::new(Vec::with_capacity(runs.len()));
    thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some((trial, run)) = trials.get(index).zip(runs.get(index)) else { break };
                let record = sweep_trial(index, trial, run, &data, &bar);
                let result = match (&record.error, record.test_accuracy) {
                    (Some(error), _) => format!("failed: {error}"),
                    (None, Some(test)) => match record.val_accuracy {
                        Some(val) => format!("val acc {val:.4}, test acc {test:.4}"),
                        None => format!("test acc {test:.4}"),
                    },
                    _ => String::new(),
                };
                let (label, seconds) = (&record.settings, record.seconds);
                say(
                    &bar,
                    args.json,
                    format!("run {}/{}  {label}: {result} ({seconds:.1} s)", index + 1, runs.len()),
                );
                finished.lock().unwrap_or_else(PoisonError::into_inner).push(record);
            });
        }
    });
    let mut done = finished.into_inner().unwrap_or_else(PoisonError::into_inner);
    done.sort_by_key(|r| r.run);
    bar.finish_and_clear();
    if let Some(path) = &args.out {
        write_runs_csv(path, &done).with_context(|| format!("writing {}", path.display()))?;
    }
    let best = done
        .iter()
        .filter_map(|r| r.score().map(|s| (r.run, s)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(run, _)| run);
    if args.json {
        #[derive(Serialize)]
        struct SweepReport<'a> {
            ranked_by: &'a str,
            best_run: Option<usize>,
            runs: &'a [SweepRun],
        }
        let ranked_by = if args.run.val_split > 0.0 { "val_accuracy" } else { "test_accuracy" };
        println!("{}", serde_json::to_string(&SweepReport { ranked_by, best_run: best, runs: &done })?);
    } else {
        match best {
            Some(run) => {
                let r = &done[run - 1];
                let by = if r.val_accuracy.is_some() { "validation" } else { "test" };
                println!(
                    "best: run {run} ({}), {by} accuracy {:.2}%",
                    r.settings,
                    r.score().unwrap_or(f32::NAN) * 100.0
                );
            }
            None => println!("no run finished"),
        }
        if let Some(path) = &args.out {
            println!("wrote {} runs to {}", done.len(), path.display());
        }
    }
    Ok(())
}

/// Trains one trial of a sweep (the `index`-th, from 0), advancing `bar` by its samples; a
/// failure (a diverged loss, a GPU that would not start) is recorded in the run, not returned.
fn sweep_trial(index: usize, trial: &Trial, run: &RunArgs, data: &RunData, bar: &ProgressBar) -> SweepRun {
    let started = Instant::now();
    let planned = (run.epochs * data.train.len()) as u64;
    let mut trained = 0;
    let outcome = new_trainer(run, data).and_then(|mut trainer| {
        choose_backend(&mut trainer, run.backend, run.batch_size, true)?;
        let optimizer = trainer.optimizer_spec().clone();
        let outcome = run_training(
            &mut trainer,
            data,
            run.epochs,
            run.batch_size,
            |s| {
                trained += s.samples as u64;
                bar.inc(s.samples as u64);
            },
            |_| {},
        )?;
        Ok((outcome, optimizer, trainer.lr_schedule().label()))
    });
    // A run that stopped early or failed leaves its share of the bar.
    bar.inc(planned.saturating_sub(trained));
    let base = SweepRun {
        run: index + 1,
        settings: trial_label(trial),
        model: run.model.clone(),
        optimizer: match run.optimizer {
            OptimizerName::Adam => "adam".into(),
            OptimizerName::Sgd => "sgd".into(),
        },
        lr: run.lr.unwrap_or(run.optimizer.default_lr()),
        weight_decay: run.weight_decay,
        lr_schedule: run.lr_schedule.clone(),
        batch_size: run.batch_size,
        epochs: run.epochs,
        seed: run.seed,
        epochs_run: 0,
        best_epoch: None,
        stopped_early: false,
        train_loss: None,
        train_accuracy: None,
        val_loss: None,
        val_accuracy: None,
        test_loss: None,
        test_accuracy: None,
        seconds: started.elapsed().as_secs_f64(),
        samples_per_second: None,
        error: None,
        per_class: Vec::new(),
    };
    match outcome {
        Ok((outcome, optimizer, schedule)) => {
            let last = outcome.history.last();
            // The scores of the weights the run ends with: the best epoch's under early stopping.
            let kept = outcome.best_epoch.and_then(|e| outcome.history.get(e - 1)).or(last);
            SweepRun {
                lr: optimizer.lr(),
                lr_schedule: schedule,
                epochs_run: outcome.history.len(),
                best_epoch: outcome.best_epoch,
                stopped_early: outcome.stopped_early,
                train_loss: kept.map(|h| h.train_loss),
                train_accuracy: kept.map(|h| h.train_accuracy),
                val_loss: kept.and_then(|h| h.val_loss),
                val_accuracy: kept.and_then(|h| h.val_accuracy),
                test_loss: Some(outcome.test.loss),
                test_accuracy: Some(outcome.test.accuracy),
                samples_per_second: Some(outcome.samples_per_second),
                per_class: outcome.test.per_class,
                ..base
            }
        }
        Err(error) => SweepRun { error: Some(format!("{error:#}")), ..base },
    }
}

/// The runs as CSV: one row each, the per-class scores as `precision_0` ... `f1_9` columns.
fn write_runs_csv(path: &Path, runs: &[SweepRun]) -> Result<()> {
    let mut out = csv::Writer::from_path(path)?;
    let mut header: Vec<String> = [
        "run",
        "settings",
        "model",
        "optimizer",
        "lr",
        "weight_decay",
        "lr_schedule",
        "batch_size",
        "epochs",
        "seed",
        "epochs_run",
        "best_epoch",
        "stopped_early",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "test_loss",
        "test_accuracy",
        "seconds",
        "samples_per_second",
        "error",
    ]
    .map(String::from)
    .to_vec();
    for score in ["precision", "recall", "f1"] {
        header.extend((0..data::CLASSES).map(|c| format!("{score}_{c}")));
    }
    out.write_record(&header)?;
    let opt = |v: Option<String>| v.unwrap_or_default();
    for r in runs {
        let mut row = vec![
            r.run.to_string(),
            r.settings.clone(),
            r.model.clone(),
            r.optimizer.clone(),
            r.lr.to_string(),
            r.weight_decay.to_string(),
            r.lr_schedule.clone(),
            r.batch_size.to_string(),
            r.epochs.to_string(),
            r.seed.to_string(),
            r.epochs_run.to_string(),
            opt(r.best_epoch.map(|e| e.to_string())),
            r.stopped_early.to_string(),
            opt(r.train_loss.map(|v| v.to_string())),
            opt(r.train_accuracy.map(|v| v.to_string())),
            opt(r.val_loss.map(|v| v.to_string())),
            opt(r.val_accuracy.map(|v| v.to_string())),
            opt(r.test_loss.map(|v| v.to_string())),
            opt(r.test_accuracy.map(|v| v.to_string())),
            format!("{:.3}", r.seconds),
            opt(r.samples_per_second.map(|v| format!("{v:.0}"))),
            opt(r.error.clone()),
        ];
        type Score = fn(&ferrograd::metrics::ClassScores) -> f32;
        let scores: [Score; 3] = [|s| s.precision, |s| s.recall, |s| s.f1];
        for pick in scores {
            row.extend((0..data::CLASSES).map(|c| opt(r.per_class.get(c).map(|s| pick(s).to_string()))));
        }
        out.write_record(&row)?;
    }
    out.flush()?;
    Ok(())
}

fn summary(args: SummaryArgs) -> Result<()> {
    let spec = summary_spec(&args.model)?;
    let summary = spec.summary().with_context(|| args.model.clone())?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
        return Ok(());
    }
    let shape = |s: &[usize]| format!("[{}]", s.iter().map(usize::to_string).collect::<Vec<_>>().join(", "));
    let lines: Vec<(String, String, String)> = summary
        .rows
        .iter()
        .map(|r| {
            (
                format!("{}{} ({})", "  ".repeat(r.depth), r.path, r.kind),
                shape(&r.output),
                grouped(r.parameters),
            )
        })
        .collect();
    let width = lines.iter().map(|l| l.0.len()).max().unwrap_or(0).max(12);
    let shape_width = lines.iter().map(|l| l.1.len()).max().unwrap_or(0).max(12);
    println!("input {}", shape(&summary.input));
    println!("{:<width$}  {:<shape_width$}  {:>10}", "Layer (type)", "Output shape", "Param #");
    println!("{}", "-".repeat(width + shape_width + 14));
    for (layer, output, params) in &lines {
        println!("{layer:<width$}  {output:<shape_width$}  {params:>10}");
    }
    println!("{}", "-".repeat(width + shape_width + 14));
    println!("Total params: {}", grouped(summary.total));
    println!("Trainable params: {}", grouped(summary.trainable));
    println!("Non-trainable params: {}", grouped(summary.total - summary.trainable));
    println!("Forward FLOPs per sample (matrix products): {}", grouped(summary.flops));
    Ok(())
}

/// A preset, a JSON spec file, or the spec inside a saved model.
fn summary_spec(model: &str) -> Result<ModelSpec> {
    let path = Path::new(model);
    if ModelSpec::preset(model).is_none() && path.exists() {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        if !bytes.trim_ascii_start().starts_with(b"{") {
            let model = checkpoint::load(&bytes).with_context(|| format!("loading {}", path.display()))?;
            return Ok(model.spec().clone());
        }
    }
    load_spec(model)
}

/// `20586` as `20,586`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
