// matmul_exact.wgsl — Y[t, r] (+)= W[r] · x_t with x quantised to 8 bits
// (act_quant.wgsl / q8.wgsl), summed in exactly the CPU backend's float
// order (zeta_tensor `DotOrder`), so every output has the CPU's bits.
// Prepended: quant.wgsl, f16.wgsl, exact.wgsl (`fma_rn`), q8.wgsl (the
// `*_norm` entries' packing).
//
// W: [n_rows, n_cols] GGUF blocks (one part), XQI: per token row x_stride
// words (q8.wgsl layout: 8 words of packed quants per 32-element unit, then
// per unit (d, s)), Y: [n_tok, y_stride] f32.
// A workgroup of 64 takes 8 rows of one token (workgroup_id.z = token -
// tok0); invocation l = 0..8 of a row is SIMD lane l of ggml's AVX2 kernels
// (columns 4l..4l+3 of every 32).
// Entry `lanes`: every lane keeps its own FMA chain over the blocks (ggml's
// `vec_dot` order), the eight are added by `hsum_float_8`. LANE_TERM is the
// weight type's term (substituted by the host, with UNROLL_V: how many
// blocks' loads a lane issues before their FMAs).
// Entry `blocks`: the lanes compute the exact integer parts of eight blocks
// at a time into workgroup memory, then lane 0 folds them in block order
// (BLOCK_PACKET/BLOCK_NSUB: Q4_0's repacked gemm, Q4_K's repacked gemv/gemm,
// Q6_K's tiled order).

struct Params {
    n_cols: u32,     // elements per row
    n_units: u32,    // n_cols / 32
    row_bytes: u32,  // bytes per row in W
    rows: u32,       // rows in this part
    row_offset: u32, // index of this part's first row in Y's rows
    grid_x: u32,     // workgroups along x (2-D grid over row groups)
    accumulate: u32, // 1: Y += W x
    tok0: u32,       // first token of this dispatch
    y_stride: u32,   // elements per token row of Y
    x_stride: u32,   // u32 words per token row of XQI
    // the `*_multi` entries only (one token): matrices 0, 1 (2
    // takes the remaining rows) of one buffer at byte offsets off0..off2.
    rows0: u32,
    rows1: u32,
    off0: u32,
    off1: u32,
    off2: u32,
    n_tok: u32,      // `tile_*` only: tokens of this dispatch
    // `lanes_tr_multi_rope` only: the token's position, rotated dimensions
    // and head size.
    rope_pos: u32,
    rope_n_rot: u32,
    rope_hd: u32,
    // matmul_exact_tr.wgsl's `*_norm` entries only: the RMSNorm's epsilon
    // (f32 bits).
    norm_eps: u32,
}

@group(0) @binding(0) var<storage, read> W: array<u32>;
@group(0) @binding(1) var<storage, read> XQI: array<u32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
@group(0) @binding(3) var<uniform> P: Params;

// Required by quant.wgsl's dequantisers (unused here).
var<private> dq: array<f32, 32>;

const LO4: u32 = 0x0f0f0f0fu;
const ONES: u32 = 0x01010101u;
// Blocks whose loads a lane issues before their FMAs.
const UNROLL: u32 = UNROLL_Vu;

var<workgroup> lane_acc: array<vec2<f32>, 64>;
var<workgroup> parts: array<vec2<i32>, 512>;

// Word k (0..8) of unit u's activation quants; unit u's d and s words:
// from XQI (`*_global`), or where the variant stages them in workgroup
// memory (matmul_exact_sg.wgsl's kernels of 256-element blocks, the block
// orders and the lane order: `*_staged`) from there. The host substitutes
// X_SRC.
fn xq(xb: u32, u: u32, k: u32) -> u32 {
    return xq_X_SRC(xb, u, k);
}

fn xd(xb: u32, u: u32) -> f32 {
    return xd_X_SRC(xb, u);
}

fn xs(xb: u32, u: u32) -> u32 {
    return xs_X_SRC(xb, u);
}

fn xq_global(xb: u32, u: u32, k: u32) -> u32 {
    return XQI[xb + 8u * u + k];
}

fn xd_global(xb: u32, u: u32) -> f32 {
    return bitcast<f32>(XQI[xb + 8u * P.n_units + 2u * u]);
}

fn xs_global(xb: u32, u: u32) -> u32 {
    return XQI[xb + 8u * P.n_units + 2u * u + 1u];
}

// The two f16 of a word (low, high): WGSL's unpacking builtin where the
// device was found to convert every f16 exactly, else integer ops (the
// host substitutes the function's name: f16.wgsl F16_UNPACK). H100,
// llama-8b Q4_0: the exact matvecs 3% faster.
fn halves(w: u32) -> vec2<f32> {
    return F16_HALVES_V(w);
}

// Σ of the four signed bytes of x.
fn bsum4(x: u32) -> i32 {
    return dot4I8Packed(ONES, x);
}

// Lane l's nibbles of the 16 quant bytes at byte `qs`: low nibbles of word
// l (columns 4l..4l+3) for l < 4, high nibbles of word l - 4 for l >= 4.
fn nib_lane(qs: u32, l: u32) -> u32 {
    return nib_of(rd_u32(qs + 4u * (l & 3u)), l);
}

// Lane l's nibbles of w, quant word l & 3: low for l < 4, else high.
fn nib_of(w: u32, l: u32) -> u32 {
    return select(w & LO4, (w >> 4u) & LO4, l >= 4u);
}

// Four fifth bits (t & 0xf) moved to bit 4 of four bytes.
fn spread4(t: u32) -> u32 {
    return ((t & 1u) << 4u) | ((t & 2u) << 11u) | ((t & 4u) << 18u) | ((t & 8u) << 25u);
}

// ---- weight groups (the `*_multi` entries of matmul_exact_sg.wgsl and
// matmul_exact_tr.wgsl): the 2 or 3 matrices of a weight group (Q/K/V,
// gate/up) in one buffer, one token, one dispatch. Global row g < rows0 is row g of
// matrix 0 (byte off0, output Y), then rows1 rows of matrix 1 (off1, Y1),
// then the rest of matrix 2 (off2, Y2; a dummy for two matrices).

@group(0) @binding(4) var<storage, read_write> Y1: array<f32>;
@group(0) @binding(5) var<storage, read_write> Y2: array<f32>;

// (matrix, its row, that row's byte in W) of global row g (past the end:
// matrix 0's row 0).
fn multi_row(g: u32) -> vec3<u32> {
    if (g >= P.rows) {
        return vec3<u32>(0u, 0u, P.off0);
    }
    if (g >= P.rows0 + P.rows1) {
        let r = g - P.rows0 - P.rows1;
        return vec3<u32>(2u, r, P.off2 + r * P.row_bytes);
    }
    if (g >= P.rows0) {
        let r = g - P.rows0;
        return vec3<u32>(1u, r, P.off1 + r * P.row_bytes);
    }
    return vec3<u32>(0u, g, P.off0 + g * P.row_bytes);
}

fn store_multi(m: u32, r: u32, v: f32) {
    if (m == 0u) {
        Y[r] = v;
    } else if (m == 1u) {
        Y1[r] = v;
    } else {
        Y2[r] = v;
    }
}

// ---- the Q/K/V group of one token with the layer's RoPE and KV-cache
// write as its epilogue (`lanes_tr_multi_rope` in matmul_exact_tr.wgsl,
// `*_sg_multi_rope` in matmul_exact_sg.wgsl): rope.wgsl `rope_kv` for the
// normal order, pairs (2i, 2i + 1), so a pair is two rows of one workgroup.
// Matrix 0 is q (rotated into Y), 1 k (rotated into the f16 cache KC at row
// rope_pos), 2 v (into VC); rows0 and rows1 are even. The rotation is
// rope.wgsl's `rotate` with (cos, sin) from CS, the CPU's table; f16.wgsl's
// rounding into the caches: the bits of the group kernel followed by
// rope_kv.

@group(0) @binding(6) var<storage, read_write> KC: array<u32>;
@group(0) @binding(7) var<storage, read_write> VC: array<u32>;
// (cos, sin) of pair i at position p at CS[p * n_rot / 2 + i].
@group(0) @binding(8) var<storage, read> CS: array<vec2<f32>>;

// Rows r, r + 1 (r even) of matrix m with values (a, b), rotated and stored.
fn rope_put(m: u32, r: u32, a: f32, b: f32) {
    let pos = P.rope_pos;
    if (m == 2u) {
        let rows2 = P.rows - P.rows0 - P.rows1;
        VC[(pos * rows2 + r) / 2u] = f32_to_f16(a) | (f32_to_f16(b) << 16u);
        return;
    }
    var y = vec2<f32>(a, b);
    let e = r % P.rope_hd;
    if (e < P.rope_n_rot) {
        let cs = CS[pos * (P.rope_n_rot / 2u) + e / 2u];
        y = vec2<f32>(fma_rn(a, cs.x, -(b * cs.y)), fma_rn(a, cs.y, b * cs.x));
    }
    if (m == 0u) {
        Y[r] = y.x;
        Y[r + 1u] = y.y;
    } else {
        KC[(pos * P.rows1 + r) / 2u] = f32_to_f16(y.x) | (f32_to_f16(y.y) << 16u);
    }
}

// ---- lane terms ------------------------------------------------------------
// Lane l's share of block u as t = (a, b, c, d): the lane accumulator takes
// fma(a, b, acc), the second accumulator fma(c, d, acc2) where the type has
// one (`apply`). Terms load only; the FMA chains come after (see `lanes`).

// Q4_0 · Q8_0: d_w d_x Σ (q - 8) x per lane.
fn term_q4_0(rb: u32, u: u32, l: u32, xb: u32) -> vec4<f32> {
    let b = rb + u * 18u;
    let x = xq(xb, u, l);
    let s = dot4I8Packed(nib_lane(b + 2u, l), x) - 8 * bsum4(x);
    return vec4<f32>(rd_f16(b) * xd(xb, u), f32(s), 0.0, 0.0);
}

// Q4_1 · Q8_1: lanes d_w d_x Σ q x; second accumulator Σ m_w s_x (lane 0's
// is the one used).
fn term_q4_1(rb: u32, u: u32, l: u32, xb: u32) -> vec4<f32> {
    let b = rb + u * 20u;
    let s = dot4I8Packed(nib_lane(b + 4u, l), xq(xb, u, l));
    return vec4<f32>(rd_f16(b) * xd(xb, u), f32(s), rd_f16(b + 2u), bitcast<f32>(xs(xb, u)));
}

// Q5_0 · Q8_0: d_w d_x Σ (q - 16) x.
fn term_q5_0(rb: u32, u: u32, l: u32, xb: u32) -> vec4<f32> {
    let b = rb + u * 22u;
    let qh = rd_u32(b + 2u);
    let x = xq(xb, u, l);
    let q = nib_lane(b + 6u, l) | spread4(qh >> (4u * l));
    let s = dot4I8Packed(q, x) - 16 * bsum4(x);
    return vec4<f32>(rd_f16(b) * xd(xb, u), f32(s), 0.0, 0.0);
}

// Q8_0 · Q8_0.
fn term_q8_0(rb: u32, u: u32, l: u32, xb: u32) -> vec4<f32> {
    let b = rb + u * 34u;
    let s = dot4I8Packed(rd_u32(b + 2u + 4u * l), xq(xb, u, l));
    return vec4<f32>(rd_f16(b) * xd(xb, u), f32(s), 0.0, 0.0);
}

// Q6_K lane l of 256-block k: Σ_{j<2,c<4} sc(8j+2c+l/4) · Σ q x over
// columns 128j + 32c + 4l.. (q unsigned 0..63), minus 32 Σ_{g=2l,2l+1}
// sc(g) · bsum_g (bsum_g: the activation quants of columns 16g..16g+15).
fn q6k_lane(rb: u32, k: u32, l: u32, xb: u32) -> i32 {
    let b = rb + k * 210u;
    let u0 = 8u * k;
    // The 16 scale bytes (b + 192) as 4 words: five loads, not a load a byte.
    let sc4 = rd_u32x4(b + 192u);
    var s = 0;
    for (var j = 0u; j < 2u; j++) {
        let qhw = rd_u32(b + 128u + 32u * j + 4u * l);
        for (var c = 0u; c < 4u; c++) {
            let qlw = rd_u32(b + 64u * j + 32u * (c & 1u) + 4u * l);
            let q = ((qlw >> (4u * (c >> 1u))) & LO4) | (((qhw >> (2u * c)) & 0x03030303u) << 4u);
            // Scale 8j + 2c + l/4: byte 2 (c & 1) + l/4 of word 2j + c/2.
            let sc = i8_at(sc4[2u * j + (c >> 1u)], 2u * (c & 1u) + l / 4u);
            s += sc * dot4I8Packed(q, xq(xb, u0 + 4u * j + c, l));
        }
    }
    // Scales 2l, 2l + 1: bytes 2 (l % 2) + h of word l / 2.
    let l2 = l / 2u;
    let sw = select(select(sc4[0], sc4[1], l2 == 1u), select(sc4[2], sc4[3], l2 == 3u), l2 >= 2u);
    for (var h = 0u; h < 2u; h++) {
        let g = 2u * l + h;
        let u = u0 + g / 2u;
        let w0 = 4u * (g % 2u);
        let bs = bsum4(xq(xb, u, w0)) + bsum4(xq(xb, u, w0 + 1u)) + bsum4(xq(xb, u, w0 + 2u))
            + bsum4(xq(xb, u, w0 + 3u));
        s -= 32 * bs * i8_at(sw, 2u * (l % 2u) + h);
    }
    return s;
}

// Byte i of w as a signed value.
fn i8_at(w: u32, i: u32) -> i32 {
    return bitcast<i32>(w << (24u - 8u * i)) >> 24u;
}

// Q6_K · Q8_K, 256-block k (d: the f16 at byte 208, i.e. half (b & 2) of
// the word at b + 208 rounded down).
fn term_q6_k(rb: u32, k: u32, l: u32, xb: u32) -> vec4<f32> {
    let o = rb + k * 210u + 208u;
    let h = halves(W[o >> 2u]);
    let d = xd(xb, 8u * k) * select(h.x, h.y, (o & 2u) != 0u);
    return vec4<f32>(d, f32(q6k_lane(rb, k, l, xb)), 0.0, 0.0);
}

// Q4_K unit s (0..8) of 256-block k: (sc_s Σ q x over its 32 columns, m_s Σ x)
// for lane = -1, or lane l's 4 columns (sc_s Σ q x only) for lane = l.
fn q4k_unit_lane(b: u32, k: u32, s: u32, l: u32, xb: u32) -> i32 {
    let w = rd_u32_aligned(b + 16u + 32u * (s / 2u) + 4u * l);
    let q = (w >> (4u * (s & 1u))) & LO4;
    return dot4I8Packed(q, xq(xb, 8u * k + s, l));
}

fn q4k_sm(b: u32, s: u32) -> vec2<i32> {
    let sm = scale_min_k4(b + 4u, s);
    return vec2<i32>(i32(sm.x), i32(sm.y));
}

// Q4_K · Q8_K in ggml's AVX2 lane order (weights not repacked): lane l
// accumulates d · Σ_s sc_s Σ_lane q x; lanes 0..3 also keep the min
// accumulator of sub-block pair l: fma(-d_x dmin_w, m_2l s_2l + m_2l+1 s_2l+1, acc_m).
fn term_q4_k(rb: u32, k: u32, l: u32, xb: u32) -> vec4<f32> {
    let b = rb + k * 144u;
    var s = 0;
    for (var u = 0u; u < 8u; u++) {
        s += q4k_sm(b, u).x * q4k_unit_lane(b, k, u, l, xb);
    }
    let yd = xd(xb, 8u * k);
    var m = vec2<f32>(0.0);
    if (l < 4u) {
        let p = q4k_sm(b, 2u * l).y * bitcast<i32>(xs(xb, 8u * k + 2u * l))
            + q4k_sm(b, 2u * l + 1u).y * bitcast<i32>(xs(xb, 8u * k + 2u * l + 1u));
        m = vec2<f32>(-yd * rd_f16(b + 2u), f32(p));
    }
    return vec4<f32>(yd * rd_f16(b), f32(s), m);
}

// A row's result from its eight lane accumulators (lane chain, second
// chain): `hsum_float_8` of the chains, plus the second accumulators (Q4_1:
// lane 0's Σ m s; Q4_K: ((m0 + m2) + (m1 + m3)) of lanes 0..3).
fn lanes_total(a: array<vec2<f32>, 8>) -> f32 {
    let h = ((a[0].x + a[4].x) + (a[2].x + a[6].x)) + ((a[1].x + a[5].x) + (a[3].x + a[7].x));
    if (LANE_EXTRA == 1u) {
        return h + a[0].y;
    } else if (LANE_EXTRA == 2u) {
        return h + ((a[0].y + a[2].y) + (a[1].y + a[3].y));
    }
    return h;
}

// The FMAs of term t: the lane chain, and the second chain where the type
// has one for lane l (Q4_1: lane 0; Q4_K: lanes 0..3).
fn apply(t: vec4<f32>, l: u32, st: vec2<f32>) -> vec2<f32> {
    var y = st.y;
    if ((LANE_EXTRA == 1u && l == 0u) || (LANE_EXTRA == 2u && l < 4u)) {
        y = fma_rn(t.z, t.w, y);
    }
    return vec2<f32>(fma_rn(t.x, t.y, st.x), y);
}

fn store(tok: u32, row: u32, v: f32) {
    let i = tok * P.y_stride + P.row_offset + row;
    if (P.accumulate != 0u) {
        Y[i] = Y[i] + v;
    } else {
        Y[i] = v;
    }
}

@compute @workgroup_size(64)
fn lanes(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let l = tid % 8u;
    let rl = tid / 8u;
    let row = (wid.x + wid.y * P.grid_x) * 8u + rl;
    let tok = P.tok0 + wid.z;
    let xb = tok * P.x_stride;
    var st = vec2<f32>(0.0);
    if (row < P.rows) {
        let rb = row * P.row_bytes;
        let nb = P.n_units / UNIT_STEPu;
        // UNROLL blocks' loads first, then their FMAs in block order: the
        // loads of a thread are independent of its chain, so they overlap.
        var k = 0u;
        for (; k + UNROLL <= nb; k += UNROLL) {
            var t: array<vec4<f32>, UNROLL>;
            for (var i = 0u; i < UNROLL; i++) {
                t[i] = LANE_TERM(rb, k + i, l, xb);
            }
            for (var i = 0u; i < UNROLL; i++) {
                st = apply(t[i], l, st);
            }
        }
        for (; k < nb; k++) {
            st = apply(LANE_TERM(rb, k, l, xb), l, st);
        }
    }
    lane_acc[tid] = st;
    workgroupBarrier();
    if (l == 0u && row < P.rows) {
        var a: array<vec2<f32>, 8>;
        for (var j = 0u; j < 8u; j++) {
            a[j] = lane_acc[rl * 8u + j];
        }
        store(tok, row, lanes_total(a));
    }
}

// ---- block orders: exact integer parts per block, folded by lane 0 -------
// A block's parts (one per lane, vec2: sums, mins) add up exactly in any
// order to isum; BLOCK_NSUB = 1: one fold step on isum, 4 (Q4_K gemm): one per
// 64 columns on the pair sums v_j = part_2j + part_2j+1. A step is the packet
// BLOCK_PACKET(rb, block, xb, v) = (a, b, c, d): st = (fma(a, b, st.x),
// fma(c, d, st.y)); the result is st.x - st.y.

// Q4_0, one FMA per 32 columns: lane part = its 4 columns' Σ (q - 8) x.
fn part_q4_0(rb: u32, u: u32, l: u32, xb: u32) -> vec2<i32> {
    let b = rb + u * 18u;
    let x = xq(xb, u, l);
    return vec2<i32>(dot4I8Packed(nib_lane(b + 2u, l), x) - 8 * bsum4(x), 0);
}

fn packet_q4_0(rb: u32, u: u32, xb: u32, v: vec2<i32>) -> vec4<f32> {
    return vec4<f32>(f32(v.x), rd_f16(rb + u * 18u) * xd(xb, u), 0.0, 0.0);
}

// Q4_K, lane l = unit l of the 256-block: (sc_l Σ q x, m_l Σ x).
fn part_q4_k(rb: u32, k: u32, l: u32, xb: u32) -> vec2<i32> {
    let b = rb + k * 144u;
    let sm = q4k_sm(b, l);
    var p = 0;
    for (var w = 0u; w < 8u; w++) {
        p += q4k_unit_lane(b, k, l, w, xb);
    }
    return vec2<i32>(sm.x * p, sm.y * bitcast<i32>(xs(xb, 8u * k + l)));
}

// Repacked Q4_K gemv (one step per block, v = isum) and gemm (one per 64
// columns, v = unit pair sums): sums times d_w d_x, mins times dmin_w d_x.
fn packet_q4_k(rb: u32, k: u32, xb: u32, v: vec2<i32>) -> vec4<f32> {
    let b = rb + k * 144u;
    let yd = xd(xb, 8u * k);
    // d and dmin: the block's first word.
    let dm = halves(rd_u32_aligned(b));
    return vec4<f32>(f32(v.x), dm.x * yd, f32(v.y), dm.y * yd);
}

// Q6_K tiled: lane parts as `q6k_lane`; fma(d_w · isum, d_x, acc).
fn part_q6_k(rb: u32, k: u32, l: u32, xb: u32) -> vec2<i32> {
    return vec2<i32>(q6k_lane(rb, k, l, xb), 0);
}

fn packet_q6_k(rb: u32, k: u32, xb: u32, v: vec2<i32>) -> vec4<f32> {
    return vec4<f32>(rd_f16(rb + k * 210u + 208u) * f32(v.x), xd(xb, 8u * k), 0.0, 0.0);
}

fn fold(t: vec4<f32>, st: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(fma_rn(t.x, t.y, st.x), fma_rn(t.z, t.w, st.y));
}

@compute @workgroup_size(64)
fn blocks(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let l = tid % 8u;
    let rl = tid / 8u;
    let row = (wid.x + wid.y * P.grid_x) * 8u + rl;
    let tok = P.tok0 + wid.z;
    let xb = tok * P.x_stride;
    let rb = row * P.row_bytes;
    let nb = P.n_units / UNIT_STEPu;
    var st = vec2<f32>(0.0);
    for (var c = 0u; c < nb; c += 8u) {
        for (var i = 0u; i < 8u; i++) {
            var v = vec2<i32>(0);
            if (row < P.rows && c + i < nb) {
                v = BLOCK_PART(rb, c + i, l, xb);
            }
            parts[(rl * 8u + i) * 8u + l] = v;
        }
        workgroupBarrier();
        if (l == 0u && row < P.rows) {
            for (var i = 0u; i < 8u && c + i < nb; i++) {
                let a = (rl * 8u + i) * 8u;
                if (BLOCK_NSUB == 1u) {
                    var isum = vec2<i32>(0);
                    for (var j = 0u; j < 8u; j++) {
                        isum += parts[a + j];
                    }
                    st = fold(BLOCK_PACKET(rb, c + i, xb, isum), st);
                } else {
                    for (var j = 0u; j < 4u; j++) {
                        let v = parts[a + 2u * j] + parts[a + 2u * j + 1u];
                        st = fold(BLOCK_PACKET(rb, c + i, xb, v), st);
                    }
                }
            }
        }
        workgroupBarrier();
    }
    if (l == 0u && row < P.rows) {
        store(tok, row, st.x - st.y);
    }
}

// ---- prompts: one invocation per output ----------------------------------
// Entries `tile_lanes` / `tile_blocks`: invocation (row, token) does the
// whole arithmetic of its output in the CPU's order — the eight lane chains
// (then `hsum_float_8`), or each block's parts summed and folded — with no
// workgroup memory or barriers. A workgroup is 16 rows x 16 tokens, so that
// neighbours share weight and activation loads through the caches; prompts
// have rows x tokens outputs, plenty to keep the GPU busy.

fn tile_pos(wid: vec3<u32>, tid: u32) -> vec2<u32> {
    return vec2<u32>((wid.x + wid.y * P.grid_x) * 16u + tid % 16u, wid.z * 16u + tid / 16u);
}

// The eight lane chains of one output, then `hsum_float_8`.
fn tile_lanes_value(rb: u32, xb: u32) -> f32 {
    let nb = P.n_units / UNIT_STEPu;
    var st: array<vec2<f32>, 8>;
    for (var l = 0u; l < 8u; l++) {
        st[l] = vec2<f32>(0.0);
    }
    for (var k = 0u; k < nb; k++) {
        for (var l = 0u; l < 8u; l++) {
            st[l] = apply(LANE_TERM(rb, k, l, xb), l, st[l]);
        }
    }
    return lanes_total(st);
}

// Each block's parts summed (exact integers) and folded.
fn tile_blocks_value(rb: u32, xb: u32) -> f32 {
    let nb = P.n_units / UNIT_STEPu;
    var st = vec2<f32>(0.0);
    for (var k = 0u; k < nb; k++) {
        var pr: array<vec2<i32>, 4>;
        for (var j = 0u; j < 4u; j++) {
            pr[j] = BLOCK_PART(rb, k, 2u * j, xb) + BLOCK_PART(rb, k, 2u * j + 1u, xb);
        }
        if (BLOCK_NSUB == 1u) {
            let isum = (pr[0] + pr[1]) + (pr[2] + pr[3]);
            st = fold(BLOCK_PACKET(rb, k, xb, isum), st);
        } else {
            for (var j = 0u; j < 4u; j++) {
                st = fold(BLOCK_PACKET(rb, k, xb, pr[j]), st);
            }
        }
    }
    return st.x - st.y;
}

fn tile_entry(wid: vec3<u32>, tid: u32, blocks: bool) {
    let rt = tile_pos(wid, tid);
    if (rt.x >= P.rows || rt.y >= P.n_tok) {
        return;
    }
    let tok = P.tok0 + rt.y;
    let rb = rt.x * P.row_bytes;
    let xb = tok * P.x_stride;
    if (blocks) {
        store(tok, rt.x, tile_blocks_value(rb, xb));
    } else {
        store(tok, rt.x, tile_lanes_value(rb, xb));
    }
}

@compute @workgroup_size(256)
fn tile_lanes(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    tile_entry(wid, tid, false);
}

@compute @workgroup_size(256)
fn tile_blocks(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    tile_entry(wid, tid, true);
}
