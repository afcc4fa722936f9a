// out = a op b elementwise with broadcasting, over shapes of up to four axes.
//
// p: element count, out shape [4], a strides [4], b strides [4] (stride 0 along an axis that
// operand broadcasts).

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// The op: 0 add, 1 sub, 2 mul, 3 div (see product.wgsl for why choices are override constants).
override OP: u32 = 0u;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(id, groups);
    if (i >= p[0]) {
        return;
    }
    var rest = i;
    var ia = 0u;
    var ib = 0u;
    for (var axis = 3; axis >= 0; axis--) {
        let size = p[1u + u32(axis)];
        let at = rest % size;
        rest /= size;
        ia += at * p[5u + u32(axis)];
        ib += at * p[9u + u32(axis)];
    }
    let x = a[ia];
    let y = b[ib];
    switch OP {
        case 0u: { out[i] = x + y; }
        case 1u: { out[i] = x - y; }
        case 2u: { out[i] = x * y; }
        default: { out[i] = x / y; }
    }
}
