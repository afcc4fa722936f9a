
// Appended to the optimizer kernels, which declare `norms`: the factor that scales the
// gradients down to a global norm of `max_norm` (1 when they are within it, or when
// `max_norm` is 0, meaning no clipping), from the gradients' sum of squares.
fn clip_scale(max_norm: f32) -> f32 {
    if (max_norm <= 0.0) {
        return 1.0;
    }
    let norm = sqrt(norms[0]);
    return select(1.0, max_norm / norm, norm > max_norm);
}
