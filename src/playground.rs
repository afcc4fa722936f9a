//! The engine behind the page: data streaming in while a model trains on what has arrived.
//!
//! A [`Playground`] owns the data (four IDX streams fed chunk by chunk), the trainer and the
//! epoch bookkeeping. The first data source trains while it downloads; a later source is
//! decoded aside and replaces the current data only once it has arrived whole and valid, so a
//! bad URL or a broken file never costs the data and model already there.

use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::data::{preprocess, Dataset, DatasetBuilder, HoldOut, ValidationSplit};
use crate::nn::ModelSpec;
use crate::optim::{Horizon, LrSchedule, OptimizerSpec};
use crate::tensor::Tensor;
use crate::train::{
    argmax_rows, batch_count, batches, recalibration_positions, Evaluation, StepStats, Trainer, EVAL_BATCH,
};
use crate::{Error, Result};

/// How training runs, apart from the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrainingConfig {
    pub optimizer: OptimizerSpec,
    pub batch_size: usize,
    pub epochs: usize,
    pub seed: u64,
    /// Drop unreadable training images (see [`preprocess::is_readable`]).
    pub clean: bool,
    /// Shift and rotate training images at random (see [`preprocess::augment`]).
    pub augment: bool,
    /// Clip gradients to this global norm before each step.
    #[serde(default)]
    pub clip_norm: Option<f32>,
    /// How the learning rate changes over the run's epochs.
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// The share of the training pairs held out to validate on after every epoch (0: none),
    /// stratified by class and chosen by the seed (see [`ValidationSplit`]).
    #[serde(default)]
    pub val_split: f32,
    /// Stop once the validation loss has not reached a new low for this many epochs, ending
    /// with the best epoch's weights (needs a validation split).
    #[serde(default)]
    pub early_stop: Option<usize>,
}

impl TrainingConfig {
    /// The training pairs these settings hold out to validate on.
    pub fn hold_out(&self) -> HoldOut {
        HoldOut { share: self.val_split, seed: self.seed }
    }

    /// # Errors
    /// [`Error::Config`] naming the first setting out of range.
    pub fn validate(&self) -> Result<()> {
        self.optimizer.validate()?;
        let limit = |name: &'static str, v: usize, max: usize| {
            if (1..=max).contains(&v) {
                Ok(())
            } else {
                Err(Error::Config { name, reason: format!("{v} is not between 1 and {max}") })
            }
        };
        limit("batchSize", self.batch_size, 4096)?;
        limit("epochs", self.epochs, 1000)?;
        self.lr_schedule.validate(self.optimizer.lr())?;
        self.hold_out().split()?;
        if self.early_stop.is_some() && self.val_split == 0.0 {
            return Err(Error::Config {
                name: "earlyStop",
                reason: "early stopping watches the validation loss, so it needs a validation split".into(),
            });
        }
        if self.early_stop == Some(0) {
            return Err(Error::Config {
                name: "earlyStop",
                reason: "the patience must be at least 1 epoch".into(),
            });
        }
        Ok(())
    }
}

/// The four streams of a data source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Part {
    TrainImages,
    TrainLabels,
    TestImages,
    TestLabels,
}

struct Source {
    train: DatasetBuilder,
    test: DatasetBuilder,
    /// Ended early with an error; what decoded before it is kept and counts as complete.
    broken: bool,
}

impl Source {
    fn new(names: &[String; 4]) -> Self {
        Source {
            train: DatasetBuilder::new(names[0].clone(), names[1].clone()),
            test: DatasetBuilder::new(names[2].clone(), names[3].clone()),
            broken: false,
        }
    }

    /// Decodes a chunk of one stream. Images whose size the model cannot take are refused in
    /// the chunk that completes their header (whose images are then no use: see
    /// [`Source::is_usable`]).
    fn feed(&mut self, part: Part, chunk: &[u8], model: &ModelSpec) -> Result<usize> {
        let set = match part {
            Part::TrainImages | Part::TrainLabels => &mut self.train,
            Part::TestImages | Part::TestLabels => &mut self.test,
        };
        let completed = match part {
            Part::TrainImages | Part::TestImages => set.feed_images(chunk)?,
            Part::TrainLabels | Part::TestLabels => set.feed_labels(chunk)?,
        };
        if let Some((rows, cols)) = set.image_size() {
            if check_fits(model, (rows, cols)).is_err() {
                return Err(Error::Idx {
                    stream: set.images_name().to_owned(),
                    reason: format!(
                        "the header declares {rows}x{cols} images, but the model takes input {:?}; choose data or a model that match",
                        model.input
                    ),
                });
            }
        }
        Ok(completed)
    }

    /// Whether both sets hold at least one pair, of images `model` takes: a source short of
    /// that is no use.
    fn is_usable(&self, model: &ModelSpec) -> bool {
        [&self.train, &self.test].iter().all(|set| {
            set.pairs() > 0 && set.image_size().is_some_and(|size| check_fits(model, size).is_ok())
        })
    }

    fn is_complete(&self) -> bool {
        self.broken || (self.train.is_complete() && self.test.is_complete())
    }
}

/// One training sample: from the data source, or drawn by the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sample {
    Stream(usize),
    Example(usize),
}

/// What a call to [`Playground::step`] did.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "camelCase")]
pub enum Progress {
    /// One step ran, or on the GPU was submitted (its `stats` then come later from
    /// [`Playground::finished_steps`]); `epoch_finished` when it was the last of an epoch.
    #[serde(rename_all = "camelCase")]
    Trained { stats: Option<StepStats>, epoch_finished: bool },
    /// The GPU has as many steps in flight as it takes: collect their results first.
    Busy,
    /// No full batch has arrived yet.
    Waiting,
    /// Every epoch has run.
    Done,
}

/// Where training and the data stand, for progress bars.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub epoch: usize,
    pub epochs: usize,
    /// Samples done in the current epoch, and how many it will have (an estimate while the
    /// data still arrives: what the header declares).
    pub epoch_done: usize,
    pub epoch_size: usize,
    pub steps: u64,
    pub train_available: usize,
    pub train_declared: Option<usize>,
    pub test_available: usize,
    pub test_declared: Option<usize>,
    pub data_complete: bool,
    /// A source is being loaded: the first, which trains as it arrives, or a replacement
    /// decoded aside while the current data stays in use.
    pub loading: bool,
    pub dropped: usize,
    pub examples: usize,
    /// Where training runs (`cpu`, or `gpu: ` and the adapter), and why when the GPU was
    /// asked for and is not used.
    pub backend: String,
    pub backend_note: Option<String>,
    /// Threads the CPU kernels use (one unless the threaded module runs).
    pub threads: usize,
    /// What they compute with (see [`crate::backend::cpu::INSTRUCTIONS`]).
    pub instructions: &'static str,
    /// The learning rate of the next step.
    pub lr: f32,
    /// Training pairs held out for validation so far.
    pub validation_size: usize,
    /// The epoch whose weights early stopping put back, once it ended the run.
    pub best_epoch: Option<usize>,
}

/// Scores on the held-out training pairs after an epoch (see [`Playground::validate`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Validation {
    pub loss: f32,
    pub accuracy: f32,
    /// The epoch whose weights the model now has, when early stopping ended the run (or the
    /// run ended with early stopping on).
    pub best_epoch: Option<usize>,
    /// Whether early stopping ended the run before its last epoch.
    pub stopped_early: bool,
}

/// Test images with their labels and the model's predictions, for a grid in the page.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Showcase {
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
    pub predicted: Vec<u8>,
}

/// Data, model and the state of training.
pub struct Playground {
    config: TrainingConfig,
    trainer: Trainer,
    data: Option<Source>,
    /// A source being downloaded to replace `data` once whole.
    incoming: Option<Source>,
    /// Whether `data` itself is still being fed (the first source trains as it arrives).
    data_live: bool,
    examples: Dataset,
    epoch: usize,
    order: Vec<Sample>,
    position: usize,
    /// Whether the epoch's order still grows as training pairs arrive: the first pass over a
    /// source that is still downloading takes pairs in arrival order (the files come shuffled).
    growing: bool,
    /// Training pairs of the source examined for cleaning so far, and those kept.
    checked: usize,
    usable: Vec<usize>,
    dropped: usize,
    /// The training pairs held out for validation, and the split that picks them as they
    /// arrive (after cleaning, as the CLI splits the cleaned set).
    validation: Dataset,
    split: ValidationSplit,
    /// The epoch whose weights early stopping put back, once it stopped the run.
    stopped_at: Option<usize>,
    /// Whether batch norm's running averages wait to be re-estimated after an epoch, once the
    /// weights are back from the GPU (see [`Playground::finish_sync`]).
    recalibrate: bool,
    /// The GPU that every new trainer moves onto, when one is in use, and why it was chosen
    /// (for the status).
    #[cfg(feature = "webgpu")]
    gpu: Option<(crate::backend::gpu::Gpu, Option<String>)>,
    backend_note: Option<String>,
}

impl Playground {
    /// A playground with no data yet.
    ///
    /// # Errors
    /// When the spec or the settings are invalid.
    pub fn new(spec: ModelSpec, config: TrainingConfig) -> Result<Self> {
        let trainer = Self::build_trainer(spec.clone(), &config)?;
        let (rows, cols) = image_size(&spec);
        let split = config.hold_out().split()?;
        Ok(Playground {
            config,
            trainer,
            data: None,
            incoming: None,
            data_live: false,
            examples: Dataset::empty(rows, cols),
            epoch: 0,
            order: Vec::new(),
            position: 0,
            growing: false,
            checked: 0,
            usable: Vec::new(),
            dropped: 0,
            validation: Dataset::empty(rows, cols),
            split,
            stopped_at: None,
            recalibrate: false,
            #[cfg(feature = "webgpu")]
            gpu: None,
            backend_note: None,
        })
    }

    /// Trains on `gpu` from now on, also after configure, reset and restore; a model the GPU
    /// cannot run stays on the CPU, with the reason in [`Status::backend_note`], else `note`
    /// is there (why the GPU).
    ///
    /// # Errors
    /// When the current weights are still on another GPU (sync first).
    #[cfg(feature = "webgpu")]
    pub fn use_gpu(&mut self, gpu: crate::backend::gpu::Gpu, note: Option<String>) -> Result<()> {
        self.gpu = Some((gpu, note));
        self.move_to_gpu()
    }

    #[cfg(feature = "webgpu")]
    fn move_to_gpu(&mut self) -> Result<()> {
        // On the CPU, the note use_cpu left stands.
        let Some((gpu, note)) = &self.gpu else { return Ok(()) };
        self.backend_note = note.clone();
        match self.trainer.use_gpu(gpu.clone(), self.config.batch_size) {
            Err(Error::Gpu(reason)) => {
                self.backend_note = Some(reason);
                Ok(())
            }
            other => other,
        }
    }

    /// Trains on the CPU from now on. After [`Playground::finish_sync`] nothing is lost; after a
    /// lost device, training carries on from the weights last brought back. Returns the step
    /// count it carries on from; `note` says why, for the status.
    pub fn use_cpu(&mut self, note: Option<String>) -> u64 {
        #[cfg(feature = "webgpu")]
        {
            self.gpu = None;
        }
        self.backend_note = note;
        self.trainer.use_cpu()
    }

    /// Statistics of GPU steps that have come back since the last call: (step, stats).
    ///
    /// # Errors
    /// When the device reported an error or was lost.
    pub fn finished_steps(&mut self) -> Result<Vec<(u64, StepStats)>> {
        self.trainer.finished_steps()
    }

    /// Starts bringing the weights back from the GPU for evaluation, prediction or saving.
    pub fn start_sync(&mut self) {
        self.trainer.start_sync();
    }

    /// True once the weights are back (at once on the CPU). After an epoch, it also
    /// re-estimates batch norm's running averages on the weights that came back, as
    /// [`Trainer::train_epoch`] does, so that the epoch's evaluation is the CLI's.
    ///
    /// # Errors
    /// When the device reported an error or was lost.
    pub fn finish_sync(&mut self) -> Result<bool> {
        if !self.trainer.finish_sync()? {
            return Ok(false);
        }
        if std::mem::take(&mut self.recalibrate) {
            self.recalibrate_batch_norm()?;
        }
        Ok(true)
    }

    /// [`Trainer::recalibrate_batch_norm`] on the samples [`recalibration_positions`] picks from
    /// an epoch's samples in their stored order: the usable pairs of the source in arrival
    /// (file) order, then the drawn examples, so that on the same files the CLI picks the same.
    fn recalibrate_batch_norm(&mut self) -> Result<()> {
        let Some(data) = &self.data else { return Ok(()) };
        let samples: Vec<Sample> = (self.usable.iter().map(|&i| Sample::Stream(i)))
            .chain((0..self.examples.len()).map(Sample::Example))
            .collect();
        let positions = recalibration_positions(samples.len());
        let (rows, cols) = self.examples.image_size();
        let examples = &self.examples;
        let images = batches(&positions, EVAL_BATCH).map(|chunk| {
            let mut images = Tensor::zeros(ndarray::IxDyn(&[chunk.len(), 1, rows, cols]));
            let picked = chunk.iter().map(|&p| samples[p]);
            gather(data, examples, picked, images.as_slice_mut().expect("a fresh tensor is contiguous"));
            images
        });
        self.trainer.recalibrate_batch_norm(images)
    }

    fn build_trainer(spec: ModelSpec, config: &TrainingConfig) -> Result<Trainer> {
        config.validate()?;
        let mut trainer = Trainer::new(spec, &config.optimizer, config.seed)?;
        trainer.set_augment(config.augment);
        trainer.set_clip_norm(config.clip_norm)?;
        trainer.set_early_stopping(config.early_stop)?;
        trainer.set_hold_out(config.hold_out())?;
        Ok(trainer)
    }

    /// Spans the learning-rate schedule over the run's epochs of `epoch_size` training pairs,
    /// as the CLI does over its training set (until the data is whole, the size its header
    /// declares is the estimate).
    fn plan_schedule(&mut self, epoch_size: usize) -> Result<()> {
        let horizon = Horizon {
            steps_per_epoch: batch_count(epoch_size, self.config.batch_size).max(1),
            epochs: self.config.epochs,
        };
        self.trainer.set_lr_schedule(self.config.lr_schedule, horizon)
    }

    /// A new model and settings; training starts over on the same data. On error nothing
    /// changes.
    ///
    /// # Errors
    /// When the spec or the settings are invalid, or the model's input does not fit the data.
    pub fn configure(&mut self, spec: ModelSpec, config: TrainingConfig) -> Result<()> {
        let trainer = Self::build_trainer(spec, &config)?;
        self.install(trainer)?;
        self.config = config;
        self.recheck_cleaning();
        Ok(())
    }

    /// Puts `trainer` in place with its epochs starting over, if its model fits the data;
    /// on error nothing changes.
    fn install(&mut self, trainer: Trainer) -> Result<()> {
        let spec = trainer.model().spec();
        if let Some(size) = self.data.as_ref().and_then(|d| d.train.image_size()) {
            check_fits(spec, size)?;
        }
        let (rows, cols) = image_size(spec);
        if self.examples.image_size() != (rows, cols) {
            // Only without data (the data fits the model): nothing is held out yet either.
            self.examples = Dataset::empty(rows, cols);
            self.validation = Dataset::empty(rows, cols);
        }
        self.trainer = trainer;
        self.restart_epochs();
        #[cfg(feature = "webgpu")]
        self.move_to_gpu()?;
        Ok(())
    }

    /// Training starts over from fresh weights, with the same model, settings and data.
    pub fn reset(&mut self) {
        let spec = self.trainer.model().spec().clone();
        let config = self.config.clone();
        self.configure(spec, config).expect("the current settings were valid");
    }

    /// The model, the optimizer's state and the progress of training, as a safetensors file
    /// that [`restore`](Self::restore) continues from.
    pub fn save(&self) -> Vec<u8> {
        checkpoint::save_trainer(&self.trainer)
    }

    /// Continues training from a file saved by [`save`](Self::save): its model, optimizer
    /// and progress replace the current ones, and it holds out the training pairs the file's
    /// run held out (its validation share and seed win); the data, batch size and epoch count
    /// stay. The epoch that was under way when the file was saved starts over.
    ///
    /// # Errors
    /// When the file is not a ferrograd training file (truncated, foreign, tensors that do
    /// not match its spec) or its model does not fit the data; nothing changes then.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let trainer = checkpoint::load_trainer(bytes)?;
        let (optimizer, augment, clip_norm, lr_schedule) =
            (trainer.optimizer_spec().clone(), trainer.augment(), trainer.clip_norm(), trainer.lr_schedule());
        let early_stop = trainer.early_stopping().map(|s| s.patience);
        let hold_out = trainer.hold_out().unwrap_or(self.config.hold_out());
        if early_stop.is_some() && hold_out.share == 0.0 {
            return Err(Error::Checkpoint(
                "the file trains with early stopping, which needs a validation split: set one first".into(),
            ));
        }
        self.install(trainer)?;
        self.config.optimizer = optimizer;
        self.config.augment = augment;
        self.config.clip_norm = clip_norm;
        self.config.lr_schedule = lr_schedule;
        self.config.early_stop = early_stop;
        if hold_out != self.config.hold_out() {
            (self.config.val_split, self.config.seed) = (hold_out.share, hold_out.seed);
            self.recheck_cleaning();
        }
        self.epoch = self.trainer.epochs().min(self.config.epochs);
        Ok(())
    }

    pub fn trainer(&self) -> &Trainer {
        &self.trainer
    }

    pub fn config(&self) -> &TrainingConfig {
        &self.config
    }

    /// Starts a data source whose four streams errors will call `names` (URLs, say). The
    /// first source trains as it arrives; any later one is decoded aside.
    pub fn begin_load(&mut self, names: [String; 4]) {
        let source = Source::new(&names);
        if self.data.is_none() {
            self.data = Some(source);
            self.data_live = true;
            self.restart_epochs();
        } else {
            self.incoming = Some(source);
        }
    }

    /// Decodes a chunk of one stream of the source being loaded; returns the items completed.
    ///
    /// # Errors
    /// When no load is in progress or the bytes are not valid; the load then stops, and only
    /// a first source keeps what decoded before the error.
    pub fn feed(&mut self, part: Part, chunk: &[u8]) -> Result<usize> {
        let spec = self.trainer.model().spec();
        let result = match (&mut self.incoming, &mut self.data) {
            (Some(source), _) => source.feed(part, chunk, spec),
            (None, Some(live)) if self.data_live => live.feed(part, chunk, spec),
            _ => return Err(Error::Data("no data source is being loaded".into())),
        };
        if result.is_err() {
            self.abort_load();
        } else if self.incoming.is_none() {
            // The live source's new pairs count at once (held out, dropped) in the status.
            self.take_arrivals();
        }
        result
    }

    /// Ends the load once every stream has ended.
    ///
    /// # Errors
    /// When a stream stopped short, or the images do not fit the model; a replacement source
    /// is then dropped and the current data kept.
    pub fn end_load(&mut self) -> Result<()> {
        if let Some(incoming) = self.incoming.take() {
            incoming.train.check_complete()?;
            incoming.test.check_complete()?;
            check_fits(self.trainer.model().spec(), incoming.train.image_size().unwrap_or_default())?;
            self.data = Some(incoming);
            self.restart_epochs();
            self.recheck_cleaning();
        } else if self.data_live {
            let live = self.data.as_ref().expect("a live load has data");
            let checked = live.train.check_complete().and_then(|()| live.test.check_complete());
            if checked.is_err() {
                self.abort_load();
            }
            self.data_live = false;
            checked?;
        }
        Ok(())
    }

    /// Stops the load in progress (a failed download, say): a replacement source is dropped;
    /// a first source keeps what it decoded and trains on that if it holds both training and
    /// test pairs, and is dropped whole otherwise, so that evaluation never meets an empty set.
    pub fn abort_load(&mut self) {
        if self.incoming.take().is_none() && self.data_live {
            self.data_live = false;
            let model = self.trainer.model().spec();
            match &mut self.data {
                Some(live) if live.is_usable(model) => live.broken = true,
                _ => {
                    self.data = None;
                    self.restart_epochs();
                    self.recheck_cleaning();
                }
            }
        }
    }

    /// Adds a user's drawing with its label to the training data, from the next epoch on.
    ///
    /// # Errors
    /// When the image does not have the model's input size or the label is not a digit.
    pub fn add_example(&mut self, pixels: &[u8], label: u8) -> Result<usize> {
        self.examples.push(pixels, label)?;
        Ok(self.examples.len())
    }

    pub fn clear_examples(&mut self) {
        let (rows, cols) = self.examples.image_size();
        self.examples = Dataset::empty(rows, cols);
        self.order.retain(|s| matches!(s, Sample::Stream(_)));
        self.position = self.position.min(self.order.len());
    }

    /// Trains on the next batch if one is available.
    ///
    /// # Errors
    /// When the batch does not fit the model (images of another size than its input).
    pub fn step(&mut self) -> Result<Progress> {
        if self.epoch >= self.config.epochs {
            return Ok(Progress::Done);
        }
        self.take_arrivals();
        let complete = self.data.as_ref().is_some_and(Source::is_complete);
        if self.order.is_empty() && !self.growing {
            if complete {
                self.order = self.usable.iter().map(|&i| Sample::Stream(i)).collect();
                self.order.extend((0..self.examples.len()).map(Sample::Example));
                // With the trainer's generator, as Trainer::train_epoch: one seed, one run.
                self.trainer.shuffle(&mut self.order);
                self.plan_schedule(self.order.len())?;
            } else {
                self.growing = true;
                let declared = self.data.as_ref().and_then(|d| d.train.declared()).unwrap_or(0);
                let kept = (declared as f64 * (1.0 - f64::from(self.config.val_split))).round() as usize;
                self.plan_schedule(kept.max(self.usable.len()) + self.examples.len())?;
            }
        }
        if self.growing {
            let known = self.order.iter().filter(|s| matches!(s, Sample::Stream(_))).count();
            self.order.extend(self.usable[known..].iter().map(|&i| Sample::Stream(i)));
            if complete {
                self.order.extend((0..self.examples.len()).map(Sample::Example));
                self.growing = false;
            }
        }
        let available = self.order.len() - self.position;
        let mut batch_size = self.config.batch_size.min(available);
        // A single sample left over joins this batch, as in Trainer::train_epoch (see
        // train::batches).
        if complete && available == batch_size + 1 && batch_size > 1 {
            batch_size = available;
        }
        if available == 0 || (available < self.config.batch_size && !complete) {
            return Ok(Progress::Waiting);
        }
        if self.trainer.is_busy() {
            return Ok(Progress::Busy);
        }
        let (images, labels) = self.batch(self.position..self.position + batch_size);
        let stats = self.trainer.submit_step(images, &labels)?;
        self.position += batch_size;
        let epoch_finished = complete && self.position == self.order.len();
        if epoch_finished {
            self.epoch += 1;
            self.trainer.finish_epoch();
            self.recalibrate = self.trainer.model().has_batch_norm();
            self.order.clear();
            self.position = 0;
        }
        Ok(Progress::Trained { stats, epoch_finished })
    }

    /// Examines the training pairs that arrived since the last call, once each, for cleaning.
    fn take_arrivals(&mut self) {
        let Some(data) = &self.data else { return };
        let arrived = data.train.pairs();
        for i in self.checked..arrived {
            if self.config.clean && !preprocess::is_readable(data.train.image(i)) {
                self.dropped += 1;
            } else if self.split.holds_out(data.train.label(i)) {
                // Copied once as it arrives, so that each epoch's validation reads it as is.
                self.validation
                    .push(data.train.image(i), data.train.label(i))
                    .expect("every image's size was checked against the examples' when it arrived");
            } else {
                self.usable.push(i);
            }
        }
        self.checked = arrived;
    }

    /// The samples at `positions` of the epoch's order as a batch, in memory the trainer's
    /// last step gave back.
    fn batch(&mut self, positions: std::ops::Range<usize>) -> (Tensor, Vec<u8>) {
        let data = self.data.as_ref().expect("samples exist only with data");
        let (rows, cols) = self.examples.image_size();
        let mut images = self.trainer.batch_tensor(&[positions.len(), 1, rows, cols]);
        let pixels = images.as_slice_mut().expect("a fresh batch is contiguous");
        let labels = gather(data, &self.examples, self.order[positions].iter().copied(), pixels);
        (images, labels)
    }

    fn restart_epochs(&mut self) {
        self.epoch = 0;
        self.recalibrate = false;
        self.stopped_at = None;
        self.order.clear();
        self.position = 0;
        self.growing = false;
    }

    /// The data or the cleaning setting changed: examine the arrived pairs again.
    fn recheck_cleaning(&mut self) {
        self.checked = 0;
        self.usable.clear();
        let (rows, cols) = self.examples.image_size();
        self.validation = Dataset::empty(rows, cols);
        self.split = self.config.hold_out().split().expect("the settings were validated");
        self.dropped = 0;
        self.take_arrivals();
    }

    /// After an epoch's last step and [`Playground::finish_sync`]: the loss and accuracy on
    /// the held-out pairs, which early stopping watches (None without a validation split).
    /// When early stopping ends the run, or the run reaches its last epoch with early
    /// stopping on, the best epoch's weights are put back (so the test evaluation that
    /// follows is theirs) and training is done.
    ///
    /// # Errors
    /// When the weights are still on the GPU.
    pub fn validate(&mut self) -> Result<Option<Validation>> {
        if self.validation.is_empty() {
            return Ok(None);
        }
        let evaluation = self.trainer.evaluate(&self.validation)?;
        let stop = self.trainer.observe_validation(evaluation.loss)?;
        let mut validation = Validation {
            loss: evaluation.loss,
            accuracy: evaluation.accuracy,
            best_epoch: None,
            stopped_early: false,
        };
        if self.config.early_stop.is_some() && (stop || self.epoch >= self.config.epochs) {
            validation.best_epoch = self.trainer.restore_best()?;
            validation.stopped_early = self.epoch < self.config.epochs;
            self.stopped_at = validation.best_epoch;
            self.epoch = self.config.epochs;
            self.order.clear();
            self.position = 0;
        }
        Ok(Some(validation))
    }

    /// Scores on the test pairs that have arrived, with predictions for the first `showcase`
    /// of them.
    ///
    /// # Errors
    /// When no test image has arrived yet.
    pub fn evaluate(&self, showcase: usize) -> Result<(Evaluation, Showcase)> {
        let test = self.data.as_ref().map(|d| d.test.take_from(0)).unwrap_or_default();
        let evaluation = self.trainer.evaluate(&test)?;
        let shown: Vec<usize> = (0..showcase.min(test.len())).collect();
        let (images, labels) = test.batch(&shown);
        let predicted = if shown.is_empty() {
            Vec::new()
        } else {
            argmax_rows(&self.trainer.predict(images)?).into_iter().map(|p| p as u8).collect()
        };
        let pixels = shown.iter().flat_map(|&i| test.image(i).iter().copied()).collect();
        Ok((evaluation, Showcase { pixels, labels, predicted }))
    }

    /// Where training and the data stand.
    pub fn status(&self) -> Status {
        let (train, test) = match &self.data {
            Some(d) => ((d.train.pairs(), d.train.declared()), (d.test.pairs(), d.test.declared())),
            None => ((0, None), (0, None)),
        };
        let complete = self.data.as_ref().is_some_and(Source::is_complete);
        let epoch_size = if self.growing || (self.order.is_empty() && !complete) {
            // Still arriving: the header's count is the best estimate.
            train.1.unwrap_or(train.0).max(self.order.len())
        } else if self.order.is_empty() {
            self.usable.len() + self.examples.len()
        } else {
            self.order.len()
        };
        Status {
            epoch: self.epoch,
            epochs: self.config.epochs,
            epoch_done: self.position,
            epoch_size,
            steps: self.trainer.steps(),
            train_available: train.0,
            train_declared: train.1,
            test_available: test.0,
            test_declared: test.1,
            data_complete: complete,
            loading: self.incoming.is_some() || self.data_live,
            dropped: self.dropped,
            backend: self.trainer.backend(),
            backend_note: self.backend_note.clone(),
            threads: crate::backend::cpu::threads(),
            instructions: crate::backend::cpu::INSTRUCTIONS,
            examples: self.examples.len(),
            lr: self.trainer.lr(),
            validation_size: self.validation.len(),
            best_epoch: self.stopped_at,
        }
    }
}

/// Writes the scaled pixels of `samples` into `pixels`, one image after another, and returns
/// their labels.
fn gather(
    data: &Source,
    examples: &Dataset,
    samples: impl ExactSizeIterator<Item = Sample>,
    pixels: &mut [f32],
) -> Vec<u8> {
    let size = examples.image_size().0 * examples.image_size().1;
    let mut labels = Vec::with_capacity(samples.len());
    for (sample, out) in samples.zip(pixels.chunks_exact_mut(size)) {
        let (image, label) = match sample {
            Sample::Stream(i) => (data.train.image(i), data.train.label(i)),
            Sample::Example(i) => (examples.image(i), examples.labels()[i]),
        };
        // Every image's size was checked against the examples' when it arrived.
        preprocess::scale(image, out);
        labels.push(label);
    }
    labels
}

fn image_size(spec: &ModelSpec) -> (usize, usize) {
    match spec.input[..] {
        [.., rows, cols] => (rows, cols),
        [n] => (1, n),
        [] => (0, 0),
    }
}

fn check_fits(spec: &ModelSpec, (rows, cols): (usize, usize)) -> Result<()> {
    if spec.input != [1, rows, cols] {
        return Err(Error::Data(format!(
            "the data has {rows}x{cols} images but the model takes input {:?}",
            spec.input
        )));
    }
    Ok(())
}
