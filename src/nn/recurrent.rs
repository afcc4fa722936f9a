//! Recurrent layers: per time step, the previous state's product with the recurrent weights
//! and one [`Tape::recurrent_cell`] op for the rest, so that backpropagation through time is
//! the tape's ordinary backward pass.
//!
//! Weights: `w` `[features, gates * units]` for the inputs, `u` `[units, gates * units]` for
//! the previous state, biases `[gates * units]`; gates side by side in the order given on
//! each cell. Inputs are `[batch, time, features]`; the state starts at zero.

use crate::autograd::{ParamId, Tape, Var};
pub use crate::backend::cpu::recurrent::Cell;
use crate::Result;

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
    /// `[batch, units]`.
    pub hidden: Var,
    /// The gates' activations side by side in the cell's order, `[batch, gates * units]`
    /// (the simple cell's one "gate" is its output).
    pub gates: Var,
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
        let recurrent_bias = self.recurrent_bias.map(|b| tape.param(b));

        let mut state = tape.zeros(&[batch, self.cell.state_blocks() * h_units]);
        let mut h = match self.cell {
            Cell::Lstm => tape.zeros(&[batch, h_units]),
            Cell::Simple | Cell::Gru => state,
        };
        let mut outputs = Vec::with_capacity(if self.return_sequences { time } else { 0 });
        for t in 0..time {
            let mut hu = tape.matmul(h, u)?;
            if let Some(b) = recurrent_bias {
                hu = tape.add(hu, b)?;
            }
            let (next, gates) = tape.recurrent_cell(self.cell, (projected, t), hu, state, trace.is_some())?;
            state = next;
            h = match self.cell {
                Cell::Lstm => tape.slice(state, 1, 0, h_units)?,
                Cell::Simple | Cell::Gru => state,
            };
            if let (Some(trace), Some(gates)) = (trace.as_deref_mut(), gates) {
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
