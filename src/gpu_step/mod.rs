//! A training step compiled for the GPU, and training there.
//!
//! This sits above [`crate::autograd`] (it compiles the ops a tape recorded into dispatches of
//! their forward kernels and backward rules), [`crate::nn`] and [`crate::optim`] (the model's
//! parameters and the optimizer's update, kept in GPU buffers), and below [`crate::train`],
//! which drives it. The device, the buffers and the WGSL kernels it dispatches are
//! [`crate::backend::gpu`]'s, below autograd with the CPU kernels.

mod engine;
mod plan;

pub use engine::{Downloaded, Engine, StepCost};
pub use plan::run_on_gpu;
