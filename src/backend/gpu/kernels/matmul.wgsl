// c = a · b for a [m, k] and b [k, n], each operand read through (row, column) strides so
// that the backward pass's transposed products need no copy. Each invocation computes a 4 x 4
// block of c in registers, so every value it loads is used four times; a workgroup of 8 x 8
// covers 32 x 32. No workgroup memory or barriers: software Vulkan (lavapipe, SwiftShader)
// runs barriers slowly. Wide products on a hardware GPU run on matmul_tiled.wgsl instead.
//
// Split k: the workgroups along z each take `chunk` of k and write their partial product to a
// [m, n] slice of their own, so that c holds [splits, m, n] for a reduction to sum. A product
// with few outputs for its k (a convolution's weight gradient sums over every position of
// every image) would otherwise run on a handful of invocations, each through the whole of k.
//
// Batched: a stack of products (attention's heads) runs in one dispatch, the workgroups along
// z covering every (matrix, chunk) pair; matrix i reads a and b from i times their matrix
// strides and writes the [m, n] slices of c from i * splits on.
//
// Epilogue (product.wgsl, shared with matmul_tiled.wgsl): a layer's bias (one per column, or one per row: a convolution computed as
// [filters, positions] per image) and activation (activation.wgsl, appended) applied to the
// product as it is written, so that a dense or convolution layer's forward pass is one
// dispatch. `pre` keeps the value before the activation, for the activations whose
// derivative needs it. Products in one piece only.
//
// p: m, n, k, a row stride, a column stride, b row stride, b column stride, accumulate
// (1: c += a · b), chunk (k for a product in one piece), splits (chunks per matrix), a matrix
// stride, b matrix stride, bias (0 none, 1 per column, 2 per row), activation (its code;
// NONE for none), its parameter (f32 bits), keep pre (1: write pre).

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let m = p[0];
    let n = p[1];
    let k = p[2];
    let row0 = id.y * 4u;
    let col0 = id.x * 4u;
    if (row0 >= m || col0 >= n) {
        return;
    }
    // Rows and columns past the edge repeat the last one; their results are not written.
    var rows: array<u32, 4>;
    var cols: array<u32, 4>;
    for (var i = 0u; i < 4u; i++) {
        rows[i] = min(row0 + i, m - 1u) * p[3];
        cols[i] = min(col0 + i, n - 1u) * p[6];
    }
    let matrix = id.z / p[9];
    let split = id.z % p[9];
    let a0 = matrix * p[10];
    let b0 = matrix * p[11];
    var sum: array<vec4<f32>, 4>;
    let k_end = min(k, (split + 1u) * p[8]);
    for (var kk = split * p[8]; kk < k_end; kk++) {
        let ka = a0 + kk * p[4];
        let kb = b0 + kk * p[5];
        let bv = vec4<f32>(b[kb + cols[0]], b[kb + cols[1]], b[kb + cols[2]], b[kb + cols[3]]);
        sum[0] += a[rows[0] + ka] * bv;
        sum[1] += a[rows[1] + ka] * bv;
        sum[2] += a[rows[2] + ka] * bv;
        sum[3] += a[rows[3] + ka] * bv;
    }
    let slice = id.z * m * n;
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            if (row0 + i < m && col0 + j < n) {
                write(slice, row0 + i, col0 + j, sum[i][j]);
            }
        }
    }
}
