// Receptive fields as rows, as the CPU's im2col: cols [batch * oh * ow, channels * kh * kw],
// rows in (batch, y, x) order, columns in (channel, ky, kx) order, zero where the window
// hangs over the padding.
//
// Each invocation fills one column over a run of RUN consecutive rows, stepping the position
// along instead of dividing it out of a flat index: on a software adapter the divisions cost
// more than the copy. Neighbouring invocations take neighbouring columns of the same rows, so
// that a hardware GPU's writes stay contiguous.
//
// p: batch, channels, h, w, kh, kw, stride y, stride x, pad top, pad left, oh, ow.

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> cols: array<f32>;

// Rows per invocation, set by the dispatch (plan.rs's IM2COL_RUN), which sizes the grid by it.
override RUN: u32 = 8u;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(id, groups);
    let c = p[1];
    let h = p[2];
    let w = p[3];
    let kh = p[4];
    let kw = p[5];
    let oh = p[10];
    let ow = p[11];
    let width = c * kh * kw;
    let rows = p[0] * oh * ow;
    if (i >= (rows + RUN - 1u) / RUN * width) {
        return;
    }
    let col = i % width;
    let first = i / width * RUN;
    let ch = col / (kh * kw);
    let ky = (col / kw) % kh;
    let kx = col % kw;
    var b = first / (oh * ow);
    var oy = (first / ow) % oh;
    var ox = first % ow;
    for (var row = first; row < min(first + RUN, rows); row++) {
        let iy = i32(oy * p[6] + ky) - i32(p[8]);
        let ix = i32(ox * p[7] + kx) - i32(p[9]);
        var v = 0.0;
        if (iy >= 0 && ix >= 0 && iy < i32(h) && ix < i32(w)) {
            v = x[((b * c + ch) * h + u32(iy)) * w + u32(ix)];
        }
        cols[row * width + col] = v;
        ox++;
        if (ox == ow) {
            ox = 0u;
            oy++;
            if (oy == oh) {
                oy = 0u;
                b++;
            }
        }
    }
}
