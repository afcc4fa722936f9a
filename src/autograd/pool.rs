//! Memory that one training step hands to the next.
//!
//! A training step computes the same shapes every time, so the buffers of its values, its
//! gradients and its saved state can be kept when the step ends and handed out again by the
//! next: after the first step, a step asks the allocator for no tensor memory at all.

use std::collections::HashMap;

use ndarray::IxDyn;

use super::Node;
use crate::tensor::Tensor;

/// Buffers kept between training steps: a [`super::Tape`] made with [`super::Tape::with_pool`]
/// takes the memory of every value it computes from here, and [`super::Tape::into_pool`] gives
/// it all back. A buffer left unused through a whole step (a batch of another size, an input
/// the caller made) is freed at [`Pool::end_step`], so the pool holds no more than one step
/// needs.
#[derive(Default)]
pub struct Pool {
    floats: Shelf<f32>,
    indices: Shelf<usize>,
    /// The tape's node list and the backward pass's gradient slots, emptied but with their
    /// capacity kept.
    pub(super) nodes: Vec<Node>,
    pub(super) grads: Vec<Option<Tensor>>,
    /// The list of the last backward pass's parameter gradients, emptied, for the next: a
    /// model with a few dozen parameters (the resnet's 35) would otherwise grow a new one of
    /// several KB every step.
    pub(super) param_grads: Vec<(super::ParamId, Tensor)>,
}

impl Pool {
    /// A tensor of `shape` whose elements are left over from earlier use: the caller must
    /// write every one.
    pub fn take(&mut self, shape: &[usize]) -> Tensor {
        let mut data = self.floats.take(shape.iter().product(), 0.0);
        if cfg!(debug_assertions) {
            // Whatever reads an element before writing it turns up as a NaN in the tests.
            data.fill(f32::NAN);
        }
        Tensor::from_shape_vec(IxDyn(shape), data).expect("the length is the shape's")
    }

    /// A tensor of `shape` filled with zeros: a kept buffer is cleared, a new one comes zeroed.
    pub fn zeros(&mut self, shape: &[usize]) -> Tensor {
        let len = shape.iter().product();
        let data = match self.floats.reuse(len) {
            Some(mut kept) => {
                kept.fill(0.0);
                kept
            }
            None => vec![0.0; len],
        };
        Tensor::from_shape_vec(IxDyn(shape), data).expect("the length is the shape's")
    }

    /// Keeps `t`'s memory for a later [`Pool::take`].
    pub fn give(&mut self, t: Tensor) {
        self.floats.give(t.into_raw_vec_and_offset().0);
    }

    /// `len` indices whose values are left over from earlier use.
    pub fn take_indices(&mut self, len: usize) -> Vec<usize> {
        self.indices.take(len, 0)
    }

    pub fn give_indices(&mut self, v: Vec<usize>) {
        self.indices.give(v);
    }

    /// Frees every buffer that no one took since the last call: call it once a step.
    pub fn end_step(&mut self) {
        self.floats.end_step();
        self.indices.end_step();
    }
}

/// Free buffers of one element type, by length, each with the step it was given back in.
struct Shelf<T> {
    free: HashMap<usize, Vec<(Vec<T>, u64)>>,
    step: u64,
}

impl<T> Default for Shelf<T> {
    fn default() -> Self {
        Shelf { free: HashMap::new(), step: 0 }
    }
}

impl<T: Copy> Shelf<T> {
    fn take(&mut self, len: usize, fill: T) -> Vec<T> {
        self.reuse(len).unwrap_or_else(|| vec![fill; len])
    }

    /// A kept buffer of `len` elements, if there is one.
    fn reuse(&mut self, len: usize) -> Option<Vec<T>> {
        self.free.get_mut(&len).and_then(Vec::pop).map(|(v, _)| v)
    }

    fn give(&mut self, v: Vec<T>) {
        self.free.entry(v.len()).or_default().push((v, self.step));
    }

    fn end_step(&mut self) {
        let step = self.step;
        for list in self.free.values_mut() {
            list.retain(|(_, given)| *given == step);
        }
        self.step += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_comes_back_for_the_same_length_and_goes_when_unused_for_a_step() {
        let mut pool = Pool::default();
        let t = pool.zeros(&[2, 3]);
        let at = t.as_ptr();
        pool.give(t);
        pool.end_step();
        let again = pool.take(&[3, 2]);
        assert_eq!(again.as_ptr(), at, "same length, same memory");
        assert!(pool.take(&[6]).as_ptr() != at, "taken already");
        pool.give(again);
        pool.end_step();
        pool.end_step();
        assert!(pool.floats.free[&6].is_empty(), "unused through a step, freed");
    }

    #[test]
    fn zeros_clears_a_kept_buffer() {
        let mut pool = Pool::default();
        let mut t = pool.zeros(&[4]);
        t.fill(7.0);
        let at = t.as_ptr();
        pool.give(t);
        let again = pool.zeros(&[2, 2]);
        assert_eq!(again.as_ptr(), at, "the kept buffer");
        assert!(again.iter().all(|&v| v == 0.0));
    }
}
