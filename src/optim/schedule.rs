//! Learning-rate schedules: how the rate changes over a run, as a function of the step.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How the learning rate changes over training, from the optimizer's `lr`; epochs count whole
/// passes over the training data. Saved (and read from JSON) as its text, as
/// [`LrSchedule::label`] writes it: `"cosine(warmup=1,min_lr=0)"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum LrSchedule {
    /// `lr` throughout.
    #[default]
    Constant,
    /// `lr * gamma^floor(epoch / every)`: PyTorch's `StepLR`, stepped once per epoch.
    Step { every: usize, gamma: f32 },
    /// `lr * gamma^epoch`: PyTorch's `ExponentialLR`, stepped once per epoch.
    Exponential { gamma: f32 },
    /// A linear warm-up over the first `warmup` epochs (a fraction allowed), step `s` of `W`
    /// at `lr * (s + 1) / W`, then half a cosine from `lr` down to `min_lr` at the end of the
    /// last epoch: `min_lr + (lr - min_lr) (1 + cos(pi p)) / 2` with `p` the share of the
    /// steps after the warm-up already taken (the schedule of Hugging Face's
    /// `get_cosine_schedule_with_warmup`, with a floor).
    Cosine { warmup: f32, min_lr: f32 },
}

/// Where a run stands for its schedule: the steps in an epoch and the epochs it will run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Horizon {
    pub steps_per_epoch: u64,
    pub epochs: usize,
}

impl LrSchedule {
    /// Checks the settings, against the optimizer's `lr` for `min_lr`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the setting that is out of range.
    pub fn validate(&self, lr: f32) -> Result<()> {
        let bad = |name, reason: String| Err(Error::Config { name, reason });
        match *self {
            LrSchedule::Constant => Ok(()),
            LrSchedule::Step { every, gamma } => {
                if every == 0 {
                    return bad("lr_schedule.every", "must be at least 1 epoch".into());
                }
                check_gamma(gamma)
            }
            LrSchedule::Exponential { gamma } => check_gamma(gamma),
            LrSchedule::Cosine { warmup, min_lr } => {
                if !(warmup.is_finite() && warmup >= 0.0) {
                    return bad("lr_schedule.warmup", format!("{warmup} epochs must be 0 or more"));
                }
                if !(min_lr.is_finite() && (0.0..=lr).contains(&min_lr)) {
                    return bad("lr_schedule.min_lr", format!("{min_lr} is not in [0, lr = {lr}]"));
                }
                Ok(())
            }
        }
    }

    /// The learning rate of step `step` (counted from 0) of a run over `horizon`, from the
    /// optimizer's `lr`. Steps past the horizon (a run resumed for more epochs) keep the
    /// rate of its end.
    pub fn lr(&self, lr: f32, step: u64, horizon: Horizon) -> f32 {
        let per_epoch = horizon.steps_per_epoch.max(1);
        let epoch = step / per_epoch;
        match *self {
            LrSchedule::Constant => lr,
            LrSchedule::Step { every, gamma } => lr * gamma.powi(exponent(epoch / every.max(1) as u64)),
            LrSchedule::Exponential { gamma } => lr * gamma.powi(exponent(epoch)),
            LrSchedule::Cosine { warmup, min_lr } => {
                let total = per_epoch * horizon.epochs as u64;
                let warm = ((f64::from(warmup) * per_epoch as f64).round() as u64).min(total);
                if step < warm {
                    return lr * (step + 1) as f32 / warm as f32;
                }
                let p = ((step - warm) as f64 / (total - warm).max(1) as f64).min(1.0) as f32;
                // In f32, whose cosine the page's module has already (augmentation rotates).
                let half_cosine = (1.0 + (std::f32::consts::PI * p).cos()) / 2.0;
                min_lr + (lr - min_lr) * half_cosine
            }
        }
    }

    /// A short name with the settings, for tables and file names: `constant`,
    /// `step(every=2,gamma=0.5)`, `exponential(gamma=0.9)`, `cosine(warmup=1,min_lr=0)`.
    pub fn label(&self) -> String {
        match *self {
            LrSchedule::Constant => "constant".into(),
            LrSchedule::Step { every, gamma } => format!("step(every={every},gamma={gamma})"),
            LrSchedule::Exponential { gamma } => format!("exponential(gamma={gamma})"),
            LrSchedule::Cosine { warmup, min_lr } => format!("cosine(warmup={warmup},min_lr={min_lr})"),
        }
    }
}

impl From<LrSchedule> for String {
    fn from(schedule: LrSchedule) -> String {
        schedule.label()
    }
}

impl TryFrom<String> for LrSchedule {
    type Error = Error;

    fn try_from(text: String) -> Result<Self> {
        text.parse()
    }
}

impl std::str::FromStr for LrSchedule {
    type Err = Error;

    /// A schedule as [`LrSchedule::label`] writes it: a name, then optionally its settings in
    /// parentheses (`cosine`, `cosine(warmup=1)`, `step(every=2,gamma=0.5)`); settings left out
    /// take their defaults (`every` 1, `gamma` 0.5 for step and 0.9 for exponential, `warmup`
    /// and `min_lr` 0). The settings are not checked against a learning rate here (see
    /// [`LrSchedule::validate`]).
    ///
    /// # Errors
    /// [`Error::Config`] (`lr_schedule`) naming what is not understood.
    fn from_str(text: &str) -> Result<Self> {
        let bad = |reason: String| Error::Config { name: "lr_schedule", reason };
        let text = text.trim();
        let (name, settings) = match text.split_once('(') {
            Some((name, rest)) => {
                let inner =
                    rest.strip_suffix(')').ok_or_else(|| bad(format!("`{text}` lacks its closing `)`")))?;
                (name.trim(), inner)
            }
            None => (text, ""),
        };
        let mut values = Vec::new();
        for pair in settings.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) =
                pair.split_once('=').ok_or_else(|| bad(format!("`{pair}` in `{text}` is not key=value")))?;
            // Read as a JSON number: serde_json's reader is in every build already, where
            // str::parse::<f64> would add core's 15 KB of decimal tables to the page's module.
            let number: f64 = serde_json::from_str(value.trim())
                .map_err(|_| bad(format!("{}: `{}` is not a number", key.trim(), value.trim())))?;
            values.push((key.trim(), number));
        }
        let known: &[&str] = match name {
            "constant" => &[],
            "step" => &["every", "gamma"],
            "exponential" => &["gamma"],
            "cosine" => &["warmup", "min_lr"],
            _ => {
                return Err(bad(format!("`{name}` is not a schedule: constant, step, exponential or cosine")))
            }
        };
        if let Some((key, _)) = values.iter().find(|(key, _)| !known.contains(key)) {
            let takes = if known.is_empty() { "no settings".to_owned() } else { known.join(", ") };
            return Err(bad(format!("{name} has no setting `{key}` (it takes {takes})")));
        }
        let get = |key: &str, default: f64| {
            values.iter().rev().find(|(k, _)| *k == key).map_or(default, |&(_, v)| v)
        };
        Ok(match name {
            "constant" => LrSchedule::Constant,
            "step" => {
                let every = get("every", 1.0);
                if every.fract() != 0.0 || !(1.0..=1e6).contains(&every) {
                    return Err(bad(format!("every: {every} is not a whole number of epochs from 1")));
                }
                LrSchedule::Step { every: every as usize, gamma: get("gamma", 0.5) as f32 }
            }
            "exponential" => LrSchedule::Exponential { gamma: get("gamma", 0.9) as f32 },
            _ => LrSchedule::Cosine { warmup: get("warmup", 0.0) as f32, min_lr: get("min_lr", 0.0) as f32 },
        })
    }
}

fn check_gamma(gamma: f32) -> Result<()> {
    if gamma.is_finite() && gamma > 0.0 && gamma <= 1.0 {
        Ok(())
    } else {
        Err(Error::Config { name: "lr_schedule.gamma", reason: format!("{gamma} is not in (0, 1]") })
    }
}

/// An epoch count as a power, saturating (gamma^i for i past i32::MAX is 0 or 1 anyway).
fn exponent(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HORIZON: Horizon = Horizon { steps_per_epoch: 10, epochs: 5 };

    fn close(a: f32, b: f64) -> bool {
        // f32 arithmetic against f64: a few units in the last place.
        (f64::from(a) - b).abs() <= 1e-6 * b.abs().max(1e-3)
    }

    #[test]
    fn constant_is_the_optimizer_rate() {
        for step in [0, 9, 10, 49, 50, 1000] {
            assert_eq!(LrSchedule::Constant.lr(0.01, step, HORIZON), 0.01);
        }
    }

    #[test]
    fn step_decay_against_its_closed_form() {
        let s = LrSchedule::Step { every: 2, gamma: 0.5 };
        for step in 0..60u64 {
            let expected = 0.1 * 0.5f64.powi((step / 10 / 2) as i32);
            assert!(close(s.lr(0.1, step, HORIZON), expected), "step {step}");
        }
    }

    #[test]
    fn exponential_decay_against_its_closed_form() {
        let s = LrSchedule::Exponential { gamma: 0.9 };
        for step in 0..60u64 {
            let expected = 0.1 * 0.9f64.powi((step / 10) as i32);
            assert!(close(s.lr(0.1, step, HORIZON), expected), "step {step}");
        }
    }

    #[test]
    fn cosine_with_warmup_against_its_closed_form() {
        let s = LrSchedule::Cosine { warmup: 1.5, min_lr: 1e-4 };
        // 15 warm-up steps of 50, then 35 along the cosine.
        for step in 0..60u64 {
            let expected = if step < 15 {
                1e-2 * (step + 1) as f64 / 15.0
            } else {
                let p = ((step - 15) as f64 / 35.0).min(1.0);
                1e-4 + (1e-2 - 1e-4) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
            };
            assert!(close(s.lr(1e-2, step, HORIZON), expected), "step {step}: {expected}");
        }
        // The peak right after the warm-up, the floor at the end and past it.
        assert!(close(s.lr(1e-2, 14, HORIZON), 1e-2));
        assert!(close(s.lr(1e-2, 50, HORIZON), 1e-4));
        assert!(close(s.lr(1e-2, 80, HORIZON), 1e-4));
    }

    #[test]
    fn a_warmup_longer_than_the_run_ends_at_the_peak() {
        let s = LrSchedule::Cosine { warmup: 10.0, min_lr: 0.0 };
        assert!(close(s.lr(1e-2, 49, HORIZON), 1e-2));
    }

    #[test]
    fn labels_read_back_and_bad_text_is_explained() {
        for schedule in [
            LrSchedule::Constant,
            LrSchedule::Step { every: 3, gamma: 0.25 },
            LrSchedule::Exponential { gamma: 0.95 },
            LrSchedule::Cosine { warmup: 0.5, min_lr: 1e-5 },
        ] {
            assert_eq!(schedule.label().parse::<LrSchedule>().unwrap(), schedule);
        }
        assert_eq!("cosine".parse::<LrSchedule>().unwrap(), LrSchedule::Cosine { warmup: 0.0, min_lr: 0.0 });
        let error = |text: &str| text.parse::<LrSchedule>().unwrap_err().to_string();
        assert!(error("linear").contains("`linear` is not a schedule"));
        assert!(error("cosine(warmup=1").contains("closing"));
        assert!(error("cosine(gamma=1)").contains("no setting `gamma`"));
        assert!(error("step(every=x)").contains("`x` is not a number"));
        assert!(error("step(every=1.5)").contains("whole number"));
    }

    #[test]
    fn bad_settings_are_named() {
        let error = |s: LrSchedule| s.validate(0.01).unwrap_err().to_string();
        assert!(error(LrSchedule::Step { every: 0, gamma: 0.5 }).contains("lr_schedule.every"));
        assert!(error(LrSchedule::Step { every: 1, gamma: 1.5 }).contains("lr_schedule.gamma"));
        assert!(error(LrSchedule::Exponential { gamma: f32::NAN }).contains("lr_schedule.gamma"));
        assert!(error(LrSchedule::Cosine { warmup: -1.0, min_lr: 0.0 }).contains("lr_schedule.warmup"));
        assert!(error(LrSchedule::Cosine { warmup: 0.0, min_lr: 0.1 }).contains("lr_schedule.min_lr"));
        assert!(LrSchedule::Cosine { warmup: 0.0, min_lr: 0.0 }.validate(0.01).is_ok());
    }
}
