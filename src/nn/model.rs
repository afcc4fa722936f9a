//! A sequential model built from a [`ModelSpec`].

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;

use super::{LayerSpec, ModelSpec};
use crate::autograd::{ParamId, Params, Tape, Var};
use crate::backend::cpu::Activation;
use crate::{Error, Result};

/// Whether layers behave as in training (dropout active, drawing from the generator) or in
/// inference.
pub enum Mode<'r> {
    Train(&'r mut Pcg64),
    Eval,
}

enum Layer {
    Dense { weight: ParamId, bias: Option<ParamId>, activation: Option<Activation> },
    Flatten,
    Dropout { rate: f32 },
    Activation(Activation),
}

/// Layers applied in order, and the parameters they own.
pub struct Model {
    spec: ModelSpec,
    layers: Vec<Layer>,
    params: Params,
    output_shape: Vec<usize>,
}

impl Model {
    /// Builds the model a spec describes, drawing initial weights from `seed`.
    ///
    /// # Errors
    /// When the spec is invalid (see [`ModelSpec::output_shape`]).
    pub fn new(spec: ModelSpec, seed: u64) -> Result<Model> {
        let output_shape = spec.output_shape()?;
        let mut rng = Pcg64::seed_from_u64(seed);
        let mut params = Params::default();
        let mut shape = spec.input.clone();
        let mut layers = Vec::with_capacity(spec.layers.len());
        for (i, layer_spec) in spec.layers.iter().enumerate() {
            layers.push(build_layer(layer_spec, i, &shape, &mut params, &mut rng));
            shape = layer_spec.output_shape(&shape, "")?;
        }
        Ok(Model { spec, layers, params, output_shape })
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    pub fn params_mut(&mut self) -> &mut Params {
        &mut self.params
    }

    /// The shape of one output sample.
    pub fn output_shape(&self) -> &[usize] {
        &self.output_shape
    }

    /// Applies every layer to `x`, a batch shaped `[batch, ..spec.input]`.
    ///
    /// # Errors
    /// When `x` does not have the input shape the spec declares.
    pub fn forward(&self, tape: &mut Tape, x: Var, mut mode: Mode) -> Result<Var> {
        let shape = tape.value(x).shape();
        if shape.len() != self.spec.input.len() + 1 || shape[1..] != self.spec.input[..] {
            let expected = format!("expects [batch, {}]", join(&self.spec.input));
            return Err(Error::bad_shape("model input", shape, expected));
        }
        let mut x = x;
        if let Some(norm) = self.spec.normalize {
            let mean = tape.input(crate::tensor::scalar(norm.mean));
            let std = tape.input(crate::tensor::scalar(norm.std));
            let centred = tape.sub(x, mean)?;
            x = tape.div(centred, std)?;
        }
        for layer in &self.layers {
            x = match layer {
                Layer::Dense { weight, bias, activation } => {
                    let w = tape.param(*weight);
                    let mut y = tape.matmul(x, w)?;
                    if let Some(bias) = bias {
                        let b = tape.param(*bias);
                        y = tape.add(y, b)?;
                    }
                    match activation {
                        Some(act) => tape.activation(y, *act),
                        None => y,
                    }
                }
                Layer::Flatten => {
                    let shape = tape.value(x).shape();
                    let batch = shape.first().copied().unwrap_or(1);
                    let features = shape.iter().skip(1).product();
                    tape.reshape(x, &[batch, features])?
                }
                Layer::Dropout { rate } => match &mut mode {
                    Mode::Train(rng) => tape.dropout(x, *rate, || rng.random::<f32>() >= *rate)?,
                    Mode::Eval => x,
                },
                Layer::Activation(act) => tape.activation(x, *act),
            };
        }
        Ok(x)
    }
}

fn build_layer(spec: &LayerSpec, index: usize, input: &[usize], params: &mut Params, rng: &mut Pcg64) -> Layer {
    match *spec {
        LayerSpec::Dense { units, activation, bias, init } => {
            let fan_in = input[0];
            let weight = params.add(format!("layers.{index}.weight"), init.sample(&[fan_in, units], fan_in, units, rng));
            let bias = bias.then(|| params.add(format!("layers.{index}.bias"), crate::tensor::Tensor::zeros(ndarray::IxDyn(&[units]))));
            Layer::Dense { weight, bias, activation: activation.activation() }
        }
        LayerSpec::Flatten => Layer::Flatten,
        LayerSpec::Dropout { rate } => Layer::Dropout { rate },
        LayerSpec::Relu => Layer::Activation(Activation::Relu),
        LayerSpec::LeakyRelu { alpha } => Layer::Activation(Activation::LeakyRelu { alpha }),
        LayerSpec::Sigmoid => Layer::Activation(Activation::Sigmoid),
        LayerSpec::Tanh => Layer::Activation(Activation::Tanh),
    }
}

fn join(sizes: &[usize]) -> String {
    sizes.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
}
