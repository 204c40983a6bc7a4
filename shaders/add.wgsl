// add.wgsl — elementwise ops on [n] f32.
// Out of place:  main: out = a + b   mul: out = a * b   scale: out = a * s
// In place:      add_assign: out += b   add_rows: out[i] += b[i % m] (bias rows)
//                scale_assign: out *= s
//                softcap_assign: out = s * tanh(out / s) (logit soft-capping)
// 2-D grid: index = gid.x + gid.y * row_len.

struct Params {
    n: u32,
    row_len: u32,
    s: f32,
    m: u32,
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

@compute @workgroup_size(256)
fn mul(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * P.row_len;
    if (i < P.n) {
        OUT[i] = A[i] * B[i];
    }
}

@compute @workgroup_size(256)
fn scale(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * P.row_len;
    if (i < P.n) {
        OUT[i] = A[i] * P.s;
    }
}

@compute @workgroup_size(256)
fn add_assign(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * P.row_len;
    if (i < P.n) {
        OUT[i] = OUT[i] + B[i];
    }
}

@compute @workgroup_size(256)
fn add_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * P.row_len;
    if (i < P.n) {
        OUT[i] = OUT[i] + B[i % P.m];
    }
}

@compute @workgroup_size(256)
fn scale_assign(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * P.row_len;
    if (i < P.n) {
        OUT[i] = OUT[i] * P.s;
    }
}

@compute @workgroup_size(256)
fn softcap_assign(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * P.row_len;
    if (i < P.n) {
        OUT[i] = P.s * tanh(clamp(OUT[i] / P.s, -15.0, 15.0));
    }
}
