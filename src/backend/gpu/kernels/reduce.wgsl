// out[i, j] = scale * sum over k of x[i, k, j]: a sum or mean over one axis of x seen as
// [before, axis, after].
//
// p: before, axis length, after, scale (f32 bits).

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

// Whether out += the sum rather than out = the sum.
override ACCUMULATE: bool = false;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let o = flat_index(id, groups);
    let len = p[1];
    let after = p[2];
    if (o >= p[0] * after) {
        return;
    }
    let start = (o / after) * len * after + o % after;
    // Pairwise, as the CPU's pairwise_sum: blocks of 128 added in order, partials[d] the sum
    // of 2^d blocks, merged as a binary counter carries.
    var partials: array<f32, 32>;
    var depth = 0u;
    var block = 0u;
    for (var k0 = 0u; k0 < len; k0 += 128u) {
        var s = 0.0;
        let end = min(k0 + 128u, len);
        for (var k = k0; k < end; k++) {
            s += x[start + k * after];
        }
        var carry = block;
        while ((carry & 1u) == 1u) {
            depth -= 1u;
            s += partials[depth];
            carry >>= 1u;
        }
        partials[depth] = s;
        depth += 1u;
        block += 1u;
    }
    var sum = 0.0;
    while (depth > 0u) {
        depth -= 1u;
        sum += partials[depth];
    }
    if (ACCUMULATE) {
        out[o] += sum * bitcast<f32>(p[3]);
    } else {
        out[o] = sum * bitcast<f32>(p[3]);
    }
}
