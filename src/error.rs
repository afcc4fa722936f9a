//! The crate's one error type. Every public fallible function returns [`Result`].

use thiserror::Error;

/// Everything that can go wrong in ferrograd, with enough context to act on.
#[derive(Debug, Error)]
pub enum Error {
    /// Two operands whose shapes cannot be combined by `op`.
    #[error("{op}: shapes {lhs:?} and {rhs:?} are incompatible")]
    ShapeMismatch { op: &'static str, lhs: Vec<usize>, rhs: Vec<usize> },

    /// An operand whose shape `op` cannot take, whatever the other operands.
    #[error("{op}: {reason} (got shape {shape:?})")]
    BadShape { op: &'static str, shape: Vec<usize>, reason: String },

    /// An argument outside what `op` accepts (an axis out of range, a label above the class count...).
    #[error("{op}: {reason}")]
    InvalidArgument { op: &'static str, reason: String },

    /// A model spec that cannot be built; `location` is a JSON path such as `layers[2].units`.
    #[error("model spec, {location}: {reason}")]
    Spec { location: String, reason: String },

    /// Training or optimizer settings outside their valid range.
    #[error("setting `{name}`: {reason}")]
    Config { name: &'static str, reason: String },

    /// Bytes that are not a valid IDX stream; `stream` names it (a file or URL).
    #[error("{stream}: {reason}")]
    Idx { stream: String, reason: String },

    /// A data set that cannot be used as given (mismatched parts, wrong image size...).
    #[error("data: {0}")]
    Data(String),

    /// A file that cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// A model that cannot be exported.
    #[error("export: {0}")]
    Export(String),

    /// A saved model that cannot be read back.
    #[error("checkpoint: {0}")]
    Checkpoint(String),

    /// A training step whose loss is not finite or exploded: the step was not applied (on the
    /// CPU; on the GPU it was, and the weights from before the last sync are the good ones).
    #[error("training diverged at step {step}: the loss is {loss}; lower the learning rate (now {lr}) or clip the gradients")]
    Diverged { step: u64, loss: f32, lr: f32 },

    /// No usable GPU, a lost device, or a model the GPU backend cannot run.
    #[error("gpu: {0}")]
    Gpu(String),
}

/// Result with the crate's [`Error`](enum@Error).
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid(op: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument { op, reason: reason.into() }
    }

    pub(crate) fn bad_shape(op: &'static str, shape: &[usize], reason: impl Into<String>) -> Self {
        Error::BadShape { op, shape: shape.to_vec(), reason: reason.into() }
    }

    pub(crate) fn mismatch(op: &'static str, lhs: &[usize], rhs: &[usize]) -> Self {
        Error::ShapeMismatch { op, lhs: lhs.to_vec(), rhs: rhs.to_vec() }
    }

    pub(crate) fn spec(location: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Spec { location: location.into(), reason: reason.into() }
    }
}

/// `n` with commas between thousands: 78,400,000,100.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() * 4 / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
