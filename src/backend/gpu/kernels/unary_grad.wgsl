// grad_x += g * f'(x) for the functions of unary.wgsl, from the input x and the output y
// (activation.wgsl, appended).
//
// p: element count, parameter (f32 bits); the function is ACTIVATION, as in unary.wgsl.

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read> g: array<f32>;
@group(0) @binding(4) var<storage, read_write> grad_x: array<f32>;

override ACTIVATION: u32 = 0u;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(id, groups);
    if (i >= p[0]) {
        return;
    }
    grad_x[i] += g[i] * activation_slope(ACTIVATION, bitcast<f32>(p[1]), x[i], y[i]);
}
