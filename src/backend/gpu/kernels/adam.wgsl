// One Adam step for every trainable parameter (packed into one buffer, the zeros between them
// left zero), after clipping the gradients by their global norm:
// m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2, w -= lr (m / c1) / (sqrt(v / c2) + eps),
// with g = clip_scale * grad + decay * w, as the CPU's Adam and Trainer::step.
//
// p: element count, beta1, beta2, eps, weight decay (f32 bits), max norm (f32 bits; 0 when
//    not clipping).
// step: lr, c1 = 1 - beta1^t, c2 = 1 - beta2^t, written before every step.
// norms: the gradients' sum of squares (sum_squares.wgsl), read by clip.wgsl's clip_scale,
//    which is appended to this file.

@group(0) @binding(1) var<storage, read> step: array<f32>;
@group(0) @binding(2) var<storage, read> norms: array<f32>;
@group(0) @binding(3) var<storage, read_write> w: array<f32>;
@group(0) @binding(4) var<storage, read> grad: array<f32>;
@group(0) @binding(5) var<storage, read_write> m: array<f32>;
@group(0) @binding(6) var<storage, read_write> v: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(id, groups);
    if (i >= p[0]) {
        return;
    }
    let b1 = bitcast<f32>(p[1]);
    let b2 = bitcast<f32>(p[2]);
    let g = clip_scale(bitcast<f32>(p[5])) * grad[i] + bitcast<f32>(p[4]) * w[i];
    m[i] = b1 * m[i] + (1.0 - b1) * g;
    v[i] = b2 * v[i] + (1.0 - b2) * g * g;
    w[i] -= step[0] * (m[i] / step[1]) / (sqrt(v[i] / step[2]) + bitcast<f32>(p[3]));
}
