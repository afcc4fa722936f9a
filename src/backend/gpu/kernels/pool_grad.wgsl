// The gradient of pool.wgsl, gathered per input element: max pooling passes each output's
// gradient to the input its maximum came from, average pooling spreads it evenly.
//
// p: as pool.wgsl.

@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> argmax: array<u32>;
@group(0) @binding(3) var<storage, read_write> grad_x: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(id, groups);
    let h = p[2];
    let w = p[3];
    let kh = p[4];
    let kw = p[5];
    let sy = p[6];
    let sx = p[7];
    let oh = p[8];
    let ow = p[9];
    if (i >= p[1] * h * w) {
        return;
    }
    let plane = i / (h * w);
    let y = (i / w) % h;
    let x = i % w;
    // Windows oy with oy * sy <= y < oy * sy + kh, and likewise along x.
    let oy_first = select(0u, (y - kh) / sy + 1u, y >= kh);
    let ox_first = select(0u, (x - kw) / sx + 1u, x >= kw);
    var sum = 0.0;
    for (var oy = oy_first; oy <= y / sy && oy < oh; oy++) {
        for (var ox = ox_first; ox <= x / sx && ox < ow; ox++) {
            let o = (plane * oh + oy) * ow + ox;
            if (p[0] == 1u) {
                sum += g[o] / f32(kh * kw);
            } else if (argmax[o] == i) {
                sum += g[o];
            }
        }
    }
    grad_x[i] += sum;
}
