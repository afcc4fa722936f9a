
// GELU's tanh argument, sqrt(2/pi) (x + 0.044715 x^3), clamped where tanh is 1 to f32
// precision: some WGSL implementations compute tanh from exp(2u), which overflows to NaN.
fn gelu_u(x: f32) -> f32 {
    return clamp(0.7978846 * (x + 0.044715 * x * x * x), -10.0, 10.0);
}
