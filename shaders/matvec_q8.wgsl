// matvec_q8.wgsl — integer matrix-vector product, y = W x, with x quantised
// to 8 bits (act_quant.wgsl `pack_q8`): packed 4x8-bit dot products
// (dot4I8Packed: one instruction on GPUs with integer dot products, e.g.
// NVIDIA's dp4a; naga writes a polyfill elsewhere) on the weights' own quants.
//
// W: [n_rows, n_cols] in its GGUF block format (one part of a possibly split
// tensor), XQ: x as n_cols/4 words of packed int8 quants, then per 32-element
// block two words (d, s) in the rounding mode of the weight type (q8.wgsl),
// y: [n_rows] f32 (overwritten, or added to when `accumulate`). n_cols is a
// multiple of 32 (the host falls back to matvec.wgsl otherwise).
// The unit dot products take `xb`, the vec4 index of x's first word in XQ
// (0 here; matmul_q8.wgsl, appended instead of a reduce file, passes each
// token's row).
// A workgroup of WG invocations takes WG / TPR rows; the TPR invocations of a
// row take its 32-element units t, t + TPR, ... (neighbouring invocations
// read neighbouring blocks). `QDOT` (the type's unit dot product) and
// `TPR_V` are substituted by the host; the entry point comes from
// matvec_q8_reduce_sg.wgsl or matvec_q8_reduce_wg.wgsl.
// Arithmetic: per unit, an exact integer sum of weight quant x activation
// quant (with the offset or min terms in integers where the type has them),
// then the scales in f32: per 32-element block the same value as the CPU's
// quantised dot products (Q8_0 / Q8_1 / Q8_K activations), up to the order
// in which the blocks are summed.

struct Params {
    n_cols: u32,     // elements per row (a multiple of 32)
    n_units: u32,    // n_cols / 32
    row_bytes: u32,  // bytes per row in W
    rows: u32,       // rows in this part
    row_offset: u32, // index of this part's first row in y
    grid_x: u32,     // workgroups along x in the dispatch (2-D grid)
    accumulate: u32, // 1: y += W x, 0: y = W x
    // matmul_q8.wgsl only:
    n_tok: u32,      // tokens (rows of X and Y)
    y_stride: u32,   // elements per token row of Y (the whole matrix's rows)
    x_stride: u32,   // vec4 words per token row of XQ (q8_stride / 4)
    // matvec_q8_multi.wgsl only: matrices 0, 1 (2 takes the remaining rows)
    // in one buffer at byte offsets off0, off1, off2.
    rows0: u32,
    rows1: u32,
    off0: u32,
    off1: u32,
    off2: u32,
}

@group(0) @binding(0) var<storage, read> W: array<u32>;
// XQ read as vectors (16-byte loads; buffers are padded to 16 bytes).
@group(0) @binding(1) var<storage, read> XQ: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
@group(0) @binding(3) var<uniform> P: Params;

const WG: u32 = 64u;
const TPR: u32 = TPR_Vu;
const RPW: u32 = WG / TPR;
// Required by quant.wgsl's dequantisers (unused here).
var<private> dq: array<f32, 32>;

const LO4: u32 = 0x0f0f0f0fu;

fn store_row(row: u32, v: f32) {
    let i = P.row_offset + row;
    if (P.accumulate != 0u) {
        Y[i] = Y[i] + v;
    } else {
        Y[i] = v;
    }
}

// Words 0..4 (h = 0) or 4..8 (h = 1) of unit u's activation quants.
fn xq4(xb: u32, u: u32, h: u32) -> vec4<u32> {
    return XQ[xb + 2u * u + h];
}

// Word k (0..8) of unit u's activation quants.
fn xq(xb: u32, u: u32, k: u32) -> u32 {
    return XQ[xb + 2u * u + k / 4u][k % 4u];
}

// Unit u's activation words (d, s).
fn xw(xb: u32, u: u32) -> vec2<u32> {
    let v = XQ[xb + P.n_units * 2u + u / 2u];
    return select(v.xy, v.zw, (u & 1u) == 1u);
}

// Unit u's activation scale d.
fn xd(xb: u32, u: u32) -> f32 {
    return bitcast<f32>(xw(xb, u).x);
}

// Σ of four packed dot products.
fn dot4x4(a: vec4<u32>, b: vec4<u32>) -> i32 {
    return dot4I8Packed(a.x, b.x) + dot4I8Packed(a.y, b.y) + dot4I8Packed(a.z, b.z)
        + dot4I8Packed(a.w, b.w);
}

// Σ over the unit's low (or high, after a shift by 4) nibbles in words
// q.xyzw (elements 0..15 low, 16..31 high for 32-element blocks).
fn nib_dot(q: vec4<u32>, xb: u32, u: u32) -> i32 {
    let lo = q & vec4<u32>(LO4);
    let hi = (q >> vec4<u32>(4u)) & vec4<u32>(LO4);
    return dot4x4(lo, xq4(xb, u, 0u)) + dot4x4(hi, xq4(xb, u, 1u));
}

// Q4_0 (18 B: d, qs[16]) · Q8_0: d dx Σ (q - 8) qx = d dx (Σ q qx - 8 Σ qx).
fn q8dot_q4_0(rb: u32, u: u32, xb: u32) -> f32 {
    let b = rb + u * 18u;
    let q = vec4<u32>(rd_u32(b + 2u), rd_u32(b + 6u), rd_u32(b + 10u), rd_u32(b + 14u));
    let w = xw(xb, u);
    return rd_f16(b) * bitcast<f32>(w.x) * f32(nib_dot(q, xb, u) - 8 * bitcast<i32>(w.y));
}

// Q4_1 (20 B: d, m, qs[16]; 4-byte aligned) · Q8_1: d dx Σ q qx + m s.
fn q8dot_q4_1(rb: u32, u: u32, xb: u32) -> f32 {
    let i = (rb + u * 20u) >> 2u;
    let dm = W[i];
    let q = vec4<u32>(W[i + 1u], W[i + 2u], W[i + 3u], W[i + 4u]);
    let w = bitcast<vec2<f32>>(xw(xb, u));
    return f16_to_f32(dm & 0xffffu) * w.x * f32(nib_dot(q, xb, u)) + f16_to_f32(dm >> 16u) * w.y;
}

// Four fifth bits (t & 0xf) moved to bit 4 of four bytes.
fn spread4(t: u32) -> u32 {
    return ((t & 1u) << 4u) | ((t & 2u) << 11u) | ((t & 4u) << 18u) | ((t & 8u) << 25u);
}

// Q5_0 (22 B: d, qh:u32, qs[16]) · Q8_0: d dx (Σ q qx - 16 Σ qx).
fn q8dot_q5_0(rb: u32, u: u32, xb: u32) -> f32 {
    let b = rb + u * 22u;
    let qh = rd_u32(b + 2u);
    var s = 0;
    for (var k = 0u; k < 4u; k++) {
        let q = rd_u32(b + 6u + 4u * k);
        let lo = (q & LO4) | spread4(qh >> (4u * k));
        let hi = ((q >> 4u) & LO4) | spread4(qh >> (16u + 4u * k));
        s += dot4I8Packed(lo, xq(xb, u, k)) + dot4I8Packed(hi, xq(xb, u, k + 4u));
    }
    let w = xw(xb, u);
    return rd_f16(b) * bitcast<f32>(w.x) * f32(s - 16 * bitcast<i32>(w.y));
}

// Q8_0 (34 B: d, qs[32] signed) · Q8_0: d dx Σ q qx.
fn q8dot_q8_0(rb: u32, u: u32, xb: u32) -> f32 {
    let b = rb + u * 34u;
    let w0 = vec4<u32>(rd_u32(b + 2u), rd_u32(b + 6u), rd_u32(b + 10u), rd_u32(b + 14u));
    let w1 = vec4<u32>(rd_u32(b + 18u), rd_u32(b + 22u), rd_u32(b + 26u), rd_u32(b + 30u));
    let s = dot4x4(w0, xq4(xb, u, 0u)) + dot4x4(w1, xq4(xb, u, 1u));
    return rd_f16(b) * xd(xb, u) * f32(s);
}

// Q4_K (144 B: d, dmin, scales[12], qs[128]; 4-byte aligned) · Q8_K, unit
// s = u % 8: nibbles (low for even s) of qs[32 (s/2) ..];
// d dx (sc Σ q qx) - dmin dx (m Σ qx).
fn q8dot_q4_k(rb: u32, u: u32, xb: u32) -> f32 {
    let b = rb + (u / 8u) * 144u;
    let s = u % 8u;
    let sm = scale_min_k4(b + 4u, s);
    let dd = W[b >> 2u];
    let i = ((b + 16u) >> 2u) + 8u * (s / 2u);
    let sh = vec4<u32>((s & 1u) * 4u);
    let q0 = (vec4<u32>(W[i], W[i + 1u], W[i + 2u], W[i + 3u]) >> sh) & vec4<u32>(LO4);
    let q1 = (vec4<u32>(W[i + 4u], W[i + 5u], W[i + 6u], W[i + 7u]) >> sh) & vec4<u32>(LO4);
    let p = dot4x4(q0, xq4(xb, u, 0u)) + dot4x4(q1, xq4(xb, u, 1u));
    let w = xw(xb, u);
    let dx = bitcast<f32>(w.x);
    return f16_to_f32(dd & 0xffffu) * dx * (sm.x * f32(p))
        - f16_to_f32(dd >> 16u) * dx * (sm.y * f32(bitcast<i32>(w.y)));
}

// Q6_K (210 B: ql[128], qh[64], scales[16] i8, d), unit s = u % 8 (half
// h = s/4, quarter r = s%4): 6-bit q = nibble of ql | 2 bits of qh, q - 32
// as signed bytes (bit 5 flipped, then sign-extended); one scale per 16
// elements: d dx Σ sc (q - 32) qx.
fn q8dot_q6_k(rb: u32, u: u32, xb: u32) -> f32 {
    let b = rb + (u / 8u) * 210u;
    let s = u % 8u;
    let h = s / 4u;
    let r = s % 4u;
    let ql = b + h * 64u + 32u * (r & 1u);
    let qh = b + 128u + h * 32u;
    let nsh = select(0u, 4u, r >= 2u);
    let hsh = 2u * r;
    var sv: array<vec4<u32>, 2>;
    for (var h4 = 0u; h4 < 2u; h4++) {
        let o = 16u * h4;
        let l = vec4<u32>(rd_u32(ql + o), rd_u32(ql + o + 4u), rd_u32(ql + o + 8u), rd_u32(ql + o + 12u));
        let hb = vec4<u32>(rd_u32(qh + o), rd_u32(qh + o + 4u), rd_u32(qh + o + 8u), rd_u32(qh + o + 12u));
        let v = ((l >> vec4<u32>(nsh)) & vec4<u32>(LO4))
            | (((hb >> vec4<u32>(hsh)) & vec4<u32>(0x03030303u)) << vec4<u32>(4u));
        let f = v ^ vec4<u32>(0x20202020u);
        let m = f & vec4<u32>(0x20202020u);
        sv[h4] = f | (m << vec4<u32>(1u)) | (m << vec4<u32>(2u));
    }
    let p = vec2<i32>(dot4x4(sv[0], xq4(xb, u, 0u)), dot4x4(sv[1], xq4(xb, u, 1u)));
    let sc = rd_u16(b + 192u + h * 8u + 2u * r);
    let sc0 = bitcast<i32>(sc << 24u) >> 24;
    let sc1 = bitcast<i32>(sc << 16u) >> 24;
    return rd_f16(b + 208u) * xd(xb, u) * f32(sc0 * p.x + sc1 * p.y);
}

// Partial dot product of the row at byte `rb` of W with x over units t,
// t + TPR, ...; two units per step, independent, so that their loads are in
// flight together.
fn row_dot_q8(rb: u32, t: u32) -> f32 {
    var acc = vec2<f32>(0.0);
    var u = t;
    for (; u + TPR < P.n_units; u += 2u * TPR) {
        acc += vec2<f32>(QDOT(rb, u, 0u), QDOT(rb, u + TPR, 0u));
    }
    if (u < P.n_units) {
        acc.x += QDOT(rb, u, 0u);
    }
    return acc.x + acc.y;
}
