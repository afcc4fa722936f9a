// Layer normalisation, one invocation per row, as backend/cpu/norm.rs computes it:
// y = (x - mean) / sqrt(var + eps) * gamma + beta over each row of d, the row's mean and
// 1 / sqrt(var + eps) kept in stats [rows, 2] for layer_norm_grad.wgsl.
//
// p: rows, d, eps (f32 bits).

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let row = flat_index(id, groups);
    let d = p[1];
    if (row >= p[0]) {
        return;
    }
    let start = row * d;
    var sum = 0.0;
    for (var k = 0u; k < d; k++) {
        sum += x[start + k];
    }
    let mean = sum / f32(d);
    var squares = 0.0;
    for (var k = 0u; k < d; k++) {
        let c = x[start + k] - mean;
        squares += c * c;
    }
    let inv_std = 1.0 / sqrt(squares / f32(d) + bitcast<f32>(p[2]));
    for (var k = 0u; k < d; k++) {
        y[start + k] = (x[start + k] - mean) * inv_std * gamma[k] + beta[k];
    }
    stats[2u * row] = mean;
    stats[2u * row + 1u] = inv_std;
}
