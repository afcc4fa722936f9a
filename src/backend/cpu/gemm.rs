//! Our own packed, cache-blocked sgemm for WebAssembly SIMD128.
//!
//! The blocking is the one of BLIS and matrixmultiply: `k` is cut into blocks of `KC`, `b`'s
//! block is packed into panels `NR` columns wide and `a`'s into panels `MR` rows high, and a
//! micro-kernel multiplies one panel of each into an `MR x NR` tile of `c` held in registers.
//! The kernel is 4 x 8 (6 x 8 in the relaxed-SIMD build, see `MR`): eight 4-lane
//! accumulators, two lanes of `b` and one broadcast of `a` fit the 16 vector registers V8 has
//! on x64, where matrixmultiply's 8 x 8 kernel (16 accumulators) spills. The packing buffers
//! belong to the thread and are kept, so a product allocates nothing once one as large has
//! run on its thread.
//!
//! The same code runs natively on plain 4-float arrays (LLVM turns them into SSE), which is how
//! the native tests check the blocking and the packing; native builds multiply with
//! matrixmultiply's AVX2/FMA kernels, which are faster there.

use std::cell::RefCell;

use ndarray::{s, ArrayView2, ArrayViewMut2, Axis};

use lanes::F32x4;

/// Rows and columns of the tile the micro-kernel computes. A fused multiply-add takes 4
/// cycles and a core issues two a cycle, so the relaxed-SIMD build's kernel needs more than 8
/// independent accumulators to keep it busy: 6 x 8 has 12 (with two lanes of `b` and one
/// broadcast, 15 of V8's 16 vector registers), and ran 8 to 13% faster than 4 x 8 there. The
/// plain build's separate multiply and add gained nothing from it.
const MR: usize = if cfg!(target_feature = "relaxed-simd") { 6 } else { 4 };
const NR: usize = 8;
/// How far apart the packed `a` panel's steps lie, a power of two (rows past `MR` are never
/// read), so that one shifted index addresses both panels: with a stride of 6, LLVM's
/// multiplication made the 6 x 8 kernel no faster than the 4 x 8 one.
const A_STRIDE: usize = MR.next_power_of_two();
/// The block of `k` packed at once. A `b` panel (16 KiB, as BLIS's on a 32 KiB L1) stays in
/// L1 while the kernel streams `a` panels (8 KiB, 16 padded in the relaxed-SIMD build) from
/// L2. Each block of `k` reads and writes every tile of `c` again, whose rows lie a page apart
/// in a 1024-wide product, so each tile misses the cache and the TLB: with blocks of 256 the
/// relaxed-SIMD 1024 product ran at 86% of the core's peak, with 512 at 99% (timed in turns).
const KC: usize = 512;
/// Rows of `a` packed at once (64 KiB, 128 in the relaxed-SIMD build, in L2 on any laptop).
const MC: usize = 8 * MR;
/// Columns of `b` packed at once (2 MiB, in L2 or L3: the kernel reads one panel of it at a
/// time). Each block of columns packs all of `a` again, so a narrower block costs a
/// transposing copy of `a` per block: with 256 columns, the relaxed-SIMD 1024 product ran at
/// 82% of the core's peak, with 1024 at 93%.
const NC: usize = 1024;

thread_local! {
    /// This thread's packing buffers for `a` and `b`: grown to the largest blocks its products
    /// have needed (at most 128 KiB and 2 MiB), never shrunk, so that training's products
    /// allocate nothing after its first step, and a small model never holds the full 2 MiB.
    static PACKED: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// `c = a @ b + beta c` for any strides; with `beta` 0, what `c` held is never read.
pub fn gemm(a: ArrayView2<f32>, b: ArrayView2<f32>, mut c: ArrayViewMut2<f32>, beta: f32) {
    let ((m, k), n) = (a.dim(), b.ncols());
    debug_assert_eq!((k, m, n), (b.nrows(), c.nrows(), c.ncols()));
    if k == 0 {
        c.mapv_inplace(|v| if beta == 0.0 { 0.0 } else { v * beta });
        return;
    }
    let mut out = Output {
        ptr: c.as_mut_ptr(),
        rows: m,
        cols: n,
        row_stride: c.strides()[0],
        col_stride: c.strides()[1],
    };
    PACKED.with_borrow_mut(|(a_packed, b_packed)| {
        for (j0, nc) in blocks(n, NC, NR) {
            for (p0, kc) in blocks(k, KC, 1) {
                pack(b_packed, b.slice(s![p0..p0 + kc, j0..j0 + nc]), NR, NR);
                // Later blocks of k add onto what the first wrote.
                let beta = if p0 == 0 { beta } else { 1.0 };
                for (i0, mc) in blocks(m, MC, MR) {
                    pack(a_packed, a.slice(s![i0..i0 + mc, p0..p0 + kc]).reversed_axes(), MR, A_STRIDE);
                    for jr in (0..nc).step_by(NR) {
                        for ir in (0..mc).step_by(MR) {
                            let tile = kernel(kc, &a_packed[ir / MR * A_STRIDE * kc..], &b_packed[jr * kc..]);
                            let size = (MR.min(mc - ir), NR.min(nc - jr));
                            store(&tile, (i0 + ir, j0 + jr), size, &mut out, beta);
                        }
                    }
                }
            }
        }
    });
}

/// Cuts `0..len` into blocks of at most `max`, as even as multiples of `unit` allow, so that
/// no thin block is left at the end (288 columns are 144 + 144, not 256 + 32).
fn blocks(len: usize, max: usize, unit: usize) -> impl Iterator<Item = (usize, usize)> {
    let size = len.div_ceil(len.div_ceil(max).max(1)).next_multiple_of(unit).min(max);
    (0..len).step_by(size.max(1)).map(move |start| (start, size.min(len - start)))
}

/// Packs `block` (`kc x len`) into panels `width` columns wide: panel after panel, each its
/// `kc` rows of `width` values, `stride` apart (what lies between is never read), the last
/// panel padded with zeros. Reads go along whichever axis is contiguous. `out` grows to fit
/// and never shrinks.
fn pack(out: &mut Vec<f32>, block: ArrayView2<f32>, width: usize, stride: usize) {
    let (kc, len) = block.dim();
    let size = len.div_ceil(width) * stride * kc;
    if out.len() < size {
        out.resize(size, 0.0);
    }
    for (panel, i0) in (0..len).step_by(width).enumerate() {
        let out = &mut out[panel * stride * kc..][..stride * kc];
        let valid = width.min(len - i0);
        let part = block.slice(s![.., i0..i0 + valid]);
        if part.strides()[1] == 1 {
            for (row, out) in part.outer_iter().zip(out.chunks_exact_mut(stride)) {
                out[..valid].copy_from_slice(row.as_slice().expect("contiguous rows"));
            }
        } else if part.strides()[0] == 1 {
            pack_columns(out, part, stride);
        } else {
            for (i, column) in part.axis_iter(Axis(1)).enumerate() {
                for (&v, out) in column.iter().zip(out.chunks_exact_mut(stride)) {
                    out[i] = v;
                }
            }
        }
        if valid < width {
            out.chunks_exact_mut(stride).for_each(|row| row[valid..].fill(0.0));
        }
    }
}

/// Packs `part` (`kc x valid`), whose columns are contiguous, into rows `stride` apart: four
/// columns by four rows at a time, transposed in registers. This is how a row-major `a` is
/// packed; copied a value at a time, it held the relaxed-SIMD 1024 product at 93% of the
/// core's peak (98% this way), and it weighs more in training's smaller products. Lanes past
/// `valid`, up to the next multiple of 4 (at most `stride`), are written with copies of the
/// last column, for the caller to zero.
fn pack_columns(out: &mut [f32], part: ArrayView2<f32>, stride: usize) {
    let (kc, valid) = part.dim();
    debug_assert!(stride % 4 == 0 && valid.next_multiple_of(4) <= stride);
    let column = |j: usize| part.column(j.min(valid - 1)).to_slice().expect("contiguous columns");
    let whole = kc - kc % 4;
    for i in (0..valid).step_by(4) {
        let columns: [&[f32]; 4] = std::array::from_fn(|j| column(i + j));
        for k in (0..whole).step_by(4) {
            let rows = F32x4::transpose(columns.map(|c| F32x4::load(&c[k..])));
            for (t, row) in rows.into_iter().enumerate() {
                row.store(&mut out[(k + t) * stride + i..]);
            }
        }
    }
    for (row, out) in part.outer_iter().zip(out.chunks_exact_mut(stride)).skip(whole) {
        row.assign_to(&mut out[..valid]);
    }
}

/// The `MR x NR` tile `a_panel @ b_panel` over `kc` steps, as rows of two 4-lane halves.
#[inline(always)]
fn kernel(kc: usize, a: &[f32], b: &[f32]) -> [[F32x4; 2]; MR] {
    let (a, b) = (&a[..kc * A_STRIDE], &b[..kc * NR]);
    let mut c = [[F32x4::zero(); 2]; MR];
    for (a, b) in a.chunks_exact(A_STRIDE).zip(b.chunks_exact(NR)) {
        let (b0, b1) = (F32x4::load(&b[..4]), F32x4::load(&b[4..]));
        for (row, &a) in c.iter_mut().zip(&a[..MR]) {
            let a = F32x4::splat(a);
            row[0] = row[0].mul_add(a, b0);
            row[1] = row[1].mul_add(a, b1);
        }
    }
    c
}

/// `steps` rounds of `c = c * x + y` on 12 independent 4-lane chains, each the micro-kernel's
/// multiply-add (8 FLOPs a chain a round), for the benchmark to measure the ceiling of the
/// micro-kernel above. In the relaxed-SIMD build that is one fused multiply-add, and 12
/// chains are more than its latency (4 cycles) times the two a core issues a cycle, so they
/// run at the core's peak. Elsewhere it is a multiply then an add, whose latencies add up on
/// each chain: a bound from below, not the peak. Returns a lane of the chains' sum, so that
/// the work cannot be skipped.
pub fn multiply_add_chains(steps: usize) -> f32 {
    let (x, y) = (F32x4::splat(0.5), F32x4::splat(1.0));
    // Starts the optimiser cannot see, lest it fold a chain that sits at its fixed point (2).
    // Twelve chains stay in V8's 16 vector registers beside x and y.
    let mut chains: [F32x4; 12] = std::array::from_fn(|i| F32x4::splat((steps + i) as f32));
    for _ in 0..steps {
        for c in &mut chains {
            *c = y.mul_add(*c, x);
        }
    }
    let mut lanes = [0.0; 4];
    chains.iter().fold(F32x4::zero(), |sum, &c| sum.add(c)).store(&mut lanes);
    lanes[0]
}

/// Writes the top-left `rows x cols` of `tile` into `c` at `(i, j)`, plus `beta` times what
/// was there.
#[inline(always)]
fn store(
    tile: &[[F32x4; 2]; MR],
    (i, j): (usize, usize),
    (rows, cols): (usize, usize),
    c: &mut Output,
    beta: f32,
) {
    assert!(i + rows <= c.rows && j + cols <= c.cols, "the tile lies inside c");
    for (r, halves) in tile.iter().enumerate().take(rows) {
        // SAFETY: (i + r, j..j + cols) lies inside c (asserted above), whose strides these are.
        let at = |col: usize| unsafe {
            c.ptr.offset((i + r) as isize * c.row_stride + (j + col) as isize * c.col_stride)
        };
        if cols == NR && c.col_stride == 1 {
            for (h, half) in halves.iter().enumerate() {
                // SAFETY: the row's NR values from `at(0)` on are contiguous and inside c.
                let out = unsafe { std::slice::from_raw_parts_mut(at(4 * h), 4) };
                let sum =
                    if beta == 0.0 { *half } else { half.mul_add(F32x4::splat(beta), F32x4::load(out)) };
                sum.store(out);
            }
        } else {
            let mut values = [0.0; NR];
            halves[0].store(&mut values[..4]);
            halves[1].store(&mut values[4..]);
            for (col, &v) in values[..cols].iter().enumerate() {
                // SAFETY: inside c, as above.
                let out = unsafe { &mut *at(col) };
                *out = if beta == 0.0 { v } else { v + beta * *out };
            }
        }
    }
}

/// The product's output as a pointer and strides, so that writing a tile costs no view.
struct Output {
    ptr: *mut f32,
    rows: usize,
    cols: usize,
    row_stride: isize,
    col_stride: isize,
}

/// Four f32 lanes: SIMD128 in wasm, a plain array elsewhere.
mod lanes {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    use core::arch::wasm32::*;

    #[derive(Clone, Copy)]
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    pub struct F32x4(v128);

    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    impl F32x4 {
        #[inline(always)]
        pub fn zero() -> Self {
            F32x4(f32x4_splat(0.0))
        }

        #[inline(always)]
        pub fn splat(v: f32) -> Self {
            F32x4(f32x4_splat(v))
        }

        /// The first four values of `from`.
        #[inline(always)]
        pub fn load(from: &[f32]) -> Self {
            assert!(from.len() >= 4);
            // SAFETY: four values are there to read, and v128 loads need no alignment.
            F32x4(unsafe { v128_load(from.as_ptr().cast()) })
        }

        #[inline(always)]
        pub fn store(self, to: &mut [f32]) {
            assert!(to.len() >= 4);
            // SAFETY: four values are there to write, and v128 stores need no alignment.
            unsafe { v128_store(to.as_mut_ptr().cast(), self.0) }
        }

        #[inline(always)]
        pub fn add(self, other: Self) -> Self {
            F32x4(f32x4_add(self.0, other.0))
        }

        /// The 4 x 4 matrix whose rows are `rows`, transposed: two rounds of interleaving.
        #[inline(always)]
        pub fn transpose([r0, r1, r2, r3]: [Self; 4]) -> [Self; 4] {
            let low = (i32x4_shuffle::<0, 4, 1, 5>(r0.0, r1.0), i32x4_shuffle::<0, 4, 1, 5>(r2.0, r3.0));
            let high = (i32x4_shuffle::<2, 6, 3, 7>(r0.0, r1.0), i32x4_shuffle::<2, 6, 3, 7>(r2.0, r3.0));
            [
                F32x4(i64x2_shuffle::<0, 2>(low.0, low.1)),
                F32x4(i64x2_shuffle::<1, 3>(low.0, low.1)),
                F32x4(i64x2_shuffle::<0, 2>(high.0, high.1)),
                F32x4(i64x2_shuffle::<1, 3>(high.0, high.1)),
            ]
        }

        /// `self + a * b`: a multiply and an add, rounded twice; in the relaxed-SIMD build
        /// one instruction, fused (rounded once) where the processor has a fused multiply-add,
        /// which every x64 and Arm processor a browser runs on today has.
        #[inline(always)]
        pub fn mul_add(self, a: Self, b: Self) -> Self {
            #[cfg(target_feature = "relaxed-simd")]
            return F32x4(f32x4_relaxed_madd(a.0, b.0, self.0));
            #[cfg(not(target_feature = "relaxed-simd"))]
            F32x4(f32x4_add(self.0, f32x4_mul(a.0, b.0)))
        }
    }

    #[derive(Clone, Copy)]
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    pub struct F32x4([f32; 4]);

    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    impl F32x4 {
        #[inline(always)]
        pub fn zero() -> Self {
            F32x4([0.0; 4])
        }

        #[inline(always)]
        pub fn splat(v: f32) -> Self {
            F32x4([v; 4])
        }

        #[inline(always)]
        pub fn load(from: &[f32]) -> Self {
            F32x4(from[..4].try_into().expect("four values"))
        }

        #[inline(always)]
        pub fn store(self, to: &mut [f32]) {
            to[..4].copy_from_slice(&self.0);
        }

        #[inline(always)]
        pub fn add(self, other: Self) -> Self {
            F32x4(std::array::from_fn(|i| self.0[i] + other.0[i]))
        }

        #[inline(always)]
        pub fn transpose(rows: [Self; 4]) -> [Self; 4] {
            std::array::from_fn(|t| F32x4(std::array::from_fn(|j| rows[j].0[t])))
        }

        #[inline(always)]
        pub fn mul_add(self, a: Self, b: Self) -> Self {
            F32x4(std::array::from_fn(|i| self.0[i] + a.0[i] * b.0[i]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn naive(a: &Array2<f32>, b: &Array2<f32>) -> Array2<f32> {
        Array2::from_shape_fn((a.nrows(), b.ncols()), |(i, j)| {
            (0..a.ncols()).map(|p| a[[i, p]] * b[[p, j]]).sum()
        })
    }

    #[test]
    fn products_of_every_edge_case_match_the_definition() {
        // Sizes around the tile, panel and block edges, and transposed operands.
        for (m, k, n) in [
            (1, 1, 1),
            (3, 5, 7),
            (4, 8, 8),
            (5, 9, 9),
            (65, 257, 257),
            (130, 600, 33),
            (9, 20, 1030),
            (7, 0, 3),
        ] {
            let a = Array2::from_shape_fn((m, k), |(i, j)| ((i * 31 + j * 17) % 13) as f32 / 7.0 - 0.9);
            let b = Array2::from_shape_fn((k, n), |(i, j)| ((i * 5 + j * 11) % 17) as f32 / 9.0 - 0.8);
            let want = naive(&a, &b);
            let close = |got: &Array2<f32>, want: &Array2<f32>| {
                got.iter().zip(want).all(|(g, w)| (g - w).abs() <= 1e-4 * (1.0 + w.abs()))
            };
            let mut c = Array2::from_elem((m, n), f32::NAN);
            gemm(a.view(), b.view(), c.view_mut(), 0.0);
            assert!(close(&c, &want), "{m}x{k} @ {k}x{n}");
            gemm(a.view(), b.view(), c.view_mut(), 1.0);
            assert!(close(&c, &(&want * 2.0)), "accumulated {m}x{k} @ {k}x{n}");
            let (at, bt) = (a.t().to_owned(), b.t().to_owned());
            let mut c = Array2::from_elem((n, m), f32::NAN);
            gemm(bt.view(), at.view(), c.view_mut(), 0.0);
            assert!(close(&c, &want.t().to_owned()), "transposed {m}x{k} @ {k}x{n}");
            let mut c = Array2::from_elem((m, n), f32::NAN);
            gemm(at.t(), bt.t(), c.view_mut(), 0.0);
            assert!(close(&c, &want), "strided {m}x{k} @ {k}x{n}");
            // Neither axis contiguous: every other column of a wider matrix, transposed.
            let spread = |x: &Array2<f32>| {
                let mut wide = Array2::from_elem((x.ncols(), 2 * x.nrows()), f32::NAN);
                wide.slice_mut(s![.., ..;2]).assign(&x.t());
                wide
            };
            let (a2, b2) = (spread(&a), spread(&b));
            let mut c = Array2::from_elem((m, n), f32::NAN);
            gemm(a2.slice(s![.., ..;2]).t(), b2.slice(s![.., ..;2]).t(), c.view_mut(), 0.0);
            assert!(close(&c, &want), "no contiguous axis {m}x{k} @ {k}x{n}");
        }
    }

    #[test]
    fn multiply_add_chains_compute_their_recurrence() {
        // Chain i starts at steps + i; c = c / 2 + 1 halves its distance to 2 each round.
        for steps in [0, 1, 5] {
            let want: f32 = (0..12).map(|i| 2.0 + ((steps + i) as f32 - 2.0) / 2f32.powi(steps)).sum();
            let got = multiply_add_chains(steps as usize);
            assert!((got - want).abs() < 1e-4, "{steps} steps: {got}, not {want}");
        }
    }
}
