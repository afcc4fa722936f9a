//! Every backward rule, in one `match`.
//!
//! Each rule takes the gradient of the loss with respect to an op's output (`g`) and adds the
//! gradient with respect to each operand that needs one. Broadcast operands get their gradient
//! summed back to their own shape.

use ndarray::{Axis, IxDyn, Slice, Zip};

use crate::backend::cpu::{self, conv};
use crate::tensor::{self, Tensor};
use crate::{Error, Result};

use super::ops::{as4, reshape, Op};
use super::{ParamId, Tape, Var};

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
}

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
        let mut grads: Vec<Option<Tensor>> = vec![None; loss.0 + 1];
        grads[loss.0] = Some(Tensor::ones(IxDyn(shape)));
        let mut out = Gradients { params: Vec::new(), variables: Vec::new() };

        for i in (0..=loss.0).rev() {
            let Some(g) = grads[i].take() else { continue };
            let mut send = |to: Var, grad: Tensor| {
                if self.nodes[to.0].needs_grad {
                    let slot = &mut grads[to.0];
                    match slot {
                        Some(acc) => *acc += &grad,
                        None => *slot = Some(grad),
                    }
                }
            };
            match &self.nodes[i].op {
                Op::Input => {}
                Op::Variable => out.variables.push((Var(i), g)),
                Op::Param(id) => out.params.push((*id, g)),
                Op::Add(a, b) => {
                    send(*a, self.unbroadcast(&g, *a));
                    send(*b, self.unbroadcast(&g, *b));
                }
                Op::Sub(a, b) => {
                    send(*a, self.unbroadcast(&g, *a));
                    send(*b, -self.unbroadcast(&g, *b));
                }
                Op::Mul(a, b) => {
                    // d(ab)/da = b, d(ab)/db = a
                    send(*a, self.unbroadcast(&(&g * self.value(*b)), *a));
                    send(*b, self.unbroadcast(&(&g * self.value(*a)), *b));
                }
                Op::Div(a, b) => {
                    // d(a/b)/da = 1/b, d(a/b)/db = -a/b^2
                    let (x, y) = (self.value(*a), self.value(*b));
                    let ga = &g / y;
                    send(*b, self.unbroadcast(&(-&ga * x / y), *b));
                    send(*a, self.unbroadcast(&ga, *a));
                }
                Op::MatMul(a, b) => {
                    // C = AB: dA = dC B^T, dB = A^T dC
                    let gm = cpu::as_matrix("matmul backward", &g)?;
                    let x = cpu::as_matrix("matmul backward", self.value(*a))?;
                    let y = cpu::as_matrix("matmul backward", self.value(*b))?;
                    send(*a, cpu::matmul(&gm, &y.t()).into_dyn());
                    send(*b, cpu::matmul(&x.t(), &gm).into_dyn());
                }
                Op::Sum { x, axis } => send(*x, self.spread(&g, *x, *axis, 1.0)),
                Op::Mean { x, axis } => {
                    let n = self.value(*x).shape()[*axis] as f32;
                    send(*x, self.spread(&g, *x, *axis, 1.0 / n));
                }
                Op::Reshape(x) => {
                    let shape = self.value(*x).shape();
                    send(*x, reshape(&g, shape).expect("same element count as the forward"));
                }
                Op::Permute { x, axes } => {
                    let mut inverse = vec![0; axes.len()];
                    for (i, &a) in axes.iter().enumerate() {
                        inverse[a] = i;
                    }
                    send(*x, g.permuted_axes(IxDyn(&inverse)).as_standard_layout().into_owned());
                }
                Op::Activation { x, act } => {
                    let y = self.value(Var(i));
                    send(*x, cpu::map_backward(self.value(*x), y, &g, *act));
                }
                Op::Softmax(x) => {
                    // dx = y * (g - sum(g * y)) along the softmax axis
                    let y = self.value(Var(i));
                    let last = Axis(y.ndim() - 1);
                    let dot = (&g * y).sum_axis(last).insert_axis(last);
                    send(*x, y * &(&g - &dot));
                }
                Op::LogSoftmax(x) => {
                    // dx = g - softmax(x) * sum(g) along the axis, and softmax(x) = exp(y)
                    let y = self.value(Var(i));
                    let last = Axis(y.ndim() - 1);
                    let total = g.sum_axis(last).insert_axis(last);
                    send(*x, &g - &(y.mapv(f32::exp) * &total));
                }
                Op::SoftmaxCrossEntropy { logits, labels, probs } => {
                    // d(mean CE)/dlogits = (softmax - onehot) / batch
                    let scale = g.iter().next().copied().unwrap_or_default() / labels.len() as f32;
                    let mut d = probs.clone();
                    for (row, &label) in labels.iter().enumerate() {
                        d[[row, usize::from(label)]] -= 1.0;
                    }
                    d.mapv_inplace(|v| v * scale);
                    send(*logits, d.into_dyn());
                }
                Op::MeanSquaredError(a, b) => {
                    // d mean((a-b)^2)/da = 2(a-b)/n, and the negation for b
                    let (x, y) = (self.value(*a), self.value(*b));
                    let scale = 2.0 * g.iter().next().copied().unwrap_or_default() / x.len() as f32;
                    let mut d = x - y;
                    d.mapv_inplace(|v| v * scale);
                    send(*b, -&d);
                    send(*a, d);
                }
                Op::Dropout { x, mask, .. } => send(*x, g * mask),
                Op::Pow { x, exponent } => {
                    // d(x^p)/dx = p x^(p-1)
                    let base = self.value(*x);
                    send(
                        *x,
                        Zip::from(&g).and(base).map_collect(|&g, &b| g * exponent * b.powf(exponent - 1.0)),
                    );
                }
                Op::Slice { x, axis, start } => {
                    let mut dx = Tensor::zeros(IxDyn(self.value(*x).shape()));
                    let len = g.shape()[*axis];
                    dx.slice_axis_mut(Axis(*axis), Slice::from(*start..start + len)).assign(&g);
                    send(*x, dx);
                }
                Op::Concat { inputs, axis } => {
                    let mut start = 0;
                    for &input in inputs {
                        let len = self.value(input).shape()[*axis];
                        send(input, g.slice_axis(Axis(*axis), Slice::from(start..start + len)).to_owned());
                        start += len;
                    }
                }
                Op::Conv2d { x, w, window, cols } => {
                    // out = cols @ W^T (rows: batch, y, x): dW = g^T cols, dcols = g W, then
                    // col2im scatters dcols back onto the input.
                    let weight = self.value(*w);
                    let filters = weight.shape()[0];
                    let g_mat = g
                        .view()
                        .permuted_axes(IxDyn(&[0, 2, 3, 1]))
                        .as_standard_layout()
                        .into_owned()
                        .into_shape_with_order((cols.nrows(), filters))
                        .expect("one row per output position");
                    let w_mat = weight.to_shape((filters, cols.ncols())).expect("contiguous weights");
                    let dw = cpu::matmul(&g_mat.t(), &cols.view());
                    send(*w, dw.into_shape_with_order(IxDyn(weight.shape())).expect("same element count"));
                    let dcols = cpu::matmul(&g_mat.view(), &w_mat.view());
                    let input = as4("conv2d backward", self.value(*x))?;
                    send(*x, conv::col2im(&dcols, input.dim(), window).into_dyn());
                }
                Op::MaxPool2d { x, argmax, .. } => {
                    let mut dx = Tensor::zeros(IxDyn(self.value(*x).shape()));
                    let flat = dx.as_slice_mut().expect("fresh tensors are contiguous");
                    for (&at, &v) in argmax.iter().zip(g.iter()) {
                        flat[at] += v;
                    }
                    send(*x, dx);
                }
                Op::AvgPool2d { x, window } => {
                    let input = as4("avg_pool2d backward", self.value(*x))?;
                    let g4 = as4("avg_pool2d backward", &g)?;
                    send(*x, conv::avg_pool_backward(&g4, input.dim(), window).into_dyn());
                }
            }
        }
        Ok(out)
    }

    fn unbroadcast(&self, grad: &Tensor, to: Var) -> Tensor {
        tensor::sum_to_shape(grad.clone(), self.value(to).shape())
    }

    /// Copies the gradient of a reduction back along the reduced axis, times `scale`.
    fn spread(&self, g: &Tensor, x: Var, axis: usize, scale: f32) -> Tensor {
        let shape = self.value(x).shape();
        let mut out = Tensor::zeros(IxDyn(shape));
        let g = g.view().insert_axis(Axis(axis));
        Zip::from(&mut out).and_broadcast(&g).for_each(|o, &g| *o = g * scale);
        out
    }
}
