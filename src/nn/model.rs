//! A model built from a [`ModelSpec`]: layers in order, where a residual block holds layers of
//! its own; one recursive builder and one recursive forward pass serve every depth.

use ndarray::IxDyn;
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;

use super::recurrent::{Cell, Recurrent, StepTrace};
use super::spec::{conv_window, Padding};
use super::transformer::{AttentionTrace, LayerNorm, MultiHeadAttention, PatchEmbed, Projection};
use super::{Init, LayerSpec, ModelSpec};
use crate::autograd::{ParamId, Params, RunningStatistics, Tape, Var};
use crate::backend::cpu::Activation;
use crate::tensor::Tensor;
use crate::{Error, Result};

/// Whether layers behave as in training (dropout active, drawing from the generator;
/// batch norm on batch statistics) or in inference.
pub enum Mode<'r> {
    Train(&'r mut Pcg64),
    Eval,
    /// As in training, except that every batch norm moves its running averages toward this
    /// batch's statistics by the given weight instead of by its momentum: the pass that
    /// re-estimates them at fixed weights (see [`crate::train::Trainer::recalibrate_batch_norm`]).
    Recalibrate(&'r mut Pcg64, f32),
}

impl Mode<'_> {
    /// The generator that dropout draws from, in the modes that drop.
    fn dropout_rng(&mut self) -> Option<&mut Pcg64> {
        match self {
            Mode::Train(rng) | Mode::Recalibrate(rng, _) => Some(rng),
            Mode::Eval => None,
        }
    }
}

enum Layer {
    Dense {
        weight: ParamId,
        bias: Option<ParamId>,
        activation: Option<Activation>,
    },
    Conv2d {
        weight: ParamId,
        bias: Option<ParamId>,
        stride: usize,
        padding: Padding,
        activation: Option<Activation>,
    },
    MaxPool2d {
        size: usize,
        stride: usize,
    },
    AvgPool2d {
        size: usize,
        stride: usize,
    },
    BatchNorm(BatchNorm),
    Recurrent(Recurrent),
    Flatten,
    Reshape(Vec<usize>),
    Dropout {
        rate: f32,
    },
    Activation(Activation),
    Residual {
        body: Vec<Layer>,
        shortcut: Option<Vec<Layer>>,
    },
    LayerNorm(LayerNorm),
    Attention(MultiHeadAttention),
    PatchEmbed(PatchEmbed),
    GlobalAvgPool,
}

struct BatchNorm {
    gamma: ParamId,
    beta: ParamId,
    running_mean: ParamId,
    running_var: ParamId,
    momentum: f32,
    eps: f32,
}

/// The intermediate values of one forward pass that the page shows: the output of every
/// top-level layer (a residual block's is its sum), every step of the top-level recurrent
/// layers, and the weights of every attention layer at any depth.
#[derive(Default)]
pub struct Trace {
    /// `(layer index, output)` for every top-level layer.
    pub outputs: Vec<(usize, Var)>,
    /// `(layer index, steps)` for every top-level recurrent layer.
    pub recurrent: Vec<(usize, Vec<StepTrace>)>,
    /// Every attention layer's weights, in the order the layers run.
    pub attention: Vec<AttentionTrace>,
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
        let layers = build_layers(&spec.layers, "layers", &spec.input, &mut params, &mut rng)?;
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

    /// Whether a batch norm sits anywhere in the model, blocks included.
    pub fn has_batch_norm(&self) -> bool {
        fn any(layers: &[Layer]) -> bool {
            layers.iter().any(|layer| match layer {
                Layer::BatchNorm(_) => true,
                Layer::Residual { body, shortcut } => any(body) || shortcut.as_deref().is_some_and(any),
                _ => false,
            })
        }
        any(&self.layers)
    }

    /// Applies every layer to `x`, a batch shaped `[batch, ..spec.input]`.
    ///
    /// # Errors
    /// When `x` does not have the input shape the spec declares.
    pub fn forward(&self, tape: &mut Tape, x: Var, mode: Mode) -> Result<Var> {
        self.forward_traced(tape, x, mode, None)
    }

    /// [`Model::forward`], recording intermediate values in `trace`.
    ///
    /// # Errors
    /// As [`Model::forward`].
    pub fn forward_traced(
        &self,
        tape: &mut Tape,
        x: Var,
        mut mode: Mode,
        mut trace: Option<&mut Trace>,
    ) -> Result<Var> {
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
        for (index, layer) in self.layers.iter().enumerate() {
            x = apply(layer, tape, x, &mut mode, trace.as_deref_mut(), Some(index))?;
            if let Some(trace) = trace.as_deref_mut() {
                trace.outputs.push((index, x));
            }
        }
        Ok(x)
    }
}

/// Applies `layer` to `x`; `index` is its place among the top-level layers (None inside a
/// block), under which the trace keeps its recurrent steps.
fn apply(
    layer: &Layer,
    tape: &mut Tape,
    x: Var,
    mode: &mut Mode,
    mut trace: Option<&mut Trace>,
    index: Option<usize>,
) -> Result<Var> {
    Ok(match layer {
        Layer::Dense { weight, bias, activation } => {
            // A sequence [batch, tokens, inputs] is projected token by token, as rows of one
            // [batch * tokens, inputs] matrix.
            let shape = tape.value(x).shape().to_vec();
            let rows = match *shape {
                [batch, tokens, inputs] => tape.reshape(x, &[batch * tokens, inputs])?,
                _ => x,
            };
            let w = tape.param(*weight);
            let y = tape.matmul(rows, w)?;
            let y = add_bias(tape, y, *bias, &[])?;
            let y = activate(tape, y, *activation);
            if shape.len() > 2 {
                let mut out = shape;
                *out.last_mut().expect("three axes") = tape.value(y).shape()[1];
                tape.reshape(y, &out)?
            } else {
                y
            }
        }
        Layer::Conv2d { weight, bias, stride, padding, activation } => {
            let w = tape.param(*weight);
            let in_shape = tape.value(x).shape().to_vec();
            let kernel = tape.value(w).shape()[2];
            let window = conv_window(kernel, *stride, *padding, (in_shape[2], in_shape[3]));
            let y = tape.conv2d(x, w, window.stride, window.padding)?;
            // The bias [filters] broadcasts as [filters, 1, 1] over the output planes.
            let y = add_bias(tape, y, *bias, &[1, 1])?;
            activate(tape, y, *activation)
        }
        Layer::MaxPool2d { size, stride } => tape.max_pool2d(x, (*size, *size), (*stride, *stride))?,
        Layer::AvgPool2d { size, stride } => tape.avg_pool2d(x, (*size, *size), (*stride, *stride))?,
        Layer::BatchNorm(bn) => {
            let weight = match mode {
                Mode::Train(_) => Some(bn.momentum),
                Mode::Recalibrate(_, weight) => Some(*weight),
                Mode::Eval => None,
            };
            bn.forward(tape, x, weight)?
        }
        Layer::Recurrent(rnn) => {
            let mut steps = (trace.is_some() && index.is_some()).then(Vec::new);
            let y = rnn.forward(tape, x, steps.as_mut())?;
            if let (Some(trace), Some(steps), Some(index)) = (trace, steps, index) {
                trace.recurrent.push((index, steps));
            }
            y
        }
        Layer::Flatten => {
            let shape = tape.value(x).shape();
            let batch = shape.first().copied().unwrap_or(1);
            let features = shape.iter().skip(1).product();
            tape.reshape(x, &[batch, features])?
        }
        Layer::Reshape(sample) => {
            let mut shape = vec![tape.value(x).shape()[0]];
            shape.extend_from_slice(sample);
            tape.reshape(x, &shape)?
        }
        Layer::Dropout { rate } => match mode.dropout_rng() {
            Some(rng) => tape.dropout(x, *rate, || rng.random::<f32>() >= *rate)?,
            None => x,
        },
        Layer::Activation(act) => tape.activation(x, *act),
        Layer::Residual { body, shortcut } => {
            let mut y = x;
            for layer in body {
                y = apply(layer, tape, y, mode, trace.as_deref_mut(), None)?;
            }
            let mut skip = x;
            for layer in shortcut.iter().flatten() {
                skip = apply(layer, tape, skip, mode, trace.as_deref_mut(), None)?;
            }
            tape.add(y, skip)?
        }
        Layer::LayerNorm(norm) => norm.forward(tape, x)?,
        Layer::Attention(attention) => {
            let (y, weights) = match mode.dropout_rng() {
                Some(rng) => {
                    let rate = attention.dropout;
                    attention.forward(tape, x, Some(&mut || rng.random::<f32>() >= rate))?
                }
                None => attention.forward(tape, x, None)?,
            };
            if let Some(trace) = trace {
                trace.attention.push(weights);
            }
            y
        }
        Layer::PatchEmbed(embed) => embed.forward(tape, x)?,
        Layer::GlobalAvgPool => {
            let shape = tape.value(x).shape().to_vec();
            if shape.len() == 4 {
                // [batch, channels, h, w] as [batch, channels, h * w], averaged over the last.
                let planes = tape.reshape(x, &[shape[0], shape[1], shape[2] * shape[3]])?;
                tape.mean(planes, 2)?
            } else {
                tape.mean(x, 1)?
            }
        }
    })
}

fn activate(tape: &mut Tape, y: Var, activation: Option<Activation>) -> Var {
    match activation {
        Some(act) => tape.activation(y, act),
        None => y,
    }
}

/// `y + bias`, the bias reshaped to `[len, ..trailing]` so that it broadcasts along the axis
/// before `trailing`.
fn add_bias(tape: &mut Tape, y: Var, bias: Option<ParamId>, trailing: &[usize]) -> Result<Var> {
    let Some(bias) = bias else { return Ok(y) };
    let mut b = tape.param(bias);
    if !trailing.is_empty() {
        let mut shape = tape.value(b).shape().to_vec();
        shape.extend_from_slice(trailing);
        b = tape.reshape(b, &shape)?;
    }
    tape.add(y, b)
}

impl BatchNorm {
    /// `gamma * (x - mean) / sqrt(var + eps) + beta` per feature. For images, the statistics
    /// run over the batch and both spatial axes of each channel. With a `running_weight`
    /// (training), on the batch's statistics, in one op ([`Tape::batch_norm`]) that also
    /// moves the running averages toward them by that weight; without (evaluation), on the
    /// running averages, which make it an affine map per feature, left to the primitive ops.
    fn forward(&self, tape: &mut Tape, x: Var, running_weight: Option<f32>) -> Result<Var> {
        let gamma = tape.param(self.gamma);
        let beta = tape.param(self.beta);
        if let Some(momentum) = running_weight {
            let running = RunningStatistics { mean: self.running_mean, var: self.running_var, momentum };
            return tape.batch_norm(x, (gamma, beta), self.eps, Some(running));
        }
        let shape = tape.value(x).shape().to_vec();
        let features = shape[1];
        // Statistics shaped to broadcast against x: [features] or [features, 1, 1].
        let stat_shape: Vec<usize> = if shape.len() == 4 { vec![features, 1, 1] } else { vec![features] };
        let mean = tape.param(self.running_mean);
        let var = tape.param(self.running_var);
        let (mean, var) = (tape.reshape(mean, &stat_shape)?, tape.reshape(var, &stat_shape)?);
        let eps = tape.input(crate::tensor::scalar(self.eps));
        let shifted = tape.add(var, eps)?;
        let inv_std = tape.pow(shifted, -0.5);
        let centred = tape.sub(x, mean)?;
        let normed = tape.mul(centred, inv_std)?;
        let gamma = tape.reshape(gamma, &stat_shape)?;
        let beta = tape.reshape(beta, &stat_shape)?;
        let scaled = tape.mul(normed, gamma)?;
        tape.add(scaled, beta)
    }
}

/// Builds `specs`, each taking the output shape of the one before from `input` on. Their
/// parameters are named `{prefix}.{i}.{name}`: `layers.3.weight` at the top level,
/// `layers.2.layers.0.weight` and `layers.2.shortcut.0.weight` inside a block.
///
/// # Errors
/// When a layer cannot take its input (a spec checked by [`ModelSpec::output_shape`] has none).
fn build_layers(
    specs: &[LayerSpec],
    prefix: &str,
    input: &[usize],
    params: &mut Params,
    rng: &mut Pcg64,
) -> Result<Vec<Layer>> {
    let mut shape = input.to_vec();
    let mut layers = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let path = format!("{prefix}.{i}");
        layers.push(build_layer(spec, &path, &shape, params, rng)?);
        shape = spec.output_shape(&shape, &path)?;
    }
    Ok(layers)
}

fn build_layer(
    spec: &LayerSpec,
    path: &str,
    input: &[usize],
    params: &mut Params,
    rng: &mut Pcg64,
) -> Result<Layer> {
    let name = |part: &str| format!("{path}.{part}");
    let zeros = |n: usize| Tensor::zeros(IxDyn(&[n]));
    Ok(match *spec {
        LayerSpec::Dense { units, activation, bias, init } => {
            let fan_in = input[input.len() - 1];
            let weight = params.add(name("weight"), init.sample(&[fan_in, units], fan_in, units, rng));
            let bias = bias.then(|| params.add(name("bias"), zeros(units)));
            Layer::Dense { weight, bias, activation: activation.activation() }
        }
        LayerSpec::Conv2d { filters, kernel_size: k, stride, padding, activation, bias, init } => {
            let channels = input[0];
            let shape = [filters, channels, k, k];
            // Keras's fans for convolutions: each output sees channels * k * k inputs.
            let weight =
                params.add(name("weight"), init.sample(&shape, channels * k * k, filters * k * k, rng));
            let bias = bias.then(|| params.add(name("bias"), zeros(filters)));
            Layer::Conv2d { weight, bias, stride, padding, activation: activation.activation() }
        }
        LayerSpec::MaxPool2d { pool_size, stride } => {
            Layer::MaxPool2d { size: pool_size, stride: stride.unwrap_or(pool_size) }
        }
        LayerSpec::AvgPool2d { pool_size, stride } => {
            Layer::AvgPool2d { size: pool_size, stride: stride.unwrap_or(pool_size) }
        }
        LayerSpec::BatchNorm { momentum, eps } => {
            let features = input[0];
            Layer::BatchNorm(BatchNorm {
                gamma: params.add(name("gamma"), Tensor::ones(IxDyn(&[features]))),
                beta: params.add(name("beta"), zeros(features)),
                running_mean: params.add_buffer(name("running_mean"), zeros(features)),
                running_var: params.add_buffer(name("running_var"), Tensor::ones(IxDyn(&[features]))),
                momentum,
                eps,
            })
        }
        LayerSpec::SimpleRnn { units, return_sequences } => {
            recurrent(Cell::Simple, units, return_sequences, input, params, rng, path)
        }
        LayerSpec::Lstm { units, return_sequences } => {
            recurrent(Cell::Lstm, units, return_sequences, input, params, rng, path)
        }
        LayerSpec::Gru { units, return_sequences } => {
            recurrent(Cell::Gru, units, return_sequences, input, params, rng, path)
        }
        LayerSpec::Flatten => Layer::Flatten,
        LayerSpec::Reshape { ref shape } => Layer::Reshape(shape.clone()),
        LayerSpec::Dropout { rate } => Layer::Dropout { rate },
        LayerSpec::Relu => Layer::Activation(Activation::Relu),
        LayerSpec::LeakyRelu { alpha } => Layer::Activation(Activation::LeakyRelu { alpha }),
        LayerSpec::Sigmoid => Layer::Activation(Activation::Sigmoid),
        LayerSpec::Tanh => Layer::Activation(Activation::Tanh),
        LayerSpec::Gelu => Layer::Activation(Activation::Gelu),
        LayerSpec::Residual { ref layers, ref shortcut } => Layer::Residual {
            body: build_layers(layers, &name("layers"), input, params, rng)?,
            shortcut: match shortcut {
                Some(shortcut) => Some(build_layers(shortcut, &name("shortcut"), input, params, rng)?),
                None => None,
            },
        },
        LayerSpec::LayerNorm { eps } => {
            let d = input[input.len() - 1];
            Layer::LayerNorm(LayerNorm {
                gamma: params.add(name("gamma"), Tensor::ones(IxDyn(&[d]))),
                beta: params.add(name("beta"), zeros(d)),
                eps,
            })
        }
        LayerSpec::MultiHeadAttention { heads, key_size, dropout } => {
            let d = input[1];
            let key_size = key_size.unwrap_or(d / heads);
            let width = heads * key_size;
            let mut projection = |part: &str, inputs: usize, outputs: usize| Projection {
                weight: params.add(
                    name(&format!("{part}.weight")),
                    Init::GlorotUniform.sample(&[inputs, outputs], inputs, outputs, rng),
                ),
                bias: params.add(name(&format!("{part}.bias")), zeros(outputs)),
            };
            Layer::Attention(MultiHeadAttention {
                heads,
                key_size,
                dropout,
                query: projection("query", d, width),
                key: projection("key", d, width),
                value: projection("value", d, width),
                output: projection("output", width, d),
            })
        }
        LayerSpec::PatchEmbed { patch_size: p, dim } => {
            let channels = input[0];
            let tokens = (input[1] / p) * (input[2] / p);
            // Glorot over the patch's inputs and the embedding, as a dense projection of
            // each flattened patch; positions as ViT's: small (std 0.02), here uniform.
            let fan_in = channels * p * p;
            let weight = params
                .add(name("weight"), Init::GlorotUniform.sample(&[dim, channels, p, p], fan_in, dim, rng));
            let bias = params.add(name("bias"), zeros(dim));
            let limit = 0.02 * 3f32.sqrt();
            let position =
                Tensor::from_shape_simple_fn(IxDyn(&[tokens, dim]), || rng.random_range(-limit..limit));
            let position = params.add(name("position"), position);
            Layer::PatchEmbed(PatchEmbed { patch_size: p, weight, bias, position })
        }
        LayerSpec::GlobalAvgPool => Layer::GlobalAvgPool,
    })
}

/// Glorot-uniform input and recurrent weights (each gate block drawn with its own fans),
/// zero biases, and for the LSTM a forget-gate bias of 1 so that early training remembers
/// (Jozefowicz et al. 2015; Keras's `unit_forget_bias`).
fn recurrent(
    cell: Cell,
    units: usize,
    return_sequences: bool,
    input: &[usize],
    params: &mut Params,
    rng: &mut Pcg64,
    path: &str,
) -> Layer {
    let features = input[1];
    let gates = cell.gates();
    let name = |part: &str| format!("{path}.{part}");
    let w =
        params.add(name("w"), Init::GlorotUniform.sample(&[features, gates * units], features, units, rng));
    let u = params.add(name("u"), Init::GlorotUniform.sample(&[units, gates * units], units, units, rng));
    let mut b = Tensor::zeros(IxDyn(&[gates * units]));
    if cell == Cell::Lstm {
        b.slice_mut(ndarray::s![units..2 * units]).fill(1.0);
    }
    let bias = params.add(name("bias"), b);
    let recurrent_bias = (cell == Cell::Gru)
        .then(|| params.add(name("recurrent_bias"), Tensor::zeros(IxDyn(&[gates * units]))));
    Layer::Recurrent(Recurrent { cell, units, return_sequences, w, u, bias, recurrent_bias })
}

fn join(sizes: &[usize]) -> String {
    sizes.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
}
