//! Layer and batch normalisation, forward and backward, each as one op: the tape's dozen
//! primitive ops for either were a dozen GPU dispatches each way.

use ndarray::{ArrayView2, ArrayView3, ArrayViewMut2, ArrayViewMut3, Axis, Zip};

use super::pairwise_sum;

/// `y = (x - mean) / sqrt(var + eps) * gamma + beta` for each row of `x` `[rows, d]`, the
/// variance biased (as PyTorch and jax compute it); each row's mean and `1 / sqrt(var + eps)`
/// into `stats` `[rows, 2]` for the backward pass.
pub fn layer_norm_forward(
    x: ArrayView2<f32>,
    (gamma, beta): (&[f32], &[f32]),
    eps: f32,
    mut y: ArrayViewMut2<f32>,
    mut stats: ArrayViewMut2<f32>,
) {
    let d = x.ncols() as f32;
    Zip::from(x.rows()).and(y.rows_mut()).and(stats.rows_mut()).for_each(|x, mut y, mut stats| {
        let mean = x.sum() / d;
        let var = x.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / d;
        let inv_std = 1.0 / (var + eps).sqrt();
        for (((y, &x), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
            *y = (x - mean) * inv_std * g + b;
        }
        (stats[0], stats[1]) = (mean, inv_std);
    });
}

/// From the output's gradient `g`: the input's into `dx` (written whole), with `x̂` the
/// normalised input, `dx = inv_std (ĝ - mean(ĝ) - x̂ mean(ĝ x̂))` for `ĝ = g gamma`; and the
/// parameters' added into `dgamma` (`sum g x̂` over the rows) and `dbeta` (`sum g`).
pub fn layer_norm_backward(
    g: ArrayView2<f32>,
    x: ArrayView2<f32>,
    gamma: &[f32],
    stats: ArrayView2<f32>,
    mut dx: ArrayViewMut2<f32>,
    (dgamma, dbeta): (&mut [f32], &mut [f32]),
) {
    let d = x.ncols() as f32;
    Zip::from(g.rows()).and(x.rows()).and(stats.rows()).and(dx.rows_mut()).for_each(|g, x, stats, mut dx| {
        let (mean, inv_std) = (stats[0], stats[1]);
        let (mut sum, mut dot) = (0.0f32, 0.0f32);
        for (k, (&g, &x)) in g.iter().zip(x).enumerate() {
            let (gh, xh) = (g * gamma[k], (x - mean) * inv_std);
            sum += gh;
            dot += gh * xh;
            dgamma[k] += g * xh;
            dbeta[k] += g;
        }
        let (sum, dot) = (sum / d, dot / d);
        for (k, (dx, (&g, &x))) in dx.iter_mut().zip(g.iter().zip(x)).enumerate() {
            let xh = (x - mean) * inv_std;
            *dx = inv_std * (g * gamma[k] - sum - xh * dot);
        }
    });
}

/// Batch normalisation on the batch's statistics, for `x` seen as `[batch, channels,
/// positions]` (positions 1 after a dense layer): per channel, the mean and the biased
/// variance over the batch and the positions (pairwise sums, as [`super::pairwise_sum`]) into
/// `stats` `[channels, 2]`, and `y = (x - mean) / sqrt(var + eps) * gamma + beta`.
pub fn batch_norm_forward(
    x: ArrayView3<f32>,
    (gamma, beta): (&[f32], &[f32]),
    eps: f32,
    mut y: ArrayViewMut3<f32>,
    mut stats: ArrayViewMut2<f32>,
) {
    let count = (x.len() / x.len_of(Axis(1)).max(1)) as f32;
    for (c, mut stat) in stats.rows_mut().into_iter().enumerate() {
        let xc = x.index_axis(Axis(1), c);
        let mean = pairwise_sum(xc.iter().copied()) / count;
        let var = pairwise_sum(xc.iter().map(|&v| (v - mean) * (v - mean))) / count;
        let (scale, shift) = (gamma[c] / (var + eps).sqrt(), beta[c]);
        y.index_axis_mut(Axis(1), c).zip_mut_with(&xc, |y, &x| *y = (x - mean) * scale + shift);
        (stat[0], stat[1]) = (mean, var);
    }
}

/// From the output's gradient `g`: the input's into `dx` (written whole),
/// `dx = gamma inv_std (g - mean(g) - x̂ mean(g x̂))` per channel, and the parameters' added into
/// `dgamma` (`sum g x̂`) and `dbeta` (`sum g`).
pub fn batch_norm_backward(
    g: ArrayView3<f32>,
    x: ArrayView3<f32>,
    gamma: &[f32],
    (stats, eps): (ArrayView2<f32>, f32),
    mut dx: ArrayViewMut3<f32>,
    (dgamma, dbeta): (&mut [f32], &mut [f32]),
) {
    let count = (x.len() / x.len_of(Axis(1)).max(1)) as f32;
    for (c, stat) in stats.rows().into_iter().enumerate() {
        let (mean, inv_std) = (stat[0], 1.0 / (stat[1] + eps).sqrt());
        let (gc, xc) = (g.index_axis(Axis(1), c), x.index_axis(Axis(1), c));
        let sum = pairwise_sum(gc.iter().copied());
        let dot = pairwise_sum(gc.iter().zip(&xc).map(|(&g, &x)| g * (x - mean) * inv_std));
        dgamma[c] += dot;
        dbeta[c] += sum;
        let (sum, dot) = (sum / count, dot / count);
        let mut dxc = dx.index_axis_mut(Axis(1), c);
        Zip::from(&mut dxc).and(&gc).and(&xc).for_each(|dx, &g, &x| {
            *dx = gamma[c] * inv_std * (g - sum - (x - mean) * inv_std * dot);
        });
    }
}
