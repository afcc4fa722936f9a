// Batch normalisation on the batch's statistics, a workgroup per channel, as
// backend/cpu/norm.rs computes it: the channel's mean and biased variance over the batch and
// the positions into stats [channels, 2], and y = (x - mean) / sqrt(var + eps) gamma + beta.
//
// p: batch, channels, positions, eps (f32 bits).

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let c = group.x;
    let count = p[0] * p[2];
    var sum = 0.0;
    for (var e = lane; e < count; e += 64u) {
        sum += x[at(c, e)];
    }
    let mean = workgroup_sum(lane, sum) / f32(count);
    var squares = 0.0;
    for (var e = lane; e < count; e += 64u) {
        let d = x[at(c, e)] - mean;
        squares += d * d;
    }
    let variance = workgroup_sum(lane, squares) / f32(count);
    let scale = gamma[c] / sqrt(variance + bitcast<f32>(p[3]));
    for (var e = lane; e < count; e += 64u) {
        let i = at(c, e);
        y[i] = (x[i] - mean) * scale + beta[c];
    }
    if (lane == 0u) {
        stats[2u * c] = mean;
        stats[2u * c + 1u] = variance;
    }
}
