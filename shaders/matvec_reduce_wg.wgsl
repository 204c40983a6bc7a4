// matvec_reduce_wg.wgsl — entry point of matvec.wgsl with a plain
// shared-memory tree reduction (works everywhere).

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let row = wid.x + wid.y * P.grid_x;
    var acc = 0.0;
    if (row < P.rows) {
        acc = row_dot(row, tid);
    }
    partial[tid] = acc;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (tid < stride) {
            partial[tid] += partial[tid + stride];
        }
        workgroupBarrier();
    }
    if (row < P.rows && tid == 0u) {
        store_row(row, partial[0]);
    }
}
