//! The wasm build, in headless Chromium: the boundary trains, and its errors arrive as
//! JavaScript exceptions with readable messages.
#![cfg(target_arch = "wasm32")]

use ferrograd::web::{DataStream, Trainer};
use wasm_bindgen::JsValue;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// A batch of synthetic 28x28 "digits": class `c` lights a 7x7 block at a position of its
/// own, plus a little deterministic noise, so that the classes are learnable but not trivial.
fn synthetic_batch(size: usize, offset: usize) -> (Vec<f32>, Vec<u8>) {
    let mut pixels = vec![0.0f32; size * 784];
    let mut labels = Vec::with_capacity(size);
    for i in 0..size {
        let class = (i * 7 + offset) % 10;
        labels.push(class as u8);
        let (top, left) = ((class / 4) * 9, (class % 4) * 7);
        for r in top..top + 7 {
            for c in left..left + 7 {
                pixels[i * 784 + r * 28 + c] = 1.0;
            }
        }
        for p in 0..784 {
            let hash = ((i * 784 + p + offset) as u32).wrapping_mul(2_654_435_761);
            let noise = (hash % 1000) as f32 / 5000.0;
            pixels[i * 784 + p] = (pixels[i * 784 + p] + noise).min(1.0);
        }
    }
    (pixels, labels)
}

fn loss_of(stats: &JsValue) -> f64 {
    js_sys::Reflect::get(stats, &"loss".into()).unwrap().as_f64().unwrap()
}

#[wasm_bindgen_test]
fn the_mlp_preset_trains_and_its_loss_falls() {
    let mut trainer = Trainer::new("mlp", JsValue::UNDEFINED).unwrap();
    let mut losses = Vec::new();
    for step in 0..30 {
        let (pixels, labels) = synthetic_batch(64, step);
        losses.push(loss_of(&trainer.step(&pixels, &labels).unwrap()));
    }
    let first = losses[..3].iter().sum::<f64>() / 3.0;
    let last = losses[27..].iter().sum::<f64>() / 3.0;
    assert!(last < first * 0.5, "loss should fall: first steps {first}, last steps {last}");
    let probs = trainer.predict(&synthetic_batch(2, 0).0).unwrap();
    assert_eq!(probs.len(), 20);
    assert!((probs[..10].iter().sum::<f32>() - 1.0).abs() < 1e-5);
}

#[wasm_bindgen_test]
fn errors_arrive_as_exceptions_with_messages() {
    let message = |err: wasm_bindgen::JsError| {
        let value: JsValue = err.into();
        js_sys::Error::from(value).message().as_string().unwrap()
    };
    let err = Trainer::new(r#"{"layers":[{"type":"dense"}]}"#, JsValue::UNDEFINED).err().unwrap();
    assert_eq!(message(err), "model spec, layers[0] (dense): missing field `units`");

    let mut trainer = Trainer::new("mlp", JsValue::UNDEFINED).unwrap();
    let err = trainer.step(&[0.0; 784], &[0, 1]).err().unwrap();
    assert_eq!(message(err), "from_vec: 784 values do not fill it (got shape [2, 1, 28, 28])");
    let err = trainer.step(&[0.0; 784], &[12]).err().unwrap();
    assert_eq!(message(err), "softmax_cross_entropy: label 12 is not below the class count 10");
}

#[wasm_bindgen_test]
fn data_streams_decode_one_byte_at_a_time() {
    let images = ferrograd::data::idx::encode(&[2, 28, 28], &[7u8; 2 * 784]);
    let labels = ferrograd::data::idx::encode(&[2], &[3, 9]);
    let mut stream = DataStream::new("images", "labels");
    let mut completed = 0;
    for byte in &images {
        completed += stream.feed_images(std::slice::from_ref(byte)).unwrap();
    }
    assert_eq!(completed, 2);
    assert_eq!(stream.pairs(), 0);
    stream.feed_labels(&labels).unwrap();
    assert_eq!((stream.pairs(), stream.declared()), (2, Some(2)));
}
