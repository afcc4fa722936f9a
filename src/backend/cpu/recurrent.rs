//! One time step of a recurrent cell, elementwise, forward and backward: everything of a step
//! but its two matrix products, so that a step is three ops on the tape (and three GPU
//! dispatches) rather than a dozen.
//!
//! Rows are the batch. Per row, `x` and `hu` hold the gates' pre-activations from the input
//! and from the previous state side by side (`gates * units` columns, in the cell's order), and
//! `state` the previous state: `h` (`units` columns), or for the LSTM `h` then `c`.

use ndarray::{ArrayView2, ArrayViewMut2};

use super::{activate, Activation};

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

/// `row`'s `n` blocks of `units` values each. Cut to their exact length, they let the compiler
/// drop the bounds checks of the loops below (and with them, the many loop versions that made
/// this file a tenth of the wasm module).
fn blocks<const N: usize>(row: &[f32], units: usize) -> [&[f32]; N] {
    std::array::from_fn(|k| &row[k * units..(k + 1) * units])
}

fn blocks_mut<const N: usize>(row: &mut [f32], units: usize) -> [&mut [f32]; N] {
    let mut rest = &mut row[..N * units];
    std::array::from_fn(|_| {
        let (block, tail) = std::mem::take(&mut rest).split_at_mut(units);
        rest = tail;
        block
    })
}

/// Row `b` of a matrix the tape made, whose rows are contiguous.
fn row<'a>(m: &'a ArrayView2<f32>, b: usize) -> &'a [f32] {
    m.row(b).to_slice().expect("rows of a tape's tensor are contiguous")
}

fn rows_mut<'a>(m: &'a mut ArrayViewMut2<f32>) -> std::slice::ChunksExactMut<'a, f32> {
    let width = m.ncols().max(1);
    m.as_slice_mut().expect("a tape's new tensor is contiguous").chunks_exact_mut(width)
}

/// The new state into `out` (shaped like `state`) and the gates' activations into `gates`
/// (shaped like `x`), for the backward pass and the page's inside views. Every row of `x`
/// is contiguous (it may be one step of `[batch, time, gates * units]`); the others are
/// whole contiguous matrices.
pub fn cell_forward(
    cell: Cell,
    x: ArrayView2<f32>,
    hu: ArrayView2<f32>,
    state: ArrayView2<f32>,
    mut out: ArrayViewMut2<f32>,
    mut gates: ArrayViewMut2<f32>,
) {
    let units = state.ncols() / cell.state_blocks();
    // Each pass below is one loop over a block; the gates' activations go through
    // `activate`, so that the module holds one vectorised sigmoid and one tanh.
    for (b, (out, a)) in rows_mut(&mut out).zip(rows_mut(&mut gates)).enumerate() {
        let (x, hu, s) = (row(&x, b), row(&hu, b), row(&state, b));
        match cell {
            Cell::Simple => {
                add(x, hu, a);
                activate(Activation::Tanh, a);
                out.copy_from_slice(a);
            }
            Cell::Lstm => {
                add(x, hu, a);
                let ([_, c0], [i, f, g, o], [h, c]) =
                    (blocks(s, units), blocks_mut(a, units), blocks_mut(out, units));
                for gate in [&mut *i, &mut *f, &mut *o] {
                    activate(Activation::Sigmoid, gate);
                }
                activate(Activation::Tanh, g);
                for j in 0..units {
                    c[j] = f[j] * c0[j] + i[j] * g[j];
                }
                h.copy_from_slice(c);
                activate(Activation::Tanh, h);
                h.iter_mut().zip(&*o).for_each(|(h, o)| *h *= o);
            }
            Cell::Gru => {
                let (x, hu, [h0]) = (blocks::<3>(x, units), blocks::<3>(hu, units), blocks(s, units));
                let ([r, u, n], [h]) = (blocks_mut(a, units), blocks_mut(out, units));
                add(x[0], hu[0], r);
                add(x[1], hu[1], u);
                activate(Activation::Sigmoid, r);
                activate(Activation::Sigmoid, u);
                for j in 0..units {
                    n[j] = x[2][j] + r[j] * hu[2][j];
                }
                activate(Activation::Tanh, n);
                for j in 0..units {
                    // h' = (1 - u) n + u h = n + u (h - n)
                    h[j] = n[j] + u[j] * (h0[j] - n[j]);
                }
            }
        }
    }
}

/// `out = x + y`, elementwise.
fn add(x: &[f32], y: &[f32], out: &mut [f32]) {
    out.iter_mut().zip(x.iter().zip(y)).for_each(|(o, (x, y))| *o = x + y);
}

/// From the gradient `g` of the new state: the gradients of the step's pre-activations from
/// the input into `dx` and from the previous state into `dhu` (the same but for the GRU's new
/// gate, where `hu` is scaled by the reset gate), and of the previous state into `dstate`
/// (the part that does not go through `hu`: the LSTM's `c` and the GRU's `h`; zero for the
/// simple cell and the LSTM's `h`). Reads `out`, the new state, and
/// `gates`, the activations [`cell_forward`] saved. Every output is written whole; all are
/// contiguous matrices.
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
    let rows = rows_mut(&mut dx).zip(rows_mut(&mut dhu)).zip(rows_mut(&mut dstate));
    for (b, ((dx, dhu), ds)) in rows.enumerate() {
        let (g, a) = (row(&g, b), row(&gates, b));
        match cell {
            Cell::Simple => {
                let ([g], [h], [dz], [dhu], [ds]) = (
                    blocks(g, units),
                    blocks(a, units),
                    blocks_mut(dx, units),
                    blocks_mut(dhu, units),
                    blocks_mut(ds, units),
                );
                for j in 0..units {
                    dz[j] = g[j] * (1.0 - h[j] * h[j]);
                    (dhu[j], ds[j]) = (dz[j], 0.0);
                }
            }
            Cell::Lstm => {
                let ([gh, gc], [i, f, gg, o], [_, c0], [_, c]) = (
                    blocks(g, units),
                    blocks(a, units),
                    blocks(row(&state, b), units),
                    blocks(row(&out, b), units),
                );
                let ([di, df, dg, do_], [dh0, dc0]) = (blocks_mut(dx, units), blocks_mut(ds, units));
                // tanh c, in the block of `dstate` that ends as zero (it has no other use).
                dh0.copy_from_slice(c);
                activate(Activation::Tanh, dh0);
                for j in 0..units {
                    let tc = dh0[j];
                    let dc = gc[j] + gh[j] * o[j] * (1.0 - tc * tc);
                    di[j] = dc * gg[j] * i[j] * (1.0 - i[j]);
                    df[j] = dc * c0[j] * f[j] * (1.0 - f[j]);
                    dg[j] = dc * i[j] * (1.0 - gg[j] * gg[j]);
                    do_[j] = gh[j] * tc * o[j] * (1.0 - o[j]);
                    (dh0[j], dc0[j]) = (0.0, dc * f[j]);
                }
                dhu.copy_from_slice(dx);
            }
            Cell::Gru => {
                let ([g], [r, u, n], [hu_n], [h0]) = (
                    blocks(g, units),
                    blocks(a, units),
                    blocks(&row(&hu, b)[2 * units..], units),
                    blocks(row(&state, b), units),
                );
                let ([dr, du, dn], [dhu_r, dhu_u, dhu_n], [dh0]) =
                    (blocks_mut(dx, units), blocks_mut(dhu, units), blocks_mut(ds, units));
                for j in 0..units {
                    dn[j] = g[j] * (1.0 - u[j]) * (1.0 - n[j] * n[j]);
                    dr[j] = dn[j] * hu_n[j] * r[j] * (1.0 - r[j]);
                    du[j] = g[j] * (h0[j] - n[j]) * u[j] * (1.0 - u[j]);
                    (dhu_r[j], dhu_u[j], dhu_n[j]) = (dr[j], du[j], dn[j] * r[j]);
                    dh0[j] = g[j] * u[j];
                }
            }
        }
    }
}
