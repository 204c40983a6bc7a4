// matmul.wgsl — prefill: Y = X W^T with W dequantised on the fly.
//
// W: one part [rows, n_cols] of a [n_rows, n_cols] weight (GGUF blocks),
// X: [n_tok, n_cols] f32, Y: [n_tok, n_rows] f32 (y_stride = n_rows).
// Workgroup (row, token block of TB): each invocation dequantises units
// tid, tid + WG, ... of the row once and dots them with TB token rows, so the
// dequantisation cost is shared by TB tokens; shared-memory reductions follow.

struct Params {
    n_cols: u32,
    n_units: u32,
    row_bytes: u32,
    rows: u32,
    row_offset: u32,
    grid_x: u32,
    n_tok: u32,
    y_stride: u32,
}

@group(0) @binding(0) var<storage, read> W: array<u32>;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
@group(0) @binding(3) var<uniform> P: Params;

const WG: u32 = 64u;
const TB: u32 = 8u;
var<private> dq: array<f32, 32>;
var<workgroup> partial: array<array<f32, WG>, TB>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let row = wid.x + wid.y * P.grid_x;
    let t0 = wid.z * TB;
    let nt = min(TB, P.n_tok - t0);
    var acc: array<f32, TB>;
    for (var j = 0u; j < TB; j++) {
        acc[j] = 0.0;
    }
    if (row < P.rows) {
        let row_base = row * P.row_bytes;
        for (var u = tid; u < P.n_units; u += WG) {
            deq_TYPE(row_base, u, P.n_cols);
            let xb = u * 32u;
            let n = min(32u, P.n_cols - xb);
            for (var j = 0u; j < nt; j++) {
                let xr = (t0 + j) * P.n_cols + xb;
                var s = 0.0;
                for (var l = 0u; l < n; l++) {
                    s += dq[l] * X[xr + l];
                }
                acc[j] += s;
            }
        }
    }
    for (var j = 0u; j < TB; j++) {
        partial[j][tid] = acc[j];
    }
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (tid < stride) {
            for (var j = 0u; j < TB; j++) {
                partial[j][tid] += partial[j][tid + stride];
            }
        }
        workgroupBarrier();
    }
    if (row < P.rows && tid < nt) {
        Y[(t0 + tid) * P.y_stride + P.row_offset + row] = partial[tid][0];
    }
}
