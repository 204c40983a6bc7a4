//! Element-wise and row-wise CPU ops: dequantizing one row, RMSNorm, RoPE,
//! gated activations. Each mirrors the arithmetic of ggml's CPU kernel
//! (`ggml_compute_forward_rms_norm_f32`, `ggml_rope_cache_init`,
//! `ggml_vec_swiglu_f32`, `ggml_vec_geglu_f32`).

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
                return Err(TensorError::UnsupportedType { op: "dequantize", ty });
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
    let n_dims = p.n_dims;
    if n_dims == 0 || head_dim == 0 {
        return;
    }
    let theta_scale = p.freq_base.powf(-2.0 / n_dims as f32);
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
        let mut theta = (pos0 + t) as f32;
        for i0 in (0..n_dims).step_by(2) {
            let ff = freq_factors.map_or(1.0, |f| f[i0 / 2]);
            let th = p.freq_scale * (theta / ff);
            cache[i0] = th.cos();
            cache[i0 + 1] = th.sin();
            theta *= theta_scale;
        }
        for h in 0..n_heads {
            let base = (t * n_heads + h) * head_dim;
            let row = &mut x[base..base + head_dim];
            match p.kind {
                RopeKind::Normal => {
                    for i0 in (0..n_dims).step_by(2) {
                        let (c, s) = (cache[i0], cache[i0 + 1]);
                        let (x0, x1) = (row[i0], row[i0 + 1]);
                        row[i0] = x0 * c - x1 * s;
                        row[i0 + 1] = x0 * s + x1 * c;
                    }
                }
                RopeKind::Neox => {
                    let half = n_dims / 2;
                    for i0 in (0..n_dims).step_by(2) {
                        let (c, s) = (cache[i0], cache[i0 + 1]);
                        let ic = i0 / 2;
                        let (x0, x1) = (row[ic], row[ic + half]);
                        row[ic] = x0 * c - x1 * s;
                        row[ic + half] = x0 * s + x1 * c;
                    }
                }
            }
        }
    }
}

/// ggml's tanh-approximated GELU in f32.
pub(crate) fn gelu_f32(x: f32) -> f32 {
    const GELU_COEF_A: f32 = 0.044715;
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + GELU_COEF_A * x * x)).tanh())
}

/// ggml's `ggml_table_gelu_f16`: GELU of every f16 value, rounded to f16.
fn gelu_table() -> &'static [f32] {
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

/// `silu(x) = x / (1 + e^-x)`.
pub(crate) fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `gate = act(gate) * up`.
pub(crate) fn glu(gate: &mut [f32], up: &[f32], kind: GluKind) {
    match kind {
        GluKind::SwiGlu => {
            for (g, &u) in gate.iter_mut().zip(up) {
                *g = silu(*g) * u;
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
