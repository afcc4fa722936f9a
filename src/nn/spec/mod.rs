//! The JSON description of a model that the page, the CLI, saved files and embeds share.
//!
//! ```json
//! {"input": [1, 28, 28],
//!  "layers": [{"type": "flatten"},
//!             {"type": "dense", "units": 128, "activation": "relu"},
//!             {"type": "dense", "units": 10}]}
//! ```
//!
//! A model is a tree: a `residual` block holds layers of its own (blocks included), and one
//! recursive reader and checker serve every depth. [`ModelSpec::from_json`] reports a bad spec
//! by the JSON path of the offending value and the type of the layer there, for example
//! `layers[1] (dense).units` or, inside a block, `layers[2].layers[0] (conv2d).filters`.

use serde::Serialize;
use serde_json::Value;

mod read;
mod summary;

pub use summary::{Summary, SummaryRow};

use super::Init;
use crate::backend::cpu::conv::Window;
use crate::backend::cpu::Activation;
use crate::error::thousands;
use crate::{Error, Result};

/// A whole model: the shape of one input sample and the layers in order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelSpec {
    /// The shape of one sample, without the batch axis: `[channels, height, width]` for images;
    /// MNIST's `[1, 28, 28]` when absent.
    pub input: Vec<usize>,
    /// Standardisation applied to the raw `[0, 1]` pixels before the first layer; none when
    /// absent. Part of the model so that saved and exported models apply it too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normalize: Option<Normalize>,
    pub layers: Vec<LayerSpec>,
}

/// `(x - mean) / std` on every input value.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Normalize {
    pub mean: f32,
    pub std: f32,
}

impl Normalize {
    /// The mean and standard deviation of the MNIST training pixels in `[0, 1]`.
    pub const MNIST: Normalize = Normalize { mean: 0.1307, std: 0.3081 };
}

fn mnist_input() -> Vec<usize> {
    vec![1, 28, 28]
}

/// One layer. `type` selects the variant. Fields marked with a default may be left out of the
/// JSON (`read.rs` reads it).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LayerSpec {
    /// Flattens everything but the batch axis.
    Flatten,
    /// `activation(x W + b)`, with `W` of shape `[inputs, units]`, over a flat input `[inputs]`
    /// or over each token of a sequence `[tokens, inputs]` (Keras's `Dense` on the last axis).
    Dense {
        units: usize,
        /// Default `linear`.
        activation: ActivationName,
        /// Default true.
        bias: bool,
        /// Default `glorot_uniform`.
        init: Init,
    },
    /// Zeroes a fraction `rate` of its inputs while training; the identity in inference.
    Dropout {
        rate: f32,
    },
    /// Changes the shape of each sample, keeping its values in row-major order.
    Reshape {
        shape: Vec<usize>,
    },
    /// 2-d convolution over `[channels, height, width]` with square `kernel_size` kernels.
    Conv2d {
        filters: usize,
        kernel_size: usize,
        /// Default 1.
        stride: usize,
        /// Default `valid`.
        padding: Padding,
        /// Default `linear`.
        activation: ActivationName,
        /// Default true.
        bias: bool,
        /// Default `glorot_uniform`.
        init: Init,
    },
    /// The maximum of each `pool_size` square (default 2), moved by `stride` (default:
    /// `pool_size`).
    MaxPool2d {
        pool_size: usize,
        stride: Option<usize>,
    },
    /// The mean of each `pool_size` square (default 2), moved by `stride` (default:
    /// `pool_size`).
    AvgPool2d {
        pool_size: usize,
        stride: Option<usize>,
    },
    /// Normalises each feature (each channel, for images) by the batch's mean and variance
    /// while training and by running averages in inference, then scales and shifts it by
    /// learnt `gamma` and `beta`. `momentum` (default 0.1) weighs the newest batch in the
    /// running averages (PyTorch's convention); `eps` defaults to 1e-5.
    BatchNorm {
        momentum: f32,
        eps: f32,
    },
    /// `h = tanh(x W + h U + b)` over `[time, features]`. `return_sequences` (default false)
    /// outputs every step's `h` rather than the last.
    SimpleRnn {
        units: usize,
        return_sequences: bool,
    },
    /// Long short-term memory over `[time, features]`; gates in the order input, forget,
    /// cell, output (Keras and PyTorch).
    Lstm {
        units: usize,
        return_sequences: bool,
    },
    /// Gated recurrent unit over `[time, features]`; gates in the order reset, update, new,
    /// with the reset applied after the recurrent product (PyTorch; Keras `reset_after`).
    Gru {
        units: usize,
        return_sequences: bool,
    },
    Relu,
    /// `alpha` defaults to 0.01.
    LeakyRelu {
        alpha: f32,
    },
    Sigmoid,
    Tanh,
    /// GELU in its tanh form (see [`Activation::Gelu`]).
    Gelu,
    /// `x + f(x)`: the `layers` (any, blocks included) applied in order and added to the
    /// block's input, or to `shortcut` applied to it where `f` changes the shape (a 1x1
    /// convolution, a dense layer). The sum must have one shape.
    Residual {
        layers: Vec<LayerSpec>,
        shortcut: Option<Vec<LayerSpec>>,
    },
    /// Layer normalisation over the last axis (Ba et al. 2016): `(x - mean) / sqrt(var + eps)`
    /// per sample (per token, for sequences), scaled and shifted by learnt `gamma` and `beta`.
    /// `eps` defaults to 1e-5 (PyTorch's).
    LayerNorm {
        eps: f32,
    },
    /// Multi-head self-attention over a sequence `[tokens, d]` (Vaswani et al. 2017): `heads`
    /// heads of `key_size` (default `d / heads`) queries, keys and values projected from the
    /// input, `softmax(q k^T / sqrt(key_size))` over the keys, the heads' outputs concatenated
    /// and projected back to `d`. `dropout` (default 0) drops attention weights in training.
    MultiHeadAttention {
        heads: usize,
        key_size: Option<usize>,
        dropout: f32,
    },
    /// An image `[channels, h, w]` cut into non-overlapping `patch_size` squares, each
    /// projected linearly to `dim` (a convolution with stride `patch_size`, as ViT does it),
    /// plus a learnt position embedding: `[(h / p) * (w / p), dim]` tokens in row-major order.
    PatchEmbed {
        patch_size: usize,
        dim: usize,
    },
    /// The mean over the spatial axes of an image (`[c, h, w]` to `[c]`) or over the tokens
    /// of a sequence (`[tokens, d]` to `[d]`).
    GlobalAvgPool,
}

/// How a convolution treats the border.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    /// No padding: the output shrinks by `kernel_size - 1`.
    #[default]
    Valid,
    /// Zero padding so that the output is `ceil(input / stride)` (TensorFlow's convention).
    Same,
}

fn default_leak() -> f32 {
    0.01
}

/// The activation a dense layer applies to its output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationName {
    #[default]
    Linear,
    Relu,
    LeakyRelu,
    Sigmoid,
    Tanh,
    Gelu,
}

impl ActivationName {
    pub(crate) fn activation(self) -> Option<Activation> {
        match self {
            ActivationName::Linear => None,
            ActivationName::Relu => Some(Activation::Relu),
            ActivationName::LeakyRelu => Some(Activation::LeakyRelu { alpha: default_leak() }),
            ActivationName::Sigmoid => Some(Activation::Sigmoid),
            ActivationName::Tanh => Some(Activation::Tanh),
            ActivationName::Gelu => Some(Activation::Gelu),
        }
    }
}

impl LayerSpec {
    /// The layer's `type` in JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            LayerSpec::Flatten => "flatten",
            LayerSpec::Dense { .. } => "dense",
            LayerSpec::Dropout { .. } => "dropout",
            LayerSpec::Reshape { .. } => "reshape",
            LayerSpec::Conv2d { .. } => "conv2d",
            LayerSpec::MaxPool2d { .. } => "max_pool2d",
            LayerSpec::AvgPool2d { .. } => "avg_pool2d",
            LayerSpec::BatchNorm { .. } => "batch_norm",
            LayerSpec::SimpleRnn { .. } => "simple_rnn",
            LayerSpec::Lstm { .. } => "lstm",
            LayerSpec::Gru { .. } => "gru",
            LayerSpec::Relu => "relu",
            LayerSpec::LeakyRelu { .. } => "leaky_relu",
            LayerSpec::Sigmoid => "sigmoid",
            LayerSpec::Tanh => "tanh",
            LayerSpec::Gelu => "gelu",
            LayerSpec::Residual { .. } => "residual",
            LayerSpec::LayerNorm { .. } => "layer_norm",
            LayerSpec::MultiHeadAttention { .. } => "multi_head_attention",
            LayerSpec::PatchEmbed { .. } => "patch_embed",
            LayerSpec::GlobalAvgPool => "global_avg_pool",
        }
    }

    /// The shape of one output sample for one input sample of `input`; `path` is the layer's
    /// place in the JSON (`layers[2].layers[0]`), for errors.
    ///
    /// # Errors
    /// [`Error::Spec`] at the layer's path (or one of its fields) when the layer cannot take
    /// `input` or a field is out of range.
    pub(crate) fn output_shape(&self, input: &[usize], path: &str) -> Result<Vec<usize>> {
        self.checked_shape(input, path, &mut 0)
    }

    /// [`LayerSpec::output_shape`], adding the layer's parameters (and those of the layers
    /// inside it) to `params`, the count of the model so far, and checking both it and the
    /// output's size against the budgets ([`MAX_PARAMETERS`], [`MAX_SAMPLE_VALUES`]) in
    /// arithmetic that cannot overflow, before anything is allocated.
    fn checked_shape(&self, input: &[usize], path: &str, params: &mut u64) -> Result<Vec<usize>> {
        let location = &format!("{path} ({})", self.kind());
        let output = self.shape_of(input, path, location, params)?;
        let own = self.parameters(input, &output);
        match own.and_then(|own| params.checked_add(own)) {
            Some(total) if total <= MAX_PARAMETERS => *params = total,
            _ => {
                let own = own.map_or_else(|| "more than 2^64".to_owned(), thousands);
                return Err(Error::spec(
                    location,
                    format!(
                        "{own} parameters here make the model larger than the limit of {} parameters",
                        thousands(MAX_PARAMETERS)
                    ),
                ));
            }
        }
        let values = output.iter().try_fold(1u64, |n, &d| n.checked_mul(d as u64));
        if values.is_none_or(|n| n > MAX_SAMPLE_VALUES) {
            return Err(Error::spec(
                location,
                format!(
                    "its output {output:?} holds more than the limit of {} values per sample",
                    thousands(MAX_SAMPLE_VALUES)
                ),
            ));
        }
        Ok(output)
    }

    /// The parameters (and buffers) of this layer alone, from its input and output shapes;
    /// None when the count overflows. A block's layers count themselves.
    fn parameters(&self, input: &[usize], output: &[usize]) -> Option<u64> {
        let n = |d: usize| d as u64;
        let last = |shape: &[usize]| n(*shape.last().unwrap_or(&0));
        let product = |factors: &[u64]| factors.iter().try_fold(1u64, |p, &f| p.checked_mul(f));
        match *self {
            LayerSpec::Dense { bias, .. } => {
                product(&[last(input), last(output)])?.checked_add(if bias { last(output) } else { 0 })
            }
            LayerSpec::Conv2d { filters, kernel_size: k, bias, .. } => {
                product(&[n(filters), n(input[0]), n(k), n(k)])?.checked_add(if bias {
                    n(filters)
                } else {
                    0
                })
            }
            // gamma, beta and the two running statistics.
            LayerSpec::BatchNorm { .. } => product(&[4, n(input[0])]),
            LayerSpec::LayerNorm { .. } => product(&[2, last(input)]),
            LayerSpec::SimpleRnn { units, .. }
            | LayerSpec::Lstm { units, .. }
            | LayerSpec::Gru { units, .. } => {
                let (gates, biases) = match self {
                    LayerSpec::SimpleRnn { .. } => (1, 1),
                    LayerSpec::Lstm { .. } => (4, 1),
                    _ => (3, 2),
                };
                let width = product(&[gates, n(units)])?;
                product(&[n(input[1]).checked_add(n(units))?.checked_add(biases)?, width])
            }
            LayerSpec::MultiHeadAttention { heads, key_size, .. } => {
                let d = last(input);
                let width = product(&[n(heads), key_size.map_or(d / n(heads), n)])?;
                // Three projections d -> width with biases, one width -> d with its bias.
                product(&[3, d + 1, width])?.checked_add(product(&[width, d])?.checked_add(d)?)
            }
            LayerSpec::PatchEmbed { patch_size: p, dim } => {
                let tokens = n(output[0]);
                product(&[n(dim), n(input[0]), n(p), n(p)])?.checked_add(product(&[tokens + 1, n(dim)])?)
            }
            _ => Some(0),
        }
    }

    /// The output shape of this layer; `location` is `path (kind)`.
    fn shape_of(&self, input: &[usize], path: &str, location: &str, params: &mut u64) -> Result<Vec<usize>> {
        match *self {
            LayerSpec::Flatten => Ok(vec![input.iter().product()]),
            LayerSpec::Dense { units, .. } => {
                if units == 0 {
                    return Err(Error::spec(format!("{location}.units"), "must be at least 1"));
                }
                if input.len() > 2 {
                    return Err(Error::spec(
                        location,
                        format!("dense expects a flat input or a sequence [tokens, features] but gets shape {input:?}; put a flatten layer before it"),
                    ));
                }
                let mut output = input.to_vec();
                *output.last_mut().expect("a sample shape has an axis") = units;
                Ok(output)
            }
            LayerSpec::Dropout { rate } => {
                if !(0.0..1.0).contains(&rate) {
                    return Err(Error::spec(format!("{location}.rate"), format!("{rate} is not in [0, 1)")));
                }
                Ok(input.to_vec())
            }
            LayerSpec::Reshape { ref shape } => {
                // Checked: a shape from the JSON may multiply past usize.
                let asked = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
                if shape.is_empty() || shape.contains(&0) || asked != Some(input.iter().product::<usize>()) {
                    return Err(Error::spec(
                        format!("{location}.shape"),
                        format!(
                            "{shape:?} does not hold the {} values of shape {input:?}",
                            input.iter().product::<usize>()
                        ),
                    ));
                }
                Ok(shape.clone())
            }
            LayerSpec::Conv2d { filters, kernel_size, stride, padding, .. } => {
                positive(location, "filters", filters)?;
                positive(location, "kernel_size", kernel_size)?;
                positive(location, "stride", stride)?;
                let [_, h, w] = image(input, location, "conv2d")?;
                let (oh, ow) = windowed(location, "kernel_size", kernel_size, stride, padding, (h, w))?;
                Ok(vec![filters, oh, ow])
            }
            LayerSpec::MaxPool2d { pool_size, stride } | LayerSpec::AvgPool2d { pool_size, stride } => {
                positive(location, "pool_size", pool_size)?;
                let stride = stride.unwrap_or(pool_size);
                positive(location, "stride", stride)?;
                let [c, h, w] = image(input, location, self.kind())?;
                let (oh, ow) = windowed(location, "pool_size", pool_size, stride, Padding::Valid, (h, w))?;
                Ok(vec![c, oh, ow])
            }
            LayerSpec::BatchNorm { momentum, eps } => {
                if !(momentum > 0.0 && momentum <= 1.0) {
                    return Err(Error::spec(
                        format!("{location}.momentum"),
                        format!("{momentum} is not in (0, 1]"),
                    ));
                }
                check_eps(location, eps)?;
                if input.len() != 1 && input.len() != 3 {
                    return Err(Error::spec(
                        location,
                        format!("batch_norm takes features [n] or images [c, h, w], not {input:?}"),
                    ));
                }
                Ok(input.to_vec())
            }
            LayerSpec::SimpleRnn { units, return_sequences }
            | LayerSpec::Lstm { units, return_sequences }
            | LayerSpec::Gru { units, return_sequences } => {
                positive(location, "units", units)?;
                let &[time, _] = input else {
                    return Err(Error::spec(
                        location,
                        format!("{} expects a sequence [time, features] but gets shape {input:?}; put a reshape layer before it", self.kind()),
                    ));
                };
                Ok(if return_sequences { vec![time, units] } else { vec![units] })
            }
            LayerSpec::LeakyRelu { alpha } if !alpha.is_finite() => {
                Err(Error::spec(format!("{location}.alpha"), "must be a finite number"))
            }
            LayerSpec::Relu
            | LayerSpec::LeakyRelu { .. }
            | LayerSpec::Sigmoid
            | LayerSpec::Tanh
            | LayerSpec::Gelu => Ok(input.to_vec()),
            LayerSpec::Residual { ref layers, ref shortcut } => {
                let body = chain(layers, input, &format!("{path}.layers"), params)?;
                let added = match shortcut {
                    Some(shortcut) => chain(shortcut, input, &format!("{path}.shortcut"), params)?,
                    None => input.to_vec(),
                };
                if body != added {
                    let what = if shortcut.is_some() { "its shortcut gives" } else { "its input is" };
                    let hint = if shortcut.is_some() { "" } else { "; add a `shortcut` that maps the input to that shape" };
                    return Err(Error::spec(
                        location,
                        format!("the block's layers give {body:?} but {what} {added:?}, and the two must match to be added{hint}"),
                    ));
                }
                Ok(body)
            }
            LayerSpec::LayerNorm { eps } => {
                check_eps(location, eps)?;
                Ok(input.to_vec())
            }
            LayerSpec::MultiHeadAttention { heads, key_size, dropout } => {
                positive(location, "heads", heads)?;
                let &[_, d] = input else {
                    return Err(Error::spec(
                        location,
                        format!("multi_head_attention expects a sequence [tokens, d] but gets shape {input:?}; put a patch_embed or reshape layer before it"),
                    ));
                };
                match key_size {
                    Some(size) => positive(location, "key_size", size)?,
                    None if d % heads != 0 => {
                        return Err(Error::spec(
                            format!("{location}.heads"),
                            format!("{heads} heads do not divide d = {d}; choose a divisor or set `key_size`"),
                        ))
                    }
                    None => {}
                }
                if !(0.0..1.0).contains(&dropout) {
                    return Err(Error::spec(format!("{location}.dropout"), format!("{dropout} is not in [0, 1)")));
                }
                Ok(input.to_vec())
            }
            LayerSpec::PatchEmbed { patch_size, dim } => {
                positive(location, "patch_size", patch_size)?;
                positive(location, "dim", dim)?;
                let [_, h, w] = image(input, location, "patch_embed")?;
                if h % patch_size != 0 || w % patch_size != 0 {
                    return Err(Error::spec(
                        format!("{location}.patch_size"),
                        format!("{patch_size} does not divide the {h}x{w} input into whole patches"),
                    ));
                }
                Ok(vec![(h / patch_size) * (w / patch_size), dim])
            }
            LayerSpec::GlobalAvgPool => match *input {
                [c, _, _] => Ok(vec![c]),
                [_, d] => Ok(vec![d]),
                _ => Err(Error::spec(
                    location,
                    format!("global_avg_pool expects an image [channels, height, width] or a sequence [tokens, d] but gets shape {input:?}"),
                )),
            },
        }
    }
}

/// The most parameters (and buffers) a model may have: 16 M f32 are 64 MB, which Adam's two
/// moments and the gradients make 256 MB, a quarter of the threaded page's 1 GiB of memory.
pub const MAX_PARAMETERS: u64 = 16_000_000;

/// The most values one layer may output per sample: 4 M f32 are 16 MB, and a batch of 64 of
/// them, kept for the backward pass, 1 GB.
pub const MAX_SAMPLE_VALUES: u64 = 4_000_000;

/// The shape `layers` (a block's list, at `path`) give for `input`, checking each in turn and
/// adding their parameters to `params`.
///
/// # Errors
/// [`Error::Spec`] at `path` when the list is empty, or at the first layer that cannot be built.
fn chain(layers: &[LayerSpec], input: &[usize], path: &str, params: &mut u64) -> Result<Vec<usize>> {
    if layers.is_empty() {
        return Err(Error::spec(path, "needs at least one layer"));
    }
    layers.iter().enumerate().try_fold(input.to_vec(), |shape, (i, layer)| {
        layer.checked_shape(&shape, &format!("{path}[{i}]"), params)
    })
}

fn check_eps(location: &str, eps: f32) -> Result<()> {
    if !(eps > 0.0 && eps.is_finite()) {
        return Err(Error::spec(format!("{location}.eps"), format!("{eps} must be a small positive number")));
    }
    Ok(())
}

fn positive(location: &str, field: &str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(Error::spec(format!("{location}.{field}"), "must be at least 1"));
    }
    Ok(())
}

/// The `[channels, height, width]` of an image input, or an error for `layer`.
fn image(input: &[usize], location: &str, layer: &str) -> Result<[usize; 3]> {
    <[usize; 3]>::try_from(input).map_err(|_| {
        Error::spec(
            location,
            format!("{layer} expects an image [channels, height, width] but gets shape {input:?}"),
        )
    })
}

/// The output size of a square window `size` wide (the layer's field `field`) moved by
/// `stride` over an `(h, w)` input, or an error when the window does not fit in it.
fn windowed(
    location: &str,
    field: &str,
    size: usize,
    stride: usize,
    padding: Padding,
    (h, w): (usize, usize),
) -> Result<(usize, usize)> {
    conv_window(size, stride, padding, (h, w)).output_size((h, w)).ok_or_else(|| {
        Error::spec(format!("{location}.{field}"), format!("{size} is larger than the {h}x{w} input"))
    })
}

/// The window of a square kernel with `padding` over an `(h, w)` input.
pub fn conv_window(kernel: usize, stride: usize, padding: Padding, size: (usize, usize)) -> Window {
    let padding = match padding {
        Padding::Valid => (0, 0, 0, 0),
        Padding::Same => Window::same_padding((kernel, kernel), (stride, stride), size),
    };
    Window { kernel: (kernel, kernel), stride: (stride, stride), padding }
}

impl ModelSpec {
    /// The names [`ModelSpec::preset`] knows.
    pub const PRESETS: &'static [&'static str] = &["mlp", "cnn", "convnet", "lstm", "gru", "resnet", "vit"];

    /// A built-in model by name.
    pub fn preset(name: &str) -> Option<ModelSpec> {
        let dense =
            |units, activation| LayerSpec::Dense { units, activation, bias: true, init: Init::default() };
        let conv = |filters| LayerSpec::Conv2d {
            filters,
            kernel_size: 5,
            stride: 1,
            padding: Padding::Valid,
            activation: ActivationName::Relu,
            bias: true,
            init: Init::default(),
        };
        // A 3x3 (or 1x1) convolution without bias, before batch norm, whose shift replaces it.
        let conv_bn = |filters, kernel_size| LayerSpec::Conv2d {
            filters,
            kernel_size,
            stride: 1,
            padding: Padding::Same,
            activation: ActivationName::Linear,
            bias: false,
            init: Init::HeUniform,
        };
        let batch_norm = || LayerSpec::BatchNorm { momentum: 0.1, eps: 1e-5 };
        // conv, batch norm, relu, conv, batch norm: the body of ResNet's basic block.
        let basic = |filters| {
            vec![conv_bn(filters, 3), batch_norm(), LayerSpec::Relu, conv_bn(filters, 3), batch_norm()]
        };
        let residual = |layers, shortcut| LayerSpec::Residual { layers, shortcut };
        // A pre-norm Transformer encoder block (as ViT's): attention, then an MLP, each on
        // the layer-normalised input and added back to it.
        let encoder = || {
            let norm = || LayerSpec::LayerNorm { eps: 1e-5 };
            let attention = LayerSpec::MultiHeadAttention { heads: 4, key_size: None, dropout: 0.0 };
            [
                residual(vec![norm(), attention], None),
                residual(
                    vec![norm(), dense(128, ActivationName::Gelu), dense(64, ActivationName::Linear)],
                    None,
                ),
            ]
        };
        let layers = match name {
            // The TensorFlow.js MNIST example's dense network.
            "mlp" => {
                vec![LayerSpec::Flatten, dense(128, ActivationName::Relu), dense(10, ActivationName::Linear)]
            }
            // The TensorFlow.js MNIST example's convolutional network.
            "cnn" => vec![
                conv(8),
                LayerSpec::MaxPool2d { pool_size: 2, stride: None },
                conv(16),
                LayerSpec::MaxPool2d { pool_size: 2, stride: None },
                LayerSpec::Flatten,
                dense(10, ActivationName::Linear),
            ],
            // Keras's "Simple MNIST convnet" example (keras.io/examples/vision/mnist_convnet):
            // 3x3 convolutions of 32 and 64 filters, each pooled, dropout, dense 10. Eight
            // times the cnn's arithmetic: a workload where the products dominate the step.
            "convnet" => {
                let conv3 = |filters| LayerSpec::Conv2d {
                    filters,
                    kernel_size: 3,
                    stride: 1,
                    padding: Padding::Valid,
                    activation: ActivationName::Relu,
                    bias: true,
                    init: Init::default(),
                };
                vec![
                    conv3(32),
                    LayerSpec::MaxPool2d { pool_size: 2, stride: None },
                    conv3(64),
                    LayerSpec::MaxPool2d { pool_size: 2, stride: None },
                    LayerSpec::Flatten,
                    LayerSpec::Dropout { rate: 0.5 },
                    dense(10, ActivationName::Linear),
                ]
            }
            // Each image as 28 time steps of 28 pixels.
            "lstm" => vec![
                LayerSpec::Reshape { shape: vec![28, 28] },
                LayerSpec::Lstm { units: 64, return_sequences: false },
                dense(10, ActivationName::Linear),
            ],
            "gru" => vec![
                LayerSpec::Reshape { shape: vec![28, 28] },
                LayerSpec::Gru { units: 64, return_sequences: false },
                dense(10, ActivationName::Linear),
            ],
            // A small ResNet (He et al. 2016): two basic blocks of 16 channels at 28x28, then
            // one of 32 at 14x14 whose shortcut is a 1x1 convolution.
            "resnet" => vec![
                LayerSpec::Conv2d {
                    filters: 16,
                    kernel_size: 3,
                    stride: 1,
                    padding: Padding::Same,
                    activation: ActivationName::Relu,
                    bias: true,
                    init: Init::HeUniform,
                },
                residual(basic(16), None),
                LayerSpec::Relu,
                residual(basic(16), None),
                LayerSpec::Relu,
                LayerSpec::MaxPool2d { pool_size: 2, stride: None },
                residual(basic(32), Some(vec![conv_bn(32, 1)])),
                LayerSpec::Relu,
                LayerSpec::GlobalAvgPool,
                dense(10, ActivationName::Linear),
            ],
            // A small Vision Transformer (Dosovitskiy et al. 2021): 7x7 patches (16 tokens) of
            // d = 64, two pre-norm encoder blocks of 4 heads, the mean over the tokens.
            "vit" => {
                let mut layers = vec![LayerSpec::PatchEmbed { patch_size: 7, dim: 64 }];
                layers.extend(encoder());
                layers.extend(encoder());
                layers.extend([
                    LayerSpec::LayerNorm { eps: 1e-5 },
                    LayerSpec::GlobalAvgPool,
                    dense(10, ActivationName::Linear),
                ]);
                layers
            }
            _ => return None,
        };
        Some(ModelSpec { input: mnist_input(), normalize: None, layers })
    }

    /// Parses and validates a spec.
    ///
    /// # Errors
    /// [`Error::Spec`] naming the JSON path of the first problem: a syntax error's line and
    /// column, an unknown layer type, a missing or misspelt field, a value out of range, or a
    /// layer that cannot take the shape the previous one gives.
    pub fn from_json(json: &str) -> Result<ModelSpec> {
        let value: Value = serde_json::from_str(json)
            .map_err(|e| Error::spec(format!("line {}, column {}", e.line(), e.column()), "invalid JSON"))?;
        Self::from_value(value)
    }

    /// Like [`ModelSpec::from_json`], from parsed JSON.
    ///
    /// # Errors
    /// As [`ModelSpec::from_json`].
    pub fn from_value(value: Value) -> Result<ModelSpec> {
        let spec = read::model(value)?;
        spec.output_shape()?;
        Ok(spec)
    }

    /// The shape of one output sample, after checking every layer against its input.
    ///
    /// # Errors
    /// [`Error::Spec`] naming the first layer that cannot be built.
    pub fn output_shape(&self) -> Result<Vec<usize>> {
        Ok(self.checked()?.0)
    }

    /// The values in the model's parameters and buffers (batch norm's running averages), at
    /// most [`MAX_PARAMETERS`], counted from the spec without building anything.
    ///
    /// # Errors
    /// As [`ModelSpec::output_shape`].
    pub fn parameter_count(&self) -> Result<u64> {
        Ok(self.checked()?.1)
    }

    /// The output shape and the parameter count, checking every layer on the way.
    fn checked(&self) -> Result<(Vec<usize>, u64)> {
        if self.input.is_empty() || self.input.contains(&0) {
            return Err(Error::spec("input", format!("{:?} is not a valid sample shape", self.input)));
        }
        let values = self.input.iter().try_fold(1u64, |n, &d| n.checked_mul(d as u64));
        if values.is_none_or(|n| n > MAX_SAMPLE_VALUES) {
            return Err(Error::spec(
                "input",
                format!(
                    "{:?} holds more than the limit of {} values per sample",
                    self.input,
                    thousands(MAX_SAMPLE_VALUES)
                ),
            ));
        }
        if let Some(Normalize { mean, std }) = self.normalize {
            if !mean.is_finite() || !std.is_finite() || std <= 0.0 {
                return Err(Error::spec(
                    "normalize",
                    format!("mean {mean} and std {std} must be finite, std positive"),
                ));
            }
        }
        if self.layers.is_empty() {
            return Err(Error::spec("layers", "a model needs at least one layer"));
        }
        let mut params = 0;
        let output = chain(&self.layers, &self.input, "layers", &mut params)?;
        Ok((output, params))
    }

    /// The spec as compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a spec always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        ModelSpec::from_json(json).unwrap_err().to_string()
    }

    #[test]
    fn the_issue_example_parses_to_the_mlp_preset() {
        let json = r#"{"layers":[{"type":"flatten"},{"type":"dense","units":128,"activation":"relu"},{"type":"dense","units":10}]}"#;
        let spec = ModelSpec::from_json(json).unwrap();
        assert_eq!(spec, ModelSpec::preset("mlp").unwrap());
        assert_eq!(spec.output_shape().unwrap(), vec![10]);
        assert_eq!(ModelSpec::from_json(&spec.to_json()).unwrap(), spec);
    }

    #[test]
    fn every_layer_reads_back_what_to_json_writes() {
        let layers = vec![
            LayerSpec::Reshape { shape: vec![1, 28, 28] },
            LayerSpec::Conv2d {
                filters: 4,
                kernel_size: 3,
                stride: 2,
                padding: Padding::Same,
                activation: ActivationName::LeakyRelu,
                bias: false,
                init: Init::HeUniform,
            },
            LayerSpec::BatchNorm { momentum: 0.2, eps: 1e-3 },
            LayerSpec::MaxPool2d { pool_size: 2, stride: Some(1) },
            LayerSpec::AvgPool2d { pool_size: 2, stride: None },
            LayerSpec::LeakyRelu { alpha: 0.2 },
            LayerSpec::Sigmoid,
            LayerSpec::Relu,
            LayerSpec::Tanh,
            LayerSpec::Reshape { shape: vec![4, 36] },
            LayerSpec::SimpleRnn { units: 3, return_sequences: true },
            LayerSpec::Gru { units: 3, return_sequences: true },
            LayerSpec::Lstm { units: 3, return_sequences: false },
            LayerSpec::Dropout { rate: 0.25 },
            LayerSpec::Dense {
                units: 10,
                activation: ActivationName::Tanh,
                bias: true,
                init: Init::GlorotUniform,
            },
            LayerSpec::Flatten,
        ];
        let spec = ModelSpec { input: vec![1, 28, 28], normalize: Some(Normalize::MNIST), layers };
        assert_eq!(ModelSpec::from_json(&spec.to_json()).unwrap(), spec);
        for preset in ModelSpec::PRESETS {
            let spec = ModelSpec::preset(preset).unwrap();
            assert_eq!(ModelSpec::from_json(&spec.to_json()).unwrap(), spec, "{preset}");
        }
        let layers = vec![
            LayerSpec::PatchEmbed { patch_size: 4, dim: 6 },
            LayerSpec::Residual {
                layers: vec![
                    LayerSpec::LayerNorm { eps: 1e-3 },
                    LayerSpec::MultiHeadAttention { heads: 2, key_size: Some(5), dropout: 0.1 },
                ],
                shortcut: None,
            },
            LayerSpec::Residual {
                layers: vec![LayerSpec::Residual { layers: vec![LayerSpec::Gelu], shortcut: None }],
                shortcut: Some(vec![LayerSpec::LayerNorm { eps: 1e-5 }]),
            },
            LayerSpec::GlobalAvgPool,
        ];
        let spec = ModelSpec { input: vec![1, 28, 28], normalize: None, layers };
        assert_eq!(ModelSpec::from_json(&spec.to_json()).unwrap(), spec);
    }

    #[test]
    fn the_presets_have_the_shapes_and_sizes_the_issue_asks_for() {
        let count = |name: &str| {
            let model = crate::nn::Model::new(ModelSpec::preset(name).unwrap(), 0).unwrap();
            model.params().iter().filter(|p| p.trainable).map(|p| p.value.len()).sum::<usize>()
        };
        // vit: patches 49*64 + 64 + 16*64 positions; per block 2 layer norms (2*128), 4
        // projections (4 * (64*64 + 64)) and the MLP (64*128 + 128 + 128*64 + 64); a final
        // layer norm (128) and the classifier (64*10 + 10).
        let block = 2 * 128 + 4 * (64 * 64 + 64) + (64 * 128 + 128 + 128 * 64 + 64);
        assert_eq!(count("vit"), 49 * 64 + 64 + 16 * 64 + 2 * block + 128 + 650);
        assert_eq!(ModelSpec::preset("vit").unwrap().output_shape().unwrap(), [10]);
        assert_eq!(ModelSpec::preset("resnet").unwrap().output_shape().unwrap(), [10]);
    }

    #[test]
    fn absent_fields_take_their_defaults() {
        let json = r#"{"layers":[{"type":"conv2d","filters":2,"kernel_size":3},{"type":"max_pool2d"},
            {"type":"batch_norm"},{"type":"leaky_relu"},{"type":"flatten"},{"type":"dense","units":1}]}"#;
        let spec = ModelSpec::from_json(json).unwrap();
        assert_eq!(spec.input, [1, 28, 28]);
        assert_eq!(spec.normalize, None);
        assert_eq!(
            spec.layers,
            [
                LayerSpec::Conv2d {
                    filters: 2,
                    kernel_size: 3,
                    stride: 1,
                    padding: Padding::Valid,
                    activation: ActivationName::Linear,
                    bias: true,
                    init: Init::GlorotUniform,
                },
                LayerSpec::MaxPool2d { pool_size: 2, stride: None },
                LayerSpec::BatchNorm { momentum: 0.1, eps: 1e-5 },
                LayerSpec::LeakyRelu { alpha: 0.01 },
                LayerSpec::Flatten,
                LayerSpec::Dense {
                    units: 1,
                    activation: ActivationName::Linear,
                    bias: true,
                    init: Init::GlorotUniform
                },
            ]
        );
    }

    #[test]
    fn bad_specs_name_the_layer_and_field() {
        let cases = [
            (r#"{"layers":[{"type":"flatten"},{"type":"dense"}]}"#, "layers[1] (dense): missing field `units`"),
            (
                r#"{"layers":[{"type":"dense","unit":5}]}"#,
                "layers[0] (dense): unknown field `unit`; expected `units`, `activation`, `bias` or `init`",
            ),
            (r#"{"layers":[{"type":"flatten","units":5}]}"#, "layers[0] (flatten): unknown field `units`; it takes none"),
            (r#"{"layers":[{"units":3}]}"#, "layers[0]: missing field `type`"),
            (r#"{"layers":[{"type":3}]}"#, "layers[0].type: expected a string, got 3"),
            (
                r#"{"layers":["dense"]}"#,
                r#"layers[0]: expected a layer such as {"type": "flatten"}, got the string "dense""#,
            ),
            (r#"{"layers":[{"type":"flatten"},{"type":"dense","units":0}]}"#, "layers[1] (dense).units: must be at least 1"),
            (
                r#"{"layers":[{"type":"dense","units":3}]}"#,
                "layers[0] (dense): dense expects a flat input or a sequence [tokens, features] but gets shape [1, 28, 28]; put a flatten layer before it",
            ),
            (
                r#"{"layers":[{"type":"conv2d","filters":2,"kernel_size":3},
                    {"type":"residual","layers":[{"type":"relu"},{"type":"conv2d","filters":0,"kernel_size":3}]}]}"#,
                "layers[1].layers[1] (conv2d).filters: must be at least 1",
            ),
            (
                r#"{"layers":[{"type":"residual","layers":[{"type":"residual","layers":[{"type":"relu","alpha":1}]}]}]}"#,
                "layers[0].layers[0].layers[0] (relu): unknown field `alpha`; it takes none",
            ),
            (
                r#"{"layers":[{"type":"residual","layers":[{"type":"relu"}],"shortcut":[{"type":"conv2d","kernel_size":1}]}]}"#,
                "layers[0].shortcut[0] (conv2d): missing field `filters`",
            ),
            (
                r#"{"layers":[{"type":"residual","layers":[{"type":"conv2d","filters":4,"kernel_size":3,"padding":"same"}]}]}"#,
                "layers[0] (residual): the block's layers give [4, 28, 28] but its input is [1, 28, 28], and the two must match to be added; add a `shortcut` that maps the input to that shape",
            ),
            (
                r#"{"layers":[{"type":"residual","layers":[{"type":"conv2d","filters":4,"kernel_size":3,"padding":"same"}],
                    "shortcut":[{"type":"conv2d","filters":4,"kernel_size":1,"stride":2}]}]}"#,
                "layers[0] (residual): the block's layers give [4, 28, 28] but its shortcut gives [4, 14, 14], and the two must match to be added",
            ),
            (r#"{"layers":[{"type":"residual","layers":[]}]}"#, "layers[0].layers: needs at least one layer"),
            (r#"{"layers":[{"type":"residual"}]}"#, "layers[0] (residual): missing field `layers`"),
            (
                r#"{"layers":[{"type":"residual","layers":{"type":"relu"}}]}"#,
                "layers[0].layers: expected an array of layers, got an object",
            ),
            (
                r#"{"input":[4,6],"layers":[{"type":"multi_head_attention","heads":4}]}"#,
                "layers[0] (multi_head_attention).heads: 4 heads do not divide d = 6; choose a divisor or set `key_size`",
            ),
            (
                r#"{"layers":[{"type":"multi_head_attention","heads":1}]}"#,
                "layers[0] (multi_head_attention): multi_head_attention expects a sequence [tokens, d] but gets shape [1, 28, 28]; put a patch_embed or reshape layer before it",
            ),
            (
                r#"{"input":[4,6],"layers":[{"type":"multi_head_attention","heads":2,"dropout":1}]}"#,
                "layers[0] (multi_head_attention).dropout: 1 is not in [0, 1)",
            ),
            (
                r#"{"layers":[{"type":"patch_embed","patch_size":5,"dim":8}]}"#,
                "layers[0] (patch_embed).patch_size: 5 does not divide the 28x28 input into whole patches",
            ),
            (r#"{"layers":[{"type":"patch_embed","patch_size":7}]}"#, "layers[0] (patch_embed): missing field `dim`"),
            (
                r#"{"layers":[{"type":"flatten"},{"type":"global_avg_pool"}]}"#,
                "layers[1] (global_avg_pool): global_avg_pool expects an image [channels, height, width] or a sequence [tokens, d] but gets shape [784]",
            ),
            (r#"{"layers":[{"type":"layer_norm","eps":-1}]}"#, "layers[0] (layer_norm).eps: -1 must be a small positive number"),
            (
                r#"{"layers":[{"type":"flatten"},{"type":"dense","units":100000000}]}"#,
                "layers[1] (dense): 78,500,000,000 parameters here make the model larger than the limit of 16,000,000 parameters",
            ),
            (
                r#"{"layers":[{"type":"flatten"},{"type":"dense","units":18446744073709551615}]}"#,
                "layers[1] (dense): more than 2^64 parameters here make the model larger than the limit of 16,000,000 parameters",
            ),
            (
                r#"{"layers":[{"type":"conv2d","filters":4294967296,"kernel_size":4294967296,"padding":"same"}]}"#,
                "layers[0] (conv2d): more than 2^64 parameters here make the model larger than the limit of 16,000,000 parameters",
            ),
            (
                r#"{"layers":[{"type":"conv2d","filters":6000,"kernel_size":3,"padding":"same"}]}"#,
                "layers[0] (conv2d): its output [6000, 28, 28] holds more than the limit of 4,000,000 values per sample",
            ),
            (
                r#"{"layers":[{"type":"flatten"},{"type":"dense","units":4000},{"type":"dense","units":4000},{"type":"dense","units":10}]}"#,
                "layers[2] (dense): 16,004,000 parameters here make the model larger than the limit of 16,000,000 parameters",
            ),
            (
                r#"{"layers":[{"type":"residual","layers":[{"type":"flatten"},{"type":"dense","units":15000}],"shortcut":[{"type":"flatten"},{"type":"dense","units":15000}]}]}"#,
                "layers[0].shortcut[1] (dense): 11,775,000 parameters here make the model larger than the limit of 16,000,000 parameters",
            ),
            (
                r#"{"layers":[{"type":"reshape","shape":[4294967296,4294967296,1]}]}"#,
                "layers[0] (reshape).shape: [4294967296, 4294967296, 1] does not hold the 784 values of shape [1, 28, 28]",
            ),
            (
                r#"{"input":[100000,100000,100000],"layers":[{"type":"flatten"}]}"#,
                "input: [100000, 100000, 100000] holds more than the limit of 4,000,000 values per sample",
            ),
            (
                r#"{"input":[28,28],"layers":[{"type":"lstm","units":3000}]}"#,
                "layers[0] (lstm): 36,348,000 parameters here make the model larger than the limit of 16,000,000 parameters",
            ),
            (r#"{"layers":[{"type":"dropout","rate":1.5}]}"#, "layers[0] (dropout).rate: 1.5 is not in [0, 1)"),
            (
                r#"{"layers":[{"type":"conv2d","filters":1,"kernel_size":29}]}"#,
                "layers[0] (conv2d).kernel_size: 29 is larger than the 28x28 input",
            ),
            (
                r#"{"layers":[{"type":"max_pool2d","pool_size":30}]}"#,
                "layers[0] (max_pool2d).pool_size: 30 is larger than the 28x28 input",
            ),
            (
                r#"{"layers":[{"type":"flatten"},{"type":"dense","units":"many"}]}"#,
                r#"layers[1] (dense).units: expected a whole number, got the string "many""#,
            ),
            (
                r#"{"layers":[{"type":"flatten"},{"type":"dense","units":2.5}]}"#,
                "layers[1] (dense).units: expected a whole number, got 2.5",
            ),
            (
                r#"{"layers":[{"type":"flatten"},{"type":"dense","units":4,"activation":"swish"}]}"#,
                "layers[1] (dense).activation: unknown value `swish`; expected one of linear, relu, leaky_relu, sigmoid, tanh, gelu",
            ),
            (
                r#"{"layers":[{"type":"lstm","units":4,"return_sequences":"yes"}]}"#,
                r#"layers[0] (lstm).return_sequences: expected true or false, got the string "yes""#,
            ),
            (r#"{"layers": [}"#, "line 1, column 13: invalid JSON"),
            (r#"{"layer": []}"#, "top level: unknown field `layer`; expected `input`, `normalize` or `layers`"),
            (r#"{"input": [1, 28, 28]}"#, "top level: missing field `layers`"),
            (r#"{"layers": {}}"#, "layers: expected an array of layers, got an object"),
            (
                r#"{"input": [1, -28], "layers": [{"type":"flatten"}]}"#,
                "input: expected an array of whole numbers such as [1, 28, 28], got an array",
            ),
            (r#"{"layers": []}"#, "layers: a model needs at least one layer"),
            (
                r#"{"normalize":{"mean":0.1,"std":0},"layers":[{"type":"flatten"}]}"#,
                "normalize: mean 0.1 and std 0 must be finite, std positive",
            ),
            (r#"{"normalize":{"mean":0.1},"layers":[{"type":"flatten"}]}"#, "normalize: missing field `std`"),
            (r#"[1]"#, "top level: expected an object with a `layers` array, got an array"),
        ];
        for (json, expected) in cases {
            assert_eq!(err(json), format!("model spec, {expected}"), "{json}");
        }
        assert!(err(r#"{"layers":[{"type":"conv9"}]}"#).starts_with(
            "model spec, layers[0].type: unknown layer type `conv9`; expected one of flatten, dense,"
        ));
    }
}
