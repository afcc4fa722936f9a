// The gradient of reduce.wgsl: grad_x[i, k, j] += scale * g[i, j].
//
// p: before, axis length, after, scale (f32 bits).

@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad_x: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(id, groups);
    let after = p[2];
    if (i >= p[0] * p[1] * after) {
        return;
    }
    let o = (i / (p[1] * after)) * after + i % after;
    grad_x[i] += g[o] * bitcast<f32>(p[3]);
}
