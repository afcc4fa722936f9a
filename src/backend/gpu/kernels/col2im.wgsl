// The adjoint of im2col.wgsl: grad_x += every entry of grad_cols that was read from that
// input position. Gathered per input element, so no two invocations write the same place.
// The loops run over the output positions whose windows hold the element (oy with
// oy * sy <= y + pad < oy * sy + kh, and likewise along x), so that the kernel offset follows
// without a division per tap.
//
// p: as im2col.wgsl.

@group(0) @binding(1) var<storage, read> grad_cols: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad_x: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(id, groups);
    let c = p[1];
    let h = p[2];
    let w = p[3];
    let kh = p[4];
    let kw = p[5];
    let sy = p[6];
    let sx = p[7];
    let oh = p[10];
    let ow = p[11];
    if (i >= p[0] * c * h * w) {
        return;
    }
    let b = i / (c * h * w);
    let ch = (i / (h * w)) % c;
    // The element's place in the padded input.
    let y = (i / w) % h + p[8];
    let x = i % w + p[9];
    let width = c * kh * kw;
    let oy_first = select(0u, (y - kh) / sy + 1u, y >= kh);
    let ox_first = select(0u, (x - kw) / sx + 1u, x >= kw);
    let oy_end = min(y / sy + 1u, oh);
    let ox_end = min(x / sx + 1u, ow);
    var sum = 0.0;
    for (var oy = oy_first; oy < oy_end; oy++) {
        let ky = y - oy * sy;
        let row0 = (b * oh + oy) * ow;
        for (var ox = ox_first; ox < ox_end; ox++) {
            let kx = x - ox * sx;
            sum += grad_cols[(row0 + ox) * width + (ch * kh + ky) * kw + kx];
        }
    }
    grad_x[i] += sum;
}
