// matvec.wgsl — fused dequantise + matrix-vector product, y = W x.
//
// W: [n_rows, n_cols] in its GGUF block format (one part of a possibly split
// tensor: rows row_offset .. row_offset + rows), x: [n_cols] f32, y: [n_rows] f32.
// One workgroup per row; each invocation dequantises 32-element units
// `tid, tid + WG, ...` of the row and dots them with x (`row_dot`). The entry
// point comes from matvec_reduce_wg.wgsl (shared-memory tree reduction) or
// matvec_reduce_sg.wgsl (subgroupAdd, only when the device has SUBGROUP).
// `deq_TYPE` is substituted by the host.

struct Params {
    n_cols: u32,     // elements per row
    n_units: u32,    // ceil(n_cols / 32)
    row_bytes: u32,  // bytes per row in W
    rows: u32,       // rows in this part
    row_offset: u32, // index of this part's first row in y
    grid_x: u32,     // workgroups along x in the dispatch (2-D grid for > 65535 rows)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> W: array<u32>;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
@group(0) @binding(3) var<uniform> P: Params;

const WG: u32 = 64u;
var<private> dq: array<f32, 32>;

// Partial dot product of row `row` (of this part) with x, over units tid, tid+WG, ...
fn row_dot(row: u32, tid: u32) -> f32 {
    let row_base = row * P.row_bytes;
    var acc = 0.0;
    for (var u = tid; u < P.n_units; u += WG) {
        deq_TYPE(row_base, u, P.n_cols);
        let xb = u * 32u;
        var s = 0.0;
        if (xb + 32u <= P.n_cols) {
            for (var l = 0u; l < 32u; l += 4u) {
                let xv = vec4<f32>(X[xb + l], X[xb + l + 1u], X[xb + l + 2u], X[xb + l + 3u]);
                s += dot(vec4<f32>(dq[l], dq[l + 1u], dq[l + 2u], dq[l + 3u]), xv);
            }
        } else {
            for (var l = 0u; xb + l < P.n_cols; l++) {
                s += dq[l] * X[xb + l];
            }
        }
        acc += s;
    }
    return acc;
}
