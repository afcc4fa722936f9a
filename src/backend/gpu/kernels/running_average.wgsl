// A running statistic moved toward the batch's, one invocation per channel:
// out = old (1 - momentum) + stat unbias momentum, stat the mean (0) or variance (1) that
// batch_norm.wgsl kept in stats [channels, 2].
//
// p: channels, stat, momentum (f32 bits), unbias (f32 bits).

@group(0) @binding(1) var<storage, read> old: array<f32>;
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let c = flat_index(id, groups);
    if (c >= p[0]) {
        return;
    }
    let momentum = bitcast<f32>(p[2]);
    out[c] = old[c] * (1.0 - momentum) + stats[2u * c + p[1]] * bitcast<f32>(p[3]) * momentum;
}
