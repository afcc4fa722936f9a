//! A look inside a model for one input: what each layer sees and what the prediction rests
//! on. Feeds the page's filter, feature-map, gate and saliency views.

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
    /// The output of every convolution, one map per channel.
    pub feature_maps: Vec<Maps>,
    pub recurrent: Vec<RecurrentTrace>,
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
    let feature_maps = trace
        .outputs
        .iter()
        .filter(|(layer, _)| convs.contains(layer))
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
            let gates =
                names.iter().enumerate().map(|(g, &name)| (name, series(&|t| steps[t].gates[g]))).collect();
            let units = tape.value(steps[0].hidden).shape()[1];
            RecurrentTrace { layer: *layer, kind: cell.name(), steps: steps.len(), units, hidden, gates }
        })
        .collect();
    Ok(Inspection { probabilities, predicted, saliency, filters, feature_maps, recurrent })
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
