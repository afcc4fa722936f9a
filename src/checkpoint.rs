//! Saving and loading models as safetensors, with the model spec in the file's metadata so
//! that one file is enough to rebuild the model. A file saved from a trainer also holds the
//! optimizer's state (tensors named `optimizer.{slot}.{parameter}`) and the rest of the
//! training state (metadata `ferrograd.training`), so that training resumes exactly where it
//! stopped.

use std::collections::HashMap;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::error::thousands;
use crate::nn::{Model, ModelSpec};
use crate::optim::OptimizerState;
use crate::tensor::{self, Tensor};
use crate::train::{Trainer, TrainingState};
use crate::{Error, Result};

const FORMAT_KEY: &str = "format";
const FORMAT: &str = "ferrograd";
const SPEC_KEY: &str = "ferrograd.spec";
const TRAINING_KEY: &str = "ferrograd.training";
const OPTIMIZER_PREFIX: &str = "optimizer.";
/// The weights of the best epoch so far, for early stopping.
const BEST_PREFIX: &str = "best.";

/// Whether a tensor of the file is training state rather than a weight of the model.
fn is_training_state(name: &str) -> bool {
    name.starts_with(OPTIMIZER_PREFIX) || name.starts_with(BEST_PREFIX)
}

/// The model's weights as a safetensors file, with its spec in the metadata.
pub fn save(model: &Model) -> Vec<u8> {
    write(model, Vec::new(), None)
}

/// The model, the optimizer's state and the training state, to resume later.
pub fn save_trainer(trainer: &Trainer) -> Vec<u8> {
    let (state, optimizer) = trainer.training_state();
    let model = trainer.model();
    let mut extra = Vec::new();
    for (slot, tensors) in optimizer.slots {
        for (param, tensor) in model.params().iter().zip(tensors) {
            extra.push((format!("{OPTIMIZER_PREFIX}{slot}.{}", param.name), tensor));
        }
    }
    for (param, tensor) in model.params().iter().zip(trainer.best_weights()) {
        extra.push((format!("{BEST_PREFIX}{}", param.name), tensor.clone()));
    }
    let state = serde_json::to_string(&state).expect("the training state serialises");
    write(model, extra, Some(state))
}

fn write(model: &Model, extra: Vec<(String, Tensor)>, training: Option<String>) -> Vec<u8> {
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = model
        .params()
        .iter()
        .map(|p| (p.name.clone(), &p.value))
        .chain(extra.iter().map(|(name, t)| (name.clone(), t)))
        .map(|(name, t)| (name, t.shape().to_vec(), t.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let views = tensors.iter().map(|(name, shape, bytes)| {
        let view = TensorView::new(Dtype::F32, shape.clone(), bytes).expect("shape matches the byte count");
        (name.as_str(), view)
    });
    let mut metadata = HashMap::from([
        (FORMAT_KEY.to_owned(), FORMAT.to_owned()),
        (SPEC_KEY.to_owned(), model.spec().to_json()),
    ]);
    if let Some(training) = training {
        metadata.insert(TRAINING_KEY.to_owned(), training);
    }
    safetensors::serialize(views, Some(metadata)).expect("in-memory serialisation cannot fail")
}

/// Rebuilds a model saved by [`save`] or [`save_trainer`].
///
/// # Errors
/// [`Error::Checkpoint`] when the bytes are not safetensors, carry no ferrograd spec, or hold
/// tensors that do not match the spec (missing, extra, of another type or shape).
pub fn load(bytes: &[u8]) -> Result<Model> {
    Ok(read(bytes)?.0)
}

/// Resumes a trainer saved by [`save_trainer`].
///
/// # Errors
/// As [`load`], and when the file holds no training state (it was saved from a model
/// alone) or an optimizer state that does not match.
pub fn load_trainer(bytes: &[u8]) -> Result<Trainer> {
    let (model, file, metadata) = read(bytes)?;
    let state = metadata.get(TRAINING_KEY).ok_or_else(|| {
        Error::Checkpoint(
            "the file holds a model but no training state, so training cannot resume from it".into(),
        )
    })?;
    let state: TrainingState = serde_json::from_str(state)
        .map_err(|e| Error::Checkpoint(format!("the training state is invalid: {e}")))?;
    let slots = crate::optim::Optimizer::new(&state.optimizer, model.params())?.slot_names();
    let mut optimizer = OptimizerState { step: state.optimizer_step, slots: Vec::new() };
    for &slot in slots {
        let tensors = model
            .params()
            .iter()
            .map(|p| tensor_named(&file, &format!("{OPTIMIZER_PREFIX}{slot}.{}", p.name), p.value.shape()))
            .collect::<Result<Vec<_>>>()?;
        optimizer.slots.push((slot, tensors));
    }
    let best = match state.early_stopping.as_ref().and_then(|s| s.best) {
        Some(_) => model
            .params()
            .iter()
            .map(|p| tensor_named(&file, &format!("{BEST_PREFIX}{}", p.name), p.value.shape()))
            .collect::<Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    Trainer::resume(model, state, optimizer, best)
}

type Parsed<'b> = (Model, SafeTensors<'b>, HashMap<String, String>);

fn read(bytes: &[u8]) -> Result<Parsed<'_>> {
    let bad = |reason: String| Error::Checkpoint(reason);
    let (_, metadata) =
        SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let metadata = metadata.metadata().clone().unwrap_or_default();
    let spec_json = metadata.get(SPEC_KEY).ok_or_else(|| {
        bad(format!(
            "a safetensors file without a model spec (no `{SPEC_KEY}` metadata): not saved by ferrograd"
        ))
    })?;
    let spec =
        ModelSpec::from_json(spec_json).map_err(|e| bad(format!("the spec inside is invalid: {e}")))?;
    let file = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    // The file must hold as many weights as the spec asks for before the model is built, so
    // that a spec edited to something bigger than its tensors costs no memory.
    let needed = spec.parameter_count()?;
    let held: u64 = file
        .iter()
        .filter(|(name, _)| !is_training_state(name))
        .map(|(_, view)| view.shape().iter().map(|&d| d as u64).product::<u64>())
        .sum();
    if held != needed {
        return Err(bad(format!(
            "holds {} weight values but its spec needs {}",
            thousands(held),
            thousands(needed)
        )));
    }
    let mut model = Model::new(spec, 0)?;
    let weights = file.names().into_iter().filter(|n| !is_training_state(n)).count();
    if weights != model.params().len() {
        return Err(bad(format!(
            "holds {weights} weight tensors but its spec has {} parameters",
            model.params().len()
        )));
    }
    for param in model.params_mut().iter_mut() {
        param.value = tensor_named(&file, &param.name, param.value.shape())?;
    }
    Ok((model, file, metadata))
}

/// The f32 tensor `name` of `shape` from the file.
fn tensor_named(file: &SafeTensors, name: &str, shape: &[usize]) -> Result<Tensor> {
    let view = file.tensor(name).map_err(|_| Error::Checkpoint(format!("tensor `{name}` is missing")))?;
    if view.dtype() != Dtype::F32 || view.shape() != shape {
        return Err(Error::Checkpoint(format!(
            "tensor `{name}` is {:?} {:?}, the spec needs F32 {shape:?}",
            view.dtype(),
            view.shape()
        )));
    }
    let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    tensor::from_vec(shape, values)
}
