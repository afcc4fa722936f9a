//! The recorded ops: each forward method computes its value with the CPU kernels, into memory
//! from the tape's pool, and records the operands and saved state that its rule in
//! `backward.rs` needs.

use ndarray::{Axis, Ix2, Ix4, IxDyn, Slice};

use crate::backend::cpu::conv::{self, Window};
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
        }
    }

    /// Gives the memory of the op's saved state to `pool`.
    pub(super) fn recycle(self, pool: &mut super::Pool) {
        match self {
            Op::SoftmaxCrossEntropy { probs: t, .. }
            | Op::Dropout { mask: t, .. }
            | Op::Conv2d { cols: t, .. } => pool.give(t),
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
