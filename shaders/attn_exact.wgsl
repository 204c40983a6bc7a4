// attn_exact.wgsl — causal grouped-query attention over the f16 KV cache in
// exactly the CPU backend's arithmetic (llama.cpp's CPU attention without
// flash attention; zeta_tensor cpu/attention.rs), so the output has the
// CPU's bits. Prepended: f16.wgsl, exact.wgsl, q8.wgsl.
//
// q:   [n_q, n_head, head_dim] f32, query i at position n_kv - n_q + i, sees
//      keys [start_i, pos_i] (start_i = pos_i + 1 - window with a window)
// K,V: [n_ctx, n_kv_head, head_dim(_v)] f16 pairs in u32 words
// S:   scratch [queries of this dispatch, n_head, s_stride] f32: the scores,
//      then the probabilities (stored at their key index)
// out: [n_q, n_head, head_dim_v] f32
// Arithmetic (per query and head):
// - KQ: q rounded to f16; each score an f16·f16 dot product (products are
//   exact in f32) in ggml's lane order: `kq_batch` = tinyBLAS's 16 lanes
//   (element k in lane k % 16) and `_mm512_reduce_add_ps`, else
//   `ggml_vec_dot_f16`'s 4 × 16 lanes over 64-element steps, then the tail
//   in f64 (float-float here); then × scale.
// - softmax: e = ggml_expf(s - max); per aligned group of 16 keys the
//   `_mm512_reduce_add_ps` sum, the groups summed in f64 (float-float);
//   p = f16(e · f32(1 / sum)).
// - KQV: per output element, key j in lane j % L (L = 16 for a batch of
//   queries, 64 for one), each lane an FMA chain in key order (p·v exact in
//   f32), the lanes reduced as ggml's 16- or 4×16-lane reductions.
// Entry `scores` (workgroup (h, i)) writes S's probabilities; for one query
// `scores_dec` (workgroup (h, chunk of 16 keys)) writes the scores and
// `softmax` turns them into probabilities; for batches
// with head_dim <= 256 in 16-element steps `scores_rows` (workgroup (h,
// block of 16 or 8 queries)) writes the scores and `softmax` (workgroup (h, i))
// turns them into probabilities. Entry `kqv` (one query, workgroup (d, h))
// or `kqv_block` (batches, workgroup (h, block of 16 queries, 64 outputs))
// reads S and writes out; `softmax_kqv` (one query, head_dim_v a multiple
// of 32) does the softmax itself from `scores_dec`'s scores, and packs out
// to 8 bits into XQ (q8.wgsl, prepended) when asked.

struct Params {
    head_dim: u32,
    n_head: u32,
    n_kv_head: u32,
    n_kv: u32,      // last query position + 1
    window: u32,    // 0 = none
    kv_stride: u32, // n_kv_head * head_dim
    n_q: u32,       // queries of the whole call
    q0: u32,        // first query of this dispatch
    scale: f32,
    head_dim_v: u32,
    v_stride: u32,  // n_kv_head * head_dim_v
    kq_batch: u32,
    s_stride: u32,  // floats per (query, head) row of S
    n_disp: u32,    // queries of this dispatch
    mode: u32,      // softmax_kqv: q8.wgsl's rounding mode (Q8_0 or Q8_1); 3: no pack
}

@group(0) @binding(0) var<storage, read> Q: array<f32>;
@group(0) @binding(1) var<storage, read> K: array<u32>;
@group(0) @binding(2) var<storage, read> V: array<u32>;
@group(0) @binding(3) var<storage, read_write> S: array<f32>;
@group(0) @binding(4) var<uniform> P: Params;
@group(0) @binding(5) var<storage, read_write> OUT: array<f32>;

const WG: u32 = 256u;
const MAX_HEAD_DIM: u32 = 512u;

var<workgroup> qh: array<f32, MAX_HEAD_DIM>;
var<workgroup> red: array<f32, WG>;
var<workgroup> lanes: array<f32, 64>;

// Exact f16 (low 16 bits of h) to f32.
fn half_f32(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if (e == 0u) {
        let v = f32(m) * 5.9604644775390625e-8;
        return select(v, -v, sign != 0u);
    }
    if (e == 31u) {
        return bitcast<f32>(sign | 0x7f800000u | (m << 13u));
    }
    return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}

fn k_at(e: u32) -> f32 {
    return half_f32(K[e >> 1u] >> (16u * (e & 1u)));
}

fn v_at(e: u32) -> f32 {
    return half_f32(V[e >> 1u] >> (16u * (e & 1u)));
}

// GCC's _mm512_reduce_add_ps of 16 lanes.
fn hsum16(x: array<f32, 16>) -> f32 {
    var t3: array<f32, 8>;
    for (var i = 0u; i < 8u; i++) {
        t3[i] = x[i + 8u] + x[i];
    }
    return ((t3[4] + t3[0]) + (t3[6] + t3[2])) + ((t3[5] + t3[1]) + (t3[7] + t3[3]));
}

fn query_pos(i: u32) -> u32 {
    return P.n_kv - P.n_q + i;
}

fn query_start(pos: u32) -> u32 {
    if (P.window > 0u && pos + 1u > P.window) {
        return pos + 1u - P.window;
    }
    return 0u;
}

// q_f16 · k (key j, kv head g) in the CPU's order.
fn kq_dot(j: u32, g: u32) -> f32 {
    let hd = P.head_dim;
    let kb = j * P.kv_stride + g * hd;
    if (P.kq_batch != 0u) {
        var acc: array<f32, 16>;
        for (var m = 0u; m < 16u; m++) {
            acc[m] = 0.0;
        }
        for (var i = 0u; i + 16u <= hd; i += 16u) {
            for (var m = 0u; m < 16u; m++) {
                acc[m] = acc[m] + k_at(kb + i + m) * qh[i + m];
            }
        }
        return hsum16(acc);
    }
    let np = hd & ~63u;
    // x0[m] = (acc[m] + acc[32 + m]) + (acc[16 + m] + acc[48 + m]) of the 64
    // lane accumulators acc[l] = Σ_i k[i + l] q[i + l] (i = 0, 64, ..): two
    // neighbouring m at a time, as vec4s over (m, 16 + m, 32 + m, 48 + m),
    // one K word holding both halves (kb is even: head_dim is, the host
    // checks).
    var x0: array<f32, 16>;
    for (var m = 0u; m < 16u; m += 2u) {
        var a0 = vec4<f32>(0.0);
        var a1 = vec4<f32>(0.0);
        for (var i = 0u; i < np; i += 64u) {
            let e = kb + i + m;
            let w = vec4<u32>(K[e >> 1u], K[(e + 16u) >> 1u], K[(e + 32u) >> 1u], K[(e + 48u) >> 1u]);
            let d = i + m;
            let q0 = vec4<f32>(qh[d], qh[d + 16u], qh[d + 32u], qh[d + 48u]);
            let q1 = vec4<f32>(qh[d + 1u], qh[d + 17u], qh[d + 33u], qh[d + 49u]);
            let k0 = vec4<f32>(half_f32(w.x), half_f32(w.y), half_f32(w.z), half_f32(w.w));
            let hi = w >> vec4<u32>(16u);
            let k1 = vec4<f32>(half_f32(hi.x), half_f32(hi.y), half_f32(hi.z), half_f32(hi.w));
            a0 = a0 + k0 * q0;
            a1 = a1 + k1 * q1;
        }
        x0[m] = (a0.x + a0.z) + (a0.y + a0.w);
        x0[m + 1u] = (a1.x + a1.z) + (a1.y + a1.w);
    }
    return kq_total(x0, kb, np);
}

// The non-batch order's end: hsum16 of the 16 x0 of the 64 lane chains
// over the first np elements, plus the tail np.. in float-float.
fn kq_total(x0: array<f32, 16>, kb: u32, np: u32) -> f32 {
    var s = vec2<f32>(hsum16(x0), 0.0);
    for (var i = np; i < P.head_dim; i++) {
        s = ff_add_signed(s, k_at(kb + i) * qh[i]);
    }
    return s.x + s.y;
}

// Query il's (of this dispatch) head h rounded to f16 into `qh` (every
// invocation calls; ends with a barrier).
fn stage_q(h: u32, il: u32, tid: u32) {
    let qb = ((P.q0 + il) * P.n_head + h) * P.head_dim;
    for (var d = tid; d < P.head_dim; d += WG) {
        qh[d] = round_f16(Q[qb + d]);
    }
    workgroupBarrier();
}

// Float-float + f32 for values of either sign.
fn ff_add_signed(x: vec2<f32>, v: f32) -> vec2<f32> {
    let t = two_sum(x.x, v);
    let lo = t.y + x.y;
    let r = t.x + lo;
    return vec2<f32>(r, lo - (r - t.x));
}

@compute @workgroup_size(WG)
fn scores(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    EXACT_Z = u32(P.head_dim == 0u);
    let h = wid.x;
    let il = wid.y;
    let r = attn_row(h, il);
    stage_q(h, il, tid);
    for (var j = r.z + tid; j <= r.y; j += WG) {
        S[r.w + j] = kq_dot(j, r.x) * P.scale;
    }
    storageBarrier();
    softmax_row(tid, r);
}

// Entry `scores_dec` (one query, not kq_batch; workgroup (h, chunk of 16
// keys)): the scores of `scores` without the softmax (entry `softmax`
// follows), 16 invocations a key: invocation m keeps lanes m, 16 + m,
// 32 + m, 48 + m of `kq_dot`'s 64 lane chains and forms x0[m]; the key's
// first invocation adds the 16 (hsum16) and the tail. A head's keys spread
// over n_kv / 16 workgroups (`scores` gives a head one workgroup, one key
// an invocation).
@compute @workgroup_size(WG)
fn scores_dec(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    EXACT_Z = u32(P.head_dim == 0u);
    let h = wid.x;
    let r = attn_row(h, 0u);
    let hd = P.head_dim;
    stage_q(h, 0u, tid);
    let m = tid % 16u;
    let j = wid.y * 16u + tid / 16u;
    let live = j >= r.z && j <= r.y;
    let kb = j * P.kv_stride + r.x * hd;
    let np = hd & ~63u;
    var x = 0.0;
    if (live) {
        var a = vec4<f32>(0.0);
        for (var i = 0u; i < np; i += 64u) {
            let d = i + m;
            let k4 = vec4<f32>(k_at(kb + d), k_at(kb + d + 16u), k_at(kb + d + 32u), k_at(kb + d + 48u));
            a = a + k4 * vec4<f32>(qh[d], qh[d + 16u], qh[d + 32u], qh[d + 48u]);
        }
        x = (a.x + a.z) + (a.y + a.w);
    }
    red[tid] = x;
    workgroupBarrier();
    if (live && m == 0u) {
        var x0: array<f32, 16>;
        for (var t = 0u; t < 16u; t++) {
            x0[t] = red[tid + t];
        }
        S[r.w + j] = kq_total(x0, kb, np) * P.scale;
    }
}

// Entry `softmax` (workgroup (h, i)): the softmax of a row of scores that
// `scores_rows` wrote.
@compute @workgroup_size(WG)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    EXACT_Z = u32(P.head_dim == 0u);
    softmax_row(tid, attn_row(wid.x, wid.y));
}

// The scores of row r (attn_row) in S become its probabilities
// (`softmax_stats`, then p = f16(e · inv) in place).
fn softmax_row(tid: u32, r: vec4<u32>) {
    let st = softmax_stats(tid, r);
    storageBarrier();
    for (var j = r.z + tid; j <= r.y; j += WG) {
        S[r.w + j] = softmax_p(S[r.w + j], st);
    }
}

// (max, 1 / sum) of row r's softmax from its scores in S (every invocation
// calls; S unchanged): the max, e = ggml_expf(s - max) of each key, per group
// of 16 keys aligned to key 0 the group's sum (hsum16), the groups'
// float-float sum (the CPU's f64 one to ~2^-47 in any order: short rows
// and long ones take different ones), the reciprocal.
fn softmax_stats(tid: u32, r: vec4<u32>) -> vec2<f32> {
    let pos = r.y;
    let start = r.z;
    let sb = r.w;
    var mx = -3.0e38;
    for (var j = start + tid; j <= pos; j += WG) {
        mx = max(mx, S[sb + j]);
    }
    mx = wg_max(tid, mx, pos + 1u - start);
    let g0 = start / 16u;
    let g1 = pos / 16u;
    let ng = g1 + 1u - g0;
    var acc = vec2<f32>(0.0);
    if (ng < 64u) {
        // Up to 1024 keys: an invocation a key's e (rounds of WG keys from
        // group g0), each group's hsum16 by invocation (group - g0) % 16
        // from workgroup memory, so a round costs one expf a lane rather
        // than a group's 16 in one invocation.
        for (var k0 = 0u; k0 < 16u * ng; k0 += WG) {
            red[tid] = key_e(r, 16u * g0 + k0 + tid, mx);
            workgroupBarrier();
            if (tid < 16u) {
                var lane: array<f32, 16>;
                for (var m = 0u; m < 16u; m++) {
                    lane[m] = red[16u * tid + m];
                }
                acc = ff_add(acc, vec2<f32>(hsum16(lane), 0.0));
            }
            workgroupBarrier();
        }
        return vec2<f32>(mx, ff_recip(wg_ff_sum(tid, acc, pow2_cover(min(ng, 16u)))));
    }
    for (var gi = g0 + tid; gi <= g1; gi += WG) {
        var lane: array<f32, 16>;
        for (var m = 0u; m < 16u; m++) {
            lane[m] = key_e(r, 16u * gi + m, mx);
        }
        acc = ff_add(acc, vec2<f32>(hsum16(lane), 0.0));
    }
    return vec2<f32>(mx, ff_recip(wg_ff_sum(tid, acc, pow2_cover(ng))));
}

// Key j's e = ggml_expf(s - mx) from its score in row r (attn_row) of S;
// 0 outside the row's keys.
fn key_e(r: vec4<u32>, j: u32, mx: f32) -> f32 {
    if (j >= r.z && j <= r.y) {
        return ggml_expf(S[r.w + j] - mx);
    }
    return 0.0;
}

// The max of the invocations' mx, of which the first n may hold values
// (the others -3e38): a tree from the smallest power of two covering n, the
// levels above it only combining empty values, so the full tree's result
// with fewer barriers on short rows (wg_ff_sum's trees, likewise).
fn wg_max(tid: u32, mx: f32, n: u32) -> f32 {
    red[tid] = mx;
    workgroupBarrier();
    for (var st = pow2_cover(n) / 2u; st > 0u; st >>= 1u) {
        if (tid < st) {
            red[tid] = max(red[tid], red[tid + st]);
        }
        workgroupBarrier();
    }
    let m = red[0];
    workgroupBarrier();
    return m;
}

// The smallest power of two >= min(n, WG) (1 for n <= 1).
fn pow2_cover(n: u32) -> u32 {
    let c = min(max(n, 1u), WG);
    return 1u << (32u - countLeadingZeros(c - 1u));
}

// The probability of score s: f16(ggml_expf(s - max) · (1 / sum)).
fn softmax_p(s: f32, st: vec2<f32>) -> f32 {
    return round_f16(ggml_expf(s - st.x) * st.y);
}

// Entry `scores_rows` (batches: kq_batch, head_dim <= 256; workgroup (h,
// block of nq queries)): the scores of `scores` (the 16-lane order,
// x scale) for a block of queries, without the softmax (entry `softmax`
// follows). The block's queries (f16-rounded) and each chunk of kc keys
// (converted from f16 once, for all the block's queries; dw dimensions at
// a time, the lane chains carried across) are staged in workgroup memory;
// invocation (query qi, key kk) scores key c + kk of every chunk c for its
// query. (nq, kc, dw) = (16, 16, 128) up to head_dim 128, else (8, 32, 64)
// (dw a power of 2).
// Element x of staged key kk sits at kk * dw + (x + kk) % dw, so the kc
// keys' reads of one element fall in distinct banks (16 KiB in all,
// Metal's budget here).
var<workgroup> qs: array<f32, 2048>; // [nq queries][head_dim]
var<workgroup> ks: array<f32, 2048>; // [kc keys][dw dimensions], rotated rows

@compute @workgroup_size(256)
fn scores_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    EXACT_Z = u32(P.head_dim == 0u);
    let h = wid.x;
    let hd = P.head_dim;
    let wide = hd > 128u;
    let nq = select(16u, 8u, wide); // the host's rows_q (attention_exact)
    let kc = 256u / nq;
    let dw = 2048u / kc;
    let qi = tid / kc;
    let kk = tid % kc;
    let il0 = wid.y * nq;
    let last = P.n_disp - 1u;
    // Rows past the dispatch's last query repeat it (and store nothing).
    let il = min(il0 + qi, last);
    let live = il0 + qi <= last;
    let r = attn_row(h, il);
    let g = r.x;
    for (var e = tid; e < nq * hd; e += 256u) {
        let iq = P.q0 + min(il0 + e / hd, last);
        qs[e] = round_f16(Q[(iq * P.n_head + h) * hd + e % hd]);
    }
    // The block's keys: from its first query's first key to its last
    // query's position.
    let j0 = attn_row(h, il0).z;
    let j1 = attn_row(h, min(il0 + nq - 1u, last)).y;
    let qo = qi * hd;
    let ko = kk * dw;
    for (var c = j0; c <= j1; c += kc) {
        let j = c + kk;
        let mine = live && j >= r.z && j <= r.y;
        var acc: array<f32, 16>;
        for (var m = 0u; m < 16u; m++) {
            acc[m] = 0.0;
        }
        for (var x0 = 0u; x0 < hd; x0 += dw) {
            let w = min(hd - x0, dw);
            workgroupBarrier();
            for (var e = tid; e < kc * w; e += 256u) {
                let kj = e / w;
                let x = e % w;
                ks[kj * dw + ((x + kj) & (dw - 1u))] = k_at(min(c + kj, j1) * P.kv_stride + g * hd + x0 + x);
            }
            workgroupBarrier();
            if (mine) {
                for (var i = 0u; i < w; i += 16u) {
                    for (var m = 0u; m < 16u; m++) {
                        acc[m] = acc[m] + ks[ko + ((i + m + kk) & (dw - 1u))] * qs[qo + x0 + i + m];
                    }
                }
            }
        }
        if (mine) {
            S[r.w + j] = hsum16(acc) * P.scale;
        }
    }
}

// Query il's (of this dispatch) row for head h: (kv head, position, first
// key, S offset).
fn attn_row(h: u32, il: u32) -> vec4<u32> {
    let pos = query_pos(P.q0 + il);
    return vec4<u32>(h / (P.n_head / P.n_kv_head), pos, query_start(pos), (il * P.n_head + h) * P.s_stride);
}

// Entry `kqv` (one query; workgroup (d, h)): output d in the 64-lane order
// (`kqv_block` takes batches).
@compute @workgroup_size(64)
fn kqv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    EXACT_Z = u32(P.head_dim == 0u);
    let h = wid.y;
    let il = wid.z;
    let r = attn_row(h, il);
    let d = wid.x;
    var acc = 0.0;
    if (d < P.head_dim_v) {
        // First key of lane tid at or after start.
        let first = r.z + (tid + 64u - r.z % 64u) % 64u;
        let vb = r.x * P.head_dim_v + d;
        for (var j = first; j <= r.y; j += 64u) {
            acc = acc + v_at(j * P.v_stride + vb) * S[r.w + j];
        }
    }
    lanes[tid] = acc;
    workgroupBarrier();
    if (tid == 0u && d < P.head_dim_v) {
        var x0: array<f32, 16>;
        for (var k = 0u; k < 16u; k++) {
            x0[k] = (lanes[k] + lanes[32u + k]) + (lanes[16u + k] + lanes[48u + k]);
        }
        OUT[((P.q0 + il) * P.n_head + h) * P.head_dim_v + d] = hsum16(x0);
    }
}

// Entry `softmax_kqv` (one query; workgroup (block c of 32 outputs, h);
// head_dim_v a multiple of 32): the softmax of `scores_dec`'s raw scores
// (`softmax_stats`, each probability recomputed where it is used, so S stays
// the scores) and `kqv`'s arithmetic for outputs d0 = 32c .. d0 + 32
// (invocation t keeps lane t % 64's chains of 8 of them: its keys' V words
// read once for the 8), the lanes reduced through workgroup memory; with
// P.mode < 3 also the 32 outputs quantised to 8 bits (q8.wgsl's `q8_block`
// in that mode, by 8 invocations: `put_q8_vec4`) into XQ block
// (h · head_dim_v + d0) / 32 of the row: the output projection's
// activations. One dispatch for what `softmax`, `kqv` and a pack would do
// in three, with their bits.
@compute @workgroup_size(256)
fn softmax_kqv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    EXACT_Z = u32(P.head_dim == 0u);
    let h = wid.y;
    let r = attn_row(h, 0u);
    let st = softmax_stats(tid, r);
    let lane = tid % 64u;
    let d0 = 32u * wid.x;
    let dg = d0 + 8u * (tid / 64u);
    var acc: array<f32, 8>;
    for (var k = 0u; k < 8u; k++) {
        acc[k] = 0.0;
    }
    // First key of this lane at or after start.
    let first = r.z + (lane + 64u - r.z % 64u) % 64u;
    let vb = r.x * P.head_dim_v + dg;
    for (var j = first; j <= r.y; j += 64u) {
        let p = softmax_p(S[r.w + j], st);
        let e = (j * P.v_stride + vb) >> 1u;
        for (var k = 0u; k < 4u; k++) {
            let w = V[e + k];
            acc[2u * k] = acc[2u * k] + half_f32(w) * p;
            acc[2u * k + 1u] = acc[2u * k + 1u] + half_f32(w >> 16u) * p;
        }
    }
    // qs[lane * 32 + output]
    for (var k = 0u; k < 8u; k++) {
        qs[lane * 32u + dg - d0 + k] = acc[k];
    }
    workgroupBarrier();
    if (tid < 32u) {
        var x0: array<f32, 16>;
        for (var k = 0u; k < 16u; k++) {
            x0[k] = (qs[k * 32u + tid] + qs[(32u + k) * 32u + tid]) + (qs[(16u + k) * 32u + tid] + qs[(48u + k) * 32u + tid]);
        }
        let o = hsum16(x0);
        OUT[h * P.head_dim_v + d0 + tid] = o;
        red[tid] = o;
    }
    workgroupBarrier();
    if (P.mode < 3u) {
        // Invocations 0..8 pack the 32 outputs, a vec4 each (q8.wgsl's
        // `put_q8_vec4`, every invocation calling: the same words as
        // `q8_block` of the 32 in one invocation, without its serial chain).
        let live = tid < 8u;
        var y = vec4<f32>(0.0);
        if (live) {
            y = vec4<f32>(red[4u * tid], red[4u * tid + 1u], red[4u * tid + 2u], red[4u * tid + 3u]);
        }
        let nb = P.n_head * P.head_dim_v / 32u;
        put_q8_vec4(tid, 0u, (h * P.head_dim_v + d0) / 4u + tid, live, nb, y, P.mode);
    }
}

// Entry `kqv_block` (batches; workgroup (h, block of 16 queries, group of
// 64 outputs)): the 16-lane KQV order for 64 outputs of 16 queries. Keys go in
// chunks of 16 aligned to key 0, so key c + m of chunk c is lane m's next
// term: each chunk's V rows (converted from f16 once, for all 16 queries;
// 64 outputs at a time) and probabilities are staged in workgroup memory,
// and invocation (query qi, dim dd) keeps all 16 lane chains of outputs
// d0 + 16 c + dd (c < 4; d0 = 64 z), adding only the keys its query sees; then the
// lanes' 16-lane reduction. Same arithmetic as `kqv`'s 16-lane order.
var<workgroup> vs: array<f32, 1024>; // [16 keys][64 outputs]
var<workgroup> ps: array<f32, 256>;  // [16 queries][16 keys]

@compute @workgroup_size(256)
fn kqv_block(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    EXACT_Z = u32(P.head_dim == 0u);
    let h = wid.x;
    let qi = tid / 16u;
    let dd = tid % 16u;
    let il0 = wid.y * 16u;
    let last = P.n_disp - 1u;
    // Rows past the dispatch's last query repeat it (and store nothing).
    let live = il0 + qi <= last;
    let r = attn_row(h, min(il0 + qi, last));
    let hdv = P.head_dim_v;
    let vb = r.x * hdv;
    // The block's chunks: from its first query's first key (rounded down to
    // a chunk) to its last query's position.
    let c0 = attn_row(h, il0).z & ~15u;
    let c1 = attn_row(h, min(il0 + 15u, last)).y;
    // This workgroup's 64 outputs.
    let d0 = 64u * wid.z;
    var acc: array<vec4<f32>, 16>;
    for (var m = 0u; m < 16u; m++) {
        acc[m] = vec4<f32>(0.0);
    }
    for (var c = c0; c <= c1; c += 16u) {
        workgroupBarrier();
        for (var e = tid; e < 1024u; e += 256u) {
            let j = min(c + e / 64u, c1);
            vs[e] = v_at(j * P.v_stride + vb + min(d0 + e % 64u, hdv - 1u));
        }
        let jp = c + dd;
        var p = 0.0;
        if (live && jp >= r.z && jp <= r.y) {
            p = S[r.w + jp];
        }
        ps[tid] = p;
        workgroupBarrier();
        for (var m = 0u; m < 16u; m++) {
            let j = c + m;
            if (j >= r.z && j <= r.y) {
                let v = vec4<f32>(vs[64u * m + dd], vs[64u * m + 16u + dd], vs[64u * m + 32u + dd], vs[64u * m + 48u + dd]);
                acc[m] = acc[m] + v * ps[16u * qi + m];
            }
        }
    }
    for (var c = 0u; c < 4u; c++) {
        let d = d0 + 16u * c + dd;
        if (live && d < hdv) {
            var x0: array<f32, 16>;
            for (var m = 0u; m < 16u; m++) {
                x0[m] = acc[m][c];
            }
            OUT[((P.q0 + il0 + qi) * P.n_head + h) * hdv + d] = hsum16(x0);
        }
    }
}
