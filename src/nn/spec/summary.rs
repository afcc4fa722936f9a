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
        rows_of(&self.layers, &self.input, "layers", 0, &mut rows, &mut frozen)?;
        Ok(Summary { input: self.input.clone(), rows, total, trainable: total - frozen })
    }
}

/// Adds the lines of `layers` (taking `input`) at `depth` to `rows`, and the values of their
/// running averages to `frozen`; returns their output shape.
fn rows_of(
    layers: &[LayerSpec],
    input: &[usize],
    path: &str,
    depth: usize,
    rows: &mut Vec<SummaryRow>,
    frozen: &mut u64,
) -> Result<Vec<usize>> {
    let mut shape = input.to_vec();
    for (i, layer) in layers.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let mut parameters = 0;
        let output = layer.checked_shape(&shape, &at, &mut parameters)?;
        rows.push(SummaryRow {
            path: at.clone(),
            kind: layer.kind(),
            depth,
            output: output.clone(),
            parameters,
        });
        match layer {
            LayerSpec::Residual { layers, shortcut } => {
                rows_of(layers, &shape, &format!("{at}.layers"), depth + 1, rows, frozen)?;
                if let Some(shortcut) = shortcut {
                    rows_of(shortcut, &shape, &format!("{at}.shortcut"), depth + 1, rows, frozen)?;
                }
            }
            LayerSpec::BatchNorm { .. } => *frozen += 2 * shape[0] as u64,
            _ => {}
        }
        shape = output;
    }
    Ok(shape)
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
