// matmul_tiled.wgsl — prefill GEMM: Y = X W^T, W dequantised into shared memory.
//
// W: one part [rows, n_cols] of a [n_rows, n_cols] weight (GGUF blocks),
// X: [n_tok, n_cols] f32, Y: [n_tok, n_rows] f32 (y_stride = n_rows).
// Workgroup (row tile of BM = 64, token tile of BN = 16), 256 invocations.
// Per 32-column step: invocations 0..63 dequantise one unit of their row into
// WS (64 x 32, padded to 33 against bank conflicts), all load the 16 x 32 X
// tile into XS, then each invocation accumulates a 1 x 4 (row x tokens) block.
// Shared memory: (64*33 + 16*32) * 4 = 10.5 KiB.

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
const BN: u32 = 16u;
const WS_STRIDE: u32 = 33u;
var<private> dq: array<f32, 32>;
var<workgroup> WS: array<f32, 2112>; // BM * WS_STRIDE
var<workgroup> XS: array<f32, 512>;  // BN * 32

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let row0 = wid.x * BM;
    let tok0 = wid.y * BN;
    let r = tid % BM;        // row within the tile this invocation accumulates
    let tg = (tid / BM) * 4u; // first of its 4 tokens within the tile
    var acc = vec4<f32>(0.0);
    for (var u = 0u; u < P.n_units; u++) {
        if (tid < BM) {
            let row = row0 + tid;
            if (row < P.rows) {
                deq_TYPE(row * P.row_bytes, u, P.n_cols);
                for (var l = 0u; l < 32u; l++) {
                    WS[tid * WS_STRIDE + l] = dq[l];
                }
            } else {
                for (var l = 0u; l < 32u; l++) {
                    WS[tid * WS_STRIDE + l] = 0.0;
                }
            }
        }
        for (var i = tid; i < BN * 32u; i += 256u) {
            let t = tok0 + i / 32u;
            let c = u * 32u + i % 32u;
            var v = 0.0;
            if (t < P.n_tok && c < P.n_cols) {
                v = X[t * P.n_cols + c];
            }
            XS[i] = v;
        }
        workgroupBarrier();
        for (var k = 0u; k < 32u; k++) {
            let w = WS[r * WS_STRIDE + k];
            acc += w * vec4<f32>(XS[tg * 32u + k], XS[(tg + 1u) * 32u + k],
                                 XS[(tg + 2u) * 32u + k], XS[(tg + 3u) * 32u + k]);
        }
        workgroupBarrier();
    }
    let row = row0 + r;
    if (row < P.rows) {
        for (var j = 0u; j < 4u; j++) {
            let t = tok0 + tg + j;
            if (t < P.n_tok) {
                Y[t * P.y_stride + P.row_offset + row] = acc[j];
            }
        }
    }
}
