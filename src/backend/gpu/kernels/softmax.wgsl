// Softmax over the last axis, one row per invocation (attention's rows are short: one per
// token, as long as the sequence), shifted by the row maximum as the CPU backend does.
//
// Forward: y = softmax(x). Backward: grad_x += y * (g - sum(g * y)), from the forward's
// output y and its gradient g.
//
// p: rows, row length.

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// The backward pass rather than the forward (see product.wgsl for why choices are override
// constants).
override BACKWARD: bool = false;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let row = flat_index(id, groups);
    if (row >= p[0]) {
        return;
    }
    let len = p[1];
    let start = row * len;
    if (!BACKWARD) {
        var top = x[start];
        for (var j = 1u; j < len; j++) {
            top = max(top, x[start + j]);
        }
        var sum = 0.0;
        for (var j = 0u; j < len; j++) {
            let e = exp(x[start + j] - top);
            out[start + j] = e;
            sum += e;
        }
        for (var j = 0u; j < len; j++) {
            out[start + j] /= sum;
        }
    } else {
        // x holds the forward's output y here.
        var dot = 0.0;
        for (var j = 0u; j < len; j++) {
            dot += g[start + j] * x[start + j];
        }
        for (var j = 0u; j < len; j++) {
            out[start + j] += x[start + j] * (g[start + j] - dot);
        }
    }
}
