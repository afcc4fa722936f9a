// The backward pass of batch_norm.wgsl, a workgroup per channel, as backend/cpu/norm.rs's:
// adds the parameters' gradients (sum g x̂ and sum g over the channel) and the input's,
// dx = gamma inv_std (g - mean(g) - x̂ mean(g x̂)).
//
// p: batch, channels, positions, eps (f32 bits). Which gradients to add are override constants.

@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> gamma: array<f32>;
@group(0) @binding(4) var<storage, read> stats: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
@group(0) @binding(6) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(7) var<storage, read_write> dbeta: array<f32>;

override DX: bool = false;
override DGAMMA: bool = false;
override DBETA: bool = false;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let c = group.x;
    let count = p[0] * p[2];
    let mean = stats[2u * c];
    let inv_std = 1.0 / sqrt(stats[2u * c + 1u] + bitcast<f32>(p[3]));
    var sum = 0.0;
    var dot = 0.0;
    for (var e = lane; e < count; e += 64u) {
        let i = at(c, e);
        sum += g[i];
        dot += g[i] * (x[i] - mean) * inv_std;
    }
    sum = workgroup_sum(lane, sum);
    dot = workgroup_sum(lane, dot);
    if (DGAMMA && lane == 0u) {
        dgamma[c] += dot;
    }
    if (DBETA && lane == 0u) {
        dbeta[c] += sum;
    }
    if (!DX) {
        return;
    }
    let scale = gamma[c] * inv_std;
    let mean_g = sum / f32(count);
    let mean_dot = dot / f32(count);
    for (var e = lane; e < count; e += 64u) {
        let i = at(c, e);
        dx[i] += scale * (g[i] - mean_g - (x[i] - mean) * inv_std * mean_dot);
    }
}
