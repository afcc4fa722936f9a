// Appended to the recurrent cell's kernels, with activation.wgsl (WGSL has no includes).

// Blocks of `units` columns in the weights: 1 simple, 4 LSTM, 3 GRU.
fn cell_gates(cell: u32) -> u32 {
    return select(select(3u, 4u, cell == 1u), 1u, cell == 0u);
}

// tanh, its argument clamped where tanh is 1 to f32 precision: some WGSL implementations
// compute tanh from exp(2v), which overflows to NaN.
fn squash(v: f32) -> f32 {
    return tanh(clamp(v, -10.0, 10.0));
}
