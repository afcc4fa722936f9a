//! The recorded ops: each forward method computes its value with the CPU kernels and records
//! the operands and saved state that its rule in `backward.rs` needs.

use ndarray::{Array2, Axis, Ix4, IxDyn, Slice};

use crate::backend::cpu::conv::{self, Window};
use crate::backend::cpu::{self, Activation};
use crate::tensor::{self, Tensor};
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
        probs: Array2<f32>,
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
        cols: Array2<f32>,
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

impl Tape<'_> {
    /// `a + b`, broadcasting.
    ///
    /// # Errors
    /// When the shapes do not broadcast.
    pub fn add(&mut self, a: Var, b: Var) -> Result<Var> {
        let value = self.binary("add", a, b, |x, y| x + y)?;
        Ok(self.push(value, Op::Add(a, b), &[a, b]))
    }

    /// `a - b`, broadcasting.
    ///
    /// # Errors
    /// When the shapes do not broadcast.
    pub fn sub(&mut self, a: Var, b: Var) -> Result<Var> {
        let value = self.binary("sub", a, b, |x, y| x - y)?;
        Ok(self.push(value, Op::Sub(a, b), &[a, b]))
    }

    /// `a * b` elementwise, broadcasting.
    ///
    /// # Errors
    /// When the shapes do not broadcast.
    pub fn mul(&mut self, a: Var, b: Var) -> Result<Var> {
        let value = self.binary("mul", a, b, |x, y| x * y)?;
        Ok(self.push(value, Op::Mul(a, b), &[a, b]))
    }

    /// `a / b` elementwise, broadcasting.
    ///
    /// # Errors
    /// When the shapes do not broadcast.
    pub fn div(&mut self, a: Var, b: Var) -> Result<Var> {
        let value = self.binary("div", a, b, |x, y| x / y)?;
        Ok(self.push(value, Op::Div(a, b), &[a, b]))
    }

    fn binary(
        &self,
        op: &'static str,
        a: Var,
        b: Var,
        f: impl Fn(&Tensor, &Tensor) -> Tensor,
    ) -> Result<Tensor> {
        let (x, y) = (self.value(a), self.value(b));
        // Checked first so the error names the op; ndarray would only panic.
        tensor::broadcast_shape(op, x.shape(), y.shape())?;
        Ok(f(x, y))
    }

    /// The matrix product of `[m, k]` and `[k, n]`.
    ///
    /// # Errors
    /// When either operand is not a matrix or the inner dimensions differ.
    pub fn matmul(&mut self, a: Var, b: Var) -> Result<Var> {
        let x = cpu::as_matrix("matmul", self.value(a))?;
        let y = cpu::as_matrix("matmul", self.value(b))?;
        if x.ncols() != y.nrows() {
            return Err(Error::mismatch("matmul", x.shape(), y.shape()));
        }
        let value = cpu::matmul(&x, &y).into_dyn();
        Ok(self.push(value, Op::MatMul(a, b), &[a, b]))
    }

    /// The sum over `axis`, which is removed from the shape.
    ///
    /// # Errors
    /// When `axis` is out of range.
    pub fn sum(&mut self, x: Var, axis: usize) -> Result<Var> {
        tensor::check_axis("sum", self.value(x).shape(), axis)?;
        let value = self.value(x).sum_axis(Axis(axis));
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
        let value = self.value(x).mean_axis(Axis(axis)).expect("axis checked non-empty");
        Ok(self.push(value, Op::Mean { x, axis }, &[x]))
    }

    /// The same elements in a new shape, read in row-major order.
    ///
    /// # Errors
    /// When the element counts differ.
    pub fn reshape(&mut self, x: Var, shape: &[usize]) -> Result<Var> {
        let value = reshape(self.value(x), shape)
            .ok_or_else(|| Error::mismatch("reshape", self.value(x).shape(), shape))?;
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
        let value = input.clone().permuted_axes(IxDyn(axes)).as_standard_layout().into_owned();
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
        let value = cpu::map(self.value(x), act);
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

    /// Softmax over the last axis.
    ///
    /// # Errors
    /// When `x` is a scalar.
    pub fn softmax(&mut self, x: Var) -> Result<Var> {
        self.check_has_axis("softmax", x)?;
        let value = cpu::softmax(self.value(x));
        Ok(self.push(value, Op::Softmax(x), &[x]))
    }

    /// Log-softmax over the last axis.
    ///
    /// # Errors
    /// When `x` is a scalar.
    pub fn log_softmax(&mut self, x: Var) -> Result<Var> {
        self.check_has_axis("log_softmax", x)?;
        let value = cpu::log_softmax(self.value(x));
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
        let (loss, probs) = cpu::softmax_cross_entropy(self.value(logits), labels)?;
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
        let loss = (x - y).mapv(|d| d * d).mean().expect("non-empty");
        Ok(self.push(tensor::scalar(loss), Op::MeanSquaredError(a, b), &[a, b]))
    }

    /// Zeroes each element with probability `rate` and scales the rest by `1 / (1 - rate)`, so
    /// the expected value is unchanged; `keep` draws the mask (true keeps an element).
    ///
    /// # Errors
    /// When `rate` is not in `[0, 1)`.
    pub fn dropout(&mut self, x: Var, rate: f32, mut keep: impl FnMut() -> bool) -> Result<Var> {
        if !(0.0..1.0).contains(&rate) {
            return Err(Error::invalid("dropout", format!("rate {rate} is not in [0, 1)")));
        }
        let scale = 1.0 / (1.0 - rate);
        let mask = self.value(x).mapv(|_| if keep() { scale } else { 0.0 });
        let value = self.value(x) * &mask;
        Ok(self.push(value, Op::Dropout { x, rate, mask }, &[x]))
    }
}

impl Tape<'_> {
    /// `x` raised elementwise to `exponent`; `pow(x, -0.5)` is the inverse square root that
    /// batch normalisation needs.
    pub fn pow(&mut self, x: Var, exponent: f32) -> Var {
        let value = self.value(x).mapv(|v| v.powf(exponent));
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
        let value = self.value(x).slice_axis(Axis(axis), Slice::from(start..start + len)).to_owned();
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
        tensor::check_axis("concat", self.value(first).shape(), axis)?;
        let views: Vec<_> = inputs.iter().map(|&v| self.value(v).view()).collect();
        let value = ndarray::concatenate(Axis(axis), &views).map_err(|_| {
            let other = inputs
                .iter()
                .map(|&v| self.value(v).shape())
                .find(|s| {
                    s.len() != views[0].ndim()
                        || s.iter().enumerate().any(|(i, &d)| i != axis && d != views[0].shape()[i])
                })
                .unwrap_or(views[0].shape());
            Error::mismatch("concat", views[0].shape(), other)
        })?;
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
        let cols = conv::im2col(&input, &window);
        let w_mat = weight.to_shape((filters, c * kh * kw)).expect("contiguous weights");
        let out = cpu::matmul(&cols.view(), &w_mat.t());
        let value = out
            .into_shape_with_order((n, oh, ow, filters))
            .expect("rows are (batch, y, x)")
            .permuted_axes([0, 3, 1, 2])
            .as_standard_layout()
            .into_owned()
            .into_dyn();
        Ok(self.push(value, Op::Conv2d { x, w, window, cols }, &[x, w]))
    }

    /// Max pooling over `kernel` windows moved by `stride`, without padding.
    ///
    /// # Errors
    /// When `x` is not `[batch, channels, h, w]` or the window does not fit.
    pub fn max_pool2d(&mut self, x: Var, kernel: (usize, usize), stride: (usize, usize)) -> Result<Var> {
        let window = self.pool_window("max_pool2d", x, kernel, stride)?;
        let (value, argmax) = conv::max_pool(&as4("max_pool2d", self.value(x))?, &window);
        Ok(self.push(value.into_dyn(), Op::MaxPool2d { x, window, argmax }, &[x]))
    }

    /// Average pooling over `kernel` windows moved by `stride`, without padding.
    ///
    /// # Errors
    /// When `x` is not `[batch, channels, h, w]` or the window does not fit.
    pub fn avg_pool2d(&mut self, x: Var, kernel: (usize, usize), stride: (usize, usize)) -> Result<Var> {
        let window = self.pool_window("avg_pool2d", x, kernel, stride)?;
        let value = conv::avg_pool(&as4("avg_pool2d", self.value(x))?, &window);
        Ok(self.push(value.into_dyn(), Op::AvgPool2d { x, window }, &[x]))
    }

    fn pool_window(
        &self,
        op: &'static str,
        x: Var,
        kernel: (usize, usize),
        stride: (usize, usize),
    ) -> Result<Window> {
        let input = as4(op, self.value(x))?;
        let window = Window { kernel, stride, padding: (0, 0, 0, 0) };
        let (_, _, h, w) = input.dim();
        if kernel.0 == 0 || kernel.1 == 0 || window.output_size((h, w)).is_none() {
            return Err(Error::bad_shape(
                op,
                input.shape(),
                format!("a {kernel:?} window with stride {stride:?} does not fit"),
            ));
        }
        Ok(window)
    }
}

pub(crate) fn as4<'a>(op: &'static str, t: &'a Tensor) -> Result<ndarray::ArrayView4<'a, f32>> {
    t.view()
        .into_dimensionality::<Ix4>()
        .map_err(|_| Error::bad_shape(op, t.shape(), "expects [batch, channels, height, width]"))
}

/// `t` in a new shape with the same element count, read in row-major order.
pub(crate) fn reshape(t: &Tensor, shape: &[usize]) -> Option<Tensor> {
    if t.len() != shape.iter().product::<usize>() {
        return None;
    }
    t.as_standard_layout().into_owned().into_shape_with_order(IxDyn(shape)).ok()
}
