// matvec_q8_multi.wgsl — entry point of matvec_q8.wgsl (instead of a reduce
// file) for two or three matrices of one type and row length that share one
// buffer (a weight group: Q/K/V, or gate/up) and one quantised x: one
// dispatch instead of one per matrix. Global row g < rows0 is row g of
// matrix 0 (at byte off0 of W, output Y), then rows1 rows of matrix 1 (off1,
// Y1), then the rest of matrix 2 (off2, Y2; a two-matrix group binds a
// dummy Y2 and has no such rows). Subgroup reduction as
// matvec_q8_reduce_sg.wgsl (devices with SUBGROUP only).

@group(0) @binding(4) var<storage, read_write> Y1: array<f32>;
@group(0) @binding(5) var<storage, read_write> Y2: array<f32>;

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
    @builtin(subgroup_size) sg_size: u32,
) {
    let t = tid % TPR;
    let g = (wid.x + wid.y * P.grid_x) * RPW + tid / TPR;
    // Matrix m, its row r, and that row's byte in W.
    var m = 0u;
    var r = g;
    var base = P.off0;
    if (g >= P.rows0 + P.rows1) {
        m = 2u;
        r = g - P.rows0 - P.rows1;
        base = P.off2;
    } else if (g >= P.rows0) {
        m = 1u;
        r = g - P.rows0;
        base = P.off1;
    }
    var acc = 0.0;
    if (g < P.rows) {
        acc = row_dot_q8(base + r * P.row_bytes, t);
    }
    let gs = min(TPR, sg_size);
    for (var o = gs / 2u; o > 0u; o >>= 1u) {
        acc += subgroupShuffleXor(acc, o);
    }
    if (tid % gs == 0u) {
        partial[tid / gs] = acc;
    }
    workgroupBarrier();
    if (g < P.rows && t == 0u) {
        var s = 0.0;
        for (var i = 0u; i < TPR / gs; i++) {
            s += partial[tid / gs + i];
        }
        if (m == 0u) {
            Y[r] = s;
        } else if (m == 1u) {
            Y1[r] = s;
        } else {
            Y2[r] = s;
        }
    }
}
