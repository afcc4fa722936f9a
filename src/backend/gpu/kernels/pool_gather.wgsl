
// Appended to the kernels that take a gradient back through pooling, which declare `g` (the
// pooled output's gradient) and `argmax` (pool.wgsl's): the gradient at input element i of
// [planes, h, w], gathered from the windows that hold it. Max pooling passes each output's
// gradient to the input its maximum came from, average pooling spreads it evenly.
//
// q: where pool.wgsl's parameters start in p.

// Average pooling rather than max pooling.
override AVERAGE: bool = false;

fn pool_gather(i: u32, q: u32) -> f32 {
    let h = p[q + 1u];
    let w = p[q + 2u];
    let kh = p[q + 3u];
    let kw = p[q + 4u];
    let sy = p[q + 5u];
    let sx = p[q + 6u];
    let oh = p[q + 7u];
    let ow = p[q + 8u];
    let plane = i / (h * w);
    let y = (i / w) % h;
    let x = i % w;
    // Windows oy with oy * sy <= y < oy * sy + kh, and likewise along x.
    let oy_first = select(0u, (y - kh) / sy + 1u, y >= kh);
    let ox_first = select(0u, (x - kw) / sx + 1u, x >= kw);
    var sum = 0.0;
    for (var oy = oy_first; oy <= y / sy && oy < oh; oy++) {
        for (var ox = ox_first; ox <= x / sx && ox < ow; ox++) {
            let o = (plane * oh + oy) * ow + ox;
            if (AVERAGE) {
                sum += g[o] / f32(kh * kw);
            } else if (argmax[o] == i) {
                sum += g[o];
            }
        }
    }
    return sum;
}
