// y = f(x) elementwise, each function written as the CPU backend writes it (activation.wgsl,
// appended).
//
// p: element count, parameter (leak or exponent, f32 bits).

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

// activation.wgsl's code: the function.
override ACTIVATION: u32 = 0u;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(id, groups);
    if (i >= p[0]) {
        return;
    }
    y[i] = activate(ACTIVATION, bitcast<f32>(p[1]), x[i]);
}
