// c = a · b as in matmul.wgsl (the same sizes in p, the same split k, batches and epilogue:
// product.wgsl), for products that fill whole tiles: each workgroup of 16 x 16 invocations
// computes a 64 x 64 tile of c, staging 64 x 16 of a and 16 x 64 of b in workgroup memory
// for each step of 16 along k, so that each value read from global memory serves 64
// multiply-adds rather than matmul.wgsl's 8. Each invocation keeps a 4 x 4 block of the tile
// in registers: rows lid.y + 16 i and columns lid.x + 16 j, so that neighbouring invocations
// read neighbouring words of the staged tiles. Hardware adapters only, by default: on a
// software one the two barriers of each step cost more than the reads they save (see
// Gpu::with_tiled_products).

const TILE: u32 = 64u;
const DEPTH: u32 = 16u;

// Both staged tiles indexed [k][row or column].
var<workgroup> tile_a: array<array<f32, TILE>, DEPTH>;
var<workgroup> tile_b: array<array<f32, TILE>, DEPTH>;

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
    @builtin(local_invocation_index) index: u32,
) {
    let m = p[0];
    let n = p[1];
    let k = p[2];
    let row0 = group.y * TILE;
    let col0 = group.x * TILE;
    let matrix = group.z / p[8];
    let split = group.z % p[8];
    let a0 = matrix * p[9];
    let b0 = matrix * p[10];
    let k_end = min(k, (split + 1u) * p[7]);
    var sum: array<vec4<f32>, 4>;
    // Every invocation reaches every barrier: the loop's bounds are the workgroup's.
    for (var k0 = split * p[7]; k0 < k_end; k0 += DEPTH) {
        // 256 invocations stage 1,024 values of each operand, 4 each; past an edge, zeros.
        for (var l = 0u; l < 4u; l++) {
            let e = index + l * 256u;
            let ar = row0 + e / DEPTH;
            let ak = k0 + e % DEPTH;
            var va = 0.0;
            if (ar < m && ak < k_end) {
                va = a[a0 + ar * p[3] + ak * p[4]];
            }
            tile_a[e % DEPTH][e / DEPTH] = va;
            let bk = k0 + e / TILE;
            let bc = col0 + e % TILE;
            var vb = 0.0;
            if (bk < k_end && bc < n) {
                vb = b[b0 + bk * p[5] + bc * p[6]];
            }
            tile_b[e / TILE][e % TILE] = vb;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < DEPTH; kk++) {
            let bv = vec4<f32>(
                tile_b[kk][local.x],
                tile_b[kk][local.x + 16u],
                tile_b[kk][local.x + 32u],
                tile_b[kk][local.x + 48u],
            );
            sum[0] += tile_a[kk][local.y] * bv;
            sum[1] += tile_a[kk][local.y + 16u] * bv;
            sum[2] += tile_a[kk][local.y + 32u] * bv;
            sum[3] += tile_a[kk][local.y + 48u] * bv;
        }
        workgroupBarrier();
    }
    let slice = group.z * m * n;
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + local.y + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + local.x + 16u * j;
            if (row < m && col < n) {
                write(slice, row, col, sum[i][j]);
            }
        }
    }
}
