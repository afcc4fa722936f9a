// y = f(x) elementwise, each function written as the CPU backend writes it.
//
// p: function (0 relu, 1 leaky relu, 2 sigmoid, 3 tanh, 4 power, 5 gelu), element count, parameter
//    (leak or exponent, f32 bits).

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(id, groups);
    if (i >= p[1]) {
        return;
    }
    let v = x[i];
    let k = bitcast<f32>(p[2]);
    switch p[0] {
        case 0u: { y[i] = max(v, 0.0); }
        case 1u: { y[i] = select(k * v, v, v > 0.0); }
        case 2u: {
            // Neither branch overflows for large |v|.
            if (v >= 0.0) {
                y[i] = 1.0 / (1.0 + exp(-v));
            } else {
                let e = exp(v);
                y[i] = e / (1.0 + e);
            }
        }
        case 3u: { y[i] = tanh(v); }
        case 5u: { y[i] = 0.5 * v * (1.0 + tanh(gelu_u(v))); }
        default: { y[i] = pow(v, k); }
    }
}
