//! Layers and models built from the autograd ops, described by a serde [`ModelSpec`].

mod init;
mod model;
pub mod recurrent;
mod spec;
mod transformer;

pub use init::Init;
pub use model::{Mode, Model, Trace};
pub use spec::{
    conv_window, ActivationName, LayerSpec, ModelSpec, Normalize, Padding, Summary, SummaryRow,
    MAX_PARAMETERS, MAX_SAMPLE_VALUES,
};
pub use transformer::AttentionTrace;
