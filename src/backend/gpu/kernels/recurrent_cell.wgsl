// One time step of a recurrent cell, as backend/cpu/recurrent.rs computes it, one invocation
// per (row, unit): the new state from the step's input projections (read in place in x
// [batch, time, gates * units]), the previous state's product hu [batch, gates * units] and
// the previous state, which for the LSTM is h then c. The gates' activations are kept for the
// backward pass (recurrent_cell_grad.wgsl).
//
// p: batch, units, time, step; the cell is CELL (cell.wgsl).

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> hu: array<f32>;
@group(0) @binding(3) var<storage, read> state: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read_write> gates: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(id, groups);
    let units = p[1];
    if (i >= p[0] * units) {
        return;
    }
    let cell = cell_at(i);
    let at_x = cell.x;
    let at = cell.gate;
    switch CELL {
        case 0u: {
            let h = squash(x[at_x] + hu[at]);
            gates[at] = h;
            out[i] = h;
        }
        case 1u: {
            let ig = sigmoid(x[at_x] + hu[at]);
            let f = sigmoid(x[at_x + units] + hu[at + units]);
            let g = squash(x[at_x + 2u * units] + hu[at + 2u * units]);
            let o = sigmoid(x[at_x + 3u * units] + hu[at + 3u * units]);
            let s = i + cell.b * units;
            let c = f * state[s + units] + ig * g;
            out[s] = o * squash(c);
            out[s + units] = c;
            gates[at] = ig;
            gates[at + units] = f;
            gates[at + 2u * units] = g;
            gates[at + 3u * units] = o;
        }
        default: {
            let r = sigmoid(x[at_x] + hu[at]);
            let u = sigmoid(x[at_x + units] + hu[at + units]);
            let n = squash(x[at_x + 2u * units] + r * hu[at + 2u * units]);
            out[i] = n + u * (state[i] - n);
            gates[at] = r;
            gates[at + units] = u;
            gates[at + 2u * units] = n;
        }
    }
}
