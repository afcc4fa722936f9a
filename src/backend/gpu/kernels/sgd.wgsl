// One SGD step with momentum for every trainable parameter (packed into one buffer, the
// zeros between them left zero), after clipping the gradients by their global norm:
// v = momentum v + g + decay w, w -= lr v, as the CPU's Sgd and Trainer::step.
//
// p: element count, momentum, weight decay (f32 bits), max norm (f32 bits; 0 when not
//    clipping).
// step: lr.
// norms: the gradients' sum of squares (sum_squares.wgsl), read by clip.wgsl's clip_scale,
//    which is appended to this file.

@group(0) @binding(1) var<storage, read> step: array<f32>;
@group(0) @binding(2) var<storage, read> norms: array<f32>;
@group(0) @binding(3) var<storage, read_write> w: array<f32>;
@group(0) @binding(4) var<storage, read> grad: array<f32>;
@group(0) @binding(5) var<storage, read_write> velocity: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(id, groups);
    if (i >= p[0]) {
        return;
    }
    let g = clip_scale(bitcast<f32>(p[3])) * grad[i];
    velocity[i] = bitcast<f32>(p[1]) * velocity[i] + g + bitcast<f32>(p[2]) * w[i];
    w[i] -= step[0] * velocity[i];
}
