
// Appended to the optimizer kernels, which declare `norms`: the factor that scales the
// gradients down to a global norm of `max_norm` (1 when they are within it, or when
// `max_norm` is 0, meaning no clipping), from the `count` parameters' sums of squares.
fn clip_scale(max_norm: f32, count: u32) -> f32 {
    if (max_norm <= 0.0) {
        return 1.0;
    }
    var total = 0.0;
    for (var i = 0u; i < count; i++) {
        total += norms[i];
    }
    let norm = sqrt(total);
    return select(1.0, max_norm / norm, norm > max_norm);
}
