//! The store of trainable parameters and their accumulated gradients.

use crate::tensor::Tensor;

use super::Gradients;

/// A handle to a parameter in a [`Params`] store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamId(usize);

impl ParamId {
    pub(crate) fn index(self) -> usize {
        self.0
    }
}

/// A tensor of model state with its name in saved files: a trainable parameter with its
/// accumulated gradient, or a buffer (running statistics) that layers update themselves.
#[derive(Clone, Debug)]
pub struct Parameter {
    pub name: String,
    pub value: Tensor,
    pub grad: Tensor,
    /// False for buffers, which optimizers leave alone.
    pub trainable: bool,
}

/// All the parameters of a model, in the order they were created.
#[derive(Clone, Debug, Default)]
pub struct Params {
    list: Vec<Parameter>,
}

impl Params {
    /// Adds a trainable parameter with a zero gradient.
    pub fn add(&mut self, name: impl Into<String>, value: Tensor) -> ParamId {
        self.push(name.into(), value, true)
    }

    /// Adds a buffer: saved with the model, never trained.
    pub fn add_buffer(&mut self, name: impl Into<String>, value: Tensor) -> ParamId {
        self.push(name.into(), value, false)
    }

    fn push(&mut self, name: String, value: Tensor, trainable: bool) -> ParamId {
        let grad = Tensor::zeros(value.raw_dim());
        self.list.push(Parameter { name, value, grad, trainable });
        ParamId(self.list.len() - 1)
    }

    /// Replaces the value of `id` (a buffer's new running statistics).
    ///
    /// # Panics
    /// When the shape changes.
    #[track_caller]
    pub fn set(&mut self, id: ParamId, value: Tensor) {
        let p = &mut self.list[id.0];
        assert_eq!(p.value.shape(), value.shape(), "set: {} changes shape", p.name);
        p.value = value;
    }

    pub fn get(&self, id: ParamId) -> &Parameter {
        &self.list[id.0]
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Parameter> {
        self.list.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Parameter> {
        self.list.iter_mut()
    }

    /// The number of trainable numbers.
    pub fn count(&self) -> usize {
        self.list.iter().filter(|p| p.trainable).map(|p| p.value.len()).sum()
    }

    /// The Euclidean norm of all trainable gradients together.
    pub fn grad_norm(&self) -> f32 {
        self.list
            .iter()
            .filter(|p| p.trainable)
            .flat_map(|p| p.grad.iter())
            .map(|g| g * g)
            .sum::<f32>()
            .sqrt()
    }

    /// Adds the gradients of one backward pass to what each parameter has accumulated.
    pub fn accumulate(&mut self, grads: &Gradients) {
        for (id, grad) in grads.params() {
            self.list[id.0].grad += grad;
        }
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.list {
            p.grad.fill(0.0);
        }
    }
}
