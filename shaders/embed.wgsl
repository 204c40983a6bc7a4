// embed.wgsl — embedding row lookup from a quantised table.
//
// W: one part of the table [n_rows, n_cols] (rows row_offset .. row_offset + rows),
// ids: [n_tokens] u32, out: [n_tokens, n_cols] f32. The host dispatches once per
// part; a part writes only the tokens whose id falls inside it, so token ids may
// live on the GPU (e.g. straight from argmax) without a read-back. Out-of-range
// ids (>= total rows) are written as zeros by the first part.
// Grid: x = units of 32 elements (one invocation each), y = token.

struct Params {
    n_cols: u32,
    n_units: u32,
    row_bytes: u32,
    rows: u32,
    row_offset: u32,
    total_rows: u32,
    n_tokens: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> W: array<u32>;
@group(0) @binding(1) var<storage, read> IDS: array<u32>;
@group(0) @binding(2) var<storage, read_write> OUT: array<f32>;
@group(0) @binding(3) var<uniform> P: Params;

var<private> dq: array<f32, 32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let u = gid.x;
    let t = gid.y;
    if (u >= P.n_units || t >= P.n_tokens) {
        return;
    }
    let id = IDS[t];
    let ob = t * P.n_cols + u * 32u;
    let n = min(32u, P.n_cols - u * 32u);
    if (id >= P.total_rows) {
        if (P.row_offset == 0u) {
            for (var l = 0u; l < n; l++) {
                OUT[ob + l] = 0.0;
            }
        }
        return;
    }
    if (id < P.row_offset || id >= P.row_offset + P.rows) {
        return;
    }
    deq_TYPE((id - P.row_offset) * P.row_bytes, u, P.n_cols);
    for (var l = 0u; l < n; l++) {
        OUT[ob + l] = dq[l];
    }
}
