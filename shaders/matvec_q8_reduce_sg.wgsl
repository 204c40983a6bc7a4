// matvec_q8_reduce_sg.wgsl — entry point of matvec_q8.wgsl reducing each
// row's TPR partial sums with subgroup shuffles (butterfly over runs of
// g = min(TPR, subgroup size) invocations), then, when a row spans several
// subgroups, one shared slot per run. Used only when the device has SUBGROUP;
// assumes subgroups are consecutive runs of local_invocation_index (true for
// 1-D workgroups on all current drivers) and power-of-two subgroup sizes.

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
    @builtin(subgroup_size) sg_size: u32,
) {
    let t = tid % TPR;
    let row = (wid.x + wid.y * P.grid_x) * RPW + tid / TPR;
    var acc = 0.0;
    if (row < P.rows) {
        acc = row_dot_q8(row * P.row_bytes, t);
    }
    let g = min(TPR, sg_size);
    for (var o = g / 2u; o > 0u; o >>= 1u) {
        acc += subgroupShuffleXor(acc, o);
    }
    if (tid % g == 0u) {
        partial[tid / g] = acc;
    }
    workgroupBarrier();
    if (row < P.rows && t == 0u) {
        var s = 0.0;
        for (var i = 0u; i < TPR / g; i++) {
            s += partial[tid / g + i];
        }
        store_row(row, s);
    }
}
