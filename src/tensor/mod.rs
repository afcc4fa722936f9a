//! Tensors: n-dimensional f32 arrays on `ndarray`, and the shape rules the ops share.
//!
//! A tensor is a plain [`ndarray::ArrayD<f32>`]; this module adds the broadcasting rules of
//! numpy and the reduction that undoes a broadcast in the backward pass.

use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, Axis, IxDyn, Slice, Zip};

use crate::{Error, Result};

/// The crate's tensor: an owned, dynamically shaped array of f32.
pub type Tensor = ArrayD<f32>;

/// A tensor of the given shape filled from `data` in row-major order.
///
/// # Errors
/// When `data.len()` is not the product of `shape`.
pub fn from_vec(shape: &[usize], data: Vec<f32>) -> Result<Tensor> {
    let len = data.len();
    ArrayD::from_shape_vec(IxDyn(shape), data)
        .map_err(|_| Error::bad_shape("from_vec", shape, format!("{len} values do not fill it")))
}

/// The elements of `t` in row-major order as a slice: borrowed for every tensor the tape
/// makes (contiguous), copied once for one given from outside in another layout. Elementwise
/// loops over slices are a fraction of the code of ndarray's `Zip` over dynamic shapes (one
/// instance of which is 5 to 7 KB of wasm), and vectorise as well.
pub fn row_major(t: &Tensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(t.iter().copied().collect()),
    }
}

/// A tensor holding one number, shaped `[]`.
pub fn scalar(value: f32) -> Tensor {
    ArrayD::from_elem(IxDyn(&[]), value)
}

/// The shape two operands broadcast to under numpy's rules: align from the right, and each
/// pair of dimensions must be equal or contain a 1.
///
/// # Errors
/// [`Error::ShapeMismatch`] naming `op` and both shapes.
pub fn broadcast_shape(op: &'static str, lhs: &[usize], rhs: &[usize]) -> Result<Vec<usize>> {
    let rank = lhs.len().max(rhs.len());
    let dim = |shape: &[usize], i: usize| {
        let pad = rank - shape.len();
        if i < pad {
            1
        } else {
            shape[i - pad]
        }
    };
    (0..rank)
        .map(|i| match (dim(lhs, i), dim(rhs, i)) {
            (a, b) if a == b => Ok(a),
            (1, b) => Ok(b),
            (a, 1) => Ok(a),
            _ => Err(Error::mismatch(op, lhs, rhs)),
        })
        .collect()
}

/// Adds `grad` onto `acc`, undoing a broadcast: where `acc` has fewer axes or a 1 against a
/// longer axis of `grad`, the gradient of that broadcast operand is the sum over every
/// position it was copied to.
pub fn add_reduced(mut acc: ArrayViewMutD<f32>, grad: ArrayViewD<f32>) {
    if acc.ndim() < grad.ndim() {
        for sub in grad.axis_iter(Axis(0)) {
            add_reduced(acc.view_mut(), sub);
        }
        return;
    }
    let broadcast = (0..grad.ndim()).any(|a| acc.shape()[a] == 1 && grad.shape()[a] != 1);
    if !broadcast {
        Zip::from(&mut acc).and(&grad).for_each(|a, &g| *a += g);
        return;
    }
    // Each element of `acc` takes the sum of the block of `grad` it was copied over.
    let dims = acc.raw_dim();
    for (index, a) in acc.indexed_iter_mut() {
        let block = grad.slice_each_axis(|axis| {
            let i = axis.axis.index();
            if dims[i] == 1 {
                Slice::from(..)
            } else {
                Slice::from(index[i]..index[i] + 1)
            }
        });
        *a += block.sum();
    }
}

/// Checks that `axis` names a dimension of `shape`.
///
/// # Errors
/// [`Error::BadShape`] naming `op`.
pub fn check_axis(op: &'static str, shape: &[usize], axis: usize) -> Result<()> {
    if axis < shape.len() {
        Ok(())
    } else {
        Err(Error::bad_shape(op, shape, format!("axis {axis} is out of range")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_follows_numpy() {
        assert_eq!(broadcast_shape("add", &[4, 3], &[3]).unwrap(), vec![4, 3]);
        assert_eq!(broadcast_shape("add", &[4, 1], &[1, 5]).unwrap(), vec![4, 5]);
        assert_eq!(broadcast_shape("add", &[], &[2, 2]).unwrap(), vec![2, 2]);
        let err = broadcast_shape("add", &[4, 3], &[4]).unwrap_err().to_string();
        assert_eq!(err, "add: shapes [4, 3] and [4] are incompatible");
    }

    #[test]
    fn add_reduced_undoes_broadcast() {
        let grad = Tensor::ones(IxDyn(&[2, 4, 3]));
        let mut acc = Tensor::ones(IxDyn(&[3]));
        add_reduced(acc.view_mut(), grad.view());
        assert_eq!(acc, Tensor::from_elem(IxDyn(&[3]), 9.0));
        let mut acc = Tensor::zeros(IxDyn(&[4, 1]));
        add_reduced(acc.view_mut(), grad.view());
        assert_eq!(acc, Tensor::from_elem(IxDyn(&[4, 1]), 6.0));
        let mut acc = Tensor::zeros(IxDyn(&[2, 1, 3]));
        add_reduced(acc.view_mut(), grad.view());
        assert_eq!(acc, Tensor::from_elem(IxDyn(&[2, 1, 3]), 4.0));
    }
}
