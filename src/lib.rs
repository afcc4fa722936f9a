//! Ferrograd: tensors, reverse-mode autodiff and small neural networks that train in a
//! browser tab (through WebAssembly) or natively, with the same code.
//!
//! The layers of the crate, bottom up:
//! - [`tensor`]: the tensor type and its shape rules;
//! - [`backend`]: the kernels (the CPU one is the reference);
//! - [`autograd`]: the tape that records ops and runs their backward rules;
//! - [`nn`]: layers and models described by a JSON spec;
//! - [`optim`]: SGD with momentum and Adam, and learning-rate schedules;
//! - [`data`]: the incremental IDX decoder, data sets and the validation split;
//! - [`metrics`], [`train`], [`checkpoint`]: what training needs around the model;
//! - [`sweep`]: hyperparameter sweeps, as the CLI and the page read them;
//! - `web`: the JavaScript boundary, in the wasm build only.

pub mod autograd;
pub mod backend;
pub mod checkpoint;
pub mod data;
mod error;
#[cfg(feature = "tools")]
pub mod export;
#[cfg(feature = "webgpu")]
pub mod gpu_step;
pub mod inspect;
pub mod measure;
pub mod metrics;
pub mod nn;
pub mod optim;
pub mod playground;
pub mod sweep;
pub mod tensor;
pub mod train;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use error::{Error, Result};
