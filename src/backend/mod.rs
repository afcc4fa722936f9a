//! Compute backends. The CPU backend is the reference that every other backend is tested against.

pub mod cpu;
#[cfg(feature = "webgpu")]
pub mod gpu;
