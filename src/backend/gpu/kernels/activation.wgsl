
// Appended to the kernels that apply an activation or its derivative (WGSL has no includes).
// code: 0 relu, 1 leaky relu (k: its slope below 0), 2 sigmoid, 3 tanh, 4 x^k, 5 GELU (the
// tanh approximation), as the CPU's Activation; NONE (the Rust side's NO_ACTIVATION) for a
// kernel's "no activation".

const NONE: u32 = 255u;

fn activate(code: u32, k: f32, v: f32) -> f32 {
    switch code {
        case 0u: { return max(v, 0.0); }
        case 1u: { return select(k * v, v, v > 0.0); }
        case 2u: { return sigmoid(v); }
        case 3u: { return tanh(v); }
        case 5u: { return 0.5 * v * (1.0 + tanh(gelu_u(v))); }
        default: { return pow(v, k); }
    }
}

// 1 / (1 + e^-v): neither branch overflows for large |v|.
fn sigmoid(v: f32) -> f32 {
    if (v >= 0.0) {
        return 1.0 / (1.0 + exp(-v));
    }
    let e = exp(v);
    return e / (1.0 + e);
}

// The derivative of activation `code` at `v`, where it took the value `out`. Relu, sigmoid
// and tanh need only `out`, so a fused product need not keep `v` for them.
fn activation_slope(code: u32, k: f32, v: f32, out: f32) -> f32 {
    switch code {
        case 0u: { return select(0.0, 1.0, out > 0.0); }
        case 1u: { return select(k, 1.0, v > 0.0); }
        case 2u: { return out * (1.0 - out); }
        case 3u: { return 1.0 - out * out; }
        case 5u: {
            let t = tanh(gelu_u(v));
            return 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * 0.7978846 * (1.0 + 0.134145 * v * v);
        }
        default: { return k * pow(v, k - 1.0); }
    }
}

// GELU's tanh argument, sqrt(2/pi) (x + 0.044715 x^3), clamped where tanh is 1 to f32
// precision: some WGSL implementations compute tanh from exp(2u), which overflows to NaN.
fn gelu_u(x: f32) -> f32 {
    return clamp(0.7978846 * (x + 0.044715 * x * x * x), -10.0, 10.0);
}
