//! Data: the IDX decoder, labelled image sets and batching, and (natively) reading the
//! standard MNIST files from a folder.

mod dataset;
#[cfg(not(target_arch = "wasm32"))]
mod files;
pub mod idx;
pub mod preprocess;
mod split;

pub use dataset::{Dataset, DatasetBuilder, CLASSES};
#[cfg(not(target_arch = "wasm32"))]
pub use files::{load_mnist, Mnist, FILE_NAMES};
pub use idx::IdxDecoder;
pub use split::{HoldOut, ValidationSplit, MAX_VALIDATION_SHARE};
