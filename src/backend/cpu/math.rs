//! `exp`, `sigmoid` and `tanh` for f32 without branches or calls, so that a loop of them
//! vectorises (four lanes in wasm SIMD128). The standard library's versions call libm, one
//! element at a time: in wasm, the recurrent layers' gates spent about a third of their time
//! there. These follow Cephes' single-precision routines (Moshier), and the tests below hold
//! them to within one or two units in the last place of the exact values.

use std::f32::consts::LOG2_E;

/// ln 2 in two parts, the first with few enough bits that `n * LN2_HI` is exact for every `n`
/// that occurs (Cody and Waite's reduction).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Adding and then subtracting 1.5 * 2^23 rounds an f32 of magnitude below 2^22 to the
/// nearest integer (ties to even), in plain arithmetic that vectorises on every target.
const ROUND: f32 = 12_582_912.0;

/// e^x. Inputs are clamped to [-87, 88], where e^x is a normal f32: below -87 it returns
/// about 1.6e-38 rather than a subnormal or zero, above 88 about 1.7e38 rather than infinity.
#[inline]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // e^x = 2^n e^r with n = round(x / ln 2) and |r| <= ln 2 / 2.
    let n = (x * LOG2_E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    // n is within [-126, 127], so 2^n is the float with exponent field n + 127.
    e_r * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// 1 / (1 + e^-x): neither overflows nor divides by zero, for any finite x.
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// tanh x. Near zero, `1 - 2 / (e^2|x| + 1)` would lose digits to cancellation, so there an
/// odd polynomial takes over; both are computed and one chosen, which vectorises as a select.
#[inline]
pub fn tanh(x: f32) -> f32 {
    let z = x * x;
    let p = -5.704_988_7e-3;
    let p = p * z + 2.063_909e-2;
    let p = p * z - 5.373_971_6e-2;
    let p = p * z + 1.333_144_2e-1;
    let p = p * z - 3.333_328e-1;
    let near_zero = p * z * x + x;
    let far = (1.0 - 2.0 / (exp(2.0 * x.abs()) + 1.0)).copysign(x);
    if x.abs() < 0.625 {
        near_zero
    } else {
        far
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest error of `ours` against `reference` over `xs`, in units of f32::EPSILON
    /// relative to the reference value.
    fn worst(xs: impl Iterator<Item = f32>, ours: fn(f32) -> f32, reference: fn(f64) -> f64) -> (f32, f64) {
        xs.map(|x| {
            let want = reference(f64::from(x));
            (
                x,
                (f64::from(ours(x)) - want).abs()
                    / want.abs().max(f64::MIN_POSITIVE)
                    / f64::from(f32::EPSILON),
            )
        })
        .fold((0.0, 0.0), |worst, this| if this.1 > worst.1 { this } else { worst })
    }

    /// Every 97th f32 between -limit and limit (about 20 million values), and both limits.
    fn sweep(limit: f32) -> impl Iterator<Item = f32> {
        let positive = (0..limit.to_bits()).step_by(97).map(f32::from_bits).chain([limit]);
        positive.clone().chain(positive.map(|x| -x))
    }

    #[test]
    fn exp_is_within_one_ulp_where_its_result_is_normal() {
        let (x, ulp) = worst(sweep(87.0).filter(|&x| x <= 88.0), exp, f64::exp);
        assert!(ulp < 1.0, "exp({x}) is off by {ulp:.2} ulp");
        let (x, ulp) = worst((0..10_000).map(|i| 87.0 + i as f32 / 10_000.0), exp, f64::exp);
        assert!(ulp < 1.0, "exp({x}) is off by {ulp:.2} ulp");
    }

    #[test]
    fn exp_clamps_rather_than_overflowing() {
        for x in [88.5, 1e3, f32::MAX] {
            assert!(exp(x).is_finite() && exp(x) > 1e38, "exp({x}) = {}", exp(x));
        }
        for x in [-87.5, -1e3, f32::MIN] {
            assert!(exp(x) > 0.0 && exp(x) < 2e-38, "exp({x}) = {}", exp(x));
        }
    }

    #[test]
    fn sigmoid_is_within_two_ulp() {
        let (x, ulp) = worst(sweep(86.0), sigmoid, |x| 1.0 / (1.0 + (-x).exp()));
        assert!(ulp < 2.0, "sigmoid({x}) is off by {ulp:.2} ulp");
        assert_eq!((sigmoid(1e3), sigmoid(f32::MAX)), (1.0, 1.0));
        assert!(sigmoid(-1e3) >= 0.0 && sigmoid(-1e3) < 1e-38);
    }

    #[test]
    fn tanh_is_within_two_ulp_near_zero_and_far_from_it() {
        let (x, ulp) = worst(sweep(10.0).filter(|&x| x != 0.0), tanh, f64::tanh);
        assert!(ulp < 2.0, "tanh({x}) is off by {ulp:.2} ulp");
        assert_eq!((tanh(0.0), tanh(50.0), tanh(-f32::MAX)), (0.0, 1.0, -1.0));
    }
}
