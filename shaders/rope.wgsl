// rope.wgsl — rotary position embedding.
//
// x, y: [n_tokens, n_heads, head_dim] f32. One invocation per
// (pair i in 0..head_dim/2, head, token):
//  - normal order (mode 0, llama): rotates (2i, 2i+1) for 2i < n_rot;
//  - NeoX order (mode 2, gemma/qwen): rotates (i, i + n_rot/2) for i < n_rot/2.
// theta = pos * freq_scale * freq_base^(-2i / n_rot) / ff[i] (ff: llama3
// `rope_freqs`, only when has_ff). Dims >= n_rot are copied.
// Entries: `main` (out of place, positions from POS [n_tokens] u32),
// `inplace` (XY rewritten, token t at position pos0 + t; each invocation owns
// its pair, so in place is safe), `rope_kv` and `norm_rope_kv` (below).

struct Params {
    head_dim: u32,
    n_heads: u32,
    n_tokens: u32,
    n_rot: u32,
    mode: u32,       // 0 = normal, 2 = NeoX
    theta_scale: f32, // freq_base^(-2 / n_rot), computed on the host
    freq_scale: f32,
    pos0: u32,
    has_ff: u32,
    n_kv_heads: u32, // rope_kv only
    head_dim_v: u32, // rope_kv only
    kv_f16: u32,     // rope_kv only: 1 = f16 caches, 0 = f32
    q_scale: f32,    // rope_kv only: multiplies the rotated q
    eps: f32,        // norm_rope_kv only: the q/k norms' epsilon
    has_cs: u32,     // 1: (cos, sin) from CS, 0: computed here
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read> POS: array<u32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
@group(0) @binding(3) var<uniform> P: Params;
@group(0) @binding(4) var<storage, read_write> XY: array<f32>;
@group(0) @binding(5) var<storage, read> FF: array<f32>;
// (cos, sin) of pair i at position p at CS[p * n_rot / 2 + i], computed by
// the host as the CPU backend computes them (its libm): the GPU's own
// sin/cos agree only to about an ulp.
@group(0) @binding(12) var<storage, read> CS: array<vec2<f32>>;

fn pair(i: u32) -> vec3<u32> {
    let half_rot = P.n_rot / 2u;
    let rotate = i < half_rot;
    if (P.mode == 2u) {
        if (rotate) {
            return vec3<u32>(i, i + half_rot, 1u);
        }
        let a = P.n_rot + 2u * (i - half_rot);
        return vec3<u32>(a, a + 1u, 0u);
    }
    return vec3<u32>(2u * i, 2u * i + 1u, select(0u, 1u, rotate));
}

// Pair i rotated by theta_i = freq_scale · (pos · theta_scale^i / ff[i]),
// computed as the CPU backend (and ggml) does: the power by repeated
// multiplication, a correctly rounded division by the factor, an accurate
// sin/cos (f16.wgsl), and a fused multiply-add on the first products.
fn rotate(x0: f32, x1: f32, i: u32, pos: u32) -> vec2<f32> {
    var cs: vec2<f32>;
    if (P.has_cs != 0u) {
        cs = CS[pos * (P.n_rot / 2u) + i];
    } else {
        var theta = f32(pos);
        for (var k = 0u; k < i; k++) {
            theta = theta * P.theta_scale;
        }
        if (P.has_ff != 0u) {
            theta = div_rn(theta, FF[i]);
        }
        cs = sincos_f32(P.freq_scale * theta);
    }
    return vec2<f32>(fma_rn(x0, cs.x, -(x1 * cs.y)), fma_rn(x0, cs.y, x1 * cs.x));
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    EXACT_Z = u32(P.eps < 0.0);
    let i = gid.x;
    let h = gid.y;
    let t = gid.z;
    if (i >= P.head_dim / 2u || h >= P.n_heads || t >= P.n_tokens) {
        return;
    }
    let base = (t * P.n_heads + h) * P.head_dim;
    let ab = pair(i);
    var r = vec2<f32>(X[base + ab.x], X[base + ab.y]);
    if (ab.z == 1u) {
        r = rotate(r.x, r.y, i, POS[t]);
    }
    Y[base + ab.x] = r.x;
    Y[base + ab.y] = r.y;
}

@compute @workgroup_size(64)
fn inplace(@builtin(global_invocation_id) gid: vec3<u32>) {
    EXACT_Z = u32(P.eps < 0.0);
    let i = gid.x;
    let h = gid.y;
    let t = gid.z;
    if (i >= P.head_dim / 2u || h >= P.n_heads || t >= P.n_tokens) {
        return;
    }
    let base = (t * P.n_heads + h) * P.head_dim;
    let ab = pair(i);
    if (ab.z == 1u) {
        let r = rotate(XY[base + ab.x], XY[base + ab.y], i, P.pos0 + t);
        XY[base + ab.x] = r.x;
        XY[base + ab.y] = r.y;
    }
}

// ---- rope_kv: a layer's RoPE and KV-cache write in one dispatch ----
// XY = q [n_tokens, n_heads, head_dim] rotated in place, times q_scale; X = k
// [n_tokens, n_kv_heads, head_dim] rotated into KC and VSRC = v
// [n_tokens, n_kv_heads, head_dim_v] copied into VC, both caches at rows
// pos0 + t (f16 pairs packed in u32 words, f16.wgsl's rounding, or f32 bit
// patterns). k itself is not changed. Invocation (j, hh, t): q head hh's
// pair j, then k head hh - n_heads's word j (elements 2j, 2j + 1, each
// rotated from k's unchanged values, so no two invocations write one word),
// then v head hh - n_heads - n_kv_heads's word j. head_dim, head_dim_v even.

@group(0) @binding(6) var<storage, read_write> KC: array<u32>;
@group(0) @binding(7) var<storage, read_write> VC: array<u32>;
@group(0) @binding(8) var<storage, read> VSRC: array<f32>;

// Element e of k row `base` after RoPE at position `pos`.
fn k_rotated(base: u32, e: u32, pos: u32) -> f32 {
    if (e >= P.n_rot) {
        return X[base + e];
    }
    let half_rot = P.n_rot / 2u;
    if (P.mode == 2u) {
        let i = e % half_rot;
        let r = rotate(X[base + i], X[base + i + half_rot], i, pos);
        return select(r.x, r.y, e >= half_rot);
    }
    let i = e / 2u;
    let r = rotate(X[base + 2u * i], X[base + 2u * i + 1u], i, pos);
    return select(r.x, r.y, (e & 1u) == 1u);
}

// Cache elements (e, e + 1) (e even) = (a, b).
fn put2(is_v: bool, e: u32, a: f32, b: f32) {
    if (P.kv_f16 != 0u) {
        let w = f32_to_f16(a) | (f32_to_f16(b) << 16u);
        if (is_v) { VC[e / 2u] = w; } else { KC[e / 2u] = w; }
    } else if (is_v) {
        VC[e] = bitcast<u32>(a);
        VC[e + 1u] = bitcast<u32>(b);
    } else {
        KC[e] = bitcast<u32>(a);
        KC[e + 1u] = bitcast<u32>(b);
    }
}

@compute @workgroup_size(64)
fn rope_kv(@builtin(global_invocation_id) gid: vec3<u32>) {
    EXACT_Z = u32(P.eps < 0.0);
    let j = gid.x;
    let hh = gid.y;
    let t = gid.z;
    let pos = P.pos0 + t;
    if (t >= P.n_tokens) {
        return;
    }
    if (hh < P.n_heads) {
        if (j >= P.head_dim / 2u) {
            return;
        }
        let base = (t * P.n_heads + hh) * P.head_dim;
        let ab = pair(j);
        var r = vec2<f32>(XY[base + ab.x], XY[base + ab.y]);
        if (ab.z == 1u) {
            r = rotate(r.x, r.y, j, pos);
        }
        XY[base + ab.x] = r.x * P.q_scale;
        XY[base + ab.y] = r.y * P.q_scale;
        return;
    }
    let kvh = hh - P.n_heads;
    if (kvh < P.n_kv_heads) {
        if (j >= P.head_dim / 2u) {
            return;
        }
        let base = (t * P.n_kv_heads + kvh) * P.head_dim;
        let dst = pos * P.n_kv_heads * P.head_dim + kvh * P.head_dim + 2u * j;
        put2(false, dst, k_rotated(base, 2u * j, pos), k_rotated(base, 2u * j + 1u, pos));
        return;
    }
    let vh = kvh - P.n_kv_heads;
    if (vh >= P.n_kv_heads || j >= P.head_dim_v / 2u) {
        return;
    }
    let src = (t * P.n_kv_heads + vh) * P.head_dim_v + 2u * j;
    let dst = pos * P.n_kv_heads * P.head_dim_v + vh * P.head_dim_v + 2u * j;
    put2(true, dst, VSRC[src], VSRC[src + 1u]);
}

// ---- norm_rope_kv: rope_kv with per-head RMSNorms of q and k first ----
// (Qwen3, Gemma 3.) One workgroup per (head hh, token t), hh as in rope_kv:
// q and k heads are RMS-normalised with their weight (QW / KW, head_dim
// each; eps in P.eps) into workgroup memory, then rotated and written as
// rope_kv writes them; v heads are copied. head_dim ≤ 512 and even.

@group(0) @binding(10) var<storage, read> QW: array<f32>;
@group(0) @binding(11) var<storage, read> KW: array<f32>;

var<workgroup> hv: array<f32, 512>;

// Element e of the normalised head in hv after RoPE at position `pos`.
fn hv_rotated(e: u32, pos: u32) -> f32 {
    if (e >= P.n_rot) {
        return hv[e];
    }
    let half_rot = P.n_rot / 2u;
    if (P.mode == 2u) {
        let i = e % half_rot;
        let r = rotate(hv[i], hv[i + half_rot], i, pos);
        return select(r.x, r.y, e >= half_rot);
    }
    let i = e / 2u;
    let r = rotate(hv[2u * i], hv[2u * i + 1u], i, pos);
    return select(r.x, r.y, (e & 1u) == 1u);
}

@compute @workgroup_size(64)
fn norm_rope_kv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    EXACT_Z = u32(P.eps < 0.0);
    let hh = wid.y;
    let t = wid.z;
    let pos = P.pos0 + t;
    let hd = P.head_dim;
    if (hh >= P.n_heads + P.n_kv_heads) {
        // v head: copied.
        let vh = hh - P.n_heads - P.n_kv_heads;
        for (var j = lid; j < P.head_dim_v / 2u; j += 64u) {
            let src = (t * P.n_kv_heads + vh) * P.head_dim_v + 2u * j;
            let dst = pos * P.n_kv_heads * P.head_dim_v + vh * P.head_dim_v + 2u * j;
            put2(true, dst, VSRC[src], VSRC[src + 1u]);
        }
        return;
    }
    let is_q = hh < P.n_heads;
    let kvh = hh - select(P.n_heads, 0u, is_q);
    var base: u32;
    if (is_q) {
        base = (t * P.n_heads + hh) * hd;
    } else {
        base = (t * P.n_kv_heads + kvh) * hd;
    }
    for (var e = lid; e < hd; e += 64u) {
        if (is_q) { hv[e] = XY[base + e]; } else { hv[e] = X[base + e]; }
    }
    workgroupBarrier();
    // The CPU's RMSNorm scale as rmsnorm.wgsl `wg_scale` computes it:
    // squares rounded to f32, summed in float-float, then the mean, sqrt
    // and reciprocal correctly rounded.
    var acc = vec2<f32>(0.0);
    for (var e = lid; e < hd; e += 64u) {
        acc = ff_sq_add(acc, hv[e]);
    }
    let scale = rms_scale(wg_ff_sum(lid, acc, 64u), hd, P.eps);
    for (var e = lid; e < hd; e += 64u) {
        var w: f32;
        if (is_q) { w = QW[e]; } else { w = KW[e]; }
        hv[e] = hv[e] * scale * w;
    }
    workgroupBarrier();
    if (is_q) {
        for (var j = lid; j < hd / 2u; j += 64u) {
            let ab = pair(j);
            var r = vec2<f32>(hv[ab.x], hv[ab.y]);
            if (ab.z == 1u) {
                r = rotate(r.x, r.y, j, pos);
            }
            XY[base + ab.x] = r.x * P.q_scale;
            XY[base + ab.y] = r.y * P.q_scale;
        }
    } else {
        for (var j = lid; j < hd / 2u; j += 64u) {
            let dst = pos * P.n_kv_heads * hd + kvh * hd + 2u * j;
            put2(false, dst, hv_rotated(2u * j, pos), hv_rotated(2u * j + 1u, pos));
        }
    }
}
