//! A model's summary as Keras prints it: every layer (a block's own layers indented under
//! it) with its output shape and parameter count, and the totals.

use serde::Serialize;

use super::{LayerSpec, ModelSpec};
use crate::Result;

/// One layer's line.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SummaryRow {
    /// The layer's JSON path: `layers[2]`, or `layers[2].layers[0]` inside a block.
    pub path: String,
    /// The layer's `type`.
    pub kind: &'static str,
    /// Blocks around the layer: 0 at the top level.
    pub depth: usize,
    /// The shape of one output sample.
    pub output: Vec<usize>,
    /// Values in the layer's parameters and buffers (a block's: those of its layers).
    pub parameters: u64,
}

/// Every layer's line and the totals.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub input: Vec<usize>,
    pub rows: Vec<SummaryRow>,
    /// Values in all parameters and buffers.
    pub total: u64,
    /// Of those, the ones the optimizer trains (all but batch norm's running averages).
    pub trainable: u64,
    /// Floating-point operations of one sample's forward pass in the layers' matrix
    /// products (dense, convolution, patch embedding, the recurrent cells' and attention's
    /// projections and attention's scores), two per multiply-add; elementwise work is not
    /// counted. A training step costs about three times this (forward, and backward's two
    /// products per product).
    pub flops: u64,
}

impl ModelSpec {
    /// The model's summary, counted from the spec without building anything.
    ///
    /// # Errors
    /// As [`ModelSpec::output_shape`], naming the first layer that cannot be built.
    pub fn summary(&self) -> Result<Summary> {
        let total = self.parameter_count()?;
        let mut rows = Vec::new();
        let mut frozen = 0;
        let mut flops = 0;
        rows_of(&self.layers, &self.input, "layers", 0, &mut rows, &mut frozen, &mut flops)?;
        Ok(Summary { input: self.input.clone(), rows, total, trainable: total - frozen, flops })
    }
}

/// Adds the lines of `layers` (taking `input`) at `depth` to `rows`, the values of their
/// running averages to `frozen` and their products' operations to `flops`; returns their
/// output shape.
fn rows_of(
    layers: &[LayerSpec],
    input: &[usize],
    path: &str,
    depth: usize,
    rows: &mut Vec<SummaryRow>,
    frozen: &mut u64,
    flops: &mut u64,
) -> Result<Vec<usize>> {
    let mut shape = input.to_vec();
    for (i, layer) in layers.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let mut parameters = 0;
        let output = layer.checked_shape(&shape, &at, &mut parameters)?;
        *flops += product_flops(layer, &shape, &output);
        rows.push(SummaryRow {
            path: at.clone(),
            kind: layer.kind(),
            depth,
            output: output.clone(),
            parameters,
        });
        match layer {
            LayerSpec::Residual { layers, shortcut } => {
                rows_of(layers, &shape, &format!("{at}.layers"), depth + 1, rows, frozen, flops)?;
                if let Some(shortcut) = shortcut {
                    rows_of(shortcut, &shape, &format!("{at}.shortcut"), depth + 1, rows, frozen, flops)?;
                }
            }
            LayerSpec::BatchNorm { .. } => *frozen += 2 * shape[0] as u64,
            _ => {}
        }
        shape = output;
    }
    Ok(shape)
}

/// Operations of `layer`'s matrix products on one sample shaped `input`, giving `output`.
fn product_flops(layer: &LayerSpec, input: &[usize], output: &[usize]) -> u64 {
    let count = |shape: &[usize]| shape.iter().product::<usize>() as u64;
    let last = |shape: &[usize]| *shape.last().unwrap_or(&1) as u64;
    match *layer {
        // Each output value: a dot product over the last axis of the input.
        LayerSpec::Dense { .. } => 2 * count(output) * last(input),
        LayerSpec::Conv2d { kernel_size, .. } => {
            2 * count(output) * (kernel_size * kernel_size) as u64 * input[0] as u64
        }
        LayerSpec::PatchEmbed { patch_size, .. } => {
            2 * count(output) * (patch_size * patch_size) as u64 * input[0] as u64
        }
        // Per time step, every gate from the input and the hidden state.
        LayerSpec::Lstm { units, .. } | LayerSpec::Gru { units, .. } => {
            let gates = if matches!(layer, LayerSpec::Lstm { .. }) { 4 } else { 3 };
            let (steps, features) = (input[0] as u64, input[1] as u64);
            2 * steps * gates * units as u64 * (features + units as u64)
        }
        // Queries, keys and values, the output projection, the scores and their weighted sum.
        LayerSpec::MultiHeadAttention { heads, key_size, .. } => {
            let (tokens, dim) = (input[0] as u64, input[1] as u64);
            let inner = (heads * key_size.unwrap_or(input[1] / heads)) as u64;
            2 * (3 * tokens * dim * inner + tokens * inner * dim + 2 * tokens * tokens * inner)
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resnet_preset_line_by_line() {
        let summary = ModelSpec::preset("resnet").unwrap().summary().unwrap();
        let line = |path: &str| summary.rows.iter().find(|r| r.path == path).unwrap();
        // conv 16 3x3 on one channel: 16 * 9 weights + 16 biases.
        assert_eq!(
            (line("layers[0]").kind, line("layers[0]").output.clone(), line("layers[0]").parameters),
            ("conv2d", vec![16, 28, 28], 160)
        );
        // A block: two convolutions 16 -> 16 without bias (2 * 2,304) and two batch norms (2 * 64).
        assert_eq!(line("layers[1]").parameters, 2 * 2304 + 2 * 64);
        assert_eq!(line("layers[1].layers[1]").depth, 1);
        assert_eq!(line("layers[1].layers[1]").kind, "batch_norm");
        // The 1x1 shortcut 16 -> 32.
        assert_eq!(line("layers[6].shortcut[0]").parameters, 512);
        assert_eq!(line("layers[6]").output, vec![32, 14, 14]);
        let top: u64 = summary.rows.iter().filter(|r| r.depth == 0).map(|r| r.parameters).sum();
        assert_eq!(top, summary.total);
        // Running mean and variance of six batch norms of 16, 16, 16, 16, 32 and 32 channels.
        assert_eq!(summary.total - summary.trainable, 2 * (4 * 16 + 2 * 32));
    }

    #[test]
    fn flops_count_the_products_of_one_forward_pass() {
        // Keras's convnet: conv 32 3x3 on 26x26, conv 64 3x3 over 32 channels on 11x11, dense
        // 1600 -> 10.
        let convnet = ModelSpec::preset("convnet").unwrap().summary().unwrap();
        assert_eq!(convnet.flops, 2 * (26 * 26 * 32 * 9 + 11 * 11 * 64 * 9 * 32 + 1600 * 10));
        assert_eq!(ModelSpec::preset("mlp").unwrap().summary().unwrap().flops, 2 * (784 * 128 + 128 * 10));
        // 28 steps of 4 gates of 64 from 28 inputs and 64 hidden values, then dense 64 -> 10.
        let lstm = ModelSpec::preset("lstm").unwrap().summary().unwrap();
        assert_eq!(lstm.flops, 2 * (28 * 4 * 64 * (28 + 64) + 64 * 10));
    }

    #[test]
    fn an_error_names_the_nested_layer() {
        let spec = ModelSpec::from_value(
            serde_json::json!({"layers": [{"type": "flatten"}, {"type": "dense", "units": 10}]}),
        )
        .unwrap();
        assert_eq!(spec.summary().unwrap().rows.len(), 2);
        let mut bad = ModelSpec::preset("resnet").unwrap();
        if let LayerSpec::Residual { layers, .. } = &mut bad.layers[1] {
            if let LayerSpec::Conv2d { kernel_size, padding, .. } = &mut layers[0] {
                (*kernel_size, *padding) = (40, super::super::Padding::Valid);
            }
        }
        let error = bad.summary().unwrap_err().to_string();
        assert!(error.contains("layers[1].layers[0]"), "{error}");
    }
}
