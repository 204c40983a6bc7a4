//! Causal grouped-query attention over the f16 KV cache, in the arithmetic
//! of llama.cpp's CPU backend without flash attention:
//!
//! - `KQ = mul_mat(K, Q)`: the query is converted to f16; each score is an
//!   f16·f16 dot product accumulated in f32 lanes — 16 lanes (llamafile
//!   `tinyBLAS` with AVX-512) when the batch has ≥ 2 tokens, 4×16 lanes
//!   (`ggml_vec_dot_f16`) for a single token — then reduced in the order of
//!   `_mm512_reduce_add_ps`.
//! - softmax (`ggml_vec_soft_max_f32`): `exp` is ggml's vector `expf`, row sums
//!   are taken per 16 keys (aligned to key index 0, as over llama.cpp's padded
//!   KV view) and accumulated in f64; probabilities are `e · f32(1/sum)`.
//! - `KQV = mul_mat(Vᵀ, KQ)`: probabilities are converted to f16 and
//!   accumulated per output element in the same lane structure as `KQ`.
//!
//! Keys outside the causal/sliding window have probability exactly 0 in
//! llama.cpp, so skipping them leaves every lane sum unchanged.

// Lane-indexed loops mirror the SIMD lane layout being reproduced.
#![allow(clippy::needless_range_loop)]

use half::f16;
use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};

use super::CpuBackend;
use super::kernels::hsum16;
use super::ops::ggml_v_expf;
use crate::backend::AttnParams;
use crate::error::{TensorError, need};

/// Lane structure of an f16 dot product.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// tinyBLAS: 16 lanes, element `i` in lane `i % 16`.
    Batch,
    /// `ggml_vec_dot_f16`: 4 accumulators × 16 lanes (element `i` in
    /// accumulator `(i % 64) / 16`, lane `i % 16`), remainder `n % 64` in f64.
    Single,
}

/// `Σ a_i·b_i` over f32 values (already f16-exact) in `mode`'s order.
#[inline(always)]
fn dot_f16_order(a: &[f32], b: &[f32], mode: Mode) -> f32 {
    let n = a.len();
    match mode {
        Mode::Batch => {
            let mut acc = [0f32; 16];
            for (ca, cb) in a.chunks_exact(16).zip(b.chunks_exact(16)) {
                for m in 0..16 {
                    acc[m] = ca[m].mul_add(cb[m], acc[m]);
                }
            }
            hsum16(&acc)
        }
        Mode::Single => {
            let np = n & !63;
            let mut acc = [[0f32; 16]; 4];
            for (ca, cb) in a[..np].chunks_exact(64).zip(b[..np].chunks_exact(64)) {
                for (j, accj) in acc.iter_mut().enumerate() {
                    for m in 0..16 {
                        accj[m] = ca[16 * j + m].mul_add(cb[16 * j + m], accj[m]);
                    }
                }
            }
            let mut sum = reduce4(&acc);
            for i in np..n {
                sum += f64::from(a[i] * b[i]);
            }
            sum as f32
        }
    }
}

/// [`dot_f16_order`] with AVX2 intrinsics where the CPU has them (the same
/// lanes, FMAs and reduction order, so the same bits).
#[inline(always)]
fn dot_f16_order_fast(a: &[f32], b: &[f32], mode: Mode) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::kernels::has_avx2_fma() {
        // SAFETY: AVX2 and FMA were detected at runtime.
        return unsafe { simd::dot_f16_order(a, b, mode) };
    }
    dot_f16_order(a, b, mode)
}

/// `x[i] = ggml_v_expf(x[i] - max)` for sixteen values.
#[inline(always)]
fn exp16_fast(x: &mut [f32], max: f32) {
    #[cfg(target_arch = "x86_64")]
    if super::kernels::has_avx2_fma() {
        // SAFETY: AVX2 and FMA were detected at runtime.
        unsafe { simd::exp16(x, max) };
        return;
    }
    for v in x.iter_mut().take(16) {
        *v = ggml_v_expf(*v - max);
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    //! AVX2 versions of the attention's inner loops, operation for
    //! operation the scalar ones (checked against them by unit tests).
    use super::{Mode, ggml_v_expf};
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn load8(x: &[f32], i: usize) -> __m256 {
        let s = &x[i..i + 8];
        // SAFETY: `s` is exactly 8 readable f32; unaligned load.
        unsafe { _mm256_loadu_ps(s.as_ptr()) }
    }

    /// `((x0+x2)+(x1+x3))` of `lo + hi`: ggml's `hsum_float_8`, which is
    /// also GCC's `_mm512_reduce_add_ps` of the 16 lanes `lo ‖ hi`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum16(lo: __m256, hi: __m256) -> f32 {
        let t = _mm256_add_ps(hi, lo);
        let mut r = _mm_add_ps(_mm256_extractf128_ps(t, 1), _mm256_castps256_ps128(t));
        r = _mm_add_ps(r, _mm_movehl_ps(r, r));
        r = _mm_add_ss(r, _mm_movehdup_ps(r));
        _mm_cvtss_f32(r)
    }

    /// [`super::dot_f16_order`], vectorised.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn dot_f16_order(a: &[f32], b: &[f32], mode: Mode) -> f32 {
        let n = a.len().min(b.len());
        match mode {
            Mode::Batch => {
                let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                let mut i = 0;
                while i + 16 <= n {
                    lo = _mm256_fmadd_ps(load8(a, i), load8(b, i), lo);
                    hi = _mm256_fmadd_ps(load8(a, i + 8), load8(b, i + 8), hi);
                    i += 16;
                }
                hsum16(lo, hi)
            }
            Mode::Single => {
                let np = n & !63;
                let mut acc = [_mm256_setzero_ps(); 8];
                let mut i = 0;
                while i < np {
                    for (c, acc) in acc.iter_mut().enumerate() {
                        *acc = _mm256_fmadd_ps(load8(a, i + 8 * c), load8(b, i + 8 * c), *acc);
                    }
                    i += 64;
                }
                // x0[m] = (acc0[m] + acc2[m]) + (acc1[m] + acc3[m]), 16 lanes as 2 halves.
                let x_lo =
                    _mm256_add_ps(_mm256_add_ps(acc[0], acc[4]), _mm256_add_ps(acc[2], acc[6]));
                let x_hi =
                    _mm256_add_ps(_mm256_add_ps(acc[1], acc[5]), _mm256_add_ps(acc[3], acc[7]));
                let mut sum = f64::from(hsum16(x_lo, x_hi));
                for i in np..n {
                    sum += f64::from(a[i] * b[i]);
                }
                sum as f32
            }
        }
    }

    /// `ggml_v_expf(x - max)` on eight lanes, for `x - max ≤ 0`. The final
    /// `j·2ⁿ` is one f32 multiply, exact while 2ⁿ and the product are
    /// normal; groups with a lane below that range take the scalar path.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn exp8(x: __m256) -> Option<__m256> {
        let c = |b: u32| _mm256_set1_ps(f32::from_bits(b));
        let r = c(0x4b40_0000);
        let z = _mm256_fmadd_ps(x, c(0x3fb8_aa3b), r);
        let n = _mm256_sub_ps(z, r);
        // Any lane with n < -125 (2ⁿ·j may be subnormal) or n > 0: bail out.
        let low = _mm256_cmp_ps::<_CMP_LT_OQ>(n, _mm256_set1_ps(-125.0));
        let high = _mm256_cmp_ps::<_CMP_GT_OQ>(n, _mm256_setzero_ps());
        if _mm256_movemask_ps(_mm256_or_ps(low, high)) != 0 {
            return None;
        }
        let b = _mm256_fnmadd_ps(n, c(0x35bf_be8e), _mm256_fnmadd_ps(n, c(0x3f31_7200), x));
        let u = _mm256_mul_ps(b, b);
        let j = _mm256_fmadd_ps(
            _mm256_fmadd_ps(
                _mm256_fmadd_ps(c(0x3c07_2010), b, c(0x3d2b_9f17)),
                u,
                _mm256_fmadd_ps(c(0x3e2a_af33), b, c(0x3eff_fedb)),
            ),
            u,
            _mm256_fmadd_ps(c(0x3f7f_fff6), b, _mm256_set1_ps(1.0)),
        );
        let e = _mm256_slli_epi32(
            _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
            23,
        );
        Some(_mm256_mul_ps(j, _mm256_castsi256_ps(e)))
    }

    /// `x[i] = ggml_v_expf(x[i] - max)` for `x[..16]`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn exp16(x: &mut [f32], max: f32) {
        let m = _mm256_set1_ps(max);
        for h in 0..2 {
            let v = _mm256_sub_ps(load8(x, 8 * h), m);
            match exp8(v) {
                Some(e) => {
                    let s = &mut x[8 * h..8 * h + 8];
                    // SAFETY: `s` is exactly 8 writable f32; unaligned store.
                    unsafe { _mm256_storeu_ps(s.as_mut_ptr(), e) };
                }
                None => {
                    for v in &mut x[8 * h..8 * h + 8] {
                        *v = ggml_v_expf(*v - max);
                    }
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::super::{Mode, dot_f16_order};
        use super::*;

        fn rand(n: usize, seed: u32) -> Vec<f32> {
            let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
            (0..n)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 17;
                    s ^= s << 5;
                    (s as f32 / u32::MAX as f32) * 8.0 - 4.0
                })
                .collect()
        }

        #[test]
        fn vector_dots_equal_scalar_dots() {
            if !crate::cpu::kernels::has_avx2_fma() {
                eprintln!("SKIPPED: no AVX2/FMA");
                return;
            }
            for n in [16usize, 48, 64, 80, 128, 256, 100] {
                for seed in 0..20 {
                    let (a, b) = (rand(n, seed), rand(n, seed + 100));
                    for mode in [Mode::Batch, Mode::Single] {
                        if mode == Mode::Batch && n % 16 != 0 {
                            continue;
                        }
                        // SAFETY: AVX2 and FMA were detected above.
                        let got = unsafe { super::dot_f16_order(&a, &b, mode) };
                        let want = dot_f16_order(&a, &b, mode);
                        assert_eq!(got.to_bits(), want.to_bits(), "n={n} seed={seed}");
                    }
                }
            }
        }

        #[test]
        fn vector_exp_equals_scalar_exp() {
            if !crate::cpu::kernels::has_avx2_fma() {
                eprintln!("SKIPPED: no AVX2/FMA");
                return;
            }
            let mut checked = 0;
            for seed in 0..2000u32 {
                let scale = [0.01f32, 1.0, 10.0, 60.0, 100.0][(seed % 5) as usize];
                let mut x: Vec<f32> = rand(16, seed).iter().map(|v| v * scale).collect();
                let max = x.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
                let want: Vec<f32> = x.iter().map(|v| ggml_v_expf(v - max)).collect();
                // SAFETY: AVX2 and FMA were detected above.
                unsafe { exp16(&mut x, max) };
                for (g, w) in x.iter().zip(&want) {
                    assert_eq!(g.to_bits(), w.to_bits(), "seed {seed}: {g} vs {w}");
                    checked += 1;
                }
            }
            assert_eq!(checked, 32_000);
        }
    }
}

/// `GGML_F32x16_REDUCE` of four 16-lane accumulators, as f64.
#[inline(always)]
fn reduce4(acc: &[[f32; 16]; 4]) -> f64 {
    let mut x0 = [0f32; 16];
    for m in 0..16 {
        let a = acc[0][m] + acc[2][m];
        let b = acc[1][m] + acc[3][m];
        x0[m] = a + b;
    }
    f64::from(hsum16(&x0))
}

pub(crate) fn attention(
    be: &CpuBackend,
    q: &[f32],
    k: &[u16],
    v: &[u16],
    out: &mut [f32],
    p: &AttnParams,
) -> Result<(), TensorError> {
    let AttnParams {
        n_tokens,
        pos0,
        n_head,
        n_head_kv,
        head_dim_k: hdk,
        head_dim_v: hdv,
        scale,
        window,
    } = *p;
    if n_head_kv == 0 || n_head % n_head_kv != 0 {
        return Err(TensorError::shape(
            "attention",
            format!("n_head {n_head} is not a multiple of n_head_kv {n_head_kv}"),
        ));
    }
    if window == Some(0) {
        return Err(TensorError::shape("attention", "sliding window of 0"));
    }
    let kstride = n_head_kv * hdk;
    let vstride = n_head_kv * hdv;
    let n_kv = pos0.saturating_add(n_tokens);
    need("attention", n_kv.saturating_mul(kstride), k.len())?;
    need("attention", n_kv.saturating_mul(vstride), v.len())?;
    need("attention", n_tokens * n_head * hdk, q.len())?;
    need("attention", n_tokens * n_head * hdv, out.len())?;
    let group = n_head / n_head_kv;
    let k: &[f16] = k.reinterpret_cast();
    let v: &[f16] = v.reinterpret_cast();
    // Every key any query of this call can see, converted to f32 once (the
    // conversion is exact) instead of once per query head that reads it.
    let lo = window.map_or(0, |w| (pos0 + 1).saturating_sub(w));
    let mut scratch = be.kv_scratch.lock().unwrap_or_else(|e| e.into_inner());
    let (kn, vn) = ((n_kv - lo) * kstride, (n_kv - lo) * vstride);
    if scratch.len() < kn + vn {
        let extra = kn + vn - scratch.len();
        scratch.try_reserve(extra).map_err(|_| TensorError::Alloc {
            bytes: ((kn + vn) * 4) as u128,
        })?;
        scratch.resize(kn + vn, 0.0);
    }
    let (kf, rest) = scratch.split_at_mut(kn);
    let vf = &mut rest[..vn];
    k[lo * kstride..n_kv * kstride].convert_to_f32_slice(kf);
    v[lo * vstride..n_kv * vstride].convert_to_f32_slice(vf);
    let (k, v) = (&*kf, &*vf);
    let span = window.map_or(n_kv, |w| w.min(n_kv));
    let work = n_tokens * n_head * span * (hdk + hdv);
    // llama.cpp uses tinyBLAS for ≥ 2 query rows (and K rows a multiple of 16 wide).
    let kq_mode = if n_tokens >= 2 && hdk % 16 == 0 {
        Mode::Batch
    } else {
        Mode::Single
    };
    let kqv_mode = if n_tokens >= 2 {
        Mode::Batch
    } else {
        Mode::Single
    };

    let ctx = Ctx {
        q,
        k,
        v,
        n_head,
        group,
        hdk,
        hdv,
        kstride,
        vstride,
        pos0,
        lo,
        n_kv,
        scale,
        window,
        kq_mode,
        kqv_mode,
    };
    // A unit's cost: the keys its query sees (later tokens see more).
    let keys = |u: usize| {
        let pos = pos0 + u / n_head;
        pos + 1 - window.map_or(0, |w| (pos + 1).saturating_sub(w))
    };
    be.par_units_weighted(out, hdv, n_tokens * n_head, work, keys, |u0, part| {
        run_units(&ctx, u0, part)
    });
    Ok(())
}

/// Everything one attention call needs, shared by the worker threads.
struct Ctx<'a> {
    q: &'a [f32],
    /// Keys `lo..n_kv` as f32, `[n_kv - lo, kstride]`.
    k: &'a [f32],
    /// Values `lo..n_kv` as f32, `[n_kv - lo, vstride]`.
    v: &'a [f32],
    n_head: usize,
    group: usize,
    hdk: usize,
    hdv: usize,
    kstride: usize,
    vstride: usize,
    pos0: usize,
    /// First key held in `k`/`v`.
    lo: usize,
    n_kv: usize,
    scale: f32,
    window: Option<usize>,
    kq_mode: Mode,
    kqv_mode: Mode,
}

/// `x[i] = f32(f16(x[i] · s))`: the probabilities as ggml rounds them for
/// the f16 KQV product (F16C eight at a time where present: `half`'s scalar
/// conversion checks for F16C at run time on every call).
fn scale_round_f16(x: &mut [f32], s: f32) {
    #[cfg(target_arch = "x86_64")]
    if super::kernels::has_avx2_fma() {
        // SAFETY: AVX2, FMA and F16C were detected at runtime.
        unsafe { scale_round_f16_f16c(x, s) };
        return;
    }
    for p in x {
        *p = f16::from_f32(*p * s).to_f32();
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn scale_round_f16_f16c(x: &mut [f32], s: f32) {
    use std::arch::x86_64::*;
    let (chunks, rest) = x.as_chunks_mut::<8>();
    let sv = _mm256_set1_ps(s);
    for c in chunks {
        // SAFETY: `c` is 8 f32; unaligned load and store.
        unsafe {
            let v = _mm256_mul_ps(_mm256_loadu_ps(c.as_ptr()), sv);
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
            _mm256_storeu_ps(c.as_mut_ptr(), _mm256_cvtph_ps(h));
        }
    }
    for p in rest {
        *p = f16::from_f32(*p * s).to_f32();
    }
}

/// Value dimensions one register-held partial sum of the KQV product covers.
const KQV_CHUNK: usize = 64;

/// Computes output units `u0..` (one unit = one token × head, `hdv` values) into `part`.
fn run_units(ctx: &Ctx<'_>, u0: usize, part: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::kernels::has_avx2_fma() {
        // SAFETY: AVX2 and FMA were detected at runtime.
        unsafe { run_units_avx2(ctx, u0, part) };
        return;
    }
    run_units_body(ctx, u0, part);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn run_units_avx2(ctx: &Ctx<'_>, u0: usize, part: &mut [f32]) {
    run_units_body(ctx, u0, part);
}

#[inline(always)]
fn run_units_body(ctx: &Ctx<'_>, u0: usize, part: &mut [f32]) {
    let Ctx {
        q,
        k,
        v,
        n_head,
        group,
        hdk,
        hdv,
        kstride,
        vstride,
        pos0,
        lo,
        n_kv,
        scale,
        window,
        kq_mode,
        kqv_mode,
    } = *ctx;
    let mut qf = vec![0f32; hdk];
    let mut scores = vec![0f32; n_kv + 16];
    // Lane accumulators of KQV: [lane][hdv].
    let lanes = if kqv_mode == Mode::Batch { 16 } else { 64 };
    let mut acc = vec![0f32; lanes * hdv];
    for (i, o) in part.chunks_exact_mut(hdv).enumerate() {
        let u = u0 + i;
        let (t, h) = (u / n_head, u % n_head);
        let g = h / group;
        let pos = pos0 + t;
        let start = window.map_or(0, |w| (pos + 1).saturating_sub(w));
        for (d, s) in qf.iter_mut().zip(&q[u * hdk..(u + 1) * hdk]) {
            *d = f16::from_f32(*s).to_f32();
        }
        // Scores for keys start..=pos, stored at their key index; others are -inf (p = 0).
        let mut max = f32::NEG_INFINITY;
        for j in start..=pos {
            let off = (j - lo) * kstride + g * hdk;
            let s = dot_f16_order_fast(&k[off..off + hdk], &qf, kq_mode) * scale;
            scores[j] = s;
            max = max.max(s);
        }
        // Softmax with sums per aligned group of 16 keys.
        let mut sum = 0f64;
        let g0 = start / 16 * 16;
        let mut gs = g0;
        while gs <= pos {
            let mut lane = [0f32; 16];
            if gs >= start && gs + 15 <= pos {
                // A whole group inside the window: sixteen lanes at once.
                exp16_fast(&mut scores[gs..gs + 16], max);
                lane.copy_from_slice(&scores[gs..gs + 16]);
            } else {
                for (m, l) in lane.iter_mut().enumerate() {
                    let j = gs + m;
                    if j >= start && j <= pos {
                        let e = ggml_v_expf(scores[j] - max);
                        scores[j] = e;
                        *l = e;
                    }
                }
            }
            sum += f64::from(hsum16(&lane));
            gs += 16;
        }
        let inv = (1.0 / sum) as f32;
        acc.fill(0.0);
        // Key j adds p_j · v_j into lane j % lanes, in key order within a lane.
        scale_round_f16(&mut scores[start..=pos], inv);
        if hdv.is_multiple_of(KQV_CHUNK) {
            // Lane by lane and 64 dimensions at a time, so that the partial
            // sums stay in registers (the same operations in the same order).
            for m in 0..lanes {
                let first = start + (m + lanes - start % lanes) % lanes;
                for c in (0..hdv).step_by(KQV_CHUNK) {
                    let mut r = [0f32; KQV_CHUNK];
                    for j in (first..=pos).step_by(lanes) {
                        let pj = scores[j];
                        let off = (j - lo) * vstride + g * hdv + c;
                        let vf = &v[off..off + KQV_CHUNK];
                        for (ad, vd) in r.iter_mut().zip(vf) {
                            *ad = vd.mul_add(pj, *ad);
                        }
                    }
                    acc[m * hdv + c..m * hdv + c + KQV_CHUNK].copy_from_slice(&r);
                }
            }
        } else {
            for j in start..=pos {
                let pj = scores[j];
                let off = (j - lo) * vstride + g * hdv;
                let vf = &v[off..off + hdv];
                let a = &mut acc[(j % lanes) * hdv..(j % lanes + 1) * hdv];
                for (ad, vd) in a.iter_mut().zip(vf) {
                    *ad = vd.mul_add(pj, *ad);
                }
            }
        }
        for (d, od) in o.iter_mut().enumerate() {
            *od = match kqv_mode {
                Mode::Batch => {
                    let mut l16 = [0f32; 16];
                    for (m, l) in l16.iter_mut().enumerate() {
                        *l = acc[m * hdv + d];
                    }
                    hsum16(&l16)
                }
                Mode::Single => {
                    let mut l4 = [[0f32; 16]; 4];
                    for (j, lj) in l4.iter_mut().enumerate() {
                        for (m, l) in lj.iter_mut().enumerate() {
                            *l = acc[(16 * j + m) * hdv + d];
                        }
                    }
                    reduce4(&l4) as f32
                }
            };
        }
    }
}
