// matvec_q8_reduce_wg.wgsl — entry point of matvec_q8.wgsl: each row's TPR
// partial sums reduced by a shared-memory tree (works everywhere).

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let t = tid % TPR;
    let row = (wid.x + wid.y * P.grid_x) * RPW + tid / TPR;
    var acc = 0.0;
    if (row < P.rows) {
        acc = row_dot_q8(row * P.row_bytes, t);
    }
    partial[tid] = acc;
    workgroupBarrier();
    for (var stride = TPR / 2u; stride > 0u; stride >>= 1u) {
        if (t < stride) {
            partial[tid] += partial[tid + stride];
        }
        workgroupBarrier();
    }
    if (row < P.rows && t == 0u) {
        store_row(row, partial[tid]);
    }
}
