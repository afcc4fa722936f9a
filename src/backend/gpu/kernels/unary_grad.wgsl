// grad_x += g * f'(x) for the functions of unary.wgsl, from the input x and the output y.
//
// p: function (as unary.wgsl), element count, parameter (f32 bits).

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read> g: array<f32>;
@group(0) @binding(4) var<storage, read_write> grad_x: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(id, groups);
    if (i >= p[1]) {
        return;
    }
    let v = x[i];
    let out = y[i];
    let k = bitcast<f32>(p[2]);
    var d: f32;
    switch p[0] {
        case 0u: { d = select(0.0, 1.0, v > 0.0); }
        case 1u: { d = select(k, 1.0, v > 0.0); }
        case 2u: { d = out * (1.0 - out); }
        case 3u: { d = 1.0 - out * out; }
        case 5u: {
            let t = tanh(gelu_u(v));
            d = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * 0.7978846 * (1.0 + 0.134145 * v * v);
        }
        default: { d = k * pow(v, k - 1.0); }
    }
    grad_x[i] += g[i] * d;
}
