//! ONNX export (opset 17): the model as a graph of ONNX's own operators, with its spec in the
//! metadata. The graph takes raw pixels `pixels` `[N, ..input]` in `[0, 1]` (normalisation, if
//! the model has one, is inside the graph) and gives `logits` `[N, classes]` and
//! `probabilities` (their softmax).
//!
//! Recurrent layers become ONNX's `RNN`, `LSTM` and `GRU`, whose layouts differ from ours:
//! weights are transposed to `[gates * units, inputs]`, LSTM gate blocks go from our
//! (input, forget, cell, output) to ONNX's (input, output, forget, cell), GRU blocks from our
//! (reset, update, new) to ONNX's (update, reset, hidden) with `linear_before_reset = 1`, and
//! the sequence axis moves first.
//!
//! A residual block's layers (and shortcut) are exported in line and summed with `Add`;
//! attention is `MatMul`s on `[N, heads, tokens, key_size]` with `Softmax` over the keys;
//! layer norm is `LayerNormalization`; GELU (tanh form, which opset 17 has no operator for)
//! is spelt out in `Mul`, `Add` and `Tanh`.

use prost::Message;

use super::proto::*;
use crate::backend::cpu::Activation;
use crate::nn::{ActivationName, LayerSpec, Model};
use crate::tensor::Tensor;
use crate::{Error, Result};

const OPSET: i64 = 17;
/// The IR version that goes with opset 17.
const IR_VERSION: i64 = 8;
pub const INPUT: &str = "pixels";
pub const LOGITS: &str = "logits";
pub const PROBABILITIES: &str = "probabilities";

/// The model as an ONNX file.
///
/// # Errors
/// [`Error::Export`] for a layer ONNX cannot express (none so far: every layer type maps).
pub fn export(model: &Model) -> Result<Vec<u8>> {
    let mut g = Graph { model, nodes: Vec::new(), initializers: Vec::new(), names: 0 };
    let spec = model.spec();
    let mut x = INPUT.to_owned();
    let mut shape = spec.input.clone();
    if let Some(norm) = spec.normalize {
        let mean = g.constant("normalize.mean", &[], vec![norm.mean]);
        let std = g.constant("normalize.std", &[], vec![norm.std]);
        x = g.node("Sub", &[&x, &mean], vec![]);
        x = g.node("Div", &[&x, &std], vec![]);
    }
    (x, shape) = g.layers("layers", &spec.layers, &x, &shape)?;
    let logits = g.node_named("Identity", &[&x], vec![], LOGITS);
    g.node_named("Softmax", &[&logits], vec![int("axis", -1)], PROBABILITIES);

    let mut input_dims = vec![batch_dim()];
    input_dims.extend(spec.input.iter().map(|&d| fixed_dim(d)));
    let output_dims = || {
        let mut dims = vec![batch_dim()];
        dims.extend(shape.iter().map(|&d| fixed_dim(d)));
        dims
    };
    let proto = ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
        producer_name: "ferrograd".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: "A ferrograd model: pixels in [0, 1] to class scores".into(),
        graph: Some(GraphProto {
            node: g.nodes,
            name: "ferrograd".into(),
            initializer: g.initializers,
            input: vec![value_info(INPUT, input_dims)],
            output: vec![value_info(LOGITS, output_dims()), value_info(PROBABILITIES, output_dims())],
        }),
        metadata_props: vec![StringStringEntryProto { key: "ferrograd.spec".into(), value: spec.to_json() }],
    };
    Ok(proto.encode_to_vec())
}

struct Graph<'m> {
    model: &'m Model,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    names: usize,
}

impl Graph<'_> {
    /// Adds the nodes of `layers`, whose parameters are named `{prefix}.{i}.…`, reading `x`
    /// (one sample of `shape`); returns the output and its shape.
    fn layers(
        &mut self,
        prefix: &str,
        layers: &[LayerSpec],
        x: &str,
        shape: &[usize],
    ) -> Result<(String, Vec<usize>)> {
        let (mut x, mut shape) = (x.to_owned(), shape.to_vec());
        for (i, layer) in layers.iter().enumerate() {
            x = self.layer(&format!("{prefix}.{i}"), layer, &x, &shape)?;
            shape = layer.output_shape(&shape, "")?;
        }
        Ok((x, shape))
    }

    /// Adds the nodes of the layer whose parameters are named `{prefix}.…`, reading `x` (one
    /// sample of `shape`); returns its output.
    fn layer(&mut self, prefix: &str, layer: &LayerSpec, x: &str, shape: &[usize]) -> Result<String> {
        Ok(match layer {
            LayerSpec::Flatten => self.node("Flatten", &[x], vec![int("axis", 1)]),
            LayerSpec::Reshape { shape: to } => {
                // -1 lets the batch size through.
                let dims: Vec<i64> = std::iter::once(-1).chain(to.iter().map(|&d| d as i64)).collect();
                let target = self.ints_constant(&format!("{prefix}.shape"), dims);
                self.node("Reshape", &[x, &target], vec![])
            }
            LayerSpec::Dropout { .. } => x.to_owned(),
            LayerSpec::Dense { activation, bias, .. } if shape.len() == 1 => {
                let w = self.param(&format!("{prefix}.weight"));
                let mut inputs = vec![x.to_owned(), w];
                if *bias {
                    inputs.push(self.param(&format!("{prefix}.bias")));
                }
                let y = self.node("Gemm", &refs(&inputs), vec![]);
                self.activation_name(&y, *activation)
            }
            // On a sequence: MatMul broadcasts over the tokens, as Gemm cannot.
            LayerSpec::Dense { activation, bias, .. } => {
                let y = self.projection(prefix, x, *bias);
                self.activation_name(&y, *activation)
            }
            LayerSpec::Conv2d { kernel_size, stride, padding, activation, bias, .. } => {
                let window = crate::nn::conv_window(*kernel_size, *stride, *padding, (shape[1], shape[2]));
                let (top, bottom, left, right) = window.padding;
                let w = self.param(&format!("{prefix}.weight"));
                let mut inputs = vec![x.to_owned(), w];
                if *bias {
                    inputs.push(self.param(&format!("{prefix}.bias")));
                }
                let k = *kernel_size as i64;
                let s = *stride as i64;
                let attrs = vec![
                    ints("kernel_shape", vec![k, k]),
                    ints("strides", vec![s, s]),
                    ints("pads", [top, left, bottom, right].map(|p| p as i64).to_vec()),
                ];
                let y = self.node("Conv", &refs(&inputs), attrs);
                self.activation_name(&y, *activation)
            }
            LayerSpec::MaxPool2d { pool_size, stride } | LayerSpec::AvgPool2d { pool_size, stride } => {
                let op = if matches!(layer, LayerSpec::MaxPool2d { .. }) { "MaxPool" } else { "AveragePool" };
                let k = *pool_size as i64;
                let s = stride.unwrap_or(*pool_size) as i64;
                self.node(op, &[x], vec![ints("kernel_shape", vec![k, k]), ints("strides", vec![s, s])])
            }
            LayerSpec::BatchNorm { eps, .. } => {
                let names = ["gamma", "beta", "running_mean", "running_var"]
                    .map(|p| self.param(&format!("{prefix}.{p}")));
                self.node(
                    "BatchNormalization",
                    &[x, &names[0], &names[1], &names[2], &names[3]],
                    vec![float("epsilon", *eps)],
                )
            }
            LayerSpec::SimpleRnn { units, return_sequences } => {
                self.recurrent(prefix, "RNN", &[0], *units, *return_sequences, x, false)?
            }
            // Our (i, f, g, o) blocks in ONNX's (i, o, f, c) order.
            LayerSpec::Lstm { units, return_sequences } => {
                self.recurrent(prefix, "LSTM", &[0, 3, 1, 2], *units, *return_sequences, x, false)?
            }
            // Our (r, z, n) blocks in ONNX's (z, r, h) order.
            LayerSpec::Gru { units, return_sequences } => {
                self.recurrent(prefix, "GRU", &[1, 0, 2], *units, *return_sequences, x, true)?
            }
            LayerSpec::Relu => self.activation(x, Activation::Relu),
            LayerSpec::LeakyRelu { alpha } => self.activation(x, Activation::LeakyRelu { alpha: *alpha }),
            LayerSpec::Sigmoid => self.activation(x, Activation::Sigmoid),
            LayerSpec::Tanh => self.activation(x, Activation::Tanh),
            LayerSpec::Gelu => self.activation(x, Activation::Gelu),
            LayerSpec::Residual { layers, shortcut } => {
                let (y, _) = self.layers(&format!("{prefix}.layers"), layers, x, shape)?;
                let skip = match shortcut {
                    Some(shortcut) => self.layers(&format!("{prefix}.shortcut"), shortcut, x, shape)?.0,
                    None => x.to_owned(),
                };
                self.node("Add", &[&y, &skip], vec![])
            }
            LayerSpec::LayerNorm { eps } => {
                let gamma = self.param(&format!("{prefix}.gamma"));
                let beta = self.param(&format!("{prefix}.beta"));
                self.node(
                    "LayerNormalization",
                    &[x, &gamma, &beta],
                    vec![int("axis", -1), float("epsilon", *eps)],
                )
            }
            LayerSpec::MultiHeadAttention { heads, key_size, .. } => {
                let h = *heads as i64;
                let k = key_size.unwrap_or(shape[1] / heads) as i64;
                // [N, T, h * k] as [N, T, h, k] (0 keeps a dimension), heads ahead of tokens.
                let split = self.ints_constant(&format!("{prefix}.split_heads"), vec![0, 0, h, k]);
                let mut heads = |part: &str, perm: Vec<i64>| {
                    let y = self.projection(&format!("{prefix}.{part}"), x, true);
                    let y = self.node("Reshape", &[&y, &split], vec![]);
                    self.node("Transpose", &[&y], vec![ints("perm", perm)])
                };
                let q = heads("query", vec![0, 2, 1, 3]);
                let kt = heads("key", vec![0, 2, 3, 1]);
                let v = heads("value", vec![0, 2, 1, 3]);
                let scores = self.node("MatMul", &[&q, &kt], vec![]);
                let scale = self.constant(&format!("{prefix}.scale"), &[], vec![1.0 / (k as f32).sqrt()]);
                let scores = self.node("Mul", &[&scores, &scale], vec![]);
                let weights = self.node("Softmax", &[&scores], vec![int("axis", -1)]);
                let context = self.node("MatMul", &[&weights, &v], vec![]);
                let context = self.node("Transpose", &[&context], vec![ints("perm", vec![0, 2, 1, 3])]);
                let merge = self.ints_constant(&format!("{prefix}.merge_heads"), vec![0, 0, h * k]);
                let context = self.node("Reshape", &[&context, &merge], vec![]);
                self.projection(&format!("{prefix}.output"), &context, true)
            }
            LayerSpec::PatchEmbed { patch_size, .. } => {
                let w = self.param(&format!("{prefix}.weight"));
                let b = self.param(&format!("{prefix}.bias"));
                let p = *patch_size as i64;
                let attrs = vec![ints("kernel_shape", vec![p, p]), ints("strides", vec![p, p])];
                let y = self.node("Conv", &[x, &w, &b], attrs);
                let tokens = ((shape[1] / patch_size) * (shape[2] / patch_size)) as i64;
                let flat = self.ints_constant(&format!("{prefix}.tokens"), vec![0, 0, tokens]);
                let y = self.node("Reshape", &[&y, &flat], vec![]);
                let y = self.node("Transpose", &[&y], vec![ints("perm", vec![0, 2, 1])]);
                let position = self.param(&format!("{prefix}.position"));
                self.node("Add", &[&y, &position], vec![])
            }
            LayerSpec::GlobalAvgPool if shape.len() == 3 => {
                let y = self.node("GlobalAveragePool", &[x], vec![]);
                self.node("Flatten", &[&y], vec![int("axis", 1)])
            }
            LayerSpec::GlobalAvgPool => {
                self.node("ReduceMean", &[x], vec![ints("axes", vec![1]), int("keepdims", 0)])
            }
        })
    }

    /// `x W + b` over the last axis of `x`, from the parameters `{prefix}.weight` and
    /// `{prefix}.bias`.
    fn projection(&mut self, prefix: &str, x: &str, bias: bool) -> String {
        let w = self.param(&format!("{prefix}.weight"));
        let y = self.node("MatMul", &[x, &w], vec![]);
        if bias {
            let b = self.param(&format!("{prefix}.bias"));
            self.node("Add", &[&y, &b], vec![])
        } else {
            y
        }
    }

    /// An ONNX recurrent node over our `[N, T, F]`; `order[k]` is our block for ONNX block `k`.
    #[allow(clippy::too_many_arguments)]
    fn recurrent(
        &mut self,
        prefix: &str,
        op: &str,
        order: &[usize],
        units: usize,
        sequences: bool,
        x: &str,
        gru: bool,
    ) -> Result<String> {
        let w = &self.value(&format!("{prefix}.w"))?;
        let u = &self.value(&format!("{prefix}.u"))?;
        let bias = self.value(&format!("{prefix}.bias"))?;
        let recurrent_bias = if gru { Some(self.value(&format!("{prefix}.recurrent_bias"))?) } else { None };
        let gates = order.len();
        // ONNX W is [1, gates * units, inputs]: our [inputs, gates * units] transposed, blocks reordered.
        let transpose_blocks = |m: &Tensor| -> Vec<f32> {
            let rows = m.shape()[0];
            let mut out = Vec::with_capacity(rows * gates * units);
            for &block in order {
                for j in 0..units {
                    out.extend((0..rows).map(|r| m[[r, block * units + j]]));
                }
            }
            out
        };
        let reorder = |b: &Tensor| -> Vec<f32> {
            order.iter().flat_map(|&block| (0..units).map(move |j| b[[block * units + j]])).collect()
        };
        let w_name =
            self.constant(&format!("{prefix}.W"), &[1, gates * units, w.shape()[0]], transpose_blocks(w));
        let r_name = self.constant(&format!("{prefix}.R"), &[1, gates * units, units], transpose_blocks(u));
        let mut b = reorder(&bias);
        b.extend(match &recurrent_bias {
            Some(rb) => reorder(rb),
            None => vec![0.0; gates * units],
        });
        let b_name = self.constant(&format!("{prefix}.B"), &[1, 2 * gates * units], b);
        let seq = self.node("Transpose", &[x], vec![ints("perm", vec![1, 0, 2])]);
        let mut attrs = vec![int("hidden_size", units as i64)];
        if gru {
            attrs.push(int("linear_before_reset", 1));
        }
        let y = self.fresh();
        let y_h = self.fresh();
        self.nodes.push(NodeProto {
            input: vec![seq, w_name, r_name, b_name],
            output: vec![y.clone(), y_h.clone()],
            name: format!("{prefix}.{op}"),
            op_type: op.into(),
            attribute: attrs,
        });
        Ok(if sequences {
            // Y is [T, 1, N, units]: drop the direction axis, then batch first.
            let axes = self.ints_constant(&format!("{prefix}.squeeze"), vec![1]);
            let squeezed = self.node("Squeeze", &[&y, &axes], vec![]);
            self.node("Transpose", &[&squeezed], vec![ints("perm", vec![1, 0, 2])])
        } else {
            // Y_h is [1, N, units].
            let axes = self.ints_constant(&format!("{prefix}.squeeze"), vec![0]);
            self.node("Squeeze", &[&y_h, &axes], vec![])
        })
    }

    fn activation_name(&mut self, x: &str, name: ActivationName) -> String {
        match name.activation() {
            Some(act) => self.activation(x, act),
            None => x.to_owned(),
        }
    }

    fn activation(&mut self, x: &str, act: Activation) -> String {
        match act {
            Activation::Relu => self.node("Relu", &[x], vec![]),
            Activation::LeakyRelu { alpha } => self.node("LeakyRelu", &[x], vec![float("alpha", alpha)]),
            Activation::Sigmoid => self.node("Sigmoid", &[x], vec![]),
            Activation::Tanh => self.node("Tanh", &[x], vec![]),
            // x/2 (1 + tanh(c (x + a x^3))), as Activation::Gelu.
            Activation::Gelu => {
                if !self.initializers.iter().any(|t| t.name == "gelu.a") {
                    for (name, v) in [
                        ("gelu.a", 0.044_715),
                        ("gelu.c", 0.797_884_6),
                        ("gelu.half", 0.5),
                        ("gelu.one", 1.0),
                    ] {
                        self.constant(name, &[], vec![v]);
                    }
                }
                let [a, c, half, one] = ["gelu.a", "gelu.c", "gelu.half", "gelu.one"];
                let square = self.node("Mul", &[x, x], vec![]);
                let cube = self.node("Mul", &[&square, x], vec![]);
                let cube = self.node("Mul", &[&cube, a], vec![]);
                let inner = self.node("Add", &[x, &cube], vec![]);
                let inner = self.node("Mul", &[&inner, c], vec![]);
                let t = self.node("Tanh", &[&inner], vec![]);
                let t = self.node("Add", &[&t, one], vec![]);
                let y = self.node("Mul", &[x, &t], vec![]);
                self.node("Mul", &[&y, half], vec![])
            }
        }
    }

    fn value(&self, name: &str) -> Result<Tensor> {
        self.model
            .params()
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.value.clone())
            .ok_or_else(|| Error::Export(format!("the model has no parameter `{name}`")))
    }

    /// A parameter as an initializer of the same name.
    fn param(&mut self, name: &str) -> String {
        let value = self.value(name).expect("every layer's parameters exist by construction");
        self.constant(name, value.shape(), value.iter().copied().collect())
    }

    fn constant(&mut self, name: &str, dims: &[usize], data: Vec<f32>) -> String {
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: data_type::FLOAT,
            float_data: data,
            int64_data: Vec::new(),
            name: name.into(),
        });
        name.into()
    }

    fn ints_constant(&mut self, name: &str, data: Vec<i64>) -> String {
        self.initializers.push(TensorProto {
            dims: vec![data.len() as i64],
            data_type: data_type::INT64,
            float_data: Vec::new(),
            int64_data: data,
            name: name.into(),
        });
        name.into()
    }

    fn fresh(&mut self) -> String {
        self.names += 1;
        format!("t{}", self.names)
    }

    fn node(&mut self, op: &str, inputs: &[&str], attribute: Vec<AttributeProto>) -> String {
        let output = self.fresh();
        self.node_named(op, inputs, attribute, &output)
    }

    fn node_named(
        &mut self,
        op: &str,
        inputs: &[&str],
        attribute: Vec<AttributeProto>,
        output: &str,
    ) -> String {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: vec![output.to_owned()],
            name: format!("{op}_{}", self.nodes.len()),
            op_type: op.into(),
            attribute,
        });
        output.to_owned()
    }
}

fn refs(names: &[String]) -> Vec<&str> {
    names.iter().map(String::as_str).collect()
}

fn int(name: &str, i: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: attribute_type::INT, i, ..Default::default() }
}

fn float(name: &str, f: f32) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: attribute_type::FLOAT, f, ..Default::default() }
}

fn ints(name: &str, ints: Vec<i64>) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: attribute_type::INTS, ints, ..Default::default() }
}

fn batch_dim() -> Dimension {
    Dimension { value: Some(DimensionValue::DimParam("N".into())) }
}

fn fixed_dim(d: usize) -> Dimension {
    Dimension { value: Some(DimensionValue::DimValue(d as i64)) }
}

fn value_info(name: &str, dims: Vec<Dimension>) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto { dim: dims }),
            }),
        }),
    }
}
