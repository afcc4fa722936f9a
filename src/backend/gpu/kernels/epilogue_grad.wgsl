// The gradient back through a product's epilogue (matmul.wgsl's bias and activation), ahead
// of the product's own backward pass: for the layer's output gradient g, seen as [outer,
// channels, inner] (a dense layer's [rows, units, 1], a convolution's [batch, filters,
// positions]),
//   gz = g * f'(z)                  written at gz's own strides (a convolution's gradient goes
//                                   to the [rows, filters] layout its products read),
//   bias_grad[c] += sum of gz over outer and inner.
// Each channel gets `lanes` invocations (a power of two up to the workgroup's 64) whose sums a
// tree in workgroup memory adds up: one for a dense layer's few rows, so that its channels
// need few workgroups and their barriers (slow on software adapters), 64 for a convolution's
// many positions. Where the layer's output is only pooled, g is gathered from the pooled
// gradient (pool_gather.wgsl, appended), and the pooling needs no dispatch of its own.
//
// p: outer, channels, inner, gz strides (outer, channel, inner), the activation's parameter
//    (f32 bits), then pool.wgsl's parameters (9), then lanes. What the kernel computes is
//    chosen by override constants (see product.wgsl for why).
// pre: the pre-activation z, out: f(z) (activation.wgsl, appended, says which it reads; where
//    it reads only out, pre may be out).

@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> pre: array<f32>;
@group(0) @binding(3) var<storage, read> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> gz: array<f32>;
@group(0) @binding(5) var<storage, read_write> bias_grad: array<f32>;
@group(0) @binding(6) var<storage, read> argmax: array<u32>;

// activation.wgsl's code, or NONE.
override ACTIVATION: u32 = NONE;
// Whether to accumulate bias_grad.
override BIAS_GRAD: bool = false;
// Whether g is the pooled gradient (and AVERAGE, in pool_gather.wgsl, which pooling).
override POOLED: bool = false;
const THREADS: u32 = 64u;
var<workgroup> partial: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) local: u32, @builtin(workgroup_id) group: vec3<u32>) {
    let outer = p[0];
    let channels = p[1];
    let inner = p[2];
    let k = bitcast<f32>(p[6]);
    let lanes = p[16];
    let c = group.x * (THREADS / lanes) + local / lanes;
    let lane = local % lanes;
    var sum = 0.0;
    if (c < channels) {
        for (var t = lane; t < outer * inner; t += lanes) {
            let o = t / inner;
            let i = t % inner;
            let at = (o * channels + c) * inner + i;
            var v: f32;
            if (POOLED) {
                v = pool_gather(at, 7u);
            } else {
                v = g[at];
            }
            if (ACTIVATION != NONE) {
                v *= activation_slope(ACTIVATION, k, pre[at], out[at]);
            }
            gz[o * p[3] + c * p[4] + i * p[5]] = v;
            sum += v;
        }
    }
    // Each channel's lanes are adjacent: halve them until the first holds their sum.
    partial[local] = sum;
    for (var half = THREADS / 2u; half > 0u; half /= 2u) {
        workgroupBarrier();
        if (half < lanes && lane < half) {
            partial[local] += partial[local + half];
        }
    }
    if (BIAS_GRAD && lane == 0u && c < channels) {
        bias_grad[c] += partial[local];
    }
}
