// The backward pass of layer_norm.wgsl, as backend/cpu/norm.rs's: one invocation per row adds
// the input's gradient dx = inv_std (ĝ - mean(ĝ) - x̂ mean(ĝ x̂)), ĝ = g gamma; or, with
// PARAMETERS, one invocation per feature adds the parameters' (sum g x̂ and sum g over the
// rows), those of DGAMMA and DBETA.
//
// p: rows, d.

@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> gamma: array<f32>;
@group(0) @binding(4) var<storage, read> stats: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
@group(0) @binding(6) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(7) var<storage, read_write> dbeta: array<f32>;

// Which gradients (see product.wgsl for why choices are override constants).
override PARAMETERS: bool = false;
override DGAMMA: bool = false;
override DBETA: bool = false;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(id, groups);
    let rows = p[0];
    let d = p[1];
    if (!PARAMETERS) {
        if (i >= rows) {
            return;
        }
        let start = i * d;
        let mean = stats[2u * i];
        let inv_std = stats[2u * i + 1u];
        var sum = 0.0;
        var dot = 0.0;
        for (var k = 0u; k < d; k++) {
            let gh = g[start + k] * gamma[k];
            sum += gh;
            dot += gh * (x[start + k] - mean) * inv_std;
        }
        sum /= f32(d);
        dot /= f32(d);
        for (var k = 0u; k < d; k++) {
            let xh = (x[start + k] - mean) * inv_std;
            dx[start + k] += inv_std * (g[start + k] * gamma[k] - sum - xh * dot);
        }
        return;
    }
    if (i >= d) {
        return;
    }
    var dg = 0.0;
    var db = 0.0;
    for (var r = 0u; r < rows; r++) {
        let v = g[r * d + i];
        dg += v * (x[r * d + i] - stats[2u * r]) * stats[2u * r + 1u];
        db += v;
    }
    if (DGAMMA) {
        dgamma[i] += dg;
    }
    if (DBETA) {
        dbeta[i] += db;
    }
}
