// attn_decode.wgsl — attention of n_q consecutive query tokens (1 when
// decoding, a causal block when prefilling) over a KV cache
// (split-K "flash-decoding": phase `chunk` then phase `combine`).
//
// q:   [n_q, n_head, head_dim] f32; query i sits at position n_kv - n_q + i
//      and sees positions < n_kv_i = n_kv - n_q + i + 1 (causal)
// K,V: [n_ctx, n_kv_head, head_dim] (V: head_dim_v) as f32 or f16 (KV_IS_F16), read from
//      `array<u32>`; f16 pairs are packed two per word.
// out: [n_q, n_head, head_dim_v] f32
// Attended positions of query i: [start_i, n_kv_i) with
// start_i = max(0, n_kv_i - window) when a sliding window is set, else 0.
// Grouped-query: head h reads kv head h / (n_head / n_kv_head).
// Phase `chunk`: workgroup (c, h, i) handles positions start_i + c*256 .. +256
// and writes its unnormalised output and (max, sum) to scratch (an empty
// chunk writes max = -3e38, sum = 0).
// Phase `combine`: workgroup (h, i) rescales and sums the chunks. With one
// chunk, `chunk` writes the normalised output itself and `combine` is not
// dispatched.
// With an f16 cache the arithmetic is the CPU backend's (llama.cpp's CPU
// attention): the query is rounded to f16 before Q·K, and with one chunk the
// probabilities are normalised and rounded to f16 before they weight V
// (several chunks keep f32 partial sums: their normaliser is only known in
// `combine`). f16.wgsl and q8.wgsl are prepended (round_f16; put_q8).
// Entries `chunk_pack` (one chunk) and `combine_pack` (one query): as
// `chunk` / `combine`, then each head's output also quantised to 8 bits
// into XQ (binding 9) in q8.wgsl's mode `q8_mode` (Q8_0 or Q8_1: blocks of
// 32 within a head, head_dim_v a multiple of 32), for the output
// projection's integer matvec: one dispatch fewer per layer.

struct Params {
    head_dim: u32,
    n_head: u32,
    n_kv_head: u32,
    n_kv: u32,       // valid cache positions (last query position + 1)
    window: u32,     // sliding window, 0 = none
    n_chunks: u32,
    kv_stride: u32,  // elements between consecutive positions (n_kv_head * head_dim)
    n_q: u32,        // query tokens
    scale: f32,      // usually 1 / sqrt(head_dim)
    softcap: f32,    // 0 = off, else s = softcap * tanh(s / softcap)
    head_dim_v: u32, // value head size (may differ from head_dim)
    v_stride: u32,   // n_kv_head * head_dim_v
    q8_mode: u32,    // *_pack: q8.wgsl's rounding mode (0 or 1)
}

@group(0) @binding(0) var<storage, read> Q: array<f32>;
@group(0) @binding(1) var<storage, read> K: array<u32>;
@group(0) @binding(2) var<storage, read> V: array<u32>;
@group(0) @binding(3) var<storage, read_write> PART_O: array<f32>;  // [n_q, n_head, n_chunks, head_dim_v]
@group(0) @binding(4) var<storage, read_write> PART_ML: array<f32>; // [n_q, n_head, n_chunks, 2]
@group(0) @binding(5) var<uniform> P: Params;
@group(0) @binding(6) var<storage, read_write> OUT: array<f32>;

const KV_F16: bool = KV_IS_F16;
const WG: u32 = 256u;
const MAX_HEAD_DIM: u32 = 512u;
const NEG_BIG: f32 = -3.0e38;

var<workgroup> qs: array<f32, MAX_HEAD_DIM>;
var<workgroup> probs: array<f32, WG>;
var<workgroup> red: array<f32, WG>;
var<workgroup> vsum: array<vec2<f32>, WG>;
// The head's final output (single chunk / combine), for the *_pack entries.
var<workgroup> obuf: array<f32, MAX_HEAD_DIM>;

// The two f16 values of a word (low half first), exactly.
fn half2(w: u32) -> vec2<f32> {
    return vec2<f32>(f16_to_f32(w), f16_to_f32(w >> 16u));
}

// IEEE half (low 16 bits of h) to f32, exactly, with integer ops only
// (unpack2x16float needs a capability some targets lack).
fn f16_to_f32(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if (e == 0u) {
        let v = f32(m) * 5.9604644775390625e-8; // m * 2^-24 (zero or subnormal)
        return select(v, -v, sign != 0u);
    }
    if (e == 31u) {
        return bitcast<f32>(sign | 0x7f800000u | (m << 13u));
    }
    return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}

fn load_kv(is_v: bool, i: u32) -> f32 {
    if (KV_F16) {
        var w: u32;
        if (is_v) { w = V[i >> 1u]; } else { w = K[i >> 1u]; }
        return f16_to_f32(w >> ((i & 1u) * 16u));
    }
    if (is_v) {
        return bitcast<f32>(V[i]);
    }
    return bitcast<f32>(K[i]);
}

// Output element d of chunk slot `ob`: the final, normalised output when the
// whole range is one chunk (no `combine` dispatch then), else the partial.
fn put_o(qh: u32, ob: u32, d: u32, v: f32) {
    if (P.n_chunks == 1u) {
        let o = select(v / red[0], v, KV_F16);
        OUT[qh * P.head_dim_v + d] = o;
        obuf[d] = o;
    } else {
        PART_O[ob + d] = v;
    }
}

// Head qh's output (obuf) as 8-bit blocks qh * head_dim_v / 32 + b of the
// query's row in XQ (every invocation calls it, after a barrier).
fn pack_head(qh: u32, tid: u32) {
    let nbh = P.head_dim_v / 32u;
    if (tid < nbh) {
        var y: array<vec4<f32>, 8>;
        for (var k = 0u; k < 8u; k++) {
            let e = 32u * tid + 4u * k;
            y[k] = vec4<f32>(obuf[e], obuf[e + 1u], obuf[e + 2u], obuf[e + 3u]);
        }
        put_q8(0u, qh * nbh + tid, P.n_head * nbh, q8_block(y, P.q8_mode, 0.0));
    }
}

@compute @workgroup_size(WG)
fn chunk(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    chunk_body(wid, tid);
}

@compute @workgroup_size(WG)
fn chunk_pack(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    chunk_body(wid, tid);
    workgroupBarrier();
    pack_head(wid.y, tid);
}

fn chunk_body(wid: vec3<u32>, tid: u32) {
    let c = wid.x;
    let h = wid.y;
    let qi = wid.z;
    let kvh = h / (P.n_head / P.n_kv_head);
    let qh = qi * P.n_head + h; // (query, head) index
    for (var d = tid; d < P.head_dim; d += WG) {
        let q = Q[qh * P.head_dim + d];
        qs[d] = select(q, round_f16(q), KV_F16);
    }
    workgroupBarrier();

    let n_kv = P.n_kv - P.n_q + qi + 1u;
    let start = select(0u, n_kv - min(n_kv, P.window), P.window > 0u);
    let first = start + c * WG;
    let pos = first + tid;
    let valid = pos < n_kv;
    var s = NEG_BIG;
    if (valid) {
        let kb = pos * P.kv_stride + kvh * P.head_dim;
        var acc = 0.0;
        if (KV_F16 && (kb & 7u) == 0u && (P.head_dim & 7u) == 0u) {
            // Eight f16 values (four words) per step, loads issued together.
            let wb = kb >> 1u;
            var a4 = vec4<f32>(0.0);
            for (var d = 0u; d < P.head_dim; d += 8u) {
                let w0 = K[wb + (d >> 1u)];
                let w1 = K[wb + (d >> 1u) + 1u];
                let w2 = K[wb + (d >> 1u) + 2u];
                let w3 = K[wb + (d >> 1u) + 3u];
                a4 += vec4<f32>(qs[d], qs[d + 2u], qs[d + 4u], qs[d + 6u]) * vec4<f32>(
                    f16_to_f32(w0), f16_to_f32(w1), f16_to_f32(w2), f16_to_f32(w3));
                a4 += vec4<f32>(qs[d + 1u], qs[d + 3u], qs[d + 5u], qs[d + 7u]) * vec4<f32>(
                    f16_to_f32(w0 >> 16u), f16_to_f32(w1 >> 16u), f16_to_f32(w2 >> 16u), f16_to_f32(w3 >> 16u));
            }
            acc = a4.x + a4.y + a4.z + a4.w;
        } else {
            for (var d = 0u; d < P.head_dim; d++) {
                acc += qs[d] * load_kv(false, kb + d);
            }
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
    if (KV_F16 && P.n_chunks == 1u) {
        // Normalised f16 probabilities (red[0], the sum, is read by all).
        probs[tid] = round_f16(e * (1.0 / red[0]));
        workgroupBarrier();
    }
    let cnt = select(0u, min(WG, n_kv - first), first < n_kv);
    let slot = qh * P.n_chunks + c;
    let ob = slot * P.head_dim_v;
    let vb = first * P.v_stride + kvh * P.head_dim_v;
    let nw = P.head_dim_v / 2u;
    if (KV_F16 && (P.head_dim_v & 1u) == 0u && nw <= WG && (P.v_stride & 1u) == 0u && (vb & 1u) == 0u) {
        // f16 V, two values (one word) per invocation: the WG / nw groups
        // take positions g, g + G, ... four at a time, then sum in `vsum`.
        let n_groups = WG / nw;
        let w = tid % nw;
        let g = tid / nw;
        var a = vec2<f32>(0.0);
        if (g < n_groups) {
            let base = (vb >> 1u) + w;
            let st = P.v_stride >> 1u;
            var j = g;
            for (; j + 3u * n_groups < cnt; j += 4u * n_groups) {
                let v0 = V[base + j * st];
                let v1 = V[base + (j + n_groups) * st];
                let v2 = V[base + (j + 2u * n_groups) * st];
                let v3 = V[base + (j + 3u * n_groups) * st];
                a += probs[j] * half2(v0) + probs[j + n_groups] * half2(v1)
                    + probs[j + 2u * n_groups] * half2(v2) + probs[j + 3u * n_groups] * half2(v3);
            }
            for (; j < cnt; j += n_groups) {
                a += probs[j] * half2(V[base + j * st]);
            }
        }
        vsum[tid] = a;
        workgroupBarrier();
        if (tid < nw) {
            var t = vec2<f32>(0.0);
            for (var k = 0u; k < n_groups; k++) {
                t += vsum[k * nw + tid];
            }
            put_o(qh, ob, 2u * tid, t.x);
            put_o(qh, ob, 2u * tid + 1u, t.y);
        }
    } else {
        for (var d = tid; d < P.head_dim_v; d += WG) {
            var acc = 0.0;
            for (var j = 0u; j < cnt; j++) {
                acc += probs[j] * load_kv(true, vb + j * P.v_stride + d);
            }
            put_o(qh, ob, d, acc);
        }
    }
    if (tid == 0u && P.n_chunks > 1u) {
        PART_ML[slot * 2u] = m;
        PART_ML[slot * 2u + 1u] = red[0];
    }
}

@compute @workgroup_size(WG)
fn combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    combine_body(wid, tid);
}

@compute @workgroup_size(WG)
fn combine_pack(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    combine_body(wid, tid);
    workgroupBarrier();
    pack_head(wid.x, tid);
}

fn combine_body(wid: vec3<u32>, tid: u32) {
    let qh = wid.y * P.n_head + wid.x; // (query, head) index
    let mb = qh * P.n_chunks * 2u;
    var mx = NEG_BIG;
    for (var c = 0u; c < P.n_chunks; c++) {
        mx = max(mx, PART_ML[mb + 2u * c]);
    }
    var l = 0.0;
    for (var c = 0u; c < P.n_chunks; c++) {
        l += exp(PART_ML[mb + 2u * c] - mx) * PART_ML[mb + 2u * c + 1u];
    }
    let inv = 1.0 / l;
    for (var d = tid; d < P.head_dim_v; d += WG) {
        var acc = 0.0;
        for (var c = 0u; c < P.n_chunks; c++) {
            acc += exp(PART_ML[mb + 2u * c] - mx) * PART_O[(qh * P.n_chunks + c) * P.head_dim_v + d];
        }
        OUT[qh * P.head_dim_v + d] = acc * inv;
        obuf[d] = acc * inv;
    }
}
