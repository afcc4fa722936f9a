//! Reading a [`ModelSpec`] from parsed JSON.
//!
//! By hand rather than with serde's derive: the derived reader of a `type`-tagged enum goes
//! through serde's buffered `Content` and was the second largest function of the page's wasm
//! module (45 KB); reading by hand took 52 KB off the module, and names the field at fault in
//! every error.

use serde_json::{Map, Value};

use super::{ActivationName, LayerSpec, ModelSpec, Normalize, Padding};
use crate::nn::Init;
use crate::{Error, Result};

/// Every layer `type` and the fields it takes besides.
const LAYERS: &[(&str, &[&str])] = &[
    ("flatten", &[]),
    ("dense", &["units", "activation", "bias", "init"]),
    ("dropout", &["rate"]),
    ("reshape", &["shape"]),
    ("conv2d", &["filters", "kernel_size", "stride", "padding", "activation", "bias", "init"]),
    ("max_pool2d", &["pool_size", "stride"]),
    ("avg_pool2d", &["pool_size", "stride"]),
    ("batch_norm", &["momentum", "eps"]),
    ("simple_rnn", &["units", "return_sequences"]),
    ("lstm", &["units", "return_sequences"]),
    ("gru", &["units", "return_sequences"]),
    ("relu", &[]),
    ("leaky_relu", &["alpha"]),
    ("sigmoid", &[]),
    ("tanh", &[]),
    ("gelu", &[]),
    ("residual", &["layers", "shortcut"]),
    ("layer_norm", &["eps"]),
    ("multi_head_attention", &["heads", "key_size", "dropout"]),
    ("patch_embed", &["patch_size", "dim"]),
    ("global_avg_pool", &[]),
];

const ACTIVATIONS: &[(&str, ActivationName)] = &[
    ("linear", ActivationName::Linear),
    ("relu", ActivationName::Relu),
    ("leaky_relu", ActivationName::LeakyRelu),
    ("sigmoid", ActivationName::Sigmoid),
    ("tanh", ActivationName::Tanh),
    ("gelu", ActivationName::Gelu),
];

const PADDINGS: &[(&str, Padding)] = &[("valid", Padding::Valid), ("same", Padding::Same)];

const INITS: &[(&str, Init)] = &[("glorot_uniform", Init::GlorotUniform), ("he_uniform", Init::HeUniform)];

pub(super) fn model(value: Value) -> Result<ModelSpec> {
    let map = object(value, "top level", "an object with a `layers` array")?;
    let mut fields = Fields::new(map, String::new(), &["input", "normalize", "layers"])?;
    let input = fields.sizes("input")?.unwrap_or_else(super::mnist_input);
    let normalize = match fields.take("normalize") {
        None | Some(Value::Null) => None,
        Some(value) => Some(normalize(value)?),
    };
    let layers =
        fields.layers("layers")?.ok_or_else(|| Error::spec("top level", "missing field `layers`"))?;
    Ok(ModelSpec { input, normalize, layers })
}

fn normalize(value: Value) -> Result<Normalize> {
    let map = object(value, "normalize", r#"{"mean": number, "std": number}"#)?;
    let mut fields = Fields::new(map, "normalize".into(), &["mean", "std"])?;
    Ok(Normalize { mean: fields.need("mean", Fields::number)?, std: fields.need("std", Fields::number)? })
}

/// The layer at `path` (`layers[2]`, or `layers[2].layers[0]` inside a block).
fn layer(value: Value, path: &str) -> Result<LayerSpec> {
    let mut map = object(value, path, r#"a layer such as {"type": "flatten"}"#)?;
    let kind = match map.remove("type") {
        Some(Value::String(kind)) => kind,
        Some(other) => {
            return Err(Error::spec(
                format!("{path}.type"),
                format!("expected a string, got {}", describe(&other)),
            ))
        }
        None => return Err(Error::spec(path, "missing field `type`")),
    };
    let Some(&(_, names)) = LAYERS.iter().find(|(name, _)| *name == kind) else {
        let kinds: Vec<&str> = LAYERS.iter().map(|(name, _)| *name).collect();
        return Err(Error::spec(
            format!("{path}.type"),
            format!("unknown layer type `{kind}`; expected one of {}", kinds.join(", ")),
        ));
    };
    let mut f = Fields::new(map, format!("{path} ({kind})"), names)?;
    Ok(match kind.as_str() {
        "flatten" => LayerSpec::Flatten,
        "dense" => LayerSpec::Dense {
            units: f.need("units", Fields::count)?,
            activation: f.choice("activation", ACTIVATIONS)?.unwrap_or_default(),
            bias: f.flag("bias")?.unwrap_or(true),
            init: f.choice("init", INITS)?.unwrap_or_default(),
        },
        "dropout" => LayerSpec::Dropout { rate: f.need("rate", Fields::number)? },
        "reshape" => LayerSpec::Reshape { shape: f.need("shape", Fields::sizes)? },
        "conv2d" => LayerSpec::Conv2d {
            filters: f.need("filters", Fields::count)?,
            kernel_size: f.need("kernel_size", Fields::count)?,
            stride: f.count("stride")?.unwrap_or(1),
            padding: f.choice("padding", PADDINGS)?.unwrap_or_default(),
            activation: f.choice("activation", ACTIVATIONS)?.unwrap_or_default(),
            bias: f.flag("bias")?.unwrap_or(true),
            init: f.choice("init", INITS)?.unwrap_or_default(),
        },
        "max_pool2d" | "avg_pool2d" => {
            let pool_size = f.count("pool_size")?.unwrap_or(2);
            // `null` as well as a missing stride means the pool size, as written by `to_json`.
            let stride = f.count("stride")?;
            if kind == "max_pool2d" {
                LayerSpec::MaxPool2d { pool_size, stride }
            } else {
                LayerSpec::AvgPool2d { pool_size, stride }
            }
        }
        "batch_norm" => LayerSpec::BatchNorm {
            momentum: f.number("momentum")?.unwrap_or(0.1),
            eps: f.number("eps")?.unwrap_or(1e-5),
        },
        "simple_rnn" | "lstm" | "gru" => {
            let units = f.need("units", Fields::count)?;
            let return_sequences = f.flag("return_sequences")?.unwrap_or(false);
            match kind.as_str() {
                "simple_rnn" => LayerSpec::SimpleRnn { units, return_sequences },
                "lstm" => LayerSpec::Lstm { units, return_sequences },
                _ => LayerSpec::Gru { units, return_sequences },
            }
        }
        "relu" => LayerSpec::Relu,
        "leaky_relu" => LayerSpec::LeakyRelu { alpha: f.number("alpha")?.unwrap_or(super::default_leak()) },
        "sigmoid" => LayerSpec::Sigmoid,
        "tanh" => LayerSpec::Tanh,
        "gelu" => LayerSpec::Gelu,
        "residual" => LayerSpec::Residual {
            layers: f.layers_at("layers", path)?.ok_or_else(|| f.missing("layers"))?,
            shortcut: f.layers_at("shortcut", path)?,
        },
        "layer_norm" => LayerSpec::LayerNorm { eps: f.number("eps")?.unwrap_or(1e-5) },
        "multi_head_attention" => LayerSpec::MultiHeadAttention {
            heads: f.need("heads", Fields::count)?,
            key_size: f.count("key_size")?,
            dropout: f.number("dropout")?.unwrap_or(0.0),
        },
        "patch_embed" => LayerSpec::PatchEmbed {
            patch_size: f.need("patch_size", Fields::count)?,
            dim: f.need("dim", Fields::count)?,
        },
        "global_avg_pool" => LayerSpec::GlobalAvgPool,
        _ => unreachable!("every type in LAYERS is built above (tested)"),
    })
}

/// `value` as an object, or an error at `location` saying what was `expected`.
fn object(value: Value, location: &str, expected: &str) -> Result<Map<String, Value>> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(Error::spec(location, format!("expected {expected}, got {}", describe(&other)))),
    }
}

/// The fields of one JSON object, taken by name.
struct Fields {
    map: Map<String, Value>,
    /// Where the object is, for errors: `layers[1] (dense)`; empty at the top level.
    location: String,
}

impl Fields {
    /// The fields of `map`, or an error naming the first that is not one of `names`, so
    /// that a misspelt field is reported as such rather than as the one it should have been
    /// being missing.
    fn new(map: Map<String, Value>, location: String, names: &[&str]) -> Result<Fields> {
        let Some(unknown) = map.keys().find(|key| !names.contains(&key.as_str())) else {
            return Ok(Fields { map, location });
        };
        let expected = match names {
            [] => "it takes none".to_owned(),
            [name] => format!("expected `{name}`"),
            [names @ .., last] => {
                let names: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
                format!("expected {} or `{last}`", names.join(", "))
            }
        };
        let here = if location.is_empty() { "top level".to_owned() } else { location };
        Err(Error::spec(here, format!("unknown field `{unknown}`; {expected}")))
    }

    /// The location of its field `name`, for errors about that field.
    fn path(&self, name: &str) -> String {
        if self.location.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.location)
        }
    }

    fn take(&mut self, name: &str) -> Option<Value> {
        self.map.remove(name)
    }

    /// `name` read by `read`, which says what it expected when the value is not that; `null`
    /// counts as absent.
    fn read<T>(&mut self, name: &str, expected: &str, read: fn(&Value) -> Option<T>) -> Result<Option<T>> {
        match self.take(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => read(&value).map(Some).ok_or_else(|| {
                Error::spec(self.path(name), format!("expected {expected}, got {}", describe(&value)))
            }),
        }
    }

    fn count(&mut self, name: &str) -> Result<Option<usize>> {
        self.read(name, "a whole number", |v| v.as_u64().and_then(|n| usize::try_from(n).ok()))
    }

    #[allow(clippy::cast_possible_truncation)] // JSON numbers are doubles; the spec's are f32
    fn number(&mut self, name: &str) -> Result<Option<f32>> {
        self.read(name, "a number", |v| v.as_f64().map(|n| n as f32))
    }

    fn flag(&mut self, name: &str) -> Result<Option<bool>> {
        self.read(name, "true or false", Value::as_bool)
    }

    fn sizes(&mut self, name: &str) -> Result<Option<Vec<usize>>> {
        self.read(name, "an array of whole numbers such as [1, 28, 28]", |v| {
            v.as_array()?.iter().map(|n| n.as_u64().and_then(|n| usize::try_from(n).ok())).collect()
        })
    }

    /// One of the names in `options`, as the value it stands for.
    fn choice<T: Copy>(&mut self, name: &str, options: &[(&str, T)]) -> Result<Option<T>> {
        let Some(value) = self.read(name, "a string", |v| v.as_str().map(str::to_owned))? else {
            return Ok(None);
        };
        match options.iter().find(|(option, _)| *option == value) {
            Some(&(_, choice)) => Ok(Some(choice)),
            None => {
                let names: Vec<&str> = options.iter().map(|(option, _)| *option).collect();
                Err(Error::spec(
                    self.path(name),
                    format!("unknown value `{value}`; expected one of {}", names.join(", ")),
                ))
            }
        }
    }

    /// The field `name` read by `read` (one of the readers above), or an error saying it is
    /// missing.
    fn need<T>(&mut self, name: &str, read: fn(&mut Fields, &str) -> Result<Option<T>>) -> Result<T> {
        read(self, name)?.ok_or_else(|| self.missing(name))
    }

    fn missing(&self, name: &str) -> Error {
        let here = if self.location.is_empty() { "top level" } else { &self.location };
        Error::spec(here, format!("missing field `{name}`"))
    }

    /// The array of layers `name` of the top level, each read at `layers[i]`.
    fn layers(&mut self, name: &str) -> Result<Option<Vec<LayerSpec>>> {
        self.layers_at(name, "")
    }

    /// The array of layers `name` of the object at JSON path `path` (empty at the top level),
    /// each read at `path.name[i]`: one recursive reader for every depth.
    fn layers_at(&mut self, name: &str, path: &str) -> Result<Option<Vec<LayerSpec>>> {
        let at = if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") };
        match self.take(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(values)) => values
                .into_iter()
                .enumerate()
                .map(|(i, value)| layer(value, &format!("{at}[{i}]")))
                .collect::<Result<_>>()
                .map(Some),
            Some(other) => {
                Err(Error::spec(at, format!("expected an array of layers, got {}", describe(&other))))
            }
        }
    }
}

/// A short description of a JSON value for errors: `the string "many"`, `an array`.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_type_is_built_and_takes_its_listed_fields() {
        let values = serde_json::json!({"units": 2, "rate": 0.5, "shape": [1], "filters": 1, "kernel_size": 1,
            "layers": [{"type": "relu"}], "heads": 1, "patch_size": 2, "dim": 3});
        for (index, &(kind, names)) in LAYERS.iter().enumerate() {
            let mut object = Map::new();
            object.insert("type".into(), kind.into());
            for &name in names {
                if let Some(value) = values.get(name) {
                    object.insert(name.into(), value.clone());
                }
            }
            let layer = layer(Value::Object(object), &format!("layers[{index}]")).unwrap();
            assert_eq!(layer.kind(), kind);
        }
    }
}
