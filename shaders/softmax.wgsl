// softmax.wgsl — y = softmax(scale * x) row by row.
//
// x, y: [n_rows, n_cols] f32. One workgroup per row: max reduction, then sum of
// exp(x - max) reduction, then normalise.

struct Params {
    n_cols: u32,
    n_rows: u32,
    scale: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read_write> Y: array<f32>;
@group(0) @binding(2) var<uniform> P: Params;

const WG: u32 = 256u;
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let base = wid.x * P.n_cols;
    var m = -3.0e38;
    for (var i = tid; i < P.n_cols; i += WG) {
        m = max(m, P.scale * X[base + i]);
    }
    red[tid] = m;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (tid < stride) {
            red[tid] = max(red[tid], red[tid + stride]);
        }
        workgroupBarrier();
    }
    let row_max = red[0];
    workgroupBarrier();
    var s = 0.0;
    for (var i = tid; i < P.n_cols; i += WG) {
        let e = exp(P.scale * X[base + i] - row_max);
        Y[base + i] = e;
        s += e;
    }
    red[tid] = s;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (tid < stride) {
            red[tid] += red[tid + stride];
        }
        workgroupBarrier();
    }
    let inv = 1.0 / red[0];
    for (var i = tid; i < P.n_cols; i += WG) {
        Y[base + i] = Y[base + i] * inv;
    }
}
