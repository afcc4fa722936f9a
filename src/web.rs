//! The JavaScript boundary: handles around the core types, plain numbers, typed arrays and
//! serde objects across, and `Result<_, JsError>` everywhere so that every failure reaches
//! JavaScript as an exception with a readable message.

use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

use crate::data::DatasetBuilder;
use crate::nn::ModelSpec;
use crate::optim::OptimizerSpec;
use crate::tensor;
use crate::train;

/// Installs a panic hook so that a bug reports its message on the console instead of
/// killing the worker silently.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

/// Training settings from JavaScript; every field is optional.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TrainerOptions {
    #[serde(default)]
    optimizer: OptimizerName,
    lr: Option<f32>,
    #[serde(default)]
    seed: u64,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum OptimizerName {
    #[default]
    Adam,
    Sgd,
}

/// A model being trained.
#[wasm_bindgen]
pub struct Trainer {
    inner: train::Trainer,
}

#[wasm_bindgen]
impl Trainer {
    /// `specJson` is a model spec or a preset name such as `"mlp"`; `options` is
    /// `{optimizer?: "adam" | "sgd", lr?: number, seed?: number}` or undefined.
    #[wasm_bindgen(constructor)]
    pub fn new(spec_json: &str, options: JsValue) -> Result<Trainer, JsError> {
        let spec = match ModelSpec::preset(spec_json) {
            Some(spec) => spec,
            None => ModelSpec::from_json(spec_json)?,
        };
        let options: TrainerOptions = if options.is_undefined() || options.is_null() {
            TrainerOptions { optimizer: OptimizerName::Adam, lr: None, seed: 0 }
        } else {
            serde_wasm_bindgen::from_value(options)
                .map_err(|e| JsError::new(&format!("trainer options: {e}")))?
        };
        let optimizer = match options.optimizer {
            OptimizerName::Adam => OptimizerSpec::adam(options.lr.unwrap_or(1e-3)),
            OptimizerName::Sgd => OptimizerSpec::sgd(options.lr.unwrap_or(1e-2)),
        };
        Ok(Trainer { inner: train::Trainer::new(spec, &optimizer, options.seed)? })
    }

    /// One optimizer step on `labels.length` images whose pixels, in `[0, 1]`, are laid out
    /// one image after another. Returns `{loss, accuracy, samples}`.
    pub fn step(&mut self, pixels: &[f32], labels: &[u8]) -> Result<JsValue, JsError> {
        let images = self.batch(pixels, labels.len())?;
        let stats = self.inner.step(images, labels)?;
        to_js(&stats)
    }

    /// Class probabilities, ten per image, for images laid out as in [`Trainer::step`].
    pub fn predict(&self, pixels: &[f32]) -> Result<Vec<f32>, JsError> {
        let per_image: usize = self.inner.model().spec().input.iter().product();
        if pixels.is_empty() || pixels.len() % per_image != 0 {
            return Err(JsError::new(&format!(
                "predict: {} pixels are not a whole number of {per_image}-pixel images",
                pixels.len()
            )));
        }
        let images = self.batch(pixels, pixels.len() / per_image)?;
        Ok(self.inner.predict(images)?.into_raw_vec_and_offset().0)
    }

    /// Steps taken so far.
    pub fn steps(&self) -> f64 {
        self.inner.steps() as f64
    }

    /// The model spec as JSON.
    #[wasm_bindgen(js_name = specJson)]
    pub fn spec_json(&self) -> String {
        self.inner.model().spec().to_json()
    }

    fn batch(&self, pixels: &[f32], count: usize) -> Result<tensor::Tensor, JsError> {
        let input = &self.inner.model().spec().input;
        let mut shape = vec![count];
        shape.extend_from_slice(input);
        Ok(tensor::from_vec(&shape, pixels.to_vec())?)
    }
}

/// MNIST-style images and labels decoded from two IDX byte streams fed chunk by chunk, as
/// they arrive from the network.
#[wasm_bindgen]
pub struct DataStream {
    inner: DatasetBuilder,
}

#[wasm_bindgen]
impl DataStream {
    /// `imagesName` and `labelsName` (URLs, say) name the streams in error messages.
    #[wasm_bindgen(constructor)]
    pub fn new(images_name: &str, labels_name: &str) -> DataStream {
        DataStream { inner: DatasetBuilder::new(images_name, labels_name) }
    }

    /// Decodes a chunk of the (decompressed) images stream; returns the images it completed.
    #[wasm_bindgen(js_name = feedImages)]
    pub fn feed_images(&mut self, chunk: &[u8]) -> Result<u32, JsError> {
        Ok(self.inner.feed_images(chunk)? as u32)
    }

    /// Decodes a chunk of the (decompressed) labels stream; returns the labels it completed.
    #[wasm_bindgen(js_name = feedLabels)]
    pub fn feed_labels(&mut self, chunk: &[u8]) -> Result<u32, JsError> {
        Ok(self.inner.feed_labels(chunk)? as u32)
    }

    /// Complete (image, label) pairs so far.
    pub fn pairs(&self) -> u32 {
        self.inner.pairs() as u32
    }

    /// The pairs the headers declare, once one has arrived.
    pub fn declared(&self) -> Option<u32> {
        self.inner.declared().map(|n| n as u32)
    }
}

fn to_js<T: Serialize>(value: &T) -> Result<JsValue, JsError> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| JsError::new(&e.to_string()))
}
