//! Classification metrics from a confusion matrix.

use serde::Serialize;

/// What one training step measured on its batch.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct StepStats {
    pub loss: f32,
    pub accuracy: f32,
    pub samples: usize,
}

/// Counts of (true class, predicted class) pairs: row `t`, column `p` counts samples of class
/// `t` predicted as `p`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfusionMatrix {
    classes: usize,
    counts: Vec<Vec<u64>>,
}

/// Precision, recall and F1 of one class. A metric whose denominator is zero is 0, as in
/// scikit-learn's `zero_division=0`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ClassScores {
    pub precision: f32,
    pub recall: f32,
    pub f1: f32,
    /// Samples whose true class this is.
    pub support: u64,
}

impl ConfusionMatrix {
    pub fn new(classes: usize) -> Self {
        ConfusionMatrix { classes, counts: vec![vec![0; classes]; classes] }
    }

    /// Counts one sample.
    ///
    /// # Panics
    /// When either class is not below the class count.
    #[track_caller]
    pub fn add(&mut self, truth: usize, predicted: usize) {
        self.counts[truth][predicted] += 1;
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The rows: `counts()[t][p]` samples of class `t` were predicted as `p`.
    pub fn counts(&self) -> &[Vec<u64>] {
        &self.counts
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// The fraction predicted correctly; 0 when empty.
    pub fn accuracy(&self) -> f32 {
        let correct: u64 = (0..self.classes).map(|c| self.counts[c][c]).sum();
        ratio(correct, self.total())
    }

    /// Scores for class `c`.
    pub fn class_scores(&self, c: usize) -> ClassScores {
        let hits = self.counts[c][c];
        let predicted: u64 = self.counts.iter().map(|row| row[c]).sum();
        let support: u64 = self.counts[c].iter().sum();
        let precision = ratio(hits, predicted);
        let recall = ratio(hits, support);
        let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
        ClassScores { precision, recall, f1, support }
    }

    /// Scores for every class, in class order.
    pub fn per_class(&self) -> Vec<ClassScores> {
        (0..self.classes).map(|c| self.class_scores(c)).collect()
    }
}

fn ratio(n: u64, d: u64) -> f32 {
    if d == 0 {
        0.0
    } else {
        n as f32 / d as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_match_hand_counts() {
        // truth 0 predicted [0, 0, 1]; truth 1 predicted [1, 0]; nothing of class 2
        let mut m = ConfusionMatrix::new(3);
        for (t, p) in [(0, 0), (0, 0), (0, 1), (1, 1), (1, 0)] {
            m.add(t, p);
        }
        assert_eq!(m.total(), 5);
        assert_eq!(m.accuracy(), 3.0 / 5.0);
        let zero = m.class_scores(0);
        // precision 2 hits / 3 predicted 0; recall 2 / 3 true 0s
        assert_eq!((zero.precision, zero.recall, zero.support), (2.0 / 3.0, 2.0 / 3.0, 3));
        assert!((zero.f1 - 2.0 / 3.0).abs() < 1e-6);
        let one = m.class_scores(1);
        // precision 1 / 2 predicted 1; recall 1 / 2 true 1s
        assert_eq!((one.precision, one.recall), (0.5, 0.5));
        assert_eq!(m.class_scores(2), ClassScores { precision: 0.0, recall: 0.0, f1: 0.0, support: 0 });
    }
}
