// rmsnorm.wgsl — y = x / sqrt(mean(x^2) + eps) * w, row by row.
//
// x: [n_rows, n_cols] f32, w: [n_cols] f32, y: [n_rows, n_cols] f32.
// One workgroup per row; shared-memory tree reduction of the sum of squares.
// Entry `inplace` normalises XY in place (each element is rewritten by the
// invocation that read it, after the reduction).

struct Params {
    n_cols: u32,
    n_rows: u32,
    eps: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read> Wt: array<f32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
@group(0) @binding(3) var<uniform> P: Params;
@group(0) @binding(4) var<storage, read_write> XY: array<f32>;

const WG: u32 = 256u;
var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let row = wid.x;
    let base = row * P.n_cols;
    var acc = 0.0;
    for (var i = tid; i < P.n_cols; i += WG) {
        let v = X[base + i];
        acc += v * v;
    }
    partial[tid] = acc;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (tid < stride) {
            partial[tid] += partial[tid + stride];
        }
        workgroupBarrier();
    }
    let scale = inverseSqrt(partial[0] / f32(P.n_cols) + P.eps);
    for (var i = tid; i < P.n_cols; i += WG) {
        Y[base + i] = X[base + i] * scale * Wt[i];
    }
}

@compute @workgroup_size(WG)
fn inplace(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let base = wid.x * P.n_cols;
    var acc = 0.0;
    for (var i = tid; i < P.n_cols; i += WG) {
        let v = XY[base + i];
        acc += v * v;
    }
    partial[tid] = acc;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (tid < stride) {
            partial[tid] += partial[tid + stride];
        }
        workgroupBarrier();
    }
    let scale = inverseSqrt(partial[0] / f32(P.n_cols) + P.eps);
    for (var i = tid; i < P.n_cols; i += WG) {
        XY[base + i] = XY[base + i] * scale * Wt[i];
    }
}
