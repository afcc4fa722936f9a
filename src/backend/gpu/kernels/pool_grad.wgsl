// The gradient of pool.wgsl, gathered per input element (pool_gather.wgsl, appended).
//
// p: as pool.wgsl.

@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> argmax: array<u32>;
@group(0) @binding(3) var<storage, read_write> grad_x: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(id, groups);
    if (i >= p[0] * p[1] * p[2]) {
        return;
    }
    grad_x[i] += pool_gather(i, 0u);
}
