// matvec_reduce_sg.wgsl — entry point of matvec.wgsl reducing with
// subgroupAdd, then one shared slot per subgroup. Used only when the device
// has the SUBGROUP feature. Assumes subgroups are consecutive runs of
// local_invocation_index (true for 1-D workgroups on all current drivers).

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) sg_size: u32,
) {
    let row = wid.x + wid.y * P.grid_x;
    var acc = 0.0;
    if (row < P.rows) {
        acc = row_dot(row, tid);
    }
    let s = subgroupAdd(acc);
    if (lane == 0u) {
        partial[tid / sg_size] = s;
    }
    workgroupBarrier();
    if (tid == 0u) {
        var t = 0.0;
        let n_sub = (WG + sg_size - 1u) / sg_size;
        for (var i = 0u; i < n_sub; i++) {
            t += partial[i];
        }
        if (row < P.rows) {
            store_row(row, t);
        }
    }
}
