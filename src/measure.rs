//! Where a model trains faster, measured: a throwaway copy of it takes training steps on a
//! batch of zeros, so that the choice between the CPU and a GPU comes from the speed of this
//! model at this batch size on this machine, and the run itself is untouched.
//!
//! A GPU's name and type are hints, not the answer: a software adapter (SwiftShader,
//! lavapipe) trains the presets at a tenth of the CPU's speed or less, and an integrated GPU
//! may lose to the CPU on a small model whose step is mostly dispatch overhead.

use crate::nn::ModelSpec;
use crate::optim::OptimizerSpec;
use crate::train::Trainer;
use crate::Result;

/// How much faster the GPU must measure before training moves there: below this the CPU's
/// exact reproducibility (bit for bit across machines and with the CLI) is worth more.
pub const GPU_MARGIN: f64 = 1.1;

/// Times training steps of a copy of a model on a batch of zeros (the values do not change
/// the work a step does).
pub struct StepTimer {
    trainer: Trainer,
    shape: Vec<usize>,
    labels: Vec<u8>,
    submitted: u64,
    finished: u64,
}

impl StepTimer {
    /// A fresh copy of `spec` trained with `optimizer` at `batch_size`, on the CPU.
    ///
    /// # Errors
    /// When the spec or the optimizer is invalid.
    pub fn new(spec: ModelSpec, optimizer: &OptimizerSpec, batch_size: usize) -> Result<Self> {
        let batch_size = batch_size.max(1);
        let shape = [&[batch_size][..], &spec.input].concat();
        let trainer = Trainer::new(spec, optimizer, 0)?;
        Ok(StepTimer { trainer, shape, labels: vec![0; batch_size], submitted: 0, finished: 0 })
    }

    /// The same on `gpu`.
    ///
    /// # Errors
    /// [`crate::Error::Gpu`] when the model has an op the GPU cannot run.
    #[cfg(feature = "webgpu")]
    pub fn on_gpu(mut self, gpu: crate::backend::gpu::Gpu) -> Result<Self> {
        self.trainer.use_gpu(gpu, self.labels.len())?;
        Ok(self)
    }

    /// Samples in one step.
    pub fn batch_size(&self) -> usize {
        self.labels.len()
    }

    /// Takes a step: on the CPU, done now; on a GPU, queued unless a few are queued already.
    /// Returns whether a step was taken or queued.
    ///
    /// # Errors
    /// When the device failed.
    pub fn submit(&mut self) -> Result<bool> {
        if self.trainer.is_busy() {
            self.collect()?;
            if self.trainer.is_busy() {
                return Ok(false);
            }
        }
        let images = self.zeros();
        if self.trainer.submit_step(images, &self.labels)?.is_some() {
            self.finished += 1;
        }
        self.submitted += 1;
        Ok(true)
    }

    /// Steps finished so far (on a GPU, those whose results have come back).
    ///
    /// # Errors
    /// When the device failed.
    pub fn finished(&mut self) -> Result<u64> {
        self.collect()?;
        Ok(self.finished)
    }

    /// A batch of zeros, in memory the last step gave back.
    fn zeros(&mut self) -> crate::tensor::Tensor {
        let mut images = self.trainer.batch_tensor(&self.shape);
        images.fill(0.0);
        images
    }

    fn collect(&mut self) -> Result<()> {
        self.finished += self.trainer.finished_steps()?.len() as u64;
        Ok(())
    }

    /// Samples per second, waiting for each step: one step first that is not counted (it
    /// makes the GPU's buffers and warms the caches), then steps until `budget` seconds have
    /// passed, at least one. A first step that alone takes longer than `budget` ends the
    /// measure with the speed it implies, an upper bound. Natively only: a browser cannot
    /// wait for its GPU (see the page's worker, which times [`StepTimer::submit`] itself).
    ///
    /// # Errors
    /// When a step fails.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn samples_per_second(&mut self, budget: f64) -> Result<f64> {
        use std::time::Instant;
        let batch = self.labels.len() as f64;
        let started = Instant::now();
        self.step()?;
        let first = started.elapsed().as_secs_f64();
        if first > budget {
            return Ok(batch / first);
        }
        let started = Instant::now();
        let mut steps = 0;
        while steps == 0 || started.elapsed().as_secs_f64() < budget {
            self.step()?;
            steps += 1;
        }
        Ok(steps as f64 * batch / started.elapsed().as_secs_f64())
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn step(&mut self) -> Result<()> {
        let images = self.zeros();
        self.trainer.step(images, &self.labels)?;
        self.submitted += 1;
        self.finished += 1;
        Ok(())
    }
}

/// The verdict on a measured pair of speeds (samples per second): whether to train on the
/// GPU, and the ratio to say so with.
pub fn prefer_gpu(cpu: f64, gpu: f64) -> (bool, f64) {
    let ratio = gpu / cpu;
    (ratio >= GPU_MARGIN, ratio)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_on_the_cpu_finish_at_once_and_are_timed() {
        let spec = ModelSpec::preset("mlp").unwrap();
        let mut timer = StepTimer::new(spec, &OptimizerSpec::adam(1e-3), 16).unwrap();
        assert!(timer.submit().unwrap());
        assert_eq!(timer.finished().unwrap(), 1);
        let rate = timer.samples_per_second(0.05).unwrap();
        assert!(rate.is_finite() && rate > 0.0, "{rate}");
        assert!(timer.finished().unwrap() >= 3);
    }

    #[test]
    fn the_gpu_is_taken_only_when_measurably_faster() {
        assert_eq!(prefer_gpu(1000.0, 3100.0), (true, 3.1));
        assert!(!prefer_gpu(1000.0, 1050.0).0);
        assert!(!prefer_gpu(48_698.0, 2_793.0).0);
    }
}
