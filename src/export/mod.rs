//! Exporting trained models to other tools.

pub mod onnx;
mod proto;
