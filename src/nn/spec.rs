//! The JSON description of a model that the page, the CLI, saved files and embeds share.
//!
//! ```json
//! {"input": [1, 28, 28],
//!  "layers": [{"type": "flatten"},
//!             {"type": "dense", "units": 128, "activation": "relu"},
//!             {"type": "dense", "units": 10}]}
//! ```
//!
//! [`ModelSpec::from_json`] reports a bad spec by the JSON path of the offending value, for
//! example `layers[1].units`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Init;
use crate::backend::cpu::conv::Window;
use crate::backend::cpu::Activation;
use crate::{Error, Result};

/// A whole model: the shape of one input sample and the layers in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The shape of one sample, without the batch axis: `[channels, height, width]` for images.
    #[serde(default = "mnist_input")]
    pub input: Vec<usize>,
    /// Standardisation applied to the raw `[0, 1]` pixels before the first layer; none when
    /// absent. Part of the model so that saved and exported models apply it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<Normalize>,
    pub layers: Vec<LayerSpec>,
}

/// `(x - mean) / std` on every input value.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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

/// One layer. `type` selects the variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    /// Flattens everything but the batch axis.
    Flatten,
    /// `activation(x W + b)`, with `W` of shape `[inputs, units]`.
    Dense {
        units: usize,
        #[serde(default)]
        activation: ActivationName,
        #[serde(default = "yes")]
        bias: bool,
        #[serde(default)]
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
        #[serde(default = "one")]
        stride: usize,
        #[serde(default)]
        padding: Padding,
        #[serde(default)]
        activation: ActivationName,
        #[serde(default = "yes")]
        bias: bool,
        #[serde(default)]
        init: Init,
    },
    /// The maximum of each `pool_size` square, moved by `stride` (default: `pool_size`).
    MaxPool2d {
        #[serde(default = "two")]
        pool_size: usize,
        stride: Option<usize>,
    },
    /// The mean of each `pool_size` square, moved by `stride` (default: `pool_size`).
    AvgPool2d {
        #[serde(default = "two")]
        pool_size: usize,
        stride: Option<usize>,
    },
    /// Normalises each feature (each channel, for images) by the batch's mean and variance
    /// while training and by running averages in inference, then scales and shifts it by
    /// learnt `gamma` and `beta`. `momentum` weighs the newest batch in the running averages
    /// (PyTorch's convention).
    BatchNorm {
        #[serde(default = "bn_momentum")]
        momentum: f32,
        #[serde(default = "bn_eps")]
        eps: f32,
    },
    /// `h = tanh(x W + h U + b)` over `[time, features]`.
    SimpleRnn {
        units: usize,
        #[serde(default)]
        return_sequences: bool,
    },
    /// Long short-term memory over `[time, features]`; gates in the order input, forget,
    /// cell, output (Keras and PyTorch).
    Lstm {
        units: usize,
        #[serde(default)]
        return_sequences: bool,
    },
    /// Gated recurrent unit over `[time, features]`; gates in the order reset, update, new,
    /// with the reset applied after the recurrent product (PyTorch; Keras `reset_after`).
    Gru {
        units: usize,
        #[serde(default)]
        return_sequences: bool,
    },
    Relu,
    LeakyRelu {
        #[serde(default = "default_leak")]
        alpha: f32,
    },
    Sigmoid,
    Tanh,
}

/// How a convolution treats the border.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    /// No padding: the output shrinks by `kernel_size - 1`.
    #[default]
    Valid,
    /// Zero padding so that the output is `ceil(input / stride)` (TensorFlow's convention).
    Same,
}

fn one() -> usize {
    1
}

fn two() -> usize {
    2
}

fn bn_momentum() -> f32 {
    0.1
}

fn bn_eps() -> f32 {
    1e-5
}

fn yes() -> bool {
    true
}

fn default_leak() -> f32 {
    0.01
}

/// The activation a dense layer applies to its output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationName {
    #[default]
    Linear,
    Relu,
    LeakyRelu,
    Sigmoid,
    Tanh,
}

impl ActivationName {
    pub(crate) fn activation(self) -> Option<Activation> {
        match self {
            ActivationName::Linear => None,
            ActivationName::Relu => Some(Activation::Relu),
            ActivationName::LeakyRelu => Some(Activation::LeakyRelu { alpha: default_leak() }),
            ActivationName::Sigmoid => Some(Activation::Sigmoid),
            ActivationName::Tanh => Some(Activation::Tanh),
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
        }
    }

    /// The shape of one output sample for one input sample of `input`.
    ///
    /// # Errors
    /// [`Error::Spec`] at `location` when the layer cannot take `input` or a field is out of range.
    pub(crate) fn output_shape(&self, input: &[usize], location: &str) -> Result<Vec<usize>> {
        match *self {
            LayerSpec::Flatten => Ok(vec![input.iter().product()]),
            LayerSpec::Dense { units, .. } => {
                if units == 0 {
                    return Err(Error::spec(format!("{location}.units"), "must be at least 1"));
                }
                if input.len() != 1 {
                    return Err(Error::spec(
                        location,
                        format!("dense expects a flat input but gets shape {input:?}; put a flatten layer before it"),
                    ));
                }
                Ok(vec![units])
            }
            LayerSpec::Dropout { rate } => {
                if !(0.0..1.0).contains(&rate) {
                    return Err(Error::spec(format!("{location}.rate"), format!("{rate} is not in [0, 1)")));
                }
                Ok(input.to_vec())
            }
            LayerSpec::Reshape { ref shape } => {
                if shape.is_empty()
                    || shape.contains(&0)
                    || shape.iter().product::<usize>() != input.iter().product::<usize>()
                {
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
                let window = conv_window(kernel_size, stride, padding, (h, w));
                let (oh, ow) = window.output_size((h, w)).ok_or_else(|| {
                    Error::spec(
                        format!("{location}.kernel_size"),
                        format!("{kernel_size} is larger than the {h}x{w} input"),
                    )
                })?;
                Ok(vec![filters, oh, ow])
            }
            LayerSpec::MaxPool2d { pool_size, stride } | LayerSpec::AvgPool2d { pool_size, stride } => {
                positive(location, "pool_size", pool_size)?;
                let stride = stride.unwrap_or(pool_size);
                positive(location, "stride", stride)?;
                let [c, h, w] = image(input, location, self.kind())?;
                let window = conv_window(pool_size, stride, Padding::Valid, (h, w));
                let (oh, ow) = window.output_size((h, w)).ok_or_else(|| {
                    Error::spec(
                        format!("{location}.pool_size"),
                        format!("{pool_size} is larger than the {h}x{w} input"),
                    )
                })?;
                Ok(vec![c, oh, ow])
            }
            LayerSpec::BatchNorm { momentum, eps } => {
                if !(momentum > 0.0 && momentum <= 1.0) {
                    return Err(Error::spec(
                        format!("{location}.momentum"),
                        format!("{momentum} is not in (0, 1]"),
                    ));
                }
                if !(eps > 0.0 && eps.is_finite()) {
                    return Err(Error::spec(
                        format!("{location}.eps"),
                        format!("{eps} must be a small positive number"),
                    ));
                }
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
            LayerSpec::Relu | LayerSpec::LeakyRelu { .. } | LayerSpec::Sigmoid | LayerSpec::Tanh => {
                Ok(input.to_vec())
            }
        }
    }
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
    pub const PRESETS: &'static [&'static str] = &["mlp", "cnn", "lstm", "gru"];

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
        let Value::Object(mut fields) = value else {
            return Err(Error::spec("top level", "expected an object with a `layers` array"));
        };
        if let Some(key) = fields.keys().find(|k| !matches!(k.as_str(), "input" | "normalize" | "layers")) {
            return Err(Error::spec(key.clone(), "unknown field; expected `input`, `normalize` or `layers`"));
        }
        let input = match fields.remove("input") {
            None => mnist_input(),
            Some(v) => serde_json::from_value(v).map_err(|e| {
                Error::spec("input", format!("{e}; expected an array of sizes such as [1, 28, 28]"))
            })?,
        };
        let normalize = match fields.remove("normalize") {
            None | Some(Value::Null) => None,
            Some(v) => Some(serde_json::from_value(v).map_err(|e| {
                Error::spec("normalize", format!("{e}; expected {{\"mean\": number, \"std\": number}}"))
            })?),
        };
        let Some(Value::Array(raw_layers)) = fields.remove("layers") else {
            return Err(Error::spec("layers", "missing, or not an array of layers"));
        };
        let layers = raw_layers
            .into_iter()
            .enumerate()
            .map(|(i, raw)| {
                let kind = raw.get("type").and_then(Value::as_str).map(str::to_owned);
                serde_json::from_value(raw).map_err(|e| {
                    let location = match kind {
                        Some(kind) => format!("layers[{i}] ({kind})"),
                        None => format!("layers[{i}]"),
                    };
                    Error::spec(location, e.to_string())
                })
            })
            .collect::<Result<Vec<LayerSpec>>>()?;
        let spec = ModelSpec { input, normalize, layers };
        spec.output_shape()?;
        Ok(spec)
    }

    /// The shape of one output sample, after checking every layer against its input.
    ///
    /// # Errors
    /// [`Error::Spec`] naming the first layer that cannot be built.
    pub fn output_shape(&self) -> Result<Vec<usize>> {
        if self.input.is_empty() || self.input.contains(&0) {
            return Err(Error::spec("input", format!("{:?} is not a valid sample shape", self.input)));
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
        self.layers.iter().enumerate().try_fold(self.input.clone(), |shape, (i, layer)| {
            layer.output_shape(&shape, &format!("layers[{i}] ({})", layer.kind()))
        })
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
    fn bad_specs_name_the_layer_and_field() {
        assert_eq!(
            err(r#"{"layers":[{"type":"flatten"},{"type":"dense"}]}"#),
            "model spec, layers[1] (dense): missing field `units`"
        );
        assert!(err(r#"{"layers":[{"type":"dense","unit":5}]}"#)
            .starts_with("model spec, layers[0] (dense): unknown field `unit`"));
        assert!(err(r#"{"layers":[{"type":"conv9"}]}"#)
            .starts_with("model spec, layers[0] (conv9): unknown variant `conv9`"));
        assert_eq!(
            err(r#"{"layers":[{"type":"flatten"},{"type":"dense","units":0}]}"#),
            "model spec, layers[1] (dense).units: must be at least 1"
        );
        assert_eq!(
            err(r#"{"layers":[{"type":"dense","units":3}]}"#),
            "model spec, layers[0] (dense): dense expects a flat input but gets shape [1, 28, 28]; put a flatten layer before it"
        );
        assert_eq!(
            err(r#"{"layers":[{"type":"dropout","rate":1.5}]}"#),
            "model spec, layers[0] (dropout).rate: 1.5 is not in [0, 1)"
        );
        assert!(err(r#"{"layers":[{"type":"flatten"},{"type":"dense","units":"many"}]}"#)
            .starts_with("model spec, layers[1] (dense): invalid type: string \"many\""));
        assert_eq!(err(r#"{"layers": [}"#), "model spec, line 1, column 13: invalid JSON");
        assert_eq!(
            err(r#"{"layer": []}"#),
            "model spec, layer: unknown field; expected `input`, `normalize` or `layers`"
        );
        assert_eq!(err(r#"{"layers": []}"#), "model spec, layers: a model needs at least one layer");
        assert_eq!(
            err(r#"{"normalize":{"mean":0.1,"std":0},"layers":[{"type":"flatten"}]}"#),
            "model spec, normalize: mean 0.1 and std 0 must be finite, std positive"
        );
        assert!(err(r#"{"normalize":{"mean":0.1},"layers":[{"type":"flatten"}]}"#)
            .starts_with("model spec, normalize: missing field `std`"));
        assert_eq!(err(r#"[1]"#), "model spec, top level: expected an object with a `layers` array");
    }
}
