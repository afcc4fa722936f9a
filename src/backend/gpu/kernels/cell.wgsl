// Appended to the recurrent cell's kernels, with activation.wgsl (WGSL has no includes).

// Blocks of `units` columns in the weights: 1 simple, 4 LSTM, 3 GRU.
fn cell_gates(cell: u32) -> u32 {
    return select(select(3u, 4u, cell == 1u), 1u, cell == 0u);
}

// Where invocation `i` (row b, unit j) of a cell's kernel works, from p's cell, batch, units,
// time and step: gate 0 of its unit in x, step `step` of [batch, time, gates * units], and in
// hu and the gates, [batch, gates * units]; gate k is `units * k` further on.
struct CellAt {
    b: u32,
    x: u32,
    gate: u32,
}

fn cell_at(i: u32) -> CellAt {
    let units = p[2];
    let b = i / units;
    let width = cell_gates(p[0]) * units;
    return CellAt(b, (b * p[3] + p[4]) * width + i % units, b * width + i % units);
}

// tanh, its argument clamped where tanh is 1 to f32 precision: some WGSL implementations
// compute tanh from exp(2v), which overflows to NaN.
fn squash(v: f32) -> f32 {
    return tanh(clamp(v, -10.0, 10.0));
}
