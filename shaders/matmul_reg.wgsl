// matmul_reg.wgsl — prefill GEMM for larger batches: Y = X W^T with a
// 64 x 64 (rows x tokens) tile per workgroup and a 4 x 4 register block per
// invocation (matmul_tiled.wgsl's 64 x 16 tile with 1 x 4 blocks spent most
// of its time on shared-memory loads and barriers: 8b pp512 ~93% of GPU time).
//
// W: one part [rows, n_cols] of a [n_rows, n_cols] weight (GGUF blocks),
// X: [n_tok, n_cols] f32, Y: [n_tok, n_rows] f32 (y_stride = n_rows).
// Per 32-column step: invocations 0..63 dequantise one unit of their row into
// WS, all 256 load the 64 x 32 X tile into XS; both are stored k-major as
// vec4s of 4 rows / 4 tokens, so that invocation (rows 4*(tid % 16) ..,
// tokens 4*(tid / 16) ..) reads one vec4 of each per k for 16 FMAs.
// Shared memory: 2 * 32 * 64 * 4 = 16 KiB.

struct Params {
    n_cols: u32,
    n_units: u32,
    row_bytes: u32,
    rows: u32,
    row_offset: u32,
    n_tok: u32,
    y_stride: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> W: array<u32>;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
@group(0) @binding(3) var<uniform> P: Params;

const BM: u32 = 64u;
const BN: u32 = 64u;
var<private> dq: array<f32, 32>;
var<workgroup> WS: array<vec4<f32>, 512>; // [32 k][16 row quads]
var<workgroup> XS: array<vec4<f32>, 512>; // [32 k][16 token quads]

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let row0 = wid.x * BM;
    let tok0 = wid.y * BN;
    let tr = tid % 16u; // rows 4 tr .. 4 tr + 3 of the tile
    let tt = tid / 16u; // tokens 4 tt .. 4 tt + 3 of the tile
    var acc: array<vec4<f32>, 4>; // acc[i][j]: row 4 tr + i, token 4 tt + j
    for (var i = 0u; i < 4u; i++) {
        acc[i] = vec4<f32>(0.0);
    }
    for (var u = 0u; u < P.n_units; u++) {
        if (tid < BM) {
            let row = row0 + tid;
            if (row < P.rows) {
                deq_TYPE(row * P.row_bytes, u, P.n_cols);
            } else {
                for (var l = 0u; l < 32u; l++) {
                    dq[l] = 0.0;
                }
            }
            for (var l = 0u; l < 32u; l++) {
                WS[l * 16u + tid / 4u][tid % 4u] = dq[l];
            }
        }
        for (var i = tid; i < BN * 32u; i += 256u) {
            let t = i / 32u;
            let k = i % 32u;
            let c = u * 32u + k;
            var v = 0.0;
            if (tok0 + t < P.n_tok && c < P.n_cols) {
                v = X[(tok0 + t) * P.n_cols + c];
            }
            XS[k * 16u + t / 4u][t % 4u] = v;
        }
        workgroupBarrier();
        for (var k = 0u; k < 32u; k++) {
            let w = WS[k * 16u + tr];
            let x = XS[k * 16u + tt];
            acc[0] += w.x * x;
            acc[1] += w.y * x;
            acc[2] += w.z * x;
            acc[3] += w.w * x;
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + 4u * tr + i;
        if (row < P.rows) {
            for (var j = 0u; j < 4u; j++) {
                let t = tok0 + 4u * tt + j;
                if (t < P.n_tok) {
                    Y[t * P.y_stride + P.row_offset + row] = acc[i][j];
                }
            }
        }
    }
}
