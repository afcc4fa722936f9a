// The backward pass of recurrent_cell.wgsl, one invocation per (row, unit), as
// backend/cpu/recurrent.rs's cell_backward: from the new state's gradient g, adds the
// gradients of the step's input projections (into step `step` of dx), of hu and of the
// previous state (for the LSTM its c part only: h reaches a step through hu alone).
//
// p: batch, units, time, step (as the forward kernel). The cell (CELL, cell.wgsl) and which
// gradients to add are override constants.

@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> hu: array<f32>;
@group(0) @binding(3) var<storage, read> state: array<f32>;
@group(0) @binding(4) var<storage, read> gates: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
@group(0) @binding(6) var<storage, read_write> dhu: array<f32>;
@group(0) @binding(7) var<storage, read_write> dstate: array<f32>;

// Which gradients to add.
override DX: bool = false;
override DHU: bool = false;
override DSTATE: bool = false;

// Adds gate k's gradients: dz to x's, dh to hu's.
fn add_gate(at_x: u32, at: u32, dz: f32, dh: f32) {
    if (DX) {
        dx[at_x] += dz;
    }
    if (DHU) {
        dhu[at] += dh;
    }
}

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
            let h = gates[at];
            let dz = g[i] * (1.0 - h * h);
            add_gate(at_x, at, dz, dz);
        }
        case 1u: {
            let ig = gates[at];
            let f = gates[at + units];
            let gg = gates[at + 2u * units];
            let o = gates[at + 3u * units];
            let s = i + cell.b * units;
            let c_prev = state[s + units];
            let tc = squash(f * c_prev + ig * gg);
            let gh = g[s];
            let dc = g[s + units] + gh * o * (1.0 - tc * tc);
            let dzi = dc * gg * ig * (1.0 - ig);
            let dzf = dc * c_prev * f * (1.0 - f);
            let dzg = dc * ig * (1.0 - gg * gg);
            let dzo = gh * tc * o * (1.0 - o);
            add_gate(at_x, at, dzi, dzi);
            add_gate(at_x + units, at + units, dzf, dzf);
            add_gate(at_x + 2u * units, at + 2u * units, dzg, dzg);
            add_gate(at_x + 3u * units, at + 3u * units, dzo, dzo);
            if (DSTATE) {
                dstate[s + units] += dc * f;
            }
        }
        default: {
            let r = gates[at];
            let u = gates[at + units];
            let n = gates[at + 2u * units];
            let dn = g[i] * (1.0 - u) * (1.0 - n * n);
            let dr = dn * hu[at + 2u * units] * r * (1.0 - r);
            let du = g[i] * (state[i] - n) * u * (1.0 - u);
            add_gate(at_x, at, dr, dr);
            add_gate(at_x + units, at + units, du, du);
            add_gate(at_x + 2u * units, at + 2u * units, dn, dn * r);
            if (DSTATE) {
                dstate[i] += g[i] * u;
            }
        }
    }
}
