// The adjoint of im2col.wgsl: grad_x += every entry of grad_cols that was read from that
// input position. Gathered per input element, so no two invocations write the same place.
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
    let y = i32((i / w) % h) + i32(p[8]);
    let x = i32(i % w) + i32(p[9]);
    let width = c * kh * kw;
    var sum = 0.0;
    for (var ky = 0u; ky < kh; ky++) {
        let ty = y - i32(ky);
        if (ty < 0 || ty % i32(sy) != 0 || ty / i32(sy) >= i32(oh)) {
            continue;
        }
        for (var kx = 0u; kx < kw; kx++) {
            let tx = x - i32(kx);
            if (tx < 0 || tx % i32(sx) != 0 || tx / i32(sx) >= i32(ow)) {
                continue;
            }
            let row = (b * oh + u32(ty) / sy) * ow + u32(tx) / sx;
            sum += grad_cols[row * width + (ch * kh + ky) * kw + kx];
        }
    }
    grad_x[i] += sum;
}
