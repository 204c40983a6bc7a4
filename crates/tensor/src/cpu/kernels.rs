//! Dot-product kernels on raw block bytes: `w` holds weight blocks of one
//! type, `a` the activation row quantized to that type's `vec_dot_type`
//! (ggml's pairing), `n` is the element count (a multiple of the block size).
//!
//! The block arithmetic is exact integer math, as in `zeta_quant::vec_dot`;
//! the *float* accumulation reproduces ggml's x86 AVX2 kernels
//! (`ggml_vec_dot_*` in `ggml-cpu/arch/x86/quants.c`): eight f32 lanes, lane
//! `l` holding the integer partial sum of elements `4l..4l+3` of each 32-wide
//! group, accumulated with fused multiply-adds and reduced with
//! `hsum_float_8`. Matching that order makes results bit-identical to
//! llama.cpp's CPU backend (checked by `tests/kernels.rs` against golden
//! outputs of the real ggml kernels), which matters because tiny rounding
//! differences grow chaotically through a deep network.
//!
//! On x86-64 CPUs with AVX2+FMA the same code is compiled a second time with
//! those features enabled (selected at runtime); elsewhere `mul_add` falls
//! back to the (slower, equally exact) software FMA.

// Lane-indexed loops mirror the SIMD lane layout being reproduced.
#![allow(clippy::needless_range_loop)]

use half::{bf16, f16};
use zeta_gguf::GgmlType;

/// A dot-product routine: `(weight row bytes, activation row bytes, n) -> f32`.
pub type DotFn = fn(&[u8], &[u8], usize) -> f32;

#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

#[inline(always)]
fn f32_at(b: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// ggml's `hsum_float_8`: `((x0+x4)+(x2+x6)) + ((x1+x5)+(x3+x7))`.
#[inline(always)]
pub fn hsum8(x: &[f32; 8]) -> f32 {
    let r = [x[0] + x[4], x[1] + x[5], x[2] + x[6], x[3] + x[7]];
    (r[0] + r[2]) + (r[1] + r[3])
}

/// GCC's `_mm512_reduce_add_ps` order for 16 lanes.
#[inline(always)]
pub fn hsum16(x: &[f32; 16]) -> f32 {
    let mut t3 = [0f32; 8];
    for i in 0..8 {
        t3[i] = x[i + 8] + x[i];
    }
    let t6 = [t3[4] + t3[0], t3[5] + t3[1], t3[6] + t3[2], t3[7] + t3[3]];
    (t6[0] + t6[2]) + (t6[1] + t6[3])
}

/// Eight lane sums of 32 signed×signed byte products (lane `l` = elements `4l..4l+3`).
#[inline(always)]
fn lanes_ii(x: &[i8; 32], y: &[u8]) -> [i32; 8] {
    let mut out = [0i32; 8];
    for l in 0..8 {
        let mut s = 0i32;
        for m in 0..4 {
            s += i32::from(x[4 * l + m]) * i32::from(y[4 * l + m] as i8);
        }
        out[l] = s;
    }
    out
}

#[inline(always)]
fn fma_lanes(acc: &mut [f32; 8], d: f32, lanes: &[i32; 8]) {
    for l in 0..8 {
        acc[l] = d.mul_add(lanes[l] as f32, acc[l]);
    }
}

/// Expands 16 nibble bytes to 32 values (low nibbles first), as `bytes_from_nibbles_32`.
#[inline(always)]
fn nibbles(qs: &[u8]) -> [i8; 32] {
    let mut q = [0i8; 32];
    for j in 0..16 {
        q[j] = (qs[j] & 0x0F) as i8;
        q[j + 16] = (qs[j] >> 4) as i8;
    }
    q
}

/// Adds the fifth bit of Q5 blocks (`qh` little-endian u32, bit j = element j).
#[inline(always)]
fn fifth_bits(q: &mut [i8; 32], qh: u32, offset: i8) {
    for (j, v) in q.iter_mut().enumerate() {
        *v = (*v | ((((qh >> j) & 1) as i8) << 4)) - offset;
    }
}

#[inline(always)]
fn body_f32(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut acc = [0f32; 8];
    let mut i = 0;
    while i + 8 <= n {
        for l in 0..8 {
            acc[l] = f32_at(w, (i + l) * 4).mul_add(f32_at(a, (i + l) * 4), acc[l]);
        }
        i += 8;
    }
    let mut s = 0f32;
    while i < n {
        s += f32_at(w, i * 4) * f32_at(a, i * 4);
        i += 1;
    }
    hsum8(&acc) + s
}

#[inline(always)]
fn body_f16(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut acc = [0f32; 8];
    let mut i = 0;
    while i + 8 <= n {
        for l in 0..8 {
            acc[l] = f16_at(w, (i + l) * 2).mul_add(f16_at(a, (i + l) * 2), acc[l]);
        }
        i += 8;
    }
    let mut s = 0f32;
    while i < n {
        s += f16_at(w, i * 2) * f16_at(a, i * 2);
        i += 1;
    }
    hsum8(&acc) + s
}

#[inline(always)]
fn body_bf16(w: &[u8], a: &[u8], n: usize) -> f32 {
    let at = |b: &[u8], i: usize| bf16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32();
    let mut acc = [0f32; 8];
    let mut i = 0;
    while i + 8 <= n {
        for l in 0..8 {
            acc[l] = at(w, (i + l) * 2).mul_add(at(a, (i + l) * 2), acc[l]);
        }
        i += 8;
    }
    let mut s = 0f32;
    while i < n {
        s += at(w, i * 2) * at(a, i * 2);
        i += 1;
    }
    hsum8(&acc) + s
}

/// F32/F16 dot products in the orders of ggml's AVX-512 float paths:
/// `BATCH` = llamafile tinyBLAS (16 lanes, `n % 16 == 0`), otherwise
/// `ggml_vec_dot_f32/f16` (4×16 lanes over 64-element steps, tail in f64).
#[inline(always)]
fn body_float16<const F16: bool, const BATCH: bool>(w: &[u8], a: &[u8], n: usize) -> f32 {
    let at = |b: &[u8], i: usize| {
        if F16 {
            f16_at(b, 2 * i)
        } else {
            f32_at(b, 4 * i)
        }
    };
    if BATCH && !n.is_multiple_of(16) {
        // tinyBLAS declines; ggml falls back to vec_dot.
        return body_float16::<F16, false>(w, a, n);
    }
    if BATCH {
        let mut acc = [0f32; 16];
        let mut i = 0;
        while i + 16 <= n {
            for m in 0..16 {
                acc[m] = at(w, i + m).mul_add(at(a, i + m), acc[m]);
            }
            i += 16;
        }
        hsum16(&acc)
    } else {
        let np = n & !63;
        let mut acc = [[0f32; 16]; 4];
        let mut i = 0;
        while i < np {
            for (j, accj) in acc.iter_mut().enumerate() {
                for m in 0..16 {
                    let k = i + 16 * j + m;
                    accj[m] = at(w, k).mul_add(at(a, k), accj[m]);
                }
            }
            i += 64;
        }
        let mut x0 = [0f32; 16];
        for m in 0..16 {
            x0[m] = (acc[0][m] + acc[2][m]) + (acc[1][m] + acc[3][m]);
        }
        let mut sum = f64::from(hsum16(&x0));
        for k in np..n {
            sum += f64::from(at(w, k) * at(a, k));
        }
        sum as f32
    }
}

#[inline(always)]
fn body_f32_batch(w: &[u8], a: &[u8], n: usize) -> f32 {
    body_float16::<false, true>(w, a, n)
}

#[inline(always)]
fn body_f32_single(w: &[u8], a: &[u8], n: usize) -> f32 {
    body_float16::<false, false>(w, a, n)
}

#[inline(always)]
fn body_f16_batch(w: &[u8], a: &[u8], n: usize) -> f32 {
    body_float16::<true, true>(w, a, n)
}

#[inline(always)]
fn body_f16_single(w: &[u8], a: &[u8], n: usize) -> f32 {
    body_float16::<true, false>(w, a, n)
}

/// Q8_0 (34 bytes: f16 d, 32 × i8) · Q8_0.
#[inline(always)]
fn body_q8_0(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut acc = [0f32; 8];
    for (bw, ba) in w.chunks_exact(34).zip(a.chunks_exact(34)).take(n / 32) {
        let mut q = [0i8; 32];
        for (d, s) in q.iter_mut().zip(&bw[2..34]) {
            *d = *s as i8;
        }
        fma_lanes(
            &mut acc,
            f16_at(bw, 0) * f16_at(ba, 0),
            &lanes_ii(&q, &ba[2..34]),
        );
    }
    hsum8(&acc)
}

/// Q4_0 (18 bytes: f16 d, 16 nibble bytes; value = q - 8) · Q8_0.
#[inline(always)]
fn body_q4_0(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut acc = [0f32; 8];
    for (bw, ba) in w.chunks_exact(18).zip(a.chunks_exact(34)).take(n / 32) {
        let mut q = nibbles(&bw[2..18]);
        for v in &mut q {
            *v -= 8;
        }
        fma_lanes(
            &mut acc,
            f16_at(bw, 0) * f16_at(ba, 0),
            &lanes_ii(&q, &ba[2..34]),
        );
    }
    hsum8(&acc)
}

/// Q4_1 (20 bytes: f16 d, f16 m, 16 nibble bytes) · Q8_1 (36 bytes: f16 d, f16 s, 32 × i8).
#[inline(always)]
fn body_q4_1(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut acc = [0f32; 8];
    let mut summs = 0f32;
    for (bw, ba) in w.chunks_exact(20).zip(a.chunks_exact(36)).take(n / 32) {
        summs = f16_at(bw, 2).mul_add(f16_at(ba, 2), summs);
        let q = nibbles(&bw[4..20]);
        fma_lanes(
            &mut acc,
            f16_at(bw, 0) * f16_at(ba, 0),
            &lanes_ii(&q, &ba[4..36]),
        );
    }
    hsum8(&acc) + summs
}

/// Q5_0 (22 bytes: f16 d, u32 qh, 16 nibble bytes; value = q - 16) · Q8_0.
#[inline(always)]
fn body_q5_0(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut acc = [0f32; 8];
    for (bw, ba) in w.chunks_exact(22).zip(a.chunks_exact(34)).take(n / 32) {
        let qh = u32::from_le_bytes([bw[2], bw[3], bw[4], bw[5]]);
        let mut q = nibbles(&bw[6..22]);
        fifth_bits(&mut q, qh, 16);
        fma_lanes(
            &mut acc,
            f16_at(bw, 0) * f16_at(ba, 0),
            &lanes_ii(&q, &ba[2..34]),
        );
    }
    hsum8(&acc)
}

/// Q5_1 (24 bytes: f16 d, f16 m, u32 qh, 16 nibble bytes) · Q8_1.
#[inline(always)]
fn body_q5_1(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut acc = [0f32; 8];
    let mut summs = 0f32;
    for (bw, ba) in w.chunks_exact(24).zip(a.chunks_exact(36)).take(n / 32) {
        summs = f16_at(bw, 2).mul_add(f16_at(ba, 2), summs);
        let qh = u32::from_le_bytes([bw[4], bw[5], bw[6], bw[7]]);
        let mut q = nibbles(&bw[8..24]);
        fifth_bits(&mut q, qh, 0);
        fma_lanes(
            &mut acc,
            f16_at(bw, 0) * f16_at(ba, 0),
            &lanes_ii(&q, &ba[4..36]),
        );
    }
    hsum8(&acc) + summs
}

/// Q8_K block: f32 d (0..4), 256 × i8 (4..260), 16 × i16 bsums (260..292).
const Q8K_BYTES: usize = 292;

#[inline(always)]
fn q8k_bsum(ba: &[u8], j: usize) -> i32 {
    i32::from(i16::from_le_bytes([ba[260 + 2 * j], ba[261 + 2 * j]]))
}

/// The k-quant 6-bit scale and min of sub-block `j` (`get_scale_min_k4`).
#[inline(always)]
pub(super) fn scale_min_k4(j: usize, q: &[u8]) -> (i32, i32) {
    let (d, m) = if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    };
    (i32::from(d), i32::from(m))
}

/// Q4_K / Q5_K · Q8_K, in the lane order of ggml's AVX2 `ggml_vec_dot_q4_K_q8_K`.
/// `hbits` (Q5_K) holds the 32 high-bit bytes.
#[inline(always)]
fn body_qk_4_5(
    bw: &[u8],
    qs: &[u8],
    hbits: Option<&[u8]>,
    ba: &[u8],
    acc: &mut [f32; 8],
    acc_m: &mut [f32; 4],
) {
    let yd = f32_at(ba, 0);
    let d = yd * f16_at(bw, 0);
    let dmin = -yd * f16_at(bw, 2);
    let scales = &bw[4..16];
    let mut sc = [0i32; 8];
    let mut mn = [0i32; 8];
    for j in 0..8 {
        (sc[j], mn[j]) = scale_min_k4(j, scales);
    }
    for k in 0..4 {
        let q8s0 = q8k_bsum(ba, 4 * k) + q8k_bsum(ba, 4 * k + 1);
        let q8s1 = q8k_bsum(ba, 4 * k + 2) + q8k_bsum(ba, 4 * k + 3);
        let prod = mn[2 * k] * q8s0 + mn[2 * k + 1] * q8s1;
        acc_m[k] = dmin.mul_add(prod as f32, acc_m[k]);
    }
    let qy = &ba[4..260];
    let mut sumi = [0i32; 8];
    for j in 0..4 {
        let chunk = &qs[j * 32..j * 32 + 32];
        let mut lo = [0i8; 32];
        let mut hi = [0i8; 32];
        for l in 0..32 {
            lo[l] = (chunk[l] & 0xF) as i8;
            hi[l] = (chunk[l] >> 4) as i8;
        }
        if let Some(h) = hbits {
            let (ml, mh) = (1u8 << (2 * j), 1u8 << (2 * j + 1));
            for l in 0..32 {
                lo[l] += if h[l] & ml != 0 { 16 } else { 0 };
                hi[l] += if h[l] & mh != 0 { 16 } else { 0 };
            }
        }
        let pl = lanes_ii(&lo, &qy[j * 64..j * 64 + 32]);
        let ph = lanes_ii(&hi, &qy[j * 64 + 32..j * 64 + 64]);
        for l in 0..8 {
            sumi[l] += sc[2 * j] * pl[l] + sc[2 * j + 1] * ph[l];
        }
    }
    fma_lanes(acc, d, &sumi);
}

#[inline(always)]
fn finish_qk(acc: &[f32; 8], acc_m: &[f32; 4]) -> f32 {
    let m = (acc_m[0] + acc_m[2]) + (acc_m[1] + acc_m[3]);
    hsum8(acc) + m
}

/// Q4_K (144 bytes: f16 d, f16 dmin, 12 scale bytes, 128 nibble bytes) · Q8_K.
#[inline(always)]
fn body_q4_k(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut acc = [0f32; 8];
    let mut acc_m = [0f32; 4];
    for (bw, ba) in w
        .chunks_exact(144)
        .zip(a.chunks_exact(Q8K_BYTES))
        .take(n / 256)
    {
        body_qk_4_5(bw, &bw[16..144], None, ba, &mut acc, &mut acc_m);
    }
    finish_qk(&acc, &acc_m)
}

/// Q4_K · Q8_K in the order of ggml's x86 *repacked* kernels
/// (`ggml_gemv/gemm_q4_K_8x8_q8_K`), which llama.cpp uses for Q4_K matrices
/// whose row count is a multiple of 8 on AVX2 CPUs. The exact integer sums
/// `Σ sc·q·y` and `Σ m·bsum` are scaled into two accumulators (subtracted at
/// the end) with one FMA per block in the gemv order (`PER_SB = false`,
/// single rows) or one FMA per 64-element sub-block pair in the gemm order
/// (`PER_SB = true`, groups of 4 activation rows).
#[inline(always)]
fn body_q4_k_repacked<const PER_SB: bool>(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut acc = 0f32;
    let mut acc_min = 0f32;
    for (bw, ba) in w
        .chunks_exact(144)
        .zip(a.chunks_exact(Q8K_BYTES))
        .take(n / 256)
    {
        let yd = f32_at(ba, 0);
        let d = f16_at(bw, 0) * yd;
        let dmin = f16_at(bw, 2) * yd;
        let scales = &bw[4..16];
        let qs = &bw[16..144];
        let qy = &ba[4..260];
        let mut isum = 0i32;
        let mut msum = 0i32;
        for j in 0..4 {
            let (sc_l, m_l) = scale_min_k4(2 * j, scales);
            let (sc_h, m_h) = scale_min_k4(2 * j + 1, scales);
            let mut lo = 0i32;
            let mut hi = 0i32;
            for l in 0..32 {
                let q = qs[j * 32 + l];
                lo += i32::from(q & 0xF) * i32::from(qy[j * 64 + l] as i8);
                hi += i32::from(q >> 4) * i32::from(qy[j * 64 + 32 + l] as i8);
            }
            let ij = sc_l * lo + sc_h * hi;
            let mj = m_l * (q8k_bsum(ba, 4 * j) + q8k_bsum(ba, 4 * j + 1))
                + m_h * (q8k_bsum(ba, 4 * j + 2) + q8k_bsum(ba, 4 * j + 3));
            if PER_SB {
                acc = (ij as f32).mul_add(d, acc);
                acc_min = (mj as f32).mul_add(dmin, acc_min);
            } else {
                isum += ij;
                msum += mj;
            }
        }
        if !PER_SB {
            acc = (isum as f32).mul_add(d, acc);
            acc_min = (msum as f32).mul_add(dmin, acc_min);
        }
    }
    acc - acc_min
}

#[inline(always)]
fn body_q4_k_gemv(w: &[u8], a: &[u8], n: usize) -> f32 {
    body_q4_k_repacked::<false>(w, a, n)
}

#[inline(always)]
fn body_q4_k_gemm(w: &[u8], a: &[u8], n: usize) -> f32 {
    body_q4_k_repacked::<true>(w, a, n)
}

/// Q5_K (176 bytes: f16 d, f16 dmin, 12 scale bytes, 32 high-bit bytes, 128 nibble bytes) · Q8_K.
#[inline(always)]
fn body_q5_k(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut acc = [0f32; 8];
    let mut acc_m = [0f32; 4];
    for (bw, ba) in w
        .chunks_exact(176)
        .zip(a.chunks_exact(Q8K_BYTES))
        .take(n / 256)
    {
        body_qk_4_5(
            bw,
            &bw[48..176],
            Some(&bw[16..48]),
            ba,
            &mut acc,
            &mut acc_m,
        );
    }
    finish_qk(&acc, &acc_m)
}

/// Q6_K in the order of ggml's tiled K-quant matmul (`ggml-cpu/tiled`, used
/// by llama.cpp for batches of ≥ 8 rows against non-repacked K-quant
/// weights): per block the exact integer sum `s` gives `acc = fma(d_w·s, d_a, acc)`.
#[inline(always)]
fn body_q6_k_tiled(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut acc = 0f32;
    for (bw, ba) in w
        .chunks_exact(210)
        .zip(a.chunks_exact(Q8K_BYTES))
        .take(n / 256)
    {
        let isum = q6_k_block_lanes(bw, ba).iter().sum::<i32>();
        acc = (f16_at(bw, 208) * isum as f32).mul_add(f32_at(ba, 0), acc);
    }
    acc
}

/// Q6_K (210 bytes: 128 low-nibble bytes, 64 high-bit bytes, 16 × i8 scales, f16 d) · Q8_K,
/// in the lane order of ggml's AVX2 kernel (values kept unsigned, `32·Σ scale·bsum` subtracted per lane).
#[inline(always)]
fn body_q6_k(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut acc = [0f32; 8];
    for (bw, ba) in w
        .chunks_exact(210)
        .zip(a.chunks_exact(Q8K_BYTES))
        .take(n / 256)
    {
        let d = f32_at(ba, 0) * f16_at(bw, 208);
        fma_lanes(&mut acc, d, &q6_k_block_lanes(bw, ba));
    }
    hsum8(&acc)
}

/// The eight exact integer lane sums of one Q6_K · Q8_K block (AVX2 lane layout).
#[inline(always)]
fn q6_k_block_lanes(bw: &[u8], ba: &[u8]) -> [i32; 8] {
    let scales = &bw[192..208];
    let sc = |g: usize| i32::from(scales[g] as i8);
    let qy = &ba[4..260];
    let mut sumi = [0i32; 8];
    for j in 0..2 {
        let ql = &bw[j * 64..j * 64 + 64];
        let qh = &bw[128 + j * 32..128 + j * 32 + 32];
        for k in 0..4 {
            let mut q = [0i8; 32];
            for b in 0..32 {
                let h = qh[b];
                q[b] = match k {
                    0 => (ql[b] & 0xF) | ((h & 3) << 4),
                    1 => (ql[32 + b] & 0xF) | (((h >> 2) & 3) << 4),
                    2 => (ql[b] >> 4) | (((h >> 4) & 3) << 4),
                    _ => (ql[32 + b] >> 4) | (((h >> 6) & 3) << 4),
                } as i8;
            }
            let off = j * 128 + 32 * k;
            let p = lanes_ii(&q, &qy[off..off + 32]);
            for l in 0..8 {
                sumi[l] += sc(8 * j + 2 * k + l / 4) * p[l];
            }
        }
    }
    for l in 0..8 {
        sumi[l] -= 32 * (q8k_bsum(ba, 2 * l) * sc(2 * l) + q8k_bsum(ba, 2 * l + 1) * sc(2 * l + 1));
    }
    sumi
}

/// f32 dot product in ggml's 8-lane FMA order (used by attention).
#[inline(always)]
fn body_dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    let mut s = 0f32;
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    hsum8(&acc) + s
}

/// Defines, per kernel body, a portable entry point and (on x86-64) an
/// AVX2+FMA build of the same body.
macro_rules! kernels {
    ($( $name:ident => $body:ident ),* $(,)?) => {
        $(
            #[doc = concat!("Portable build of `", stringify!($body), "`.")]
            pub fn $name(w: &[u8], a: &[u8], n: usize) -> f32 {
                $body(w, a, n)
            }
        )*

        #[cfg(target_arch = "x86_64")]
        mod avx2 {
            $(
                #[target_feature(enable = "avx2,fma,f16c")]
                pub(super) fn $name(w: &[u8], a: &[u8], n: usize) -> f32 {
                    super::simd_or_body!($name, $body, w, a, n)
                }
            )*
        }

        /// Safe entry points into the AVX2 builds; only handed out by
        /// [`fast_kernel`] after runtime detection.
        #[cfg(target_arch = "x86_64")]
        mod avx2_entry {
            $(
                pub(super) fn $name(w: &[u8], a: &[u8], n: usize) -> f32 {
                    // SAFETY: `fast_kernel` returns this function only when
                    // `has_avx2_fma()` reported AVX2 and FMA support.
                    unsafe { super::avx2::$name(w, a, n) }
                }
            )*
        }
    };
}

/// Uses the hand-written intrinsics of `simd` where they exist.
macro_rules! simd_or_body {
    (dot_q8_0_q8_0, $body:ident, $w:ident, $a:ident, $n:ident) => {
        super::super::simd::q8_0($w, $a, $n)
    };
    (dot_q4_0_q8_0, $body:ident, $w:ident, $a:ident, $n:ident) => {
        super::super::simd::q4_0($w, $a, $n)
    };
    (dot_q4_1_q8_1, $body:ident, $w:ident, $a:ident, $n:ident) => {
        super::super::simd::q4_1($w, $a, $n)
    };
    (dot_q5_0_q8_0, $body:ident, $w:ident, $a:ident, $n:ident) => {
        super::super::simd::q5_0($w, $a, $n)
    };
    (dot_q4_k_q8_k_gemv, $body:ident, $w:ident, $a:ident, $n:ident) => {
        super::super::simd::q4_k_repacked::<false>($w, $a, $n)
    };
    (dot_q4_k_q8_k_gemm, $body:ident, $w:ident, $a:ident, $n:ident) => {
        super::super::simd::q4_k_repacked::<true>($w, $a, $n)
    };
    (dot_q6_k_q8_k, $body:ident, $w:ident, $a:ident, $n:ident) => {
        super::super::simd::q6_k::<false>($w, $a, $n)
    };
    (dot_q6_k_q8_k_tiled, $body:ident, $w:ident, $a:ident, $n:ident) => {
        super::super::simd::q6_k::<true>($w, $a, $n)
    };
    ($name:ident, $body:ident, $w:ident, $a:ident, $n:ident) => {
        super::$body($w, $a, $n)
    };
}
use simd_or_body;

kernels! {
    dot_f32_f32 => body_f32,
    dot_f16_f16 => body_f16,
    dot_bf16_bf16 => body_bf16,
    dot_q4_0_q8_0 => body_q4_0,
    dot_q4_1_q8_1 => body_q4_1,
    dot_q5_0_q8_0 => body_q5_0,
    dot_q5_1_q8_1 => body_q5_1,
    dot_q8_0_q8_0 => body_q8_0,
    dot_q4_k_q8_k => body_q4_k,
    dot_q4_k_q8_k_gemv => body_q4_k_gemv,
    dot_q4_k_q8_k_gemm => body_q4_k_gemm,
    dot_q5_k_q8_k => body_q5_k,
    dot_q6_k_q8_k => body_q6_k,
    dot_q6_k_q8_k_tiled => body_q6_k_tiled,
    dot_f32_batch => body_f32_batch,
    dot_f32_single => body_f32_single,
    dot_f16_batch => body_f16_batch,
    dot_f16_single => body_f16_single,
}

/// Whether this CPU runs the AVX2+FMA(+F16C) builds.
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The specialised kernel for weight type `ty` (the AVX2 build when the CPU has it).
pub fn fast_kernel(ty: GgmlType) -> Option<DotFn> {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        use avx2_entry as k;
        return Some(match ty {
            GgmlType::F32 => k::dot_f32_f32,
            GgmlType::F16 => k::dot_f16_f16,
            GgmlType::BF16 => k::dot_bf16_bf16,
            GgmlType::Q4_0 => k::dot_q4_0_q8_0,
            GgmlType::Q4_1 => k::dot_q4_1_q8_1,
            GgmlType::Q5_0 => k::dot_q5_0_q8_0,
            GgmlType::Q5_1 => k::dot_q5_1_q8_1,
            GgmlType::Q8_0 => k::dot_q8_0_q8_0,
            GgmlType::Q4_K => k::dot_q4_k_q8_k,
            GgmlType::Q5_K => k::dot_q5_k_q8_k,
            GgmlType::Q6_K => k::dot_q6_k_q8_k,
            _ => return None,
        });
    }
    portable_kernel(ty)
}

/// Whether llama.cpp's CPU backend repacks a weight of type `ty` with `rows`
/// rows on this CPU (Q4_K with `rows % 8 == 0` on AVX2), which changes the
/// float order of its dot products.
pub fn is_repacked(ty: GgmlType, rows: usize) -> bool {
    ty == GgmlType::Q4_K && rows.is_multiple_of(8) && has_avx2_fma()
}

/// The kernel reproducing llama.cpp's order for activation row `t` of a batch
/// of `n_tokens` against a weight of type `ty` with `rows` rows: like
/// [`fast_kernel`], except for repacked weights, where rows of complete groups
/// of four (`t < n_tokens - n_tokens % 4`, batches of more than 3) take the
/// gemm order and the rest the gemv order.
pub fn kernel_for(ty: GgmlType, rows: usize, t: usize, n_tokens: usize) -> Option<DotFn> {
    #[cfg(target_arch = "x86_64")]
    if is_repacked(ty, rows) {
        let gemm = n_tokens > 3 && t < n_tokens - n_tokens % 4;
        return Some(if gemm {
            avx2_entry::dot_q4_k_q8_k_gemm
        } else {
            avx2_entry::dot_q4_k_q8_k_gemv
        });
    }
    // F32/F16 weights: tinyBLAS for batches (k % 16 == 0, m % 4 == 0), else vec_dot.
    #[cfg(target_arch = "x86_64")]
    if matches!(ty, GgmlType::F32 | GgmlType::F16) && has_avx2_fma() {
        let batch = n_tokens >= 2 && rows.is_multiple_of(4);
        return Some(match (ty == GgmlType::F16, batch) {
            (false, true) => avx2_entry::dot_f32_batch,
            (false, false) => avx2_entry::dot_f32_single,
            (true, true) => avx2_entry::dot_f16_batch,
            (true, false) => avx2_entry::dot_f16_single,
        });
    }
    // ggml's tiled K-quant matmul takes batches of ≥ 8 rows (only Q6_K's order is reproduced).
    #[cfg(target_arch = "x86_64")]
    if ty == GgmlType::Q6_K && n_tokens >= 8 && has_avx2_fma() {
        return Some(avx2_entry::dot_q6_k_q8_k_tiled);
    }
    let _ = (rows, t, n_tokens);
    fast_kernel(ty)
}

/// The float order in which the CPU backend sums one (weight row,
/// activation row) dot product of a quantized matmul (every order adds the
/// same exact integer block sums; they differ in how the scaled sums are
/// accumulated). A device backend that wants the CPU's bits reproduces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DotOrder {
    /// ggml's AVX2 `vec_dot`: eight f32 lanes (lane `l` = columns `4l..4l+3`
    /// of every 32), one FMA per block per lane, `hsum_float_8`; Q4_1 adds
    /// its `m·s` terms in a separate accumulator, Q4_K its mins in four.
    Lanes,
    /// One FMA per 32-column block on its exact integer sum (llama.cpp's
    /// repacked Q4_0 gemm, taken by the AVX-512 prompt GEMM).
    Block32,
    /// Repacked Q4_K gemv: one FMA per 256 columns (sums and mins apart).
    Q4KGemv,
    /// Repacked Q4_K gemm: one FMA per 64 columns (sums and mins apart).
    Q4KGemm,
    /// ggml's tiled K-quant matmul (Q6_K): `fma(d_w · isum, d_a, acc)` per 256.
    Q6KTiled,
}

/// The [`DotOrder`] the CPU backend uses on this CPU for activation row `t`
/// of a batch of `n_tokens` against a quantized weight `ty` with `rows` rows
/// (`None`: not one of Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K).
pub fn dot_order(ty: GgmlType, rows: usize, t: usize, n_tokens: usize) -> Option<DotOrder> {
    let gemm = n_tokens >= super::gemm::MIN_TOKENS && has_avx512_vnni();
    Some(match ty {
        GgmlType::Q4_0 if gemm && rows.is_multiple_of(8) => DotOrder::Block32,
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q8_0 => DotOrder::Lanes,
        GgmlType::Q4_K if is_repacked(ty, rows) => {
            if n_tokens > 3 && t < n_tokens - n_tokens % 4 {
                DotOrder::Q4KGemm
            } else {
                DotOrder::Q4KGemv
            }
        }
        GgmlType::Q4_K => DotOrder::Lanes,
        GgmlType::Q6_K if n_tokens >= 8 && has_avx2_fma() => DotOrder::Q6KTiled,
        GgmlType::Q6_K => DotOrder::Lanes,
        _ => return None,
    })
}

/// A four-token dot-product routine: `(weight row, activation rows, byte
/// stride between the activation rows, n, out)`; `out[j]` is bit-identical
/// to the one-token kernel's result for activation row `j`.
pub type Dot4Fn = fn(&[u8], &[u8], usize, usize, &mut [f32; 4]);

/// Safe entry points into the four-token AVX2 kernels of `simd`; only handed
/// out by [`kernel4_for`] after runtime detection.
#[cfg(target_arch = "x86_64")]
mod avx2_entry4 {
    macro_rules! entry4 {
        ($($name:ident => $simd:expr),* $(,)?) => {$(
            pub(crate) fn $name(w: &[u8], a: &[u8], stride: usize, n: usize, out: &mut [f32; 4]) {
                // SAFETY: `kernel4_for` returns this function only when
                // `has_avx2_fma()` reported AVX2, FMA and F16C support (and,
                // for the `vnni` builds, `has_vnni()` AVX-VNNI too).
                unsafe { $simd(w, a, stride, n, out) }
            }
        )*};
    }
    use super::super::simd;
    use super::super::simd::x4_avx2;
    entry4! {
        q8_0 => x4_avx2::q8_0_x4,
        q4_0 => x4_avx2::q4_0_x4,
        q4_1 => x4_avx2::q4_1_x4,
        q5_0 => x4_avx2::q5_0_x4,
        q4_k_gemv => simd::q4_k_repacked_x4::<false>,
        q4_k_gemm => simd::q4_k_gemm_x4,
        q6_k => simd::q6_k_x4::<false>,
        q6_k_tiled => simd::q6_k_x4::<true>,
    }

    /// The VNNI builds, handed out only when `has_vnni()` also holds.
    pub(super) mod vnni {
        use super::super::super::simd::x4_vnni;
        entry4! {
            q8_0 => x4_vnni::q8_0_x4,
            q4_0 => x4_vnni::q4_0_x4,
            q4_1 => x4_vnni::q4_1_x4,
            q5_0 => x4_vnni::q5_0_x4,
        }
    }
}

/// Whether this CPU has AVX-512 F/BW with VNNI (the prompt-processing GEMM
/// of quantized weights, `cpu::gemm`).
pub fn has_avx512_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU also has AVX-VNNI (`vpdpbusd` on 256-bit vectors).
pub fn has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        has_avx2_fma() && std::is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The four-token kernel for activation rows `t..t + 4` of a batch of
/// `n_tokens` against a weight of type `ty` with `rows` rows, when one exists
/// and all four rows take the same one-token kernel under [`kernel_for`]
/// (so the four results equal the one-token kernel's bit for bit).
pub fn kernel4_for(ty: GgmlType, rows: usize, t: usize, n_tokens: usize) -> Option<Dot4Fn> {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() && t + 4 <= n_tokens {
        use avx2_entry4 as k;
        if is_repacked(ty, rows) {
            let gemm_end = if n_tokens > 3 {
                n_tokens - n_tokens % 4
            } else {
                0
            };
            return if t + 4 <= gemm_end {
                Some(k::q4_k_gemm)
            } else if t >= gemm_end {
                Some(k::q4_k_gemv)
            } else {
                None
            };
        }
        if has_vnni() {
            match ty {
                GgmlType::Q8_0 => return Some(k::vnni::q8_0),
                GgmlType::Q4_0 => return Some(k::vnni::q4_0),
                GgmlType::Q4_1 => return Some(k::vnni::q4_1),
                GgmlType::Q5_0 => return Some(k::vnni::q5_0),
                _ => {}
            }
        }
        return match ty {
            GgmlType::Q8_0 => Some(k::q8_0),
            GgmlType::Q4_0 => Some(k::q4_0),
            GgmlType::Q4_1 => Some(k::q4_1),
            GgmlType::Q5_0 => Some(k::q5_0),
            GgmlType::Q6_K if n_tokens >= 8 => Some(k::q6_k_tiled),
            GgmlType::Q6_K => Some(k::q6_k),
            _ => None,
        };
    }
    let _ = (ty, rows, t, n_tokens);
    None
}

/// The portable build of the kernel for `ty` (no CPU feature requirements).
pub fn portable_kernel(ty: GgmlType) -> Option<DotFn> {
    Some(match ty {
        GgmlType::F32 => dot_f32_f32,
        GgmlType::F16 => dot_f16_f16,
        GgmlType::BF16 => dot_bf16_bf16,
        GgmlType::Q4_0 => dot_q4_0_q8_0,
        GgmlType::Q4_1 => dot_q4_1_q8_1,
        GgmlType::Q5_0 => dot_q5_0_q8_0,
        GgmlType::Q5_1 => dot_q5_1_q8_1,
        GgmlType::Q8_0 => dot_q8_0_q8_0,
        GgmlType::Q4_K => dot_q4_k_q8_k,
        GgmlType::Q5_K => dot_q5_k_q8_k,
        GgmlType::Q6_K => dot_q6_k_q8_k,
        _ => return None,
    })
}

/// f32 dot product (8 FMA lanes + `hsum_float_8`).
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: AVX2 and FMA were detected at runtime.
        return unsafe { dot_f32_avx2(a, b) };
    }
    body_dot_f32(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_f32_avx2(a: &[f32], b: &[f32]) -> f32 {
    body_dot_f32(a, b)
}
