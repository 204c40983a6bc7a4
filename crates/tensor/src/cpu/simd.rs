//! AVX2 intrinsic versions of the hot dot-product kernels. Each computes the
//! same exact integer lane sums and the same float operation sequence as the
//! portable bodies in [`super::kernels`] (ggml's x86 order), only faster;
//! `tests/kernels.rs` checks both against ggml bit for bit.
//!
//! Every function here requires AVX2 and FMA; callers check
//! [`super::kernels::has_avx2_fma`] first.

// Lane-indexed loops mirror the SIMD lane layout being reproduced.
#![allow(clippy::needless_range_loop)]
#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

/// The two f16 values at `b[i..i + 4]` as f32 (F16C; exact, like `half`).
///
/// Loading a whole `u32` makes the compiler emit a zero-extending `vmovd`.
/// A 16-bit load is folded into `vpinsrw`, which merges into whatever
/// register it picks — in these loops the accumulator — and so chains every
/// block's conversion to the previous block's FMA (measured: 2–3× slower).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16_pair(b: &[u8], i: usize) -> (f32, f32) {
    let bits = u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32));
    (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
}

/// The f16 at `b[i..i + 2]` as f32 (needs `b[i - 2..i]` readable too).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16_hi(b: &[u8], i: usize) -> f32 {
    f16_pair(b, i - 2).1
}

#[inline(always)]
fn f32_at(b: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// `f16(w[0..2]) · f16(a[0..2])`: both scales converted by one
/// `vcvtph2ps` whose two lanes are used, so the compiler cannot narrow it to
/// a `vpinsrw` that merges into (and waits for) the accumulator.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scale_product(w: &[u8], a: &[u8]) -> f32 {
    let wb = i16::from_le_bytes([w[0], w[1]]);
    let ab = i16::from_le_bytes([a[0], a[1]]);
    let v = _mm_cvtph_ps(_mm_set_epi16(0, 0, 0, 0, 0, 0, ab, wb));
    _mm_cvtss_f32(_mm_mul_ss(v, _mm_movehdup_ps(v)))
}

/// Loads 32 bytes from `b[off..off+32]` (bounds checked).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load32(b: &[u8], off: usize) -> __m256i {
    let s = &b[off..off + 32];
    // SAFETY: `s` is exactly 32 readable bytes; unaligned load.
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

/// Loads 16 bytes from `b[off..off+16]` (bounds checked).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load16(b: &[u8], off: usize) -> __m128i {
    let s = &b[off..off + 16];
    // SAFETY: `s` is exactly 16 readable bytes; unaligned load.
    unsafe { _mm_loadu_si128(s.as_ptr().cast()) }
}

/// Distance, in bytes, that [`prefetch`] reaches ahead of the weight block
/// being read.
const PREFETCH_AHEAD: usize = 2048;

/// Asks the CPU to start loading the cache line `PREFETCH_AHEAD` bytes past
/// `b[off]` (a hint: it reads nothing and never faults).
///
/// The kernels chain every block through one accumulator, so the out-of-order
/// window covers only a few hundred bytes of weights; without this hint a
/// matvec over weights in DRAM was latency-bound at 3.5 GB/s per core
/// (Q4_1, this 2-core Xeon) against 14 GB/s for a plain streaming read.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn prefetch(b: &[u8], off: usize) {
    // A hint that never faults, whatever the address (the pointer is
    // never dereferenced), hence a safe intrinsic.
    let p = b.as_ptr().wrapping_add(off + PREFETCH_AHEAD);
    _mm_prefetch::<_MM_HINT_T0>(p.cast())
}

/// Prefetches the cache lines `PREFETCH_AHEAD` bytes past the weight block
/// `w[off..off + bs]`: one hint per 64-byte line, not one per block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn prefetch_block(w: &[u8], off: usize, bs: usize) {
    if bs < 64 {
        if off % 64 < bs {
            prefetch(w, off);
        }
    } else {
        let mut p = off;
        while p < off + bs {
            prefetch(w, p);
            p += 64;
        }
    }
}

/// Eight i32 lanes: sums of 4 adjacent products of unsigned `ax` and signed `sy` bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn mul_sum_us8_pairs(ax: __m256i, sy: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_set1_epi16(1), _mm256_maddubs_epi16(ax, sy))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn mul_sum_i8_pairs_float(x: __m256i, y: __m256i) -> __m256 {
    let ax = _mm256_sign_epi8(x, x);
    let sy = _mm256_sign_epi8(y, x);
    _mm256_cvtepi32_ps(mul_sum_us8_pairs(ax, sy))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_float_8(x: __m256) -> f32 {
    let mut r = _mm256_extractf128_ps(x, 1);
    r = _mm_add_ps(r, _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    _mm_cvtss_f32(r)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_i32_8(x: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01));
    _mm_cvtsi128_si32(s)
}

/// 16 nibble bytes → 32 values 0..15 (low nibbles first).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn nibbles32(b: &[u8], off: usize) -> __m256i {
    let t = load16(b, off);
    let both = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// The 32 bits of `qh` as bytes 0xFF (bit set) / 0x00.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bits32(qh: u32) -> __m256i {
    let shuf = _mm256_set_epi64x(
        0x0303030303030303,
        0x0202020202020202,
        0x0101010101010101,
        0,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(qh as i32), shuf);
    let bit = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
    _mm256_cmpeq_epi8(_mm256_or_si256(bytes, bit), _mm256_set1_epi64x(-1))
}

/// Q8_0 · Q8_0.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q8_0(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (i, (bw, ba)) in w
        .chunks_exact(34)
        .zip(a.chunks_exact(34))
        .take(n / 32)
        .enumerate()
    {
        prefetch_block(w, i * 34, 34);
        let d = _mm256_set1_ps(scale_product(bw, ba));
        let q = mul_sum_i8_pairs_float(load32(bw, 2), load32(ba, 2));
        acc = _mm256_fmadd_ps(d, q, acc);
    }
    hsum_float_8(acc)
}

/// Q4_0 · Q8_0.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q4_0(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (i, (bw, ba)) in w
        .chunks_exact(18)
        .zip(a.chunks_exact(34))
        .take(n / 32)
        .enumerate()
    {
        prefetch_block(w, i * 18, 18);
        let d = _mm256_set1_ps(scale_product(bw, ba));
        let qx = _mm256_sub_epi8(nibbles32(bw, 2), _mm256_set1_epi8(8));
        let q = mul_sum_i8_pairs_float(qx, load32(ba, 2));
        acc = _mm256_fmadd_ps(d, q, acc);
    }
    hsum_float_8(acc)
}

/// Q4_1 · Q8_1.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q4_1(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0f32;
    for (i, (bw, ba)) in w
        .chunks_exact(20)
        .zip(a.chunks_exact(36))
        .take(n / 32)
        .enumerate()
    {
        prefetch_block(w, i * 20, 20);
        let (wd, wm) = f16_pair(bw, 0);
        let (ad, as_) = f16_pair(ba, 0);
        summs = wm.mul_add(as_, summs);
        let d = _mm256_set1_ps(wd * ad);
        let q = _mm256_cvtepi32_ps(mul_sum_us8_pairs(nibbles32(bw, 4), load32(ba, 4)));
        acc = _mm256_fmadd_ps(d, q, acc);
    }
    hsum_float_8(acc) + summs
}

/// Q5_0 · Q8_0.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q5_0(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (i, (bw, ba)) in w
        .chunks_exact(22)
        .zip(a.chunks_exact(34))
        .take(n / 32)
        .enumerate()
    {
        prefetch_block(w, i * 22, 22);
        let d = _mm256_set1_ps(scale_product(bw, ba));
        let qh = u32::from_le_bytes([bw[2], bw[3], bw[4], bw[5]]);
        let hi = _mm256_andnot_si256(bits32(qh), _mm256_set1_epi8(0xF0u8 as i8));
        let qx = _mm256_or_si256(nibbles32(bw, 6), hi);
        let q = mul_sum_i8_pairs_float(qx, load32(ba, 2));
        acc = _mm256_fmadd_ps(d, q, acc);
    }
    hsum_float_8(acc)
}

#[inline(always)]
fn q8k_bsum(ba: &[u8], j: usize) -> i32 {
    i32::from(i16::from_le_bytes([ba[260 + 2 * j], ba[261 + 2 * j]]))
}

#[inline(always)]
fn scale_min_k4(j: usize, q: &[u8]) -> (i32, i32) {
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

/// Q4_K · Q8_K in the order of ggml's repacked x86 kernels (see
/// `kernels::body_q4_k_repacked`): `PER_SB = false` is the gemv order (one
/// FMA per block), `true` the gemm order (one FMA per 64-element sub-block pair).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q4_k_repacked<const PER_SB: bool>(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut acc = 0f32;
    let mut acc_min = 0f32;
    let m4 = _mm256_set1_epi8(0x0F);
    for (i, (bw, ba)) in w
        .chunks_exact(144)
        .zip(a.chunks_exact(292))
        .take(n / 256)
        .enumerate()
    {
        prefetch_block(w, i * 144, 144);
        let yd = f32_at(ba, 0);
        let (wd, wmin) = f16_pair(bw, 0);
        let d = wd * yd;
        let dmin = wmin * yd;
        let scales = &bw[4..16];
        let mut sumi = _mm256_setzero_si256();
        let mut msum = 0i32;
        for j in 0..4 {
            let (sc_l, m_l) = scale_min_k4(2 * j, scales);
            let (sc_h, m_h) = scale_min_k4(2 * j + 1, scales);
            let q4 = load32(bw, 16 + 32 * j);
            let lo = _mm256_and_si256(q4, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4);
            let pl = _mm256_maddubs_epi16(lo, load32(ba, 4 + 64 * j));
            let ph = _mm256_maddubs_epi16(hi, load32(ba, 4 + 64 * j + 32));
            let pl = _mm256_madd_epi16(pl, _mm256_set1_epi16(sc_l as i16));
            let ph = _mm256_madd_epi16(ph, _mm256_set1_epi16(sc_h as i16));
            let mj = m_l * (q8k_bsum(ba, 4 * j) + q8k_bsum(ba, 4 * j + 1))
                + m_h * (q8k_bsum(ba, 4 * j + 2) + q8k_bsum(ba, 4 * j + 3));
            if PER_SB {
                let ij = hsum_i32_8(_mm256_add_epi32(pl, ph));
                acc = (ij as f32).mul_add(d, acc);
                acc_min = (mj as f32).mul_add(dmin, acc_min);
            } else {
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
                msum += mj;
            }
        }
        if !PER_SB {
            acc = (hsum_i32_8(sumi) as f32).mul_add(d, acc);
            acc_min = (msum as f32).mul_add(dmin, acc_min);
        }
    }
    acc - acc_min
}

/// Q6_K · Q8_K: `TILED = false` in ggml's AVX2 `ggml_vec_dot_q6_K_q8_K`
/// order, `true` in the order of ggml's tiled K-quant matmul (see
/// `kernels::body_q6_k_tiled`).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q6_k<const TILED: bool>(w: &[u8], a: &[u8], n: usize) -> f32 {
    let m3 = _mm256_set1_epi8(3);
    let m15 = _mm256_set1_epi8(15);
    let mut acc = _mm256_setzero_ps();
    let mut acc_t = 0f32;
    for (i, (bw, ba)) in w
        .chunks_exact(210)
        .zip(a.chunks_exact(292))
        .take(n / 256)
        .enumerate()
    {
        prefetch_block(w, i * 210, 210);
        let d = f32_at(ba, 0) * f16_hi(bw, 208);
        let sc = |g: usize| i16::from(bw[192 + g] as i8);
        // 32·Σ scale·bsum per lane (lane l: groups 2l, 2l+1).
        let sc16 = _mm256_cvtepi8_epi16(load16(bw, 192));
        let subv = _mm256_slli_epi32(_mm256_madd_epi16(load32(ba, 260), sc16), 5);
        let mut sumi = _mm256_setzero_si256();
        for j in 0..2 {
            let q4b1 = load32(bw, j * 64);
            let q4b2 = load32(bw, j * 64 + 32);
            let qh = load32(bw, 128 + j * 32);
            let h0 = _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4);
            let h1 = _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(12)), 2);
            let h2 = _mm256_and_si256(qh, _mm256_set1_epi8(48));
            let h3 = _mm256_srli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(-64)), 2);
            let q = [
                _mm256_or_si256(_mm256_and_si256(q4b1, m15), h0),
                _mm256_or_si256(_mm256_and_si256(q4b2, m15), h1),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4b1, 4), m15), h2),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4b2, 4), m15), h3),
            ];
            for (k, qk) in q.iter().enumerate() {
                let p16 = _mm256_maddubs_epi16(*qk, load32(ba, 4 + j * 128 + 32 * k));
                let g = 8 * j + 2 * k;
                let scv = _mm256_set_m128i(_mm_set1_epi16(sc(g + 1)), _mm_set1_epi16(sc(g)));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(scv, p16));
            }
        }
        sumi = _mm256_sub_epi32(sumi, subv);
        if TILED {
            let isum = hsum_i32_8(sumi);
            acc_t = (f16_hi(bw, 208) * isum as f32).mul_add(f32_at(ba, 0), acc_t);
        } else {
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
    }
    if TILED { acc_t } else { hsum_float_8(acc) }
}

// ---------------------------------------------------------------------------
// Four-token kernels for prompt processing.
//
// Each computes `out[j] = w · a_j` for the four activation rows
// `a_j = a[j * stride..]`, every one with exactly the operation sequence of
// the one-token kernel above (so the results are bit-identical to it), but
// decoding each weight block once for all four and running four independent
// accumulator chains, which keeps the FMA units busy.
// ---------------------------------------------------------------------------

/// The activation block `i` (of `bs` bytes) of token `j`.
#[inline(always)]
fn act_block(a: &[u8], stride: usize, j: usize, i: usize, bs: usize) -> &[u8] {
    let o = j * stride + i * bs;
    &a[o..o + bs]
}

/// The four activation rows `a[j * stride..]` (`nb` blocks of `BS` bytes
/// each) as block arrays, each exactly `nb` long so that indexing them by a
/// block index below `nb` needs no bounds check in the loops.
#[inline(always)]
fn act_rows<const BS: usize>(a: &[u8], stride: usize, nb: usize) -> [&[[u8; BS]]; 4] {
    let row = |j: usize| {
        let r = &a[j * stride..j * stride + nb * BS];
        &r.as_chunks::<BS>().0[..nb]
    };
    [row(0), row(1), row(2), row(3)]
}

/// `wd · ad_j` for the four activation blocks `ab[j]` of one block index,
/// each broadcast to eight lanes; `wbits` is the weight block's f16 scale.
/// The five f16 values are converted by one `vcvtph2ps` whose lanes are all
/// used: a one-value conversion gets narrowed by the compiler to a `vpinsrw`
/// that merges into (and so waits for) an accumulator. A macro, not a
/// function: it must inline into callers compiled with more target features
/// than it, which `#[inline]` alone did not achieve.
macro_rules! scales_x4 {
    ($wbits:expr, $ab:expr) => {{
        let h = |b: &[u8]| i16::from_le_bytes([b[0], b[1]]);
        let v = _mm256_cvtph_ps(_mm_set_epi16(
            0,
            0,
            0,
            $wbits as i16,
            h(&$ab[3][..]),
            h(&$ab[2][..]),
            h(&$ab[1][..]),
            h(&$ab[0][..]),
        ));
        let d = _mm256_mul_ps(_mm256_permutevar8x32_ps(v, _mm256_set1_epi32(4)), v);
        [
            _mm256_permutevar8x32_ps(d, _mm256_set1_epi32(0)),
            _mm256_permutevar8x32_ps(d, _mm256_set1_epi32(1)),
            _mm256_permutevar8x32_ps(d, _mm256_set1_epi32(2)),
            _mm256_permutevar8x32_ps(d, _mm256_set1_epi32(3)),
        ]
    }};
}

/// The four-token kernels of the `Q*_0`/`Q4_1` types, instantiated once per
/// way of summing four adjacent u8×i8 products into an i32 lane: AVX2's
/// `maddubs`+`madd` pair or AVX-VNNI's single `vpdpbusd`. Both are exact
/// (the pair sums stay far inside i16 for these value ranges), so both
/// instantiations give identical results.
macro_rules! x4_kernels {
    ($features:literal, $dot:ident) => {
        /// Q8_0 · Q8_0, four tokens.
        #[target_feature(enable = $features)]
        pub(crate) fn q8_0_x4(w: &[u8], a: &[u8], stride: usize, n: usize, out: &mut [f32; 4]) {
            let nb = n / 32;
            let wb = &w.as_chunks::<34>().0[..nb];
            let ar = act_rows::<34>(a, stride, nb);
            let mut acc = [_mm256_setzero_ps(); 4];
            for (i, bw) in wb.iter().enumerate() {
                let ab = [&ar[0][i], &ar[1][i], &ar[2][i], &ar[3][i]];
                let ds = scales_x4!(u16::from_le_bytes([bw[0], bw[1]]), ab);
                let qw = load32(bw, 2);
                let ax = _mm256_sign_epi8(qw, qw);
                for j in 0..4 {
                    let sy = _mm256_sign_epi8(load32(ab[j], 2), qw);
                    let q = _mm256_cvtepi32_ps($dot(ax, sy));
                    acc[j] = _mm256_fmadd_ps(ds[j], q, acc[j]);
                }
            }
            for (o, acc) in out.iter_mut().zip(acc) {
                *o = hsum_float_8(acc);
            }
        }

        /// Q4_0 · Q8_0, four tokens.
        #[target_feature(enable = $features)]
        pub(crate) fn q4_0_x4(w: &[u8], a: &[u8], stride: usize, n: usize, out: &mut [f32; 4]) {
            let nb = n / 32;
            let wb = &w.as_chunks::<18>().0[..nb];
            let ar = act_rows::<34>(a, stride, nb);
            let mut acc = [_mm256_setzero_ps(); 4];
            for (i, bw) in wb.iter().enumerate() {
                let ab = [&ar[0][i], &ar[1][i], &ar[2][i], &ar[3][i]];
                let ds = scales_x4!(u16::from_le_bytes([bw[0], bw[1]]), ab);
                let qx = _mm256_sub_epi8(nibbles32(bw, 2), _mm256_set1_epi8(8));
                let ax = _mm256_sign_epi8(qx, qx);
                for j in 0..4 {
                    let sy = _mm256_sign_epi8(load32(ab[j], 2), qx);
                    let q = _mm256_cvtepi32_ps($dot(ax, sy));
                    acc[j] = _mm256_fmadd_ps(ds[j], q, acc[j]);
                }
            }
            for (o, acc) in out.iter_mut().zip(acc) {
                *o = hsum_float_8(acc);
            }
        }

        /// Q4_1 · Q8_1, four tokens.
        #[target_feature(enable = $features)]
        pub(crate) fn q4_1_x4(w: &[u8], a: &[u8], stride: usize, n: usize, out: &mut [f32; 4]) {
            let nb = n / 32;
            let wb = &w.as_chunks::<20>().0[..nb];
            let ar = act_rows::<36>(a, stride, nb);
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut summs = [0f32; 4];
            for (i, bw) in wb.iter().enumerate() {
                let (wd, wm) = f16_pair(bw, 0);
                let qw = nibbles32(bw, 4);
                for j in 0..4 {
                    let ba = &ar[j][i];
                    let (ad, as_) = f16_pair(ba, 0);
                    summs[j] = wm.mul_add(as_, summs[j]);
                    let d = _mm256_set1_ps(wd * ad);
                    let q = _mm256_cvtepi32_ps($dot(qw, load32(ba, 4)));
                    acc[j] = _mm256_fmadd_ps(d, q, acc[j]);
                }
            }
            for j in 0..4 {
                out[j] = hsum_float_8(acc[j]) + summs[j];
            }
        }

        /// Q5_0 · Q8_0, four tokens.
        #[target_feature(enable = $features)]
        pub(crate) fn q5_0_x4(w: &[u8], a: &[u8], stride: usize, n: usize, out: &mut [f32; 4]) {
            let nb = n / 32;
            let wb = &w.as_chunks::<22>().0[..nb];
            let ar = act_rows::<34>(a, stride, nb);
            let mut acc = [_mm256_setzero_ps(); 4];
            for (i, bw) in wb.iter().enumerate() {
                let ab = [&ar[0][i], &ar[1][i], &ar[2][i], &ar[3][i]];
                let ds = scales_x4!(u16::from_le_bytes([bw[0], bw[1]]), ab);
                let qh = u32::from_le_bytes([bw[2], bw[3], bw[4], bw[5]]);
                let hi = _mm256_andnot_si256(bits32(qh), _mm256_set1_epi8(0xF0u8 as i8));
                let qx = _mm256_or_si256(nibbles32(bw, 6), hi);
                let ax = _mm256_sign_epi8(qx, qx);
                for j in 0..4 {
                    let sy = _mm256_sign_epi8(load32(ab[j], 2), qx);
                    let q = _mm256_cvtepi32_ps($dot(ax, sy));
                    acc[j] = _mm256_fmadd_ps(ds[j], q, acc[j]);
                }
            }
            for (o, acc) in out.iter_mut().zip(acc) {
                *o = hsum_float_8(acc);
            }
        }
    };
}

/// Eight i32 lanes of four-product sums, with AVX-VNNI.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
fn dot_vnni(ax: __m256i, sy: __m256i) -> __m256i {
    _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), ax, sy)
}

/// Four-token kernels using AVX2 `maddubs` + `madd`.
pub(super) mod x4_avx2 {
    use super::*;
    x4_kernels!("avx2,fma,f16c", mul_sum_us8_pairs);
}

/// Four-token kernels using AVX-VNNI `vpdpbusd`.
pub(super) mod x4_vnni {
    use super::*;
    x4_kernels!("avx2,fma,f16c,avxvnni", dot_vnni);
}

/// Q4_K · Q8_K in the repacked orders (see [`q4_k_repacked`]), four tokens.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q4_k_repacked_x4<const PER_SB: bool>(
    w: &[u8],
    a: &[u8],
    stride: usize,
    n: usize,
    out: &mut [f32; 4],
) {
    let mut acc = [0f32; 4];
    let mut acc_min = [0f32; 4];
    let m4 = _mm256_set1_epi8(0x0F);
    for (i, bw) in w.chunks_exact(144).take(n / 256).enumerate() {
        let (wd, wmin) = f16_pair(bw, 0);
        let scales = &bw[4..16];
        let mut sc = [(0i32, 0i32); 8];
        for (s, v) in sc.iter_mut().enumerate() {
            *v = scale_min_k4(s, scales);
        }
        let mut lo = [_mm256_setzero_si256(); 4];
        let mut hi = [_mm256_setzero_si256(); 4];
        for j in 0..4 {
            let q4 = load32(bw, 16 + 32 * j);
            lo[j] = _mm256_and_si256(q4, m4);
            hi[j] = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4);
        }
        for t in 0..4 {
            let ba = act_block(a, stride, t, i, 292);
            let yd = f32_at(ba, 0);
            let d = wd * yd;
            let dmin = wmin * yd;
            let mut sumi = _mm256_setzero_si256();
            let mut msum = 0i32;
            for j in 0..4 {
                let (sc_l, m_l) = sc[2 * j];
                let (sc_h, m_h) = sc[2 * j + 1];
                let pl = _mm256_maddubs_epi16(lo[j], load32(ba, 4 + 64 * j));
                let ph = _mm256_maddubs_epi16(hi[j], load32(ba, 4 + 64 * j + 32));
                let pl = _mm256_madd_epi16(pl, _mm256_set1_epi16(sc_l as i16));
                let ph = _mm256_madd_epi16(ph, _mm256_set1_epi16(sc_h as i16));
                let mj = m_l * (q8k_bsum(ba, 4 * j) + q8k_bsum(ba, 4 * j + 1))
                    + m_h * (q8k_bsum(ba, 4 * j + 2) + q8k_bsum(ba, 4 * j + 3));
                if PER_SB {
                    let ij = hsum_i32_8(_mm256_add_epi32(pl, ph));
                    acc[t] = (ij as f32).mul_add(d, acc[t]);
                    acc_min[t] = (mj as f32).mul_add(dmin, acc_min[t]);
                } else {
                    sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
                    msum += mj;
                }
            }
            if !PER_SB {
                acc[t] = (hsum_i32_8(sumi) as f32).mul_add(d, acc[t]);
                acc_min[t] = (msum as f32).mul_add(dmin, acc_min[t]);
            }
        }
    }
    for t in 0..4 {
        out[t] = acc[t] - acc_min[t];
    }
}

/// The four sums of the eight i32 lanes of `a`, `b`, `c`, `d` (exact:
/// integer adds in any order give the same sums).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_i32_8x4(a: __m256i, b: __m256i, c: __m256i, d: __m256i) -> __m128i {
    let ab = _mm256_hadd_epi32(a, b);
    let cd = _mm256_hadd_epi32(c, d);
    let abcd = _mm256_hadd_epi32(ab, cd);
    _mm_add_epi32(
        _mm256_castsi256_si128(abcd),
        _mm256_extracti128_si256(abcd, 1),
    )
}

/// Q4_K · Q8_K in the repacked gemm order (`q4_k_repacked::<true>`), four
/// tokens: the per-sub-block-pair integer sums of the four tokens are reduced
/// together and their float steps (`ij·d + acc`, `mj·dmin + acc_min`, one
/// rounding each) run as four lanes of one vector FMA, which is the same
/// arithmetic lane by lane.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q4_k_gemm_x4(w: &[u8], a: &[u8], stride: usize, n: usize, out: &mut [f32; 4]) {
    let nb = n / 256;
    let wb = &w.as_chunks::<144>().0[..nb];
    let ar = act_rows::<292>(a, stride, nb);
    let m4 = _mm256_set1_epi8(0x0F);
    let mut acc = _mm_setzero_ps();
    let mut acc_min = _mm_setzero_ps();
    for (i, bw) in wb.iter().enumerate() {
        let ab = [&ar[0][i], &ar[1][i], &ar[2][i], &ar[3][i]];
        let (wd, wmin) = f16_pair(bw, 0);
        let yd = _mm_set_ps(
            f32_at(ab[3], 0),
            f32_at(ab[2], 0),
            f32_at(ab[1], 0),
            f32_at(ab[0], 0),
        );
        let d = _mm_mul_ps(_mm_set1_ps(wd), yd);
        let dmin = _mm_mul_ps(_mm_set1_ps(wmin), yd);
        let scales = &bw[4..16];
        let mut sc = [0i16; 8];
        let mut mn = [0i16; 16];
        for k in 0..8 {
            let (d, m) = scale_min_k4(k, scales);
            sc[k] = d as i16;
            mn[2 * k] = m as i16;
            mn[2 * k + 1] = m as i16;
        }
        // Min terms of all four tokens at once: lane `s` of `madd(bsums, mins)`
        // is `m_s · (bsum_2s + bsum_2s+1)`; pairs of lanes give each `mj`.
        // SAFETY: `mn` is 16 i16 = 32 readable bytes; unaligned load.
        let mins = unsafe { _mm256_loadu_si256(mn.as_ptr().cast()) };
        let v: [__m256i; 4] = std::array::from_fn(|t| _mm256_madd_epi16(load32(ab[t], 260), mins));
        let h01 = _mm256_castsi256_ps(_mm256_hadd_epi32(v[0], v[1]));
        let h23 = _mm256_castsi256_ps(_mm256_hadd_epi32(v[2], v[3]));
        let (l01, l23) = (_mm256_castps256_ps128(h01), _mm256_castps256_ps128(h23));
        let (u01, u23) = (_mm256_extractf128_ps(h01, 1), _mm256_extractf128_ps(h23, 1));
        // mj[j] lane t: token t's min sum for sub-block pair j.
        let mj = [
            _mm_castps_si128(_mm_shuffle_ps::<0b10_00_10_00>(l01, l23)),
            _mm_castps_si128(_mm_shuffle_ps::<0b11_01_11_01>(l01, l23)),
            _mm_castps_si128(_mm_shuffle_ps::<0b10_00_10_00>(u01, u23)),
            _mm_castps_si128(_mm_shuffle_ps::<0b11_01_11_01>(u01, u23)),
        ];
        for j in 0..4 {
            let q4 = load32(bw, 16 + 32 * j);
            let lo = _mm256_and_si256(q4, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4);
            let scl = _mm256_set1_epi16(sc[2 * j]);
            let sch = _mm256_set1_epi16(sc[2 * j + 1]);
            let sums: [__m256i; 4] = std::array::from_fn(|t| {
                let ba = ab[t];
                let pl = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, load32(ba, 4 + 64 * j)), scl);
                let ph =
                    _mm256_madd_epi16(_mm256_maddubs_epi16(hi, load32(ba, 4 + 64 * j + 32)), sch);
                _mm256_add_epi32(pl, ph)
            });
            let ij = hsum_i32_8x4(sums[0], sums[1], sums[2], sums[3]);
            acc = _mm_fmadd_ps(_mm_cvtepi32_ps(ij), d, acc);
            acc_min = _mm_fmadd_ps(_mm_cvtepi32_ps(mj[j]), dmin, acc_min);
        }
    }
    let r = _mm_sub_ps(acc, acc_min);
    let mut o = [0f32; 4];
    // SAFETY: `o` has room for the four lanes; unaligned store.
    unsafe { _mm_storeu_ps(o.as_mut_ptr(), r) };
    *out = o;
}

/// Q6_K · Q8_K (see [`q6_k`] for `TILED`), four tokens.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q6_k_x4<const TILED: bool>(
    w: &[u8],
    a: &[u8],
    stride: usize,
    n: usize,
    out: &mut [f32; 4],
) {
    let m3 = _mm256_set1_epi8(3);
    let m15 = _mm256_set1_epi8(15);
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut acc_t = [0f32; 4];
    for (i, bw) in w.chunks_exact(210).take(n / 256).enumerate() {
        let wd = f16_hi(bw, 208);
        let sc = |g: usize| i16::from(bw[192 + g] as i8);
        let sc16 = _mm256_cvtepi8_epi16(load16(bw, 192));
        let mut q = [[_mm256_setzero_si256(); 4]; 2];
        for (j, qj) in q.iter_mut().enumerate() {
            let q4b1 = load32(bw, j * 64);
            let q4b2 = load32(bw, j * 64 + 32);
            let qh = load32(bw, 128 + j * 32);
            let h0 = _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4);
            let h1 = _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(12)), 2);
            let h2 = _mm256_and_si256(qh, _mm256_set1_epi8(48));
            let h3 = _mm256_srli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(-64)), 2);
            *qj = [
                _mm256_or_si256(_mm256_and_si256(q4b1, m15), h0),
                _mm256_or_si256(_mm256_and_si256(q4b2, m15), h1),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4b1, 4), m15), h2),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4b2, 4), m15), h3),
            ];
        }
        for t in 0..4 {
            let ba = act_block(a, stride, t, i, 292);
            let d = f32_at(ba, 0) * wd;
            let subv = _mm256_slli_epi32(_mm256_madd_epi16(load32(ba, 260), sc16), 5);
            let mut sumi = _mm256_setzero_si256();
            for (j, qj) in q.iter().enumerate() {
                for (k, qk) in qj.iter().enumerate() {
                    let p16 = _mm256_maddubs_epi16(*qk, load32(ba, 4 + j * 128 + 32 * k));
                    let g = 8 * j + 2 * k;
                    let scv = _mm256_set_m128i(_mm_set1_epi16(sc(g + 1)), _mm_set1_epi16(sc(g)));
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(scv, p16));
                }
            }
            sumi = _mm256_sub_epi32(sumi, subv);
            if TILED {
                let isum = hsum_i32_8(sumi);
                acc_t[t] = (wd * isum as f32).mul_add(f32_at(ba, 0), acc_t[t]);
            } else {
                acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc[t]);
            }
        }
    }
    for t in 0..4 {
        out[t] = if TILED {
            acc_t[t]
        } else {
            hsum_float_8(acc[t])
        };
    }
}
