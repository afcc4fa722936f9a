// dst[view] = src[view] (or +=) between two strided views of up to four axes: slices,
// concatenation, axis permutations and their gradients are all this one copy.
//
// p: element count, shape [4], src offset, src strides [4], dst offset, dst strides [4].

@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

// Whether dst += src rather than dst = src.
override ACCUMULATE: bool = false;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(id, groups);
    if (i >= p[0]) {
        return;
    }
    var rest = i;
    var read_at = p[5];
    var write_at = p[10];
    for (var axis = 3; axis >= 0; axis--) {
        let size = p[1u + u32(axis)];
        let at = rest % size;
        rest /= size;
        read_at += at * p[6u + u32(axis)];
        write_at += at * p[11u + u32(axis)];
    }
    if (ACCUMULATE) {
        dst[write_at] += src[read_at];
    } else {
        dst[write_at] = src[read_at];
    }
}
