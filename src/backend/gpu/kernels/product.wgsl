// Shared by matmul.wgsl and matmul_tiled.wgsl: the operands' bindings and the epilogue that
// writes each value of the product (see matmul.wgsl for the words of p).
//
// The epilogue's choices are override constants, so that each product's pipeline holds only
// the code it runs: a software adapter (SwiftShader) runs every branch of a kernel under
// masks, and evaluating every activation for every element took two thirds of a
// convolution's products.

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> pre: array<f32>;

// 0: no bias, 1: one per column, 2: one per row.
override BIAS: u32 = 0u;
// activation.wgsl's code, or NONE.
override ACTIVATION: u32 = NONE;
// Whether to write the value before the activation to `pre`.
override KEEP_PRE: bool = false;
// Whether c += a · b rather than c = a · b.
override ACCUMULATE: bool = false;

// c[slice + row * n + col] (+)= the epilogue of `value`, the sum of the product at (row, col).
fn write(slice: u32, row: u32, col: u32, sum: f32) {
    let at = slice + row * p[1] + col;
    var value = sum;
    if (BIAS == 1u) {
        value += bias[col];
    } else if (BIAS == 2u) {
        value += bias[row];
    }
    if (KEEP_PRE) {
        pre[at] = value;
    }
    if (ACTIVATION != NONE) {
        value = activate(ACTIVATION, bitcast<f32>(p[11]), value);
    }
    if (ACCUMULATE) {
        c[at] += value;
    } else {
        c[at] = value;
    }
}
