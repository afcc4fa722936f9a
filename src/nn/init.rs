//! Seeded weight initialisation.

use ndarray::IxDyn;
use rand::Rng;
use serde::Serialize;

use crate::tensor::Tensor;

/// How a layer's weights are drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// Uniform in `±sqrt(6 / (fan_in + fan_out))` (Glorot & Bengio 2010), the Keras default.
    #[default]
    GlorotUniform,
    /// Uniform in `±sqrt(6 / fan_in)` (He et al. 2015), which keeps the variance of relu layers.
    HeUniform,
}

impl Init {
    /// A weight tensor of `shape` whose fans are `fan_in` and `fan_out`.
    pub fn sample(self, shape: &[usize], fan_in: usize, fan_out: usize, rng: &mut impl Rng) -> Tensor {
        let limit = match self {
            Init::GlorotUniform => (6.0 / (fan_in + fan_out) as f32).sqrt(),
            Init::HeUniform => (6.0 / fan_in as f32).sqrt(),
        };
        Tensor::from_shape_simple_fn(IxDyn(shape), || rng.random_range(-limit..limit))
    }
}
