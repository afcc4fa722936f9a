//! Training: a model, its optimizer and a seeded generator, stepped batch by batch. The CLI
//! and the page both drive this.

use ndarray::{Axis, Ix2};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_pcg::Pcg64;
use serde::{Deserialize, Serialize};

use crate::autograd::{ParamId, Pool, Tape};
use crate::backend::cpu;
use crate::data::{preprocess, Dataset, HoldOut, CLASSES};
pub use crate::metrics::StepStats;
use crate::metrics::{ClassScores, ConfusionMatrix};
use crate::nn::{Mode, Model, ModelSpec};
use crate::optim::{Horizon, LrSchedule, Optimizer, OptimizerSpec, OptimizerState};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// A model's scores on a data set.
#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    pub loss: f32,
    pub accuracy: f32,
    pub confusion_matrix: ConfusionMatrix,
    pub per_class: Vec<ClassScores>,
}

/// What resuming training needs besides the tensors of the model and the optimizer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainingState {
    pub optimizer: OptimizerSpec,
    pub optimizer_step: u64,
    pub steps: u64,
    /// Whole passes over the training data finished (files saved before it was kept read 0).
    #[serde(default)]
    pub epochs: usize,
    /// The generator for shuffling, dropout and augmentation, mid-stream.
    pub rng: Pcg64,
    pub augment: bool,
    pub clip_norm: Option<f32>,
    /// The learning-rate schedule and the run it spans (files saved before schedules existed
    /// read constant).
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    #[serde(default)]
    pub horizon: Option<Horizon>,
    #[serde(default)]
    pub early_stopping: Option<EarlyStopping>,
    /// The training pairs the run holds out to validate on (files saved before it was kept
    /// read None: whatever the resuming run asks for).
    #[serde(default)]
    pub hold_out: Option<HoldOut>,
}

/// Early stopping on the validation loss, and what it has seen so far.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopping {
    /// Epochs without a new lowest validation loss after which training stops (at least 1).
    pub patience: usize,
    /// The epoch (counted from 1) with the lowest validation loss so far, and that loss.
    pub best: Option<(usize, f32)>,
    /// Epochs since the best one.
    pub waited: usize,
}

/// A model being trained.
pub struct Trainer {
    model: Model,
    optimizer_spec: OptimizerSpec,
    optimizer: Optimizer,
    rng: Pcg64,
    steps: u64,
    epochs: usize,
    augment: bool,
    clip_norm: Option<f32>,
    lr_schedule: LrSchedule,
    /// The run the schedule spans; None while the schedule is constant.
    horizon: Option<Horizon>,
    early_stopping: Option<EarlyStopping>,
    hold_out: Option<HoldOut>,
    /// Every parameter's value (buffers included) at the best epoch, for early stopping.
    best_weights: Vec<Tensor>,
    /// Training on the GPU, when moved there with [`Trainer::use_gpu`].
    #[cfg(feature = "webgpu")]
    engine: Option<crate::gpu_step::Engine>,
    /// Whether the GPU holds newer weights than `model`, until [`Trainer::sync`].
    stale: bool,
    /// The step count of the weights in `model`, which training falls back to if the GPU is lost.
    synced_steps: u64,
    /// The memory of the last CPU step's values and gradients, for the next to reuse.
    pool: Pool,
}

/// `order` cut into batches of `batch_size`, except that a single sample left over at the end
/// joins the batch before it: batch norm cannot train on a batch of one (nor can the step's
/// statistics say much about it).
pub fn batches(order: &[usize], batch_size: usize) -> impl Iterator<Item = &[usize]> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= order.len() {
            return None;
        }
        let mut end = (start + batch_size).min(order.len());
        if order.len() - end == 1 && batch_size > 1 {
            end = order.len();
        }
        let batch = &order[start..end];
        start = end;
        Some(batch)
    })
}

/// How many batches [`batches`] cuts `len` samples into.
pub fn batch_count(len: usize, batch_size: usize) -> u64 {
    let batch_size = batch_size.max(1);
    let full = len.div_ceil(batch_size);
    // A single sample left over joins the batch before it.
    let merged = len > batch_size && len % batch_size == 1 && batch_size > 1;
    (full - usize::from(merged)) as u64
}

/// A loss above this has exploded: the cross-entropy of ten classes starts at ln 10 = 2.3 and
/// a model that predicts the wrong digit with probability 1 - 1e-400 scores about 920.
pub const DIVERGED_LOSS: f32 = 1000.0;

/// Whether a step's loss says training diverged: not a number, infinite, or past
/// [`DIVERGED_LOSS`].
fn diverged(loss: f32) -> bool {
    loss.is_nan() || loss > DIVERGED_LOSS
}

/// Training samples whose batch statistics re-estimate batch norm's running averages after
/// each epoch (all of them when there are fewer): enough for averages within a fraction of a
/// percent of the whole set's, at about a twelfth of an epoch's forward passes on the bundled
/// 8,000 images.
pub const RECALIBRATION_SAMPLES: usize = 2048;

/// The positions, among `len` training samples in their stored order, whose statistics
/// re-estimate batch norm's running averages: [`RECALIBRATION_SAMPLES`] evenly spaced, drawing
/// no random numbers, so that the CLI and the page, which hold the same files in the same
/// order, pick the same images and keep the same generator.
pub fn recalibration_positions(len: usize) -> Vec<usize> {
    let n = len.min(RECALIBRATION_SAMPLES);
    (0..n).map(|i| (i as u64 * len as u64 / n as u64) as usize).collect()
}

/// The batch size for evaluation and prediction: large enough to amortise per-batch work,
/// small enough to keep activations of any preset modest.
pub const EVAL_BATCH: usize = 256;

impl Trainer {
    /// A fresh model from `spec`, with weights and every later random draw (shuffling,
    /// dropout) seeded by `seed`.
    ///
    /// # Errors
    /// When the spec or the optimizer settings are invalid, or the model does not output one
    /// score per class.
    pub fn new(spec: ModelSpec, optimizer: &OptimizerSpec, seed: u64) -> Result<Self> {
        Self::from_model(Model::new(spec, seed)?, optimizer, seed)
    }

    /// Trains an existing model (one loaded from a file, say).
    ///
    /// # Errors
    /// As [`Trainer::new`].
    pub fn from_model(model: Model, optimizer: &OptimizerSpec, seed: u64) -> Result<Self> {
        if model.output_shape() != [CLASSES] {
            return Err(Error::spec(
                format!("layers[{}]", model.spec().layers.len() - 1),
                format!(
                    "the last layer must output {CLASSES} scores, one per digit, not shape {:?}",
                    model.output_shape()
                ),
            ));
        }
        let optimizer_spec = optimizer.clone();
        let optimizer = Optimizer::new(optimizer, model.params())?;
        // A stream apart from the weights' so that changing the architecture keeps the data order.
        let rng = Pcg64::seed_from_u64(seed ^ 0x5eed_da7a);
        Ok(Trainer {
            model,
            optimizer_spec,
            optimizer,
            rng,
            steps: 0,
            epochs: 0,
            augment: false,
            clip_norm: None,
            lr_schedule: LrSchedule::Constant,
            horizon: None,
            early_stopping: None,
            hold_out: None,
            best_weights: Vec::new(),
            #[cfg(feature = "webgpu")]
            engine: None,
            stale: false,
            synced_steps: 0,
            pool: Pool::default(),
        })
    }

    /// Moves training onto `gpu`: later steps run there, with the same results as on the CPU
    /// up to rounding. The step is compiled for `batch_size` at once, so that a model the GPU
    /// cannot run is refused here, with training left on the CPU.
    ///
    /// # Errors
    /// [`Error::Gpu`] when the model has an op without a GPU kernel, or the weights are on
    /// another GPU and not brought back yet.
    #[cfg(feature = "webgpu")]
    pub fn use_gpu(&mut self, gpu: crate::backend::gpu::Gpu, batch_size: usize) -> Result<()> {
        self.check_synced("use_gpu")?;
        let state = self.optimizer.state();
        let mut engine = crate::gpu_step::Engine::new(
            gpu,
            &self.model,
            &self.optimizer_spec,
            &state,
            self.clip_norm,
            self.steps,
        )?;
        engine.prepare(&self.model, batch_size.max(1))?;
        self.engine = Some(engine);
        self.synced_steps = self.steps;
        Ok(())
    }

    /// Goes back to the CPU with the weights last brought back from the GPU (all of them after
    /// a [`Trainer::sync`]; after a lost device, those of the last sync), and returns the step
    /// count training carries on from.
    pub fn use_cpu(&mut self) -> u64 {
        #[cfg(feature = "webgpu")]
        {
            self.engine = None;
        }
        self.steps = self.synced_steps;
        self.stale = false;
        self.steps
    }

    /// On the GPU, what a step at `batch` costs in dispatches and bytes moved, once one ran
    /// (see [`crate::gpu_step::StepCost`]); None on the CPU.
    #[cfg(feature = "webgpu")]
    pub fn gpu_step_cost(&self, batch: usize) -> Option<crate::gpu_step::StepCost> {
        self.engine.as_ref()?.step_cost(batch)
    }

    /// Where training steps run: `cpu`, or the GPU adapter's name.
    pub fn backend(&self) -> String {
        #[cfg(feature = "webgpu")]
        if let Some(engine) = &self.engine {
            return format!("gpu: {}", engine.adapter());
        }
        "cpu".into()
    }

    /// Whether a step cannot be submitted yet: on the GPU, before the results of earlier ones
    /// are collected with [`Trainer::finished_steps`] (a few steps run ahead at most), or while
    /// the weights are being brought back ([`Trainer::finish_sync`]).
    pub fn is_busy(&self) -> bool {
        #[cfg(feature = "webgpu")]
        if let Some(engine) = &self.engine {
            return engine.is_busy();
        }
        false
    }

    /// The steps whose statistics came back from the GPU since the last call, as (step
    /// number, statistics); always empty on the CPU, whose steps report at once.
    ///
    /// # Errors
    /// When the device reported an error or was lost.
    pub fn finished_steps(&mut self) -> Result<Vec<(u64, StepStats)>> {
        #[cfg(feature = "webgpu")]
        if let Some(engine) = &mut self.engine {
            let finished = engine.finished()?;
            if let Some(&(step, stats)) = finished.iter().find(|(_, stats)| diverged(stats.loss)) {
                return Err(Error::Diverged { step, loss: stats.loss, lr: self.optimizer_spec.lr() });
            }
            return Ok(finished);
        }
        Ok(Vec::new())
    }

    /// Starts bringing the model and optimizer state back from the GPU, as they are after the
    /// steps submitted so far; [`Trainer::finish_sync`] completes it.
    pub fn start_sync(&mut self) {
        #[cfg(feature = "webgpu")]
        if let (true, Some(engine)) = (self.stale, &mut self.engine) {
            engine.start_download();
        }
    }

    /// Completes [`Trainer::start_sync`] if the GPU's data has come back; true when the model
    /// is up to date (always, on the CPU).
    ///
    /// # Errors
    /// When the device reported an error or was lost.
    pub fn finish_sync(&mut self) -> Result<bool> {
        #[cfg(feature = "webgpu")]
        if let (true, Some(engine)) = (self.stale, &mut self.engine) {
            // Started here if no one did: several readers may wait for the same download.
            engine.start_download();
            let Some(downloaded) = engine.finish_download()? else { return Ok(false) };
            for (param, value) in self.model.params_mut().iter_mut().zip(downloaded.values) {
                param.value = value;
            }
            self.optimizer.restore(downloaded.optimizer)?;
            self.synced_steps = downloaded.steps;
            self.stale = downloaded.steps != self.steps;
            return Ok(!self.stale);
        }
        Ok(true)
    }

    /// [`Trainer::start_sync`] and [`Trainer::finish_sync`], waiting for the GPU: natively only,
    /// as a browser cannot wait.
    ///
    /// # Errors
    /// When the device reported an error or was lost, or in a browser.
    pub fn sync(&mut self) -> Result<()> {
        self.start_sync();
        self.wait_for_gpu()?;
        if self.finish_sync()? {
            Ok(())
        } else {
            Err(Error::Gpu(
                "the weights did not come back from the GPU; a browser cannot wait for them".into(),
            ))
        }
    }

    fn wait_for_gpu(&self) -> Result<()> {
        #[cfg(feature = "webgpu")]
        if let Some(engine) = &self.engine {
            engine.wait()?;
        }
        Ok(())
    }

    /// An error when the GPU holds newer weights than the model.
    fn check_synced(&self, op: &'static str) -> Result<()> {
        if self.stale {
            return Err(Error::invalid(op, "the newest weights are on the GPU; call Trainer::sync first"));
        }
        Ok(())
    }

    /// Training picked up where [`Trainer::training_state`] left it; `best_weights` are
    /// [`Trainer::best_weights`] as they were (empty without early stopping).
    ///
    /// # Errors
    /// When the model does not output one score per class, the optimizer state or the best
    /// weights do not match the model, or a setting is out of range.
    pub fn resume(
        model: Model,
        state: TrainingState,
        optimizer: OptimizerState,
        best_weights: Vec<Tensor>,
    ) -> Result<Self> {
        let mut trainer = Self::from_model(model, &state.optimizer, 0)?;
        trainer.optimizer.restore(OptimizerState { step: state.optimizer_step, ..optimizer })?;
        trainer.rng = state.rng;
        trainer.steps = state.steps;
        trainer.synced_steps = state.steps;
        trainer.epochs = state.epochs;
        trainer.augment = state.augment;
        trainer.set_clip_norm(state.clip_norm)?;
        if let Some(hold_out) = state.hold_out {
            trainer.set_hold_out(hold_out)?;
        }
        match state.horizon {
            Some(horizon) => trainer.set_lr_schedule(state.lr_schedule, horizon)?,
            None if state.lr_schedule == LrSchedule::Constant => {}
            None => return Err(Error::Checkpoint("the learning-rate schedule has no horizon".into())),
        }
        if let Some(stopping) = state.early_stopping {
            trainer.set_early_stopping(Some(stopping.patience))?;
            let fits = best_weights.len() == trainer.model.params().len()
                && best_weights
                    .iter()
                    .zip(trainer.model.params().iter())
                    .all(|(b, p)| b.shape() == p.value.shape());
            if stopping.best.is_some() && !fits {
                return Err(Error::Checkpoint("the best epoch's weights do not match the model".into()));
            }
            trainer.early_stopping = Some(stopping);
            trainer.best_weights = best_weights;
        }
        Ok(trainer)
    }

    /// Everything needed to resume training exactly, besides the model.
    pub fn training_state(&self) -> (TrainingState, OptimizerState) {
        let optimizer = self.optimizer.state();
        let state = TrainingState {
            optimizer: self.optimizer_spec.clone(),
            optimizer_step: optimizer.step,
            steps: self.steps,
            epochs: self.epochs,
            rng: self.rng.clone(),
            augment: self.augment,
            clip_norm: self.clip_norm,
            lr_schedule: self.lr_schedule,
            horizon: self.horizon,
            early_stopping: self.early_stopping.clone(),
            hold_out: self.hold_out,
        };
        (state, optimizer)
    }

    /// Every parameter's value at the best epoch so far, in [`crate::autograd::Params`] order;
    /// empty before the first validation or without early stopping.
    pub fn best_weights(&self) -> &[Tensor] {
        &self.best_weights
    }

    /// Stops training once the validation loss has not reached a new low for `patience`
    /// epochs (see [`Trainer::observe_validation`]); None turns it off.
    ///
    /// # Errors
    /// When `patience` is 0.
    pub fn set_early_stopping(&mut self, patience: Option<usize>) -> Result<()> {
        if patience == Some(0) {
            return Err(Error::Config {
                name: "early_stop",
                reason: "the patience must be at least 1 epoch".into(),
            });
        }
        self.early_stopping = patience.map(|patience| EarlyStopping { patience, best: None, waited: 0 });
        self.best_weights.clear();
        Ok(())
    }

    pub fn early_stopping(&self) -> Option<&EarlyStopping> {
        self.early_stopping.as_ref()
    }

    /// Records which training pairs the run holds out (the trainer is given the split data;
    /// this only travels with the training state, so that a resumed run splits alike).
    ///
    /// # Errors
    /// When the share is out of range.
    pub fn set_hold_out(&mut self, hold_out: HoldOut) -> Result<()> {
        hold_out.split()?;
        self.hold_out = Some(hold_out);
        Ok(())
    }

    /// The pairs the run holds out, if it said (files saved before this was kept do not).
    pub fn hold_out(&self) -> Option<HoldOut> {
        self.hold_out
    }

    /// Records the validation loss after the epoch just finished: a new lowest loss keeps the
    /// weights as the best, anything else (a loss that is not a number included) counts
    /// toward the patience. True when training should stop; always false without early
    /// stopping.
    ///
    /// # Errors
    /// After GPU steps without [`Trainer::sync`].
    pub fn observe_validation(&mut self, loss: f32) -> Result<bool> {
        self.check_synced("observe_validation")?;
        let epoch = self.epochs;
        let Some(stopping) = &mut self.early_stopping else { return Ok(false) };
        if stopping.best.is_none_or(|(_, best)| loss < best) {
            stopping.best = Some((epoch, loss));
            stopping.waited = 0;
            self.best_weights = self.model.params().iter().map(|p| p.value.clone()).collect();
        } else {
            stopping.waited += 1;
        }
        Ok(stopping.waited >= stopping.patience)
    }

    /// Puts the best epoch's weights back, on the GPU too when training runs there, and
    /// returns that epoch; None (and nothing changes) before any validation.
    ///
    /// # Errors
    /// After GPU steps without [`Trainer::sync`].
    pub fn restore_best(&mut self) -> Result<Option<usize>> {
        self.check_synced("restore_best")?;
        let Some((epoch, _)) = self.early_stopping.as_ref().and_then(|s| s.best) else { return Ok(None) };
        for (param, value) in self.model.params_mut().iter_mut().zip(&self.best_weights) {
            param.value.assign(value);
        }
        #[cfg(feature = "webgpu")]
        if let Some(engine) = &self.engine {
            for (i, param) in self.model.params().iter().enumerate() {
                engine.write_param_at(i, &param.value);
            }
        }
        Ok(Some(epoch))
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Whether training batches are augmented with random shifts and rotations (see
    /// [`preprocess::augment`]).
    pub fn set_augment(&mut self, augment: bool) {
        self.augment = augment;
    }

    /// Scales the gradients down, before every optimizer step, so that their global norm is
    /// at most `max_norm` (None: no clipping). Keeps recurrent networks from exploding.
    ///
    /// # Errors
    /// When `max_norm` is not a positive number.
    pub fn set_clip_norm(&mut self, max_norm: Option<f32>) -> Result<()> {
        if let Some(n) = max_norm.filter(|n| !(n.is_finite() && *n > 0.0)) {
            return Err(Error::Config {
                name: "clip_norm",
                reason: format!("{n} must be a positive number"),
            });
        }
        self.clip_norm = max_norm;
        #[cfg(feature = "webgpu")]
        if let Some(engine) = &mut self.engine {
            engine.set_clip_norm(max_norm);
        }
        Ok(())
    }

    /// Drives the learning rate by `schedule` over a run of `horizon` from now on, counting
    /// from step 0 of the run (the schedule is part of the saved training state).
    ///
    /// # Errors
    /// When a setting of the schedule is out of range, or a schedule other than constant gets
    /// a horizon of no steps or no epochs.
    pub fn set_lr_schedule(&mut self, schedule: LrSchedule, horizon: Horizon) -> Result<()> {
        schedule.validate(self.optimizer_spec.lr())?;
        if schedule != LrSchedule::Constant && (horizon.steps_per_epoch == 0 || horizon.epochs == 0) {
            return Err(Error::Config {
                name: "lr_schedule",
                reason: format!(
                    "a schedule needs at least one step and one epoch, not {} steps per epoch over {} epochs",
                    horizon.steps_per_epoch, horizon.epochs
                ),
            });
        }
        self.lr_schedule = schedule;
        self.horizon = (schedule != LrSchedule::Constant).then_some(horizon);
        Ok(())
    }

    pub fn lr_schedule(&self) -> LrSchedule {
        self.lr_schedule
    }

    /// The learning rate of the next step: the optimizer's, as the schedule has it now.
    pub fn lr(&self) -> f32 {
        self.lr_at(self.steps)
    }

    /// The learning rate of step `step` of the run (counted from 0).
    pub fn lr_at(&self, step: u64) -> f32 {
        let base = self.optimizer_spec.lr();
        match self.horizon {
            Some(horizon) => self.lr_schedule.lr(base, step, horizon),
            None => base,
        }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Epochs finished so far.
    pub fn epochs(&self) -> usize {
        self.epochs
    }

    /// Counts an epoch as finished, for trainers driven batch by batch.
    /// Puts `items` in a fresh random order from the trainer's generator, as
    /// [`Trainer::train_epoch`] orders each epoch: the page's engine shuffles its epochs with
    /// this too, so that the same seed gives the same batches, and the same losses, in the
    /// page and in the CLI.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        items.shuffle(&mut self.rng);
    }

    pub fn finish_epoch(&mut self) {
        self.epochs += 1;
    }

    /// The optimizer and its settings.
    pub fn optimizer_spec(&self) -> &OptimizerSpec {
        &self.optimizer_spec
    }

    /// Whether training images are augmented, and the gradient clipping norm.
    pub fn augment(&self) -> bool {
        self.augment
    }

    pub fn clip_norm(&self) -> Option<f32> {
        self.clip_norm
    }

    /// A tensor of `shape` for the next batch of images, made from memory the last step gave
    /// back: every element must be written.
    pub fn batch_tensor(&mut self, shape: &[usize]) -> Tensor {
        self.pool.take(shape)
    }

    /// One optimizer step on a batch of `images` shaped `[batch, ..input]` with `labels`,
    /// waiting for its results on the GPU (natively only: in a browser, use
    /// [`Trainer::submit_step`]).
    ///
    /// # Errors
    /// When the batch does not fit the model, or the labels do not fit the batch.
    pub fn step(&mut self, images: Tensor, labels: &[u8]) -> Result<StepStats> {
        if let Some(stats) = self.submit_step(images, labels)? {
            return Ok(stats);
        }
        self.wait_for_gpu()?;
        let done = self.finished_steps()?;
        done.last().map(|(_, stats)| *stats).ok_or_else(|| {
            Error::Gpu("the step's results did not come back; a browser cannot wait for them".into())
        })
    }

    /// One optimizer step: on the CPU, done, with its statistics; on the GPU, submitted, its
    /// statistics to be collected with [`Trainer::finished_steps`].
    ///
    /// # Errors
    /// When the batch does not fit the model, the labels do not fit the batch, or on the GPU
    /// when [`Trainer::is_busy`] or the device failed.
    pub fn submit_step(&mut self, mut images: Tensor, labels: &[u8]) -> Result<Option<StepStats>> {
        if self.augment && images.ndim() == 4 {
            let (rows, cols) = (images.shape()[2], images.shape()[3]);
            let pixels = images.as_slice_mut().expect("batches are contiguous");
            for image in pixels.chunks_exact_mut(rows * cols) {
                preprocess::augment(image, rows, cols, &mut self.rng);
            }
        }
        let lr = self.lr();
        #[cfg(feature = "webgpu")]
        if let Some(engine) = &mut self.engine {
            engine.submit(&self.model, &images, labels, &mut self.rng, lr)?;
            self.stale = true;
            self.steps += 1;
            return Ok(None);
        }
        let (model, rng, optimizer, clip_norm, pool) =
            (&mut self.model, &mut self.rng, &mut self.optimizer, self.clip_norm, &mut self.pool);
        let step = self.steps + 1;
        let (loss, accuracy) = cpu::on_pool(|| -> Result<_> {
            let (loss, accuracy, grads, buffers) = {
                let mut tape = Tape::with_pool(model.params(), std::mem::take(pool));
                let x = tape.input(images);
                let logits = model.forward(&mut tape, x, Mode::Train(rng))?;
                let loss = tape.softmax_cross_entropy(logits, labels)?;
                // Checked before the update, so that the weights stay those of the last good
                // step.
                let value = tape.scalar(loss);
                if diverged(value) {
                    *pool = tape.into_pool();
                    return Err(Error::Diverged { step, loss: value, lr });
                }
                let accuracy = accuracy(tape.value(logits), labels);
                let done = (tape.scalar(loss), accuracy, tape.backward(loss)?, tape.take_buffer_updates());
                *pool = tape.into_pool();
                done
            };
            let params = model.params_mut();
            params.zero_grad();
            params.accumulate(&grads);
            grads.recycle(pool);
            pool.end_step();
            if let Some(max_norm) = clip_norm {
                let norm = params.grad_norm();
                if norm > max_norm {
                    let scale = max_norm / norm;
                    params.iter_mut().for_each(|p| p.grad.mapv_inplace(|g| g * scale));
                }
            }
            optimizer.set_lr(lr);
            optimizer.step(params);
            for (id, value) in buffers {
                params.set(id, value);
            }
            Ok((loss, accuracy))
        })?;
        self.steps += 1;
        self.synced_steps = self.steps;
        Ok(Some(StepStats { loss, accuracy, samples: labels.len() }))
    }

    /// One pass over `data` in a fresh random order, in batches of `batch_size` (the last may
    /// be smaller), calling `on_step` after each.
    ///
    /// # Errors
    /// When `batch_size` is zero or a step fails.
    pub fn train_epoch(
        &mut self,
        data: &Dataset,
        batch_size: usize,
        mut on_step: impl FnMut(&StepStats),
    ) -> Result<StepStats> {
        if batch_size == 0 {
            return Err(Error::Config { name: "batch_size", reason: "must be at least 1".into() });
        }
        let mut order: Vec<usize> = (0..data.len()).collect();
        self.shuffle(&mut order);
        let (mut loss, mut correct) = (0.0, 0.0);
        let (rows, cols) = data.image_size();
        for indices in batches(&order, batch_size) {
            let mut images = self.batch_tensor(&[indices.len(), 1, rows, cols]);
            let labels = data.batch_into(indices, &mut images);
            let stats = self.step(images, &labels)?;
            loss += stats.loss * stats.samples as f32;
            correct += stats.accuracy * stats.samples as f32;
            on_step(&stats);
        }
        self.finish_epoch();
        if self.model.has_batch_norm() {
            self.sync()?;
            let positions = recalibration_positions(data.len());
            self.recalibrate_batch_norm(batches(&positions, EVAL_BATCH).map(|chunk| data.batch(chunk).0))?;
        }
        let samples = data.len().max(1) as f32;
        Ok(StepStats { loss: loss / samples, accuracy: correct / samples, samples: data.len() })
    }

    /// Re-estimates every batch norm's running averages at the current weights, as the mean of
    /// its statistics over `batches` (images `[batch, ..input]`) weighted by batch size: the
    /// "precise BN" of Wu and Johnson, *Rethinking "Batch" in BatchNorm* (2021), section 3.
    ///
    /// The averages kept while training follow the weights about `1 / momentum` steps late, so
    /// when the last steps of an epoch moved the weights far, inference on them loses points of
    /// accuracy the weights do not deserve (the resnet preset lost 7 at one epoch's end, and
    /// scored 97% again with its averages re-estimated). [`Trainer::train_epoch`] calls this
    /// after every epoch, as the page's [`crate::playground::Playground`] does. Dropout acts as
    /// in training, drawing from a generator of its own so that the run's random numbers stay
    /// as they were. On the GPU the new averages are written there too. A model without batch
    /// norm is left alone.
    ///
    /// # Errors
    /// When the images do not fit the model or a batch holds one value per channel, or after
    /// GPU steps without [`Trainer::sync`].
    pub fn recalibrate_batch_norm(&mut self, batches: impl IntoIterator<Item = Tensor>) -> Result<()> {
        self.check_synced("recalibrate_batch_norm")?;
        if !self.model.has_batch_norm() {
            return Ok(());
        }
        let mut rng = Pcg64::seed_from_u64(self.steps);
        let mut seen = 0;
        // Each buffer's value before, to put back if a batch fails: all or nothing.
        let mut before: Vec<(ParamId, Tensor)> = Vec::new();
        for images in batches {
            let samples = images.shape().first().copied().unwrap_or(0);
            if samples == 0 {
                continue;
            }
            seen += samples;
            // The first batch replaces the averages, each later one weighs as its share.
            let weight = samples as f32 / seen as f32;
            let updates = {
                let mut tape = Tape::inference(self.model.params());
                let x = tape.input(images);
                match self.model.forward(&mut tape, x, Mode::Recalibrate(&mut rng, weight)) {
                    Ok(_) => tape.take_buffer_updates(),
                    Err(error) => {
                        drop(tape);
                        for (id, value) in before {
                            self.model.params_mut().set(id, value);
                        }
                        return Err(error);
                    }
                }
            };
            for (id, value) in updates {
                if !before.iter().any(|(kept, _)| *kept == id) {
                    before.push((id, self.model.params().get(id).value.clone()));
                }
                self.model.params_mut().set(id, value);
            }
        }
        #[cfg(feature = "webgpu")]
        if let Some(engine) = &self.engine {
            for (id, _) in before {
                engine.write_param_at(id.index(), &self.model.params().get(id).value);
            }
        }
        Ok(())
    }

    /// Class probabilities `[batch, 10]` for `images` shaped `[batch, ..input]`, in inference
    /// mode.
    ///
    /// # Errors
    /// When the images do not fit the model, or after GPU steps without [`Trainer::sync`].
    pub fn predict(&self, images: Tensor) -> Result<Tensor> {
        self.check_synced("predict")?;
        let mut tape = Tape::inference(self.model.params());
        let x = tape.input(images);
        let logits = self.model.forward(&mut tape, x, Mode::Eval)?;
        let probs = tape.softmax(logits)?;
        Ok(tape.value(probs).clone())
    }

    /// Mean loss, accuracy and the confusion matrix over `data`, in inference mode.
    ///
    /// # Errors
    /// When the images do not fit the model or `data` is empty, or after GPU steps without
    /// [`Trainer::sync`].
    pub fn evaluate(&self, data: &Dataset) -> Result<Evaluation> {
        self.check_synced("evaluate")?;
        if data.is_empty() {
            return Err(Error::Data("cannot evaluate on an empty data set".into()));
        }
        let mut confusion = ConfusionMatrix::new(CLASSES);
        let mut loss = 0.0;
        let indices: Vec<usize> = (0..data.len()).collect();
        for chunk in indices.chunks(EVAL_BATCH) {
            let (images, labels) = data.batch(chunk);
            let mut tape = Tape::inference(self.model.params());
            let x = tape.input(images);
            let logits = self.model.forward(&mut tape, x, Mode::Eval)?;
            let batch_loss = tape.softmax_cross_entropy(logits, &labels)?;
            loss += tape.scalar(batch_loss) * labels.len() as f32;
            for (&label, predicted) in labels.iter().zip(argmax_rows(tape.value(logits))) {
                confusion.add(usize::from(label), predicted);
            }
        }
        Ok(Evaluation {
            loss: loss / data.len() as f32,
            accuracy: confusion.accuracy(),
            per_class: confusion.per_class(),
            confusion_matrix: confusion,
        })
    }
}

/// The index of the largest score in each row of `[batch, classes]` scores.
pub fn argmax_rows(scores: &Tensor) -> Vec<usize> {
    let scores = scores.view().into_dimensionality::<Ix2>().expect("scores are [batch, classes]");
    scores
        .axis_iter(Axis(0))
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best })
                .0
        })
        .collect()
}

fn accuracy(logits: &Tensor, labels: &[u8]) -> f32 {
    let hits = argmax_rows(logits).iter().zip(labels).filter(|(&p, &l)| p == usize::from(l)).count();
    hits as f32 / labels.len().max(1) as f32
}

#[cfg(test)]
mod tests {
    use super::{batch_count, batches};

    #[test]
    fn a_single_sample_left_over_joins_the_last_batch() {
        let order: Vec<usize> = (0..9).collect();
        let sizes = |batch| batches(&order, batch).map(<[usize]>::len).collect::<Vec<_>>();
        assert_eq!(sizes(4), [4, 5]);
        assert_eq!(sizes(3), [3, 3, 3]);
        assert_eq!(sizes(2), [2, 2, 2, 3]);
        assert_eq!(sizes(1), [1; 9]);
        assert_eq!(sizes(9), [9]);
        assert_eq!(sizes(8), [9]);
        assert_eq!(sizes(20), [9]);
        for batch in 1..=20 {
            assert_eq!(batch_count(9, batch), sizes(batch).len() as u64, "batch {batch}");
        }
        assert_eq!(batch_count(1, 4), 1);
        assert_eq!(batch_count(0, 4), 0);
        let all: Vec<usize> = batches(&order, 4).flatten().copied().collect();
        assert_eq!(all, order);
    }
}
