//! Causal grouped-query attention over the f16 KV cache.
//!
//! Per query token `t` (position `pos0 + t`) and head `h`: the query is rounded
//! to f16 (ggml converts it to the K cache type before `K·Q`), scores
//! `s_j = (q·k_j)·scale` are computed in f32 for every visible key `j`
//! (`j ≤ pos`, and `pos - j < window` for sliding-window layers), softmax in
//! f32 (sum in f64), and the output is `Σ_j softmax(s)_j · v_j`.

use half::f16;
use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};

use super::CpuBackend;
use super::kernels::dot_f32;
use crate::backend::AttnParams;
use crate::error::{TensorError, need};

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
    let span = window.map_or(n_kv, |w| w.min(n_kv));
    let work = n_tokens * n_head * span * (hdk + hdv);

    be.par_units(out, hdv, n_tokens * n_head, work, |u0, part| {
        let mut qf = vec![0f32; hdk];
        let mut kf = vec![0f32; hdk];
        let mut vf = vec![0f32; hdv];
        let mut scores = vec![0f32; n_kv];
        for (i, o) in part.chunks_exact_mut(hdv).enumerate() {
            let u = u0 + i;
            let (t, h) = (u / n_head, u % n_head);
            let g = h / group;
            let pos = pos0 + t;
            let start = window.map_or(0, |w| (pos + 1).saturating_sub(w));
            let qrow = &q[u * hdk..(u + 1) * hdk];
            for (d, s) in qf.iter_mut().zip(qrow) {
                *d = f16::from_f32(*s).to_f32();
            }
            let sc = &mut scores[..pos + 1 - start];
            let mut max = f32::NEG_INFINITY;
            for (j, s) in (start..=pos).zip(sc.iter_mut()) {
                let off = j * kstride + g * hdk;
                k[off..off + hdk].convert_to_f32_slice(&mut kf);
                *s = dot_f32(&qf, &kf) * scale;
                max = max.max(*s);
            }
            let mut sum = 0f64;
            for s in sc.iter_mut() {
                *s = (*s - max).exp();
                sum += f64::from(*s);
            }
            let inv = (1.0 / sum) as f32;
            o.fill(0.0);
            for (j, &s) in (start..=pos).zip(sc.iter()) {
                let off = j * vstride + g * hdv;
                v[off..off + hdv].convert_to_f32_slice(&mut vf);
                let w = s * inv;
                for (od, vd) in o.iter_mut().zip(&vf) {
                    *od += w * vd;
                }
            }
        }
    });
    Ok(())
}
