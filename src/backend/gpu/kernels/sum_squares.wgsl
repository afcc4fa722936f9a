// norms[0] = the sum of x^2 over all of x (every trainable parameter's gradient, packed), by
// one workgroup, for gradient clipping.
//
// p: element count.

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> norms: array<f32>;

const THREADS: u32 = 256u;
var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) local: u32) {
    var sum = 0.0;
    for (var i = local; i < p[0]; i += THREADS) {
        sum += x[i] * x[i];
    }
    partial[local] = sum;
    for (var half = THREADS / 2u; half > 0u; half /= 2u) {
        workgroupBarrier();
        if (local < half) {
            partial[local] += partial[local + half];
        }
    }
    if (local == 0u) {
        norms[0] = partial[0];
    }
}
