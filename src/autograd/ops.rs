//! The recorded ops: each forward method computes its value with the CPU kernels, into memory
//! from the tape's pool, and records the operands and saved state that its rule in
//! `backward.rs` needs.

use ndarray::{Axis, Ix2, Ix4, IxDyn, Slice};

use crate::backend::cpu::conv::{self, Window};
use crate::backend::cpu::norm;
use crate::backend::cpu::recurrent::{self, Cell};
use crate::backend::cpu::{self, Activation};
use crate::tensor::{self, row_major, Tensor};
use crate::{Error, Result};

use super::{ParamId, Tape, Var};

/// One recorded operation. Adding a variant without a backward rule does not compile.
pub(crate) enum Op {
    /// Data, or any value that needs no gradient.
    Input,
    /// A leaf whose gradient is kept.
    Variable,
    Param(ParamId),
    Add(Var, Var),
    Sub(Var, Var),
    Mul(Var, Var),
    Div(Var, Var),
    MatMul(Var, Var),
    Sum {
        x: Var,
        axis: usize,
    },
    Mean {
        x: Var,
        axis: usize,
    },
    Reshape(Var),
    Permute {
        x: Var,
        axes: Vec<usize>,
    },
    Activation {
        x: Var,
        act: Activation,
    },
    Softmax(Var),
    LogSoftmax(Var),
    /// Saves the softmax probabilities: the gradient is `(probs - onehot(labels)) / batch`.
    SoftmaxCrossEntropy {
        logits: Var,
        labels: Vec<u8>,
        probs: Tensor,
    },
    MeanSquaredError(Var, Var),
    /// Saves the mask, already scaled by `1 / (1 - rate)`.
    Dropout {
        x: Var,
        #[cfg_attr(not(feature = "webgpu"), allow(dead_code))]
        rate: f32,
        mask: Tensor,
    },
    Pow {
        x: Var,
        exponent: f32,
    },
    Slice {
        x: Var,
        axis: usize,
        start: usize,
    },
    Concat {
        inputs: Vec<Var>,
        axis: usize,
    },
    /// Saves the im2col matrix of the input, which both gradients need.
    Conv2d {
        x: Var,
        w: Var,
        window: Window,
        cols: Tensor,
    },
    /// Saves the flat input index of each output's maximum.
    MaxPool2d {
        x: Var,
        #[cfg_attr(not(feature = "webgpu"), allow(dead_code))]
        window: Window,
        argmax: Vec<usize>,
    },
    AvgPool2d {
        x: Var,
        window: Window,
    },
    /// Saves each row's mean and `1 / sqrt(var + eps)`, `[rows, 2]`.
    LayerNorm {
        x: Var,
        gamma: Var,
        beta: Var,
        #[cfg_attr(not(feature = "webgpu"), allow(dead_code))]
        eps: f32,
        stats: Tensor,
    },
    /// Batch normalisation on the batch's statistics; saves each channel's mean and biased
    /// variance, `[channels, 2]`.
    BatchNorm {
        x: Var,
        gamma: Var,
        beta: Var,
        eps: f32,
        stats: Tensor,
    },
    /// A running statistic moved toward the batch's that batch norm `norm` saved (`stat` 0
    /// the mean, 1 the variance, made unbiased by `unbias`): `(1 - momentum) old + momentum
    /// unbias stat`. It takes no gradient (see [`Tape::batch_norm`]).
    RunningAverage {
        // Read by the GPU's plans only: no backward rule differentiates a running statistic.
        #[cfg_attr(not(feature = "webgpu"), allow(dead_code))]
        norm: Var,
        #[cfg_attr(not(feature = "webgpu"), allow(dead_code))]
        old: Var,
        #[cfg_attr(not(feature = "webgpu"), allow(dead_code))]
        stat: usize,
        #[cfg_attr(not(feature = "webgpu"), allow(dead_code))]
        momentum: f32,
        #[cfg_attr(not(feature = "webgpu"), allow(dead_code))]
        unbias: f32,
    },
    /// One step of a recurrent cell (see [`Tape::recurrent_cell`]); saves the gates'
    /// activations `[batch, gates * units]`.
    RecurrentCell {
        cell: Cell,
        x: Var,
        step: usize,
        hu: Var,
        state: Var,
        gates: Tensor,
    },
}

impl Op {
    /// The values this op reads.
    #[cfg(feature = "webgpu")]
    pub(crate) fn operands(&self) -> Vec<Var> {
        match self {
            Op::Input | Op::Variable | Op::Param(_) => Vec::new(),
            Op::Add(a, b)
            | Op::Sub(a, b)
            | Op::Mul(a, b)
            | Op::Div(a, b)
            | Op::MatMul(a, b)
            | Op::MeanSquaredError(a, b) => vec![*a, *b],
            Op::Conv2d { x, w, .. } => vec![*x, *w],
            Op::Sum { x, .. }
            | Op::Mean { x, .. }
            | Op::Reshape(x)
            | Op::Permute { x, .. }
            | Op::Activation { x, .. }
            | Op::Softmax(x)
            | Op::LogSoftmax(x)
            | Op::SoftmaxCrossEntropy { logits: x, .. }
            | Op::Dropout { x, .. }
            | Op::Pow { x, .. }
            | Op::Slice { x, .. }
            | Op::MaxPool2d { x, .. }
            | Op::AvgPool2d { x, .. } => vec![*x],
            Op::Concat { inputs, .. } => inputs.clone(),
            Op::RecurrentCell { x, hu, state, .. } => vec![*x, *hu, *state],
            Op::LayerNorm { x, gamma, beta, .. } | Op::BatchNorm { x, gamma, beta, .. } => {
                vec![*x, *gamma, *beta]
            }
            Op::RunningAverage { norm, old, .. } => vec![*norm, *old],
        }
    }

    /// Gives the memory of the op's saved state to `pool`.
    pub(super) fn recycle(self, pool: &mut super::Pool) {
        match self {
            Op::SoftmaxCrossEntropy { probs: t, .. }
            | Op::Dropout { mask: t, .. }
            | Op::Conv2d { cols: t, .. }
            | Op::RecurrentCell { gates: t, .. }
            | Op::LayerNorm { stats: t, .. }
            | Op::BatchNorm { stats: t, .. } => pool.give(t),
            Op::MaxPool2d { argmax, .. } => pool.give_indices(argmax),
            _ => {}
        }
    }
}

impl Tape<'_> {
    /// `a + b`, broadcasting.
    ///
    /// # Errors
    /// When the shapes do not broadcast.
    pub fn add(&mut self, a: Var, b: Var) -> Result<Var> {
        let value = self.binary("add", a, b, cpu::Binary::Add)?;
        Ok(self.push(value, Op::Add(a, b), &[a, b]))
    }

    /// `a - b`, broadcasting.
    ///
    /// # Errors
    /// When the shapes do not broadcast.
    pub fn sub(&mut self, a: Var, b: Var) -> Result<Var> {
        let value = self.binary("sub", a, b, cpu::Binary::Sub)?;
        Ok(self.push(value, Op::Sub(a, b), &[a, b]))
    }

    /// `a * b` elementwise, broadcasting.
    ///
    /// # Errors
    /// When the shapes do not broadcast.
    pub fn mul(&mut self, a: Var, b: Var) -> Result<Var> {
        let value = self.binary("mul", a, b, cpu::Binary::Mul)?;
        Ok(self.push(value, Op::Mul(a, b), &[a, b]))
    }

    /// `a / b` elementwise, broadcasting.
    ///
    /// # Errors
    /// When the shapes do not broadcast.
    pub fn div(&mut self, a: Var, b: Var) -> Result<Var> {
        let value = self.binary("div", a, b, cpu::Binary::Div)?;
        Ok(self.push(value, Op::Div(a, b), &[a, b]))
    }

    fn binary(&self, name: &'static str, a: Var, b: Var, op: cpu::Binary) -> Result<Tensor> {
        let (x, y) = (self.value(a), self.value(b));
        // Checked first so the error names the op.
        let mut out = self.alloc(&tensor::broadcast_shape(name, x.shape(), y.shape())?);
        cpu::binary(x, y, op, &mut out);
        Ok(out)
    }

    /// The matrix product of `[m, k]` and `[k, n]`, or the batched product of `[b, m, k]` and
    /// `[b, k, n]` (one product per leading index, as attention's heads need).
    ///
    /// # Errors
    /// When the operands are not both matrices or both stacks of as many matrices, or their
    /// inner dimensions differ.
    #[inline(never)] // called from every layer; one copy of its loop over the batch
    pub fn matmul(&mut self, a: Var, b: Var) -> Result<Var> {
        let (x, y) = (self.value(a), self.value(b));
        let dims = product_dims(x.shape(), y.shape())?;
        let mut shape = x.shape().to_vec();
        *shape.last_mut().expect("two or three axes") = dims.n;
        let mut value = self.alloc(&shape);
        for i in 0..dims.batch {
            let (x, y) = (dims.operand(x, i), dims.operand(y, i));
            let out = dims.output(&mut value, i);
            cpu::matmul_into(&x, &y, out, false);
        }
        Ok(self.push(value, Op::MatMul(a, b), &[a, b]))
    }

    /// The sum over `axis`, which is removed from the shape.
    ///
    /// # Errors
    /// When `axis` is out of range.
    pub fn sum(&mut self, x: Var, axis: usize) -> Result<Var> {
        tensor::check_axis("sum", self.value(x).shape(), axis)?;
        let value = self.sum_axis(x, axis, 1.0);
        Ok(self.push(value, Op::Sum { x, axis }, &[x]))
    }

    /// The mean over `axis`, which is removed from the shape.
    ///
    /// # Errors
    /// When `axis` is out of range or empty.
    pub fn mean(&mut self, x: Var, axis: usize) -> Result<Var> {
        let shape = self.value(x).shape();
        tensor::check_axis("mean", shape, axis)?;
        if shape[axis] == 0 {
            return Err(Error::bad_shape("mean", shape, format!("axis {axis} is empty")));
        }
        let value = self.sum_axis(x, axis, 1.0 / shape[axis] as f32);
        Ok(self.push(value, Op::Mean { x, axis }, &[x]))
    }

    /// The sum over `axis` times `scale`, pairwise (see [`cpu::pairwise_sum`]).
    fn sum_axis(&self, x: Var, axis: usize, scale: f32) -> Tensor {
        let input = self.value(x);
        let mut shape = input.shape().to_vec();
        shape.remove(axis);
        let mut out = self.alloc(&shape);
        cpu::sum_axis(input, axis, scale, &mut out);
        out
    }

    /// The same elements in a new shape, read in row-major order.
    ///
    /// # Errors
    /// When the element counts differ.
    pub fn reshape(&mut self, x: Var, shape: &[usize]) -> Result<Var> {
        let input = self.value(x);
        if input.len() != shape.iter().product::<usize>() {
            return Err(Error::mismatch("reshape", input.shape(), shape));
        }
        let mut value = self.alloc(shape);
        copy_flat(input, &mut value);
        Ok(self.push(value, Op::Reshape(x), &[x]))
    }

    /// The axes reordered: output axis `i` is input axis `axes[i]`.
    ///
    /// # Errors
    /// When `axes` is not a permutation of the input's axes.
    pub fn permute(&mut self, x: Var, axes: &[usize]) -> Result<Var> {
        let input = self.value(x);
        let mut seen = vec![false; input.ndim()];
        let valid = axes.len() == input.ndim()
            && axes.iter().all(|&a| a < seen.len() && !std::mem::replace(&mut seen[a], true));
        if !valid {
            return Err(Error::bad_shape(
                "permute",
                input.shape(),
                format!("{axes:?} is not a permutation of its axes"),
            ));
        }
        let permuted = input.view().permuted_axes(IxDyn(axes));
        let mut value = self.alloc(permuted.shape());
        value.assign(&permuted);
        Ok(self.push(value, Op::Permute { x, axes: axes.to_vec() }, &[x]))
    }

    /// The matrix transpose, swapping the last two axes.
    ///
    /// # Errors
    /// When `x` has fewer than two axes.
    pub fn transpose(&mut self, x: Var) -> Result<Var> {
        let rank = self.value(x).ndim();
        if rank < 2 {
            return Err(Error::bad_shape("transpose", self.value(x).shape(), "needs two axes"));
        }
        let mut axes: Vec<usize> = (0..rank).collect();
        axes.swap(rank - 2, rank - 1);
        self.permute(x, &axes)
    }

    /// An elementwise activation.
    pub fn activation(&mut self, x: Var, act: Activation) -> Var {
        let mut value = self.alloc(self.value(x).shape());
        cpu::map(self.value(x), act, &mut value);
        self.push(value, Op::Activation { x, act }, &[x])
    }

    pub fn relu(&mut self, x: Var) -> Var {
        self.activation(x, Activation::Relu)
    }

    pub fn leaky_relu(&mut self, x: Var, alpha: f32) -> Var {
        self.activation(x, Activation::LeakyRelu { alpha })
    }

    pub fn sigmoid(&mut self, x: Var) -> Var {
        self.activation(x, Activation::Sigmoid)
    }

    pub fn tanh(&mut self, x: Var) -> Var {
        self.activation(x, Activation::Tanh)
    }

    pub fn gelu(&mut self, x: Var) -> Var {
        self.activation(x, Activation::Gelu)
    }

    /// Softmax over the last axis.
    ///
    /// # Errors
    /// When `x` is a scalar.
    pub fn softmax(&mut self, x: Var) -> Result<Var> {
        self.check_has_axis("softmax", x)?;
        let mut value = self.alloc(self.value(x).shape());
        cpu::softmax(self.value(x), &mut value);
        Ok(self.push(value, Op::Softmax(x), &[x]))
    }

    /// Log-softmax over the last axis.
    ///
    /// # Errors
    /// When `x` is a scalar.
    pub fn log_softmax(&mut self, x: Var) -> Result<Var> {
        self.check_has_axis("log_softmax", x)?;
        let mut value = self.alloc(self.value(x).shape());
        cpu::log_softmax(self.value(x), &mut value);
        Ok(self.push(value, Op::LogSoftmax(x), &[x]))
    }

    fn check_has_axis(&self, op: &'static str, x: Var) -> Result<()> {
        let shape = self.value(x).shape();
        if shape.is_empty() || shape.contains(&0) {
            return Err(Error::bad_shape(op, shape, "needs a non-empty last axis"));
        }
        Ok(())
    }

    /// The mean over the batch of `-log softmax(logits)[label]`, fused so the backward pass is
    /// one subtraction. Returns a scalar.
    ///
    /// # Errors
    /// When `logits` is not `[batch, classes]`, the label count differs from the batch, or a
    /// label is out of range.
    pub fn softmax_cross_entropy(&mut self, logits: Var, labels: &[u8]) -> Result<Var> {
        let mut probs = self.alloc(self.value(logits).shape());
        let loss = cpu::softmax_cross_entropy(self.value(logits), labels, &mut probs)?;
        let op = Op::SoftmaxCrossEntropy { logits, labels: labels.to_vec(), probs };
        Ok(self.push(tensor::scalar(loss), op, &[logits]))
    }

    /// The mean over all elements of `(a - b)^2`. Returns a scalar.
    ///
    /// # Errors
    /// When the shapes differ (no broadcasting, which would hide a wrong target shape).
    pub fn mean_squared_error(&mut self, a: Var, b: Var) -> Result<Var> {
        let (x, y) = (self.value(a), self.value(b));
        if x.shape() != y.shape() || x.is_empty() {
            return Err(Error::mismatch("mean_squared_error", x.shape(), y.shape()));
        }
        let sum: f32 = row_major(x).iter().zip(row_major(y).iter()).map(|(x, y)| (x - y) * (x - y)).sum();
        let loss = sum / x.len() as f32;
        Ok(self.push(tensor::scalar(loss), Op::MeanSquaredError(a, b), &[a, b]))
    }

    /// Zeroes each element with probability `rate` and scales the rest by `1 / (1 - rate)`, so
    /// the expected value is unchanged; `keep` draws the mask (true keeps an element).
    ///
    /// # Errors
    /// When `rate` is not in `[0, 1)`.
    pub fn dropout(&mut self, x: Var, rate: f32, mut keep: impl FnMut() -> bool) -> Result<Var> {
        self.dropout_drawn(x, rate, &mut keep)
    }

    /// [`Tape::dropout`] for any generator: one copy of its loops in the wasm module, whatever
    /// the callers' closures.
    fn dropout_drawn(&mut self, x: Var, rate: f32, keep: &mut dyn FnMut() -> bool) -> Result<Var> {
        if !(0.0..1.0).contains(&rate) {
            return Err(Error::invalid("dropout", format!("rate {rate} is not in [0, 1)")));
        }
        let scale = 1.0 / (1.0 - rate);
        let mut mask = self.alloc(self.value(x).shape());
        flat_mut(&mut mask).iter_mut().for_each(|m| *m = if keep() { scale } else { 0.0 });
        let mut value = self.alloc(self.value(x).shape());
        copy_flat(self.value(x), &mut value);
        flat_mut(&mut value).iter_mut().zip(flat_mut(&mut mask).iter()).for_each(|(v, m)| *v *= m);
        Ok(self.push(value, Op::Dropout { x, rate, mask }, &[x]))
    }
}

impl Tape<'_> {
    /// `x` raised elementwise to `exponent`; `pow(x, -0.5)` is the inverse square root that
    /// batch normalisation needs.
    pub fn pow(&mut self, x: Var, exponent: f32) -> Var {
        let mut value = self.alloc(self.value(x).shape());
        let input = row_major(self.value(x));
        flat_mut(&mut value).iter_mut().zip(input.iter()).for_each(|(v, x)| *v = x.powf(exponent));
        drop(input);
        self.push(value, Op::Pow { x, exponent }, &[x])
    }

    /// `len` entries of `x` along `axis` from `start` on; the axis is kept.
    ///
    /// # Errors
    /// When the range does not lie inside the axis.
    pub fn slice(&mut self, x: Var, axis: usize, start: usize, len: usize) -> Result<Var> {
        let shape = self.value(x).shape();
        tensor::check_axis("slice", shape, axis)?;
        if start + len > shape[axis] || len == 0 {
            return Err(Error::bad_shape(
                "slice",
                shape,
                format!("{start}..{} is not inside axis {axis}", start + len),
            ));
        }
        let part = self.value(x).slice_axis(Axis(axis), Slice::from(start..start + len));
        let mut value = self.alloc(part.shape());
        value.assign(&part);
        Ok(self.push(value, Op::Slice { x, axis, start }, &[x]))
    }

    /// The inputs joined along `axis`; every other axis must agree.
    ///
    /// # Errors
    /// When there is no input or the shapes differ off `axis`.
    pub fn concat(&mut self, inputs: &[Var], axis: usize) -> Result<Var> {
        let Some(&first) = inputs.first() else {
            return Err(Error::invalid("concat", "needs at least one input"));
        };
        let first_shape = self.value(first).shape();
        tensor::check_axis("concat", first_shape, axis)?;
        let fits = |s: &[usize]| {
            s.len() == first_shape.len()
                && s.iter().zip(first_shape).enumerate().all(|(i, (d, f))| i == axis || d == f)
        };
        if let Some(other) = inputs.iter().map(|&v| self.value(v).shape()).find(|s| !fits(s)) {
            return Err(Error::mismatch("concat", first_shape, other));
        }
        let mut shape = first_shape.to_vec();
        shape[axis] = inputs.iter().map(|&v| self.value(v).shape()[axis]).sum();
        let mut value = self.alloc(&shape);
        let mut start = 0;
        for &input in inputs {
            let part = self.value(input);
            let len = part.shape()[axis];
            value.slice_axis_mut(Axis(axis), Slice::from(start..start + len)).assign(part);
            start += len;
        }
        Ok(self.push(value, Op::Concat { inputs: inputs.to_vec(), axis }, inputs))
    }

    /// 2-d convolution (cross-correlation, as every framework computes it) of `x`
    /// `[batch, channels, h, w]` with `w` `[filters, channels, kh, kw]`, giving
    /// `[batch, filters, out_h, out_w]`. The window's kernel must match `w`.
    ///
    /// # Errors
    /// When the shapes do not fit each other or the window does not fit the input.
    pub fn conv2d(
        &mut self,
        x: Var,
        w: Var,
        stride: (usize, usize),
        padding: (usize, usize, usize, usize),
    ) -> Result<Var> {
        let input = as4("conv2d", self.value(x))?;
        let weight = as4("conv2d", self.value(w))?;
        let (n, c, h, wd) = input.dim();
        let (filters, wc, kh, kw) = weight.dim();
        if c != wc {
            return Err(Error::mismatch("conv2d", input.shape(), weight.shape()));
        }
        let window = Window { kernel: (kh, kw), stride, padding };
        let Some((oh, ow)) = window.output_size((h, wd)) else {
            return Err(Error::bad_shape(
                "conv2d",
                input.shape(),
                format!("a {kh}x{kw} kernel with stride {stride:?} and padding {padding:?} does not fit"),
            ));
        };
        let mut cols = self.alloc(&[n * oh * ow, c * kh * kw]);
        conv::im2col(&input, &window, matrix(&mut cols));
        let w_mat = weight.to_shape((filters, c * kh * kw)).expect("contiguous weights");
        // Rows (batch, y, x) by filters, then moved to [batch, filters, y, x].
        let mut rows = self.alloc(&[n, oh, ow, filters]);
        let rows_mat = rows.view_mut().into_shape_with_order((n * oh * ow, filters)).expect("contiguous");
        cpu::matmul_into(&cpu::as_matrix("conv2d", &cols)?, &w_mat.t(), rows_mat, false);
        let mut value = self.alloc(&[n, filters, oh, ow]);
        value.assign(&rows.view().permuted_axes(IxDyn(&[0, 3, 1, 2])));
        self.recycle(rows);
        Ok(self.push(value, Op::Conv2d { x, w, window, cols }, &[x, w]))
    }

    /// Max pooling over `kernel` windows moved by `stride`, without padding.
    ///
    /// # Errors
    /// When `x` is not `[batch, channels, h, w]` or the window does not fit.
    pub fn max_pool2d(&mut self, x: Var, kernel: (usize, usize), stride: (usize, usize)) -> Result<Var> {
        let (window, shape) = self.pool_window("max_pool2d", x, kernel, stride)?;
        let mut value = self.alloc(&shape);
        let mut argmax = self.pool.borrow_mut().take_indices(value.len());
        conv::max_pool(&as4("max_pool2d", self.value(x))?, &window, as4_mut(&mut value), &mut argmax);
        Ok(self.push(value, Op::MaxPool2d { x, window, argmax }, &[x]))
    }

    /// Average pooling over `kernel` windows moved by `stride`, without padding.
    ///
    /// # Errors
    /// When `x` is not `[batch, channels, h, w]` or the window does not fit.
    pub fn avg_pool2d(&mut self, x: Var, kernel: (usize, usize), stride: (usize, usize)) -> Result<Var> {
        let (window, shape) = self.pool_window("avg_pool2d", x, kernel, stride)?;
        let mut value = self.alloc(&shape);
        conv::avg_pool(&as4("avg_pool2d", self.value(x))?, &window, as4_mut(&mut value));
        Ok(self.push(value, Op::AvgPool2d { x, window }, &[x]))
    }

    /// Layer normalisation of `x` `[.., d]` over its last axis (see [`norm`]), scaled by
    /// `gamma` `[d]` and shifted by `beta` `[d]`.
    ///
    /// # Errors
    /// When `x` has no axis, or `gamma` or `beta` is not `[d]`.
    pub fn layer_norm(&mut self, x: Var, gamma: Var, beta: Var, eps: f32) -> Result<Var> {
        let shape = self.value(x).shape();
        let Some(&d) = shape.last() else {
            return Err(Error::bad_shape("layer_norm", shape, "needs an axis to normalise"));
        };
        for p in [gamma, beta] {
            if self.value(p).shape() != [d] {
                return Err(Error::mismatch("layer_norm", shape, self.value(p).shape()));
            }
        }
        let rows = self.value(x).len() / d.max(1);
        let mut value = self.alloc(shape);
        let mut stats = self.alloc(&[rows, 2]);
        let (g, b) = (self.value(gamma), self.value(beta));
        let params = (g.as_slice().expect("contiguous"), b.as_slice().expect("contiguous"));
        let out = value.view_mut().into_shape_with_order((rows, d)).expect("contiguous");
        norm::layer_norm_forward(as_rows(self.value(x), d), params, eps, out, matrix(&mut stats));
        Ok(self.push(value, Op::LayerNorm { x, gamma, beta, eps, stats }, &[x, gamma, beta]))
    }

    /// Batch normalisation of `x` `[batch, channels]` or `[batch, channels, h, w]` on the
    /// batch's statistics (see [`norm::batch_norm_forward`]), scaled by `gamma` and shifted by
    /// `beta` (`[channels]` each). With `running`, the running mean and variance are moved
    /// toward the batch's (the variance unbiased) and their new values recorded as buffer
    /// updates ([`Tape::update_buffer`]); those take no gradient.
    ///
    /// # Errors
    /// When the shapes do not fit, or a channel has fewer than two values to take statistics
    /// of.
    pub fn batch_norm(
        &mut self,
        x: Var,
        (gamma, beta): (Var, Var),
        eps: f32,
        running: Option<RunningStatistics>,
    ) -> Result<Var> {
        let shape = self.value(x).shape().to_vec();
        if shape.len() < 2 {
            return Err(Error::bad_shape("batch_norm", &shape, "expects [batch, channels, ..]"));
        }
        let (batch, channels) = (shape[0], shape[1]);
        let positions = shape[2..].iter().product::<usize>();
        for p in [gamma, beta] {
            if self.value(p).shape() != [channels] {
                return Err(Error::mismatch("batch_norm", &shape, self.value(p).shape()));
            }
        }
        let count = batch * positions;
        if count < 2 {
            // As PyTorch refuses it: the variance of one value is 0, so every output would be
            // beta, and nothing would train.
            return Err(Error::invalid(
                "batch_norm",
                format!("training needs more than one value per channel, and a batch of {shape:?} gives {count}; use a batch size of 2 or more"),
            ));
        }
        let mut value = self.alloc(&shape);
        let mut stats = self.alloc(&[channels, 2]);
        let (g, b) = (self.value(gamma), self.value(beta));
        let params = (g.as_slice().expect("contiguous"), b.as_slice().expect("contiguous"));
        let out = value.view_mut().into_shape_with_order((batch, channels, positions)).expect("contiguous");
        norm::batch_norm_forward(as_channels(self.value(x)), params, eps, out, matrix(&mut stats));
        // The new running values, from the statistics before the op keeps them.
        let unbias = count as f32 / (count as f32 - 1.0);
        let updates = running.map(|r| {
            [(r.mean, 0, 1.0), (r.var, 1, unbias)].map(|(id, stat, unbias)| {
                let old = self.value_of_param(id);
                let mut new = self.alloc(old.shape());
                for (c, (n, &o)) in new.iter_mut().zip(old.iter()).enumerate() {
                    *n = o * (1.0 - r.momentum) + stats[[c, stat]] * unbias * r.momentum;
                }
                (id, stat, unbias, new)
            })
        });
        let norm = self.push(value, Op::BatchNorm { x, gamma, beta, eps, stats }, &[x, gamma, beta]);
        if let (Some(r), Some(updates)) = (running, updates) {
            for (id, stat, unbias, new) in updates {
                let old = self.param(id);
                let op = Op::RunningAverage { norm, old, stat, momentum: r.momentum, unbias };
                // No operand listed: nothing differentiates a running statistic.
                let value = self.push(new, op, &[]);
                self.update_buffer(id, value);
            }
        }
        Ok(norm)
    }

    /// One time step of a recurrent `cell` (see [`recurrent`]): `x` `[batch, time, gates *
    /// units]` holds every step's input projections (bias included), of which step `step` is
    /// read in place; `hu` `[batch, gates * units]` is the previous state's product with the
    /// recurrent weights; `state` the previous state, `[batch, units]` (`h`) or for the LSTM
    /// `[batch, 2 * units]` (`h` then `c`). Returns the new state, shaped like `state`, and
    /// with `keep_gates` the gates' activations `[batch, gates * units]` as a value that needs
    /// no gradient (for the page's inside views).
    ///
    /// # Errors
    /// When the shapes do not fit the cell or each other, or `step` is past the end.
    pub fn recurrent_cell(
        &mut self,
        cell: Cell,
        (x, step): (Var, usize),
        hu: Var,
        state: Var,
        keep_gates: bool,
    ) -> Result<(Var, Option<Var>)> {
        let name = cell.name();
        let (xs, hs, ss) = (self.value(x).shape(), self.value(hu).shape(), self.value(state).shape());
        let [batch, time, width] = xs[..] else {
            return Err(Error::bad_shape(name, xs, "expects input projections [batch, time, gates * units]"));
        };
        let fits = ss.len() == 2 && ss[1] % cell.state_blocks() == 0 && ss[0] == batch;
        let units = if fits { ss[1] / cell.state_blocks() } else { 0 };
        if !fits || width != cell.gates() * units {
            return Err(Error::mismatch(name, xs, ss));
        }
        if hs != [batch, width] {
            return Err(Error::mismatch(name, xs, hs));
        }
        if step >= time {
            return Err(Error::bad_shape(name, xs, format!("step {step} is past the last of {time}")));
        }
        let mut value = self.alloc(ss);
        let mut gates = self.alloc(&[batch, width]);
        let input = self.value(x).index_axis(Axis(1), step).into_dimensionality::<Ix2>();
        let input = input.expect("checked to have three axes");
        recurrent::cell_forward(
            cell,
            input,
            matrix_view(self.value(hu)),
            matrix_view(self.value(state)),
            matrix(&mut value),
            matrix(&mut gates),
        );
        let kept = keep_gates.then(|| gates.clone());
        let out = self.push(value, Op::RecurrentCell { cell, x, step, hu, state, gates }, &[x, hu, state]);
        Ok((out, kept.map(|g| self.input(g))))
    }

    /// The window over `x`, and the output's shape `[batch, channels, out_h, out_w]`.
    fn pool_window(
        &self,
        op: &'static str,
        x: Var,
        kernel: (usize, usize),
        stride: (usize, usize),
    ) -> Result<(Window, [usize; 4])> {
        let input = as4(op, self.value(x))?;
        let window = Window { kernel, stride, padding: (0, 0, 0, 0) };
        let (n, c, h, w) = input.dim();
        match window.output_size((h, w)) {
            Some((oh, ow)) if kernel.0 > 0 && kernel.1 > 0 => Ok((window, [n, c, oh, ow])),
            _ => Err(Error::bad_shape(
                op,
                input.shape(),
                format!("a {kernel:?} window with stride {stride:?} does not fit"),
            )),
        }
    }
}

/// Which running statistics a training batch norm moves, and by how much (see
/// [`Tape::batch_norm`]).
#[derive(Clone, Copy, Debug)]
pub struct RunningStatistics {
    pub mean: ParamId,
    pub var: ParamId,
    /// The weight of the batch's statistics, in `(0, 1]`.
    pub momentum: f32,
}

/// The sizes of a (batched) matrix product `[batch, m, k] @ [batch, k, n]`; plain matrices
/// are a batch of one.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(feature = "webgpu"), allow(dead_code))] // m and k: read by the GPU's plans
pub(crate) struct ProductDims {
    pub batch: usize,
    pub m: usize,
    pub k: usize,
    pub n: usize,
}

/// The product's sizes, or an error naming both shapes.
pub(crate) fn product_dims(a: &[usize], b: &[usize]) -> Result<ProductDims> {
    let dims = match (a, b) {
        (&[m, k], &[k2, n]) if k == k2 => ProductDims { batch: 1, m, k, n },
        (&[batch, m, k], &[batch2, k2, n]) if k == k2 && batch == batch2 => ProductDims { batch, m, k, n },
        _ => return Err(Error::mismatch("matmul", a, b)),
    };
    Ok(dims)
}

impl ProductDims {
    /// Matrix `i` of a stack (the tensor itself for a plain matrix).
    pub fn operand<'a>(&self, t: &'a Tensor, i: usize) -> ndarray::ArrayView2<'a, f32> {
        let t = if t.ndim() == 3 { t.index_axis(Axis(0), i) } else { t.view() };
        t.into_dimensionality::<Ix2>().expect("checked by product_dims")
    }

    /// Matrix `i` of a stack, to write into.
    pub fn output<'a>(&self, t: &'a mut Tensor, i: usize) -> ndarray::ArrayViewMut2<'a, f32> {
        let t = if t.ndim() == 3 { t.index_axis_mut(Axis(0), i) } else { t.view_mut() };
        t.into_dimensionality::<Ix2>().expect("checked by product_dims")
    }
}

pub(crate) fn as4<'a>(op: &'static str, t: &'a Tensor) -> Result<ndarray::ArrayView4<'a, f32>> {
    t.view()
        .into_dimensionality::<Ix4>()
        .map_err(|_| Error::bad_shape(op, t.shape(), "expects [batch, channels, height, width]"))
}

/// A tensor the tape made (contiguous, two axes) as a matrix to write into.
pub(crate) fn matrix(t: &mut Tensor) -> ndarray::ArrayViewMut2<'_, f32> {
    t.view_mut().into_dimensionality::<Ix2>().expect("a matrix made by the tape")
}

/// A tensor the tape made (contiguous, two axes or more) as `[batch, channels, positions]`.
pub(crate) fn as_channels(t: &Tensor) -> ndarray::ArrayView3<'_, f32> {
    let s = t.shape();
    let dims = (s[0], s[1], s[2..].iter().product::<usize>());
    t.view().into_shape_with_order(dims).expect("contiguous")
}

/// A tensor the tape made (contiguous) as rows of `d` elements.
pub(crate) fn as_rows(t: &Tensor, d: usize) -> ndarray::ArrayView2<'_, f32> {
    t.view().into_shape_with_order((t.len() / d.max(1), d)).expect("contiguous")
}

/// A tensor the tape made (two axes) as a matrix to read.
pub(crate) fn matrix_view(t: &Tensor) -> ndarray::ArrayView2<'_, f32> {
    t.view().into_dimensionality::<Ix2>().expect("a matrix made by the tape")
}

/// A tensor the tape made (contiguous, four axes) as `[batch, channels, h, w]` to write into.
pub(crate) fn as4_mut(t: &mut Tensor) -> ndarray::ArrayViewMut4<'_, f32> {
    t.view_mut().into_dimensionality::<Ix4>().expect("a 4-d tensor made by the tape")
}

/// A tensor the tape made (contiguous), as a slice to write.
pub(crate) fn flat_mut(t: &mut Tensor) -> &mut [f32] {
    t.as_slice_mut().expect("tensors made by the tape are contiguous")
}

/// Copies the elements of `from` into `to`, in row-major order, whatever their shapes.
pub(crate) fn copy_flat(from: &Tensor, to: &mut Tensor) {
    let to = to.as_slice_mut().expect("tensors made by the tape are contiguous");
    match from.as_slice() {
        Some(from) => to.copy_from_slice(from),
        None => to.iter_mut().zip(from.iter()).for_each(|(t, &f)| *t = f),
    }
}
