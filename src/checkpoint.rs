//! Saving and loading trained models as safetensors, with the model spec in the file's
//! metadata so one file is enough to rebuild the model.

use std::collections::HashMap;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::nn::{Model, ModelSpec};
use crate::{Error, Result};

const FORMAT_KEY: &str = "format";
const FORMAT: &str = "ferrograd";
const SPEC_KEY: &str = "ferrograd.spec";

/// The model's weights as a safetensors file, with its spec in the metadata.
pub fn save(model: &Model) -> Vec<u8> {
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = model
        .params()
        .iter()
        .map(|p| {
            let bytes = p.value.iter().flat_map(|v| v.to_le_bytes()).collect();
            (p.name.clone(), p.value.shape().to_vec(), bytes)
        })
        .collect();
    let views = tensors.iter().map(|(name, shape, bytes)| {
        let view = TensorView::new(Dtype::F32, shape.clone(), bytes).expect("shape matches the byte count");
        (name.as_str(), view)
    });
    let metadata = HashMap::from([
        (FORMAT_KEY.to_owned(), FORMAT.to_owned()),
        (SPEC_KEY.to_owned(), model.spec().to_json()),
    ]);
    safetensors::serialize(views, Some(metadata)).expect("in-memory serialisation cannot fail")
}

/// Rebuilds a model saved by [`save`].
///
/// # Errors
/// [`Error::Checkpoint`] when the bytes are not safetensors, carry no ferrograd spec, or hold
/// tensors that do not match the spec (missing, extra, of another type or shape).
pub fn load(bytes: &[u8]) -> Result<Model> {
    let bad = |reason: String| Error::Checkpoint(reason);
    let (_, metadata) =
        SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let info = metadata.metadata().as_ref();
    let spec_json = info.and_then(|m| m.get(SPEC_KEY)).ok_or_else(|| {
        bad(format!(
            "a safetensors file without a model spec (no `{SPEC_KEY}` metadata): not saved by ferrograd"
        ))
    })?;
    let spec =
        ModelSpec::from_json(spec_json).map_err(|e| bad(format!("the spec inside is invalid: {e}")))?;
    let tensors =
        SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let mut model = Model::new(spec, 0)?;
    if tensors.len() != model.params().len() {
        return Err(bad(format!(
            "holds {} tensors but its spec has {} parameters",
            tensors.len(),
            model.params().len()
        )));
    }
    for param in model.params_mut().iter_mut() {
        let view =
            tensors.tensor(&param.name).map_err(|_| bad(format!("tensor `{}` is missing", param.name)))?;
        if view.dtype() != Dtype::F32 || view.shape() != param.value.shape() {
            return Err(bad(format!(
                "tensor `{}` is {:?} {:?}, the spec needs F32 {:?}",
                param.name,
                view.dtype(),
                view.shape(),
                param.value.shape()
            )));
        }
        let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        for (dst, v) in param.value.iter_mut().zip(values) {
            *dst = v;
        }
    }
    Ok(model)
}
