//! Convolution, LSTM and GRU against reference numbers from jax: forward values and the
//! gradients of `L = sum(y * r)` for fixed weights `r`, with respect to the input and every
//! weight.
//!
//! The fixture tests/fixtures/layers_reference.json comes from
//! scripts/reference/layers_reference.py, which documents the formulas, the gate orders and
//! how the weights map to PyTorch's and Keras's. Regenerate it from the repository root with
//!
//! ```sh
//! python3 -m pip install jax jaxlib numpy
//! python3 scripts/reference/layers_reference.py
//! ```
//!
//! Only the committed JSON is read here; the tests need no Python.

mod common;

use common::jax::{assert_matches, tensor};
use common::weighted_sum;
use ferrograd::autograd::{Params, Tape};
use ferrograd::nn::{conv_window, Mode, Model, ModelSpec, Padding};
use ferrograd::tensor::Tensor;
use serde_json::Value;

const FIXTURE: &str = include_str!("fixtures/layers_reference.json");

fn fixture() -> Value {
    serde_json::from_str(FIXTURE).expect("the fixture is valid JSON")
}

#[test]
fn conv2d_op_matches_jax() {
    let case = &fixture()["conv2d"];
    let inputs = &case["inputs"];
    let (x, w, b) = (tensor(&inputs["x"]), tensor(&inputs["weight"]), tensor(&inputs["bias"]));
    let kernel = w.shape()[2];
    let stride = case["stride"].as_u64().unwrap() as usize;
    // The padding the script gave jax is the one the layer derives for `same`.
    let window = conv_window(kernel, stride, Padding::Same, (x.shape()[2], x.shape()[3]));
    let padding: [usize; 4] = serde_json::from_value(case["padding"].clone()).unwrap();
    let p = window.padding;
    assert_eq!([p.0, p.1, p.2, p.3], padding, "same padding (top, bottom, left, right)");

    let params = Params::default();
    let mut tape = Tape::new(&params);
    let (xv, wv, bv) = (tape.variable(x), tape.variable(w), tape.variable(b));
    let y = tape.conv2d(xv, wv, window.stride, window.padding).unwrap();
    let filters = tape.value(bv).len();
    let bias = tape.reshape(bv, &[filters, 1, 1]).unwrap();
    let y = tape.add(y, bias).unwrap();
    assert_matches("conv2d output", tape.value(y), &tensor(&case["output"]));
    let loss = weighted_sum(&mut tape, y, &tensor(&inputs["out_weights"])).unwrap();
    let grads = tape.backward(loss).unwrap();
    for (name, var) in [("x", xv), ("weight", wv), ("bias", bv)] {
        let expected = tensor(&case["grads"][name]);
        assert_matches(&format!("conv2d gradient wrt {name}"), grads.wrt(var).unwrap(), &expected);
    }
}

/// Overwrites each named parameter of `model` with the fixture's value.
#[track_caller]
fn load(model: &mut Model, values: &[(&str, Tensor)]) {
    for (name, value) in values {
        let p = model.params_mut().iter_mut().find(|p| p.name == *name);
        let p = p.unwrap_or_else(|| panic!("the model has no parameter {name}"));
        assert_eq!(p.value.shape(), value.shape(), "{name}: shape");
        p.value = value.clone();
    }
}

/// Runs the one-layer model `json` with its parameters set from the fixture's `inputs`
/// (fixture name, parameter name), and compares its output and the gradients of
/// `sum(output * out_weights)` with `case`.
#[track_caller]
fn check_layer(what: &str, json: &str, case: &Value, parts: &[(&str, &str)]) {
    let inputs = &case["inputs"];
    let mut model = Model::new(ModelSpec::from_json(json).unwrap(), 0).unwrap();
    let values: Vec<(&str, Tensor)> = parts.iter().map(|&(key, name)| (name, tensor(&inputs[key]))).collect();
    load(&mut model, &values);

    let mut tape = Tape::new(model.params());
    let x = tape.variable(tensor(&inputs["x"]));
    let y = model.forward(&mut tape, x, Mode::Eval).unwrap();
    assert_matches(&format!("{what} output"), tape.value(y), &tensor(&case["output"]));
    let loss = weighted_sum(&mut tape, y, &tensor(&inputs["out_weights"])).unwrap();
    let grads = tape.backward(loss).unwrap();
    assert_matches(&format!("{what} gradient wrt x"), grads.wrt(x).unwrap(), &tensor(&case["grads"]["x"]));
    for &(key, name) in parts {
        let (_, g) = grads
            .params()
            .find(|(id, _)| model.params().get(*id).name == name)
            .unwrap_or_else(|| panic!("{what}: no gradient reached {name}"));
        assert_matches(&format!("{what} gradient wrt {name}"), g, &tensor(&case["grads"][key]));
    }
}

/// With `return_sequences`, the layer's output is every step's state, which the fixture holds
/// as `sequence` `[batch, time, units]`.
#[track_caller]
fn check_sequence(what: &str, json: &str, case: &Value, parts: &[(&str, &str)]) {
    let inputs = &case["inputs"];
    let mut model = Model::new(ModelSpec::from_json(json).unwrap(), 0).unwrap();
    let values: Vec<(&str, Tensor)> = parts.iter().map(|&(key, name)| (name, tensor(&inputs[key]))).collect();
    load(&mut model, &values);
    let mut tape = Tape::inference(model.params());
    let x = tape.input(tensor(&inputs["x"]));
    let y = model.forward(&mut tape, x, Mode::Eval).unwrap();
    assert_matches(&format!("{what} sequence"), tape.value(y), &tensor(&case["sequence"]));
}

/// `{"input": [time, features], "layers": [{"type": cell, "units": units, ...}]}` for the case.
fn recurrent_spec(cell: &str, case: &Value, return_sequences: bool) -> String {
    let x = tensor(&case["inputs"]["x"]);
    let units = case["units"].as_u64().unwrap();
    format!(
        r#"{{"input":[{},{}],"layers":[{{"type":"{cell}","units":{units},"return_sequences":{return_sequences}}}]}}"#,
        x.shape()[1],
        x.shape()[2]
    )
}

#[test]
fn conv2d_layer_matches_jax() {
    let case = &fixture()["conv2d"];
    let x = tensor(&case["inputs"]["x"]);
    let (filters, kernel) =
        (tensor(&case["inputs"]["weight"]).shape()[0], case["kernel_size"].as_u64().unwrap());
    let json = format!(
        r#"{{"input":[{},{},{}],"layers":[{{"type":"conv2d","filters":{filters},"kernel_size":{kernel},"stride":{},"padding":"same"}}]}}"#,
        x.shape()[1],
        x.shape()[2],
        x.shape()[3],
        case["stride"]
    );
    check_layer("conv2d layer", &json, case, &[("weight", "layers.0.weight"), ("bias", "layers.0.bias")]);
}

const LSTM_PARTS: &[(&str, &str)] = &[("w", "layers.0.w"), ("u", "layers.0.u"), ("bias", "layers.0.bias")];
const GRU_PARTS: &[(&str, &str)] = &[
    ("w", "layers.0.w"),
    ("u", "layers.0.u"),
    ("bias", "layers.0.bias"),
    ("recurrent_bias", "layers.0.recurrent_bias"),
];

#[test]
fn lstm_matches_jax() {
    let case = &fixture()["lstm"];
    check_layer("lstm", &recurrent_spec("lstm", case, false), case, LSTM_PARTS);
    check_sequence("lstm", &recurrent_spec("lstm", case, true), case, LSTM_PARTS);
}

#[test]
fn gru_matches_jax() {
    let case = &fixture()["gru"];
    check_layer("gru", &recurrent_spec("gru", case, false), case, GRU_PARTS);
    check_sequence("gru", &recurrent_spec("gru", case, true), case, GRU_PARTS);
}
