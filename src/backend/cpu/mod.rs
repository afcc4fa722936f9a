//! CPU kernels: the reference implementation of every numerical routine the ops need.

pub mod conv;
mod math;
pub mod norm;
pub mod recurrent;
// The product's kernel in wasm; natively only its tests run, matrixmultiply's AVX2/FMA
// kernels being faster there.
#[cfg_attr(not(all(target_arch = "wasm32", target_feature = "simd128")), allow(dead_code))]
mod gemm;
pub use gemm::multiply_add_chains;

use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis, Ix2, Zip};
use serde::{Deserialize, Serialize};

use crate::tensor::Tensor;
use crate::{Error, Result};

/// An elementwise activation. Each has its function `f` and derivative `df` side by side, so
/// the two cannot drift apart.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Activation {
    Relu,
    /// `x` for positive inputs, `alpha * x` otherwise.
    LeakyRelu {
        #[serde(default = "default_leak")]
        alpha: f32,
    },
    Sigmoid,
    Tanh,
    /// The Gaussian error linear unit in its tanh form (Hendrycks and Gimpel 2016), as GPT-2,
    /// BERT's reference code and jax's `jax.nn.gelu` (default `approximate=True`) compute it:
    /// `x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
    Gelu,
}

/// GELU's constants: sqrt(2 / pi) and the cubic term's weight.
const GELU_C: f32 = 0.797_884_6;
const GELU_A: f32 = 0.044_715;

fn default_leak() -> f32 {
    0.01
}

impl Activation {
    /// The activation's name in specs and error messages.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::LeakyRelu { .. } => "leaky_relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Gelu => "gelu",
        }
    }

    /// The activation at `x`.
    #[inline]
    pub fn f(self, x: f32) -> f32 {
        match self {
            Activation::Relu => x.max(0.0),
            Activation::LeakyRelu { alpha } => {
                if x > 0.0 {
                    x
                } else {
                    alpha * x
                }
            }
            Activation::Sigmoid => math::sigmoid(x),
            Activation::Tanh => math::tanh(x),
            Activation::Gelu => 0.5 * x * (1.0 + math::tanh(GELU_C * (x + GELU_A * x * x * x))),
        }
    }

    /// The derivative at input `x`, given the output `y = f(x)` (sigmoid and tanh are cheaper
    /// from `y`).
    #[inline]
    pub fn df(self, x: f32, y: f32) -> f32 {
        match self {
            Activation::Relu => {
                if x > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::LeakyRelu { alpha } => {
                if x > 0.0 {
                    1.0
                } else {
                    alpha
                }
            }
            Activation::Sigmoid => y * (1.0 - y),
            Activation::Tanh => 1.0 - y * y,
            // d/dx x/2 (1 + t) with t = tanh(u), u = c (x + a x^3):
            // (1 + t)/2 + x/2 (1 - t^2) c (1 + 3 a x^2).
            Activation::Gelu => {
                let t = math::tanh(GELU_C * (x + GELU_A * x * x * x));
                0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * GELU_A * x * x)
            }
        }
    }
}

/// Views `t` as a matrix, or says which operand of `op` is not one.
pub fn as_matrix<'a>(op: &'static str, t: &'a Tensor) -> Result<ArrayView2<'a, f32>> {
    t.view().into_dimensionality::<Ix2>().map_err(|_| Error::bad_shape(op, t.shape(), "expects a matrix"))
}

/// `a @ b` for matrices `[m, k]` and `[k, n]`: a packed, cache-blocked sgemm (our SIMD128 one
/// in wasm, matrixmultiply's natively), split across cores with the `threads` feature.
pub fn matmul(a: &ArrayView2<f32>, b: &ArrayView2<f32>) -> Array2<f32> {
    let mut c = Array2::zeros((a.nrows(), b.ncols()));
    matmul_into(a, b, c.view_mut(), false);
    c
}

/// `c = a @ b`, or `c += a @ b` when `accumulate`; with `c` overwritten, what it held before
/// is never read.
pub fn matmul_into(a: &ArrayView2<f32>, b: &ArrayView2<f32>, c: ArrayViewMut2<f32>, accumulate: bool) {
    let beta = if accumulate { 1.0 } else { 0.0 };
    gemm_into(a.view(), b.view(), c, beta, pieces(a.nrows(), a.ncols(), b.ncols()));
}

/// What the CPU kernels compute with: in wasm, SIMD128, or with relaxed SIMD's fused
/// multiply-add in the product's micro-kernel (the build with `+relaxed-simd`); natively,
/// what the processor has.
pub const INSTRUCTIONS: &str = if cfg!(target_feature = "relaxed-simd") {
    "WebAssembly relaxed SIMD"
} else if cfg!(target_arch = "wasm32") {
    "WebAssembly SIMD"
} else {
    "native"
};

/// How many threads the CPU kernels split work across: rayon's pool with the `threads`
/// feature (in wasm, the Web Workers started by `initThreadPool`), else one.
pub fn threads() -> usize {
    #[cfg(feature = "threads")]
    {
        rayon::current_num_threads()
    }
    #[cfg(not(feature = "threads"))]
    {
        1
    }
}

/// Runs `work` on a thread of the pool (with the `threads` feature), so that each product
/// inside it hands half its work to one other thread instead of both halves to the pool from
/// outside, which costs a hand-over and a wake-up per product.
pub fn on_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    #[cfg(feature = "threads")]
    {
        rayon::scope(|_| work())
    }
    #[cfg(not(feature = "threads"))]
    {
        work()
    }
}

/// Calls `f(i, chunk)` for the `i`th `len`-long chunk of `out`; on the pool's threads with
/// the `threads` feature. For work that splits into independent pieces, such as the images
/// of a batch.
pub fn for_each_chunk<T: Send>(out: &mut [T], len: usize, f: impl Fn(usize, &mut [T]) + Send + Sync) {
    if len == 0 {
        return;
    }
    #[cfg(feature = "threads")]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(len).enumerate().for_each(|(i, chunk)| f(i, chunk));
    }
    #[cfg(not(feature = "threads"))]
    out.chunks_mut(len).enumerate().for_each(|(i, chunk)| f(i, chunk));
}

/// Below this many multiply-adds a product is not worth handing to other threads: waking one
/// costs tens of microseconds in a browser, about what a product of this size takes.
const MIN_WORK_PER_THREAD: usize = 1 << 20;

/// How many pieces to cut an `m x k @ k x n` product into. The work is counted in `u64`: in
/// wasm32, `usize` wraps at 2048³ and such a product ran on one thread.
fn pieces(m: usize, k: usize, n: usize) -> usize {
    let work = m as u64 * k as u64 * n as u64;
    (work / MIN_WORK_PER_THREAD as u64).clamp(1, threads() as u64) as usize
}

/// `c = a @ b + beta c`, cut into `pieces` along the longer side of `c`. Each piece is a whole
/// sgemm over the full `k`, so the sums are formed in the same order as in one piece and the
/// result does not depend on the thread count.
fn gemm_into(a: ArrayView2<f32>, b: ArrayView2<f32>, c: ArrayViewMut2<f32>, beta: f32, pieces: usize) {
    #[cfg(feature = "threads")]
    if pieces > 1 {
        let (m, n) = c.dim();
        let first = pieces / 2;
        // Cut at a multiple of 8 so each piece keeps whole register blocks of the kernel.
        let cut = |len: usize| (len * first / pieces).next_multiple_of(8).min(len);
        if m >= n {
            let at = cut(m);
            let (a0, a1) = a.split_at(Axis(0), at);
            let (c0, c1) = c.split_at(Axis(0), at);
            rayon::join(|| gemm_into(a0, b, c0, beta, first), || gemm_into(a1, b, c1, beta, pieces - first));
        } else {
            let at = cut(n);
            let (b0, b1) = b.split_at(Axis(1), at);
            let (c0, c1) = c.split_at(Axis(1), at);
            rayon::join(|| gemm_into(a, b0, c0, beta, first), || gemm_into(a, b1, c1, beta, pieces - first));
        }
        return;
    }
    let _ = pieces;
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    gemm::gemm(a, b, c, beta);
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    ndarray::linalg::general_mat_mul(1.0, &a, &b, beta, &mut { c });
}

/// An elementwise arithmetic operation of two operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
}

/// `out = x op y` elementwise, `x` and `y` broadcast to `out`'s shape under numpy's rules
/// (which the caller has checked: see [`crate::tensor::broadcast_shape`]); `out` must be
/// contiguous, as every tensor the tape makes is.
pub fn binary(x: &Tensor, y: &Tensor, op: Binary, out: &mut Tensor) {
    match op {
        Binary::Add => broadcast_rows(x, y, out, |a, b| a + b),
        Binary::Sub => broadcast_rows(x, y, out, |a, b| a - b),
        Binary::Mul => broadcast_rows(x, y, out, |a, b| a * b),
        Binary::Div => broadcast_rows(x, y, out, |a, b| a / b),
    }
}

/// [`binary`] for one `f`, a row of the last axis at a time: within a row each operand is a
/// run of values or one value repeated, so each row is one loop that vectorises, and the
/// rows' starts follow the operands' broadcast strides (0 along a broadcast axis).
fn broadcast_rows(x: &Tensor, y: &Tensor, out: &mut Tensor, f: impl Fn(f32, f32) -> f32) {
    let shape = out.shape().to_vec();
    let (xs, ys) = (crate::tensor::row_major(x), crate::tensor::row_major(y));
    let (sx, sy) = (broadcast_strides(x.shape(), &shape), broadcast_strides(y.shape(), &shape));
    let out = out.as_slice_mut().expect("tensors made by the tape are contiguous");
    let row = shape.last().copied().unwrap_or(1);
    if row == 0 || out.is_empty() {
        return;
    }
    let outer = shape.len().saturating_sub(1);
    let (rx, ry) = (sx.last().copied().unwrap_or(0), sy.last().copied().unwrap_or(0));
    let mut index = vec![0; outer];
    let (mut ox, mut oy) = (0, 0);
    for o in out.chunks_exact_mut(row) {
        match (rx, ry) {
            (0, 0) => o.fill(f(xs[ox], ys[oy])),
            (0, _) => o.iter_mut().zip(&ys[oy..oy + row]).for_each(|(o, &b)| *o = f(xs[ox], b)),
            (_, 0) => o.iter_mut().zip(&xs[ox..ox + row]).for_each(|(o, &a)| *o = f(a, ys[oy])),
            _ => o
                .iter_mut()
                .zip(&xs[ox..ox + row])
                .zip(&ys[oy..oy + row])
                .for_each(|((o, &a), &b)| *o = f(a, b)),
        }
        // The next row: the outer index counts up like an odometer.
        for axis in (0..outer).rev() {
            index[axis] += 1;
            ox += sx[axis];
            oy += sy[axis];
            if index[axis] < shape[axis] {
                break;
            }
            index[axis] = 0;
            ox -= sx[axis] * shape[axis];
            oy -= sy[axis] * shape[axis];
        }
    }
}

/// The strides, in elements of its row-major data, that read an operand of `shape` broadcast
/// to `out` (aligned from the right): 0 along the axes it is broadcast over.
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let pad = out.len() - shape.len();
    let mut strides = vec![0; out.len()];
    let mut step = 1;
    for axis in (0..shape.len()).rev() {
        if shape[axis] != 1 || out[pad + axis] == 1 {
            strides[pad + axis] = step;
        }
        step *= shape[axis];
    }
    strides
}

/// How many values [`pairwise_sum`] adds in order before it pairs; reduce.wgsl uses the same.
pub const SUM_BLOCK: usize = 128;

/// The sum of `values`: blocks of [`SUM_BLOCK`] added in order, the blocks' sums then added in
/// pairs, pairs of pairs and so on, in the order of a binary counter so that it needs no
/// recursion. This is pairwise summation as numpy does it (`pairwise_sum` in
/// `numpy/_core/src/umath/loops_utils.h.src`, which also unrolls each block eight ways and
/// halves recursively: the same precision, not the same bits). Its rounding error grows with
/// the logarithm of the length rather than the length: batch norm's mean over 64 * 28 * 28 =
/// 50,176 values of 0.1 is 0.1000508 added in order, 0.1 pairwise. reduce.wgsl runs the same
/// steps, so the GPU's sums are the CPU's.
pub fn pairwise_sum(values: impl IntoIterator<Item = f32>) -> f32 {
    // partials[d] holds the sum of 2^d blocks; 64 levels cover any length.
    let mut partials = [0.0f32; usize::BITS as usize];
    let mut depth = 0;
    let mut blocks = 0usize;
    let mut push = |mut sum: f32| {
        // Block number `blocks` completes one pair for each trailing one bit of its index.
        let mut carry = blocks;
        while carry & 1 == 1 {
            depth -= 1;
            sum += partials[depth];
            carry >>= 1;
        }
        partials[depth] = sum;
        depth += 1;
        blocks += 1;
    };
    let (mut sum, mut count) = (0.0, 0);
    for v in values {
        sum += v;
        count += 1;
        if count == SUM_BLOCK {
            push(sum);
            (sum, count) = (0.0, 0);
        }
    }
    if count > 0 {
        push(sum);
    }
    partials[..depth].iter().rev().fold(0.0, |acc, &p| acc + p)
}

/// `scale` times the sum of `x` over `axis` into `out`, which is `x`'s shape without `axis`;
/// each sum is a [`pairwise_sum`].
pub fn sum_axis(x: &Tensor, axis: usize, scale: f32, out: &mut Tensor) {
    // As [before, axis, after] in row-major order: one small loop for every rank and axis.
    let (len, after) = (x.shape()[axis], x.shape()[axis + 1..].iter().product::<usize>());
    let out = out.as_slice_mut().expect("a fresh tensor is contiguous");
    if len == 0 {
        out.fill(0.0);
        return;
    }
    let x = crate::tensor::row_major(x);
    for (i, o) in out.iter_mut().enumerate() {
        let start = (i / after) * len * after + i % after;
        *o = pairwise_sum(x[start..].iter().step_by(after).take(len).copied()) * scale;
    }
}

/// Softmax over the last axis into `out` (shaped like `x`), shifted by the row maximum so
/// `exp` cannot overflow.
pub fn softmax(x: &Tensor, out: &mut Tensor) {
    out.assign(x);
    for mut row in out.lanes_mut(Axis(x.ndim() - 1)) {
        let max = row.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        row.mapv_inplace(|v| (v - max).exp());
        let sum = row.sum();
        row.mapv_inplace(|v| v / sum);
    }
}

/// Log-softmax over the last axis into `out` (shaped like `x`): `x - max - ln(sum(exp(x - max)))`.
pub fn log_softmax(x: &Tensor, out: &mut Tensor) {
    out.assign(x);
    for row in out.lanes_mut(Axis(x.ndim() - 1)) {
        log_softmax_row(row);
    }
}

fn log_softmax_row(mut row: ndarray::ArrayViewMut1<f32>) {
    let max = row.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let log_sum = row.fold(0.0, |s, &v| s + (v - max).exp()).ln();
    row.mapv_inplace(|v| v - max - log_sum);
}

/// Mean cross-entropy of softmax(`logits`) against integer `labels`; the probabilities, which
/// the backward pass needs, go into `probs` (shaped like `logits`).
///
/// # Errors
/// When `logits` is not `[batch, classes]`, the label count differs from the batch, or a label
/// is not below the class count.
pub fn softmax_cross_entropy(logits: &Tensor, labels: &[u8], probs: &mut Tensor) -> Result<f32> {
    const OP: &str = "softmax_cross_entropy";
    let (batch, classes) = as_matrix(OP, logits)?.dim();
    if labels.len() != batch {
        return Err(Error::mismatch(OP, &[batch, classes], &[labels.len()]));
    }
    if let Some(&bad) = labels.iter().find(|&&l| usize::from(l) >= classes) {
        return Err(Error::invalid(OP, format!("label {bad} is not below the class count {classes}")));
    }
    probs.assign(logits);
    let mut loss = 0.0;
    for (mut row, &label) in probs.outer_iter_mut().zip(labels) {
        log_softmax_row(row.view_mut().into_dimensionality().expect("rows of a matrix"));
        loss -= row[usize::from(label)];
        row.mapv_inplace(f32::exp);
    }
    Ok(loss / batch as f32)
}

/// `out = f(x)`, elementwise.
pub fn map(x: &Tensor, act: Activation, out: &mut Tensor) {
    match (x.as_slice(), out.as_slice_mut()) {
        (Some(xs), Some(outs)) => {
            outs.copy_from_slice(xs);
            activate(act, outs);
        }
        _ => Zip::from(out).and(x).for_each(|o, &v| *o = act.f(v)),
    }
}

/// `xs = f(xs)`, in place. Kept out of line: the recurrent cells call it for each gate, and
/// each inlined copy of a vectorised sigmoid or tanh would add kilobytes to the wasm module.
#[inline(never)]
pub fn activate(act: Activation, xs: &mut [f32]) {
    // A plain loop per activation, with the `match` outside it, vectorises; one loop with the
    // match inside does not.
    fn each(xs: &mut [f32], f: impl Fn(f32) -> f32) {
        xs.iter_mut().for_each(|v| *v = f(*v));
    }
    match act {
        Activation::Relu => each(xs, |v| Activation::Relu.f(v)),
        Activation::LeakyRelu { alpha } => each(xs, |v| Activation::LeakyRelu { alpha }.f(v)),
        Activation::Sigmoid => each(xs, |v| Activation::Sigmoid.f(v)),
        Activation::Tanh => each(xs, |v| Activation::Tanh.f(v)),
        Activation::Gelu => each(xs, |v| Activation::Gelu.f(v)),
    }
}

/// `grad *= f'(x)`, in place, for the activation's backward pass.
pub fn map_backward(x: &Tensor, y: &Tensor, grad: &mut Tensor, act: Activation) {
    // Over slices (tape values are contiguous): a fraction of the code of a three-way `Zip`
    // over dynamic shapes.
    let (Some(xs), Some(ys), Some(gs)) = (x.as_slice(), y.as_slice(), grad.as_slice_mut()) else {
        grad.iter_mut().zip(x.iter().zip(y.iter())).for_each(|(g, (&x, &y))| *g *= act.df(x, y));
        return;
    };
    gs.iter_mut().zip(xs.iter().zip(ys)).for_each(|(g, (&x, &y))| *g *= act.df(x, y));
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn pairwise_sums_keep_their_precision_where_sums_in_order_lose_it() {
        // Batch norm's mean over a batch of 64 images of 28x28.
        let n = 64 * 28 * 28;
        let tenths = ndarray::Array1::from_elem(n, 0.1f32);
        let in_order = tenths.fold(0.0f32, |a, &v| a + v) / n as f32;
        assert!((in_order - 0.1).abs() > 4e-6, "in order: {in_order}");
        assert!((pairwise_sum(tenths.iter().copied()) / n as f32 - 0.1).abs() < 1e-7);
        // Every length around the block and counter boundaries, against f64.
        for n in [0, 1, 127, 128, 129, 255, 256, 257, 383, 1000, 128 * 7 + 3, 50_000] {
            let values = ndarray::Array1::from_shape_fn(n, |i| ((i * 7919) % 1000) as f32 / 997.0 - 0.4);
            let exact: f64 = values.iter().map(|&v| v as f64).sum();
            let sum = pairwise_sum(values.iter().copied()) as f64;
            assert!((sum - exact).abs() <= 1e-6 * (1.0 + exact.abs()), "n {n}: {sum} against {exact}");
        }
    }

    #[test]
    fn sum_axis_sums_each_lane_of_any_axis() {
        let x =
            ndarray::Array3::from_shape_fn((2, 3, 4), |(i, j, k)| (i * 100 + j * 10 + k) as f32).into_dyn();
        for axis in 0..3 {
            let mut shape = x.shape().to_vec();
            shape.remove(axis);
            let mut out = Tensor::zeros(shape);
            sum_axis(&x, axis, 0.5, &mut out);
            assert_eq!(out, x.sum_axis(Axis(axis)) * 0.5, "axis {axis}");
        }
    }

    #[test]
    fn softmax_rows_sum_to_one_even_for_huge_logits() {
        let x = array![[1000.0f32, 1000.0], [-5.0, 5.0]].into_dyn();
        let mut p = x.clone();
        softmax(&x, &mut p);
        assert_eq!(p[[0, 0]], 0.5);
        assert!((p.sum_axis(Axis(1)) - 1.0).iter().all(|d| d.abs() < 1e-6));
    }

    #[test]
    fn a_product_cut_into_pieces_equals_the_whole_to_the_bit() {
        for (m, k, n) in [(1, 5, 3), (37, 19, 11), (11, 23, 41), (130, 70, 9), (64, 784, 128)] {
            let a = Array2::from_shape_fn((m, k), |(i, j)| ((i * 31 + j * 17) % 13) as f32 / 7.0 - 0.9);
            let b = Array2::from_shape_fn((k, n), |(i, j)| ((i * 5 + j * 11) % 17) as f32 / 9.0 - 0.8);
            let mut whole = Array2::zeros((m, n));
            gemm_into(a.view(), b.view(), whole.view_mut(), 0.0, 1);
            assert!((&whole - &a.dot(&b)).iter().all(|d| d.abs() < 1e-4));
            let mut twice = whole.clone();
            gemm_into(a.view(), b.view(), twice.view_mut(), 1.0, 1);
            assert!((&twice - &whole * 2.0).iter().all(|d| d.abs() < 1e-4));
            for pieces in [2, 3, 5] {
                let mut cut = Array2::from_elem((m, n), f32::NAN);
                gemm_into(a.view(), b.view(), cut.view_mut(), 0.0, pieces);
                assert_eq!(cut, whole, "{m}x{k} @ {k}x{n} in {pieces} pieces");
                gemm_into(a.view(), b.view(), cut.view_mut(), 1.0, pieces);
                assert_eq!(cut, twice, "accumulated, {m}x{k} @ {k}x{n} in {pieces} pieces");
            }
        }
    }

    #[test]
    fn binary_broadcasts_as_ndarray_does() {
        let cases: [(&[usize], &[usize]); 9] = [
            (&[4, 3], &[4, 3]),
            (&[4, 3], &[3]),
            (&[3], &[4, 3]),
            (&[2, 1], &[1, 5]),
            (&[], &[2, 3]),
            (&[2, 3], &[]),
            (&[2, 3, 4], &[3, 1]),
            (&[2, 1, 4, 1], &[3, 1, 5]),
            (&[1], &[1]),
        ];
        let fill = |shape: &[usize], k: f32| {
            let mut i = 0.0;
            Tensor::from_shape_simple_fn(ndarray::IxDyn(shape), || {
                i += 1.0;
                i * k + 0.5
            })
        };
        for (a, b) in cases {
            let (x, y) = (fill(a, 0.7), fill(b, -1.3));
            let shape = crate::tensor::broadcast_shape("test", a, b).unwrap();
            for (op, f) in [
                (Binary::Add, (|a, b| a + b) as fn(f32, f32) -> f32),
                (Binary::Sub, |a, b| a - b),
                (Binary::Mul, |a, b| a * b),
                (Binary::Div, |a, b| a / b),
            ] {
                let mut want = Tensor::zeros(ndarray::IxDyn(&shape));
                Zip::from(&mut want).and_broadcast(&x).and_broadcast(&y).for_each(|w, &a, &b| *w = f(a, b));
                let mut got = Tensor::from_elem(ndarray::IxDyn(&shape), f32::NAN);
                binary(&x, &y, op, &mut got);
                assert_eq!(got, want, "{op:?} {a:?} {b:?}");
                // An operand in another layout than row-major reads the same.
                if x.ndim() == 2 {
                    let transposed = x.t().to_owned().reversed_axes();
                    binary(&transposed, &y, op, &mut got);
                    assert_eq!(got, want, "{op:?} {a:?} (column-major) {b:?}");
                }
            }
        }
    }

    #[test]
    fn cross_entropy_of_uniform_logits_is_ln_classes() {
        let logits = Tensor::zeros(ndarray::IxDyn(&[3, 10]));
        let mut probs = logits.clone();
        let loss = softmax_cross_entropy(&logits, &[0, 4, 9], &mut probs).unwrap();
        // -ln(1/10) = ln 10
        assert!((loss - 10f32.ln()).abs() < 1e-6);
        assert!(probs.iter().all(|&p| (p - 0.1).abs() < 1e-6));
        let err = softmax_cross_entropy(&logits, &[0, 4, 10], &mut probs).unwrap_err().to_string();
        assert_eq!(err, "softmax_cross_entropy: label 10 is not below the class count 10");
    }
}
