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
    quantize_q8_body(x, dst, q8_1);
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
    for (t, dst) in act.chunks_exact_mut(arb).enumerate() {
        quantize_act(aty, &x[t * k..(t + 1) * k], dst)?;
    }
    let act = &*act;
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
