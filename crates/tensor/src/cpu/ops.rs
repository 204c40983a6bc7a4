//! Element-wise and row-wise CPU ops: dequantizing one row, RMSNorm, RoPE,
//! gated activations. Each mirrors the arithmetic of ggml's CPU kernel
//! (`ggml_compute_forward_rms_norm_f32`, `ggml_rope_cache_init`,
//! `ggml_vec_swiglu_f32`, `ggml_vec_geglu_f32`).

// Lane-indexed loops mirror the SIMD lane layout being reproduced.
#![allow(clippy::needless_range_loop)]

use std::sync::OnceLock;

use half::{bf16, f16};
use zeta_gguf::GgmlType;

use crate::backend::{GluKind, RopeKind, RopeParams};
use crate::error::TensorError;

/// Dequantizes one row (`src` holds whole blocks for `dst.len()` elements).
pub(crate) fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), TensorError> {
    let n = dst.len();
    let expect = ty.row_bytes(n as u64).unwrap_or(u64::MAX);
    if src.len() as u64 != expect {
        return Err(TensorError::shape(
            "dequantize",
            format!("{} bytes for {n} elements of {ty}", src.len()),
        ));
    }
    match ty {
        GgmlType::F32 => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        _ => {
            if !zeta_quant::can_dequantize(ty) {
                return Err(TensorError::UnsupportedType {
                    op: "dequantize",
                    ty,
                });
            }
            zeta_quant::dequantize(ty, src, dst)?;
        }
    }
    Ok(())
}

/// RMSNorm of every row of `x` (row length `w.len()`), then `* w`.
pub(crate) fn rms_norm_rows(x: &mut [f32], w: &[f32], eps: f32) {
    let n = w.len();
    if n == 0 {
        return;
    }
    for row in x.chunks_exact_mut(n) {
        let sum: f64 = row.iter().map(|&v| f64::from(v * v)).sum();
        let mean = (sum / n as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for (v, &wv) in row.iter_mut().zip(w) {
            *v = (*v * scale) * wv;
        }
    }
}

/// RoPE on `x = [n_tokens, n_heads, head_dim]` (see [`crate::Backend::rope`]).
pub(crate) fn rope(
    x: &mut [f32],
    n_tokens: usize,
    n_heads: usize,
    head_dim: usize,
    pos0: usize,
    p: &RopeParams,
    freq_factors: Option<&[f32]>,
) {
    #[cfg(target_arch = "x86_64")]
    if super::kernels::has_avx2_fma() {
        // SAFETY: AVX2 and FMA were detected at runtime.
        unsafe { rope_avx2(x, n_tokens, n_heads, head_dim, pos0, p, freq_factors) };
        return;
    }
    rope_body(x, n_tokens, n_heads, head_dim, pos0, p, freq_factors);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn rope_avx2(
    x: &mut [f32],
    n_tokens: usize,
    n_heads: usize,
    head_dim: usize,
    pos0: usize,
    p: &RopeParams,
    freq_factors: Option<&[f32]>,
) {
    rope_body(x, n_tokens, n_heads, head_dim, pos0, p, freq_factors);
}

#[inline(always)]
fn rope_body(
    x: &mut [f32],
    n_tokens: usize,
    n_heads: usize,
    head_dim: usize,
    pos0: usize,
    p: &RopeParams,
    freq_factors: Option<&[f32]>,
) {
    let n_dims = p.n_dims;
    if n_dims == 0 || head_dim == 0 {
        return;
    }
    let theta_scale = rope_theta_scale(p);
    // cos/sin per rotated pair, recomputed per token like ggml's cache.
    let mut cache = [0f32; 1024];
    let mut cache_vec;
    let cache: &mut [f32] = if n_dims <= cache.len() {
        &mut cache[..n_dims]
    } else {
        cache_vec = vec![0f32; n_dims];
        &mut cache_vec
    };
    for t in 0..n_tokens {
        rope_cache_row(pos0 + t, theta_scale, p.freq_scale, freq_factors, cache);
        for h in 0..n_heads {
            let base = (t * n_heads + h) * head_dim;
            let row = &mut x[base..base + head_dim];
            match p.kind {
                RopeKind::Normal => {
                    for i0 in (0..n_dims).step_by(2) {
                        let (c, s) = (cache[i0], cache[i0 + 1]);
                        let (x0, x1) = (row[i0], row[i0 + 1]);
                        (row[i0], row[i0 + 1]) = rot(x0, x1, c, s);
                    }
                }
                RopeKind::Neox => {
                    let half = n_dims / 2;
                    for i0 in (0..n_dims).step_by(2) {
                        let (c, s) = (cache[i0], cache[i0 + 1]);
                        let ic = i0 / 2;
                        let (x0, x1) = (row[ic], row[ic + half]);
                        (row[ic], row[ic + half]) = rot(x0, x1, c, s);
                    }
                }
            }
        }
    }
}

/// RoPE's `(cos θ_i, sin θ_i)` at position `pos` for the pairs of `cache`
/// (`n_dims` values: pair i at `2i, 2i + 1`), as ggml's `ggml_rope_cache_init`:
/// θ_0 = pos, θ_{i+1} = θ_i · theta_scale, angle = freq_scale · (θ_i / ff_i).
#[inline(always)]
pub fn rope_cache_row(
    pos: usize,
    theta_scale: f32,
    freq_scale: f32,
    freq_factors: Option<&[f32]>,
    cache: &mut [f32],
) {
    let mut theta = pos as f32;
    for i0 in (0..cache.len() & !1).step_by(2) {
        let ff = freq_factors.map_or(1.0, |f| f[i0 / 2]);
        let th = freq_scale * (theta / ff);
        cache[i0] = th.cos();
        cache[i0 + 1] = th.sin();
        theta *= theta_scale;
    }
}

/// The theta scale of [`rope_cache_row`]: `freq_base^(-2 / n_dims)`.
pub fn rope_theta_scale(p: &RopeParams) -> f32 {
    p.freq_base.powf(-2.0 / p.n_dims as f32)
}

/// One RoPE rotation, contracted the way GCC compiles ggml's
/// `x0*cos - x1*sin`, `x0*sin + x1*cos` (fused multiply-add on the first product).
#[inline(always)]
fn rot(x0: f32, x1: f32, c: f32, s: f32) -> (f32, f32) {
    (x0.mul_add(c, -(x1 * s)), x0.mul_add(s, x1 * c))
}

/// ggml's tanh-approximated GELU in f32.
pub(crate) fn gelu_f32(x: f32) -> f32 {
    const GELU_COEF_A: f32 = 0.044715;
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    // GCC contracts `1.0f + GELU_COEF_A*x*x` into one fused multiply-add.
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (GELU_COEF_A * x).mul_add(x, 1.0)).tanh())
}

/// ggml's `ggml_table_gelu_f16`: GELU of every f16 value, rounded to f16.
pub fn gelu_table() -> &'static [f32] {
    static TABLE: OnceLock<Vec<f32>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| f16::from_f32(gelu_f32(f16::from_bits(bits).to_f32())).to_f32())
            .collect()
    })
}

/// GELU as ggml's CPU backend computes it (`GGML_GELU_FP16`): inputs in
/// (-10, 10) are rounded to f16 and looked up in an f16 table.
pub(crate) fn gelu_ggml(x: f32, table: &[f32]) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        table[usize::from(f16::from_f32(x).to_bits())]
    }
}

/// ggml's vectorised `expf` (`ggml_v_expf`, AVX-512 variant), one lane:
/// a degree-5 polynomial on the reduced argument, scaled by `2^n`. Max error
/// about 1.5 ulp; evaluated with the same fused multiply-adds so results are
/// bit-identical to ggml's.
#[inline(always)]
pub fn ggml_v_expf(x: f32) -> f32 {
    let c = f32::from_bits;
    let r = c(0x4b40_0000); // 0x1.8p23
    let z = x.mul_add(c(0x3fb8_aa3b), r);
    let n = z - r;
    let b = (-n).mul_add(c(0x35bf_be8e), (-n).mul_add(c(0x3f31_7200), x));
    let u = b * b;
    let j = c(0x3c07_2010)
        .mul_add(b, c(0x3d2b_9f17))
        .mul_add(u, c(0x3e2a_af33).mul_add(b, c(0x3eff_fedb)))
        .mul_add(u, c(0x3f7f_fff6).mul_add(b, 1.0));
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    // `_mm512_scalef_ps(j, n)`: j·2^n with one rounding (exact in f64).
    // 2^n is built from its exponent bits (|n| ≤ 192 is a normal f64):
    // `powi` would be a libm call per element.
    let pow2 = f64::from_bits(((n as i64 + 1023) as u64) << 52);
    (f64::from(j) * pow2) as f32
}

/// SiLU as ggml's vector path computes it: `x / (1 + ggml_v_expf(0 - x))`.
#[inline(always)]
pub fn silu_vec(x: f32) -> f32 {
    x / (1.0 + ggml_v_expf(0.0 - x))
}

/// SiLU as ggml's scalar tail computes it (`ggml_silu_f32`, libm `expf`).
pub fn silu_scalar(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `gate = act(gate) * up` for one row.
pub(crate) fn glu(gate: &mut [f32], up: &[f32], kind: GluKind) {
    #[cfg(target_arch = "x86_64")]
    if super::kernels::has_avx2_fma() {
        // SAFETY: AVX2 and FMA were detected at runtime.
        unsafe { glu_avx2(gate, up, kind) };
        return;
    }
    glu_body(gate, up, kind);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn glu_avx2(gate: &mut [f32], up: &[f32], kind: GluKind) {
    glu_body(gate, up, kind);
}

#[inline(always)]
fn glu_body(gate: &mut [f32], up: &[f32], kind: GluKind) {
    match kind {
        GluKind::SwiGlu => {
            // ggml_vec_swiglu_f32: 16-wide vector body, scalar tail.
            let body = gate.len() / 16 * 16;
            for (g, &u) in gate[..body].iter_mut().zip(up) {
                *g = silu_vec(*g) * u;
            }
            for (g, &u) in gate[body..].iter_mut().zip(&up[body..]) {
                *g = silu_scalar(*g) * u;
            }
        }
        GluKind::GeGlu => {
            let table = gelu_table();
            for (g, &u) in gate.iter_mut().zip(up) {
                *g = gelu_ggml(*g, table) * u;
            }
        }
    }
}
