// Max or average pooling over [batch, channels, h, w] without padding. Max pooling records
// the flat input index of each maximum (the first, as on the CPU) for its backward pass.
//
// p: batch * channels, h, w, kh, kw, stride y, stride x, oh, ow.

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> argmax: array<u32>;

// Average pooling rather than max pooling.
override AVERAGE: bool = false;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let o = flat_index(id, groups);
    let h = p[1];
    let w = p[2];
    let oh = p[7];
    let ow = p[8];
    if (o >= p[0] * oh * ow) {
        return;
    }
    let plane = o / (oh * ow);
    let oy = (o / ow) % oh;
    let ox = o % ow;
    var best = 0.0;
    var at = 0u;
    var sum = 0.0;
    var first = true;
    for (var ky = 0u; ky < p[3]; ky++) {
        for (var kx = 0u; kx < p[4]; kx++) {
            let iy = oy * p[5] + ky;
            let ix = ox * p[6] + kx;
            let i = (plane * h + iy) * w + ix;
            let v = x[i];
            sum += v;
            if (first || v > best) {
                best = v;
                at = i;
                first = false;
            }
        }
    }
    if (!AVERAGE) {
        out[o] = best;
        argmax[o] = at;
    } else {
        out[o] = sum / f32(p[3] * p[4]);
    }
}
