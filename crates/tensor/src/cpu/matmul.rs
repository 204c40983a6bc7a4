//! Quantized matrix × activations, the way ggml's CPU `mul_mat` does it:
//! each activation row is converted once to the weight type's
//! `vec_dot_type` (Q8_0 / Q8_1 / Q8_K / F16 / BF16 / F32), then every output
//! element is one `vec_dot` of a weight row with an activation row.
//!
//! Loop order: weight rows outer, tokens inner, so a weight row is read from
//! memory once per batch. Threads take contiguous token ranges (prompt
//! processing) or contiguous weight-row ranges (one token).

use half::{bf16, f16};
use zeta_gguf::GgmlType;

use super::kernels::{Dot4Fn, DotFn, kernel_for, kernel4_for};
use super::{CpuBackend, CpuWeight};
use crate::error::TensorError;

/// How one weight row is dotted with one activation row.
#[derive(Clone, Copy)]
enum Kernel {
    /// A specialised kernel of [`super::kernels`].
    Fast(DotFn),
    /// `zeta_quant::vec_dot` (reference) for types without a fast kernel.
    Reference(GgmlType),
}

impl Kernel {
    #[inline]
    fn dot(self, w: &[u8], a: &[u8], n: usize) -> f32 {
        match self {
            Kernel::Fast(f) => f(w, a, n),
            // Validated once before the loops (see `matmul`), so this cannot fail.
            Kernel::Reference(ty) => zeta_quant::vec_dot(ty, w, a, n).unwrap_or(f32::NAN),
        }
    }
}

/// Q8_0 / Q8_1 activation quantization as ggml's x86 `quantize_row_q8_0/1`
/// does it (not the `_ref` variant): `id = 127/amax`, round half to even, and
/// for Q8_1 `s = f16(d · Σq)`. Blocks are 34 (Q8_0) or 36 (Q8_1) bytes.
pub fn quantize_q8_x86(x: &[f32], dst: &mut [u8], q8_1: bool) {
    #[cfg(target_arch = "x86_64")]
    if super::kernels::has_avx2_fma() {
        // SAFETY: AVX2, FMA and F16C were detected at runtime.
        unsafe { quantize_q8_avx2(x, dst, q8_1) };
        return;
    }
    quantize_q8_body(x, dst, q8_1);
}

/// [`quantize_q8_body`] compiled with AVX2 (and so SSE4.1's `roundss` for
/// `round_ties_even` instead of a libm call per element).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn quantize_q8_avx2(x: &[f32], dst: &mut [u8], q8_1: bool) {
    use std::arch::x86_64::*;
    let bb = if q8_1 { 36 } else { 34 };
    let qoff = if q8_1 { 4 } else { 2 };
    let nb = (x.len() / 32).min(dst.len() / bb);
    let (xs, _) = x.as_chunks::<32>();
    for (xb, yb) in xs.iter().zip(dst.chunks_exact_mut(bb)).take(nb) {
        // SAFETY: `xb` is 32 readable f32; unaligned loads.
        let v: [__m256; 4] =
            std::array::from_fn(|i| unsafe { _mm256_loadu_ps(xb[8 * i..].as_ptr()) });
        let sign = _mm256_set1_ps(-0.0);
        let mut m = _mm256_andnot_ps(sign, v[0]);
        for vi in &v[1..] {
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, *vi));
        }
        let m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
        let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mul = _mm256_set1_ps(id);
        // Round half to even, as `_mm256_round_ps(_MM_ROUND_NEAREST)`.
        let q: [__m256i; 4] = std::array::from_fn(|i| {
            _mm256_cvtps_epi32(_mm256_round_ps::<
                { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
            >(_mm256_mul_ps(v[i], mul)))
        });
        // i32 → i8 with saturation, then undo the lane interleave of the packs.
        let p01 = _mm256_packs_epi32(q[0], q[1]);
        let p23 = _mm256_packs_epi32(q[2], q[3]);
        let p = _mm256_packs_epi16(p01, p23);
        let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        let out = &mut yb[qoff..qoff + 32];
        // SAFETY: `out` is exactly 32 writable bytes; unaligned store.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), p) };
        yb[0..2].copy_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
        if q8_1 {
            let s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            let s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            let s4 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
            let sum = _mm_cvtsi128_si32(_mm_add_epi32(s4, _mm_shuffle_epi32::<1>(s4)));
            yb[2..4].copy_from_slice(&f16::from_f32(d * sum as f32).to_bits().to_le_bytes());
        }
    }
}

#[inline(always)]
fn quantize_q8_body(x: &[f32], dst: &mut [u8], q8_1: bool) {
    let bb = if q8_1 { 36 } else { 34 };
    let qoff = if q8_1 { 4 } else { 2 };
    for (xb, yb) in x.chunks_exact(32).zip(dst.chunks_exact_mut(bb)) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for (q, v) in yb[qoff..qoff + 32].iter_mut().zip(xb) {
            let r = (v * id).round_ties_even().clamp(-128.0, 127.0) as i32;
            sum += r;
            *q = r as i8 as u8;
        }
        yb[0..2].copy_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
        if q8_1 {
            yb[2..4].copy_from_slice(&f16::from_f32(d * sum as f32).to_bits().to_le_bytes());
        }
    }
}

/// Converts one f32 activation row to `ty` (the weight's `vec_dot_type`).
pub fn quantize_act(ty: GgmlType, x: &[f32], dst: &mut [u8]) -> Result<(), TensorError> {
    match ty {
        GgmlType::F32 => {
            for (d, v) in dst.chunks_exact_mut(4).zip(x) {
                d.copy_from_slice(&v.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (d, v) in dst.chunks_exact_mut(2).zip(x) {
                d.copy_from_slice(&f16::from_f32(*v).to_bits().to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for (d, v) in dst.chunks_exact_mut(2).zip(x) {
                d.copy_from_slice(&bf16::from_f32(*v).to_bits().to_le_bytes());
            }
        }
        GgmlType::Q8_0 | GgmlType::Q8_1
            if x.len().is_multiple_of(32) && dst.len() == ty.type_size() * (x.len() / 32) =>
        {
            quantize_q8_x86(x, dst, ty == GgmlType::Q8_1)
        }
        _ => zeta_quant::quantize(ty, x, dst)?,
    }
    Ok(())
}

/// `out[t*rows + r] = w[r] · x[t]` for `t < n_tokens` (sizes checked by the caller).
pub(crate) fn matmul(
    be: &CpuBackend,
    w: &CpuWeight,
    x: &[f32],
    out: &mut [f32],
    n_tokens: usize,
    scratch: &mut Vec<u8>,
) -> Result<(), TensorError> {
    let (m, k) = (w.rows, w.cols);
    if n_tokens == 0 || m == 0 {
        return Ok(());
    }
    let wty = w.ty;
    let aty = match wty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => wty,
        _ => zeta_quant::vec_dot_type(wty),
    };
    let kernel_at = |t: usize| match kernel_for(wty, m, t, n_tokens) {
        Some(f) => Kernel::Fast(f),
        None => Kernel::Reference(wty),
    };
    let kernel = kernel_at(0);
    let arb = aty
        .row_bytes(k as u64)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| {
            TensorError::shape(
                "matmul",
                format!("row length {k} does not fit {aty} blocks (weight type {wty})"),
            )
        })?;
    let need = arb
        .checked_mul(n_tokens)
        .ok_or(TensorError::Alloc { bytes: u128::MAX })?;
    if scratch.len() < need {
        scratch
            .try_reserve(need - scratch.len())
            .map_err(|_| TensorError::Alloc {
                bytes: need as u128,
            })?;
        scratch.resize(need, 0);
    }
    let act = &mut scratch[..need];
    // The first row alone surfaces a conversion error (the same for every
    // row); the rest are converted in parallel.
    let (first, rest) = act.split_at_mut(arb);
    quantize_act(aty, &x[..k], first)?;
    be.par_units(
        rest,
        arb,
        n_tokens - 1,
        (n_tokens - 1) * k * 8,
        |t0, part| {
            for (i, dst) in part.chunks_exact_mut(arb).enumerate() {
                let t = 1 + t0 + i;
                // Cannot fail: the first row's conversion succeeded.
                let _ = quantize_act(aty, &x[t * k..(t + 1) * k], dst);
            }
        },
    );
    let act = &*act;
    if super::gemm::applies(w, n_tokens) {
        super::gemm::gemm(be, w, act, arb, out, n_tokens);
        return Ok(());
    }
    let wb = w.bytes();
    let rb = w.row_bytes;
    if let Kernel::Reference(ty) = kernel {
        // Surface type errors once instead of per element.
        zeta_quant::vec_dot(ty, &wb[..rb], &act[..arb], k)?;
    }
    let work = m * k * n_tokens;
    if n_tokens >= be.threads() && n_tokens > 1 {
        be.par_units(&mut out[..n_tokens * m], m, n_tokens, work, |t0, part| {
            let nt = part.len() / m;
            // Per token group: a four-token kernel, or one kernel per token.
            let mut groups: Vec<(usize, Option<Dot4Fn>)> = Vec::with_capacity(nt);
            let mut tt = 0;
            while tt < nt {
                let k4 = if tt + 4 <= nt {
                    kernel4_for(wty, m, t0 + tt, n_tokens)
                } else {
                    None
                };
                groups.push((tt, k4));
                tt += if k4.is_some() { 4 } else { 1 };
            }
            let kernels: Vec<Kernel> = (t0..t0 + nt).map(kernel_at).collect();
            let mut quad = [0f32; 4];
            for r in 0..m {
                let wrow = &wb[r * rb..(r + 1) * rb];
                for &(tt, k4) in &groups {
                    let t = t0 + tt;
                    match k4 {
                        Some(f) => {
                            f(wrow, &act[t * arb..(t + 4) * arb], arb, k, &mut quad);
                            for (j, v) in quad.iter().enumerate() {
                                part[(tt + j) * m + r] = *v;
                            }
                        }
                        None => {
                            part[tt * m + r] =
                                kernels[tt].dot(wrow, &act[t * arb..(t + 1) * arb], k);
                        }
                    }
                }
            }
        });
    } else {
        for t in 0..n_tokens {
            let kernel = kernel_at(t);
            let arow = &act[t * arb..(t + 1) * arb];
            be.par_units(&mut out[t * m..(t + 1) * m], 1, m, m * k, |r0, part| {
                for (i, o) in part.iter_mut().enumerate() {
                    let r = r0 + i;
                    *o = kernel.dot(&wb[r * rb..(r + 1) * rb], arow, k);
                }
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 activation quantizer writes the same bytes as the portable one
    /// (random rows at several scales, an all-zero block, ties at ±0.5 steps).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx2_quantizer_equals_portable() {
        if !super::super::kernels::has_avx2_fma() {
            eprintln!("SKIPPED: no AVX2/FMA");
            return;
        }
        let mut s = 0x1234_5678u32;
        let mut rnd = || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s as f32 / u32::MAX as f32 - 0.5
        };
        for case in 0..200 {
            let scale = [1e-3f32, 1.0, 37.0, 1e4][case % 4];
            let mut x: Vec<f32> = (0..256).map(|_| rnd() * scale).collect();
            x[..32].fill(0.0);
            // Values that land exactly on k + 0.5 after scaling by 127/amax.
            x[32] = 127.0;
            x[33] = 0.5;
            x[34] = -2.5;
            for q8_1 in [false, true] {
                let bb = if q8_1 { 36 } else { 34 };
                let mut a = vec![0u8; 8 * bb];
                let mut b = vec![0u8; 8 * bb];
                // SAFETY: AVX2, FMA and F16C were detected above.
                unsafe { quantize_q8_avx2(&x, &mut a, q8_1) };
                quantize_q8_body(&x, &mut b, q8_1);
                assert_eq!(a, b, "case {case} q8_1={q8_1}");
            }
        }
    }
}
