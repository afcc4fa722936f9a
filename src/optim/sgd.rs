//! Stochastic gradient descent with heavy-ball momentum.

use ndarray::Zip;

use crate::autograd::Params;
use crate::tensor::Tensor;

/// `v = momentum * v + (g + decay * w)`, then `w -= lr * v` (PyTorch's formulation, in which
/// the first step is a plain gradient step).
pub struct Sgd {
    pub(super) lr: f32,
    momentum: f32,
    weight_decay: f32,
    pub(super) velocity: Vec<Tensor>,
}

impl Sgd {
    pub fn new(params: &Params, lr: f32, momentum: f32, weight_decay: f32) -> Self {
        let velocity = params.iter().map(|p| Tensor::zeros(p.value.raw_dim())).collect();
        Sgd { lr, momentum, weight_decay, velocity }
    }

    pub fn step(&mut self, params: &mut Params) {
        let (lr, momentum, decay) = (self.lr, self.momentum, self.weight_decay);
        for (p, v) in params.iter_mut().zip(&mut self.velocity).filter(|(p, _)| p.trainable) {
            Zip::from(&mut p.value).and(&p.grad).and(v).for_each(|w, &g, v| {
                *v = momentum * *v + g + decay * *w;
                *w -= lr * *v;
            });
        }
    }
}
