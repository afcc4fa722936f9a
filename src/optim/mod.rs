//! Optimizers: SGD with momentum and Adam, configured by a serde [`OptimizerSpec`], and the
//! learning-rate schedules that drive their rate step by step.
//!
//! Weight decay is L2 regularisation added to the gradient (`g + decay * w`), as in PyTorch's
//! `SGD` and `Adam`.

mod adam;
mod schedule;
mod sgd;

pub use adam::Adam;
pub use schedule::{Horizon, LrSchedule};
pub use sgd::Sgd;

use serde::{Deserialize, Serialize};

use crate::autograd::Params;
use crate::tensor::Tensor;
use crate::{Error, Result};

/// An optimizer and its settings. `type` selects the variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerSpec {
    Sgd {
        lr: f32,
        #[serde(default)]
        momentum: f32,
        #[serde(default)]
        weight_decay: f32,
    },
    Adam {
        #[serde(default = "adam_lr")]
        lr: f32,
        #[serde(default = "beta1")]
        beta1: f32,
        #[serde(default = "beta2")]
        beta2: f32,
        #[serde(default = "adam_eps")]
        eps: f32,
        #[serde(default)]
        weight_decay: f32,
    },
}

fn adam_lr() -> f32 {
    1e-3
}
fn beta1() -> f32 {
    0.9
}
fn beta2() -> f32 {
    0.999
}
fn adam_eps() -> f32 {
    1e-8
}

impl OptimizerSpec {
    /// Adam with the usual defaults and learning rate `lr`.
    pub fn adam(lr: f32) -> Self {
        OptimizerSpec::Adam { lr, beta1: beta1(), beta2: beta2(), eps: adam_eps(), weight_decay: 0.0 }
    }

    /// The learning rate.
    pub fn lr(&self) -> f32 {
        match *self {
            OptimizerSpec::Adam { lr, .. } | OptimizerSpec::Sgd { lr, .. } => lr,
        }
    }

    /// This optimizer with L2 weight decay `decay` (checked by [`OptimizerSpec::validate`]).
    pub fn with_weight_decay(mut self, decay: f32) -> Self {
        match &mut self {
            OptimizerSpec::Adam { weight_decay, .. } | OptimizerSpec::Sgd { weight_decay, .. } => {
                *weight_decay = decay
            }
        }
        self
    }

    /// SGD with momentum 0.9 and learning rate `lr`.
    pub fn sgd(lr: f32) -> Self {
        OptimizerSpec::Sgd { lr, momentum: 0.9, weight_decay: 0.0 }
    }

    /// Checks every setting is in range.
    ///
    /// # Errors
    /// [`Error::Config`] naming the setting.
    pub fn validate(&self) -> Result<()> {
        let in_range = |name: &'static str, v: f32, lo: f32, hi: f32| {
            if v.is_finite() && (lo..hi).contains(&v) {
                Ok(())
            } else {
                Err(Error::Config { name, reason: format!("{v} is not in [{lo}, {hi})") })
            }
        };
        match *self {
            OptimizerSpec::Sgd { lr, momentum, weight_decay } => {
                positive("lr", lr)?;
                in_range("momentum", momentum, 0.0, 1.0)?;
                in_range("weight_decay", weight_decay, 0.0, f32::INFINITY)
            }
            OptimizerSpec::Adam { lr, beta1, beta2, eps, weight_decay } => {
                positive("lr", lr)?;
                in_range("beta1", beta1, 0.0, 1.0)?;
                in_range("beta2", beta2, 0.0, 1.0)?;
                positive("eps", eps)?;
                in_range("weight_decay", weight_decay, 0.0, f32::INFINITY)
            }
        }
    }
}

fn positive(name: &'static str, v: f32) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(Error::Config { name, reason: format!("{v} must be a positive number") })
    }
}

/// An optimizer with its per-parameter state.
pub enum Optimizer {
    Sgd(Sgd),
    Adam(Adam),
}

/// An optimizer's state, to save and resume: the steps taken and, per named slot (`velocity`
/// for SGD, `m` and `v` for Adam), one tensor per parameter.
pub struct OptimizerState {
    pub step: u64,
    pub slots: Vec<(&'static str, Vec<Tensor>)>,
}

impl Optimizer {
    /// An optimizer for the parameters in `params`, with zeroed state.
    ///
    /// # Errors
    /// When a setting is out of range.
    pub fn new(spec: &OptimizerSpec, params: &Params) -> Result<Self> {
        spec.validate()?;
        Ok(match *spec {
            OptimizerSpec::Sgd { lr, momentum, weight_decay } => {
                Optimizer::Sgd(Sgd::new(params, lr, momentum, weight_decay))
            }
            OptimizerSpec::Adam { lr, beta1, beta2, eps, weight_decay } => {
                Optimizer::Adam(Adam::new(params, lr, beta1, beta2, eps, weight_decay))
            }
        })
    }

    /// A copy of the state, for saving.
    pub fn state(&self) -> OptimizerState {
        match self {
            Optimizer::Sgd(o) => OptimizerState { step: 0, slots: vec![("velocity", o.velocity.clone())] },
            Optimizer::Adam(o) => {
                OptimizerState { step: o.step, slots: vec![("m", o.m.clone()), ("v", o.v.clone())] }
            }
        }
    }

    /// The names of the state slots, in [`OptimizerState::slots`] order.
    pub fn slot_names(&self) -> &'static [&'static str] {
        match self {
            Optimizer::Sgd(_) => &["velocity"],
            Optimizer::Adam(_) => &["m", "v"],
        }
    }

    /// Puts back a saved state.
    ///
    /// # Errors
    /// When a slot is missing or its tensors do not match the current ones in number or shape.
    pub fn restore(&mut self, state: OptimizerState) -> Result<()> {
        let mut slots = state.slots;
        let mut take = |name: &str, current: &[Tensor]| -> Result<Vec<Tensor>> {
            let at = slots
                .iter()
                .position(|(n, _)| *n == name)
                .ok_or_else(|| Error::Checkpoint(format!("the optimizer state has no `{name}`")))?;
            let tensors = slots.swap_remove(at).1;
            let fits = tensors.len() == current.len()
                && tensors.iter().zip(current).all(|(a, b)| a.shape() == b.shape());
            if !fits {
                return Err(Error::Checkpoint(format!(
                    "the optimizer's `{name}` does not match the model's parameters"
                )));
            }
            Ok(tensors)
        };
        match self {
            Optimizer::Sgd(o) => o.velocity = take("velocity", &o.velocity)?,
            Optimizer::Adam(o) => {
                let m = take("m", &o.m)?;
                let v = take("v", &o.v)?;
                (o.m, o.v, o.step) = (m, v, state.step);
            }
        }
        Ok(())
    }

    /// Sets the learning rate of later steps (a schedule's).
    pub fn set_lr(&mut self, lr: f32) {
        match self {
            Optimizer::Sgd(o) => o.lr = lr,
            Optimizer::Adam(o) => o.lr = lr,
        }
    }

    /// Updates every parameter from its accumulated gradient.
    pub fn step(&mut self, params: &mut Params) {
        match self {
            Optimizer::Sgd(o) => o.step(params),
            Optimizer::Adam(o) => o.step(params),
        }
    }
}
