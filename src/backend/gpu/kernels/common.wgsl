// Prepended to every kernel's source (WGSL has no includes): the kernel's sizes, `u32` words
// at binding 0 (floats as their bits), and the index of an invocation of a one-dimensional
// kernel, whose dispatch spreads its workgroups of 64 over x and y (a dimension holds at most
// 65,535 of them).

@group(0) @binding(0) var<storage, read> p: array<u32>;

fn flat_index(id: vec3<u32>, groups: vec3<u32>) -> u32 {
    return id.x + id.y * groups.x * 64u;
}

