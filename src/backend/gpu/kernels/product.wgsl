// Shared by matmul.wgsl and matmul_tiled.wgsl: the operands' bindings and the epilogue that
// writes each value of the product (see matmul.wgsl for the words of p).

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> pre: array<f32>;

const NONE: u32 = 255u;

// c[slice + row * n + col] (+)= the epilogue of `value`, the sum of the product at (row, col).
fn write(slice: u32, row: u32, col: u32, sum: f32) {
    let at = slice + row * p[1] + col;
    var value = sum;
    if (p[12] == 1u) {
        value += bias[col];
    } else if (p[12] == 2u) {
        value += bias[row];
    }
    if (p[15] == 1u) {
        pre[at] = value;
    }
    if (p[13] != NONE) {
        value = activate(p[13], bitcast<f32>(p[14]), value);
    }
    if (p[7] == 1u) {
        c[at] += value;
    } else {
        c[at] = value;
    }
}
