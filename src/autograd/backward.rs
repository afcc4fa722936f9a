//! Every backward rule, dispatched by one `match`.
//!
//! Each rule takes the gradient of the loss with respect to an op's output (`g`) and adds the
//! gradient with respect to each operand that needs one into that operand's slot, where
//! possible without a temporary (a product accumulates straight into it, a slice into its
//! part of it). Broadcast operands get their gradient summed back to their own shape. Every
//! temporary comes from the tape's pool and goes back to it.
//!
//! A rule with loops of its own is a method of its own, kept out of line (`#[inline(never)]`),
//! as are the helpers the rules share. In wasm a function is the unit that the browser
//! optimises, once it has run for a while, in time that grows faster than its size: with every
//! rule inlined into the dispatcher, V8 took a quarter of a second over that one 69 KB
//! function, during the first training steps and on a core the step needed, while the rules'
//! loops waited in baseline code. Split, only the rules a model uses are optimised, each soon.

use ndarray::{ArrayView2, ArrayViewD, Axis, IxDyn, Slice, Zip};

use crate::backend::cpu::norm;
use crate::backend::cpu::recurrent::{self, Cell};
use crate::backend::cpu::{self, conv};
use crate::tensor::{self, row_major, Tensor};
use crate::{Error, Result};

use super::ops::{as4, as4_mut, as_channels, as_rows, flat_mut, matrix, matrix_view, product_dims, Op};
use super::{ParamId, Pool, Tape, Var};

/// The gradients of one backward pass: of every parameter used, and of every
/// [`Tape::variable`].
pub struct Gradients {
    params: Vec<(ParamId, Tensor)>,
    variables: Vec<(Var, Tensor)>,
}

impl Gradients {
    /// The gradient of each parameter that the loss depends on.
    pub fn params(&self) -> impl Iterator<Item = (ParamId, &Tensor)> {
        self.params.iter().map(|(id, g)| (*id, g))
    }

    /// The gradient with respect to a variable, if the loss depends on it.
    pub fn wrt(&self, var: Var) -> Option<&Tensor> {
        self.variables.iter().find(|(v, _)| *v == var).map(|(_, g)| g)
    }

    /// Gives the gradients' memory to `pool`, for the next step's backward pass.
    pub fn recycle(mut self, pool: &mut Pool) {
        let variables = self.variables.into_iter().map(|(_, g)| g);
        for g in self.params.drain(..).map(|(_, g)| g).chain(variables) {
            pool.give(g);
        }
        pool.param_grads = self.params;
    }
}

/// The gradient accumulated so far for each value on the tape.
type Slots = Vec<Option<Tensor>>;

impl Tape<'_> {
    /// The gradients of the one-element `loss` with respect to every parameter and variable.
    ///
    /// # Errors
    /// When `loss` has more than one element, or the tape does not record.
    pub fn backward(&self, loss: Var) -> Result<Gradients> {
        let shape = self.value(loss).shape();
        if self.value(loss).len() != 1 {
            return Err(Error::bad_shape("backward", shape, "the loss must be a single number"));
        }
        if !self.recording {
            return Err(Error::invalid("backward", "an inference tape records no graph"));
        }
        let mut grads = std::mem::take(&mut self.pool.borrow_mut().grads);
        grads.clear();
        grads.resize_with(loss.0 + 1, || None);
        let mut seed = self.alloc(shape);
        seed.fill(1.0);
        grads[loss.0] = Some(seed);
        let mut params = std::mem::take(&mut self.pool.borrow_mut().param_grads);
        params.clear();
        let mut out = Gradients { params, variables: Vec::new() };
        for i in (0..=loss.0).rev() {
            if let Some(g) = grads[i].take() {
                self.backward_op(i, g, &mut grads, &mut out)?;
            }
        }
        self.pool.borrow_mut().grads = grads;
        Ok(out)
    }

    /// Applies the rule of op `i` to its output's gradient `g`.
    fn backward_op(&self, i: usize, mut g: Tensor, grads: &mut Slots, out: &mut Gradients) -> Result<()> {
        // Each rule either hands `g` on (None) or leaves it to be recycled.
        let unused = match &self.nodes[i].op {
            Op::Input => Some(g),
            Op::Variable => {
                out.variables.push((Var(i), g));
                None
            }
            Op::Param(id) => {
                out.params.push((*id, g));
                None
            }
            Op::Add(a, b) => {
                self.add_into(grads, *a, g.view());
                self.add_into(grads, *b, g.view());
                Some(g)
            }
            Op::Sub(a, b) => {
                self.sub_backward(grads, &mut g, *a, *b);
                Some(g)
            }
            Op::Mul(a, b) => {
                // d(ab)/da = b, d(ab)/db = a
                self.send_product_with(grads, *a, &g, *b, cpu::Binary::Mul);
                self.send_product_with(grads, *b, &g, *a, cpu::Binary::Mul);
                Some(g)
            }
            Op::Div(a, b) => {
                self.div_backward(grads, &g, *a, *b);
                Some(g)
            }
            Op::MatMul(a, b) => {
                self.matmul_backward(grads, &g, *a, *b)?;
                Some(g)
            }
            Op::Sum { x, axis } => {
                self.spread(grads, &g, *x, *axis, 1.0);
                Some(g)
            }
            Op::Mean { x, axis } => {
                let n = self.value(*x).shape()[*axis] as f32;
                self.spread(grads, &g, *x, *axis, 1.0 / n);
                Some(g)
            }
            Op::Reshape(x) => {
                let shape = self.value(*x).shape();
                let dx = match g.into_shape_with_order(IxDyn(shape)) {
                    Ok(dx) => dx,
                    // Only a tensor laid out other than row-major lands here; none made by
                    // the tape is.
                    Err(_) => {
                        return Err(Error::invalid("reshape backward", "the gradient is not contiguous"))
                    }
                };
                self.send(grads, *x, dx);
                None
            }
            Op::Permute { x, axes } => {
                let mut inverse = vec![0; axes.len()];
                for (i, &a) in axes.iter().enumerate() {
                    inverse[a] = i;
                }
                self.add_into(grads, *x, g.view().permuted_axes(IxDyn(&inverse)));
                Some(g)
            }
            Op::Activation { x, act } => {
                cpu::map_backward(self.value(*x), self.value(Var(i)), &mut g, *act);
                self.send(grads, *x, g);
                None
            }
            Op::Softmax(x) => {
                self.softmax_backward(&mut g, Var(i));
                self.send(grads, *x, g);
                None
            }
            Op::LogSoftmax(x) => {
                self.log_softmax_backward(&mut g, Var(i));
                self.send(grads, *x, g);
                None
            }
            Op::SoftmaxCrossEntropy { logits, labels, probs } => {
                self.cross_entropy_backward(grads, &g, *logits, labels, probs);
                Some(g)
            }
            Op::MeanSquaredError(a, b) => {
                self.mean_squared_error_backward(grads, &g, *a, *b);
                Some(g)
            }
            Op::Dropout { x, mask, .. } => {
                dropout_backward(&mut g, mask);
                self.send(grads, *x, g);
                None
            }
            Op::Pow { x, exponent } => {
                self.pow_backward(&mut g, *x, *exponent);
                self.send(grads, *x, g);
                None
            }
            Op::Slice { x, axis, start } => {
                self.slice_backward(grads, &g, *x, *axis, *start);
                Some(g)
            }
            Op::Concat { inputs, axis } => {
                let mut start = 0;
                for &input in inputs {
                    let len = self.value(input).shape()[*axis];
                    self.add_into(grads, input, g.slice_axis(Axis(*axis), Slice::from(start..start + len)));
                    start += len;
                }
                Some(g)
            }
            Op::Conv2d { x, w, window, cols } => {
                self.conv2d_backward(grads, &g, *x, *w, window, cols)?;
                Some(g)
            }
            Op::MaxPool2d { x, argmax, .. } => {
                self.max_pool2d_backward(grads, &g, *x, argmax);
                Some(g)
            }
            Op::AvgPool2d { x, window } => {
                let g4 = as4("avg_pool2d backward", &g)?;
                if let Some(dx) = self.slot(grads, *x) {
                    conv::avg_pool_backward(&g4, window, as4_mut(dx));
                }
                Some(g)
            }
            Op::LayerNorm { x, gamma, beta, stats, .. } => {
                self.layer_norm_backward(grads, &g, (*x, *gamma, *beta), stats);
                Some(g)
            }
            Op::BatchNorm { x, gamma, beta, eps, stats } => {
                self.batch_norm_backward(grads, &g, (*x, *gamma, *beta), (stats, *eps));
                Some(g)
            }
            // Its node never needs a gradient (see `Tape::batch_norm`).
            Op::RunningAverage { .. } => Some(g),
            Op::RecurrentCell { cell, x, step, hu, state, gates } => {
                self.recurrent_cell_backward(grads, &g, Var(i), *cell, (*x, *step), *hu, *state, gates);
                Some(g)
            }
        };
        if let Some(g) = unused {
            self.recycle(g);
        }
        Ok(())
    }

    /// C = AB: dA = dC B^T, dB = A^T dC, for each matrix of a batched product.
    #[inline(never)]
    fn matmul_backward(&self, grads: &mut Slots, g: &Tensor, a: Var, b: Var) -> Result<()> {
        let (x, y) = (self.value(a), self.value(b));
        let dims = product_dims(x.shape(), y.shape())?;
        for (to, other) in [(a, b), (b, a)] {
            if !self.needs_grad(to) {
                continue;
            }
            let (slot, accumulate) = match &mut grads[to.0] {
                Some(acc) => (acc, true),
                slot @ None => (slot.insert(self.alloc(self.value(to).shape())), false),
            };
            let other = self.value(other);
            for i in 0..dims.batch {
                let (gm, o) = (dims.operand(g, i), dims.operand(other, i));
                let out = dims.output(slot, i);
                if to == a {
                    cpu::matmul_into(&gm, &o.t(), out, accumulate);
                } else {
                    cpu::matmul_into(&o.t(), &gm, out, accumulate);
                }
            }
        }
        Ok(())
    }

    /// d(a-b)/da = 1, d(a-b)/db = -1; `g` is negated in place for `b`.
    #[inline(never)]
    fn sub_backward(&self, grads: &mut Slots, g: &mut Tensor, a: Var, b: Var) {
        self.add_into(grads, a, g.view());
        if self.needs_grad(b) {
            g.mapv_inplace(|v| -v);
            self.add_into(grads, b, g.view());
        }
    }

    /// d(a/b)/da = 1/b, d(a/b)/db = -a/b^2.
    #[inline(never)]
    fn div_backward(&self, grads: &mut Slots, g: &Tensor, a: Var, b: Var) {
        self.send_product_with(grads, a, g, b, cpu::Binary::Div);
        if self.needs_grad(b) {
            let (x, y) = (self.value(a), self.value(b));
            let mut full = self.alloc(g.shape());
            Zip::from(&mut full)
                .and(g)
                .and_broadcast(x)
                .and_broadcast(y)
                .for_each(|d, &g, &x, &y| *d = -g * x / (y * y));
            self.send_reduced(grads, b, full);
        }
    }

    /// Turns `g` into the softmax's input gradient, `y * (g - sum(g * y))` along its axis,
    /// where `y` is the softmax's output.
    #[inline(never)]
    fn softmax_backward(&self, g: &mut Tensor, y: Var) {
        let y = self.value(y);
        let last = Axis(y.ndim() - 1);
        Zip::from(g.lanes_mut(last)).and(y.lanes(last)).for_each(|mut g, y| {
            let dot = g.view().dot(&y);
            Zip::from(&mut g).and(&y).for_each(|g, &y| *g = y * (*g - dot));
        });
    }

    /// Turns `g` into the log-softmax's input gradient, `g - softmax(x) * sum(g)` along its
    /// axis, where softmax(x) = exp(y) for its output `y`.
    #[inline(never)]
    fn log_softmax_backward(&self, g: &mut Tensor, y: Var) {
        let y = self.value(y);
        let last = Axis(y.ndim() - 1);
        Zip::from(g.lanes_mut(last)).and(y.lanes(last)).for_each(|mut g, y| {
            let total = g.sum();
            Zip::from(&mut g).and(&y).for_each(|g, &y| *g -= y.exp() * total);
        });
    }

    /// d(mean CE)/dlogits = (softmax - onehot) / batch.
    #[inline(never)]
    fn cross_entropy_backward(
        &self,
        grads: &mut Slots,
        g: &Tensor,
        logits: Var,
        labels: &[u8],
        probs: &Tensor,
    ) {
        let scale = g.iter().next().copied().unwrap_or_default() / labels.len() as f32;
        let mut d = self.alloc(probs.shape());
        d.assign(probs);
        for (mut row, &label) in d.outer_iter_mut().zip(labels) {
            row[usize::from(label)] -= 1.0;
        }
        d *= scale;
        self.send(grads, logits, d);
    }

    /// d mean((a-b)^2)/da = 2(a-b)/n, and the negation for b.
    #[inline(never)]
    fn mean_squared_error_backward(&self, grads: &mut Slots, g: &Tensor, a: Var, b: Var) {
        let (x, y) = (self.value(a), self.value(b));
        let scale = 2.0 * g.iter().next().copied().unwrap_or_default() / x.len() as f32;
        let mut d = self.alloc(x.shape());
        let (x, y) = (row_major(x), row_major(y));
        flat_mut(&mut d).iter_mut().zip(x.iter().zip(y.iter())).for_each(|(d, (x, y))| *d = (x - y) * scale);
        self.add_into(grads, a, d.view());
        if self.needs_grad(b) {
            flat_mut(&mut d).iter_mut().for_each(|v| *v = -*v);
            self.add_into(grads, b, d.view());
        }
        self.recycle(d);
    }

    /// Turns `g` into the input gradient of `x^p`: d(x^p)/dx = p x^(p-1).
    #[inline(never)]
    fn pow_backward(&self, g: &mut Tensor, x: Var, exponent: f32) {
        let x = row_major(self.value(x));
        flat_mut(g).iter_mut().zip(x.iter()).for_each(|(g, b)| *g *= exponent * b.powf(exponent - 1.0));
    }

    /// Adds `g` into the part of `x`'s gradient that the slice took.
    #[inline(never)]
    fn slice_backward(&self, grads: &mut Slots, g: &Tensor, x: Var, axis: usize, start: usize) {
        if let Some(dx) = self.slot(grads, x) {
            let len = g.shape()[axis];
            let mut part = dx.slice_axis_mut(Axis(axis), Slice::from(start..start + len));
            part += g;
        }
    }

    /// out = cols @ W^T (rows: batch, y, x): dW = g^T cols, dcols = g W, then col2im scatters
    /// dcols back onto the input.
    #[inline(never)]
    fn conv2d_backward(
        &self,
        grads: &mut Slots,
        g: &Tensor,
        x: Var,
        w: Var,
        window: &conv::Window,
        cols: &Tensor,
    ) -> Result<()> {
        let weight = self.value(w);
        let filters = weight.shape()[0];
        let cols = cpu::as_matrix("conv2d backward", cols)?;
        let (n, _, oh, ow) = as4("conv2d backward", g)?.dim();
        let mut g_rows = self.alloc(&[n, oh, ow, filters]);
        g_rows.assign(&g.view().permuted_axes(IxDyn(&[0, 2, 3, 1])));
        let g_mat = g_rows.view().into_shape_with_order((cols.nrows(), filters)).expect("contiguous");
        self.add_product(grads, w, &g_mat.t(), &cols);
        if self.needs_grad(x) {
            let w_mat = weight.to_shape((filters, cols.ncols())).expect("contiguous weights");
            let mut dcols = self.alloc(cols.shape());
            cpu::matmul_into(&g_mat, &w_mat.view(), matrix(&mut dcols), false);
            let dx = self.slot(grads, x).expect("needs a gradient");
            conv::col2im(&cpu::as_matrix("conv2d backward", &dcols)?, window, as4_mut(dx));
            self.recycle(dcols);
        }
        self.recycle(g_rows);
        Ok(())
    }

    /// Sends each output's gradient to the input element that was its maximum.
    #[inline(never)]
    fn max_pool2d_backward(&self, grads: &mut Slots, g: &Tensor, x: Var, argmax: &[usize]) {
        if let Some(dx) = self.slot(grads, x) {
            let flat = dx.as_slice_mut().expect("gradients are contiguous");
            for (&at, &v) in argmax.iter().zip(g.iter()) {
                flat[at] += v;
            }
        }
    }

    fn needs_grad(&self, v: Var) -> bool {
        self.nodes[v.0].needs_grad
    }

    /// The gradient slot of `to`, made zero if empty, or None when `to` needs no gradient.
    fn slot<'g>(&self, grads: &'g mut Slots, to: Var) -> Option<&'g mut Tensor> {
        if !self.needs_grad(to) {
            return None;
        }
        Some(grads[to.0].get_or_insert_with(|| self.alloc_zeros(self.value(to).shape())))
    }

    /// Layer normalisation's rule (see [`norm::layer_norm_backward`]).
    #[inline(never)]
    fn layer_norm_backward(
        &self,
        grads: &mut Slots,
        g: &Tensor,
        (x, gamma, beta): (Var, Var, Var),
        stats: &Tensor,
    ) {
        let rows = stats.shape()[0];
        let d = g.len() / rows.max(1);
        let mut dx = self.alloc(g.shape());
        let mut dgamma = self.alloc_zeros(&[d]);
        let mut dbeta = self.alloc_zeros(&[d]);
        norm::layer_norm_backward(
            as_rows(g, d),
            as_rows(self.value(x), d),
            self.value(gamma).as_slice().expect("contiguous"),
            matrix_view(stats),
            dx.view_mut().into_shape_with_order((rows, d)).expect("contiguous"),
            (flat_mut(&mut dgamma), flat_mut(&mut dbeta)),
        );
        self.send(grads, x, dx);
        self.send(grads, gamma, dgamma);
        self.send(grads, beta, dbeta);
    }

    /// Batch normalisation's rule (see [`norm::batch_norm_backward`]).
    #[inline(never)]
    fn batch_norm_backward(
        &self,
        grads: &mut Slots,
        g: &Tensor,
        (x, gamma, beta): (Var, Var, Var),
        (stats, eps): (&Tensor, f32),
    ) {
        let shape = g.shape();
        let (batch, channels) = (shape[0], shape[1]);
        let dims = (batch, channels, shape[2..].iter().product::<usize>());
        let mut dx = self.alloc(shape);
        let mut dgamma = self.alloc_zeros(&[channels]);
        let mut dbeta = self.alloc_zeros(&[channels]);
        norm::batch_norm_backward(
            as_channels(g),
            as_channels(self.value(x)),
            self.value(gamma).as_slice().expect("contiguous"),
            (matrix_view(stats), eps),
            dx.view_mut().into_shape_with_order(dims).expect("contiguous"),
            (flat_mut(&mut dgamma), flat_mut(&mut dbeta)),
        );
        self.send(grads, x, dx);
        self.send(grads, gamma, dgamma);
        self.send(grads, beta, dbeta);
    }

    /// A recurrent step's rule (see [`recurrent::cell_backward`]): the input projections'
    /// gradient lands in step `step` of `x`'s.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn recurrent_cell_backward(
        &self,
        grads: &mut Slots,
        g: &Tensor,
        out: Var,
        cell: Cell,
        (x, step): (Var, usize),
        hu: Var,
        state: Var,
        gates: &Tensor,
    ) {
        let mut dx = self.alloc(gates.shape());
        let mut dhu = self.alloc(gates.shape());
        let mut dstate = self.alloc(self.value(state).shape());
        recurrent::cell_backward(
            cell,
            matrix_view(g),
            matrix_view(self.value(hu)),
            matrix_view(self.value(state)),
            matrix_view(self.value(out)),
            matrix_view(gates),
            matrix(&mut dx),
            matrix(&mut dhu),
            matrix(&mut dstate),
        );
        if let Some(gx) = self.slot(grads, x) {
            let mut part = gx.index_axis_mut(Axis(1), step);
            part += &dx;
        }
        self.recycle(dx);
        self.send(grads, hu, dhu);
        self.send(grads, state, dstate);
    }

    /// Adds `grad`, shaped like `to`, to its gradient: into the slot, or as the slot.
    fn send(&self, grads: &mut Slots, to: Var, grad: Tensor) {
        match &mut grads[to.0] {
            _ if !self.needs_grad(to) => self.recycle(grad),
            Some(acc) => {
                *acc += &grad;
                self.recycle(grad);
            }
            slot @ None => *slot = Some(grad),
        }
    }

    /// Adds `grad` to the gradient of `to`, summing over the axes `to` was broadcast along.
    #[inline(never)]
    fn add_into(&self, grads: &mut Slots, to: Var, grad: ArrayViewD<f32>) {
        if !self.needs_grad(to) {
            return;
        }
        match &mut grads[to.0] {
            Some(acc) => tensor::add_reduced(acc.view_mut(), grad),
            slot @ None => {
                let shape = self.value(to).shape();
                let mut fresh = self.alloc(shape);
                if grad.shape() == shape {
                    fresh.assign(&grad);
                } else {
                    fresh.fill(0.0);
                    tensor::add_reduced(fresh.view_mut(), grad);
                }
                *slot = Some(fresh);
            }
        }
    }

    /// Adds `grad`, shaped like the op's output, to the gradient of `to`.
    fn send_reduced(&self, grads: &mut Slots, to: Var, grad: Tensor) {
        if grad.shape() == self.value(to).shape() {
            self.send(grads, to, grad);
        } else {
            self.add_into(grads, to, grad.view());
            self.recycle(grad);
        }
    }

    /// Sends `g op other` elementwise, `other` broadcast to `g`'s shape, to `to`.
    #[inline(never)]
    fn send_product_with(&self, grads: &mut Slots, to: Var, g: &Tensor, other: Var, op: cpu::Binary) {
        if !self.needs_grad(to) {
            return;
        }
        let mut d = self.alloc(g.shape());
        cpu::binary(g, self.value(other), op, &mut d);
        self.send_reduced(grads, to, d);
    }

    /// Adds the matrix product `l @ r` to the gradient of `to` (whose elements, in order, are
    /// the product's): the product accumulates straight into the slot.
    #[inline(never)]
    fn add_product(&self, grads: &mut Slots, to: Var, l: &ArrayView2<f32>, r: &ArrayView2<f32>) {
        if !self.needs_grad(to) {
            return;
        }
        let (slot, accumulate) = match &mut grads[to.0] {
            Some(acc) => (acc, true),
            slot @ None => (slot.insert(self.alloc(self.value(to).shape())), false),
        };
        let c = slot
            .view_mut()
            .into_shape_with_order((l.nrows(), r.ncols()))
            .expect("the product's element count");
        cpu::matmul_into(l, r, c, accumulate);
    }

    /// Copies the gradient of a reduction back along the reduced axis, times `scale`.
    #[inline(never)]
    fn spread(&self, grads: &mut Slots, g: &Tensor, x: Var, axis: usize, scale: f32) {
        if !self.needs_grad(x) {
            return;
        }
        let mut dx = self.alloc(self.value(x).shape());
        let g = g.view().insert_axis(Axis(axis));
        Zip::from(&mut dx).and_broadcast(&g).for_each(|o, &g| *o = g * scale);
        self.send(grads, x, dx);
    }
}

/// Turns `g` into the dropout's input gradient: through the kept units, scaled as they were.
#[inline(never)]
fn dropout_backward(g: &mut Tensor, mask: &Tensor) {
    flat_mut(g).iter_mut().zip(row_major(mask).iter()).for_each(|(g, m)| *g *= m);
}
