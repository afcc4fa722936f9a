//! Hyperparameter sweeps: a grid of values and random trials over ranges, described once and
//! read by both the CLI (`ferrograd sweep --grid lr=1e-3,3e-3 --range lr=1e-4:1e-2:log`) and
//! the page (the same text, or the same description as JSON), each trial becoming one run.

use std::collections::BTreeMap;
use std::fmt;

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;
use serde::{Deserialize, Serialize};

use crate::optim::LrSchedule;
use crate::{Error, Result};

/// The most trials one sweep may run: each is a whole training run.
pub const MAX_TRIALS: usize = 100;

/// A setting a sweep varies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Param {
    Lr,
    BatchSize,
    Optimizer,
    Epochs,
    WeightDecay,
    /// A preset's name (the CLI also takes a spec file's path).
    Model,
    /// A schedule as [`LrSchedule`]'s text (`cosine(warmup=1)`).
    LrSchedule,
}

impl Param {
    pub const ALL: [Param; 7] = [
        Param::Lr,
        Param::BatchSize,
        Param::Optimizer,
        Param::Epochs,
        Param::WeightDecay,
        Param::Model,
        Param::LrSchedule,
    ];

    /// The name in sweep text and CLI flags: `lr`, `batch-size`, `optimizer`, `epochs`,
    /// `weight-decay`, `model`, `lr-schedule`.
    pub fn name(self) -> &'static str {
        match self {
            Param::Lr => "lr",
            Param::BatchSize => "batch-size",
            Param::Optimizer => "optimizer",
            Param::Epochs => "epochs",
            Param::WeightDecay => "weight-decay",
            Param::Model => "model",
            Param::LrSchedule => "lr-schedule",
        }
    }

    /// A name as text or JSON writes it (`batch-size` or `batch_size`).
    fn from_name(name: &str) -> Result<Param> {
        let name = name.trim().replace('_', "-");
        Param::ALL.into_iter().find(|p| p.name() == name).ok_or_else(|| {
            let known: Vec<&str> = Param::ALL.iter().map(|p| p.name()).collect();
            Error::Config {
                name: "sweep",
                reason: format!("`{name}` is not a setting a sweep varies ({})", known.join(", ")),
            }
        })
    }

    /// Whether random trials can draw it from a range, and whether as a whole number.
    fn range_kind(self) -> Option<bool> {
        match self {
            Param::Lr | Param::WeightDecay => Some(false),
            Param::BatchSize | Param::Epochs => Some(true),
            _ => None,
        }
    }

    /// Checks one value of this setting, as a number or a text as it requires.
    fn check(self, value: &Value) -> Result<()> {
        let bad = |reason: String| {
            Err(Error::Config { name: "sweep", reason: format!("{}: {reason}", self.name()) })
        };
        match (self, value) {
            (Param::Lr, Value::Number(v)) if !(v.is_finite() && *v > 0.0) => {
                bad(format!("{v} is not a positive learning rate"))
            }
            (Param::WeightDecay, Value::Number(v)) if !(v.is_finite() && *v >= 0.0) => {
                bad(format!("{v} is not a weight decay of 0 or more"))
            }
            (Param::BatchSize, Value::Number(v)) if !(v.fract() == 0.0 && (1.0..=4096.0).contains(v)) => {
                bad(format!("{v} is not a whole batch size from 1 to 4096"))
            }
            (Param::Epochs, Value::Number(v)) if !(v.fract() == 0.0 && (1.0..=1000.0).contains(v)) => {
                bad(format!("{v} is not a whole number of epochs from 1 to 1000"))
            }
            (Param::Lr | Param::WeightDecay | Param::BatchSize | Param::Epochs, Value::Number(_)) => Ok(()),
            (Param::Lr | Param::WeightDecay | Param::BatchSize | Param::Epochs, Value::Text(t)) => {
                bad(format!("`{t}` is not a number"))
            }
            (Param::Optimizer, Value::Text(t)) if t != "adam" && t != "sgd" => {
                bad(format!("`{t}` is not an optimizer (adam or sgd)"))
            }
            (Param::Model, Value::Text(t)) if t.trim().is_empty() => bad("a model needs a name".into()),
            (Param::LrSchedule, Value::Text(t)) => {
                t.parse::<LrSchedule>().map(drop).or_else(|e| bad(e.to_string()))
            }
            (Param::Optimizer | Param::Model | Param::LrSchedule, Value::Number(v)) => {
                bad(format!("{v} is a number, and this setting takes a name"))
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A setting's value: a number (learning rate, batch size, epochs, weight decay) or a name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Number(f64),
    Text(String),
}

impl Value {
    /// The number, for settings that take one (checked when the sweep was read).
    pub fn number(&self) -> f64 {
        match self {
            Value::Number(v) => *v,
            Value::Text(_) => f64::NAN,
        }
    }

    pub fn text(&self) -> String {
        match self {
            Value::Number(v) => v.to_string(),
            Value::Text(t) => t.clone(),
        }
    }
}

/// One axis of the grid: a setting and the values it takes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Axis {
    pub param: Param,
    pub values: Vec<Value>,
}

/// A range random trials draw a setting from: uniformly, or log-uniformly with `log`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    pub param: Param,
    pub min: f64,
    pub max: f64,
    #[serde(default)]
    pub log: bool,
}

/// A sweep: every combination of the grid's values, each run `trials` times with the ranged
/// settings drawn afresh (once, with nothing drawn, when there are no ranges).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sweep {
    #[serde(default)]
    pub grid: Vec<Axis>,
    #[serde(default)]
    pub ranges: Vec<Range>,
    /// Random trials per grid combination; needed with ranges, refused without.
    #[serde(default)]
    pub trials: usize,
    /// Seeds the random draws (not the runs, which take the training seed).
    #[serde(default)]
    pub seed: u64,
}

/// One trial's settings, by name: `{"lr": 0.001, "batch_size": 32}` in JSON.
pub type Trial = BTreeMap<Param, Value>;

impl Axis {
    /// Text as `lr=1e-3,3e-3` or `lr-schedule=constant,cosine(warmup=1)`: a setting, `=`,
    /// and values separated by commas outside parentheses.
    ///
    /// # Errors
    /// [`Error::Config`] naming the setting or the value that is wrong.
    pub fn parse(text: &str) -> Result<Axis> {
        let bad = |reason: String| Error::Config { name: "sweep", reason };
        let (name, values) = text
            .split_once('=')
            .ok_or_else(|| bad(format!("grid `{text}`: expected setting=value,value,...")))?;
        let param = Param::from_name(name)?;
        let values = split_outside_parentheses(values)
            .into_iter()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(|v| match number(v) {
                Ok(n) if param.range_kind().is_some() => Value::Number(n),
                _ => Value::Text(v.to_owned()),
            })
            .collect();
        Ok(Axis { param, values })
    }
}

impl Range {
    /// Text as `lr=1e-4:1e-2:log` or `batch-size=16:128`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the setting or the bound that is wrong.
    pub fn parse(text: &str) -> Result<Range> {
        let bad = |reason: String| Error::Config { name: "sweep", reason };
        let (name, bounds) = text
            .split_once('=')
            .ok_or_else(|| bad(format!("range `{text}`: expected setting=min:max or min:max:log")))?;
        let param = Param::from_name(name)?;
        let parts: Vec<&str> = bounds.split(':').map(str::trim).collect();
        let log = match parts.get(2) {
            None => false,
            Some(&"log") => true,
            Some(other) => return Err(bad(format!("range {param}: `{other}` is not `log`"))),
        };
        if parts.len() < 2 || parts.len() > 3 {
            return Err(bad(format!("range {param}: `{bounds}` is not min:max or min:max:log")));
        }
        let number = |s: &str| number(s).map_err(|_| bad(format!("range {param}: `{s}` is not a number")));
        Ok(Range { param, min: number(parts[0])?, max: number(parts[1])?, log })
    }

    fn check(&self) -> Result<()> {
        let bad = |reason: String| {
            Err(Error::Config { name: "sweep", reason: format!("range {}: {reason}", self.param) })
        };
        if self.param.range_kind().is_none() {
            return bad("takes names, so give its values in the grid instead".into());
        }
        if !(self.min.is_finite() && self.max.is_finite()) || self.min > self.max {
            return bad(format!("min {} is above max {}", self.min, self.max));
        }
        if self.log && self.min <= 0.0 {
            return bad(format!("a log range needs min > 0, not {}", self.min));
        }
        self.param.check(&Value::Number(self.min))?;
        self.param.check(&Value::Number(self.max))
    }

    fn draw(&self, rng: &mut Pcg64) -> Value {
        let u: f64 = rng.random();
        let v = if self.log {
            (self.min.ln() + u * (self.max.ln() - self.min.ln())).exp()
        } else {
            self.min + u * (self.max - self.min)
        };
        if self.param.range_kind() == Some(true) {
            Value::Number(v.round().clamp(self.min.ceil(), self.max.floor()))
        } else {
            // Within the bounds despite rounding in exp and ln.
            Value::Number(v.clamp(self.min, self.max))
        }
    }
}

/// A number as JSON writes it: serde_json's reader is in every build already, where
/// str::parse::<f64> would add core's 15 KB of decimal tables to the page's module.
fn number(text: &str) -> std::result::Result<f64, serde_json::Error> {
    serde_json::from_str(text)
}

/// `text` split at commas that are not inside parentheses.
fn split_outside_parentheses(text: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

impl Sweep {
    /// A sweep from the CLI's flags (or the embed's attribute): `grid` texts as
    /// [`Axis::parse`] reads them, `ranges` as [`Range::parse`], and the random trials.
    ///
    /// # Errors
    /// As [`Axis::parse`], [`Range::parse`] and [`Sweep::trials`].
    pub fn from_text(grid: &[String], ranges: &[String], trials: usize, seed: u64) -> Result<Sweep> {
        let grid = grid.iter().map(|g| Axis::parse(g)).collect::<Result<_>>()?;
        let ranges = ranges.iter().map(|r| Range::parse(r)).collect::<Result<_>>()?;
        let sweep = Sweep { grid, ranges, trials, seed };
        sweep.trials()?;
        Ok(sweep)
    }

    /// A sweep from JSON, as the page stores it.
    ///
    /// # Errors
    /// When the JSON does not describe a sweep, and as [`Sweep::trials`].
    pub fn from_json(json: &str) -> Result<Sweep> {
        let sweep: Sweep = serde_json::from_str(json)
            .map_err(|e| Error::Config { name: "sweep", reason: format!("not a sweep description: {e}") })?;
        sweep.trials()?;
        Ok(sweep)
    }

    /// Every trial's settings, in order: the grid's combinations with its first axis slowest,
    /// each repeated `trials` times with the ranges drawn from the sweep's seed.
    ///
    /// # Errors
    /// [`Error::Config`] (`sweep`) naming the setting when an axis has no values or a bad one,
    /// a setting is both in the grid and ranged or twice in either, a range is wrong (min
    /// above max, a log range from 0, a setting that takes names), ranges come without trials
    /// or trials without ranges, the sweep is empty, or it would run more than
    /// [`MAX_TRIALS`]; counted before anything is allocated.
    pub fn trials(&self) -> Result<Vec<Trial>> {
        let bad = |reason: String| Err(Error::Config { name: "sweep", reason });
        let mut seen = Vec::new();
        for param in self.grid.iter().map(|a| a.param).chain(self.ranges.iter().map(|r| r.param)) {
            if seen.contains(&param) {
                return bad(format!("{param} is given twice"));
            }
            seen.push(param);
        }
        for axis in &self.grid {
            if axis.values.is_empty() {
                return bad(format!("grid {}: no values", axis.param));
            }
            axis.values.iter().try_for_each(|v| axis.param.check(v))?;
        }
        self.ranges.iter().try_for_each(Range::check)?;
        match (self.ranges.is_empty(), self.trials) {
            (false, 0) => return bad("ranges need a number of random trials".into()),
            (true, n) if n > 0 => {
                return bad(format!("{n} random trials need at least one range to draw from"))
            }
            _ => {}
        }
        let repeats = self.trials.max(1);
        let count = self
            .grid
            .iter()
            .try_fold(repeats, |n, axis| n.checked_mul(axis.values.len()))
            .filter(|&n| n <= MAX_TRIALS)
            .ok_or_else(|| {
                let sizes: Vec<String> = self.grid.iter().map(|a| a.values.len().to_string()).collect();
                let what = if sizes.is_empty() {
                    format!("{repeats} trials")
                } else {
                    format!("{} x {repeats} trials", sizes.join(" x "))
                };
                Error::Config {
                    name: "sweep",
                    reason: format!("{what} are more than the {MAX_TRIALS} a sweep may run"),
                }
            })?;
        if self.grid.is_empty() && self.ranges.is_empty() {
            return bad("nothing to vary: give a grid or ranges".into());
        }
        let mut rng = Pcg64::seed_from_u64(self.seed);
        let mut trials = Vec::with_capacity(count);
        for combination in 0..count / repeats {
            let mut base = Trial::new();
            let mut rest = combination;
            for axis in self.grid.iter().rev() {
                base.insert(axis.param, axis.values[rest % axis.values.len()].clone());
                rest /= axis.values.len();
            }
            for _ in 0..repeats {
                let mut trial = base.clone();
                for range in &self.ranges {
                    trial.insert(range.param, range.draw(&mut rng));
                }
                trials.push(trial);
            }
        }
        Ok(trials)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(grid: &[&str], ranges: &[&str], trials: usize) -> Result<Sweep> {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Sweep::from_text(&own(grid), &own(ranges), trials, 5)
    }

    #[test]
    fn a_grid_gives_every_combination_first_axis_slowest() {
        let trials = text(
            &["lr=1e-3,3e-3", "batch-size=32,64", "lr-schedule=constant,cosine(warmup=1,min_lr=0)"],
            &[],
            0,
        )
        .unwrap()
        .trials()
        .unwrap();
        assert_eq!(trials.len(), 8);
        assert_eq!(trials[0][&Param::Lr], Value::Number(1e-3));
        assert_eq!(trials[0][&Param::BatchSize], Value::Number(32.0));
        assert_eq!(trials[1][&Param::LrSchedule], Value::Text("cosine(warmup=1,min_lr=0)".into()));
        assert_eq!(trials[2][&Param::BatchSize], Value::Number(64.0));
        assert_eq!(trials[4][&Param::Lr], Value::Number(3e-3));
        let json = serde_json::to_string(&trials[7]).unwrap();
        assert_eq!(json, r#"{"lr":0.003,"batch_size":64.0,"lr_schedule":"cosine(warmup=1,min_lr=0)"}"#);
    }

    #[test]
    fn random_trials_draw_within_their_ranges_the_same_for_the_same_seed() {
        let sweep = text(&["optimizer=adam,sgd"], &["lr=1e-4:1e-2:log", "batch-size=16:128"], 6).unwrap();
        let trials = sweep.trials().unwrap();
        assert_eq!(trials.len(), 12);
        for trial in &trials {
            let lr = trial[&Param::Lr].number();
            let batch = trial[&Param::BatchSize].number();
            assert!(
                (1e-4..=1e-2).contains(&lr) && (16.0..=128.0).contains(&batch) && batch.fract() == 0.0,
                "{trial:?}"
            );
        }
        // Log-uniform: the draws spread over the decades, not bunched at the top.
        assert!(trials.iter().any(|t| t[&Param::Lr].number() < 1e-3));
        assert_eq!(sweep.trials().unwrap(), trials);
        let json = serde_json::to_string(&sweep).unwrap();
        assert_eq!(Sweep::from_json(&json).unwrap().trials().unwrap(), trials);
    }

    #[test]
    fn bad_sweeps_name_what_is_wrong() {
        let error =
            |grid: &[&str], ranges: &[&str], trials| text(grid, ranges, trials).unwrap_err().to_string();
        assert!(error(&["lr="], &[], 0).contains("grid lr: no values"));
        assert!(error(&["lr=-0.1"], &[], 0).contains("lr: -0.1 is not a positive learning rate"));
        assert!(error(&["lr=fast"], &[], 0).contains("lr: `fast` is not a number"));
        assert!(error(&["speed=1"], &[], 0).contains("`speed` is not a setting"));
        assert!(error(&["batch-size=0"], &[], 0).contains("batch-size"));
        assert!(error(&["optimizer=rmsprop"], &[], 0).contains("not an optimizer"));
        assert!(error(&["lr-schedule=cosine(gamma=1)"], &[], 0).contains("no setting `gamma`"));
        assert!(error(&[], &["lr=1e-2:1e-4"], 3).contains("range lr: min 0.01 is above max 0.0001"));
        assert!(error(&[], &["lr=0:1e-2:log"], 3).contains("log range needs min > 0"));
        assert!(error(&[], &["optimizer=1:2"], 3).contains("takes names"));
        assert!(error(&[], &["lr=1e-4:1e-2"], 0).contains("need a number of random trials"));
        assert!(error(&[], &[], 4).contains("need at least one range"));
        assert!(error(&[], &["lr=1e-4:1e-2"], 10_000).contains("10000 trials are more than the 100"));
        assert!(
            error(&["lr=1,2,3,4,5,6,7,8,9,10,11"], &["weight-decay=0:1e-3"], 10).contains("11 x 10 trials")
        );
        assert!(error(&["lr=1e-3"], &["lr=1e-4:1e-2"], 2).contains("lr is given twice"));
        assert!(error(&[], &[], 0).contains("nothing to vary"));
        assert!(Sweep::from_json(r#"{"grid": [{"param": "lr", "values": []}]}"#)
            .unwrap_err()
            .to_string()
            .contains("no values"));
        assert!(Sweep::from_json(r#"{"grids": []}"#)
            .unwrap_err()
            .to_string()
            .contains("not a sweep description"));
    }
}
