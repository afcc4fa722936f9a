"""Reference numbers for tests/optim.rs: three steps of SGD and of Adam, by PyTorch's formulas.

Run from the repository root with `python3 scripts/reference/optim_reference.py` (numpy only)
and paste the printed constants into tests/optim.rs.

The arithmetic is done in float64, so the numbers are the exact result of the update rules;
the Rust optimizers work in float32 and are compared within 1e-6 relative, a few float32 ulps.
The formulas follow torch.optim.SGD and torch.optim.Adam (foreach=False, maximize=False,
amsgrad=False), where weight decay is L2 added to the gradient: g <- g + weight_decay * w.
"""

import numpy as np

# The parameter before the first step and the gradient of each step. Element 4 has a zero
# gradient throughout, so it moves by weight decay alone.
W0 = np.array([0.5, -1.25, 2.0, -0.75, 0.8], dtype=np.float64)
GRADS = [
    np.array([0.1, -0.2, 0.3, 0.05, 0.0], dtype=np.float64),
    np.array([-0.05, -0.1, 0.4, 0.2, 0.0], dtype=np.float64),
    np.array([0.2, 0.3, -0.1, -0.15, 0.0], dtype=np.float64),
]

SGD = dict(lr=0.1, momentum=0.9, weight_decay=0.01)
ADAM = dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01)


def sgd(w, grads, lr, momentum, weight_decay):
    w = w.copy()
    buf = None
    for g in grads:
        d = g + weight_decay * w
        # torch: the first step initialises the buffer to d (no dampening), then buf = m*buf + d.
        buf = d.copy() if buf is None else momentum * buf + d
        w = w - lr * buf
    return w


def adam(w, grads, lr, beta1, beta2, eps, weight_decay):
    w = w.copy()
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for step, g in enumerate(grads, start=1):
        g = g + weight_decay * w
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        step_size = lr / (1 - beta1**step)
        denom = np.sqrt(v) / np.sqrt(1 - beta2**step) + eps
        w = w - step_size * m / denom
    return w


def rust_array(name, values):
    # numpy prints the shortest decimal that reads back as the same float32.
    body = ", ".join(str(np.float32(v)) for v in values)
    return f"const {name}: [f32; {len(values)}] = [{body}];"


if __name__ == "__main__":
    print(rust_array("SGD_AFTER_3", sgd(W0, GRADS, **SGD)))
    print(rust_array("ADAM_AFTER_3", adam(W0, GRADS, **ADAM)))
