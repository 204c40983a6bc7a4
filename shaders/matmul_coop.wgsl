// matmul_coop.wgsl — prefill GEMM on cooperative matrices (tensor cores):
// Y = X W^T with 16x16x16 f16 x f16 -> f32 multiply-adds (wgpu's experimental
// `wgpu_cooperative_matrix`; used only where the adapter reports that shape,
// with subgroups of 32, see GpuContext::use_coop; Vulkan/SPIR-V only).
//
// W: one part [rows, n_cols] of a [n_rows, n_cols] weight (GGUF blocks),
// X: [n_tok, n_cols] f32, Y: [n_tok, n_rows] f32 (y_stride = n_rows).
// Workgroup: 128 rows x 64 tokens, 256 invocations = 8 subgroups; subgroup s
// owns the 32 x 32 quadrant (tokens 32 (s / 4) .., rows 32 (s % 4) ..) as 2 x 2
// accumulator tiles. Per 32-column step: invocations 0..127 dequantise one
// unit of their row into WS [128 rows][32] f16, all load XS [64 tokens][32]
// f16; then two 16-deep multiply-adds per tile. A = X tile (tokens x k,
// row-major), B = W tile^T (k x rows: WS read column-major), C = Y tile
// (tokens x rows). Each accumulator goes through the subgroup's 16 x 16 slot
// of CS to Y, with bounds checks.
// Measured on the H100 (llama-8b Q4_0 pp512): this 128 x 64 tile 2280 t/s;
// a 64 x 64 tile with 4 subgroups 1414; that with 64-column steps 911; the
// plain matmul_reg.wgsl 996.
// Precision: X and the dequantised W rounded to f16, products summed in f32.
// Shared memory: 128 * 32 * 2 + 64 * 32 * 2 + 8 * 256 * 4 = 20 KiB.

enable f16;
enable wgpu_cooperative_matrix;

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

const BM: u32 = 128u;
const BN: u32 = 64u;
var<private> dq: array<f32, 32>;
var<workgroup> WS: array<f16, 4096>; // [128 rows][32 k]
var<workgroup> XS: array<f16, 2048>; // [64 tokens][32 k]
var<workgroup> CS: array<f32, 2048>; // [8 subgroups][16 tokens][16 rows]

// Writes accumulator tile `c` (tokens t0.., rows r0.. of the workgroup's
// tile) to Y through subgroup s's CS slot; lane = tid % 32.
fn put_tile(c: coop_mat16x16<f32, C>, s: u32, lane: u32, t0: u32, r0: u32, tok0: u32, row0: u32) {
    coopStoreT(c, &CS[s * 256u], 16u);
    workgroupBarrier();
    for (var i = lane; i < 256u; i += 32u) {
        let t = tok0 + t0 + i / 16u;
        let row = row0 + r0 + i % 16u;
        if (t < P.n_tok && row < P.rows) {
            Y[t * P.y_stride + P.row_offset + row] = CS[s * 256u + i];
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let row0 = wid.x * BM;
    let tok0 = wid.y * BN;
    let s = tid / 32u;
    let lane = tid % 32u;
    let tq = 32u * (s / 4u); // first token of this subgroup's quadrant
    let rq = 32u * (s % 4u); // first row
    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
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
                WS[tid * 32u + l] = f16(dq[l]);
            }
        }
        for (var i = tid; i < BN * 32u; i += 256u) {
            let t = tok0 + i / 32u;
            let c = u * 32u + i % 32u;
            var v = 0.0;
            if (t < P.n_tok && c < P.n_cols) {
                v = X[t * P.n_cols + c];
            }
            XS[i] = f16(v);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < 32u; kk += 16u) {
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&XS[tq * 32u + kk], 32u);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&XS[(tq + 16u) * 32u + kk], 32u);
            let b0 = coopLoad<coop_mat16x16<f16, B>>(&WS[rq * 32u + kk], 32u);
            let b1 = coopLoad<coop_mat16x16<f16, B>>(&WS[(rq + 16u) * 32u + kk], 32u);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
        }
        workgroupBarrier();
    }
    put_tile(c00, s, lane, tq, rq, tok0, row0);
    put_tile(c01, s, lane, tq, rq + 16u, tok0, row0);
    put_tile(c10, s, lane, tq + 16u, rq, tok0, row0);
    put_tile(c11, s, lane, tq + 16u, rq + 16u, tok0, row0);
}
