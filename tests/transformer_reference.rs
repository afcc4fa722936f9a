//! Layer norm, multi-head attention, patch embedding, GELU, global average pooling, ResNet
//! basic blocks (batch norm in training), a pre-norm ViT encoder block and a tiny whole ViT
//! against reference numbers from jax: forward values and the gradients of `L = sum(y * r)`
//! for fixed weights `r`, with respect to the input and every parameter.
//!
//! The fixture tests/fixtures/transformer_reference.json comes from
//! scripts/reference/transformer_reference.py, which documents the formulas, the parameter
//! names and layouts, and how they map to PyTorch's and Keras's. Each case carries the model
//! spec it was computed for, so the model here is built from exactly that JSON. Regenerate it
//! from the repository root with
//!
//! ```sh
//! python3 -m pip install jax jaxlib numpy
//! python3 scripts/reference/transformer_reference.py
//! ```
//!
//! Only the committed JSON is read here; the tests need no Python.

mod common;

use common::jax::{assert_matches, tensor};
use common::weighted_sum;
use ferrograd::autograd::Tape;
use ferrograd::nn::{Mode, Model, ModelSpec, Trace};
use serde_json::Value;

const FIXTURE: &str = include_str!("fixtures/transformer_reference.json");

fn fixture() -> Value {
    serde_json::from_str(FIXTURE).expect("the fixture is valid JSON")
}

/// Builds the case's model from its spec, sets every trainable parameter from the fixture by
/// name, runs it (in training mode where the case says so: batch norm on batch statistics)
/// and compares the output and the gradients of `sum(output * out_weights)` with respect to
/// the input and every parameter; for an attention layer, its traced weights too.
#[track_caller]
fn check(name: &str) {
    let fixture = fixture();
    let case = &fixture[name];
    let spec = ModelSpec::from_value(case["spec"].clone()).unwrap();
    let mut model = Model::new(spec, 0).unwrap();
    let params = case["params"].as_object().expect("a params object");
    // The fixture holds every trainable parameter the model has, and no other.
    let mut trainable: Vec<&str> =
        model.params().iter().filter(|p| p.trainable).map(|p| p.name.as_str()).collect();
    let mut given: Vec<&str> = params.keys().map(String::as_str).collect();
    trainable.sort_unstable();
    given.sort_unstable();
    assert_eq!(trainable, given, "{name}: the model's trainable parameters");
    for (param, value) in params {
        let value = tensor(value);
        let p = model.params_mut().iter_mut().find(|p| p.name == *param).expect("checked above");
        assert_eq!(p.value.shape(), value.shape(), "{name}: {param}: shape");
        p.value = value;
    }

    let mut rng = common::rng(0);
    let mode = if case["train"].as_bool().unwrap() { Mode::Train(&mut rng) } else { Mode::Eval };
    let inputs = &case["inputs"];
    let mut tape = Tape::new(model.params());
    let x = tape.variable(tensor(&inputs["x"]));
    let mut trace = Trace::default();
    let y = model.forward_traced(&mut tape, x, mode, Some(&mut trace)).unwrap();
    assert_matches(&format!("{name} output"), tape.value(y), &tensor(&case["output"]));
    if let Some(expected) = case.get("attention") {
        // The weights the forward pass used, [batch * heads, tokens, tokens], as the page shows them.
        assert_eq!(trace.attention.len(), 1, "{name}: one attention layer traced");
        let weights = tape.value(trace.attention[0].weights);
        assert_matches(&format!("{name} attention weights"), weights, &tensor(expected));
    }
    let loss = weighted_sum(&mut tape, y, &tensor(&inputs["out_weights"])).unwrap();
    let grads = tape.backward(loss).unwrap();
    let expected = &case["grads"];
    assert_matches(&format!("{name} gradient wrt x"), grads.wrt(x).unwrap(), &tensor(&expected["x"]));
    for param in params.keys() {
        let (_, g) = grads
            .params()
            .find(|(id, _)| model.params().get(*id).name == *param)
            .unwrap_or_else(|| panic!("{name}: no gradient reached {param}"));
        assert_matches(&format!("{name} gradient wrt {param}"), g, &tensor(&expected[param]));
    }
}

#[test]
fn layer_norm_matches_jax() {
    check("layer_norm");
}

#[test]
fn multi_head_attention_matches_jax() {
    check("multi_head_attention");
}

#[test]
fn patch_embed_matches_jax() {
    check("patch_embed");
}

#[test]
fn gelu_matches_jax() {
    check("gelu");
}

#[test]
fn global_avg_pool_matches_jax() {
    check("global_avg_pool_image");
    check("global_avg_pool_sequence");
}

#[test]
fn resnet_basic_block_matches_jax() {
    check("basic_block");
}

#[test]
fn resnet_basic_block_with_a_1x1_shortcut_matches_jax() {
    check("basic_block_shortcut");
}

#[test]
fn vit_encoder_block_matches_jax() {
    check("encoder_block");
}

#[test]
fn tiny_vit_matches_jax() {
    check("vit");
}
