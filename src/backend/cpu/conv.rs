//! 2-d convolution by im2col: every receptive field becomes a row of a matrix, so the
//! convolution is one matrix product, and its backward pass two more plus a scatter (col2im).

use ndarray::{s, ArrayView2, ArrayView4, ArrayViewMut2, ArrayViewMut4, Axis};

use super::for_each_chunk;

/// The geometry of a convolution or pooling window over `[batch, channels, height, width]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    /// Zero padding (top, bottom, left, right).
    pub padding: (usize, usize, usize, usize),
}

impl Window {
    /// The output size for an input of `(height, width)`, or None when the window does not fit.
    pub fn output_size(&self, (h, w): (usize, usize)) -> Option<(usize, usize)> {
        let (kh, kw) = self.kernel;
        let (sh, sw) = self.stride;
        let (pt, pb, pl, pr) = self.padding;
        let (hp, wp) = (h + pt + pb, w + pl + pr);
        if hp < kh || wp < kw || sh == 0 || sw == 0 {
            return None;
        }
        Some(((hp - kh) / sh + 1, (wp - kw) / sw + 1))
    }

    /// TensorFlow's `same` padding: the output is `ceil(input / stride)`, the extra padding
    /// going to the bottom and right when it is odd.
    pub fn same_padding(
        kernel: (usize, usize),
        stride: (usize, usize),
        (h, w): (usize, usize),
    ) -> (usize, usize, usize, usize) {
        let total = |n: usize, k: usize, s: usize| ((n.div_ceil(s) - 1) * s + k).saturating_sub(n);
        let (th, tw) = (total(h, kernel.0, stride.0), total(w, kernel.1, stride.1));
        (th / 2, th - th / 2, tw / 2, tw - tw / 2)
    }
}

/// Receptive fields as rows: `[batch * out_h * out_w, channels * kh * kw]`, rows in
/// (batch, y, x) order and columns in (channel, ky, kx) order, matching a weight tensor
/// `[filters, channels, kh, kw]` flattened to `[filters, channels * kh * kw]`. Every element
/// of `cols` (contiguous) is written. Images are unrolled in parallel with the `threads`
/// feature.
pub fn im2col(x: &ArrayView4<f32>, win: &Window, mut cols: ArrayViewMut2<f32>) {
    let (n, c, h, w) = x.dim();
    let (oh, ow) = win.output_size((h, w)).expect("window checked by the caller");
    let (kh, kw) = win.kernel;
    let (sh, sw) = win.stride;
    let (pt, _, pl, _) = win.padding;
    let row_len = c * kh * kw;
    assert_eq!(cols.dim(), (n * oh * ow, row_len), "im2col: the output does not fit");
    let slice = cols.as_slice_mut().expect("im2col: the output must be contiguous");
    for_each_chunk(slice, oh * ow * row_len, |b, image_rows| {
        let image = x.index_axis(Axis(0), b);
        for (pixel, out) in image_rows.chunks_exact_mut(row_len).enumerate() {
            let (y, x0) = (pixel / ow, pixel % ow);
            for ch in 0..c {
                for ky in 0..kh {
                    let iy = (y * sh + ky) as isize - pt as isize;
                    for kx in 0..kw {
                        let ix = (x0 * sw + kx) as isize - pl as isize;
                        let inside = iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w;
                        out[(ch * kh + ky) * kw + kx] =
                            if inside { image[[ch, iy as usize, ix as usize]] } else { 0.0 };
                    }
                }
            }
        }
    });
}

/// The adjoint of [`im2col`]: adds every row entry back onto the position of `x` (contiguous)
/// it came from. Images are gathered in parallel with the `threads` feature.
pub fn col2im(cols: &ArrayView2<f32>, win: &Window, mut x: ArrayViewMut4<f32>) {
    let (_, c, h, w) = x.dim();
    let (oh, ow) = win.output_size((h, w)).expect("window checked by the caller");
    let (kh, kw) = win.kernel;
    let (sh, sw) = win.stride;
    let (pt, _, pl, _) = win.padding;
    let slice = x.as_slice_mut().expect("col2im: the output must be contiguous");
    for_each_chunk(slice, c * h * w, |b, image| {
        let rows = cols.slice(s![b * oh * ow..(b + 1) * oh * ow, ..]);
        for (pixel, values) in rows.outer_iter().enumerate() {
            let (y, x0) = (pixel / ow, pixel % ow);
            for ch in 0..c {
                for ky in 0..kh {
                    let iy = (y * sh + ky) as isize - pt as isize;
                    if iy < 0 || iy as usize >= h {
                        continue;
                    }
                    for kx in 0..kw {
                        let ix = (x0 * sw + kx) as isize - pl as isize;
                        if ix >= 0 && (ix as usize) < w {
                            image[(ch * h + iy as usize) * w + ix as usize] +=
                                values[(ch * kh + ky) * kw + kx];
                        }
                    }
                }
            }
        }
    });
}

/// Max pooling into `out`; `argmax` receives, for each output element, the flat index in `x`
/// of the maximum it took, so that the backward pass is a scatter. A window's first element
/// stands until a larger one comes. Images are pooled in parallel with the `threads` feature.
pub fn max_pool(x: &ArrayView4<f32>, win: &Window, mut out: ArrayViewMut4<f32>, argmax: &mut [usize]) {
    let (_, c, h, w) = x.dim();
    let (_, _, oh, ow) = out.dim();
    assert_eq!(argmax.len(), out.len(), "max_pool: one argmax per output");
    for_each_chunk(argmax, c * oh * ow, |b, image| {
        for (i, at) in image.iter_mut().enumerate() {
            let (ch, oy, ox) = (i / (oh * ow), (i / ow) % oh, i % ow);
            let (y0, x0) = (oy * win.stride.0, ox * win.stride.1);
            let (mut best, mut best_at) = (x[[b, ch, y0, x0]], (y0, x0));
            for iy in y0..(y0 + win.kernel.0).min(h) {
                for ix in x0..(x0 + win.kernel.1).min(w) {
                    if x[[b, ch, iy, ix]] > best {
                        best = x[[b, ch, iy, ix]];
                        best_at = (iy, ix);
                    }
                }
            }
            *at = ((b * c + ch) * h + best_at.0) * w + best_at.1;
        }
    });
    let flat = |at: usize| (at / (c * h * w), (at / (h * w)) % c, (at / w) % h, at % w);
    for (o, &at) in out.iter_mut().zip(argmax.iter()) {
        *o = x[flat(at)];
    }
}

/// Average pooling into `out`, over windows that lie inside the input (no padding).
pub fn avg_pool(x: &ArrayView4<f32>, win: &Window, mut out: ArrayViewMut4<f32>) {
    let area = (win.kernel.0 * win.kernel.1) as f32;
    for ((b, ch, y, x0), o) in out.indexed_iter_mut() {
        let mut sum = 0.0;
        for ky in 0..win.kernel.0 {
            for kx in 0..win.kernel.1 {
                sum += x[[b, ch, y * win.stride.0 + ky, x0 * win.stride.1 + kx]];
            }
        }
        *o = sum / area;
    }
}

/// The adjoint of [`avg_pool`]: each output gradient spread evenly over its window, added
/// onto `dx`.
pub fn avg_pool_backward(g: &ArrayView4<f32>, win: &Window, mut dx: ArrayViewMut4<f32>) {
    let area = (win.kernel.0 * win.kernel.1) as f32;
    for ((b, ch, y, x0), &v) in g.indexed_iter() {
        for ky in 0..win.kernel.0 {
            for kx in 0..win.kernel.1 {
                dx[[b, ch, y * win.stride.0 + ky, x0 * win.stride.1 + kx]] += v / area;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, Array4};

    #[test]
    fn same_padding_keeps_the_size_at_stride_1_and_ceils_at_stride_2() {
        let pad = Window::same_padding((5, 5), (1, 1), (28, 28));
        assert_eq!(pad, (2, 2, 2, 2));
        let win = Window { kernel: (5, 5), stride: (1, 1), padding: pad };
        assert_eq!(win.output_size((28, 28)), Some((28, 28)));
        // ceil(7 / 2) = 4 outputs need (4 - 1) * 2 + 3 = 9 inputs: 2 of padding, 1 + 1.
        let pad = Window::same_padding((3, 3), (2, 2), (7, 7));
        assert_eq!(pad, (1, 1, 1, 1));
        assert_eq!(Window::same_padding((2, 2), (2, 2), (7, 7)), (0, 1, 0, 1));
    }

    #[test]
    fn im2col_then_col2im_counts_how_often_each_input_is_used() {
        let x = Array4::<f32>::ones((1, 1, 3, 3));
        let win = Window { kernel: (2, 2), stride: (1, 1), padding: (0, 0, 0, 0) };
        let mut cols = Array2::from_elem((4, 4), f32::NAN);
        im2col(&x.view(), &win, cols.view_mut());
        let mut back = Array4::zeros((1, 1, 3, 3));
        col2im(&cols.view(), &win, back.view_mut());
        // The centre sits in all four 2x2 windows, the corners in one.
        assert_eq!(back[[0, 0, 1, 1]], 4.0);
        assert_eq!(back[[0, 0, 0, 0]], 1.0);
        assert_eq!(back[[0, 0, 0, 1]], 2.0);
    }
}
