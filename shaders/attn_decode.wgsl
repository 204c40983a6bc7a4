// attn_decode.wgsl — attention of one query token over a KV cache
// (split-K "flash-decoding": phase `chunk` then phase `combine`).
//
// q:   [n_head, head_dim] f32
// K,V: [n_ctx, n_kv_head, head_dim] as f32 or f16 (KV_IS_F16), read from
//      `array<u32>`; f16 pairs are packed two per word.
// out: [n_head, head_dim] f32
// Attended positions: [start, n_kv) with start = max(0, n_kv - window) when a
// sliding window is set, else 0. Grouped-query: head h reads kv head
// h / (n_head / n_kv_head).
// Phase `chunk`: workgroup (c, h) handles positions start + c*256 .. +256 and
// writes its unnormalised output and (max, sum) to scratch.
// Phase `combine`: workgroup h rescales and sums the chunks.

struct Params {
    head_dim: u32,
    n_head: u32,
    n_kv_head: u32,
    n_kv: u32,       // valid cache positions (query position + 1)
    start: u32,      // first attended position
    n_chunks: u32,
    kv_stride: u32,  // elements between consecutive positions (n_kv_head * head_dim)
    _pad0: u32,
    scale: f32,      // usually 1 / sqrt(head_dim)
    softcap: f32,    // 0 = off, else s = softcap * tanh(s / softcap)
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> Q: array<f32>;
@group(0) @binding(1) var<storage, read> K: array<u32>;
@group(0) @binding(2) var<storage, read> V: array<u32>;
@group(0) @binding(3) var<storage, read_write> PART_O: array<f32>;  // [n_head, n_chunks, head_dim]
@group(0) @binding(4) var<storage, read_write> PART_ML: array<f32>; // [n_head, n_chunks, 2]
@group(0) @binding(5) var<uniform> P: Params;
@group(0) @binding(6) var<storage, read_write> OUT: array<f32>;

const KV_F16: bool = KV_IS_F16;
const WG: u32 = 256u;
const MAX_HEAD_DIM: u32 = 512u;
const NEG_BIG: f32 = -3.0e38;

var<workgroup> qs: array<f32, MAX_HEAD_DIM>;
var<workgroup> probs: array<f32, WG>;
var<workgroup> red: array<f32, WG>;

fn load_kv(is_v: bool, i: u32) -> f32 {
    if (KV_F16) {
        var w: u32;
        if (is_v) { w = V[i >> 1u]; } else { w = K[i >> 1u]; }
        return unpack2x16float(w)[i & 1u];
    }
    if (is_v) {
        return bitcast<f32>(V[i]);
    }
    return bitcast<f32>(K[i]);
}

@compute @workgroup_size(WG)
fn chunk(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let c = wid.x;
    let h = wid.y;
    let kvh = h / (P.n_head / P.n_kv_head);
    for (var d = tid; d < P.head_dim; d += WG) {
        qs[d] = Q[h * P.head_dim + d];
    }
    workgroupBarrier();

    let first = P.start + c * WG;
    let pos = first + tid;
    let valid = pos < P.n_kv;
    var s = NEG_BIG;
    if (valid) {
        let kb = pos * P.kv_stride + kvh * P.head_dim;
        var acc = 0.0;
        for (var d = 0u; d < P.head_dim; d++) {
            acc += qs[d] * load_kv(false, kb + d);
        }
        s = acc * P.scale;
        if (P.softcap > 0.0) {
            s = P.softcap * tanh(clamp(s / P.softcap, -15.0, 15.0));
        }
    }
    red[tid] = s;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (tid < stride) {
            red[tid] = max(red[tid], red[tid + stride]);
        }
        workgroupBarrier();
    }
    let m = red[0];
    workgroupBarrier();
    var e = 0.0;
    if (valid) {
        e = exp(s - m);
    }
    probs[tid] = e;
    red[tid] = e;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (tid < stride) {
            red[tid] += red[tid + stride];
        }
        workgroupBarrier();
    }
    let cnt = min(WG, P.n_kv - first);
    let ob = (h * P.n_chunks + c) * P.head_dim;
    for (var d = tid; d < P.head_dim; d += WG) {
        var acc = 0.0;
        for (var j = 0u; j < cnt; j++) {
            acc += probs[j] * load_kv(true, (first + j) * P.kv_stride + kvh * P.head_dim + d);
        }
        PART_O[ob + d] = acc;
    }
    if (tid == 0u) {
        PART_ML[(h * P.n_chunks + c) * 2u] = m;
        PART_ML[(h * P.n_chunks + c) * 2u + 1u] = red[0];
    }
}

@compute @workgroup_size(WG)
fn combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let h = wid.x;
    let mb = h * P.n_chunks * 2u;
    var mx = NEG_BIG;
    for (var c = 0u; c < P.n_chunks; c++) {
        mx = max(mx, PART_ML[mb + 2u * c]);
    }
    var l = 0.0;
    for (var c = 0u; c < P.n_chunks; c++) {
        l += exp(PART_ML[mb + 2u * c] - mx) * PART_ML[mb + 2u * c + 1u];
    }
    let inv = 1.0 / l;
    for (var d = tid; d < P.head_dim; d += WG) {
        var acc = 0.0;
        for (var c = 0u; c < P.n_chunks; c++) {
            acc += exp(PART_ML[mb + 2u * c] - mx) * PART_O[(h * P.n_chunks + c) * P.head_dim + d];
        }
        OUT[h * P.head_dim + d] = acc * inv;
    }
}
