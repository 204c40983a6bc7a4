// matmul_q8.wgsl — entry point appended to matvec_q8.wgsl (instead of a
// reduce file): the integer matrix product of several tokens,
// Y[t, row_offset + r] (+)= W[r] · x_t, with X quantised per token row by
// act_quant.wgsl `pack_q8` (rows x_stride vec4 words apart in XQ).
// A workgroup takes RPW rows x NT tokens; the TPR invocations of a row take
// its units t, t + TPR, ... (TPR ≥ NT, the host checks) for all NT tokens,
// so each weight unit is fetched from memory once per NT tokens (its other
// reads hit the cache). Partial sums go through shared memory; invocation
// t < NT of a row adds up token t's.

const NT: u32 = 8u;

var<workgroup> partial: array<f32, WG * NT>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let t = tid % TPR;
    let row = (wid.x + wid.y * P.grid_x) * RPW + tid / TPR;
    let tok0 = wid.z * NT;
    let nt = min(NT, P.n_tok - tok0);
    var acc: array<f32, NT>;
    if (row < P.rows) {
        let rb = row * P.row_bytes;
        for (var u = t; u < P.n_units; u += TPR) {
            for (var j = 0u; j < NT; j++) {
                if (j < nt) {
                    acc[j] += QDOT(rb, u, (tok0 + j) * P.x_stride);
                }
            }
        }
    }
    for (var j = 0u; j < NT; j++) {
        partial[tid * NT + j] = acc[j];
    }
    workgroupBarrier();
    if (row < P.rows && t < nt) {
        let first = tid - t;
        var s = 0.0;
        for (var i = 0u; i < TPR; i++) {
            s += partial[(first + i) * NT + t];
        }
        let yi = (tok0 + t) * P.y_stride + P.row_offset + row;
        if (P.accumulate != 0u) {
            Y[yi] = Y[yi] + s;
        } else {
            Y[yi] = s;
        }
    }
}
