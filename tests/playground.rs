//! The engine behind the page: training while data arrives, replacement sources that fail
//! without costing the data already there, settings that fail without costing the model.

use ferrograd::data::idx::encode;
use ferrograd::nn::ModelSpec;
use ferrograd::optim::{Horizon, LrSchedule, OptimizerSpec};
use ferrograd::playground::{Part, Playground, Progress, TrainingConfig};

fn config(batch_size: usize, epochs: usize) -> TrainingConfig {
    TrainingConfig {
        optimizer: OptimizerSpec::adam(1e-3),
        batch_size,
        epochs,
        seed: 1,
        clean: false,
        augment: false,
        clip_norm: None,
        lr_schedule: LrSchedule::Constant,
        val_split: 0.0,
        early_stop: None,
    }
}

/// `count` images where class `c` lights its own 7x7 block; `blank` of them (the last ones)
/// are left empty, for the cleaning test.
fn images(count: usize, blank: usize) -> (Vec<u8>, Vec<u8>) {
    let mut pixels = vec![0u8; count * 784];
    let labels: Vec<u8> = (0..count).map(|i| (i % 10) as u8).collect();
    for i in 0..count - blank {
        let class = i % 10;
        let (top, left) = ((class / 4) * 9, (class % 4) * 7);
        for r in top..top + 7 {
            pixels[i * 784 + r * 28 + left..i * 784 + r * 28 + left + 7].fill(220);
        }
    }
    (encode(&[count as u32, 28, 28], &pixels), encode(&[count as u32], &labels))
}

fn names() -> [String; 4] {
    ["train-images", "train-labels", "test-images", "test-labels"].map(String::from)
}

fn load_whole(p: &mut Playground, train: usize, test: usize) {
    p.begin_load(names());
    let (ti, tl) = images(train, 0);
    let (vi, vl) = images(test, 0);
    p.feed(Part::TrainImages, &ti).unwrap();
    p.feed(Part::TrainLabels, &tl).unwrap();
    p.feed(Part::TestImages, &vi).unwrap();
    p.feed(Part::TestLabels, &vl).unwrap();
    p.end_load().unwrap();
}

fn trained(progress: Progress) -> bool {
    matches!(progress, Progress::Trained { .. })
}

#[test]
fn the_first_source_trains_while_it_arrives_and_the_epoch_waits_for_the_rest() {
    let mut p = Playground::new(ModelSpec::preset("mlp").unwrap(), config(10, 2)).unwrap();
    assert_eq!(p.step().unwrap(), Progress::Waiting);
    p.begin_load(names());
    let (image_stream, label_stream) = images(30, 0);
    p.feed(Part::TrainLabels, &label_stream).unwrap();
    let header = 16;
    // Twelve images: one batch of ten can run, the second must wait.
    p.feed(Part::TrainImages, &image_stream[..header + 12 * 784]).unwrap();
    assert!(trained(p.step().unwrap()));
    assert_eq!(p.step().unwrap(), Progress::Waiting);
    let status = p.status();
    assert_eq!((status.epoch, status.epoch_done, status.epoch_size), (0, 10, 30));
    assert!(!status.data_complete);

    p.feed(Part::TrainImages, &image_stream[header + 12 * 784..]).unwrap();
    let (test_images, test_labels) = images(10, 0);
    p.feed(Part::TestImages, &test_images).unwrap();
    p.feed(Part::TestLabels, &test_labels).unwrap();
    p.end_load().unwrap();
    assert!(trained(p.step().unwrap()));
    // The third batch ends the first epoch, now that all 30 images are known.
    let last = p.step().unwrap();
    assert!(matches!(last, Progress::Trained { epoch_finished: true, .. }), "{last:?}");
    assert_eq!(p.status().epoch, 1);
    // The second epoch covers all 30 in a shuffled order: three batches, then done.
    for _ in 0..3 {
        assert!(trained(p.step().unwrap()));
    }
    assert_eq!(p.step().unwrap(), Progress::Done);
}

#[test]
fn a_bad_replacement_source_leaves_the_data_and_model_as_they_were() {
    let mut p = Playground::new(ModelSpec::preset("mlp").unwrap(), config(10, 5)).unwrap();
    load_whole(&mut p, 30, 10);
    assert!(trained(p.step().unwrap()));
    let before = p.status();

    // Bytes that are not IDX.
    p.begin_load(["https://example.test/page.html".into(), "b".into(), "c".into(), "d".into()]);
    let err = p.feed(Part::TrainImages, b"<!doctype html><p>Not found").unwrap_err().to_string();
    assert!(err.starts_with("https://example.test/page.html: not an IDX stream"), "{err}");
    assert_eq!(p.status(), before);

    // A download that stops short.
    p.begin_load(names());
    let (ti, tl) = images(40, 0);
    p.feed(Part::TrainImages, &ti[..ti.len() - 100]).unwrap();
    p.feed(Part::TrainLabels, &tl).unwrap();
    let err = p.end_load().unwrap_err().to_string();
    assert!(err.contains("the stream ended after 39 of the 40 items"), "{err}");
    assert_eq!(p.status(), before);

    // Images of another size than the model takes, refused at their header.
    p.begin_load(names());
    p.feed(Part::TrainLabels, &encode(&[2], &[1, 2])).unwrap();
    let err = p.feed(Part::TrainImages, &encode(&[2, 14, 14], &[])).unwrap_err().to_string();
    assert_eq!(
        err,
        "train-images: the header declares 14x14 images, but the model takes input [1, 28, 28]; choose data or a model that match"
    );
    assert_eq!(p.status(), before);

    // A failed download (network error) likewise.
    p.begin_load(names());
    p.abort_load();
    assert_eq!(p.status(), before);
    assert!(trained(p.step().unwrap()));
}

#[test]
fn a_good_replacement_source_takes_over_once_whole() {
    let mut p = Playground::new(ModelSpec::preset("mlp").unwrap(), config(10, 5)).unwrap();
    load_whole(&mut p, 30, 10);
    assert!(trained(p.step().unwrap()));
    p.begin_load(names());
    let (ti, tl) = images(50, 0);
    p.feed(Part::TrainImages, &ti).unwrap();
    p.feed(Part::TrainLabels, &tl).unwrap();
    // Not yet whole: training goes on with the old data.
    assert_eq!(p.status().train_available, 30);
    let (vi, vl) = images(20, 0);
    p.feed(Part::TestImages, &vi).unwrap();
    p.feed(Part::TestLabels, &vl).unwrap();
    p.end_load().unwrap();
    let status = p.status();
    assert_eq!(
        (status.train_available, status.test_available, status.epoch, status.epoch_size),
        (50, 20, 0, 50)
    );
}

#[test]
fn a_first_source_that_breaks_keeps_what_arrived() {
    let mut p = Playground::new(ModelSpec::preset("mlp").unwrap(), config(10, 1)).unwrap();
    p.begin_load(names());
    assert!(p.status().loading);
    let (ti, tl) = images(30, 0);
    p.feed(Part::TrainLabels, &tl).unwrap();
    p.feed(Part::TrainImages, &ti[..16 + 20 * 784]).unwrap();
    let (vi, vl) = images(10, 0);
    p.feed(Part::TestLabels, &vl).unwrap();
    p.feed(Part::TestImages, &vi[..16 + 3 * 784]).unwrap();
    p.abort_load();
    let status = p.status();
    assert_eq!((status.train_available, status.test_available, status.loading), (20, 3, false));
    assert!(trained(p.step().unwrap()));
    let last = p.step().unwrap();
    assert!(matches!(last, Progress::Trained { epoch_finished: true, .. }), "{last:?}");
    assert_eq!(p.step().unwrap(), Progress::Done);
}

#[test]
fn a_first_source_that_breaks_before_both_sets_have_a_pair_is_dropped_whole() {
    // The test images fail (a 404, say) while the training set arrives: nothing is kept, so
    // the model never meets an empty test set.
    let mut p = Playground::new(ModelSpec::preset("mlp").unwrap(), config(10, 1)).unwrap();
    p.begin_load(names());
    let (ti, tl) = images(30, 0);
    p.feed(Part::TrainImages, &ti).unwrap();
    p.feed(Part::TrainLabels, &tl).unwrap();
    assert!(trained(p.step().unwrap()));
    p.abort_load();
    let status = p.status();
    assert_eq!((status.train_available, status.test_available, status.loading), (0, 0, false));
    assert_eq!(p.step().unwrap(), Progress::Waiting);
    // Likewise when the streams end but one set is short of a pair.
    p.begin_load(names());
    p.feed(Part::TrainImages, &ti).unwrap();
    p.feed(Part::TrainLabels, &tl).unwrap();
    p.feed(Part::TestImages, &encode(&[5, 28, 28], &[])).unwrap();
    assert!(p
        .end_load()
        .unwrap_err()
        .to_string()
        .contains("test-images: the stream ended after 0 of the 5 items"));
    assert_eq!(p.status().train_available, 0);
    // A good source loads after either.
    load_whole(&mut p, 30, 10);
    assert!(trained(p.step().unwrap()));
}

#[test]
fn images_the_model_cannot_take_are_refused_at_their_header() {
    let mut p = Playground::new(ModelSpec::preset("mlp").unwrap(), config(10, 1)).unwrap();
    p.begin_load(names());
    // 4096x4096: the header alone, 16 bytes, is enough to refuse them.
    let header = &encode(&[2, 4096, 4096], &[])[..16];
    let err = p.feed(Part::TestImages, header).unwrap_err().to_string();
    assert!(err.starts_with("test-images: the header declares 4096x4096 images"), "{err}");
    assert!(!p.status().loading);
    // A first source whose test images are 14x14, refused in the chunk that brings them
    // whole: the source goes, training pairs and all, so evaluation never meets them.
    p.begin_load(names());
    let (ti, tl) = images(30, 0);
    p.feed(Part::TrainImages, &ti).unwrap();
    p.feed(Part::TrainLabels, &tl).unwrap();
    p.feed(Part::TestLabels, &encode(&[2], &[1, 2])).unwrap();
    assert!(p.feed(Part::TestImages, &encode(&[2, 14, 14], &[0; 2 * 196])).is_err());
    assert_eq!((p.status().train_available, p.status().test_available), (0, 0));
    assert_eq!(p.step().unwrap(), Progress::Waiting);
}

#[test]
fn bad_settings_leave_the_model_as_it_was() {
    let mut p = Playground::new(ModelSpec::preset("mlp").unwrap(), config(10, 5)).unwrap();
    load_whole(&mut p, 30, 10);
    assert!(trained(p.step().unwrap()));
    let spec = p.trainer().model().spec().clone();
    let err = p.configure(spec.clone(), config(0, 5)).unwrap_err().to_string();
    assert_eq!(err, "setting `batchSize`: 0 is not between 1 and 4096");
    let bad_lr = TrainingConfig { optimizer: OptimizerSpec::adam(f32::NAN), ..config(10, 5) };
    assert!(p.configure(spec.clone(), bad_lr).is_err());
    assert_eq!(p.trainer().steps(), 1);
    assert_eq!(p.config(), &config(10, 5));

    // A good configuration starts over.
    let other =
        ModelSpec::from_json(r#"{"layers":[{"type":"flatten"},{"type":"dense","units":10}]}"#).unwrap();
    p.configure(other.clone(), config(15, 2)).unwrap();
    assert_eq!((p.trainer().steps(), p.trainer().model().spec()), (0, &other));
    assert_eq!(p.status().epoch_done, 0);
}

#[test]
fn cleaning_drops_blank_images_and_counts_them() {
    let mut p =
        Playground::new(ModelSpec::preset("mlp").unwrap(), TrainingConfig { clean: true, ..config(10, 1) })
            .unwrap();
    p.begin_load(names());
    let (ti, tl) = images(30, 5);
    let (vi, vl) = images(10, 0);
    for (part, bytes) in
        [(Part::TrainImages, ti), (Part::TrainLabels, tl), (Part::TestImages, vi), (Part::TestLabels, vl)]
    {
        p.feed(part, &bytes).unwrap();
    }
    p.end_load().unwrap();
    assert!(trained(p.step().unwrap()));
    let status = p.status();
    assert_eq!((status.dropped, status.epoch_size), (5, 25));
}

#[test]
fn drawn_examples_join_the_next_epoch() {
    let mut p = Playground::new(ModelSpec::preset("mlp").unwrap(), config(10, 3)).unwrap();
    load_whole(&mut p, 30, 10);
    assert_eq!(p.add_example(&[255; 784], 4).unwrap(), 1);
    assert_eq!(p.add_example(&[0; 784], 7).unwrap(), 2);
    let err = p.add_example(&[0; 100], 1).unwrap_err().to_string();
    assert_eq!(err, "data: an image of 100 pixels does not fit 28x28 images");
    assert!(trained(p.step().unwrap()));
    assert_eq!(p.status().epoch_size, 32);
    p.clear_examples();
    assert_eq!(p.status().examples, 0);
}

#[test]
fn evaluation_scores_the_test_images_that_arrived() {
    let mut p = Playground::new(ModelSpec::preset("mlp").unwrap(), config(10, 20)).unwrap();
    let err = p.evaluate(4).unwrap_err().to_string();
    assert_eq!(err, "data: cannot evaluate on an empty data set");
    load_whole(&mut p, 100, 20);
    for _ in 0..60 {
        p.step().unwrap();
    }
    let (evaluation, showcase) = p.evaluate(4).unwrap();
    // Each class has its own block of ink: easy once trained.
    assert!(evaluation.accuracy > 0.9, "{}", evaluation.accuracy);
    assert_eq!(
        (showcase.pixels.len(), showcase.labels, showcase.predicted.len()),
        (4 * 784, vec![0, 1, 2, 3], 4)
    );
    let (_, none) = p.evaluate(0).unwrap();
    assert!(none.labels.is_empty() && none.predicted.is_empty());
}

#[test]
fn a_saved_playground_resumes_exactly_and_bad_files_change_nothing() {
    let mut p = Playground::new(ModelSpec::preset("mlp").unwrap(), config(10, 3)).unwrap();
    load_whole(&mut p, 30, 10);
    // One whole epoch (three batches) and one step into the next.
    for _ in 0..4 {
        assert!(trained(p.step().unwrap()));
    }
    let saved = p.save();
    let status = p.status();
    assert_eq!((status.epoch, status.steps), (1, 4));

    let mut resumed = Playground::new(ModelSpec::preset("cnn").unwrap(), config(10, 3)).unwrap();
    load_whole(&mut resumed, 30, 10);
    resumed.restore(&saved).unwrap();
    assert_eq!(resumed.trainer().model().spec(), p.trainer().model().spec());
    let status = resumed.status();
    // The finished epoch counts; the one under way starts over.
    assert_eq!((status.epoch, status.epoch_done, status.steps), (1, 0, 4));
    let (a, b) = (p.evaluate(0).unwrap().0, resumed.evaluate(0).unwrap().0);
    assert_eq!(a.loss, b.loss, "the same weights give the same test loss");

    let before = (
        resumed.evaluate(0).unwrap().0.loss,
        resumed.status().steps,
        resumed.trainer().model().spec().clone(),
    );
    for (bytes, expected) in [
        (&saved[..saved.len() - 10], "checkpoint"),
        (&b"<!doctype html><html></html>"[..], "not a safetensors file"),
        (&ferrograd::checkpoint::save(p.trainer().model())[..], "no training state"),
    ] {
        let err = resumed.restore(bytes).unwrap_err().to_string();
        assert!(err.contains(expected), "{err}");
        let after = (
            resumed.evaluate(0).unwrap().0.loss,
            resumed.status().steps,
            resumed.trainer().model().spec().clone(),
        );
        assert!(after == before, "a bad file must leave the model as it was");
    }

    // A model for other images than the data's is refused.
    let mut other = ModelSpec::preset("mlp").unwrap();
    other.input = vec![1, 14, 14];
    let small = Playground::new(other, config(10, 3)).unwrap();
    let err = resumed.restore(&small.save()).unwrap_err().to_string();
    assert!(err.contains("14"), "{err}");
}

/// A restored run holds out the pairs its file's run held out, whatever the page had set, and
/// validates on the same ones: the same validation loss as the run that saved it.
#[test]
fn a_restored_run_holds_out_what_it_held_out_before() {
    let split = TrainingConfig { val_split: 0.2, seed: 7, ..config(10, 3) };
    let mut p = Playground::new(ModelSpec::preset("mlp").unwrap(), split).unwrap();
    load_whole(&mut p, 50, 10);
    for _ in 0..4 {
        assert!(trained(p.step().unwrap()));
    }
    let held_out = p.status().validation_size;
    assert_eq!(held_out, 10);

    let mut resumed = Playground::new(ModelSpec::preset("mlp").unwrap(), config(10, 3)).unwrap();
    load_whole(&mut resumed, 50, 10);
    assert_eq!(resumed.status().validation_size, 0);
    resumed.restore(&p.save()).unwrap();
    assert_eq!((resumed.config().val_split, resumed.config().seed), (0.2, 7));
    assert_eq!(resumed.status().validation_size, held_out);
    let (a, b) = (p.validate().unwrap().unwrap(), resumed.validate().unwrap().unwrap());
    assert_eq!((a.loss, a.accuracy), (b.loss, b.accuracy));
}

/// Trains `page` until it is done, its data whole, as the worker drives it: after each epoch
/// the weights come back (batch norm's averages are re-estimated then) and `at_epoch_end`
/// runs. Returns every step's loss.
fn train_to_the_end(page: &mut Playground, mut at_epoch_end: impl FnMut(&mut Playground)) -> Vec<f32> {
    let mut losses = Vec::new();
    loop {
        match page.step().unwrap() {
            Progress::Trained { stats: Some(stats), epoch_finished } => {
                losses.push(stats.loss);
                if epoch_finished {
                    assert!(page.finish_sync().unwrap());
                    at_epoch_end(page);
                }
            }
            Progress::Done => return losses,
            other => panic!("no step ran with the data whole: {other:?}"),
        }
    }
}

/// One seed, one run: once its data is whole, the page's engine trains every preset through
/// the same batches as the CLI's `Trainer::train_epoch` with the same seed, so the losses are
/// the same step for step (the same arithmetic on the same CPU: equal to the bit). 130
/// images at batch 32 end each epoch with a batch of 2, and two epochs check that the second
/// epoch's order matches too. The weights and batch norm's averages, re-estimated after each
/// epoch, end equal as well.
#[test]
fn the_page_engine_and_the_cli_give_the_same_losses_for_the_same_seed() {
    use ferrograd::data::Dataset;
    use ferrograd::train::Trainer;

    let (count, batch) = (130, 32);
    let (images_idx, labels_idx) = images(count, 0);
    // The same images as a data set, as the CLI reads them: the IDX payloads after their headers.
    let data = Dataset::new(images_idx[16..].to_vec(), labels_idx[8..].to_vec(), 28, 28).unwrap();
    for &preset in ModelSpec::PRESETS {
        let spec = ModelSpec::preset(preset).unwrap();
        let mut cli = Trainer::new(spec.clone(), &OptimizerSpec::adam(1e-3), 1).unwrap();
        let mut cli_losses = Vec::new();
        for _ in 0..2 {
            cli.train_epoch(&data, batch, |s| cli_losses.push(s.loss)).unwrap();
        }

        let mut page = Playground::new(spec, config(batch, 2)).unwrap();
        load_whole(&mut page, count, 10);
        let page_losses = train_to_the_end(&mut page, |_| {});
        assert_eq!(page_losses, cli_losses, "{preset}: the page's losses and the CLI's");
        // And the same model at the end, batch norm's re-estimated averages included.
        for (p, c) in page.trainer().model().params().iter().zip(cli.model().params().iter()) {
            assert!(p.value == c.value, "{preset}: {} differs between the page and the CLI", p.name);
        }
    }
}

/// The same with a schedule, a validation split and early stopping: the page holds out the
/// pairs the CLI's split holds out, spans the schedule over the same steps, validates on
/// the same pairs and stops at the same epoch with the same best weights.
#[test]
fn the_page_engine_and_the_cli_split_schedule_and_stop_alike() {
    use ferrograd::data::{Dataset, ValidationSplit};
    use ferrograd::train::{batch_count, Trainer};

    let (count, batch, epochs) = (150, 16, 10);
    let (mut images_idx, mut labels_idx) = images(count, 0);
    // A third of the labels wrong, and a few pixels of its own in every image: the model
    // learns the wrong labels by heart and the validation loss rises again, so early stopping
    // has something to stop.
    for (i, label) in labels_idx[8..].iter_mut().enumerate().filter(|(i, _)| i % 3 == 0) {
        *label = ((i / 3 + usize::from(*label) + 1) % 10) as u8;
    }
    for (i, image) in images_idx[16..].chunks_exact_mut(784).enumerate() {
        for k in 0..12 {
            image[(i * 97 + k * 61) % 784] = 255;
        }
    }
    let data = Dataset::new(images_idx[16..].to_vec(), labels_idx[8..].to_vec(), 28, 28).unwrap();
    let schedule = LrSchedule::Cosine { warmup: 1.0, min_lr: 1e-4 };
    let settings = TrainingConfig {
        optimizer: OptimizerSpec::adam(1e-2),
        lr_schedule: schedule,
        val_split: 0.2,
        early_stop: Some(1),
        ..config(batch, epochs)
    };
    let spec = ModelSpec::preset("mlp").unwrap();

    let (train, validation) = ValidationSplit::new(0.2, settings.seed).unwrap().split(&data);
    let mut cli = Trainer::new(spec.clone(), &settings.optimizer, settings.seed).unwrap();
    cli.set_lr_schedule(schedule, Horizon { steps_per_epoch: batch_count(train.len(), batch), epochs })
        .unwrap();
    cli.set_early_stopping(Some(1)).unwrap();
    let (mut cli_losses, mut cli_validation) = (Vec::new(), Vec::new());
    for _ in 0..epochs {
        cli.train_epoch(&train, batch, |s| cli_losses.push(s.loss)).unwrap();
        let loss = cli.evaluate(&validation).unwrap().loss;
        cli_validation.push(loss);
        if cli.observe_validation(loss).unwrap() {
            break;
        }
    }
    let cli_best = cli.restore_best().unwrap();

    let mut page = Playground::new(spec, settings).unwrap();
    page.begin_load(names());
    let (test_images, test_labels) = images(10, 0);
    for (part, bytes) in [
        (Part::TrainImages, &images_idx),
        (Part::TrainLabels, &labels_idx),
        (Part::TestImages, &test_images),
        (Part::TestLabels, &test_labels),
    ] {
        page.feed(part, bytes).unwrap();
    }
    page.end_load().unwrap();
    assert_eq!(page.status().validation_size, validation.len());
    let (mut page_validation, mut page_best) = (Vec::new(), None);
    let page_losses = train_to_the_end(&mut page, |page| {
        let v = page.validate().unwrap().expect("a validation split");
        page_validation.push(v.loss);
        page_best = v.best_epoch.or(page_best);
    });
    assert_eq!(page_losses, cli_losses);
    assert_eq!(page_validation, cli_validation);
    assert_eq!(page_best, cli_best);
    assert!(cli_validation.len() < epochs, "early stopping never stopped: {cli_validation:?}");
    for (p, c) in page.trainer().model().params().iter().zip(cli.model().params().iter()) {
        assert!(p.value == c.value, "{} differs between the page and the CLI", p.name);
    }
}

#[test]
fn bad_experiment_settings_are_named_and_change_nothing() {
    let mut page = Playground::new(ModelSpec::preset("mlp").unwrap(), config(10, 2)).unwrap();
    load_whole(&mut page, 40, 10);
    let before = page.status();
    for (settings, name) in [
        (TrainingConfig { val_split: 0.9, ..config(10, 2) }, "val_split"),
        (TrainingConfig { early_stop: Some(2), ..config(10, 2) }, "earlyStop"),
        (
            TrainingConfig { lr_schedule: LrSchedule::Step { every: 0, gamma: 0.5 }, ..config(10, 2) },
            "lr_schedule.every",
        ),
    ] {
        let error = page.configure(ModelSpec::preset("mlp").unwrap(), settings).unwrap_err().to_string();
        assert!(error.contains(name), "{error}");
        assert_eq!(page.status(), before);
    }
}
