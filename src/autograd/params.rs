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

/// A trainable tensor, its accumulated gradient and its name in saved files.
#[derive(Clone, Debug)]
pub struct Parameter {
    pub name: String,
    pub value: Tensor,
    pub grad: Tensor,
}

/// All the parameters of a model, in the order they were created.
#[derive(Clone, Debug, Default)]
pub struct Params {
    list: Vec<Parameter>,
}

impl Params {
    /// Adds a parameter with a zero gradient.
    pub fn add(&mut self, name: impl Into<String>, value: Tensor) -> ParamId {
        let grad = Tensor::zeros(value.raw_dim());
        self.list.push(Parameter {
            name: name.into(),
            value,
            grad,
        });
        ParamId(self.list.len() - 1)
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
        self.list.iter().map(|p| p.value.len()).sum()
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
