//! A look inside a model for one input: what each layer sees and what the prediction rests
//! on. Feeds the page's filter, feature-map, gate, attention and saliency views.

use ndarray::{Axis, IxDyn};
use serde::Serialize;

use crate::autograd::Tape;
use crate::nn::recurrent::Cell;
use crate::nn::{LayerSpec, Mode, Model, Trace};
use crate::tensor::Tensor;
use crate::train::argmax_rows;
use crate::{Error, Result};

/// Stacked 2-d maps: `count` maps of `height x width`, row-major, one after another.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Maps {
    pub layer: usize,
    pub count: usize,
    pub height: usize,
    pub width: usize,
    pub values: Vec<f32>,
}

/// A recurrent layer over time: `values[t * units + j]` for each named series.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecurrentTrace {
    pub layer: usize,
    pub kind: &'static str,
    pub steps: usize,
    pub units: usize,
    pub hidden: Vec<f32>,
    /// `(gate name, values)` in the cell's gate order.
    pub gates: Vec<(&'static str, Vec<f32>)>,
}

/// One attention layer's weights for one input: `weights[(head * tokens + query) * tokens +
/// key]`, each query's row summing to 1.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttentionMaps {
    pub heads: usize,
    pub tokens: usize,
    pub weights: Vec<f32>,
}

/// The attention of a Transformer for one input: every layer's weights, the grid of patches
/// its tokens stand for, and the attention rollout to the pooled output.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attention {
    /// Every attention layer, in the order they run.
    pub layers: Vec<AttentionMaps>,
    /// `[rows, columns]` of patches when the tokens come from a `patch_embed` layer (token
    /// `r * columns + c` is the patch at row r, column c); absent otherwise.
    pub grid: Option<[usize; 2]>,
    /// `rollout[query * tokens + key]`: how much of each token's final representation flows
    /// from each input token through every layer (Abnar and Zuidema 2020: the heads'
    /// mean plus the identity for the residual path, rows renormalised, multiplied through
    /// the layers).
    pub rollout: Vec<f32>,
    /// The mean of the rollout's rows: what flows from each input token to the mean over the
    /// tokens that the classifier reads.
    pub pooled: Vec<f32>,
}

/// Everything the inside views show for one input.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inspection {
    pub probabilities: Vec<f32>,
    pub predicted: usize,
    /// `|d score[predicted] / d pixel|` for every input value, in the input's layout: which
    /// pixels the prediction is most sensitive to.
    pub saliency: Vec<f32>,
    /// The first convolution's kernels, one map per (filter, input channel).
    pub filters: Option<Maps>,
    /// The output of every top-level convolution and residual block on images, one map per
    /// channel.
    pub feature_maps: Vec<Maps>,
    pub recurrent: Vec<RecurrentTrace>,
    /// For models with attention layers.
    pub attention: Option<Attention>,
}

/// Inspects `model` on one sample shaped as its input (without the batch axis).
///
/// # Errors
/// When the sample does not have the model's input shape.
pub fn inspect(model: &Model, sample: &[f32]) -> Result<Inspection> {
    let mut shape = vec![1];
    shape.extend_from_slice(&model.spec().input);
    let input = crate::tensor::from_vec(&shape, sample.to_vec()).map_err(|_| {
        Error::bad_shape("inspect", &[sample.len()], format!("expects {:?} values", model.spec().input))
    })?;
    let mut tape = Tape::new(model.params());
    let x = tape.variable(input);
    let mut trace = Trace::default();
    let scores = model.forward_traced(&mut tape, x, Mode::Eval, Some(&mut trace))?;
    let probs = tape.softmax(scores)?;
    let probabilities = tape.value(probs).iter().copied().collect();
    let predicted = argmax_rows(tape.value(scores))[0];

    // The predicted class's score, as a scalar: scores . onehot(predicted).
    let classes = tape.value(scores).shape()[1];
    let mut onehot = Tensor::zeros(IxDyn(&[1, classes]));
    onehot[[0, predicted]] = 1.0;
    let onehot = tape.input(onehot);
    let picked = tape.mul(scores, onehot)?;
    let picked = tape.sum(picked, 1)?;
    let grads = tape.backward(picked)?;
    let saliency = grads.wrt(x).map(|g| g.iter().map(|v| v.abs()).collect()).unwrap_or_default();

    let convs: Vec<usize> = model
        .spec()
        .layers
        .iter()
        .enumerate()
        .filter(|(_, l)| matches!(l, LayerSpec::Conv2d { .. }))
        .map(|(i, _)| i)
        .collect();
    let filters = convs.first().map(|&layer| {
        let weight = &model
            .params()
            .iter()
            .find(|p| p.name == format!("layers.{layer}.weight"))
            .expect("conv weights")
            .value;
        let s = weight.shape();
        Maps {
            layer,
            count: s[0] * s[1],
            height: s[2],
            width: s[3],
            values: weight.iter().copied().collect(),
        }
    });
    let blocks: Vec<usize> = model
        .spec()
        .layers
        .iter()
        .enumerate()
        .filter(|(_, l)| matches!(l, LayerSpec::Conv2d { .. } | LayerSpec::Residual { .. }))
        .map(|(i, _)| i)
        .collect();
    let feature_maps = trace
        .outputs
        .iter()
        .filter(|&&(layer, var)| blocks.contains(&layer) && tape.value(var).ndim() == 4)
        .map(|&(layer, var)| {
            let value = tape.value(var);
            let s = value.shape();
            Maps { layer, count: s[1], height: s[2], width: s[3], values: value.iter().copied().collect() }
        })
        .collect();
    let recurrent = trace
        .recurrent
        .iter()
        .map(|(layer, steps)| {
            let cell = match model.spec().layers[*layer] {
                LayerSpec::Lstm { .. } => Cell::Lstm,
                LayerSpec::Gru { .. } => Cell::Gru,
                _ => Cell::Simple,
            };
            let names: &[&'static str] = match cell {
                Cell::Simple => &[],
                Cell::Lstm => &["input", "forget", "cell", "output"],
                Cell::Gru => &["reset", "update", "new"],
            };
            let series = |pick: &dyn Fn(usize) -> crate::autograd::Var| -> Vec<f32> {
                (0..steps.len())
                    .flat_map(|t| {
                        tape.value(pick(t)).index_axis(Axis(0), 0).iter().copied().collect::<Vec<f32>>()
                    })
                    .collect()
            };
            let hidden = series(&|t| steps[t].hidden);
            let units = tape.value(steps[0].hidden).shape()[1];
            // Gate g of the first sample: columns g units .. (g + 1) units of each step's.
            let gates = names
                .iter()
                .enumerate()
                .map(|(g, &name)| {
                    let values = steps
                        .iter()
                        .flat_map(|step| {
                            let row = tape.value(step.gates).index_axis(Axis(0), 0);
                            row.slice(ndarray::s![g * units..(g + 1) * units]).to_vec()
                        })
                        .collect();
                    (name, values)
                })
                .collect();
            RecurrentTrace { layer: *layer, kind: cell.name(), steps: steps.len(), units, hidden, gates }
        })
        .collect();
    let attention = (!trace.attention.is_empty()).then(|| {
        let layers: Vec<AttentionMaps> = trace
            .attention
            .iter()
            .map(|a| {
                let value = tape.value(a.weights);
                let tokens = value.shape()[1];
                // The sample's heads: the first `heads` matrices of [batch * heads, t, t].
                let weights = value.iter().take(a.heads * tokens * tokens).copied().collect();
                AttentionMaps { heads: a.heads, tokens, weights }
            })
            .collect();
        let grid = model.spec().layers.iter().zip(model_shapes(model)).find_map(|(l, input)| match *l {
            LayerSpec::PatchEmbed { patch_size, .. } => Some([input[1] / patch_size, input[2] / patch_size]),
            _ => None,
        });
        let rollout = rollout(&layers);
        let tokens = layers[0].tokens;
        let pooled = (0..tokens)
            .map(|key| (0..tokens).map(|query| rollout[query * tokens + key]).sum::<f32>() / tokens as f32)
            .collect();
        Attention { layers, grid, rollout, pooled }
    });
    Ok(Inspection { probabilities, predicted, saliency, filters, feature_maps, recurrent, attention })
}

/// The input shape of each top-level layer.
fn model_shapes(model: &Model) -> Vec<Vec<usize>> {
    let mut shape = model.spec().input.clone();
    let mut shapes = Vec::new();
    for layer in &model.spec().layers {
        shapes.push(shape.clone());
        shape = layer.output_shape(&shape, "").unwrap_or_default();
    }
    shapes
}

/// Attention rollout over `layers` of equal token counts: the product, first layer rightmost,
/// of `0.5 * mean over heads + 0.5 * identity` with rows renormalised; row-major
/// `[tokens, tokens]`.
pub fn rollout(layers: &[AttentionMaps]) -> Vec<f32> {
    let tokens = layers.first().map_or(0, |l| l.tokens);
    let mut flow: Vec<f32> =
        (0..tokens * tokens).map(|i| f32::from(u8::from(i % (tokens + 1) == 0))).collect();
    for layer in layers {
        let mut mixed = vec![0.0; tokens * tokens];
        for head in layer.weights.chunks(tokens * tokens) {
            for (m, &w) in mixed.iter_mut().zip(head) {
                *m += 0.5 * w / layer.heads as f32;
            }
        }
        for i in 0..tokens {
            mixed[i * tokens + i] += 0.5;
            // Each row of the heads' mean sums to 1, so rows sum to 1 already; renormalised
            // against rounding.
            let row = &mut mixed[i * tokens..(i + 1) * tokens];
            let sum: f32 = row.iter().sum();
            row.iter_mut().for_each(|v| *v /= sum);
        }
        // flow = mixed · flow: this layer's mixing applied after the layers before it.
        let mut next = vec![0.0; tokens * tokens];
        for i in 0..tokens {
            for j in 0..tokens {
                let m = mixed[i * tokens + j];
                for k in 0..tokens {
                    next[i * tokens + k] += m * flow[j * tokens + k];
                }
            }
        }
        flow = next;
    }
    flow
}

/// The class scores (logits) `[batch, classes]` for a batch, flattened, in inference mode.
///
/// # Errors
/// When the batch does not have the model's input shape.
pub fn logits(model: &Model, batch: Tensor) -> Result<Vec<f32>> {
    let mut tape = Tape::inference(model.params());
    let x = tape.input(batch);
    let scores = model.forward(&mut tape, x, Mode::Eval)?;
    Ok(tape.value(scores).iter().copied().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ModelSpec;

    /// The LSTM's gate series are its own: rebuilding its state from them, `c = f c + i g`
    /// and `h = o tanh c` from zero, gives the hidden series the view shows.
    #[test]
    fn the_lstm_gates_rebuild_its_hidden_state() {
        let model = Model::new(ModelSpec::preset("lstm").unwrap(), 7).unwrap();
        let sample: Vec<f32> = (0..784).map(|i| (i % 29) as f32 / 29.0).collect();
        let trace = &inspect(&model, &sample).unwrap().recurrent[0];
        let names: Vec<&str> = trace.gates.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["input", "forget", "cell", "output"]);
        let [i, f, g, o] = [0, 1, 2, 3].map(|k| &trace.gates[k].1);
        let mut c = vec![0.0; trace.units];
        for t in 0..trace.steps {
            for (j, c) in c.iter_mut().enumerate() {
                let at = t * trace.units + j;
                *c = f[at] * *c + i[at] * g[at];
                let h = o[at] * c.tanh();
                assert!(
                    (h - trace.hidden[at]).abs() < 1e-5,
                    "step {t}, unit {j}: {h} against {}",
                    trace.hidden[at]
                );
            }
        }
    }
}
