// c = a · b for a [m, k] and b [k, n], each operand read through (row, column) strides so
// that the backward pass's transposed products need no copy. Each invocation computes an
// 8 x 8 block of c in registers, so every value it loads is used eight times; a workgroup of
// 8 x 8 covers 64 x 64. On SwiftShader, whose time goes to loads, that ran its products 1.5
// to 2 times faster than blocks of 4 x 4. No workgroup memory or barriers: software Vulkan
// (lavapipe, SwiftShader) runs barriers slowly. Wide products on a hardware GPU run on
// matmul_tiled.wgsl instead.
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
// Epilogue (product.wgsl, shared with matmul_tiled.wgsl): a layer's bias (one per column, or
// one per row: a convolution computed as [filters, positions] per image) and activation
// (activation.wgsl, appended) applied to the product as it is written, so that a dense or
// convolution layer's forward pass is one dispatch. `pre` keeps the value before the
// activation, for the activations whose derivative needs it. Products in one piece only.
//
// p: m, n, k, a row stride, a column stride, b row stride, b column stride, chunk (k for a
// product in one piece), splits (chunks per matrix), a matrix stride, b matrix stride, the
// activation's parameter (f32 bits). The epilogue and whether c += a · b are override
// constants (product.wgsl).

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let m = p[0];
    let n = p[1];
    let k = p[2];
    let row0 = id.y * 8u;
    let col0 = id.x * 8u;
    if (row0 >= m || col0 >= n) {
        return;
    }
    // Rows and columns past the edge repeat the last one; their results are not written.
    let step = vec4<u32>(0u, 1u, 2u, 3u);
    let rows_lo = min(row0 + step, vec4<u32>(m - 1u)) * p[3];
    let rows_hi = min(row0 + 4u + step, vec4<u32>(m - 1u)) * p[3];
    let cols_lo = min(col0 + step, vec4<u32>(n - 1u)) * p[6];
    let cols_hi = min(col0 + 4u + step, vec4<u32>(n - 1u)) * p[6];
    let matrix = id.z / p[8];
    let split = id.z % p[8];
    let a0 = matrix * p[9];
    let b0 = matrix * p[10];
    // sum[2 i] holds row i's columns 0 to 3, sum[2 i + 1] its columns 4 to 7.
    var sum: array<vec4<f32>, 16>;
    let k_end = min(k, (split + 1u) * p[7]);
    for (var kk = split * p[7]; kk < k_end; kk++) {
        let ka = a0 + kk * p[4];
        let kb = b0 + kk * p[5];
        let lo = vec4<f32>(a[ka + rows_lo.x], a[ka + rows_lo.y], a[ka + rows_lo.z], a[ka + rows_lo.w]);
        let hi = vec4<f32>(a[ka + rows_hi.x], a[ka + rows_hi.y], a[ka + rows_hi.z], a[ka + rows_hi.w]);
        let left = vec4<f32>(b[kb + cols_lo.x], b[kb + cols_lo.y], b[kb + cols_lo.z], b[kb + cols_lo.w]);
        let right = vec4<f32>(b[kb + cols_hi.x], b[kb + cols_hi.y], b[kb + cols_hi.z], b[kb + cols_hi.w]);
        sum[0] += lo.x * left;
        sum[1] += lo.x * right;
        sum[2] += lo.y * left;
        sum[3] += lo.y * right;
        sum[4] += lo.z * left;
        sum[5] += lo.z * right;
        sum[6] += lo.w * left;
        sum[7] += lo.w * right;
        sum[8] += hi.x * left;
        sum[9] += hi.x * right;
        sum[10] += hi.y * left;
        sum[11] += hi.y * right;
        sum[12] += hi.z * left;
        sum[13] += hi.z * right;
        sum[14] += hi.w * left;
        sum[15] += hi.w * right;
    }
    let slice = id.z * m * n;
    for (var i = 0u; i < 8u; i++) {
        for (var j = 0u; j < 8u; j++) {
            if (row0 + i < m && col0 + j < n) {
                write(slice, row0 + i, col0 + j, sum[2u * i + j / 4u][j % 4u]);
            }
        }
    }
}
