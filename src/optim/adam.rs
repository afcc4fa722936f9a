//! Adam (Kingma & Ba 2015) with bias correction.

use ndarray::Zip;

use crate::autograd::Params;
use crate::tensor::Tensor;

/// `m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g^2`, then
/// `w -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)`.
pub struct Adam {
    pub(super) lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    pub(super) step: u64,
    /// First and second moments, one tensor per parameter.
    pub(super) m: Vec<Tensor>,
    pub(super) v: Vec<Tensor>,
}

impl Adam {
    pub fn new(params: &Params, lr: f32, beta1: f32, beta2: f32, eps: f32, weight_decay: f32) -> Self {
        let zeros = || params.iter().map(|p| Tensor::zeros(p.value.raw_dim())).collect();
        Adam { lr, beta1, beta2, eps, weight_decay, step: 0, m: zeros(), v: zeros() }
    }

    pub fn step(&mut self, params: &mut Params) {
        self.step += 1;
        let (b1, b2, eps, decay) = (self.beta1, self.beta2, self.eps, self.weight_decay);
        let t = i32::try_from(self.step).unwrap_or(i32::MAX);
        let correct1 = 1.0 - b1.powi(t);
        let correct2 = 1.0 - b2.powi(t);
        let lr = self.lr;
        let moments = self.m.iter_mut().zip(&mut self.v);
        for (p, (m, v)) in params.iter_mut().zip(moments).filter(|(p, _)| p.trainable) {
            Zip::from(&mut p.value).and(&p.grad).and(m).and(v).for_each(|w, &g, m, v| {
                let g = g + decay * *w;
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                *w -= lr * (*m / correct1) / ((*v / correct2).sqrt() + eps);
            });
        }
    }
}
