//! Training on the GPU: the model's parameters, gradients and optimizer state in GPU buffers
//! for as long as training runs there, a compiled [`Plan`] per batch size, and the optimizer's
//! update as kernels. The CPU model is brought up to date only when asked (a download), for
//! evaluation, prediction and saving.
//!
//! Nothing here waits for the GPU: a step is submitted and its loss and accuracy are read back
//! through one of a few [`Readback`]s, to be collected by [`Engine::finished`] once mapped;
//! a download likewise. Natively, [`Gpu::poll`] with `wait` makes either immediate; in the
//! browser, the worker comes back for the results.

use std::collections::VecDeque;
use std::rc::Rc;

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;

use super::plan::Plan;
use crate::autograd::Tape;
use crate::backend::gpu::{Buffer, Dispatch, Gpu, Kernel, Readback};
use crate::metrics::StepStats;
use crate::nn::{Mode, Model};
use crate::optim::{OptimizerSpec, OptimizerState};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// What one training step at a batch size costs besides the kernels' own work: the commands
/// it submits and the bytes it moves between the CPU and the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StepCost {
    /// Compute dispatches: the forward kernels, the backward rules and the optimizer's update.
    pub dispatches: usize,
    /// Gradient buffers cleared before the step (copy commands, not dispatches).
    pub clears: usize,
    /// Bytes written to the GPU: the batch's images and labels, dropout masks and the step's
    /// optimizer values.
    pub uploaded: usize,
    /// Bytes read back: the step's loss and accuracy.
    pub downloaded: usize,
}

/// Plans kept at once: the usual batch size and the smaller last batch of an epoch.
const PLANS: usize = 2;
/// Steps submitted whose statistics have not been collected yet, at most.
const IN_FLIGHT: usize = 4;

/// A model's training state on the GPU.
pub struct Engine {
    gpu: Gpu,
    params: Packed,
    grads: Packed,
    shapes: Vec<Vec<usize>>,
    optimizer: OptimizerSpec,
    optimizer_step: u64,
    /// Per optimizer slot (`velocity`, or `m` and `v`), a buffer per parameter.
    slots: Vec<(&'static str, Packed)>,
    /// What changes from step to step: the learning rate and Adam's bias corrections.
    step_values: Buffer,
    /// The sum of squared gradients, for clipping.
    norms: Buffer,
    clip_norm: Option<f32>,
    update: Vec<Dispatch>,
    plans: Vec<Plan>,
    /// `[loss, accuracy]` of submitted steps come back through these, in turn.
    stat_readbacks: Vec<Readback>,
    /// (readback, step number, batch size) of the steps in flight, oldest first.
    in_flight: VecDeque<(usize, u64, usize)>,
    steps: u64,
    /// While a download is under way: the step and optimizer step it is from.
    download: Option<(u64, u64)>,
    /// The readbacks of a download, made once: the parameters', then each slot's tensors'.
    download_readbacks: Vec<Readback>,
}

/// A buffer for each of a model's parameters (or their gradients, or an optimizer slot), the
/// trainable ones packed into one allocation so that one dispatch updates them all and one
/// clear zeroes their gradients; the others (batch norm's running statistics) in another.
struct Packed {
    trainable: Buffer,
    frozen: Buffer,
    /// In the model's order.
    parts: Vec<Rc<Buffer>>,
}

impl Packed {
    fn zeros(gpu: &Gpu, lens: &[usize], trainable: &[bool]) -> Packed {
        let (mut parts, mut order) = (Vec::with_capacity(lens.len()), Vec::with_capacity(lens.len()));
        let mut packs = Vec::new();
        for wanted in [true, false] {
            let indices: Vec<usize> = (0..lens.len()).filter(|&i| trainable[i] == wanted).collect();
            let (whole, views) = gpu.zeros_packed(&indices.iter().map(|&i| lens[i]).collect::<Vec<_>>());
            order.extend(indices);
            parts.extend(views);
            packs.push(whole);
        }
        let mut by_index: Vec<Option<Rc<Buffer>>> = (0..lens.len()).map(|_| None).collect();
        for (i, part) in order.into_iter().zip(parts) {
            by_index[i] = Some(Rc::new(part));
        }
        let frozen = packs.pop().expect("two packs");
        let trainable = packs.pop().expect("two packs");
        Packed { trainable, frozen, parts: by_index.into_iter().map(|p| p.expect("every index")).collect() }
    }

    /// Like [`Packed::zeros`], holding `tensors`.
    fn upload(gpu: &Gpu, tensors: &[&Tensor], trainable: &[bool]) -> Packed {
        let packed = Packed::zeros(gpu, &tensors.iter().map(|t| t.len()).collect::<Vec<_>>(), trainable);
        for (part, tensor) in packed.parts.iter().zip(tensors) {
            write_tensor(gpu, part, tensor);
        }
        packed
    }
}

fn write_tensor(gpu: &Gpu, buffer: &Buffer, tensor: &Tensor) {
    match tensor.as_slice() {
        Some(data) => gpu.write(buffer, data),
        None => gpu.write(buffer, &tensor.iter().copied().collect::<Vec<f32>>()),
    }
}

/// A download's result: the parameters' values, the optimizer state and the step they are from.
pub struct Downloaded {
    pub values: Vec<Tensor>,
    pub optimizer: OptimizerState,
    pub steps: u64,
}

impl Engine {
    /// Moves training of `model` onto `gpu`, with the optimizer's current state.
    ///
    /// # Errors
    /// When the optimizer state does not fit the model.
    pub fn new(
        gpu: Gpu,
        model: &Model,
        optimizer: &OptimizerSpec,
        state: &OptimizerState,
        clip_norm: Option<f32>,
        steps: u64,
    ) -> Result<Engine> {
        let list: Vec<_> = model.params().iter().collect();
        let trainable: Vec<bool> = list.iter().map(|p| p.trainable).collect();
        let values: Vec<&Tensor> = list.iter().map(|p| &p.value).collect();
        let params = Packed::upload(&gpu, &values, &trainable);
        let grads = Packed::zeros(&gpu, &values.iter().map(|t| t.len()).collect::<Vec<_>>(), &trainable);
        let mut slots = Vec::new();
        for (name, tensors) in &state.slots {
            if tensors.len() != list.len() || tensors.iter().zip(&values).any(|(t, v)| t.shape() != v.shape())
            {
                return Err(Error::Gpu(format!("the optimizer's `{name}` does not match the model")));
            }
            slots.push((*name, Packed::upload(&gpu, &tensors.iter().collect::<Vec<_>>(), &trainable)));
        }
        let mut engine = Engine {
            params,
            grads,
            shapes: list.iter().map(|p| p.value.shape().to_vec()).collect(),
            optimizer: optimizer.clone(),
            optimizer_step: state.step,
            slots,
            step_values: gpu.zeros(3),
            norms: gpu.zeros(1),
            clip_norm,
            update: Vec::new(),
            plans: Vec::new(),
            stat_readbacks: (0..IN_FLIGHT).map(|_| gpu.readback(2)).collect(),
            in_flight: VecDeque::new(),
            steps,
            download: None,
            download_readbacks: Vec::new(),
            gpu,
        };
        engine.build_update();
        Ok(engine)
    }

    /// Replaces the value of the parameter at `index` (in the model's order) on the GPU, in
    /// queue order: steps submitted later see it.
    pub fn write_param_at(&self, index: usize, value: &Tensor) {
        write_tensor(&self.gpu, &self.params.parts[index], value);
    }

    /// The adapter training runs on.
    pub fn adapter(&self) -> &str {
        self.gpu.adapter()
    }

    /// Changes the gradient clipping norm of later steps.
    pub fn set_clip_norm(&mut self, clip_norm: Option<f32>) {
        self.clip_norm = clip_norm;
        self.build_update();
    }

    /// The optimizer's dispatches: the squared gradient sum when clipping, then one update of
    /// every trainable parameter (packed, so one dispatch does them all).
    fn build_update(&mut self) {
        let gpu = &self.gpu;
        let max_norm = self.clip_norm.unwrap_or(0.0).to_bits();
        let (params, grads) = (&self.params.trainable, &self.grads.trainable);
        let n = params.len();
        let mut update = Vec::new();
        if self.clip_norm.is_some() {
            let sum = [n as u32];
            update.push(gpu.dispatch_groups(Kernel::SumSquares, &sum, &[grads, &self.norms], (1, 1, 1)));
        }
        let common = [&self.step_values, &self.norms, params, grads];
        update.push(match self.optimizer {
            OptimizerSpec::Sgd { momentum, weight_decay, .. } => {
                let p = [n as u32, momentum.to_bits(), weight_decay.to_bits(), max_norm];
                let velocity = &self.slots[0].1.trainable;
                gpu.dispatch(Kernel::Sgd, &p, &[common[0], common[1], common[2], common[3], velocity], n)
            }
            OptimizerSpec::Adam { beta1, beta2, eps, weight_decay, .. } => {
                let p = [
                    n as u32,
                    beta1.to_bits(),
                    beta2.to_bits(),
                    eps.to_bits(),
                    weight_decay.to_bits(),
                    max_norm,
                ];
                let (m, v) = (&self.slots[0].1.trainable, &self.slots[1].1.trainable);
                gpu.dispatch(Kernel::Adam, &p, &[common[0], common[1], common[2], common[3], m, v], n)
            }
        });
        self.update = update;
    }

    /// Compiles the step for batches of `batch_size` ahead of the first one.
    ///
    /// # Errors
    /// When the model has an op the GPU cannot run.
    pub fn prepare(&mut self, model: &Model, batch_size: usize) -> Result<()> {
        self.plan_for(model, batch_size).map(|_| ())
    }

    /// The plan for `batch` images, compiled when missing.
    fn plan_for(&mut self, model: &Model, batch: usize) -> Result<usize> {
        if let Some(at) = self.plans.iter().position(|p| p.batch == batch) {
            return Ok(at);
        }
        let mut shape = vec![batch];
        shape.extend_from_slice(&model.spec().input);
        let plan = self.compile(model, &shape)?;
        if self.plans.len() == PLANS {
            self.plans.remove(0);
        }
        self.plans.push(plan);
        Ok(self.plans.len() - 1)
    }

    /// Whether no step can be submitted now: as many are in flight as can be (collect
    /// [`Engine::finished`]), or a download is under way, which then holds the weights after
    /// exactly the steps submitted so far.
    pub fn is_busy(&self) -> bool {
        self.in_flight.len() == IN_FLIGHT || self.download.is_some()
    }

    /// Submits one optimizer step on a batch at learning rate `lr`, as
    /// [`crate::train::Trainer::step`] takes it on the CPU: dropout masks are drawn from `rng`
    /// in the same order. Its statistics come back through [`Engine::finished`].
    ///
    /// # Errors
    /// When the model has an op the GPU cannot run, the device reported an error, or
    /// [`Engine::is_busy`].
    pub fn submit(
        &mut self,
        model: &Model,
        images: &Tensor,
        labels: &[u8],
        rng: &mut Pcg64,
        lr: f32,
    ) -> Result<()> {
        self.gpu.check()?;
        let batch = labels.len();
        if images.shape()[0] != batch {
            return Err(Error::mismatch("step", images.shape(), &[batch]));
        }
        if self.download.is_some() {
            return Err(Error::Gpu("the weights are being brought back; finish that first".into()));
        }
        let Some(slot) = (0..IN_FLIGHT).find(|&i| !self.stat_readbacks[i].is_busy()) else {
            return Err(Error::Gpu("too many steps in flight; collect their results first".into()));
        };
        let at = self.plan_for(model, batch)?;
        let plan = &self.plans[at];
        let gpu = &self.gpu;
        gpu.write(&plan.image, images.as_standard_layout().as_slice().expect("standard layout"));
        gpu.write(&plan.labels, &labels.iter().map(|&l| u32::from(l)).collect::<Vec<u32>>());
        for &(node, rate) in &plan.dropouts {
            let mask = &plan.scratch[node][0];
            let scale = 1.0 / (1.0 - rate);
            let values: Vec<f32> =
                (0..mask.len()).map(|_| if rng.random::<f32>() >= rate { scale } else { 0.0 }).collect();
            gpu.write(mask, &values);
        }
        self.optimizer_step += 1;
        gpu.write(&self.step_values, &self.step_values(lr));
        let packed = [&self.grads.trainable, &self.grads.frozen];
        let zero: Vec<&Buffer> = packed.into_iter().chain(plan.zero.iter().map(|b| &**b)).collect();
        let dispatches: Vec<&Dispatch> = plan.dispatches.iter().chain(&self.update).collect();
        gpu.run(&zero, &dispatches);
        gpu.start_read(&plan.stats, &self.stat_readbacks[slot]);
        self.steps += 1;
        self.in_flight.push_back((slot, self.steps, batch));
        Ok(())
    }

    /// The step number and statistics of the submitted steps whose results have come back,
    /// oldest first.
    ///
    /// # Errors
    /// When the device reported an error or was lost.
    pub fn finished(&mut self) -> Result<Vec<(u64, StepStats)>> {
        self.gpu.poll(false)?;
        let mut done = Vec::new();
        while let Some(&(slot, step, samples)) = self.in_flight.front() {
            let Some(stats) = self.gpu.finish_read::<f32>(&self.stat_readbacks[slot])? else { break };
            self.in_flight.pop_front();
            done.push((step, StepStats { loss: stats[0], accuracy: stats[1], samples }));
        }
        Ok(done)
    }

    /// Waits for the work submitted so far (natively; in a browser this returns at once).
    ///
    /// # Errors
    /// When the device reported an error or was lost.
    pub fn wait(&self) -> Result<()> {
        self.gpu.poll(true)
    }

    /// `[lr, 1 - beta1^t, 1 - beta2^t]` for the step about to run at learning rate `lr`.
    /// What a step at `batch` costs, once one has been compiled for it (None before).
    pub fn step_cost(&self, batch: usize) -> Option<StepCost> {
        let plan = self.plans.iter().find(|p| p.batch == batch)?;
        let f32s = |n: usize| n * std::mem::size_of::<f32>();
        let masks: usize = plan.dropouts.iter().map(|&(node, _)| plan.scratch[node][0].len()).sum();
        Some(StepCost {
            dispatches: plan.dispatches.len() + self.update.len(),
            clears: 2 + plan.zero.len(),
            uploaded: f32s(plan.image.len() + batch + masks + self.step_values.len()),
            downloaded: f32s(plan.stats.len()),
        })
    }

    fn step_values(&self, lr: f32) -> [f32; 3] {
        let t = i32::try_from(self.optimizer_step).unwrap_or(i32::MAX);
        match self.optimizer {
            OptimizerSpec::Sgd { .. } => [lr, 1.0, 1.0],
            OptimizerSpec::Adam { beta1, beta2, .. } => [lr, 1.0 - beta1.powi(t), 1.0 - beta2.powi(t)],
        }
    }

    /// Records the model's training step once on the CPU and compiles it.
    fn compile(&self, model: &Model, shape: &[usize]) -> Result<Plan> {
        let batch = shape[0];
        let mut tape = Tape::tracing(model.params());
        let image = tape.input(Tensor::zeros(ndarray::IxDyn(shape)));
        let mut scratch = Pcg64::seed_from_u64(0);
        let logits = model.forward(&mut tape, image, Mode::Train(&mut scratch))?;
        let loss = tape.softmax_cross_entropy(logits, &vec![0; batch])?;
        Plan::compile(&self.gpu, &tape, Some(image), loss, &self.params.parts, &self.grads.parts)
    }

    /// Starts bringing the parameters and the optimizer state back, as they are after the
    /// steps submitted so far; [`Engine::finish_download`] takes them.
    pub fn start_download(&mut self) {
        if self.download.is_some() {
            return;
        }
        let slots = self.slots.iter().flat_map(|(_, packed)| &packed.parts);
        let buffers: Vec<&Buffer> = self.params.parts.iter().chain(slots).map(|b| &**b).collect();
        if self.download_readbacks.is_empty() {
            self.download_readbacks = buffers.iter().map(|b| self.gpu.readback(b.len())).collect();
        }
        for (buffer, readback) in buffers.iter().zip(&self.download_readbacks) {
            self.gpu.start_read(buffer, readback);
        }
        self.download = Some((self.steps, self.optimizer_step));
    }

    /// The download started by [`Engine::start_download`], or None while it is on its way.
    ///
    /// # Errors
    /// When the device reported an error or was lost.
    pub fn finish_download(&mut self) -> Result<Option<Downloaded>> {
        self.gpu.poll(false)?;
        let Some((steps, optimizer_step)) = self.download else {
            return Err(Error::Gpu("no download was started".into()));
        };
        if !self.download_readbacks.iter().all(Readback::is_settled) {
            return Ok(None);
        }
        self.download = None;
        let mut tensors = Vec::with_capacity(self.download_readbacks.len());
        for (i, readback) in self.download_readbacks.iter().enumerate() {
            let data: Vec<f32> = self.gpu.finish_read(readback)?.expect("checked ready");
            let shape = &self.shapes[i % self.shapes.len()];
            tensors.push(
                Tensor::from_shape_vec(ndarray::IxDyn(shape), data).expect("the parameter's own shape"),
            );
        }
        let count = self.params.parts.len();
        let mut rest = tensors.split_off(count);
        let mut slots = Vec::new();
        for (name, _) in &self.slots {
            let tail = rest.split_off(count);
            slots.push((*name, std::mem::replace(&mut rest, tail)));
        }
        let optimizer = OptimizerState { step: optimizer_step, slots };
        Ok(Some(Downloaded { values: tensors, optimizer, steps }))
    }
}
