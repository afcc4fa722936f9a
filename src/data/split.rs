//! The validation split: a share of the training data held out, stratified by class and chosen
//! by the seed, decided sample by sample so that a stream is split as it arrives exactly as
//! the whole file is.

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;
use serde::{Deserialize, Serialize};

use super::{Dataset, CLASSES};
use crate::{Error, Result};

/// The largest share of the training data that validation may take.
pub const MAX_VALIDATION_SHARE: f32 = 0.5;

/// Which training pairs a run holds out: a share and the seed that draws the split's phases.
/// Kept in the saved training state, so that a resumed run holds out the same pairs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HoldOut {
    /// The share of each class held out, in [0, [`MAX_VALIDATION_SHARE`]]; 0 holds out none.
    pub share: f32,
    pub seed: u64,
}

impl HoldOut {
    /// The split these settings make.
    ///
    /// # Errors
    /// As [`ValidationSplit::new`].
    pub fn split(self) -> Result<ValidationSplit> {
        ValidationSplit::new(self.share, self.seed)
    }
}

/// Decides, for each training sample in stored order, whether it is held out for validation.
///
/// Within each class it samples systematically: the `k`-th sample of class `c` (from 0) is held
/// out when `floor((k + 1) s + u_c) > floor(k s + u_c)`, for the share `s` and a phase `u_c` in
/// [0, 1) drawn from the seed. So every class gives up `floor(n_c s)` or `ceil(n_c s)` of its
/// `n_c` samples (stratified), spread evenly through it, and the decision for a sample needs
/// only the samples before it.
#[derive(Clone, Debug)]
pub struct ValidationSplit {
    share: f64,
    phases: [f64; CLASSES],
    seen: [u64; CLASSES],
}

impl ValidationSplit {
    /// A split holding out `share` of each class, its phases drawn from `seed`.
    ///
    /// # Errors
    /// [`Error::Config`] (`val_split`) when `share` is not in [0, [`MAX_VALIDATION_SHARE`]].
    pub fn new(share: f32, seed: u64) -> Result<Self> {
        if !(share.is_finite() && (0.0..=MAX_VALIDATION_SHARE).contains(&share)) {
            return Err(Error::Config {
                name: "val_split",
                reason: format!("{share} is not a share in [0, {MAX_VALIDATION_SHARE}] of the training data"),
            });
        }
        // A stream apart from the weights' and the data order's.
        let mut rng = Pcg64::seed_from_u64(seed ^ 0x0a11_da7e);
        let phases = std::array::from_fn(|_| rng.random::<f64>());
        Ok(ValidationSplit { share: f64::from(share), phases, seen: [0; CLASSES] })
    }

    /// Whether the next sample, of class `label`, is held out.
    ///
    /// # Panics
    /// When `label` is not a digit (data sets refuse those when they read them).
    pub fn holds_out(&mut self, label: u8) -> bool {
        let c = usize::from(label);
        let k = self.seen[c] as f64;
        self.seen[c] += 1;
        let phase = self.phases[c];
        ((k + 1.0) * self.share + phase).floor() > (k * self.share + phase).floor()
    }

    /// `data` cut into (training, validation) sets, each in stored order.
    pub fn split(mut self, data: &Dataset) -> (Dataset, Dataset) {
        let (rows, cols) = data.image_size();
        let (mut train, mut validation) = (Dataset::empty(rows, cols), Dataset::empty(rows, cols));
        for (i, &label) in data.labels().iter().enumerate() {
            let set = if self.holds_out(label) { &mut validation } else { &mut train };
            set.push(data.image(i), label).expect("a sample of a data set fits a set of its size");
        }
        (train, validation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(labels: &[u8]) -> Dataset {
        Dataset::new(labels.iter().map(|&l| l * 10).collect(), labels.to_vec(), 1, 1).unwrap()
    }

    #[test]
    fn each_class_gives_up_its_share_rounded_either_way() {
        // Classes of 1 to 200 samples, interleaved.
        let mut labels = Vec::new();
        for round in 0..200u32 {
            labels.extend((0..10u8).filter(|&c| round < 1 + u32::from(c) * 22));
        }
        let data = data(&labels);
        for share in [0.1f32, 0.25, 0.5] {
            let (train, validation) = ValidationSplit::new(share, 7).unwrap().split(&data);
            assert_eq!(train.len() + validation.len(), data.len());
            for c in 0..10u8 {
                let n = labels.iter().filter(|&&l| l == c).count() as f32;
                let held = validation.labels().iter().filter(|&&l| l == c).count() as f32;
                assert!(
                    held == (n * share).floor() || held == (n * share).ceil(),
                    "share {share}: class {c}: {held} of {n}"
                );
            }
            // Each image went with its label.
            for set in [&train, &validation] {
                assert!((0..set.len()).all(|i| set.image(i)[0] == set.labels()[i] * 10));
            }
        }
    }

    #[test]
    fn the_same_seed_picks_the_same_samples_and_another_seed_others() {
        let labels: Vec<u8> = (0..1000).map(|i| (i * 7 % 10) as u8).collect();
        let pick = |seed| {
            let mut split = ValidationSplit::new(0.2, seed).unwrap();
            labels.iter().map(|&l| split.holds_out(l)).collect::<Vec<bool>>()
        };
        assert_eq!(pick(3), pick(3));
        assert_ne!(pick(3), pick(4));
    }

    #[test]
    fn a_share_of_zero_holds_nothing_out_and_bad_shares_are_named() {
        let mut split = ValidationSplit::new(0.0, 1).unwrap();
        assert!((0..100).all(|i| !split.holds_out((i % 10) as u8)));
        for bad in [-0.1, 0.6, f32::NAN] {
            let error = ValidationSplit::new(bad, 1).unwrap_err().to_string();
            assert!(error.contains("val_split"), "{error}");
        }
    }
}
