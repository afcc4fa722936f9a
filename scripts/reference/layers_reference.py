"""Reference numbers for tests/reference.rs: a strided convolution with `same` padding, an LSTM
and a GRU, forward values and gradients computed with jax.

Regenerate the fixture from the repository root with

    python3 -m pip install jax jaxlib numpy    # CPU wheels; only this script needs them
    python3 scripts/reference/layers_reference.py

which writes tests/fixtures/layers_reference.json. The tests read only that JSON, so CI needs
no jax. The inputs are drawn from a seeded numpy generator and rounded to three decimals, so
the same file comes out every time.

Precision: every input is rounded to float32 first (the values ferrograd computes with), then
jax computes in float64 (`jax_enable_x64`), so the fixture holds the exact result for those
inputs to the 7 significant digits written, and the Rust side's float32 arithmetic is compared
within 1e-4 relative and absolute.

Each case reduces its output `y` to the scalar `L = sum(y * r)` with fixed random weights `r`
(`out_weights`), so every output element enters the gradients with its own weight.

Layouts, as in src/nn/recurrent.rs (inputs `[batch, time, features]`, state starting at 0):

    w     [features, gates * units]   input weights, gate blocks side by side
    u     [units, gates * units]      recurrent weights, same blocks
    bias  [gates * units]             added to x W
    recurrent_bias [3 * units]        GRU only, added to h U (inside the reset product for n)

LSTM, gates i, f, g, o (input, forget, cell candidate, output):

    z = x_t W + b + h U;  i = sigmoid(z_i), f = sigmoid(z_f), g = tanh(z_g), o = sigmoid(z_o)
    c = f * c + i * g;    h = o * tanh(c)

  PyTorch nn.LSTM keeps the same gate order in the rows of weight_ih_l0 [4H, F]:
    w = weight_ih_l0.T, u = weight_hh_l0.T, bias = bias_ih_l0 + bias_hh_l0.
  Keras LSTM (activation tanh, recurrent_activation sigmoid) keeps the same order in the
  columns of kernel [F, 4H] (i, f, c, o): w = kernel, u = recurrent_kernel, bias = bias.

GRU, gates r, z, n (reset, update, new), PyTorch's formulation:

    a = x_t W + b;  e = h U + b_h  (b_h: recurrent_bias)
    r = sigmoid(a_r + e_r), z = sigmoid(a_z + e_z), n = tanh(a_n + r * e_n)
    h = (1 - z) * n + z * h

  PyTorch nn.GRU, rows of weight_ih_l0 [3H, F] in the order r, z, n:
    w = weight_ih_l0.T, u = weight_hh_l0.T, bias = bias_ih_l0, recurrent_bias = bias_hh_l0.
  Keras GRU with reset_after=True (the TF2 default) computes the same function but orders its
  blocks z, r, n (kernel [F, 3H], recurrent_kernel [H, 3H], bias [2, 3H] with the input bias in
  row 0 and the recurrent bias in row 1): swap the first two blocks of each, so
    w = kernel[:, [H:2H, 0:H, 2H:3H]], likewise u from recurrent_kernel,
    bias = bias[0] and recurrent_bias = bias[1], both reordered the same way.

Convolution: cross-correlation of x [N, C, H, W] with weight [O, C, kh, kw] (NCHW / OIHW),
plus bias [O] on every output position. `same` padding is TensorFlow's: the output is
ceil(input / stride) and the total padding, when odd, puts the extra row or column at the
bottom or right, so a 3x3 kernel at stride 2 pads a 5x6 input by (top 1, bottom 1, left 0,
right 1).
"""

import json
import re
from pathlib import Path

import numpy as np
import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "layers_reference.json"
RNG = np.random.default_rng(20240611)


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


def same_padding(size, kernel, stride):
    """TensorFlow's `same`: (before, after) with the odd one out after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv_case():
    x_dec, x = draw((2, 2, 5, 6))
    w_dec, w = draw((3, 2, 3, 3))
    b_dec, b = draw((3,), -0.5, 0.5)
    stride = 2
    pads = [same_padding(5, 3, stride), same_padding(6, 3, stride)]

    def conv(x, w, b):
        y = jax.lax.conv_general_dilated(
            x, w, window_strides=(stride, stride), padding=pads,
            dimension_numbers=("NCHW", "OIHW", "NCHW"),
        )
        return y + b[None, :, None, None]

    y = conv(x, w, b)
    r_dec, r = draw(y.shape)
    loss = lambda x, w, b: jnp.sum(conv(x, w, b) * r)
    gx, gw, gb = jax.grad(loss, argnums=(0, 1, 2))(x, w, b)
    return {
        "stride": stride,
        "kernel_size": 3,
        # (top, bottom, left, right), as ferrograd's Window::padding
        "padding": [pads[0][0], pads[0][1], pads[1][0], pads[1][1]],
        "inputs": {
            "x": tensor(x_dec), "weight": tensor(w_dec), "bias": tensor(b_dec),
            "out_weights": tensor(r_dec),
        },
        "output": tensor(y, 7),
        "grads": {"x": tensor(gx, 7), "weight": tensor(gw, 7), "bias": tensor(gb, 7)},
    }


def sigmoid(v):
    return 1.0 / (1.0 + jnp.exp(-v))


def lstm(x, w, u, b):
    batch, time, _ = x.shape
    units = u.shape[0]
    h = jnp.zeros((batch, units))
    c = jnp.zeros((batch, units))
    states = []
    for t in range(time):
        z = x[:, t, :] @ w + b + h @ u
        i = sigmoid(z[:, 0 * units:1 * units])
        f = sigmoid(z[:, 1 * units:2 * units])
        g = jnp.tanh(z[:, 2 * units:3 * units])
        o = sigmoid(z[:, 3 * units:4 * units])
        c = f * c + i * g
        h = o * jnp.tanh(c)
        states.append(h)
    return h, jnp.stack(states, axis=1)


def gru(x, w, u, b, bh):
    batch, time, _ = x.shape
    units = u.shape[0]
    h = jnp.zeros((batch, units))
    states = []
    block = lambda v, k: v[:, k * units:(k + 1) * units]
    for t in range(time):
        a = x[:, t, :] @ w + b
        e = h @ u + bh
        r = sigmoid(block(a, 0) + block(e, 0))
        z = sigmoid(block(a, 1) + block(e, 1))
        n = jnp.tanh(block(a, 2) + r * block(e, 2))
        h = (1.0 - z) * n + z * h
        states.append(h)
    return h, jnp.stack(states, axis=1)


def recurrent_case(cell, gates, with_recurrent_bias):
    batch, time, features, units = 2, 4, 3, 5
    x_dec, x = draw((batch, time, features))
    w_dec, w = draw((features, gates * units), -0.7, 0.7)
    u_dec, u = draw((units, gates * units), -0.7, 0.7)
    b_dec, b = draw((gates * units,), -0.5, 0.5)
    params = [x, w, u, b]
    inputs = {"x": tensor(x_dec), "w": tensor(w_dec), "u": tensor(u_dec), "bias": tensor(b_dec)}
    if with_recurrent_bias:
        bh_dec, bh = draw((gates * units,), -0.5, 0.5)
        params.append(bh)
        inputs["recurrent_bias"] = tensor(bh_dec)
    h, sequence = cell(*params)
    r_dec, r = draw(h.shape)
    inputs["out_weights"] = tensor(r_dec)
    loss = lambda *p: jnp.sum(cell(*p)[0] * r)
    grads = jax.grad(loss, argnums=tuple(range(len(params))))(*params)
    names = ["x", "w", "u", "bias", "recurrent_bias"]
    return {
        "units": units,
        "inputs": inputs,
        "output": tensor(h, 7),
        # Every step's state: the layer's output with return_sequences.
        "sequence": tensor(sequence, 7),
        "grads": {name: tensor(g, 7) for name, g in zip(names, grads)},
    }


def main():
    fixture = {
        "generated_by": "python3 scripts/reference/layers_reference.py (jax " + jax.__version__ + ")",
        "conv2d": conv_case(),
        "lstm": recurrent_case(lstm, 4, False),
        "gru": recurrent_case(gru, 3, True),
    }
    text = json.dumps(fixture, indent=1)
    # One line per list of numbers.
    text = re.sub(r"\[\s+([-0-9.eE+,\s]*?)\s+\]", lambda m: "[" + re.sub(r"\s+", "", m.group(1)) + "]", text)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text + "\n")
    print(f"wrote {OUT.relative_to(Path.cwd()) if OUT.is_relative_to(Path.cwd()) else OUT} ({len(text)} bytes)")


if __name__ == "__main__":
    main()
