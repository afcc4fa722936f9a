//! The Transformer's layers, built from the tape's ops (matrix products on stacked heads,
//! softmax over the last axis, reshapes and permutes, layer normalisation), so that their
//! gradients are the tape's ordinary backward pass, as in candle's and burn's ViT: patch
//! embedding, layer normalisation and multi-head self-attention.

use crate::autograd::{ParamId, Tape, Var};
use crate::Result;

/// `(x - mean) / sqrt(var + eps) * gamma + beta` over the last axis.
pub(crate) struct LayerNorm {
    pub gamma: ParamId,
    pub beta: ParamId,
    pub eps: f32,
}

impl LayerNorm {
    /// Normalises `x` `[batch, .., d]` over its last axis; the statistics are per sample (per
    /// token), so training and inference compute the same.
    pub fn forward(&self, tape: &mut Tape, x: Var) -> Result<Var> {
        let gamma = tape.param(self.gamma);
        let beta = tape.param(self.beta);
        tape.layer_norm(x, gamma, beta, self.eps)
    }
}

/// A projection's weight `[inputs, outputs]` and bias `[outputs]`.
#[derive(Clone, Copy)]
pub(crate) struct Projection {
    pub weight: ParamId,
    pub bias: ParamId,
}

impl Projection {
    /// `x W + b` for `x` `[rows, inputs]`.
    fn forward(self, tape: &mut Tape, x: Var) -> Result<Var> {
        let w = tape.param(self.weight);
        let y = tape.matmul(x, w)?;
        let b = tape.param(self.bias);
        tape.add(y, b)
    }
}

/// Multi-head self-attention: `query`, `key` and `value` project `d` to `heads * key_size`,
/// `output` projects the concatenated heads back to `d`.
pub(crate) struct MultiHeadAttention {
    pub heads: usize,
    pub key_size: usize,
    pub dropout: f32,
    pub query: Projection,
    pub key: Projection,
    pub value: Projection,
    pub output: Projection,
}

/// What an attention layer computed besides its output: its weights
/// `[batch * heads, tokens, tokens]` (row: a query token, column: a key token), the very values
/// the forward pass used, for the page's attention view.
pub struct AttentionTrace {
    pub heads: usize,
    pub weights: Var,
}

impl MultiHeadAttention {
    /// Attends over `x` `[batch, tokens, d]`, returning `[batch, tokens, d]`. `drop` draws the
    /// dropout mask of the attention weights (true keeps one) in training, and is `None` in
    /// inference.
    pub fn forward(
        &self,
        tape: &mut Tape,
        x: Var,
        drop: Option<&mut dyn FnMut() -> bool>,
    ) -> Result<(Var, AttentionTrace)> {
        let shape = tape.value(x).shape().to_vec();
        let (batch, tokens, d) = (shape[0], shape[1], shape[2]);
        let (h, k) = (self.heads, self.key_size);
        let flat = tape.reshape(x, &[batch * tokens, d])?;
        // Each projection as [batch, tokens, heads, key_size], its heads moved ahead of the
        // tokens and stacked: [batch * heads, tokens, key_size]; the keys transposed on the way
        // to [batch * heads, key_size, tokens].
        let heads = |tape: &mut Tape, projection: Projection, axes: [usize; 4]| -> Result<Var> {
            let y = projection.forward(tape, flat)?;
            let y = tape.reshape(y, &[batch, tokens, h, k])?;
            let y = tape.permute(y, &axes)?;
            let stacked: Vec<usize> =
                std::iter::once(batch * h).chain(tape.value(y).shape()[2..].iter().copied()).collect();
            tape.reshape(y, &stacked)
        };
        let q = heads(tape, self.query, [0, 2, 1, 3])?;
        let kt = heads(tape, self.key, [0, 2, 3, 1])?;
        let v = heads(tape, self.value, [0, 2, 1, 3])?;
        let scores = tape.matmul(q, kt)?;
        let scale = tape.input(crate::tensor::scalar(1.0 / (k as f32).sqrt()));
        let scores = tape.mul(scores, scale)?;
        let weights = tape.softmax(scores)?;
        let used = match drop {
            Some(keep) if self.dropout > 0.0 => tape.dropout(weights, self.dropout, keep)?,
            _ => weights,
        };
        // [batch * heads, tokens, key_size] back to [batch * tokens, heads * key_size].
        let context = tape.matmul(used, v)?;
        let context = tape.reshape(context, &[batch, h, tokens, k])?;
        let context = tape.permute(context, &[0, 2, 1, 3])?;
        let context = tape.reshape(context, &[batch * tokens, h * k])?;
        let y = self.output.forward(tape, context)?;
        let y = tape.reshape(y, &[batch, tokens, d])?;
        Ok((y, AttentionTrace { heads: h, weights }))
    }
}

/// Non-overlapping `p x p` patches projected to `d` (a convolution of stride `p`), plus a
/// learnt position embedding `[tokens, d]`.
pub(crate) struct PatchEmbed {
    pub patch_size: usize,
    /// `[d, channels, p, p]`.
    pub weight: ParamId,
    pub bias: ParamId,
    /// `[tokens, d]`.
    pub position: ParamId,
}

impl PatchEmbed {
    /// `x` `[batch, channels, h, w]` to tokens `[batch, (h / p) * (w / p), d]`, row by row.
    pub fn forward(&self, tape: &mut Tape, x: Var) -> Result<Var> {
        let p = self.patch_size;
        let w = tape.param(self.weight);
        let y = tape.conv2d(x, w, (p, p), (0, 0, 0, 0))?;
        let shape = tape.value(y).shape().to_vec();
        let (batch, d, tokens) = (shape[0], shape[1], shape[2] * shape[3]);
        let y = tape.reshape(y, &[batch, d, tokens])?;
        let y = tape.permute(y, &[0, 2, 1])?;
        // The bias [d] and the positions [tokens, d] broadcast over the batch.
        let b = tape.param(self.bias);
        let y = tape.add(y, b)?;
        let position = tape.param(self.position);
        tape.add(y, position)
    }
}
