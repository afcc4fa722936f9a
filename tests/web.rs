//! The wasm build, in headless Chromium: the boundary streams data in, trains, and reports
//! failures as JavaScript exceptions with readable messages.
#![cfg(target_arch = "wasm32")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use ferrograd::backend::cpu;
use ferrograd::data::idx::encode;
use ferrograd::nn::ModelSpec;
use ferrograd::web::Session;
use ndarray::Array2;
use wasm_bindgen::JsValue;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// The allocator, counting the blocks of 1 KiB or more it hands out: any tensor of the
/// models below is that large, and bookkeeping (a label list, a node of the tape) is not.
struct CountingLarge;

static LARGE_BLOCKS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingLarge {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= 1024 {
            LARGE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        }
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= 1024 {
            LARGE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: CountingLarge = CountingLarge;

/// Synthetic 28x28 "digits": class `c` lights a 7x7 block at a position of its own, plus a
/// little deterministic noise, so that the classes are learnable but not trivial. Returns the
/// IDX images and labels streams.
fn synthetic(count: usize, offset: usize) -> (Vec<u8>, Vec<u8>) {
    let mut pixels = vec![0u8; count * 784];
    let mut labels = Vec::with_capacity(count);
    for i in 0..count {
        let class = (i * 7 + offset) % 10;
        labels.push(class as u8);
        let (top, left) = ((class / 4) * 9, (class % 4) * 7);
        for p in 0..784 {
            let (r, c) = (p / 28, p % 28);
            let hash = ((i * 784 + p + offset) as u32).wrapping_mul(2_654_435_761);
            let ink = if (top..top + 7).contains(&r) && (left..left + 7).contains(&c) { 200 } else { 0 };
            pixels[i * 784 + p] = ink + (hash % 50) as u8;
        }
    }
    (encode(&[count as u32, 28, 28], &pixels), encode(&[count as u32], &labels))
}

fn get(value: &JsValue, path: &[&str]) -> JsValue {
    path.iter().fold(value.clone(), |v, key| js_sys::Reflect::get(&v, &(*key).into()).unwrap())
}

fn settings(json: &str) -> JsValue {
    js_sys::JSON::parse(json).unwrap()
}

fn message(err: wasm_bindgen::JsError) -> String {
    let value: JsValue = err.into();
    js_sys::Error::from(value).message().as_string().unwrap()
}

fn load(session: &mut Session, train: usize, test: usize, chunk: usize) {
    session.begin_load(
        "train-images".into(),
        "train-labels".into(),
        "test-images".into(),
        "test-labels".into(),
    );
    let (train_images, train_labels) = synthetic(train, 0);
    let (test_images, test_labels) = synthetic(test, 3);
    for (part, bytes) in [
        ("trainLabels", train_labels),
        ("trainImages", train_images),
        ("testLabels", test_labels),
        ("testImages", test_images),
    ] {
        for piece in bytes.chunks(chunk) {
            session.feed(part, piece).unwrap();
        }
    }
    session.end_load().unwrap();
}

#[wasm_bindgen_test]
fn the_mlp_preset_trains_and_its_loss_falls() {
    let mut session = Session::new("mlp", settings(r#"{"epochs": 10, "batchSize": 32}"#)).unwrap();
    load(&mut session, 320, 50, 4096);
    let mut losses = Vec::new();
    while losses.len() < 40 {
        let progress = session.step().unwrap();
        assert_eq!(get(&progress, &["status"]), "trained");
        losses.push(get(&progress, &["stats", "loss"]).as_f64().unwrap());
    }
    let first = losses[..3].iter().sum::<f64>() / 3.0;
    let last = losses[37..].iter().sum::<f64>() / 3.0;
    assert!(last < first * 0.5, "loss should fall: first steps {first}, last steps {last}");

    let report = session.evaluate(8).unwrap();
    assert!(get(&report, &["accuracy"]).as_f64().unwrap() > 0.8);
    assert_eq!(js_sys::Array::from(&get(&report, &["showcase", "predicted"])).length(), 8);
    let probs = session.predict(&[0.0; 784]).unwrap();
    assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-5);
}

#[wasm_bindgen_test]
fn data_fed_one_byte_at_a_time_trains_while_it_arrives() {
    let mut session = Session::new("mlp", settings(r#"{"batchSize": 16}"#)).unwrap();
    assert_eq!(get(&session.step().unwrap(), &["status"]), "waiting");
    session.begin_load(
        "train-images".into(),
        "train-labels".into(),
        "test-images".into(),
        "test-labels".into(),
    );
    let (images, labels) = synthetic(40, 0);
    session.feed("trainLabels", &labels).unwrap();
    // Sixteen whole images and one byte of the next: the first batch can run.
    let first_batch = 16 + 4 * 4;
    for byte in &images[..first_batch + 16 * 784 + 1] {
        session.feed("trainImages", std::slice::from_ref(byte)).unwrap();
    }
    assert_eq!(get(&session.status().unwrap(), &["trainAvailable"]), 16);
    assert_eq!(get(&session.step().unwrap(), &["status"]), "trained");
    assert_eq!(get(&session.step().unwrap(), &["status"]), "waiting");
    assert_eq!(get(&session.status().unwrap(), &["epochSize"]), 40);
}

#[wasm_bindgen_test]
fn errors_arrive_as_exceptions_with_messages() {
    let err = Session::new(r#"{"layers":[{"type":"dense"}]}"#, JsValue::UNDEFINED).err().unwrap();
    assert_eq!(message(err), "model spec, layers[0] (dense): missing field `units`");
    let err = Session::new("mlp", settings(r#"{"batchsize": 3}"#)).err().unwrap();
    assert!(message(err).starts_with("settings: unknown field `batchsize`"));
    let err = Session::new("mlp", settings(r#"{"lr": -2}"#)).err().unwrap();
    assert_eq!(message(err), "setting `lr`: -2 must be a positive number");

    let mut session = Session::new("mlp", JsValue::UNDEFINED).unwrap();
    let err = session.feed("trainImages", &[1, 2, 3, 4]).err().unwrap();
    assert_eq!(message(err), "data: no data source is being loaded");
    session.begin_load("https://example.test/a.idx".into(), "b".into(), "c".into(), "d".into());
    let err = session.feed("trainImages", b"<!doctype html>").err().unwrap();
    assert!(message(err).starts_with("https://example.test/a.idx: not an IDX stream"));
    let err = session.feed("testImages", &[0]).err().unwrap();
    assert_eq!(message(err), "data: no data source is being loaded");
    let err = session.predict(&[0.5; 100]).err().unwrap();
    assert_eq!(message(err), "predict: 100 pixels are not a whole number of 784-pixel images");
    let err = session.add_example(&[0; 784], 11).err().unwrap();
    assert_eq!(message(err), "data: label 11 is not a digit 0-9");
}

#[wasm_bindgen_test]
fn after_its_first_steps_training_allocates_no_tensor_memory() {
    for &preset in ModelSpec::PRESETS {
        let mut session = Session::new(preset, settings(r#"{"batchSize": 32}"#)).unwrap();
        load(&mut session, 320, 50, 4096);
        // The first step fills the trainer's pool; the second finds every buffer in it.
        for _ in 0..2 {
            session.step().unwrap();
        }
        let before = LARGE_BLOCKS.load(Ordering::Relaxed);
        for _ in 0..3 {
            assert_eq!(get(&session.step().unwrap(), &["status"]), "trained");
        }
        let allocated = LARGE_BLOCKS.load(Ordering::Relaxed) - before;
        assert_eq!(allocated, 0, "{preset}: three steps allocated {allocated} blocks of 1 KiB or more");
    }
}

#[wasm_bindgen_test]
fn products_on_the_simd128_kernel_match_the_definition() {
    // Sizes around the kernel's 4 x 8 tile (6 x 8 in the relaxed-SIMD build) and its blocks,
    // and transposed operands.
    for (m, k, n) in [
        (1, 1, 1),
        (3, 5, 7),
        (4, 8, 8),
        (5, 9, 9),
        (6, 8, 8),
        (7, 9, 9),
        (65, 257, 257),
        (130, 600, 33),
        (9, 20, 1030),
    ] {
        let a = Array2::from_shape_fn((m, k), |(i, j)| ((i * 31 + j * 17) % 13) as f32 / 7.0 - 0.9);
        let b = Array2::from_shape_fn((k, n), |(i, j)| ((i * 5 + j * 11) % 17) as f32 / 9.0 - 0.8);
        let want = Array2::from_shape_fn((m, n), |(i, j)| (0..k).map(|p| a[[i, p]] * b[[p, j]]).sum::<f32>());
        let close =
            |got: &Array2<f32>| got.iter().zip(&want).all(|(g, w)| (g - w).abs() <= 1e-4 * (1.0 + w.abs()));
        assert!(close(&cpu::matmul(&a.view(), &b.view())), "{m}x{k} @ {k}x{n}");
        let (at, bt) = (a.t().to_owned(), b.t().to_owned());
        assert!(close(&cpu::matmul(&at.t(), &bt.t())), "transposed operands, {m}x{k} @ {k}x{n}");
        let mut c = want.clone();
        cpu::matmul_into(&a.view(), &b.view(), c.view_mut(), true);
        assert!(
            c.iter().zip(&want).all(|(c, w)| (c - 2.0 * w).abs() <= 2e-4 * (1.0 + w.abs())),
            "accumulated"
        );
    }
}

#[wasm_bindgen_test]
fn the_benchmarks_multiply_add_chains_compute_their_recurrence_and_products_are_bounded() {
    // Fused (in the relaxed-SIMD build) or not, chain i goes from 5 + i halfway to 2 five times.
    let want: f32 = (0..12).map(|i| 2.0 + ((5 + i) as f32 - 2.0) / 32.0).sum();
    let got = ferrograd::web::multiply_add_chains(5);
    assert!((got - want).abs() < 1e-4, "{got}, not {want}");
    let err = ferrograd::web::MatmulBench::new(5000).err().unwrap();
    assert_eq!(message(err), "a 5000 x 5000 product is more than the benchmark's 4096 x 4096");
}
