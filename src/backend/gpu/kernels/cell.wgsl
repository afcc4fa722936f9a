// Appended to the recurrent cell's kernels, with activation.wgsl (WGSL has no includes).

// The cell: 0 simple, 1 LSTM, 2 GRU (see product.wgsl for why choices are override constants).
override CELL: u32 = 0u;

// Blocks of `units` columns in the weights: 1 simple, 4 LSTM, 3 GRU.
fn cell_gates() -> u32 {
    return select(select(3u, 4u, CELL == 1u), 1u, CELL == 0u);
}

// Where invocation `i` (row b, unit j) of a cell's kernel works, from p's batch, units, time
// and step: gate 0 of its unit in x, step `step` of [batch, time, gates * units], and in
// hu and the gates, [batch, gates * units]; gate k is `units * k` further on.
struct CellAt {
    b: u32,
    x: u32,
    gate: u32,
}

fn cell_at(i: u32) -> CellAt {
    let units = p[1];
    let b = i / units;
    let width = cell_gates() * units;
    return CellAt(b, (b * p[2] + p[3]) * width + i % units, b * width + i % units);
}

// tanh, its argument clamped where tanh is 1 to f32 precision: some WGSL implementations
// compute tanh from exp(2v), which overflows to NaN.
fn squash(v: f32) -> f32 {
    return tanh(clamp(v, -10.0, 10.0));
}
