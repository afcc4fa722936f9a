//! ONNX export, checked by the ONNX project's own tools: `onnx.checker` accepts each exported
//! model and `onnxruntime` computes the same logits as ferrograd on the 2,000 test images.
//! Needs python3 with `onnx` and `onnxruntime` (scripts/test.sh installs them).

use std::path::Path;
use std::process::Command;

use ferrograd::data::load_mnist;
use ferrograd::nn::ModelSpec;
use ferrograd::optim::OptimizerSpec;
use ferrograd::train::Trainer;
use serde_json::Value;

/// Trains `spec` for `steps` batches, exports it and compares onnxruntime with ferrograd.
fn check(name: &str, spec: ModelSpec, steps: usize) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mnist =
        load_mnist(&root.join("data/mnist")).expect("the bundled sample (node scripts/fetch-mnist.mjs)");
    let mut trainer = Trainer::new(spec, &OptimizerSpec::adam(1e-3), 3).unwrap();
    let order: Vec<usize> = (0..mnist.train.len()).collect();
    for batch in order.chunks(64).take(steps) {
        let (images, labels) = mnist.train.batch(batch);
        trainer.step(images, &labels).unwrap();
    }
    let all: Vec<usize> = (0..mnist.test.len()).collect();
    let (images, _) = mnist.test.batch(&all);
    let mut logits = Vec::new();
    for chunk in all.chunks(500) {
        let (batch, _) = mnist.test.batch(chunk);
        let probs_and_logits = ferrograd::inspect::logits(trainer.model(), batch).unwrap();
        logits.extend(probs_and_logits.iter().copied());
    }

    let dir = std::env::temp_dir().join(format!("ferrograd-onnx-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write_f32 = |file: &str, values: &mut dyn Iterator<Item = f32>| {
        let bytes: Vec<u8> = values.flat_map(f32::to_le_bytes).collect();
        std::fs::write(dir.join(file), bytes).unwrap();
    };
    std::fs::write(dir.join("model.onnx"), ferrograd::export::onnx::export(trainer.model()).unwrap())
        .unwrap();
    write_f32("images.f32", &mut images.iter().copied());
    write_f32("logits.f32", &mut logits.iter().copied());

    let output = Command::new("python3")
        .arg(root.join("scripts/check_onnx.py"))
        .args(["model.onnx", "images.f32", "logits.f32", &mnist.test.len().to_string()])
        .current_dir(&dir)
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{name}: the ONNX check failed (is `pip install onnx onnxruntime` done?):\n{stderr}"
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let agreement = report["agreement"].as_f64().unwrap();
    let diff = report["max_abs_diff"].as_f64().unwrap();
    assert!(agreement >= 0.999, "{name}: onnxruntime agrees on {agreement} of the classes");
    assert!(diff <= 1e-4, "{name}: logits differ by up to {diff}");
    assert!(report["probabilities_sum_error"].as_f64().unwrap() < 1e-5);
    assert_eq!(report["opset"], 17);
    assert_eq!(report["spec"].as_str().unwrap(), trainer.model().spec().to_json());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_mlp_preset_exports() {
    check("mlp", ModelSpec::preset("mlp").unwrap(), 40);
}

#[test]
fn the_cnn_preset_exports() {
    check("cnn", ModelSpec::preset("cnn").unwrap(), 30);
}

#[test]
fn the_lstm_preset_exports() {
    check("lstm", ModelSpec::preset("lstm").unwrap(), 30);
}

#[test]
fn the_convnet_preset_exports() {
    check("convnet", ModelSpec::preset("convnet").unwrap(), 30);
}

#[test]
fn the_gru_preset_exports() {
    check("gru", ModelSpec::preset("gru").unwrap(), 30);
}

#[test]
fn the_resnet_preset_exports() {
    check("resnet", ModelSpec::preset("resnet").unwrap(), 15);
}

#[test]
fn the_vit_preset_exports() {
    check("vit", ModelSpec::preset("vit").unwrap(), 30);
}

/// Blocks within blocks, a shortcut, attention whose key size does not divide d, dense on a
/// sequence without bias, GELU as a layer and as an activation, the mean over each plane.
#[test]
fn blocks_and_attention_variants_export() {
    let spec = ModelSpec::from_json(
        r#"{"layers": [
              {"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": "same", "activation": "gelu"},
              {"type": "residual", "layers": [
                  {"type": "conv2d", "filters": 6, "kernel_size": 3, "stride": 2, "padding": "same"},
                  {"type": "residual", "layers": [{"type": "batch_norm"}, {"type": "gelu"}]}],
               "shortcut": [{"type": "avg_pool2d", "pool_size": 2}, {"type": "conv2d", "filters": 6, "kernel_size": 1}]},
              {"type": "reshape", "shape": [6, 196]},
              {"type": "dense", "units": 12, "bias": false},
              {"type": "layer_norm", "eps": 1e-3},
              {"type": "residual", "layers": [{"type": "multi_head_attention", "heads": 3, "key_size": 5}]},
              {"type": "global_avg_pool"},
              {"type": "dense", "units": 10}]}"#,
    )
    .unwrap();
    check("blocks", spec, 20);
}

#[test]
fn every_other_layer_exports() {
    let spec = ModelSpec::from_json(
        r#"{"normalize": {"mean": 0.1307, "std": 0.3081},
            "layers": [
              {"type": "conv2d", "filters": 4, "kernel_size": 3, "stride": 2, "padding": "same", "activation": "leaky_relu"},
              {"type": "batch_norm"},
              {"type": "avg_pool2d", "pool_size": 2},
              {"type": "dropout", "rate": 0.2},
              {"type": "reshape", "shape": [4, 49]},
              {"type": "simple_rnn", "units": 8, "return_sequences": true},
              {"type": "lstm", "units": 6, "return_sequences": true},
              {"type": "gru", "units": 5},
              {"type": "tanh"},
              {"type": "dense", "units": 12, "activation": "sigmoid"},
              {"type": "leaky_relu", "alpha": 0.2},
              {"type": "relu"},
              {"type": "sigmoid"},
              {"type": "batch_norm"},
              {"type": "dense", "units": 10}]}"#,
    )
    .unwrap();
    check("all-layers", spec, 20);
}
