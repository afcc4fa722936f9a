// Appended to batch_norm.wgsl and batch_norm_grad.wgsl (WGSL has no includes): a workgroup
// of 64 per channel of x seen as [batch, channels, positions] (p[0], p[1], p[2]).

var<workgroup> partial: array<f32, 64>;

// Where element e of channel c lies: image e / positions, position e % positions.
fn at(c: u32, e: u32) -> u32 {
    let positions = p[2];
    return ((e / positions) * p[1] + c) * positions + e % positions;
}

// The sum of every lane's v, returned to every lane of the workgroup.
fn workgroup_sum(lane: u32, v: f32) -> f32 {
    partial[lane] = v;
    workgroupBarrier();
    for (var half = 32u; half > 0u; half >>= 1u) {
        if (lane < half) {
            partial[lane] += partial[lane + half];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}
