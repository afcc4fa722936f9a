//! One time step of a recurrent cell, elementwise, forward and backward: everything of a step
//! but its two matrix products, so that a step is three ops on the tape (and three GPU
//! dispatches) rather than a dozen.
//!
//! Rows are the batch. Per row, `x` and `hu` hold the gates' pre-activations from the input
//! and from the previous state side by side (`gates * units` columns, in the cell's order), and
//! `state` the previous state: `h` (`units` columns), or for the LSTM `h` then `c`.

use ndarray::{ArrayView2, ArrayViewMut2, Axis, Zip};

use super::Activation;

/// Which recurrent cell a layer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    /// `h = tanh(x W + h U + b)`.
    Simple,
    /// Gates i, f, g, o: `c = f * c + i * g`, `h = o * tanh(c)`.
    Lstm,
    /// Gates r, z, n: `n = tanh(x W_n + b_n + r * (h U_n + b_hn))`, `h = n + z * (h - n)`
    /// (PyTorch's formulation; Keras with `reset_after`).
    Gru,
}

impl Cell {
    /// The layer type's name in specs.
    pub fn name(self) -> &'static str {
        match self {
            Cell::Simple => "simple_rnn",
            Cell::Lstm => "lstm",
            Cell::Gru => "gru",
        }
    }

    /// How many blocks of `units` columns the weights hold.
    pub fn gates(self) -> usize {
        match self {
            Cell::Simple => 1,
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }

    /// How many blocks of `units` columns the state holds: `h`, or `h` and `c`.
    pub fn state_blocks(self) -> usize {
        match self {
            Cell::Lstm => 2,
            Cell::Simple | Cell::Gru => 1,
        }
    }
}

fn sigmoid(v: f32) -> f32 {
    Activation::Sigmoid.f(v)
}

fn tanh(v: f32) -> f32 {
    Activation::Tanh.f(v)
}

/// The new state into `out` (shaped like `state`) and the gates' activations into `gates`
/// (shaped like `x`), for the backward pass and the page's inside views.
pub fn cell_forward(
    cell: Cell,
    x: ArrayView2<f32>,
    hu: ArrayView2<f32>,
    state: ArrayView2<f32>,
    mut out: ArrayViewMut2<f32>,
    mut gates: ArrayViewMut2<f32>,
) {
    let units = state.ncols() / cell.state_blocks();
    Zip::from(x.rows()).and(hu.rows()).and(state.rows()).and(out.rows_mut()).and(gates.rows_mut()).for_each(
        |x, hu, s, mut out, mut a| {
            for j in 0..units {
                let z = |k: usize| x[k * units + j] + hu[k * units + j];
                match cell {
                    Cell::Simple => {
                        let h = tanh(z(0));
                        (a[j], out[j]) = (h, h);
                    }
                    Cell::Lstm => {
                        let (i, f, g, o) = (sigmoid(z(0)), sigmoid(z(1)), tanh(z(2)), sigmoid(z(3)));
                        let c = f * s[units + j] + i * g;
                        out[j] = o * tanh(c);
                        out[units + j] = c;
                        (a[j], a[units + j], a[2 * units + j], a[3 * units + j]) = (i, f, g, o);
                    }
                    Cell::Gru => {
                        let r = sigmoid(z(0));
                        let u = sigmoid(z(1));
                        let n = tanh(x[2 * units + j] + r * hu[2 * units + j]);
                        // h' = (1 - u) n + u h = n + u (h - n)
                        out[j] = n + u * (s[j] - n);
                        (a[j], a[units + j], a[2 * units + j]) = (r, u, n);
                    }
                }
            }
        },
    );
}

/// From the gradient `g` of the new state: the gradients of the step's pre-activations from
/// the input into `dx` and from the previous state into `dhu` (the same but for the GRU's new
/// gate, where `hu` is scaled by the reset gate), and of the previous state into `dstate`
/// (the part that does not go through `hu`: the LSTM's `c` and the GRU's `h`; zero for the
/// simple cell and the LSTM's `h`). Reads `out`, the new state, and
/// `gates`, the activations [`cell_forward`] saved. Every output is written whole.
#[allow(clippy::too_many_arguments)]
pub fn cell_backward(
    cell: Cell,
    g: ArrayView2<f32>,
    hu: ArrayView2<f32>,
    state: ArrayView2<f32>,
    out: ArrayView2<f32>,
    gates: ArrayView2<f32>,
    mut dx: ArrayViewMut2<f32>,
    mut dhu: ArrayViewMut2<f32>,
    mut dstate: ArrayViewMut2<f32>,
) {
    let units = state.ncols() / cell.state_blocks();
    for b in 0..g.nrows() {
        let (g, hu, s, out, a) = (g.row(b), hu.row(b), state.row(b), out.row(b), gates.row(b));
        let (mut dz, mut dhu, mut ds) = (
            dx.index_axis_mut(Axis(0), b),
            dhu.index_axis_mut(Axis(0), b),
            dstate.index_axis_mut(Axis(0), b),
        );
        for j in 0..units {
            match cell {
                Cell::Simple => {
                    let h = a[j];
                    dz[j] = g[j] * (1.0 - h * h);
                    dhu[j] = dz[j];
                    ds[j] = 0.0;
                }
                Cell::Lstm => {
                    let (i, f, gg, o) = (a[j], a[units + j], a[2 * units + j], a[3 * units + j]);
                    let tc = tanh(out[units + j]);
                    let dc = g[units + j] + g[j] * o * (1.0 - tc * tc);
                    dz[j] = dc * gg * i * (1.0 - i);
                    dz[units + j] = dc * s[units + j] * f * (1.0 - f);
                    dz[2 * units + j] = dc * i * (1.0 - gg * gg);
                    dz[3 * units + j] = g[j] * tc * o * (1.0 - o);
                    for k in 0..4 {
                        dhu[k * units + j] = dz[k * units + j];
                    }
                    (ds[j], ds[units + j]) = (0.0, dc * f);
                }
                Cell::Gru => {
                    let (r, u, n) = (a[j], a[units + j], a[2 * units + j]);
                    let dn = g[j] * (1.0 - u) * (1.0 - n * n);
                    let dr = dn * hu[2 * units + j] * r * (1.0 - r);
                    let du = g[j] * (s[j] - n) * u * (1.0 - u);
                    (dz[j], dz[units + j], dz[2 * units + j]) = (dr, du, dn);
                    (dhu[j], dhu[units + j], dhu[2 * units + j]) = (dr, du, dn * r);
                    ds[j] = g[j] * u;
                }
            }
        }
    }
}
