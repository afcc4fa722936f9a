//! Recurrent layers built from the tensor ops alone, so that backpropagation through time
//! is the tape's ordinary backward pass and needs no rule of its own.
//!
//! Weights: `w` `[features, gates * units]` for the inputs, `u` `[units, gates * units]` for
//! the previous state, biases `[gates * units]`; gates side by side in the order given on
//! each cell. Inputs are `[batch, time, features]`; the state starts at zero.

use crate::autograd::{ParamId, Tape, Var};
use crate::Result;

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
}

/// A recurrent layer's parameters. `recurrent_bias` exists for the GRU only, whose new-gate
/// bias on the state side sits inside the reset product.
#[derive(Clone, Copy, Debug)]
pub struct Recurrent {
    pub cell: Cell,
    pub units: usize,
    pub return_sequences: bool,
    pub w: ParamId,
    pub u: ParamId,
    pub bias: ParamId,
    pub recurrent_bias: Option<ParamId>,
}

/// What one time step computed, for the inside views of the page.
pub struct StepTrace {
    pub hidden: Var,
    /// The gate activations in the cell's order (empty for the simple cell).
    pub gates: Vec<Var>,
}

impl Recurrent {
    /// Runs the layer over `x` `[batch, time, features]`; returns `[batch, units]` or, with
    /// `return_sequences`, `[batch, time, units]`. `trace` receives every step.
    ///
    /// # Errors
    /// When `x` does not fit the weights.
    pub fn forward(&self, tape: &mut Tape, x: Var, mut trace: Option<&mut Vec<StepTrace>>) -> Result<Var> {
        let shape = tape.value(x).shape().to_vec();
        let (batch, time, features) = (shape[0], shape[1], shape[2]);
        let h_units = self.units;
        // The input products of all time steps in one matrix product.
        let flat = tape.reshape(x, &[batch * time, features])?;
        let w = tape.param(self.w);
        let projected = tape.matmul(flat, w)?;
        let b = tape.param(self.bias);
        let projected = tape.add(projected, b)?;
        let projected = tape.reshape(projected, &[batch, time, self.cell.gates() * h_units])?;
        let u = tape.param(self.u);

        let mut h = tape.zeros(&[batch, h_units]);
        let mut c = tape.zeros(&[batch, h_units]);
        let mut outputs = Vec::with_capacity(if self.return_sequences { time } else { 0 });
        for t in 0..time {
            let xt = tape.slice(projected, 1, t, 1)?;
            let xt = tape.reshape(xt, &[batch, self.cell.gates() * h_units])?;
            let hu = tape.matmul(h, u)?;
            let gate = |tape: &mut Tape, v: Var, k: usize| tape.slice(v, 1, k * h_units, h_units);
            let gates = match self.cell {
                Cell::Simple => {
                    let z = tape.add(xt, hu)?;
                    h = tape.tanh(z);
                    Vec::new()
                }
                Cell::Lstm => {
                    let z = tape.add(xt, hu)?;
                    let (zi, zf, zg, zo) =
                        (gate(tape, z, 0)?, gate(tape, z, 1)?, gate(tape, z, 2)?, gate(tape, z, 3)?);
                    let (i, f, g, o) = (tape.sigmoid(zi), tape.sigmoid(zf), tape.tanh(zg), tape.sigmoid(zo));
                    let keep = tape.mul(f, c)?;
                    let write = tape.mul(i, g)?;
                    c = tape.add(keep, write)?;
                    let squashed = tape.tanh(c);
                    h = tape.mul(o, squashed)?;
                    vec![i, f, g, o]
                }
                Cell::Gru => {
                    let bh = tape.param(self.recurrent_bias.expect("a GRU has a recurrent bias"));
                    let hu = tape.add(hu, bh)?;
                    let (xr, xz, xn) = (gate(tape, xt, 0)?, gate(tape, xt, 1)?, gate(tape, xt, 2)?);
                    let (hr, hz, hn) = (gate(tape, hu, 0)?, gate(tape, hu, 1)?, gate(tape, hu, 2)?);
                    let r = tape.add(xr, hr)?;
                    let r = tape.sigmoid(r);
                    let z = tape.add(xz, hz)?;
                    let z = tape.sigmoid(z);
                    let reset = tape.mul(r, hn)?;
                    let n = tape.add(xn, reset)?;
                    let n = tape.tanh(n);
                    // h' = (1 - z) n + z h = n + z (h - n)
                    let delta = tape.sub(h, n)?;
                    let carried = tape.mul(z, delta)?;
                    h = tape.add(n, carried)?;
                    vec![r, z, n]
                }
            };
            if let Some(trace) = trace.as_deref_mut() {
                trace.push(StepTrace { hidden: h, gates });
            }
            if self.return_sequences {
                outputs.push(tape.reshape(h, &[batch, 1, h_units])?);
            }
        }
        if self.return_sequences {
            tape.concat(&outputs, 1)
        } else {
            Ok(h)
        }
    }
}
