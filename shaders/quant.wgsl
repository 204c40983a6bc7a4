// quant.wgsl — byte access into `array<u32>` storage and per-type dequantisation
// of one 32-element "unit" of a row (shared by matvec.wgsl and embed.wgsl).
//
// The including shader must declare:
//   @group(0) @binding(0) var<storage, read> W: array<u32>;   // raw GGUF row bytes
//   var<private> dq: array<f32, 32>;                             // unit output
// Blocks are 18/20/22/24/34/84/110/136/144/176/210 bytes, mostly not 4-byte aligned:
// every field is read with byte-offset arithmetic. All f16 fields sit at even
// offsets, so a 16-bit read never straddles two words.

fn rd_u8(off: u32) -> u32 {
    return (W[off >> 2u] >> ((off & 3u) * 8u)) & 0xffu;
}

fn rd_u16(off: u32) -> u32 {
    // `off` is even: the halfword lies inside one word.
    return (W[off >> 2u] >> ((off & 2u) * 8u)) & 0xffffu;
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

// Both f16 of a word (low, high) as quant.wgsl's `f16_to_f32`.
fn f16_halves(w: u32) -> vec2<f32> {
    return vec2<f32>(f16_to_f32(w & 0xffffu), f16_to_f32(w >> 16u));
}

fn rd_f16(off: u32) -> f32 {
    return f16_to_f32(rd_u16(off));
}

// 32-bit little-endian read at an even (not necessarily 4-aligned) offset,
// without a branch (neighbouring invocations often differ in alignment).
// The second word is read even when unused (robust access keeps it in bounds).
fn rd_u32(off: u32) -> u32 {
    let i = off >> 2u;
    return join_u32(W[i], W[i + 1u], (off & 2u) * 8u);
}

// The 32 bits from bit sh (0 or 16) of the word pair (w0, w1).
fn join_u32(w0: u32, w1: u32, sh: u32) -> u32 {
    return (w0 >> sh) | ((w1 << 16u) << (16u - sh));
}

// Four consecutive `rd_u32` words at even offset `off`, from five loads.
fn rd_u32x4(off: u32) -> array<u32, 4> {
    let i = off >> 2u;
    let sh = (off & 2u) * 8u;
    let w = array<u32, 5>(W[i], W[i + 1u], W[i + 2u], W[i + 3u], W[i + 4u]);
    var r: array<u32, 4>;
    for (var n = 0u; n < 4u; n++) {
        r[n] = join_u32(w[n], w[n + 1u], sh);
    }
    return r;
}

// `rd_u32` with one load where `off` is a multiple of 4 (Q4_K's blocks of
// 144 bytes in rows starting at words: always; the test is uniform there).
fn rd_u32_aligned(off: u32) -> u32 {
    if ((off & 3u) == 0u) {
        return W[off >> 2u];
    }
    return rd_u32(off);
}

// Four consecutive bytes as a vec4 of their values (even offset).
fn rd_4b(off: u32) -> vec4<u32> {
    let v = rd_u32(off);
    return vec4<u32>(v & 0xffu, (v >> 8u) & 0xffu, (v >> 16u) & 0xffu, v >> 24u);
}

// ---- plain float rows: unit = 32 consecutive elements, tail zero-filled ----

fn deq_f32(row_base: u32, unit: u32, n_cols: u32) {
    for (var l = 0u; l < 32u; l++) {
        let e = unit * 32u + l;
        if (e < n_cols) {
            dq[l] = bitcast<f32>(W[(row_base >> 2u) + e]);
        } else {
            dq[l] = 0.0;
        }
    }
}

fn deq_f16(row_base: u32, unit: u32, n_cols: u32) {
    for (var l = 0u; l < 32u; l++) {
        let e = unit * 32u + l;
        if (e < n_cols) {
            dq[l] = rd_f16(row_base + 2u * e);
        } else {
            dq[l] = 0.0;
        }
    }
}

fn deq_bf16(row_base: u32, unit: u32, n_cols: u32) {
    for (var l = 0u; l < 32u; l++) {
        let e = unit * 32u + l;
        if (e < n_cols) {
            dq[l] = bitcast<f32>(rd_u16(row_base + 2u * e) << 16u);
        } else {
            dq[l] = 0.0;
        }
    }
}

// ---- 32-element blocks: unit == block ----

// Q4_0 (18 B): d:f16 @0, qs[16] @2; x[j] = (lo(qs[j]) - 8) d, x[j+16] = (hi(qs[j]) - 8) d.
fn deq_q4_0(row_base: u32, unit: u32, n_cols: u32) {
    let b = row_base + unit * 18u;
    let d = rd_f16(b);
    for (var j = 0u; j < 16u; j += 4u) {
        let q = rd_4b(b + 2u + j);
        for (var k = 0u; k < 4u; k++) {
            dq[j + k] = (f32(q[k] & 0xfu) - 8.0) * d;
            dq[j + k + 16u] = (f32(q[k] >> 4u) - 8.0) * d;
        }
    }
}

// Q4_1 (20 B): d @0, m @2, qs[16] @4; x = q d + m.
fn deq_q4_1(row_base: u32, unit: u32, n_cols: u32) {
    let b = row_base + unit * 20u;
    let d = rd_f16(b);
    let m = rd_f16(b + 2u);
    for (var j = 0u; j < 16u; j += 4u) {
        let q = rd_4b(b + 4u + j);
        for (var k = 0u; k < 4u; k++) {
            dq[j + k] = f32(q[k] & 0xfu) * d + m;
            dq[j + k + 16u] = f32(q[k] >> 4u) * d + m;
        }
    }
}

// Q5_0 (22 B): d @0, qh:u32 @2, qs[16] @6; bit j of qh is the 5th bit of x[j].
fn deq_q5_0(row_base: u32, unit: u32, n_cols: u32) {
    let b = row_base + unit * 22u;
    let d = rd_f16(b);
    let qh = rd_u32(b + 2u);
    for (var j = 0u; j < 16u; j += 4u) {
        let q = rd_4b(b + 6u + j);
        for (var k = 0u; k < 4u; k++) {
            let i = j + k;
            let h0 = ((qh >> i) << 4u) & 0x10u;
            let h1 = (qh >> (i + 12u)) & 0x10u;
            dq[i] = (f32((q[k] & 0xfu) | h0) - 16.0) * d;
            dq[i + 16u] = (f32((q[k] >> 4u) | h1) - 16.0) * d;
        }
    }
}

// Q5_1 (24 B): d @0, m @2, qh @4, qs[16] @8; x = q d + m.
fn deq_q5_1(row_base: u32, unit: u32, n_cols: u32) {
    let b = row_base + unit * 24u;
    let d = rd_f16(b);
    let m = rd_f16(b + 2u);
    let qh = W[(b + 4u) >> 2u];
    for (var j = 0u; j < 16u; j += 4u) {
        let q = W[(b + 8u + j) >> 2u];
        for (var k = 0u; k < 4u; k++) {
            let i = j + k;
            let byte = (q >> (8u * k)) & 0xffu;
            let h0 = ((qh >> i) << 4u) & 0x10u;
            let h1 = (qh >> (i + 12u)) & 0x10u;
            dq[i] = f32((byte & 0xfu) | h0) * d + m;
            dq[i + 16u] = f32((byte >> 4u) | h1) * d + m;
        }
    }
}

// Q8_0 (34 B): d @0, qs[32]:i8 @2.
fn deq_q8_0(row_base: u32, unit: u32, n_cols: u32) {
    let b = row_base + unit * 34u;
    let d = rd_f16(b);
    for (var j = 0u; j < 32u; j += 4u) {
        let v = rd_u32(b + 2u + j);
        for (var k = 0u; k < 4u; k++) {
            let s = bitcast<i32>(v << (24u - 8u * k)) >> 24u;
            dq[j + k] = f32(s) * d;
        }
    }
}

// ---- 256-element super-blocks: 8 units per block ----

// 6-bit scale and min number `j` (0..8) from the 12 packed bytes at `sc`.
fn scale_min_k4(sc: u32, j: u32) -> vec2<f32> {
    if (j < 4u) {
        return vec2<f32>(f32(rd_u8(sc + j) & 63u), f32(rd_u8(sc + j + 4u) & 63u));
    }
    let a = rd_u8(sc + j + 4u);
    let dd = (a & 0xfu) | ((rd_u8(sc + j - 4u) >> 6u) << 4u);
    let mm = (a >> 4u) | ((rd_u8(sc + j) >> 6u) << 4u);
    return vec2<f32>(f32(dd), f32(mm));
}

// Q4_K (144 B): d @0, dmin @2, scales[12] @4, qs[128] @16.
// Unit s: bytes qs[32*(s/2) ..][0..32], low nibble if s even else high.
fn deq_q4_k(row_base: u32, unit: u32, n_cols: u32) {
    let b = row_base + (unit / 8u) * 144u;
    let s = unit % 8u;
    let d = rd_f16(b);
    let dmin = rd_f16(b + 2u);
    let sm = scale_min_k4(b + 4u, s);
    let d1 = d * sm.x;
    let m1 = dmin * sm.y;
    let shift = (s & 1u) * 4u;
    let qb = b + 16u + 32u * (s / 2u);
    for (var l = 0u; l < 32u; l += 4u) {
        let v = W[(qb + l) >> 2u];
        for (var k = 0u; k < 4u; k++) {
            let q = (v >> (8u * k + shift)) & 0xfu;
            dq[l + k] = d1 * f32(q) - m1;
        }
    }
}

// Q5_K (176 B): d @0, dmin @2, scales[12] @4, qh[32] @16, qs[128] @48.
// Unit s: nibbles as Q4_K, fifth bit = bit s of qh[l].
fn deq_q5_k(row_base: u32, unit: u32, n_cols: u32) {
    let b = row_base + (unit / 8u) * 176u;
    let s = unit % 8u;
    let d = rd_f16(b);
    let dmin = rd_f16(b + 2u);
    let sm = scale_min_k4(b + 4u, s);
    let d1 = d * sm.x;
    let m1 = dmin * sm.y;
    let shift = (s & 1u) * 4u;
    let qb = b + 48u + 32u * (s / 2u);
    for (var l = 0u; l < 32u; l += 4u) {
        let v = W[(qb + l) >> 2u];
        let h = W[(b + 16u + l) >> 2u];
        for (var k = 0u; k < 4u; k++) {
            let q = (v >> (8u * k + shift)) & 0xfu;
            let hb = (h >> (8u * k + s)) & 1u;
            dq[l + k] = d1 * f32(q + 16u * hb) - m1;
        }
    }
}

// Q6_K (210 B): ql[128] @0, qh[64] @128, scales[16]:i8 @192, d:f16 @208.
// Unit s: half h = s/4, quarter r = s%4; ql byte h*64 + l + 32*(r&1), nibble
// low if r<2; 2 high bits at qh[h*32 + l] >> 2r; scale sc[h*8 + l/16 + 2r].
fn deq_q6_k(row_base: u32, unit: u32, n_cols: u32) {
    let b = row_base + (unit / 8u) * 210u;
    let s = unit % 8u;
    let h = s / 4u;
    let r = s % 4u;
    let d = rd_f16(b + 208u);
    let qlb = b + h * 64u + 32u * (r & 1u);
    let qhb = b + 128u + h * 32u;
    let nshift = select(0u, 4u, r >= 2u);
    let sc0 = f32(bitcast<i32>(rd_u8(b + 192u + h * 8u + 2u * r) << 24u) >> 24u) * d;
    let sc1 = f32(bitcast<i32>(rd_u8(b + 192u + h * 8u + 1u + 2u * r) << 24u) >> 24u) * d;
    for (var l = 0u; l < 32u; l += 2u) {
        let lo = rd_u16(qlb + l);
        let hi = rd_u16(qhb + l);
        for (var k = 0u; k < 2u; k++) {
            let ql = (lo >> (8u * k + nshift)) & 0xfu;
            let qh = (hi >> (8u * k + 2u * r)) & 3u;
            let q = f32(i32(ql | (qh << 4u)) - 32);
            dq[l + k] = select(sc0, sc1, l >= 16u) * q;
        }
    }
}

// Q2_K (84 B): scales[16] @0 (low nibble scale, high nibble min), qs[64] @16,
// d @80, dmin @82. Unit s: half h = s/4, j = s%4; 2-bit field j of
// qs[h*32 + l]; scales[h*8 + 2j] for l < 16, [h*8 + 2j + 1] after.
fn deq_q2_k(row_base: u32, unit: u32, n_cols: u32) {
    let b = row_base + (unit / 8u) * 84u;
    let s = unit % 8u;
    let h = s / 4u;
    let j = s % 4u;
    let d = rd_f16(b + 80u);
    let dmin = rd_f16(b + 82u);
    let sc0 = rd_u8(b + h * 8u + 2u * j);
    let sc1 = rd_u8(b + h * 8u + 2u * j + 1u);
    let qb = b + 16u + h * 32u;
    for (var l = 0u; l < 32u; l += 4u) {
        let v = W[(qb + l) >> 2u];
        let sc = select(sc0, sc1, l >= 16u);
        let dl = d * f32(sc & 0xfu);
        let ml = dmin * f32(sc >> 4u);
        for (var k = 0u; k < 4u; k++) {
            dq[l + k] = dl * f32((v >> (8u * k + 2u * j)) & 3u) - ml;
        }
    }
}

// 6-bit signed scale k (0..16) of Q3_K from the 12 packed bytes at `sc`.
fn q3k_scale(sc: u32, k: u32) -> f32 {
    var low: u32;
    if (k < 8u) {
        low = rd_u8(sc + k) & 0xfu;
    } else {
        low = rd_u8(sc + k - 8u) >> 4u;
    }
    let high = (rd_u8(sc + 8u + k % 4u) >> (2u * (k / 4u))) & 3u;
    return f32(i32(low | (high << 4u)) - 32);
}

// Q3_K (110 B): hmask[32] @0, qs[64] @32, scales[12] @96, d @108.
// Unit s: half h = s/4, j = s%4; 2-bit field j of qs[h*32 + l], minus 4
// unless bit (4h + j) of hmask[l] is set; scale h*8 + 2j (+1 for l >= 16).
fn deq_q3_k(row_base: u32, unit: u32, n_cols: u32) {
    let b = row_base + (unit / 8u) * 110u;
    let s = unit % 8u;
    let h = s / 4u;
    let j = s % 4u;
    let d = rd_f16(b + 108u);
    let d0 = d * q3k_scale(b + 96u, h * 8u + 2u * j);
    let d1 = d * q3k_scale(b + 96u, h * 8u + 2u * j + 1u);
    let bit = 4u * h + j;
    for (var l = 0u; l < 32u; l += 2u) {
        let q = rd_u16(b + 32u + h * 32u + l);
        let m = rd_u16(b + l);
        let dl = select(d0, d1, l >= 16u);
        for (var k = 0u; k < 2u; k++) {
            let v = i32((q >> (8u * k + 2u * j)) & 3u);
            let hb = (m >> (8u * k + bit)) & 1u;
            dq[l + k] = dl * f32(v - select(4, 0, hb == 1u));
        }
    }
}

// IQ4_NL/IQ4_XS non-linear 4-bit grid.
fn kvalue_iq4(i: u32) -> f32 {
    var kv = array<f32, 16>(-127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0,
                            1.0, 13.0, 25.0, 38.0, 53.0, 69.0, 89.0, 113.0);
    return kv[i];
}

// IQ4_NL (18 B): d @0, qs[16] @2; x[j] = d kv[lo(qs[j])], x[j+16] = d kv[hi(qs[j])].
fn deq_iq4_nl(row_base: u32, unit: u32, n_cols: u32) {
    let b = row_base + unit * 18u;
    let d = rd_f16(b);
    for (var j = 0u; j < 16u; j += 4u) {
        let q = rd_4b(b + 2u + j);
        for (var k = 0u; k < 4u; k++) {
            dq[j + k] = d * kvalue_iq4(q[k] & 0xfu);
            dq[j + k + 16u] = d * kvalue_iq4(q[k] >> 4u);
        }
    }
}

// IQ4_XS (136 B): d @0, scales_h:u16 @2, scales_l[4] @4, qs[128] @8.
// Unit s: 6-bit scale (lo nibble s of scales_l, 2 bits s of scales_h) - 32,
// then as IQ4_NL over qs[16 s ..].
fn deq_iq4_xs(row_base: u32, unit: u32, n_cols: u32) {
    let b = row_base + (unit / 8u) * 136u;
    let s = unit % 8u;
    let d = rd_f16(b);
    let sh = rd_u16(b + 2u);
    let lo = (rd_u8(b + 4u + s / 2u) >> (4u * (s % 2u))) & 0xfu;
    let hi = (sh >> (2u * s)) & 3u;
    let dl = d * f32(i32(lo | (hi << 4u)) - 32);
    for (var j = 0u; j < 16u; j += 4u) {
        let v = W[(b + 8u + 16u * s + j) >> 2u];
        for (var k = 0u; k < 4u; k++) {
            let byte = (v >> (8u * k)) & 0xffu;
            dq[j + k] = dl * kvalue_iq4(byte & 0xfu);
            dq[j + k + 16u] = dl * kvalue_iq4(byte >> 4u);
        }
    }
}
