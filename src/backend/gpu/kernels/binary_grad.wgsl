// The gradient of a broadcasting binary op with respect to one operand: for each element of
// the operand's shape, the sum of the term below over every output element it was broadcast
// to, added into `grad_in`. One invocation per operand element, so no two write the same place.
//
// p: operand element count, out shape [4], operand shape [4] (each axis 1 or the output's),
//    a strides [4], b strides [4].

@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> grad_in: array<f32>;

// The term: 0: g, 1: -g, 2: g b, 3: g a, 4: g / b, 5: -g a / b^2.
override TERM: u32 = 0u;

fn term(gv: f32, x: f32, y: f32) -> f32 {
    switch TERM {
        case 0u: { return gv; }
        case 1u: { return -gv; }
        case 2u: { return gv * y; }
        case 3u: { return gv * x; }
        case 4u: { return gv / y; }
        default: { return -gv * x / (y * y); }
    }
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let t = flat_index(id, groups);
    if (t >= p[0]) {
        return;
    }
    // This element's index along each axis, and how many output elements it spans.
    var index: array<u32, 4>;
    var spans: array<u32, 4>;
    var rest = t;
    var count = 1u;
    for (var axis = 3; axis >= 0; axis--) {
        let size = p[5u + u32(axis)];
        index[axis] = rest % size;
        rest /= size;
        spans[axis] = select(1u, p[1u + u32(axis)], size == 1u);
        count *= spans[axis];
    }
    var sum = 0.0;
    for (var r = 0u; r < count; r++) {
        var left = r;
        var io = 0u;
        var ia = 0u;
        var ib = 0u;
        var stride = 1u;
        for (var axis = 3; axis >= 0; axis--) {
            let at = index[axis] + left % spans[axis];
            left /= spans[axis];
            io += at * stride;
            stride *= p[1u + u32(axis)];
            ia += at * p[9u + u32(axis)];
            ib += at * p[13u + u32(axis)];
        }
        sum += term(g[io], a[ia], b[ib]);
    }
    grad_in[t] += sum;
}
