// q8.wgsl — writing 8-bit activations for matvec_q8.wgsl / matmul_q8.wgsl
// (prepended after f16.wgsl to the kernels that produce them: act_quant
// `pack_q8`, rmsnorm `norm_pack_q8`, glu `*_assign_q8`, attn_exact
// `softmax_kqv`, matmul_exact_tr's `*_norm` entries).
// XQ layout of one row of n_blocks 32-element blocks (rows `q8_stride` words
// apart): words 8b .. 8b + 8 the packed int8 quants of block b (element
// order), then per block two words at n_blocks * 8 + 2b: d (f32) and s.
// The rounding mirrors the CPU backend's activations for the consuming
// weight type (its ggml vec_dot_type), `mode`:
//   0 Q8_0 (Q4_0, Q5_0, Q8_0 weights): d = f16(amax/127),
//     q = round(y·(127/amax)) (ties to even), s = Σq (i32 bits);
//   1 Q8_1 (Q4_1): d and q as Q8_0, s = f16((amax/127)·Σq) (f32 bits);
//   2 Q8_K (K-quants; blocks of 256): kmax = the signed value of the first
//     element with the largest |y| in the 256, iscale = -127/kmax,
//     q = min(round(iscale·y), 127), d = 1/iscale (f32), s = Σq (i32 bits).
// Divisions are rounded correctly (f16.wgsl `div_rn`) as the CPU's are.

@group(0) @binding(9) var<storage, read_write> XQ: array<u32>;

// put_q8_vec4's statistics: a vec4's per invocation (up to 256), then
// 32 blocks' (each 8 invocations'), shared by the 8 blocks of a Q8_K block.
var<workgroup> q8_sh: array<vec2<f32>, 288>;

// (amax, the signed value of the first element with |y| = amax).
fn q8_stats(y: array<vec4<f32>, 8>) -> vec2<f32> {
    var st = vec2<f32>(0.0);
    for (var k = 0u; k < 8u; k++) {
        st = q8_stats4(st, y[k]);
    }
    return st;
}

// `q8_stats` carried on over the four elements of y (in order).
fn q8_stats4(st0: vec2<f32>, y: vec4<f32>) -> vec2<f32> {
    var st = st0;
    for (var c = 0u; c < 4u; c++) {
        if (abs(y[c]) > st.x) {
            st = vec2<f32>(abs(y[c]), y[c]);
        }
    }
    return st;
}

// The (amax, signed value) of q8_sh[first .. first + 8] (q8_stats) with
// the largest amax, the first of equals.
fn q8_first_max8(first: u32) -> vec2<f32> {
    var m = q8_sh[first];
    for (var j = 1u; j < 8u; j++) {
        let o = q8_sh[first + j];
        if (o.x > m.x) {
            m = o;
        }
    }
    return m;
}

// A block's (d, the multiplier of y) in `mode` from its statistic m:
// Q8_K's signed max, else the block's amax.
fn q8_scale(mode: u32, m: f32) -> vec2<f32> {
    if (mode == 2u) {
        if (m == 0.0) {
            return vec2<f32>(0.0);
        }
        let iscale = div_rn(-127.0, m);
        return vec2<f32>(div_rn(1.0, iscale), iscale);
    }
    if (m > 0.0) {
        return vec2<f32>(div_rn(m, 127.0), div_rn(127.0, m));
    }
    return vec2<f32>(0.0);
}

// Four quants of y with the multiplier id (`q8_scale`).
fn q8_quant4(mode: u32, y: vec4<f32>, id: f32) -> vec4<i32> {
    if (mode == 2u) {
        return vec4<i32>(min(round(y * id), vec4<f32>(127.0)));
    }
    return vec4<i32>(clamp(round(y * id), vec4<f32>(-128.0), vec4<f32>(127.0)));
}

// A block's d and s words from d and the sum of its quants.
fn q8_ds(mode: u32, d: f32, isum: i32) -> vec2<u32> {
    if (mode == 2u) {
        return vec2<u32>(bitcast<u32>(d), bitcast<u32>(isum));
    }
    var s = bitcast<u32>(isum);
    if (mode == 1u) {
        s = bitcast<u32>(round_f16(d * f32(isum)));
    }
    return vec2<u32>(bitcast<u32>(round_f16(d)), s);
}

// One 32-element block y in `mode` (kmax: Q8_K's signed max, else unused):
// words 0..8 the packed quants, 8: d, 9: s.
fn q8_block(y: array<vec4<f32>, 8>, mode: u32, kmax: f32) -> array<u32, 10> {
    var m = kmax;
    if (mode != 2u) {
        m = q8_stats(y).x;
    }
    let sc = q8_scale(mode, m);
    var out: array<u32, 10>;
    var sum = vec4<i32>(0);
    for (var k = 0u; k < 8u; k++) {
        let q = q8_quant4(mode, y[k], sc.y);
        sum += q;
        out[k] = pack4xI8(q);
    }
    let ds = q8_ds(mode, sc.x, sum.x + sum.y + sum.z + sum.w);
    out[8] = ds.x;
    out[9] = ds.y;
    return out;
}

// Stores block b's words (q8_block) into the XQ row at word `base`.
fn put_q8(base: u32, b: u32, n_blocks: u32, w: array<u32, 10>) {
    for (var k = 0u; k < 8u; k++) {
        XQ[base + 8u * b + k] = w[k];
    }
    XQ[base + n_blocks * 8u + 2u * b] = w[8];
    XQ[base + n_blocks * 8u + 2u * b + 1u] = w[9];
}

// ---- Packing a vec4 an invocation (8 invocations a 32-element block, so a
// block's quants cost one round of the workgroup, not 32 serial elements of
// one invocation): the same words as q8_block + put_q8 (q8_scale, q8_quant4,
// q8_ds).

var<workgroup> q8_isum: array<i32, 256>;

// Invocation t (of a workgroup of 256, all calling together: barriers) packs
// y, the row's vec4 i (block i / 8 of the row at XQ word `base`, n_blocks
// blocks; `live`: i is in the row), in `mode`. The workgroup's i are
// i0 + t for an i0 that is a multiple of 64, so the 8 vec4s of a block (64
// of a Q8_K block) are consecutive invocations; vec4s past the row end in
// whole blocks (n_blocks a multiple of 8 for Q8_K).
fn put_q8_vec4(t: u32, base: u32, i: u32, live: bool, n_blocks: u32, y: vec4<f32>, mode: u32) {
    let r = q8_vec4(t, y, mode);
    if (live) {
        XQ[base + i] = r.q;
        if (t % 8u == 0u) {
            let b = i / 8u;
            XQ[base + n_blocks * 8u + 2u * b] = r.ds.x;
            XQ[base + n_blocks * 8u + 2u * b + 1u] = r.ds.y;
        }
    }
}

// `put_q8_vec4`'s words: the vec4's packed quants, and for the block's
// first invocation (t % 8 == 0) the block's d and s words.
struct Q8Vec4 {
    q: u32,
    ds: vec2<u32>,
}

fn q8_vec4(t: u32, y: vec4<f32>, mode: u32) -> Q8Vec4 {
    // (amax, the signed value of its first element) of the vec4, then of
    // the block (first in element order on ties, as q8_stats).
    q8_sh[t] = q8_stats4(vec2<f32>(0.0), y);
    workgroupBarrier();
    if (t % 8u == 0u) {
        q8_sh[256u + t / 8u] = q8_first_max8(t);
    }
    workgroupBarrier();
    let bs = t / 8u;
    var m = q8_sh[256u + bs].x;
    if (mode == 2u) {
        // Q8_K: the first largest of the 8 blocks of 256 elements.
        m = q8_first_max8(256u + (bs & ~7u)).y;
    }
    let sc = q8_scale(mode, m);
    let q = q8_quant4(mode, y, sc.y);
    q8_isum[t] = q.x + q.y + q.z + q.w;
    workgroupBarrier();
    var ds = vec2<u32>(0u);
    if (t % 8u == 0u) {
        var isum = 0;
        for (var j = 0u; j < 8u; j++) {
            isum += q8_isum[t + j];
        }
        ds = q8_ds(mode, sc.x, isum);
    }
    return Q8Vec4(pack4xI8(q), ds);
}
