//! A training step compiled for the GPU.
//!
//! The model runs once on the CPU on a [`Tape::tracing`] tape; [`Plan::compile`] turns each
//! recorded op into the dispatches of its forward kernel and, in reverse order, of its
//! backward rule (the same rules as `autograd/backward.rs`). Every value, gradient and scratch
//! buffer is allocated here, once, so a step only writes the batch, runs the dispatches and
//! reads back two numbers. A reshape shares its input's buffers; gradients accumulate with `+=`
//! into buffers zeroed at the start of each step. A dense or convolution layer's product, bias
//! and activation (and a pooling after them, backward) are fused into fewer dispatches: see
//! [`Layer`].

use std::rc::Rc;

use crate::autograd::{product_dims, Op, ProductDims, Tape, Var};
use crate::backend::cpu::conv::Window;
use crate::backend::cpu::recurrent::Cell;
use crate::backend::cpu::Activation;
use crate::backend::gpu::{
    activation_code, product_dispatch, BiasAlong, Buffer, Dispatch, Epilogue, Gpu, Kernel, Product, Readback,
    NO_ACTIVATION, POW,
};
use crate::{Error, Result};

/// The dispatches and buffers of one training step at one batch size.
pub struct Plan {
    pub(super) batch: usize,
    pub(super) image: Rc<Buffer>,
    pub(super) labels: Buffer,
    /// `[loss, accuracy]` of the last step; the loss is also the value of the loss.
    pub(super) stats: Rc<Buffer>,
    /// The tape position and drop rate of each dropout, in forward order; its mask is the
    /// first scratch buffer there, drawn and written before each step.
    pub(super) dropouts: Vec<(usize, f32)>,
    /// Buffers an op needs besides its value and gradient, per tape position: im2col matrices,
    /// pooling argmaxes, dropout masks, and temporaries of backward rules.
    pub(super) scratch: Vec<Vec<Rc<Buffer>>>,
    /// Gradient buffers to zero before each step (the parameters' are the caller's to zero).
    pub(super) zero: Vec<Rc<Buffer>>,
    /// The partial products of the matrix products split along k (see [`matmul`]).
    partials: Vec<Buffer>,
    /// Forward, then backward.
    pub(super) dispatches: Vec<Dispatch>,
    /// The value and gradient buffers of every tape position.
    slots: Slots,
    /// The layers fused into their products, and per tape position the layer it belongs to.
    layers: Vec<Layer>,
    layer_of: Vec<Option<usize>>,
}

/// A product (a dense layer's or a convolution's) and the bias addition and activation that
/// follow it, each the only reader of the value before it. Forward, one dispatch: the product
/// adds the bias and applies the activation as it writes (matmul.wgsl's epilogue), unless it
/// is split along k. Backward, one dispatch (epilogue_grad.wgsl) takes the gradient from the
/// layer's output back to the product's and sums the bias's, ahead of the product's own.
#[derive(Clone, Copy)]
struct Layer {
    product: usize,
    /// The addition and the bias it adds.
    bias: Option<(usize, Var)>,
    activation: Option<(usize, Activation)>,
    /// The last of the three.
    output: usize,
    /// The pooling that is the output's only reader: its gradient is gathered in the layer's
    /// backward dispatch.
    pool: Option<usize>,
    /// Whether the epilogue runs in the product (not split along k).
    fused_forward: bool,
}

impl Layer {
    /// The value the activation reads: the product plus bias.
    fn pre(&self) -> usize {
        self.bias.map_or(self.product, |(add, _)| add)
    }

    /// Whether tape position `i` is the layer's bias addition or activation.
    fn is_epilogue(&self, i: usize) -> bool {
        self.bias.is_some_and(|(add, _)| add == i) || self.activation.is_some_and(|(act, _)| act == i)
    }

    /// The position whose gradient the layer's backward dispatch takes.
    fn top(&self) -> usize {
        self.pool.unwrap_or(self.output)
    }
}

/// Where the plan's values and gradients live, per tape position.
struct Slots {
    values: Vec<Rc<Buffer>>,
    grads: Vec<Option<Rc<Buffer>>>,
}

impl Plan {
    /// Compiles the step recorded on `tape`: `image`, if any, is the input batch, written before
    /// every step, and `loss` the one-element value differentiated: the softmax cross-entropy
    /// of training (its gradient fused into its kernel) or any other (seeded with 1). `params`
    /// and `grads` are the buffers of the model's parameters, indexed by
    /// [`crate::autograd::ParamId`]; the caller zeroes `grads` before each step. Labels and
    /// dropout masks start as recorded on the tape.
    ///
    /// # Errors
    /// [`Error::Gpu`] naming the first op the GPU backend cannot run.
    pub(crate) fn compile(
        gpu: &Gpu,
        tape: &Tape,
        image: Option<Var>,
        loss: Var,
        params: &[Rc<Buffer>],
        grads: &[Rc<Buffer>],
    ) -> Result<Plan> {
        let image = image.unwrap_or(Var::at(usize::MAX));
        let (batch, image_len) = match tape.node_checked(image) {
            Some(value) => (value.shape().first().copied().unwrap_or(1), value.len()),
            None => (0, 0),
        };
        let image_buffer = Rc::new(gpu.zeros(image_len));
        let mut plan = Plan {
            batch,
            image: image_buffer.clone(),
            labels: gpu.zeros(batch),
            stats: Rc::new(gpu.zeros(2)),
            dropouts: Vec::new(),
            scratch: (0..tape.len()).map(|_| Vec::new()).collect(),
            zero: Vec::new(),
            partials: Vec::new(),
            dispatches: Vec::new(),
            slots: Slots { values: Vec::new(), grads: Vec::new() },
            layers: Vec::new(),
            layer_of: Vec::new(),
        };
        let mut slots =
            Slots { values: Vec::with_capacity(tape.len()), grads: Vec::with_capacity(tape.len()) };
        (plan.layers, plan.layer_of) = find_layers(tape);
        // A value buffer per op (shared by reshapes), and a gradient buffer where one flows
        // back.
        for i in 0..tape.len() {
            let (op, needs_grad) = tape.node(i);
            let len = tape.value(Var::at(i)).len();
            let value = match op {
                Op::Input | Op::Variable if i == image.index() => image_buffer.clone(),
                Op::Input | Op::Variable => {
                    let constant = tape.value(Var::at(i));
                    Rc::new(gpu.upload_tensor(constant))
                }
                Op::Param(id) => params[id.index()].clone(),
                Op::Reshape(x) => slots.values[x.index()].clone(),
                Op::SoftmaxCrossEntropy { .. } if i != loss.index() => {
                    return Err(Error::Gpu("softmax cross-entropy is only compiled as the loss".into()));
                }
                Op::SoftmaxCrossEntropy { .. } => plan.stats.clone(),
                _ => Rc::new(gpu.zeros(len)),
            };
            slots.values.push(value);
            // Inside a fused layer, gradients flow only through its backward dispatch, which
            // writes the whole of the product's (so it needs no zeroing).
            let layer = plan.layer_of[i].map(|l| &plan.layers[l]);
            let inside_layer = layer.is_some_and(|l| i != l.product && i != l.top());
            let written_whole = layer.is_some_and(|l| i == l.product);
            let grad = match op {
                _ if !needs_grad || inside_layer => None,
                Op::Param(id) => Some(grads[id.index()].clone()),
                Op::Reshape(x) => slots.grads[x.index()].clone(),
                _ => Some(Rc::new(gpu.zeros(len))),
            };
            if let Some(g) = &grad {
                if i == loss.index() && !matches!(op, Op::SoftmaxCrossEntropy { .. }) {
                    // The seed of the backward pass, never accumulated into.
                    gpu.write(g, &[1.0f32]);
                } else if !written_whole && !plan.zero.iter().chain(grads).any(|z| Rc::ptr_eq(z, g)) {
                    plan.zero.push(g.clone());
                }
            }
            slots.grads.push(grad);
        }
        for i in 0..tape.len() {
            plan.forward(gpu, tape, i, &slots)?;
        }
        for i in (0..tape.len()).rev() {
            if slots.grads[i].is_some() {
                plan.backward(gpu, tape, i, &slots)?;
            }
        }
        // Buffers (batch norm's running statistics) take their new values once the step's
        // gradients are done; the optimizer leaves them alone.
        for &(id, value) in tape.buffer_updates() {
            let (from, to) = (&slots.values[value.index()], &params[id.index()]);
            let shape = tape.value(value).shape();
            let params = copy_params(shape, (0, &contiguous(shape)), (0, &contiguous(shape)))?;
            plan.push(gpu.dispatch(Kernel::Copy, &params, &[from, to], to.len()));
        }
        plan.slots = slots;
        Ok(plan)
    }

    fn forward(&mut self, gpu: &Gpu, tape: &Tape, i: usize, slots: &Slots) -> Result<()> {
        let (op, _) = tape.node(i);
        let out = &*slots.values[i];
        let shape = |v: Var| tape.value(v).shape();
        let value = |v: Var| &*slots.values[v.index()];
        let out_shape = tape.value(Var::at(i)).shape();
        let n = out.len();
        // A fused layer's bias and activation run in its product's epilogue.
        let layer = self.layer_of[i].map(|l| self.layers[l]).filter(|l| l.fused_forward);
        if layer.is_some_and(|l| l.is_epilogue(i)) {
            return Ok(());
        }
        let layer = layer.filter(|l| l.product == i);
        let (out, epilogue) = match layer {
            Some(l) => {
                let activation = l.activation.map(|(_, act)| act);
                let along =
                    if matches!(op, Op::Conv2d { .. }) { BiasAlong::Rows } else { BiasAlong::Columns };
                let epilogue = Epilogue {
                    bias: l.bias.map(|(_, b)| (value(b), along)),
                    activation,
                    pre: activation.filter(|&a| Epilogue::needs_pre(a)).map(|_| &*slots.values[l.pre()]),
                };
                (&*slots.values[l.output], epilogue)
            }
            None => (out, Epilogue::default()),
        };
        match op {
            Op::Input | Op::Variable | Op::Param(_) | Op::Reshape(_) => {}
            Op::Add(a, b) | Op::Sub(a, b) | Op::Mul(a, b) | Op::Div(a, b) => {
                let code = match op {
                    Op::Add(..) => 0,
                    Op::Sub(..) => 1,
                    Op::Mul(..) => 2,
                    _ => 3,
                };
                let out4 = pad4("binary op", out_shape)?;
                let params =
                    words(&[&[n as u32], &out4, &bcast(shape(*a), &out4)?, &bcast(shape(*b), &out4)?]);
                let code = [("OP", code)];
                self.push(gpu.dispatch(Kernel::Binary.with(&code), &params, &[value(*a), value(*b), out], n));
            }
            Op::MatMul(a, b) => {
                let ProductDims { batch, m, k, n } = product_dims(shape(*a), shape(*b))?;
                let product =
                    Product { m, n, k, batch, a: [k, 1, m * k], b: [n, 1, k * n], accumulate: false };
                let dispatches =
                    matmul(gpu, product, value(*a), value(*b), out, &epilogue, &mut self.partials);
                self.dispatches.extend(dispatches);
            }
            Op::Sum { x, axis } | Op::Mean { x, axis } => {
                let [before, len, after, scale] = reduction(shape(*x), *axis, matches!(op, Op::Mean { .. }));
                let params = [before, len, after, scale];
                self.push(gpu.dispatch(Kernel::Reduce, &params, &[value(*x), out], n));
            }
            Op::Permute { x, axes } => {
                let input = contiguous(shape(*x));
                let from: Vec<usize> = axes.iter().map(|&a| input[a]).collect();
                let params = copy_params(out_shape, (0, &from), (0, &contiguous(out_shape)))?;
                self.push(gpu.dispatch(Kernel::Copy, &params, &[value(*x), out], n));
            }
            Op::Activation { x, act } => {
                let (code, k) = activation_code(*act);
                let code = [("ACTIVATION", code)];
                self.push(gpu.dispatch(
                    Kernel::Unary.with(&code),
                    &[n as u32, k.to_bits()],
                    &[value(*x), out],
                    n,
                ));
            }
            Op::Pow { x, exponent } => {
                self.push(gpu.dispatch(
                    Kernel::Unary.with(&[("ACTIVATION", POW)]),
                    &[n as u32, exponent.to_bits()],
                    &[value(*x), out],
                    n,
                ));
            }
            Op::Dropout { x, rate, mask } => {
                let mask = gpu.upload_tensor(mask);
                let out4 = pad4("dropout", out_shape)?;
                let strides = bcast(out_shape, &out4)?;
                let params = words(&[&[n as u32], &out4, &strides, &strides]);
                let mul = Kernel::Binary.with(&[("OP", 2)]);
                self.push(gpu.dispatch(mul, &params, &[value(*x), &mask, out], n));
                self.dropouts.push((i, *rate));
                self.scratch[i].push(Rc::new(mask));
            }
            Op::Slice { x, axis, start } => {
                let input = contiguous(shape(*x));
                let params =
                    copy_params(out_shape, (start * input[*axis], &input), (0, &contiguous(out_shape)))?;
                self.push(gpu.dispatch(Kernel::Copy, &params, &[value(*x), out], n));
            }
            Op::Concat { inputs, axis } => {
                let whole = contiguous(out_shape);
                let mut start = 0;
                for &input in inputs {
                    let part = shape(input);
                    let params = copy_params(part, (0, &contiguous(part)), (start * whole[*axis], &whole))?;
                    self.push(gpu.dispatch(Kernel::Copy, &params, &[value(input), out], value(input).len()));
                    start += part[*axis];
                }
            }
            Op::Conv2d { x, w, window, .. } => {
                let conv = Conv::new(shape(*x), shape(*w), window);
                let cols = gpu.zeros(conv.rows * conv.width);
                let invocations = conv.rows.div_ceil(IM2COL_RUN) * conv.width;
                let run = [("RUN", IM2COL_RUN as u32)];
                self.push(gpu.dispatch(
                    Kernel::Im2col.with(&run),
                    &conv.params,
                    &[value(*x), &cols],
                    invocations,
                ));
                let product =
                    matmul(gpu, conv.product(), value(*w), &cols, out, &epilogue, &mut self.partials);
                self.dispatches.extend(product);
                self.scratch[i] = vec![Rc::new(cols)];
            }
            Op::MaxPool2d { x, window, .. } | Op::AvgPool2d { x, window } => {
                let average = u32::from(matches!(op, Op::AvgPool2d { .. }));
                let params = pool_params(shape(*x), out_shape, window);
                let argmax = gpu.zeros(if average == 0 { n } else { 1 });
                let average = [("AVERAGE", average)];
                self.push(gpu.dispatch(Kernel::Pool.with(&average), &params, &[value(*x), out, &argmax], n));
                self.scratch[i].push(Rc::new(argmax));
            }
            Op::SoftmaxCrossEntropy { logits, labels, .. } => {
                let (batch, classes) = (shape(*logits)[0], shape(*logits)[1]);
                if self.labels.len() != batch {
                    self.labels = gpu.zeros(batch);
                }
                gpu.write(&self.labels, &labels.iter().map(|&l| u32::from(l)).collect::<Vec<u32>>());
                let dummy;
                let grad = match &slots.grads[logits.index()] {
                    Some(g) => &**g,
                    None => {
                        dummy = gpu.zeros(batch * classes);
                        &dummy
                    }
                };
                let params = [batch as u32, classes as u32];
                self.push(gpu.dispatch_groups(
                    Kernel::SoftmaxCrossEntropy,
                    &params,
                    &[value(*logits), &self.labels, grad, out],
                    (1, 1, 1),
                ));
            }
            Op::Softmax(x) => {
                let params = softmax_params(out_shape);
                self.push(gpu.dispatch(
                    Kernel::Softmax,
                    &params,
                    &[value(*x), value(*x), out],
                    params[0] as usize,
                ));
            }
            Op::LayerNorm { x, gamma, beta, eps, stats } => {
                let d = shape(*gamma)[0];
                let rows = stats.shape()[0];
                let stats = gpu.zeros(2 * rows);
                let params = [rows as u32, d as u32, eps.to_bits()];
                let buffers = [value(*x), value(*gamma), value(*beta), out, &stats];
                self.push(gpu.dispatch(Kernel::LayerNorm, &params, &buffers, rows));
                self.scratch[i].push(Rc::new(stats));
            }
            Op::BatchNorm { x, gamma, beta, eps, .. } => {
                let (params, channels) = batch_norm_params(shape(*x), *eps)?;
                let stats = gpu.zeros(2 * channels);
                let buffers = [value(*x), value(*gamma), value(*beta), out, &stats];
                self.push(gpu.dispatch_groups(Kernel::BatchNorm, &params, &buffers, (channels as u32, 1, 1)));
                self.scratch[i].push(Rc::new(stats));
            }
            Op::RunningAverage { norm, old, stat, momentum, unbias } => {
                let params = [n as u32, *stat as u32, momentum.to_bits(), unbias.to_bits()];
                let stats = self.scratch[norm.index()][0].clone();
                self.push(gpu.dispatch(Kernel::RunningAverage, &params, &[value(*old), &stats, out], n));
            }
            Op::RecurrentCell { cell, x, step, hu, state, .. } => {
                let params = cell_params(shape(*x), shape(*state), *cell, *step);
                let gates = gpu.zeros(shape(*hu).iter().product());
                let buffers = [value(*x), value(*hu), value(*state), out, &gates];
                let kernel = [("CELL", cell_code(*cell))];
                let invocations = params[0] as usize * params[1] as usize;
                self.push(gpu.dispatch(Kernel::RecurrentCell.with(&kernel), &params, &buffers, invocations));
                self.scratch[i].push(Rc::new(gates));
            }
            Op::LogSoftmax(_) | Op::MeanSquaredError(..) => {
                return Err(Error::Gpu(format!(
                    "{} has no GPU kernel; train this model on the CPU",
                    op_name(op)
                )));
            }
        }
        Ok(())
    }

    /// Adds the gradient of value `i` into the gradient of each operand that takes one.
    fn backward(&mut self, gpu: &Gpu, tape: &Tape, i: usize, slots: &Slots) -> Result<()> {
        let (op, _) = tape.node(i);
        let g = &**slots.grads[i].as_ref().expect("called for values with a gradient");
        let shape = |v: Var| tape.value(v).shape();
        let value = |v: Var| &*slots.values[v.index()];
        let grad = |v: Var| slots.grads[v.index()].as_deref();
        let out_shape = tape.value(Var::at(i)).shape();
        // A fused layer's bias and activation are differentiated ahead of its product.
        let layer = self.layer_of[i].map(|l| self.layers[l]);
        if layer.is_some_and(|l| l.product != i) {
            return Ok(());
        }
        let layer_grad = match layer {
            Some(l) => self.epilogue_grad(gpu, tape, &l, slots)?,
            None => None,
        };
        let g = match &layer_grad {
            Some(gz) => &**gz,
            None => g,
        };
        match op {
            // Leaves; a reshape's gradient is its input's buffer; the loss's is fused into its
            // forward kernel.
            Op::Input | Op::Variable | Op::Param(_) | Op::Reshape(_) | Op::SoftmaxCrossEntropy { .. } => {}
            Op::Add(a, b) | Op::Sub(a, b) | Op::Mul(a, b) | Op::Div(a, b) => {
                // The term of binary_grad.wgsl for each operand.
                let (ta, tb) = match op {
                    Op::Add(..) => (0, 0),
                    Op::Sub(..) => (0, 1),
                    Op::Mul(..) => (2, 3),
                    _ => (4, 5),
                };
                let out4 = pad4("binary op", out_shape)?;
                let (sa, sb) = (bcast(shape(*a), &out4)?, bcast(shape(*b), &out4)?);
                for (operand, term) in [(*a, ta), (*b, tb)] {
                    if let Some(target) = grad(operand) {
                        let target4 = pad4("binary op", shape(operand))?;
                        let params = words(&[&[target.len() as u32], &out4, &target4, &sa, &sb]);
                        let buffers = [g, value(*a), value(*b), target];
                        let term = [("TERM", term)];
                        self.push(gpu.dispatch(
                            Kernel::BinaryGrad.with(&term),
                            &params,
                            &buffers,
                            target.len(),
                        ));
                    }
                }
            }
            Op::MatMul(a, b) => {
                let ProductDims { batch, m, k, n } = product_dims(shape(*a), shape(*b))?;
                if let Some(ga) = grad(*a) {
                    // dA [m, k] += dC · B^T, for each matrix of the batch
                    let product = Product {
                        m,
                        n: k,
                        k: n,
                        batch,
                        a: [n, 1, m * n],
                        b: [1, n, k * n],
                        accumulate: true,
                    };
                    let dispatches =
                        matmul(gpu, product, g, value(*b), ga, &Epilogue::default(), &mut self.partials);
                    self.dispatches.extend(dispatches);
                }
                if let Some(gb) = grad(*b) {
                    // dB [k, n] += A^T · dC
                    let product = Product {
                        m: k,
                        n,
                        k: m,
                        batch,
                        a: [1, k, m * k],
                        b: [n, 1, m * n],
                        accumulate: true,
                    };
                    let dispatches =
                        matmul(gpu, product, value(*a), g, gb, &Epilogue::default(), &mut self.partials);
                    self.dispatches.extend(dispatches);
                }
            }
            Op::Sum { x, axis } | Op::Mean { x, axis } => {
                if let Some(gx) = grad(*x) {
                    let params = reduction(shape(*x), *axis, matches!(op, Op::Mean { .. }));
                    self.push(gpu.dispatch(Kernel::ReduceGrad, &params, &[g, gx], gx.len()));
                }
            }
            Op::Permute { x, axes } => {
                if let Some(gx) = grad(*x) {
                    let input = contiguous(shape(*x));
                    let to: Vec<usize> = axes.iter().map(|&a| input[a]).collect();
                    let params = copy_params(out_shape, (0, &contiguous(out_shape)), (0, &to))?;
                    self.push(gpu.dispatch(Kernel::Copy.with(&ACCUMULATE), &params, &[g, gx], g.len()));
                }
            }
            Op::Activation { x, act } => {
                if let Some(gx) = grad(*x) {
                    let (code, k) = activation_code(*act);
                    let code = [("ACTIVATION", code)];
                    let buffers = [value(*x), &*slots.values[i], g, gx];
                    let params = [gx.len() as u32, k.to_bits()];
                    self.push(gpu.dispatch(Kernel::UnaryGrad.with(&code), &params, &buffers, gx.len()));
                }
            }
            Op::Pow { x, exponent } => {
                if let Some(gx) = grad(*x) {
                    let params = [gx.len() as u32, exponent.to_bits()];
                    let buffers = [value(*x), &*slots.values[i], g, gx];
                    let pow = Kernel::UnaryGrad.with(&[("ACTIVATION", POW)]);
                    self.push(gpu.dispatch(pow, &params, &buffers, gx.len()));
                }
            }
            Op::Dropout { x, .. } => {
                if let Some(gx) = grad(*x) {
                    let out4 = pad4("dropout", out_shape)?;
                    let strides = bcast(out_shape, &out4)?;
                    let params = words(&[&[gx.len() as u32], &out4, &out4, &strides, &strides]);
                    let mask = &self.scratch[i][0];
                    // g times b, the mask.
                    let times_mask = Kernel::BinaryGrad.with(&[("TERM", 2)]);
                    let dispatch = gpu.dispatch(times_mask, &params, &[g, value(*x), mask, gx], gx.len());
                    self.push(dispatch);
                }
            }
            Op::Slice { x, axis, start } => {
                if let Some(gx) = grad(*x) {
                    let input = contiguous(shape(*x));
                    let params =
                        copy_params(out_shape, (0, &contiguous(out_shape)), (start * input[*axis], &input))?;
                    self.push(gpu.dispatch(Kernel::Copy.with(&ACCUMULATE), &params, &[g, gx], g.len()));
                }
            }
            Op::Concat { inputs, axis } => {
                let whole = contiguous(out_shape);
                let mut start = 0;
                for &input in inputs {
                    let part = shape(input);
                    if let Some(gi) = grad(input) {
                        let params =
                            copy_params(part, (start * whole[*axis], &whole), (0, &contiguous(part)))?;
                        self.push(gpu.dispatch(Kernel::Copy.with(&ACCUMULATE), &params, &[g, gi], gi.len()));
                    }
                    start += part[*axis];
                }
            }
            Op::Conv2d { x, w, window, .. } => {
                let conv = Conv::new(shape(*x), shape(*w), window);
                let (b, f, s) = (conv.batch, conv.filters, conv.positions);
                // The output gradient as [rows, filters], rows in (batch, y, x) order: a fused
                // layer's epilogue_grad wrote it so.
                let g_mat = match &layer_grad {
                    Some(g_mat) => g_mat.clone(),
                    None => {
                        let g_mat = Rc::new(gpu.zeros(g.len()));
                        let params = copy_params(&[b, f, s], (0, &[f * s, s, 1]), (0, &[s * f, 1, f]))?;
                        self.push(gpu.dispatch(Kernel::Copy, &params, &[g, &g_mat], g.len()));
                        g_mat
                    }
                };
                if let Some(gw) = grad(*w) {
                    // dW [filters, width] += g_mat^T · cols
                    let dims = (conv.filters, conv.width, conv.rows);
                    let cols = &self.scratch[i][0];
                    let product = Product::single(dims, (1, conv.filters), (conv.width, 1), true);
                    let product =
                        matmul(gpu, product, &g_mat, cols, gw, &Epilogue::default(), &mut self.partials);
                    self.dispatches.extend(product);
                }
                if let Some(gx) = grad(*x) {
                    // dcols [rows, width] = g_mat · W, then col2im adds it back onto the input.
                    let dcols = gpu.zeros(conv.rows * conv.width);
                    let dims = (conv.rows, conv.width, conv.filters);
                    let product = Product::single(dims, (conv.filters, 1), (conv.width, 1), false);
                    let product = matmul(
                        gpu,
                        product,
                        &g_mat,
                        value(*w),
                        &dcols,
                        &Epilogue::default(),
                        &mut self.partials,
                    );
                    self.dispatches.extend(product);
                    self.push(gpu.dispatch(Kernel::Col2im, &conv.params, &[&dcols, gx], gx.len()));
                    self.scratch[i].push(Rc::new(dcols));
                }
                self.scratch[i].push(g_mat);
            }
            Op::MaxPool2d { x, window, .. } | Op::AvgPool2d { x, window } => {
                if let Some(gx) = grad(*x) {
                    let average = u32::from(matches!(op, Op::AvgPool2d { .. }));
                    let params = pool_params(shape(*x), out_shape, window);
                    let buffers = [g, &self.scratch[i][0], gx];
                    let average = [("AVERAGE", average)];
                    let dispatch = gpu.dispatch(Kernel::PoolGrad.with(&average), &params, &buffers, gx.len());
                    self.push(dispatch);
                }
            }
            Op::Softmax(x) => {
                if let Some(gx) = grad(*x) {
                    let params = softmax_params(out_shape);
                    let backward = Kernel::Softmax.with(&[("BACKWARD", 1)]);
                    let buffers = [&*slots.values[i], g, gx];
                    self.push(gpu.dispatch(backward, &params, &buffers, params[0] as usize));
                }
            }
            Op::LayerNorm { x, gamma, beta, stats, .. } => {
                let (rows, d) = (stats.shape()[0], shape(*gamma)[0]);
                let spare = gpu.zeros(1);
                let targets = [grad(*x), grad(*gamma), grad(*beta)];
                let wanted = targets.map(|t| t.is_some());
                let [dx, dgamma, dbeta] = targets.map(|t| t.unwrap_or(&spare));
                let saved = self.scratch[i][0].clone();
                let buffers = [g, value(*x), value(*gamma), &*saved, dx, dgamma, dbeta];
                let params = [rows as u32, d as u32];
                if wanted[0] {
                    self.push(gpu.dispatch(Kernel::LayerNormGrad, &params, &buffers, rows));
                }
                if wanted[1] || wanted[2] {
                    let kernel = [
                        ("PARAMETERS", 1),
                        ("DGAMMA", u32::from(wanted[1])),
                        ("DBETA", u32::from(wanted[2])),
                    ];
                    self.push(gpu.dispatch(Kernel::LayerNormGrad.with(&kernel), &params, &buffers, d));
                }
            }
            Op::BatchNorm { x, gamma, beta, eps, .. } => {
                let (params, channels) = batch_norm_params(shape(*x), *eps)?;
                let spare = gpu.zeros(1);
                let targets = [grad(*x), grad(*gamma), grad(*beta)];
                let [wants_dx, wants_dgamma, wants_dbeta] = targets.map(|t| u32::from(t.is_some()));
                let kernel = [("DX", wants_dx), ("DGAMMA", wants_dgamma), ("DBETA", wants_dbeta)];
                let [dx, dgamma, dbeta] = targets.map(|t| t.unwrap_or(&spare));
                let saved = self.scratch[i][0].clone();
                let buffers = [g, value(*x), value(*gamma), &*saved, dx, dgamma, dbeta];
                let groups = (channels as u32, 1, 1);
                self.push(gpu.dispatch_groups(
                    Kernel::BatchNormGrad.with(&kernel),
                    &params,
                    &buffers,
                    groups,
                ));
            }
            // Never reached: its node needs no gradient.
            Op::RunningAverage { .. } => {}
            Op::RecurrentCell { cell, x, step, hu, state, .. } => {
                let spare = gpu.zeros(1);
                let targets = [grad(*x), grad(*hu), grad(*state)];
                let params = cell_params(shape(*x), shape(*state), *cell, *step);
                let kernel = [
                    ("CELL", cell_code(*cell)),
                    ("DX", u32::from(targets[0].is_some())),
                    ("DHU", u32::from(targets[1].is_some())),
                    ("DSTATE", u32::from(targets[2].is_some())),
                ];
                let [dx, dhu, dstate] = targets.map(|t| t.unwrap_or(&spare));
                let buffers = [g, value(*hu), value(*state), &self.scratch[i][0], dx, dhu, dstate];
                let invocations = params[0] as usize * params[1] as usize;
                self.push(gpu.dispatch(
                    Kernel::RecurrentCellGrad.with(&kernel),
                    &params,
                    &buffers,
                    invocations,
                ));
            }
            Op::LogSoftmax(_) | Op::MeanSquaredError(..) => {
                return Err(Error::Gpu(format!("{} has no GPU kernel", op_name(op))));
            }
        }
        Ok(())
    }

    /// The gradient at layer `l`'s product, from its output's, back through the activation
    /// (epilogue_grad.wgsl), the bias's gradient summed on the way, in the product's own
    /// gradient buffer (which nothing else reads): a dense layer's `[rows, units]`, a
    /// convolution's as `[rows, filters]`, the layout its backward products read. None when
    /// no gradient reaches the output.
    fn epilogue_grad(
        &mut self,
        gpu: &Gpu,
        tape: &Tape,
        l: &Layer,
        slots: &Slots,
    ) -> Result<Option<Rc<Buffer>>> {
        let Some(g) = slots.grads[l.top()].as_deref() else { return Ok(None) };
        let shape = tape.value(Var::at(l.product)).shape();
        let gz = slots.grads[l.product].clone().expect("a fused layer's product needs a gradient");
        let (outer, channels, inner, strides) = match tape.node(l.product).0 {
            Op::Conv2d { .. } => {
                let (b, f, s) = (shape[0], shape[1], shape[2] * shape[3]);
                (b, f, s, [s * f, 1, f])
            }
            _ => (shape[0], shape[1], 1, [shape[1], 1, 0]),
        };
        let (code, k) = l.activation.map_or((NO_ACTIVATION, 0.0), |(_, act)| activation_code(act));
        let out = l.activation.map_or(g, |_| &*slots.values[l.output]);
        let pre = match l.activation {
            Some((_, act)) if Epilogue::needs_pre(act) => &*slots.values[l.pre()],
            _ => out,
        };
        let spare = gpu.zeros(1);
        let bias_grad = l.bias.and_then(|(_, b)| slots.grads[b.index()].as_deref());
        let mut params: Vec<u32> = [outer, channels, inner, strides[0], strides[1], strides[2]]
            .map(|v| v as u32)
            .into_iter()
            .chain([k.to_bits()])
            .collect();
        let spare_argmax = gpu.zeros(1);
        let (pooled, average, argmax) = match l.pool.map(|at| (at, tape.node(at).0)) {
            Some((at, op @ (Op::MaxPool2d { window, .. } | Op::AvgPool2d { window, .. }))) => {
                let pooled = pool_params(shape, tape.value(Var::at(at)).shape(), window);
                (Some(pooled), matches!(op, Op::AvgPool2d { .. }), &*self.scratch[at][0])
            }
            _ => (None, false, &spare_argmax),
        };
        params.extend(pooled.unwrap_or_default());
        // Invocations per channel: one per 256 elements, a power of two up to the workgroup's
        // 64.
        let lanes = (outer * inner / 256).next_power_of_two().clamp(1, 64);
        params.push(lanes as u32);
        let groups = channels.div_ceil(64 / lanes) as u32;
        let buffers = [g, pre, out, &gz, bias_grad.unwrap_or(&spare), argmax];
        let constants = [
            ("ACTIVATION", code),
            ("BIAS_GRAD", u32::from(bias_grad.is_some())),
            ("POOLED", u32::from(pooled.is_some())),
            ("AVERAGE", u32::from(average)),
        ];
        let kernel = Kernel::EpilogueGrad.with(&constants);
        self.push(gpu.dispatch_groups(kernel, &params, &buffers, (groups, 1, 1)));
        Ok(Some(gz))
    }

    fn push(&mut self, dispatch: Dispatch) {
        self.dispatches.push(dispatch);
    }
}

/// The layers whose bias and activation are fused with their product (see [`Layer`]), and
/// per tape position the layer it belongs to.
fn find_layers(tape: &Tape) -> (Vec<Layer>, Vec<Option<usize>>) {
    let mut users = vec![Vec::new(); tape.len()];
    for i in 0..tape.len() {
        for v in tape.node(i).0.operands() {
            users[v.index()].push(i);
        }
    }
    // A buffer update reads its value after the step.
    for &(_, v) in tape.buffer_updates() {
        users[v.index()].push(usize::MAX);
    }
    let only_user = |v: usize| match users[v][..] {
        [user] => Some(user),
        _ => None,
    };
    let shape = |v: Var| tape.value(v).shape();
    let (mut layers, mut layer_of) = (Vec::new(), vec![None; tape.len()]);
    for i in 0..tape.len() {
        let (op, needs_grad) = tape.node(i);
        let (product, bias_shape) = match op {
            Op::MatMul(a, b) if shape(*a).len() == 2 && shape(*b).len() == 2 => {
                let ((m, k), n) = ((shape(*a)[0], shape(*a)[1]), shape(*b)[1]);
                (Product::single((m, n, k), (k, 1), (n, 1), false), vec![n])
            }
            Op::Conv2d { x, w, window, .. } => {
                let conv = Conv::new(shape(*x), shape(*w), window);
                (conv.product(), vec![conv.filters, 1, 1])
            }
            _ => continue,
        };
        let channels = bias_shape[0];
        // epilogue_grad.wgsl runs at most a workgroup per channel.
        if !needs_grad || channels > 65_535 {
            continue;
        }
        let mut output = i;
        let bias = only_user(i).and_then(|add| match tape.node(add).0 {
            Op::Add(x, b) if x.index() == i && b.index() != i && shape(*b) == bias_shape => Some((add, *b)),
            _ => None,
        });
        if let Some((add, _)) = bias {
            output = add;
        }
        let activation = only_user(output).and_then(|user| match tape.node(user).0 {
            Op::Activation { x, act } if x.index() == output => Some((user, *act)),
            _ => None,
        });
        if let Some((user, _)) = activation {
            output = user;
        }
        let pool = only_user(output).filter(|&user| match tape.node(user).0 {
            Op::MaxPool2d { x, .. } | Op::AvgPool2d { x, .. } => x.index() == output,
            _ => false,
        });
        if output == i && pool.is_none() {
            continue;
        }
        let fused_forward = split_k(&product).0 == 1;
        let layer = Layer { product: i, bias, activation, output, pool, fused_forward };
        for at in [Some(i), bias.map(|b| b.0), activation.map(|a| a.0), pool].into_iter().flatten() {
            layer_of[at] = Some(layers.len());
        }
        layers.push(layer);
    }
    (layers, layer_of)
}

/// Runs the computation recorded on `tape` once on the GPU and returns the value of `output`
/// and the gradient of the one-element `loss` with respect to each of `wrt` (variables on the
/// tape), to test the kernels against the CPU backend, natively and in a browser.
///
/// # Errors
/// When an op has no GPU kernel or the device is lost.
pub async fn run_on_gpu(
    gpu: &Gpu,
    tape: &Tape<'_>,
    output: Var,
    loss: Var,
    wrt: &[Var],
) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
    let plan = Plan::compile(gpu, tape, None, loss, &[], &[])?;
    let zero: Vec<&Buffer> = plan.zero.iter().map(|b| &**b).collect();
    let dispatches: Vec<&Dispatch> = plan.dispatches.iter().collect();
    gpu.run(&zero, &dispatches);
    let mut buffers = vec![&*plan.slots.values[output.index()]];
    for v in wrt {
        match &plan.slots.grads[v.index()] {
            Some(g) => buffers.push(g),
            None => return Err(Error::Gpu(format!("value {} has no gradient", v.index()))),
        }
    }
    let readbacks: Vec<Readback> = buffers.iter().map(|b| gpu.readback(b.len())).collect();
    for (buffer, readback) in buffers.iter().zip(&readbacks) {
        gpu.start_read(buffer, readback);
    }
    while !readbacks.iter().all(Readback::is_settled) {
        // Natively this waits for the GPU; a browser maps the buffers between its tasks.
        gpu.poll(true)?;
        #[cfg(target_arch = "wasm32")]
        next_task().await;
    }
    let mut results = Vec::with_capacity(readbacks.len());
    for readback in &readbacks {
        results.push(gpu.finish_read::<f32>(readback)?.expect("settled"));
    }
    let mut value = results.remove(0);
    value.truncate(tape.value(output).len());
    Ok((value, results))
}

/// Lets the browser's event loop run one task (where buffer mappings complete).
#[cfg(target_arch = "wasm32")]
async fn next_task() {
    use wasm_bindgen::JsCast;
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        let global = js_sys::global();
        let set_timeout = js_sys::Reflect::get(&global, &"setTimeout".into())
            .ok()
            .and_then(|f| f.dyn_into::<js_sys::Function>().ok());
        match set_timeout {
            Some(set_timeout) => {
                let _ = set_timeout.call2(&global, &resolve, &0.into());
            }
            None => {
                let _ = resolve.call0(&wasm_bindgen::JsValue::NULL);
            }
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// About as many invocations as fill a large GPU: a product whose 8 x 8 blocks are fewer gets
/// its k split (see matmul.wgsl), into pieces of at least `MIN_CHUNK`, so that only long sums
/// (a convolution's weight gradient, over every position of every image) are split and the
/// products of a small dense layer stay one dispatch, with their epilogue.
const INVOCATIONS: usize = 16_384;
const MIN_CHUNK: usize = 1024;

/// How many pieces `product`'s k is split into, and the length of each.
fn split_k(product: &Product) -> (usize, usize) {
    let Product { m, n, k, batch, .. } = *product;
    let tiles = m.div_ceil(8) * n.div_ceil(8) * batch;
    let chunk = k.div_ceil((INVOCATIONS / tiles).min(k / MIN_CHUNK).max(1)).max(1);
    (k.div_ceil(chunk).max(1), chunk)
}

/// The dispatches of a product: one, through `epilogue`, or with k split (and no epilogue),
/// the partial products and their sum, the buffer of partial products pushed onto `partials`
/// to live as long as the dispatches.
fn matmul(
    gpu: &Gpu,
    product: Product,
    a: &Buffer,
    b: &Buffer,
    c: &Buffer,
    epilogue: &Epilogue,
    partials: &mut Vec<Buffer>,
) -> Vec<Dispatch> {
    let Product { m, n, k, batch, accumulate, .. } = product;
    let (splits, chunk) = split_k(&product);
    if splits == 1 {
        return vec![product_dispatch(gpu, product, (1, k), [a, b, c], epilogue)];
    }
    // Each matrix's partial products side by side: [batch, splits, m n].
    let parts = gpu.zeros(batch * splits * m * n);
    let partial = product_dispatch(
        gpu,
        Product { accumulate: false, ..product },
        (splits, chunk),
        [a, b, &parts],
        &Epilogue::default(),
    );
    // reduce.wgsl over [batch, splits, m n]
    let sum = [batch as u32, splits as u32, (m * n) as u32, 1f32.to_bits()];
    let reduce = if accumulate { Kernel::Reduce.with(&ACCUMULATE) } else { Kernel::Reduce.into() };
    let sum = gpu.dispatch(reduce, &sum, &[&parts, c], batch * m * n);
    partials.push(parts);
    vec![partial, sum]
}

/// The kernels index with up to four axes; shorter shapes get leading axes of 1.
fn pad4(op: &str, shape: &[usize]) -> Result<[u32; 4]> {
    if shape.len() > 4 {
        return Err(Error::Gpu(format!("{op} on shape {shape:?}: the GPU kernels take at most four axes")));
    }
    let mut out = [1; 4];
    for (o, &d) in out[4 - shape.len()..].iter_mut().zip(shape) {
        *o = d as u32;
    }
    Ok(out)
}

/// Row-major strides of `shape`.
fn contiguous(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// The strides that read an operand of `shape` broadcast to `out`: 0 along broadcast axes.
fn bcast(shape: &[usize], out: &[u32; 4]) -> Result<[u32; 4]> {
    let padded = pad4("broadcast", shape)?;
    let strides = contiguous(&padded.map(|d| d as usize));
    let mut result = [0; 4];
    for axis in 0..4 {
        result[axis] = if padded[axis] == 1 && out[axis] != 1 { 0 } else { strides[axis] as u32 };
    }
    Ok(result)
}

fn words(parts: &[&[u32]]) -> Vec<u32> {
    parts.concat()
}

/// reduce.wgsl's parameters for `axis` of `shape`.
fn reduction(shape: &[usize], axis: usize, mean: bool) -> [u32; 4] {
    let before: usize = shape[..axis].iter().product();
    let after: usize = shape[axis + 1..].iter().product();
    let scale = if mean { 1.0 / shape[axis] as f32 } else { 1.0 };
    [before as u32, shape[axis] as u32, after as u32, scale.to_bits()]
}

/// The variant of copy.wgsl and reduce.wgsl that adds to its output.
const ACCUMULATE: [(&str, u32); 1] = [("ACCUMULATE", 1)];

/// copy.wgsl's parameters for a view of `shape` read at (offset, strides) and written at
/// (offset, strides).
fn copy_params(
    shape: &[usize],
    (from_offset, from): (usize, &[usize]),
    (to_offset, to): (usize, &[usize]),
) -> Result<Vec<u32>> {
    let shape4 = pad4("copy", shape)?;
    let pad = |strides: &[usize]| {
        let mut out = [0u32; 4];
        for (o, &s) in out[4 - strides.len()..].iter_mut().zip(strides) {
            *o = s as u32;
        }
        out
    };
    let count: usize = shape.iter().product();
    Ok(words(&[&[count as u32], &shape4, &[from_offset as u32], &pad(from), &[to_offset as u32], &pad(to)]))
}

/// Rows of the im2col matrix that one invocation of im2col.wgsl fills (its RUN).
const IM2COL_RUN: usize = 8;

/// The sizes of a convolution as im2col.wgsl and the matrix products see them.
struct Conv {
    batch: usize,
    filters: usize,
    /// Output positions per image.
    positions: usize,
    /// Rows of the im2col matrix: batch * positions.
    rows: usize,
    /// Its columns: channels * kh * kw.
    width: usize,
    params: [u32; 12],
}

impl Conv {
    /// The forward product, per image [filters, positions] = W · cols^T: W [filters, width]
    /// shared by every image, each image's [positions, width] rows of cols read transposed,
    /// so that the product lands in the output's [batch, filters, positions].
    fn product(&self) -> Product {
        let (s, width) = (self.positions, self.width);
        Product {
            m: self.filters,
            n: s,
            k: width,
            batch: self.batch,
            a: [width, 1, 0],
            b: [1, width, s * width],
            accumulate: false,
        }
    }

    fn new(x: &[usize], w: &[usize], window: &Window) -> Conv {
        let (batch, channels, h, wd) = (x[0], x[1], x[2], x[3]);
        let (oh, ow) = window.output_size((h, wd)).expect("checked when recorded");
        let (kh, kw) = window.kernel;
        let params = [
            batch,
            channels,
            h,
            wd,
            kh,
            kw,
            window.stride.0,
            window.stride.1,
            window.padding.0,
            window.padding.2,
            oh,
            ow,
        ]
        .map(|v| v as u32);
        Conv {
            batch,
            filters: w[0],
            positions: oh * ow,
            rows: batch * oh * ow,
            width: channels * kh * kw,
            params,
        }
    }
}

/// softmax.wgsl's parameters: rows, row length.
fn softmax_params(shape: &[usize]) -> [u32; 2] {
    let len = shape.last().copied().unwrap_or(1);
    [(shape.iter().product::<usize>() / len) as u32, len as u32]
}

/// batch_norm.wgsl's parameters (batch, channels, positions, eps) and its workgroups, one
/// per channel.
fn batch_norm_params(x: &[usize], eps: f32) -> Result<(Vec<u32>, usize)> {
    let channels = x[1];
    if channels > 65_535 {
        return Err(Error::Gpu(format!(
            "batch norm over {channels} channels: the GPU kernel takes at most 65,535"
        )));
    }
    let positions = x[2..].iter().product::<usize>();
    Ok((vec![x[0] as u32, channels as u32, positions as u32, eps.to_bits()], channels))
}

/// recurrent_cell.wgsl's parameters: batch, units, time, step (`cell` for its units).
fn cell_params(x: &[usize], state: &[usize], cell: Cell, step: usize) -> [u32; 4] {
    [x[0], state[1] / cell.state_blocks(), x[1], step].map(|v| v as u32)
}

/// cell.wgsl's CELL for `cell`.
fn cell_code(cell: Cell) -> u32 {
    match cell {
        Cell::Simple => 0,
        Cell::Lstm => 1,
        Cell::Gru => 2,
    }
}

/// pool.wgsl's parameters.
fn pool_params(x: &[usize], out: &[usize], window: &Window) -> [u32; 9] {
    [
        x[0] * x[1],
        x[2],
        x[3],
        window.kernel.0,
        window.kernel.1,
        window.stride.0,
        window.stride.1,
        out[2],
        out[3],
    ]
    .map(|v| v as u32)
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::LogSoftmax(_) => "log_softmax",
        Op::MeanSquaredError(..) => "mean_squared_error",
        _ => "this op",
    }
}
