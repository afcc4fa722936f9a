//! Save and resume: a reloaded trainer continues exactly as an uninterrupted one, and every
//! malformed file is refused with a clear error.

use std::collections::HashMap;

use ferrograd::checkpoint::{load, load_trainer, save, save_trainer};
use ferrograd::data::idx::encode;
use ferrograd::data::{DatasetBuilder, HoldOut};
use ferrograd::nn::ModelSpec;
use ferrograd::optim::{Horizon, LrSchedule, OptimizerSpec};
use ferrograd::train::Trainer;

/// A small data set whose classes each light their own block.
fn dataset(count: usize) -> ferrograd::data::Dataset {
    labelled(count, 0)
}

/// [`dataset`] with every label moved on by `shift` (mod 10): a set on which the better a
/// model fits [`dataset`], the worse it scores.
fn labelled(count: usize, shift: u8) -> ferrograd::data::Dataset {
    let mut pixels = vec![0u8; count * 784];
    let labels: Vec<u8> = (0..count).map(|i| (i * 3 % 10) as u8).collect();
    for (i, &label) in labels.iter().enumerate() {
        let (top, left) = ((label as usize / 4) * 9, (label as usize % 4) * 7);
        for r in top..top + 7 {
            pixels[i * 784 + r * 28 + left..i * 784 + r * 28 + left + 7].fill(200 + (i % 50) as u8);
        }
    }
    let mut builder = DatasetBuilder::new("images", "labels");
    builder.feed_images(&encode(&[count as u32, 28, 28], &pixels)).unwrap();
    let labels: Vec<u8> = labels.iter().map(|l| (l + shift) % 10).collect();
    builder.feed_labels(&encode(&[count as u32], &labels)).unwrap();
    builder.finish().unwrap()
}

fn spec() -> ModelSpec {
    // Dropout and batch norm make the next step depend on the generator and the buffers too.
    ModelSpec::from_json(
        r#"{"layers":[{"type":"conv2d","filters":3,"kernel_size":5,"stride":2,"activation":"relu"},
                      {"type":"batch_norm"},{"type":"flatten"},{"type":"dropout","rate":0.3},
                      {"type":"dense","units":10}]}"#,
    )
    .unwrap()
}

fn resumes_exactly(optimizer: OptimizerSpec) {
    let data = dataset(96);
    let mut trainer = Trainer::new(spec(), &optimizer, 11).unwrap();
    trainer.set_augment(true);
    trainer.set_clip_norm(Some(5.0)).unwrap();
    trainer.train_epoch(&data, 32, |_| {}).unwrap();

    let mut resumed = load_trainer(&save_trainer(&trainer)).unwrap();
    assert_eq!(resumed.steps(), trainer.steps());
    let next = trainer.train_epoch(&data, 32, |_| {}).unwrap();
    let after_resume = resumed.train_epoch(&data, 32, |_| {}).unwrap();
    // Bit for bit: same weights, optimizer moments, generator state and buffers.
    assert_eq!(next, after_resume);
    for (a, b) in trainer.model().params().iter().zip(resumed.model().params().iter()) {
        assert_eq!(a.value, b.value, "{}", a.name);
    }
}

#[test]
fn adam_training_resumes_with_the_same_next_losses() {
    resumes_exactly(OptimizerSpec::adam(1e-3));
}

#[test]
fn sgd_training_resumes_with_the_same_next_losses() {
    resumes_exactly(OptimizerSpec::sgd(0.05));
}

/// A run with a cosine schedule, a validation set and early stopping, saved mid-schedule:
/// the resumed trainer takes the same next steps at the same learning rates, and keeps the
/// same best epoch's weights, as the trainer that never stopped.
#[test]
fn training_resumes_mid_schedule_with_its_early_stopping_state() {
    let (data, validation) = (dataset(96), dataset(40));
    let mut trainer = Trainer::new(spec(), &OptimizerSpec::adam(3e-3), 12).unwrap();
    let schedule = LrSchedule::Cosine { warmup: 0.5, min_lr: 1e-4 };
    trainer.set_lr_schedule(schedule, Horizon { steps_per_epoch: 3, epochs: 4 }).unwrap();
    trainer.set_early_stopping(Some(2)).unwrap();
    let hold_out = HoldOut { share: 0.25, seed: 12 };
    trainer.set_hold_out(hold_out).unwrap();
    let epoch = |t: &mut Trainer| {
        let stats = t.train_epoch(&data, 32, |_| {}).unwrap();
        let loss = t.evaluate(&validation).unwrap().loss;
        (stats, t.lr(), t.observe_validation(loss).unwrap())
    };
    epoch(&mut trainer);
    epoch(&mut trainer);

    let mut resumed = load_trainer(&save_trainer(&trainer)).unwrap();
    assert_eq!(resumed.lr_schedule(), schedule);
    assert_eq!(resumed.early_stopping(), trainer.early_stopping());
    assert_eq!(resumed.best_weights(), trainer.best_weights());
    assert_eq!(resumed.hold_out(), Some(hold_out));
    for _ in 0..2 {
        assert_eq!(epoch(&mut trainer), epoch(&mut resumed));
    }
    assert_eq!(trainer.restore_best().unwrap(), resumed.restore_best().unwrap());
    for (a, b) in trainer.model().params().iter().zip(resumed.model().params().iter()) {
        assert_eq!(a.value, b.value, "{}", a.name);
    }
}

/// Early stopping ends with the best epoch's weights: their evaluation is the best epoch's.
#[test]
fn early_stopping_restores_the_best_epochs_weights() {
    // Validation on images labelled one class on: its loss rises as the model learns the
    // training labels, so the best epoch is an early one.
    let (data, validation) = (dataset(96), labelled(40, 1));
    let mut trainer = Trainer::new(spec(), &OptimizerSpec::adam(1e-3), 13).unwrap();
    trainer.set_early_stopping(Some(2)).unwrap();
    let mut losses = Vec::new();
    for _ in 0..12 {
        trainer.train_epoch(&data, 32, |_| {}).unwrap();
        let loss = trainer.evaluate(&validation).unwrap().loss;
        losses.push(loss);
        if trainer.observe_validation(loss).unwrap() {
            break;
        }
    }
    let best = trainer.restore_best().unwrap().unwrap();
    let lowest = losses.iter().copied().fold(f32::INFINITY, f32::min);
    assert_eq!(losses[best - 1], lowest, "losses {losses:?}");
    assert!(best < losses.len(), "the run never got worse, so nothing was restored: {losses:?}");
    assert_eq!(trainer.evaluate(&validation).unwrap().loss, lowest);
}

#[test]
fn a_model_alone_loads_for_inference_but_does_not_resume() {
    let trainer = Trainer::new(spec(), &OptimizerSpec::adam(1e-3), 1).unwrap();
    let model_only = save(trainer.model());
    assert_eq!(load(&model_only).unwrap().spec(), trainer.model().spec());
    let err = load_trainer(&model_only).err().unwrap().to_string();
    assert_eq!(
        err,
        "checkpoint: the file holds a model but no training state, so training cannot resume from it"
    );
    // A full training file loads as a model too.
    assert_eq!(load(&save_trainer(&trainer)).unwrap().params().len(), trainer.model().params().len());
}

#[test]
fn malformed_files_are_refused_clearly() {
    let trainer = Trainer::new(spec(), &OptimizerSpec::adam(1e-3), 1).unwrap();
    let bytes = save_trainer(&trainer);
    let err = |bytes: &[u8]| load_trainer(bytes).err().expect("refused").to_string();

    assert!(err(&bytes[..bytes.len() / 2]).starts_with("checkpoint: not a safetensors file"));
    assert!(err(&bytes[..5]).starts_with("checkpoint: not a safetensors file"));
    assert!(err(b"PK\x03\x04 a zip archive").starts_with("checkpoint: not a safetensors file"));
    assert!(err(&[]).starts_with("checkpoint: not a safetensors file"));

    // Safetensors, but not ferrograd's.
    let data = vec![0u8; 16];
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4], &data).unwrap();
    let foreign = safetensors::serialize([("weight", view)], None).unwrap();
    assert!(err(&foreign).contains("without a model spec"), "{}", err(&foreign));

    // A spec that does not match the tensors: the metadata says 12 filters, the file has 3;
    // refused on the count, before the model is built.
    let other_spec = spec().to_json().replace("\"filters\":3", "\"filters\":12");
    let mismatched = replace_metadata(&bytes, "ferrograd.spec", &other_spec);
    assert_eq!(err(&mismatched), "checkpoint: holds 4,420 weight values but its spec needs 17,650");
    // A spec edited to the budget's edge: refused without allocating its 14 M parameters.
    let huge_spec = spec().to_json().replace("\"units\":10", "\"units\":32000");
    let huge = replace_metadata(&bytes, "ferrograd.spec", &huge_spec);
    assert!(
        err(&huge).starts_with("checkpoint: holds 4,420 weight values but its spec needs 13,"),
        "{}",
        err(&huge)
    );
    // The right count in the wrong shape.
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let reshaped: Vec<_> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let shape = if name == "layers.0.weight" { vec![75] } else { view.shape().to_vec() };
            (name, safetensors::tensor::TensorView::new(view.dtype(), shape, view.data()).unwrap())
        })
        .collect();
    let reshaped = safetensors::serialize(reshaped, metadata.metadata().clone()).unwrap();
    assert!(err(&reshaped).contains("tensor `layers.0.weight` is F32 [75], the spec needs F32 [3, 1, 5, 5]"));

    // A training state that does not parse.
    let broken = replace_metadata(&bytes, "ferrograd.training", "{\"optimizer\": 3}");
    assert!(err(&broken).starts_with("checkpoint: the training state is invalid"));
}

#[test]
fn the_spec_counts_the_parameters_that_the_model_builds() {
    for &name in ModelSpec::PRESETS {
        let spec = ModelSpec::preset(name).unwrap();
        let model = ferrograd::nn::Model::new(spec.clone(), 0).unwrap();
        let built: usize = model.params().iter().map(|p| p.value.len()).sum();
        assert_eq!(spec.parameter_count().unwrap(), built as u64, "{name}");
    }
}

/// The same file with one metadata entry changed.
fn replace_metadata(bytes: &[u8], key: &str, value: &str) -> Vec<u8> {
    let file = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let (_, metadata) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let mut info: HashMap<String, String> = metadata.metadata().clone().unwrap();
    info.insert(key.into(), value.into());
    let tensors: Vec<_> = file.tensors();
    safetensors::serialize(tensors.iter().map(|(n, v)| (n.as_str(), v.clone())), Some(info)).unwrap()
}
