//! The JavaScript boundary: one handle, [`Session`], around the core [`Playground`]; plain
//! numbers, typed arrays and serde objects across; `Result<_, JsError>` everywhere so that
//! every failure reaches JavaScript as an exception with a readable message.

use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

use crate::nn::{ModelSpec, Normalize};
use crate::optim::OptimizerSpec;
use crate::playground::{Part, Playground, TrainingConfig};
use crate::tensor;

/// Installs a panic hook so that a bug reports its message on the console instead of
/// killing the worker silently. In the threaded build, a panic on a thread of the pool also
/// goes to the page (see [`report_pool_panics`]).
#[wasm_bindgen(start)]
pub fn start() {
    #[cfg(feature = "threads")]
    std::panic::set_hook(Box::new(|info| {
        console_error_panic_hook::hook(info);
        pool_panic::announce(info);
    }));
    #[cfg(not(feature = "threads"))]
    console_error_panic_hook::set_once();
}

/// `reportPoolPanics(channel)`, in the threaded build only: from now on a panic on a thread
/// of the pool posts its message to the BroadcastChannel named `channel`. Such a panic aborts
/// that thread's instance and leaves the training worker waiting for it forever, unable to
/// notice; the page, listening on the channel, can start a fresh worker. Its name should be
/// unique to the page, as every page of the origin hears a channel.
#[cfg(feature = "threads")]
#[wasm_bindgen(js_name = reportPoolPanics)]
pub fn report_pool_panics(channel: String) {
    *pool_panic::CHANNEL.lock().unwrap_or_else(|e| e.into_inner()) = Some(channel);
}

#[cfg(feature = "threads")]
mod pool_panic {
    use std::sync::Mutex;

    use wasm_bindgen::prelude::*;

    /// Shared by every thread: the module's memory is.
    pub static CHANNEL: Mutex<Option<String>> = Mutex::new(None);

    #[wasm_bindgen(
        inline_js = "export function post(channel, message) { new BroadcastChannel(channel).postMessage(message); }"
    )]
    extern "C" {
        fn post(channel: &str, message: &str);
    }

    pub fn announce(info: &std::panic::PanicHookInfo) {
        if rayon::current_thread_index().is_none() {
            // The worker's own thread: it catches the trap itself.
            return;
        }
        // The message alone ("capacity overflow"); the console has the location too.
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned());
        if let Some(channel) = CHANNEL.try_lock().ok().and_then(|c| c.clone()) {
            post(&channel, &message.unwrap_or_else(|| info.to_string()));
        }
    }
}

/// `initThreadPool(count)`, in the threaded build only (pkg/threads/): starts `count` Web
/// Workers sharing this module's memory, which products then split across. The page calls it
/// once after loading the module, and only when it is cross-origin isolated.
#[cfg(feature = "threads")]
pub use wasm_bindgen_rayon::init_thread_pool;

/// How many threads the CPU kernels split work across (one but in the threaded build).
#[wasm_bindgen(js_name = cpuThreads)]
pub fn cpu_threads() -> usize {
    crate::backend::cpu::threads()
}

/// Training settings as the page sends them; every field has a default.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
struct Settings {
    optimizer: OptimizerName,
    lr: Option<f32>,
    weight_decay: f32,
    batch_size: usize,
    epochs: usize,
    seed: u64,
    /// `"unit"` keeps pixels in [0, 1]; `"standard"` standardises them by MNIST's mean and std.
    normalize: Normalization,
    clean: bool,
    augment: bool,
    clip_norm: Option<f32>,
    /// A schedule as `LrSchedule`'s text: `constant`, `step(every=2,gamma=0.5)`, ...
    lr_schedule: String,
    val_split: f32,
    early_stop: Option<usize>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            optimizer: OptimizerName::Adam,
            lr: None,
            weight_decay: 0.0,
            batch_size: 64,
            epochs: 5,
            seed: 0,
            normalize: Normalization::Unit,
            clean: false,
            augment: false,
            clip_norm: None,
            lr_schedule: "constant".into(),
            val_split: 0.0,
            early_stop: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum OptimizerName {
    Adam,
    Sgd,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Normalization {
    Unit,
    Standard,
}

/// A model as JavaScript names it: a preset name or a JSON spec.
fn read_model(model: &str) -> Result<ModelSpec, JsError> {
    match ModelSpec::preset(model.trim()) {
        Some(spec) => Ok(spec),
        None => Ok(ModelSpec::from_json(model)?),
    }
}

/// Reads a model (a preset name or a JSON spec) and settings from JavaScript.
fn read_setup(model: &str, settings: JsValue) -> Result<(ModelSpec, TrainingConfig), JsError> {
    let mut spec = read_model(model)?;
    let settings: Settings = if settings.is_undefined() || settings.is_null() {
        Settings::default()
    } else {
        // Through serde_json, because serde-wasm-bindgen reads only the fields a struct names
        // and so would ignore a misspelt setting instead of reporting it.
        let json: serde_json::Value =
            serde_wasm_bindgen::from_value(settings).map_err(|e| JsError::new(&format!("settings: {e}")))?;
        serde_json::from_value(json).map_err(|e| JsError::new(&format!("settings: {e}")))?
    };
    spec.normalize = match settings.normalize {
        Normalization::Unit => None,
        Normalization::Standard => Some(Normalize::MNIST),
    };
    let optimizer = match settings.optimizer {
        OptimizerName::Adam => OptimizerSpec::adam(settings.lr.unwrap_or(1e-3)),
        OptimizerName::Sgd => OptimizerSpec::sgd(settings.lr.unwrap_or(1e-2)),
    }
    .with_weight_decay(settings.weight_decay);
    let config = TrainingConfig {
        optimizer,
        batch_size: settings.batch_size,
        epochs: settings.epochs,
        seed: settings.seed,
        clean: settings.clean,
        augment: settings.augment,
        clip_norm: settings.clip_norm,
        lr_schedule: settings.lr_schedule.parse()?,
        val_split: settings.val_split,
        early_stop: settings.early_stop,
    };
    Ok((spec, config))
}

/// A model, its training state and its data, as the page's worker drives them.
#[wasm_bindgen]
pub struct Session {
    inner: Playground,
}

#[wasm_bindgen]
impl Session {
    /// `model` is a preset name (`"mlp"`) or a JSON model spec; `settings` is
    /// `{optimizer?: "adam"|"sgd", lr?, weightDecay?, batchSize?, epochs?, seed?, normalize?: "unit"|"standard",
    /// clean?, augment?, clipNorm?, lrSchedule?: "constant"|"step(every=E,gamma=G)"|
    /// "exponential(gamma=G)"|"cosine(warmup=W,min_lr=M)", valSplit?: share in [0, 0.5],
    /// earlyStop?: patience in epochs}` or undefined.
    #[wasm_bindgen(constructor)]
    pub fn new(model: &str, settings: JsValue) -> Result<Session, JsError> {
        let (spec, config) = read_setup(model, settings)?;
        Ok(Session { inner: Playground::new(spec, config)? })
    }

    /// A new model and settings, training from scratch on the same data; on error nothing
    /// changes.
    pub fn configure(&mut self, model: &str, settings: JsValue) -> Result<(), JsError> {
        let (spec, config) = read_setup(model, settings)?;
        Ok(self.inner.configure(spec, config)?)
    }

    /// Fresh weights, same model, settings and data.
    pub fn reset(&mut self) {
        self.inner.reset();
    }

    /// Starts loading a data source; the names (URLs) appear in error messages.
    #[wasm_bindgen(js_name = beginLoad)]
    pub fn begin_load(
        &mut self,
        train_images: String,
        train_labels: String,
        test_images: String,
        test_labels: String,
    ) {
        self.inner.begin_load([train_images, train_labels, test_images, test_labels]);
    }

    /// Decodes a chunk of one decompressed stream: `part` is `"trainImages"`,
    /// `"trainLabels"`, `"testImages"` or `"testLabels"`. Returns the items completed.
    pub fn feed(&mut self, part: &str, chunk: &[u8]) -> Result<u32, JsError> {
        let part: Part = serde_wasm_bindgen::from_value(JsValue::from_str(part))
            .map_err(|_| JsError::new(&format!("feed: unknown stream `{part}`")))?;
        Ok(self.inner.feed(part, chunk)? as u32)
    }

    /// Ends the load once every stream has ended; a bad replacement is dropped whole.
    #[wasm_bindgen(js_name = endLoad)]
    pub fn end_load(&mut self) -> Result<(), JsError> {
        Ok(self.inner.end_load()?)
    }

    /// Stops a load that failed outside the decoder (a network error).
    #[wasm_bindgen(js_name = abortLoad)]
    pub fn abort_load(&mut self) {
        self.inner.abort_load();
    }

    /// Trains on the next batch if one has arrived. Returns
    /// `{status: "trained", stats: {loss, accuracy, samples} | null, epochFinished}` (null on
    /// the GPU, whose statistics come from `finishedSteps`), `{status: "busy"}` (the GPU has
    /// enough steps in flight), `{status: "waiting"}` or `{status: "done"}`.
    pub fn step(&mut self) -> Result<JsValue, JsError> {
        to_js(&self.inner.step()?)
    }

    /// The GPU steps whose statistics have come back: `[{step, loss, accuracy, samples}]`.
    #[wasm_bindgen(js_name = finishedSteps)]
    pub fn finished_steps(&mut self) -> Result<JsValue, JsError> {
        #[derive(Serialize)]
        struct Finished {
            step: u64,
            #[serde(flatten)]
            stats: crate::train::StepStats,
        }
        let steps = self.inner.finished_steps()?;
        to_js(&steps.into_iter().map(|(step, stats)| Finished { step, stats }).collect::<Vec<_>>())
    }

    /// Starts bringing the weights back from the GPU; evaluate, predict, inspect, save and
    /// exportOnnx need them, so call this and then `finishSync` until it returns true.
    #[wasm_bindgen(js_name = startSync)]
    pub fn start_sync(&mut self) {
        self.inner.start_sync();
    }

    /// True once the weights are back from the GPU (at once on the CPU).
    #[wasm_bindgen(js_name = finishSync)]
    pub fn finish_sync(&mut self) -> Result<bool, JsError> {
        Ok(self.inner.finish_sync()?)
    }

    /// Trains on the CPU from now on; after a lost GPU, from the weights last brought back.
    /// `note` says why, for the status; returns the step count training carries on from.
    #[wasm_bindgen(js_name = useCpu)]
    pub fn use_cpu(&mut self, note: Option<String>) -> f64 {
        self.inner.use_cpu(note) as f64
    }

    /// Trains on `gpu` from now on (a model it cannot run stays on the CPU, with the reason
    /// in the status's `backendNote`); `note` says why the GPU, for the status.
    #[cfg(feature = "webgpu")]
    #[wasm_bindgen(js_name = useGpu)]
    pub fn use_gpu(&mut self, gpu: &GpuDevice, note: Option<String>) -> Result<(), JsError> {
        Ok(self.inner.use_gpu(gpu.0.clone(), note)?)
    }

    /// On the GPU, what a step at the batch size costs: `{dispatches, clears, uploaded,
    /// downloaded}` (bytes), or null on the CPU (see `ferrograd::gpu_step::StepCost`).
    #[cfg(feature = "webgpu")]
    #[wasm_bindgen(js_name = gpuStepCost)]
    pub fn gpu_step_cost(&self) -> Result<JsValue, JsError> {
        to_js(&self.inner.trainer().gpu_step_cost(self.inner.config().batch_size))
    }

    /// Epoch, progress and data counts (see `Status`).
    pub fn status(&self) -> Result<JsValue, JsError> {
        to_js(&self.inner.status())
    }

    /// After an epoch and `finishSync`: `{loss, accuracy, bestEpoch, stoppedEarly}` on the
    /// held-out training pairs, or null without a validation split. When early stopping ends
    /// the run (or the run ends with it on), the best epoch's weights are back by then, and
    /// `step` answers done.
    pub fn validate(&mut self) -> Result<JsValue, JsError> {
        to_js(&self.inner.validate()?)
    }

    /// Test loss, accuracy, confusion matrix and per-class scores, plus the first `showcase`
    /// test images with labels and predictions.
    pub fn evaluate(&self, showcase: usize) -> Result<JsValue, JsError> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Report {
            loss: f32,
            accuracy: f32,
            confusion_matrix: Vec<Vec<u64>>,
            per_class: Vec<crate::metrics::ClassScores>,
            showcase: crate::playground::Showcase,
        }
        let (evaluation, showcase) = self.inner.evaluate(showcase)?;
        to_js(&Report {
            loss: evaluation.loss,
            accuracy: evaluation.accuracy,
            confusion_matrix: evaluation.confusion_matrix.counts().to_vec(),
            per_class: evaluation.per_class,
            showcase,
        })
    }

    /// Class probabilities, ten per image, for images in `[0, 1]` laid out one after another.
    pub fn predict(&self, pixels: &[f32]) -> Result<Vec<f32>, JsError> {
        let input = &self.inner.trainer().model().spec().input;
        let per_image: usize = input.iter().product();
        if pixels.is_empty() || pixels.len() % per_image != 0 {
            return Err(JsError::new(&format!(
                "predict: {} pixels are not a whole number of {per_image}-pixel images",
                pixels.len()
            )));
        }
        let mut shape = vec![pixels.len() / per_image];
        shape.extend_from_slice(input);
        let images = tensor::from_vec(&shape, pixels.to_vec())?;
        Ok(self.inner.trainer().predict(images)?.into_raw_vec_and_offset().0)
    }

    /// A look inside the model for one image in `[0, 1]`: probabilities, the saliency of
    /// every pixel, the first convolution's filters, every convolution's feature maps and the
    /// recurrent layers' hidden state and gates over time (see `inspect::Inspection`).
    pub fn inspect(&self, pixels: &[f32]) -> Result<JsValue, JsError> {
        to_js(&crate::inspect::inspect(self.inner.trainer().model(), pixels)?)
    }

    /// Adds a drawn digit (bytes 0-255, the model's input size) with its label to the
    /// training data; returns how many drawn examples there are.
    #[wasm_bindgen(js_name = addExample)]
    pub fn add_example(&mut self, pixels: &[u8], label: u8) -> Result<u32, JsError> {
        Ok(self.inner.add_example(pixels, label)? as u32)
    }

    #[wasm_bindgen(js_name = clearExamples)]
    pub fn clear_examples(&mut self) {
        self.inner.clear_examples();
    }

    /// The model, optimizer state and progress as a safetensors file to keep or download.
    pub fn save(&self) -> Vec<u8> {
        self.inner.save()
    }

    /// Continues from a file made by `save`; on error (a truncated, foreign or mismatched
    /// file) the current model stays.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), JsError> {
        Ok(self.inner.restore(bytes)?)
    }

    /// The model spec as JSON.
    #[wasm_bindgen(js_name = specJson)]
    pub fn spec_json(&self) -> String {
        self.inner.trainer().model().spec().to_json()
    }
}

/// A WebGPU device with every kernel compiled, to hand to `Session.useGpu`.
#[cfg(feature = "webgpu")]
#[wasm_bindgen]
pub struct GpuDevice(crate::backend::gpu::Gpu);

#[cfg(feature = "webgpu")]
#[wasm_bindgen]
impl GpuDevice {
    /// The adapter's name, type and API.
    pub fn adapter(&self) -> String {
        self.0.adapter().to_string()
    }

    /// Whether the adapter runs on the CPU (SwiftShader): correct, not fast.
    #[wasm_bindgen(js_name = isSoftware)]
    pub fn is_software(&self) -> bool {
        self.0.is_software()
    }

    /// Destroys the device, as a driver reset or a lost GPU would; for testing the fallback.
    #[wasm_bindgen(js_name = destroyForTesting)]
    pub fn destroy_for_testing(&self) {
        self.0.destroy();
    }
}

/// Square matrix products on the GPU for the benchmark's GFLOP/s: `submit` queues one product
/// and a read of one element of it, `done` says when that read is back (so the product ran).
#[cfg(feature = "webgpu")]
#[wasm_bindgen]
pub struct GpuMatmulBench {
    gpu: crate::backend::gpu::Gpu,
    product: crate::backend::gpu::Dispatch,
    /// Copies one element of the product into `probe`, which is read back.
    take: crate::backend::gpu::Dispatch,
    probe: crate::backend::gpu::Buffer,
    readback: crate::backend::gpu::Readback,
}

#[cfg(feature = "webgpu")]
#[wasm_bindgen]
impl GpuMatmulBench {
    /// Two `size x size` matrices on the GPU; errors past 4096 (see `bench_size`).
    #[wasm_bindgen(constructor)]
    pub fn new(gpu: &GpuDevice, size: u32) -> Result<GpuMatmulBench, JsError> {
        use crate::backend::gpu::Kernel;
        bench_size(size as usize)?;
        let gpu = gpu.0.clone();
        let n = size as usize;
        let values: Vec<f32> = (0..n * n).map(|i| (i % 11) as f32 / 11.0).collect();
        let (a, b, c) = (gpu.upload(&values), gpu.upload(&values), gpu.zeros(n * n));
        let product = gpu.square_product(n, &a, &b, &c);
        let probe = gpu.zeros(1);
        // copy.wgsl: one element, from offset 0 of c to offset 0 of the probe.
        let take =
            gpu.dispatch(Kernel::Copy, &[1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[&c, &probe], 1);
        let readback = gpu.readback(1);
        Ok(GpuMatmulBench { gpu, product, take, probe, readback })
    }

    /// Queues one product; false while the previous one has not come back.
    pub fn submit(&self) -> bool {
        if self.readback.is_busy() {
            return false;
        }
        self.gpu.run(&[], &[&self.product, &self.take]);
        self.gpu.start_read(&self.probe, &self.readback);
        true
    }

    /// Whether the last product has finished.
    pub fn done(&self) -> Result<bool, JsError> {
        Ok(self.gpu.finish_read::<f32>(&self.readback)?.is_some())
    }
}

/// A throwaway copy of a model taking training steps on the GPU on a batch of zeros, for the
/// worker to time against the CPU's training before it chooses where training runs (see
/// `ferrograd::measure`). The browser delivers the GPU's results between tasks, so the
/// worker submits, yields, and counts what has finished.
#[cfg(feature = "webgpu")]
#[wasm_bindgen]
pub struct GpuStepTimer(crate::measure::StepTimer);

#[cfg(feature = "webgpu")]
#[wasm_bindgen]
impl GpuStepTimer {
    /// `model` and `settings` as `Session` takes them (their batch size counts).
    #[wasm_bindgen(constructor)]
    pub fn new(model: &str, settings: JsValue, gpu: &GpuDevice) -> Result<GpuStepTimer, JsError> {
        let (spec, config) = read_setup(model, settings)?;
        let timer = crate::measure::StepTimer::new(spec, &config.optimizer, config.batch_size)?;
        Ok(GpuStepTimer(timer.on_gpu(gpu.0.clone())?))
    }

    /// Queues a step unless a few are queued already; whether it did.
    pub fn submit(&mut self) -> Result<bool, JsError> {
        Ok(self.0.submit()?)
    }

    /// Steps whose results have come back so far.
    pub fn finished(&mut self) -> Result<f64, JsError> {
        Ok(self.0.finished()? as f64)
    }

    #[wasm_bindgen(js_name = batchSize)]
    pub fn batch_size(&self) -> usize {
        self.0.batch_size()
    }
}

/// The browser's WebGPU adapter and device, with the kernels compiled; rejects with the
/// reason when there is none.
#[cfg(feature = "webgpu")]
#[wasm_bindgen(js_name = requestGpu)]
pub async fn request_gpu() -> Result<GpuDevice, JsError> {
    Ok(GpuDevice(crate::backend::gpu::Gpu::new().await?))
}

/// `exportOnnx(file)`: the model of a file `Session.save()` made (or of a model saved alone)
/// as an ONNX file: raw pixels in [0, 1] shaped `[N, 1, 28, 28]` in, `[N, 10]` logits and
/// probabilities out. Only in the tools build (`tools` feature, pkg/tools/), which the page
/// loads when asked to export: the export code would be a sixteenth of every training module.
#[cfg(feature = "tools")]
#[wasm_bindgen(js_name = exportOnnx)]
pub fn export_onnx(file: &[u8]) -> Result<Vec<u8>, JsError> {
    let model = crate::checkpoint::load(file)?;
    Ok(crate::export::onnx::export(&model)?)
}

/// `sweepTrials(grid, ranges, trials, seed)`: a sweep as the CLI's `--grid`, `--range`,
/// `--trials` and `--sweep-seed` give it (`["lr=1e-3,1e-2"]`, `["lr=1e-4:1e-2:log"]`),
/// as `[{lr, batch_size, ...}]`, one object per trial in the order they run; throws naming
/// the setting that is wrong (see `sweep::Sweep::trials`). Only in the tools build, as
/// `exportOnnx`: planning costs the training modules 27 KB (its maps, log-uniform draws).
#[cfg(feature = "tools")]
#[wasm_bindgen(js_name = sweepTrials)]
pub fn sweep_trials(
    grid: Vec<String>,
    ranges: Vec<String>,
    trials: usize,
    seed: u32,
) -> Result<JsValue, JsError> {
    let sweep = crate::sweep::Sweep::from_text(&grid, &ranges, trials, u64::from(seed))?;
    to_js(&sweep.trials()?)
}

/// `modelSummary(model)`: a preset name or a JSON spec's summary as Keras prints it,
/// `{input, rows: [{path, kind, depth, output, parameters}], total, trainable}`; throws with
/// the spec's error (naming the layer) when it cannot be built.
#[wasm_bindgen(js_name = modelSummary)]
pub fn model_summary(model: &str) -> Result<JsValue, JsError> {
    to_js(&read_model(model)?.summary()?)
}

/// `scheduleCurve(schedule, lr, epochs, points)`: the learning rate a schedule (its text)
/// gives at `points` evenly spaced moments of a run of `epochs` epochs from `lr`, for the
/// small curve beside the setting; throws naming what is wrong in the schedule.
#[wasm_bindgen(js_name = scheduleCurve)]
pub fn schedule_curve(schedule: &str, lr: f32, epochs: usize, points: usize) -> Result<Vec<f32>, JsError> {
    let schedule: crate::optim::LrSchedule = schedule.parse()?;
    schedule.validate(lr)?;
    // 100 steps an epoch: fine enough for a curve a few dozen pixels wide.
    let horizon = crate::optim::Horizon { steps_per_epoch: 100, epochs: epochs.clamp(1, 1000) };
    let total = 100 * horizon.epochs as u64;
    let points = points.clamp(2, 1000);
    Ok((0..points).map(|i| schedule.lr(lr, i as u64 * (total - 1) / (points as u64 - 1), horizon)).collect())
}

fn to_js<T: Serialize>(value: &T) -> Result<JsValue, JsError> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| JsError::new(&e.to_string()))
}

/// `steps` rounds of the product's multiply-add on 12 independent 4-lane chains (96 FLOPs a
/// round), which the benchmark times for this core's peak GFLOP/s beside the product's: fused
/// in the relaxed-SIMD build (see `backend::cpu::multiply_add_chains`).
#[wasm_bindgen(js_name = multiplyAddChains)]
pub fn multiply_add_chains(steps: u32) -> f32 {
    crate::backend::cpu::multiply_add_chains(steps as usize)
}

/// The benchmark products' size bound, checked before their matrices are allocated.
fn bench_size(size: usize) -> Result<(), JsError> {
    const MAX: usize = 4096;
    if size > MAX {
        return Err(JsError::new(&format!(
            "a {size} x {size} product is more than the benchmark's {MAX} x {MAX}"
        )));
    }
    Ok(())
}

/// Two square matrices whose product JavaScript times, for the benchmark's GFLOP/s.
#[wasm_bindgen]
pub struct MatmulBench {
    a: ndarray::Array2<f32>,
    b: ndarray::Array2<f32>,
}

#[wasm_bindgen]
impl MatmulBench {
    /// Two `size x size` matrices; errors past 4096 (two 64 MiB matrices, and the product's).
    #[wasm_bindgen(constructor)]
    pub fn new(size: usize) -> Result<MatmulBench, JsError> {
        bench_size(size)?;
        let a = ndarray::Array2::from_shape_fn((size, size), |(i, j)| ((i * 7 + j * 3) % 11) as f32 / 11.0);
        let b = a.t().to_owned();
        Ok(MatmulBench { a, b })
    }

    /// One product; returns an element of it so that the work cannot be skipped.
    pub fn run(&self) -> f32 {
        crate::backend::cpu::matmul(&self.a.view(), &self.b.view())[[0, 0]]
    }
}
