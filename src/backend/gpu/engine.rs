//! Training on the GPU: the model's parameters, gradients and optimizer state in GPU buffers
//! for as long as training runs there, a compiled [`Plan`] per batch size, and the optimizer's
//! update as kernels. The CPU model is brought up to date only when asked
//! ([`Engine::download`]), for evaluation, prediction and saving.

use std::rc::Rc;

use rand::Rng;
use rand::SeedableRng;
use rand_pcg::Pcg64;

use super::plan::Plan;
use super::{Buffer, Dispatch, Gpu, Kernel};
use crate::autograd::Tape;
use crate::nn::{Mode, Model};
use crate::optim::{OptimizerSpec, OptimizerState};
use crate::tensor::Tensor;
use crate::train::StepStats;
use crate::{Error, Result};

/// Plans kept at once: the usual batch size and the smaller last batch of an epoch.
const PLANS: usize = 2;

/// A model's training state on the GPU.
pub struct Engine {
    gpu: Gpu,
    params: Vec<Rc<Buffer>>,
    grads: Vec<Rc<Buffer>>,
    trainable: Vec<bool>,
    shapes: Vec<Vec<usize>>,
    optimizer: OptimizerSpec,
    optimizer_step: u64,
    /// Per optimizer slot (`velocity`, or `m` and `v`), one buffer per parameter.
    slots: Vec<(&'static str, Vec<Buffer>)>,
    /// What changes from step to step: the learning rate and Adam's bias corrections.
    step_values: Buffer,
    /// Each parameter's sum of squared gradients, for clipping.
    norms: Buffer,
    clip_norm: Option<f32>,
    update: Vec<Dispatch>,
    plans: Vec<Plan>,
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
    ) -> Result<Engine> {
        let upload = |t: &Tensor| gpu.upload(&t.iter().copied().collect::<Vec<f32>>());
        let list: Vec<_> = model.params().iter().collect();
        let params = list.iter().map(|p| Rc::new(upload(&p.value))).collect();
        let grads = list.iter().map(|p| Rc::new(gpu.zeros(p.value.len()))).collect();
        let mut slots = Vec::new();
        for (name, tensors) in &state.slots {
            if tensors.len() != list.len() {
                return Err(Error::Gpu(format!("the optimizer's `{name}` does not match the model")));
            }
            slots.push((*name, tensors.iter().map(upload).collect()));
        }
        let mut engine = Engine {
            params,
            grads,
            trainable: list.iter().map(|p| p.trainable).collect(),
            shapes: list.iter().map(|p| p.value.shape().to_vec()).collect(),
            optimizer: optimizer.clone(),
            optimizer_step: state.step,
            slots,
            step_values: gpu.zeros(3),
            norms: gpu.zeros(list.len()),
            clip_norm,
            update: Vec::new(),
            plans: Vec::new(),
            gpu,
        };
        engine.build_update();
        Ok(engine)
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

    /// The optimizer's dispatches: each trainable parameter's squared gradient sum when
    /// clipping, then its update.
    fn build_update(&mut self) {
        let gpu = &self.gpu;
        let count = self.params.len() as u32;
        let max_norm = self.clip_norm.unwrap_or(0.0).to_bits();
        let trainable: Vec<usize> = (0..self.params.len()).filter(|&i| self.trainable[i]).collect();
        let mut update = Vec::new();
        if self.clip_norm.is_some() {
            for &i in &trainable {
                let params = [self.grads[i].len() as u32, i as u32];
                update.push(gpu.dispatch_groups(
                    Kernel::SumSquares,
                    &params,
                    &[&self.grads[i], &self.norms],
                    (1, 1),
                ));
            }
        }
        for &i in &trainable {
            let n = self.params[i].len();
            let common = [&self.step_values, &self.norms, &*self.params[i], &*self.grads[i]];
            let dispatch = match self.optimizer {
                OptimizerSpec::Sgd { momentum, weight_decay, .. } => {
                    let params = [n as u32, momentum.to_bits(), weight_decay.to_bits(), count, max_norm];
                    let velocity = &self.slots[0].1[i];
                    gpu.dispatch(
                        Kernel::Sgd,
                        &params,
                        &[common[0], common[1], common[2], common[3], velocity],
                        n,
                    )
                }
                OptimizerSpec::Adam { beta1, beta2, eps, weight_decay, .. } => {
                    let params = [
                        n as u32,
                        beta1.to_bits(),
                        beta2.to_bits(),
                        eps.to_bits(),
                        weight_decay.to_bits(),
                        count,
                        max_norm,
                    ];
                    let (m, v) = (&self.slots[0].1[i], &self.slots[1].1[i]);
                    let buffers = [common[0], common[1], common[2], common[3], m, v];
                    gpu.dispatch(Kernel::Adam, &params, &buffers, n)
                }
            };
            update.push(dispatch);
        }
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

    /// One optimizer step on a batch, as [`crate::train::Trainer::step`] takes it on the CPU:
    /// dropout masks are drawn from `rng` in the same order.
    ///
    /// # Errors
    /// When the model has an op the GPU cannot run, or the device is lost.
    pub fn step(
        &mut self,
        model: &Model,
        images: &Tensor,
        labels: &[u8],
        rng: &mut Pcg64,
    ) -> Result<StepStats> {
        let batch = labels.len();
        if images.shape()[0] != batch {
            return Err(Error::mismatch("step", images.shape(), &[batch]));
        }
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
        gpu.write(&self.step_values, &self.step_values());
        let zero: Vec<&Buffer> = plan.zero.iter().map(|b| &**b).collect();
        let dispatches: Vec<&Dispatch> = plan.dispatches.iter().chain(&self.update).collect();
        gpu.run(&zero, &dispatches);
        let stats: Vec<f32> = self.read_stats(at)?;
        Ok(StepStats { loss: stats[0], accuracy: stats[1], samples: batch })
    }

    fn read_stats(&self, plan: usize) -> Result<Vec<f32>> {
        let plan = &self.plans[plan];
        self.gpu.read_through(&plan.stats, &plan.stats_readback)
    }

    /// `[lr, 1 - beta1^t, 1 - beta2^t]` for the step about to run.
    fn step_values(&self) -> [f32; 3] {
        let t = i32::try_from(self.optimizer_step).unwrap_or(i32::MAX);
        match self.optimizer {
            OptimizerSpec::Sgd { lr, .. } => [lr, 1.0, 1.0],
            OptimizerSpec::Adam { lr, beta1, beta2, .. } => [lr, 1.0 - beta1.powi(t), 1.0 - beta2.powi(t)],
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
        if !tape.take_buffer_updates().is_empty() {
            return Err(Error::Gpu(
                "batch_norm's running statistics are not computed on the GPU yet; train this model on the CPU".into(),
            ));
        }
        Plan::compile(&self.gpu, &tape, Some(image), loss, &self.params, &self.grads)
    }

    /// Copies the parameters into `model` and returns the optimizer state, waiting for the GPU.
    ///
    /// # Errors
    /// When the device is lost.
    pub fn download(&self, model: &mut Model) -> Result<OptimizerState> {
        let tensor = |buffer: &Buffer, shape: &[usize]| -> Result<Tensor> {
            let data: Vec<f32> = self.gpu.read(buffer)?;
            Ok(Tensor::from_shape_vec(ndarray::IxDyn(shape), data).expect("the parameter's own shape"))
        };
        for (i, param) in model.params_mut().iter_mut().enumerate() {
            param.value = tensor(&self.params[i], &self.shapes[i])?;
        }
        let mut slots = Vec::new();
        for (name, buffers) in &self.slots {
            let tensors: Result<Vec<Tensor>> =
                buffers.iter().zip(&self.shapes).map(|(b, s)| tensor(b, s)).collect();
            slots.push((*name, tensors?));
        }
        Ok(OptimizerState { step: self.optimizer_step, slots })
    }
}
