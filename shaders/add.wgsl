// add.wgsl — residual add, out = a + b (all [n] f32).
// 2-D grid: index = gid.x + gid.y * row_len.

struct Params {
    n: u32,
    row_len: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read> B: array<f32>;
@group(0) @binding(2) var<storage, read_write> OUT: array<f32>;
@group(0) @binding(3) var<uniform> P: Params;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * P.row_len;
    if (i < P.n) {
        OUT[i] = A[i] + B[i];
    }
}
