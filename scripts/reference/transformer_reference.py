"""Reference numbers for tests/transformer_reference.rs: layer normalisation, multi-head
self-attention, patch embedding, GELU, global average pooling, ResNet basic blocks (batch norm
in training mode, with and without a 1x1 convolution shortcut), a pre-norm ViT encoder block
and a tiny whole ViT; forward values and gradients computed with jax.

Regenerate the fixture from the repository root with

    python3 -m pip install jax jaxlib numpy    # CPU wheels; only this script needs them
    python3 scripts/reference/transformer_reference.py

which writes tests/fixtures/transformer_reference.json. The tests read only that JSON, so CI
needs no jax. The inputs are drawn from a seeded numpy generator and rounded to three
decimals, so the same file comes out every time.

Precision: every input is rounded to float32 first (the values ferrograd computes with), then
jax computes in float64 (`jax_enable_x64`), so the fixture holds the exact result for those
inputs to the 7 significant digits written, and the Rust side's float32 arithmetic is compared
within 1e-4 relative and absolute.

Each case holds the model's JSON spec (`spec`, what `ModelSpec::from_json` reads), whether it
runs in training mode (`train`: batch norm on batch statistics), the input `x`, every
trainable parameter under ferrograd's name (`params`), the output, and the gradients of
`L = sum(y * r)` for fixed random weights `r` (`out_weights`) with respect to `x` and every
parameter (`grads`, same names), so every output element enters the gradients with its own
weight.

Names and layouts, as src/nn/model.rs builds them. A layer at top-level index i owns
`layers.{i}.{part}`; inside a residual block at index i the body's layer j owns
`layers.{i}.layers.{j}.{part}` and the shortcut's `layers.{i}.shortcut.{j}.{part}`. Batches
come first: images `[N, C, H, W]`, sequences `[N, T, d]`.

dense: `x W + b`, weight [inputs, units], bias [units]; on a sequence, per token.

conv2d: cross-correlation with weight [filters, channels, kh, kw] (OIHW), bias [filters];
  `same` padding at stride 1 pads a 3x3 kernel by 1 on every side.

layer_norm (gamma [d], beta [d]), over the last axis with the biased variance:

    y = (x - mean) / sqrt(var + eps) * gamma + beta,  eps = 1e-5

batch_norm in training (gamma [C], beta [C]; the running averages are buffers, not
  parameters): mean and biased variance of each channel over the batch and both spatial
  axes, then the same formula as layer_norm, eps = 1e-5.

multi_head_attention, h heads of key size k over x [N, T, d]:

    query.weight [d, h*k], query.bias [h*k], likewise key and value;
    output.weight [h*k, d], output.bias [d]
    q = x Wq + bq, kk = x Wk + bk, v = x Wv + bv       each [N, T, h*k]
    head j takes columns j*k .. (j+1)*k of q, kk and v:
    a_j = softmax(q_j kk_j^T / sqrt(k)) over the keys   [N, T, T]  (`attention` in the fixture,
                                                                    as [N*h, T, T], batch-major)
    y = concat_j(a_j v_j) Wo + bo                       heads concatenated in order

  PyTorch's nn.MultiheadAttention (batch_first, dropout 0) computes the same with
  in_proj_weight = concat(Wq, Wk, Wv, axis=1).T and out_proj.weight = Wo.T (it needs
  k = d / h); Keras's MultiHeadAttention keeps per-head kernels [d, h, k], which reshape
  to [d, h*k] in the same order.

patch_embed, patch p, dim D over x [N, C, H, W] (weight [D, C, p, p], bias [D],
  position [T, D] with T = (H/p)(W/p)): a convolution of stride p without padding,
  [N, D, H/p, W/p], flattened row-major over the grid (token r*(W/p) + c), transposed to
  [N, T, D], plus bias and position.

gelu, tanh form (jax.nn.gelu(approximate=True), BERT's):

    y = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))

global_avg_pool: the mean over H and W of each channel ([N, C, H, W] to [N, C]), or over the
  tokens of a sequence ([N, T, d] to [N, d]).

residual: body(x) + x, or body(x) + shortcut(x) where a shortcut is given. The ResNet basic
  block is conv 3x3 same (no bias), batch_norm, relu, conv 3x3 same (no bias), batch_norm,
  added to the input; with a shortcut, a 1x1 convolution without bias maps the input to the
  body's channels (as in ferrograd's `resnet` preset). The pre-norm ViT encoder block is
  residual[layer_norm, multi_head_attention], residual[layer_norm, dense gelu, dense].
"""

import json
import math
import re
from pathlib import Path

import numpy as np
import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "transformer_reference.json"
RNG = np.random.default_rng(20261130)
EPS = 1e-5


def draw(shape, lo=-1.0, hi=1.0):
    """Inputs with three decimals (short in the JSON), as the float32 values ferrograd reads."""
    values = np.round(RNG.uniform(lo, hi, size=shape), 3)
    return values, np.asarray(values, dtype=np.float32).astype(np.float64)


def tensor(values, digits=None):
    values = np.asarray(values, dtype=np.float64)
    flat = values.reshape(-1).tolist()
    if digits is not None:
        flat = [float(f"{v:.{digits}g}") for v in flat]
    return {"shape": list(values.shape), "data": flat}


# The layers, as ferrograd computes them (see the docstring).

def dense(x, p, name, activation=None):
    y = x @ p[f"{name}.weight"]
    if f"{name}.bias" in p:
        y = y + p[f"{name}.bias"]
    return gelu(y) if activation == "gelu" else y


def conv(x, p, name, stride=1, padding=0):
    y = jax.lax.conv_general_dilated(
        x, p[f"{name}.weight"], window_strides=(stride, stride),
        padding=[(padding, padding), (padding, padding)],
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
    )
    if f"{name}.bias" in p:
        y = y + p[f"{name}.bias"][None, :, None, None]
    return y


def gelu(x):
    return 0.5 * x * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def layer_norm(x, p, name):
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean((x - mean) ** 2, axis=-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + EPS) * p[f"{name}.gamma"] + p[f"{name}.beta"]


def batch_norm_train(x, p, name):
    mean = jnp.mean(x, axis=(0, 2, 3), keepdims=True)
    var = jnp.mean((x - mean) ** 2, axis=(0, 2, 3), keepdims=True)
    shape = (1, -1, 1, 1)
    return (x - mean) / jnp.sqrt(var + EPS) * p[f"{name}.gamma"].reshape(shape) + p[f"{name}.beta"].reshape(shape)


def attention(x, p, name, heads, key_size):
    """The output [N, T, d] and the weights [N * heads, T, T]."""
    n, t, _ = x.shape
    split = lambda y: y.reshape(n, t, heads, key_size).transpose(0, 2, 1, 3)  # [N, h, T, k]
    q = split(dense(x, p, f"{name}.query"))
    k = split(dense(x, p, f"{name}.key"))
    v = split(dense(x, p, f"{name}.value"))
    weights = jax.nn.softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(key_size), axis=-1)
    context = (weights @ v).transpose(0, 2, 1, 3).reshape(n, t, heads * key_size)
    return dense(context, p, f"{name}.output"), weights.reshape(n * heads, t, t)


def patch_embed(x, p, name, patch):
    y = conv(x, {f"{name}.weight": p[f"{name}.weight"]}, name, stride=patch)
    n, d, gh, gw = y.shape
    y = y.reshape(n, d, gh * gw).transpose(0, 2, 1)
    return y + p[f"{name}.bias"] + p[f"{name}.position"]


def global_avg_pool(x):
    return jnp.mean(x, axis=(2, 3)) if x.ndim == 4 else jnp.mean(x, axis=1)


def basic_block(x, p, name, shortcut):
    y = conv(x, p, f"{name}.layers.0", padding=1)
    y = batch_norm_train(y, p, f"{name}.layers.1")
    y = jax.nn.relu(y)
    y = conv(y, p, f"{name}.layers.3", padding=1)
    y = batch_norm_train(y, p, f"{name}.layers.4")
    return y + (conv(x, p, f"{name}.shortcut.0") if shortcut else x)


def encoder_block(x, p, first, heads):
    """Layers `first` and `first + 1`: the attention and MLP residual blocks."""
    a, m = f"layers.{first}", f"layers.{first + 1}"
    x = x + attention(layer_norm(x, p, f"{a}.layers.0"), p, f"{a}.layers.1", heads, x.shape[-1] // heads)[0]
    y = layer_norm(x, p, f"{m}.layers.0")
    y = dense(y, p, f"{m}.layers.1", "gelu")
    return x + dense(y, p, f"{m}.layers.2")


# The specs, as ModelSpec::from_json reads them.

def layer(kind, **fields):
    return {"type": kind, **fields}


def conv_bn(filters, kernel):
    return layer("conv2d", filters=filters, kernel_size=kernel, padding="same", bias=False)


def basic_layers(filters):
    return [conv_bn(filters, 3), layer("batch_norm"), layer("relu"), conv_bn(filters, 3), layer("batch_norm")]


def encoder_layers(heads, hidden, d):
    return [
        layer("residual", layers=[layer("layer_norm"), layer("multi_head_attention", heads=heads)]),
        layer("residual", layers=[
            layer("layer_norm"),
            layer("dense", units=hidden, activation="gelu"),
            layer("dense", units=d),
        ]),
    ]


def case(spec, x_shape, params, forward, train=False, x_range=(-1.0, 1.0), extra=None):
    """Draws x and the parameters (`params`: name to (shape, lo, hi)), runs `forward(x, p)`
    (which returns y, or (y, extras)) and differentiates `sum(y * r)`."""
    x_dec, x = draw(x_shape, *x_range)
    drawn = {name: draw(shape, lo, hi) for name, (shape, lo, hi) in params.items()}
    p = {name: values for name, (_, values) in drawn.items()}
    out = forward(x, p)
    y, extras = out if isinstance(out, tuple) else (out, {})
    r_dec, r = draw(y.shape)

    def loss(x, p):
        out = forward(x, p)
        return jnp.sum((out[0] if isinstance(out, tuple) else out) * r)

    gx, gp = jax.grad(loss, argnums=(0, 1))(x, p)
    return {
        "spec": {"input": list(x_shape[1:]), "layers": spec},
        "train": train,
        "inputs": {"x": tensor(x_dec), "out_weights": tensor(r_dec)},
        "params": {name: tensor(dec) for name, (dec, _) in drawn.items()},
        "output": tensor(y, 7),
        **{key: tensor(value, 7) for key, value in extras.items()},
        "grads": {"x": tensor(gx, 7), **{name: tensor(g, 7) for name, g in gp.items()}},
    }


def norm_params(name, d):
    return {f"{name}.gamma": ((d,), 0.5, 1.5), f"{name}.beta": ((d,), -0.5, 0.5)}


def projection(name, inputs, outputs, scale=0.7):
    return {f"{name}.weight": ((inputs, outputs), -scale, scale), f"{name}.bias": ((outputs,), -0.3, 0.3)}


def attention_params(name, d, width):
    p = {}
    for part in ("query", "key", "value"):
        p.update(projection(f"{name}.{part}", d, width))
    p.update(projection(f"{name}.output", width, d))
    return p


def encoder_params(first, d, hidden):
    a, m = f"layers.{first}", f"layers.{first + 1}"
    return {
        **norm_params(f"{a}.layers.0", d),
        **attention_params(f"{a}.layers.1", d, d),
        **norm_params(f"{m}.layers.0", d),
        **projection(f"{m}.layers.1", d, hidden),
        **projection(f"{m}.layers.2", hidden, d),
    }


def layer_norm_case():
    return case([layer("layer_norm")], (2, 3, 5), norm_params("layers.0", 5),
                lambda x, p: layer_norm(x, p, "layers.0"))


def attention_case():
    heads, key_size, d = 2, 3, 4

    def forward(x, p):
        y, weights = attention(x, p, "layers.0", heads, key_size)
        return y, {"attention": weights}

    return case([layer("multi_head_attention", heads=heads, key_size=key_size)], (2, 5, d),
                attention_params("layers.0", d, heads * key_size), forward)


def patch_embed_case():
    patch, dim = 2, 3
    params = {
        "layers.0.weight": ((dim, 1, patch, patch), -0.7, 0.7),
        "layers.0.bias": ((dim,), -0.3, 0.3),
        "layers.0.position": ((6, dim), -0.3, 0.3),
    }
    return case([layer("patch_embed", patch_size=patch, dim=dim)], (2, 1, 4, 6), params,
                lambda x, p: patch_embed(x, p, "layers.0", patch))


def gelu_case():
    # Wide enough to reach both tails, where tanh saturates.
    assert np.allclose(gelu(jnp.linspace(-4, 4, 81)), jax.nn.gelu(jnp.linspace(-4, 4, 81), approximate=True))
    return case([layer("gelu")], (2, 3, 7), {}, lambda x, p: gelu(x), x_range=(-4.0, 4.0))


def global_avg_pool_cases():
    image = case([layer("global_avg_pool")], (2, 3, 2, 4), {}, lambda x, p: global_avg_pool(x))
    sequence = case([layer("global_avg_pool")], (2, 5, 3), {}, lambda x, p: global_avg_pool(x))
    return image, sequence


def basic_block_case(channels, filters):
    shortcut = channels != filters
    params = {
        "layers.0.layers.0.weight": ((filters, channels, 3, 3), -0.5, 0.5),
        **norm_params("layers.0.layers.1", filters),
        "layers.0.layers.3.weight": ((filters, filters, 3, 3), -0.5, 0.5),
        **norm_params("layers.0.layers.4", filters),
    }
    block = {"type": "residual", "layers": basic_layers(filters)}
    if shortcut:
        params["layers.0.shortcut.0.weight"] = ((filters, channels, 1, 1), -0.7, 0.7)
        block["shortcut"] = [conv_bn(filters, 1)]
    return case([block], (2, channels, 4, 5), params,
                lambda x, p: basic_block(x, p, "layers.0", shortcut), train=True)


def encoder_case():
    heads, d, hidden = 2, 4, 8
    return case(encoder_layers(heads, hidden, d), (2, 3, d), encoder_params(0, d, hidden),
                lambda x, p: encoder_block(x, p, 0, heads))


def vit_case():
    """A whole ViT as the preset builds it, small: 2x2 patches of a 4x6 image (6 tokens of
    d = 4), one encoder block of 2 heads, a final layer norm, the mean over the tokens and a
    dense classifier of 3."""
    patch, d, heads, hidden, classes = 2, 4, 2, 8, 3
    spec = [layer("patch_embed", patch_size=patch, dim=d), *encoder_layers(heads, hidden, d),
            layer("layer_norm"), layer("global_avg_pool"), layer("dense", units=classes)]
    params = {
        "layers.0.weight": ((d, 1, patch, patch), -0.7, 0.7),
        "layers.0.bias": ((d,), -0.3, 0.3),
        "layers.0.position": ((6, d), -0.3, 0.3),
        **encoder_params(1, d, hidden),
        **norm_params("layers.3", d),
        **projection("layers.5", d, classes),
    }

    def forward(x, p):
        y = patch_embed(x, p, "layers.0", patch)
        y = encoder_block(y, p, 1, heads)
        y = layer_norm(y, p, "layers.3")
        return dense(global_avg_pool(y), p, "layers.5")

    return case(spec, (2, 1, 4, 6), params, forward, x_range=(0.0, 1.0))


def main():
    pool_image, pool_sequence = global_avg_pool_cases()
    fixture = {
        "generated_by": "python3 scripts/reference/transformer_reference.py (jax " + jax.__version__ + ")",
        "layer_norm": layer_norm_case(),
        "multi_head_attention": attention_case(),
        "patch_embed": patch_embed_case(),
        "gelu": gelu_case(),
        "global_avg_pool_image": pool_image,
        "global_avg_pool_sequence": pool_sequence,
        "basic_block": basic_block_case(3, 3),
        "basic_block_shortcut": basic_block_case(2, 3),
        "encoder_block": encoder_case(),
        "vit": vit_case(),
    }
    text = json.dumps(fixture, indent=1)
    # One line per list of numbers.
    text = re.sub(r"\[\s+([-0-9.eE+,\s]*?)\s+\]", lambda m: "[" + re.sub(r"\s+", "", m.group(1)) + "]", text)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text + "\n")
    print(f"wrote {OUT.relative_to(Path.cwd()) if OUT.is_relative_to(Path.cwd()) else OUT} ({len(text)} bytes)")


if __name__ == "__main__":
    main()
