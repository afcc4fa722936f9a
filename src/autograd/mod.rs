//! Reverse-mode automatic differentiation, define-by-run.
//!
//! A [`Tape`] records every op as it runs, together with whatever its backward rule needs
//! (`ops.rs`); [`Tape::backward`] walks the record in reverse and applies the rules, which all
//! sit in one `match` in `backward.rs`. Parameters live outside the tape in a [`Params`] store
//! that the tape borrows, so a training step reads weights without copying them and the
//! gradients it returns are accumulated into the store afterwards.
//!
//! A tape made with [`Tape::inference`] records no graph: ops compute their values and keep
//! nothing for a backward pass. A tape made with [`Tape::with_pool`] takes the memory of its
//! values, gradients and saved state from a [`Pool`] and gives it back at
//! [`Tape::into_pool`], so a training loop allocates no tensor memory after its first step.

mod backward;
mod ops;
mod params;
mod pool;

use std::cell::RefCell;

pub use backward::Gradients;
pub use ops::RunningStatistics;
#[cfg(feature = "webgpu")]
pub(crate) use ops::{product_dims, Op, ProductDims};
pub use params::{ParamId, Parameter, Params};
pub use pool::Pool;

use crate::tensor::Tensor;

/// A handle to a value recorded on a [`Tape`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Var(usize);

#[cfg(feature = "webgpu")]
impl Var {
    /// The position of the value on its tape, in recording order.
    pub(crate) fn index(self) -> usize {
        self.0
    }

    /// The value at position `i` of a tape.
    pub(crate) fn at(i: usize) -> Var {
        Var(i)
    }
}

/// The record of one forward pass.
pub struct Tape<'p> {
    params: &'p Params,
    nodes: Vec<Node>,
    /// The node of each parameter already on the tape, so a parameter used twice (a recurrent
    /// weight at every time step) is one node whose gradient sums all its uses.
    param_nodes: Vec<Option<Var>>,
    recording: bool,
    /// Keep every op, even those no gradient flows through, so that the whole computation
    /// can be replayed elsewhere (the GPU backend's plans).
    keep_ops: bool,
    /// New values for buffers (batch-norm running statistics) computed in a training forward
    /// pass, applied by the trainer once the step is done.
    buffer_updates: Vec<(ParamId, Var)>,
    /// Where new values and gradients get their memory; a cell because the backward pass,
    /// which reads the tape, recycles its temporaries as it goes.
    pool: RefCell<Pool>,
}

struct Node {
    value: Value,
    op: ops::Op,
    needs_grad: bool,
}

enum Value {
    Owned(Tensor),
    /// Borrowed from the parameter store rather than copied onto the tape.
    Param(ParamId),
}

impl<'p> Tape<'p> {
    /// A tape that records the graph, for training.
    pub fn new(params: &'p Params) -> Self {
        Self::with_recording(params, true)
    }

    /// A tape that records nothing, for inference.
    pub fn inference(params: &'p Params) -> Self {
        Self::with_recording(params, false)
    }

    /// A recording tape that also keeps the ops of values needing no gradient, for the GPU
    /// backend to compile the whole step from.
    #[cfg(feature = "webgpu")]
    pub(crate) fn tracing(params: &'p Params) -> Self {
        Tape { keep_ops: true, ..Self::with_recording(params, true) }
    }

    /// A recording tape whose values and gradients take their memory from `pool`, for a
    /// training loop that hands the pool from one step to the next (see [`Tape::into_pool`]).
    pub fn with_pool(params: &'p Params, mut pool: Pool) -> Self {
        let mut tape = Self::new(params);
        tape.nodes = std::mem::take(&mut pool.nodes);
        tape.pool = RefCell::new(pool);
        tape
    }

    fn with_recording(params: &'p Params, recording: bool) -> Self {
        Tape {
            params,
            nodes: Vec::new(),
            param_nodes: vec![None; params.len()],
            recording,
            keep_ops: false,
            buffer_updates: Vec::new(),
            pool: RefCell::default(),
        }
    }

    /// Ends the tape, giving the memory of every value and saved state back to its pool.
    pub fn into_pool(self) -> Pool {
        let Tape { mut nodes, pool, .. } = self;
        let mut pool = pool.into_inner();
        for node in nodes.drain(..) {
            if let Value::Owned(t) = node.value {
                pool.give(t);
            }
            node.op.recycle(&mut pool);
        }
        pool.nodes = nodes;
        pool
    }

    /// A tensor of `shape` from the pool, its elements left over: the caller writes them all.
    fn alloc(&self, shape: &[usize]) -> Tensor {
        self.pool.borrow_mut().take(shape)
    }

    fn alloc_zeros(&self, shape: &[usize]) -> Tensor {
        self.pool.borrow_mut().zeros(shape)
    }

    fn recycle(&self, t: Tensor) {
        self.pool.borrow_mut().give(t);
    }

    /// How many values are on the tape.
    #[cfg(feature = "webgpu")]
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The buffer updates recorded so far, as values on the tape.
    #[cfg(feature = "webgpu")]
    pub(crate) fn buffer_updates(&self) -> &[(ParamId, Var)] {
        &self.buffer_updates
    }

    /// The value of `var` if it is on this tape.
    #[cfg(feature = "webgpu")]
    pub(crate) fn node_checked(&self, var: Var) -> Option<&Tensor> {
        (var.0 < self.nodes.len()).then(|| self.value(var))
    }

    /// The op that made value `i` and whether a gradient flows back through it.
    #[cfg(feature = "webgpu")]
    pub(crate) fn node(&self, i: usize) -> (&ops::Op, bool) {
        (&self.nodes[i].op, self.nodes[i].needs_grad)
    }

    /// Whether this tape records a graph for [`Tape::backward`].
    pub fn is_recording(&self) -> bool {
        self.recording
    }

    /// Data that needs no gradient (input images, targets).
    pub fn input(&mut self, value: Tensor) -> Var {
        self.push_leaf(Value::Owned(value), ops::Op::Input, false)
    }

    /// Zeros of `shape` that need no gradient (a recurrent layer's first state).
    pub fn zeros(&mut self, shape: &[usize]) -> Var {
        let value = self.alloc_zeros(shape);
        self.input(value)
    }

    /// A leaf whose gradient [`Tape::backward`] keeps, such as input pixels for a saliency map.
    pub fn variable(&mut self, value: Tensor) -> Var {
        let recording = self.recording;
        self.push_leaf(Value::Owned(value), ops::Op::Variable, recording)
    }

    /// The parameter `id` of the borrowed store.
    pub fn param(&mut self, id: ParamId) -> Var {
        if let Some(var) = self.param_nodes[id.index()] {
            return var;
        }
        let recording = self.recording;
        let var = self.push_leaf(Value::Param(id), ops::Op::Param(id), recording);
        self.param_nodes[id.index()] = Some(var);
        var
    }

    /// The value of `var`.
    pub fn value(&self, var: Var) -> &Tensor {
        match &self.nodes[var.0].value {
            Value::Owned(t) => t,
            Value::Param(id) => &self.params.get(*id).value,
        }
    }

    /// The current value of parameter `id`, without putting it on the tape.
    pub fn value_of_param(&self, id: ParamId) -> &Tensor {
        &self.params.get(id).value
    }

    /// The value of a one-element `var` as a number.
    ///
    /// # Panics
    /// When `var` holds more or fewer than one element.
    #[track_caller]
    pub fn scalar(&self, var: Var) -> f32 {
        let value = self.value(var);
        assert_eq!(value.len(), 1, "scalar: shape {:?} is not a single number", value.shape());
        value.iter().next().copied().unwrap_or_default()
    }

    /// Records a new value for a buffer, to be stored once the step is done.
    pub fn update_buffer(&mut self, id: ParamId, value: Var) {
        self.buffer_updates.push((id, value));
    }

    /// The buffer updates recorded so far.
    pub fn take_buffer_updates(&mut self) -> Vec<(ParamId, Tensor)> {
        let updates = std::mem::take(&mut self.buffer_updates);
        updates.into_iter().map(|(id, var)| (id, self.value(var).clone())).collect()
    }

    fn push_leaf(&mut self, value: Value, op: ops::Op, needs_grad: bool) -> Var {
        self.nodes.push(Node { value, op, needs_grad });
        Var(self.nodes.len() - 1)
    }

    /// Records the result of an op whose operands are `inputs`. Off the record, or when no
    /// operand needs a gradient, the op's saved state goes back to the pool on the spot.
    fn push(&mut self, value: Tensor, op: ops::Op, inputs: &[Var]) -> Var {
        let needs_grad = self.recording && inputs.iter().any(|v| self.nodes[v.0].needs_grad);
        let op = if needs_grad || self.keep_ops {
            op
        } else {
            op.recycle(&mut self.pool.borrow_mut());
            ops::Op::Input
        };
        self.push_leaf(Value::Owned(value), op, needs_grad)
    }
}
