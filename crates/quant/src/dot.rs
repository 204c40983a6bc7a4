//! Reference dot products `weights · activations`, computed the way ggml's
//! generic C kernels do (`ggml_vec_dot_*_generic` in ggml-cpu/quants.c and
//! the scalar `ggml_vec_dot_f32/f16/bf16` in ggml-cpu/vec.cpp): integer sums
//! inside each block, then one float multiply-add per block (or per 8-lane
//! accumulator for Q3_K..Q6_K), in ggml's order.
//!
//! The activation row is quantized to [`vec_dot_type`] of the weight type
//! first (Q8_0, Q8_1 or Q8_K; see [`crate::quantize`]).

// The loops mirror ggml's index arithmetic one to one, which keeps them
// checkable against the C reference; iterator rewrites would obscure that.
#![allow(clippy::needless_range_loop)]

use crate::QuantError;
use crate::blocks::*;
use crate::dequant::{bf16_to_f32, check_len};
use bytemuck::Pod;
use half::f16;
use std::borrow::Cow;
use zeta_gguf::GgmlType;

/// The activation type ggml's CPU backend pairs with weight type `w`:
/// Q4_0, Q5_0, Q8_0, IQ4_NL (and MXFP4) → Q8_0; Q4_1, Q5_1 → Q8_1;
/// Q2_K..Q6_K and the i-quants → Q8_K; F16 → F16; BF16 → BF16; everything
/// else → itself. [`vec_dot`] supports the pairs listed in [`can_vec_dot`].
pub fn vec_dot_type(w: GgmlType) -> GgmlType {
    use GgmlType::*;
    match w {
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL | MXFP4 => Q8_0,
        Q4_1 | Q5_1 => Q8_1,
        Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | IQ2_XXS | IQ2_XS | IQ3_XXS | IQ1_S | IQ3_S | IQ2_S
        | IQ4_XS | IQ1_M | TQ1_0 | TQ2_0 => Q8_K,
        other => other,
    }
}

/// Whether [`vec_dot`] supports weight type `wt` (paired with `vec_dot_type(wt)`).
pub fn can_vec_dot(wt: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        wt,
        F32 | F16
            | BF16
            | Q4_0
            | Q4_1
            | Q5_0
            | Q5_1
            | Q8_0
            | Q2_K
            | Q3_K
            | Q4_K
            | Q5_K
            | Q6_K
            | IQ4_NL
            | IQ4_XS
    )
}

/// Reference dot product of `n` elements: `w` (blocks of `wt`) · `a` (blocks
/// of `vec_dot_type(wt)`), as ggml's generic C path computes it.
pub fn vec_dot(wt: GgmlType, w: &[u8], a: &[u8], n: usize) -> Result<f32, QuantError> {
    if !can_vec_dot(wt) {
        return Err(QuantError::Unsupported {
            ty: wt,
            op: "vec_dot",
        });
    }
    let at = vec_dot_type(wt);
    check_len(wt, n, w.len())?;
    check_len(at, n, a.len())?;
    use GgmlType::*;
    Ok(match wt {
        F32 => dot_f32(w, a),
        F16 => dot_16(w, a, |b| f16::from_bits(b).to_f32()),
        BF16 => dot_16(w, a, bf16_to_f32),
        Q4_0 => dot_q4_0(&blocks(w), &blocks(a)),
        Q4_1 => dot_q4_1(&blocks(w), &blocks(a)),
        Q5_0 => dot_q5_0(&blocks(w), &blocks(a)),
        Q5_1 => dot_q5_1(&blocks(w), &blocks(a)),
        Q8_0 => dot_q8_0(&blocks(w), &blocks(a)),
        IQ4_NL => dot_iq4_nl(&blocks(w), &blocks(a)),
        Q2_K => dot_q2_k(&blocks(w), &blocks(a)),
        Q3_K => dot_q3_k(&blocks(w), &blocks(a)),
        Q4_K => dot_q4_k(&blocks(w), &blocks(a)),
        Q5_K => dot_q5_k(&blocks(w), &blocks(a)),
        Q6_K => dot_q6_k(&blocks(w), &blocks(a)),
        IQ4_XS => dot_iq4_xs(&blocks(w), &blocks(a)),
        _ => {
            return Err(QuantError::Unsupported {
                ty: wt,
                op: "vec_dot",
            });
        }
    })
}

/// Views `src` as blocks in place when aligned, else copies them out.
fn blocks<B: Pod>(src: &[u8]) -> Cow<'_, [B]> {
    match bytemuck::try_cast_slice::<u8, B>(src) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(bytemuck::pod_collect_to_vec(src)),
    }
}

/// Scalar `ggml_vec_dot_f32`: f32 products accumulated in f64.
fn dot_f32(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f64;
    for (x, y) in w.chunks_exact(4).zip(a.chunks_exact(4)) {
        let x = f32::from_le_bytes([x[0], x[1], x[2], x[3]]);
        let y = f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
        sum += (x * y) as f64;
    }
    sum as f32
}

/// Scalar `ggml_vec_dot_f16` / `ggml_vec_dot_bf16`: widen to f32, multiply,
/// accumulate in f64.
fn dot_16(w: &[u8], a: &[u8], to_f32: fn(u16) -> f32) -> f32 {
    let mut sum = 0.0f64;
    for (x, y) in w.chunks_exact(2).zip(a.chunks_exact(2)) {
        let x = to_f32(u16::from_le_bytes([x[0], x[1]]));
        let y = to_f32(u16::from_le_bytes([y[0], y[1]]));
        sum += (x * y) as f64;
    }
    sum as f32
}

fn dot_q4_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let mut sumi0 = 0i32;
        let mut sumi1 = 0i32;
        for j in 0..16 {
            let v0 = (bx.qs[j] & 0x0F) as i32 - 8;
            let v1 = (bx.qs[j] >> 4) as i32 - 8;
            sumi0 += v0 * by.qs[j] as i32;
            sumi1 += v1 * by.qs[j + 16] as i32;
        }
        let sumi = sumi0 + sumi1;
        sumf += sumi as f32 * bx.d.to_f32() * by.d.to_f32();
    }
    sumf
}

fn dot_q4_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let mut sumi0 = 0i32;
        let mut sumi1 = 0i32;
        for j in 0..16 {
            let v0 = (bx.qs[j] & 0x0F) as i32;
            let v1 = (bx.qs[j] >> 4) as i32;
            sumi0 += v0 * by.qs[j] as i32;
            sumi1 += v1 * by.qs[j + 16] as i32;
        }
        let sumi = sumi0 + sumi1;
        sumf += (bx.d.to_f32() * by.d.to_f32()) * sumi as f32 + bx.m.to_f32() * by.s.to_f32();
    }
    sumf
}

fn dot_q5_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let qh = u32::from_le_bytes(bx.qh);
        let mut sumi0 = 0i32;
        let mut sumi1 = 0i32;
        for j in 0..16 {
            let xh0 = (((qh >> j) & 1) << 4) as u8;
            let xh1 = (((qh >> (j + 16)) & 1) << 4) as u8;
            let x0 = ((bx.qs[j] & 0x0F) | xh0) as i32 - 16;
            let x1 = ((bx.qs[j] >> 4) | xh1) as i32 - 16;
            sumi0 += x0 * by.qs[j] as i32;
            sumi1 += x1 * by.qs[j + 16] as i32;
        }
        let sumi = sumi0 + sumi1;
        sumf += (bx.d.to_f32() * by.d.to_f32()) * sumi as f32;
    }
    sumf
}

fn dot_q5_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let qh = u32::from_le_bytes(bx.qh);
        let mut sumi0 = 0i32;
        let mut sumi1 = 0i32;
        for j in 0..16 {
            let xh0 = (((qh >> j) & 1) << 4) as u8;
            let xh1 = (((qh >> (j + 16)) & 1) << 4) as u8;
            let x0 = ((bx.qs[j] & 0x0F) | xh0) as i32;
            let x1 = ((bx.qs[j] >> 4) | xh1) as i32;
            sumi0 += x0 * by.qs[j] as i32;
            sumi1 += x1 * by.qs[j + 16] as i32;
        }
        let sumi = sumi0 + sumi1;
        sumf += (bx.d.to_f32() * by.d.to_f32()) * sumi as f32 + bx.m.to_f32() * by.s.to_f32();
    }
    sumf
}

fn dot_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let sumi: i32 = bx
            .qs
            .iter()
            .zip(by.qs.iter())
            .map(|(&a, &b)| a as i32 * b as i32)
            .sum();
        sumf += sumi as f32 * (bx.d.to_f32() * by.d.to_f32());
    }
    sumf
}

fn dot_iq4_nl(x: &[BlockIQ4NL], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let d = by.d.to_f32() * bx.d.to_f32();
        let mut sumi1 = 0i32;
        let mut sumi2 = 0i32;
        for j in 0..16 {
            sumi1 += by.qs[j] as i32 * KVALUES_IQ4NL[(bx.qs[j] & 0xF) as usize] as i32;
            sumi2 += by.qs[j + 16] as i32 * KVALUES_IQ4NL[(bx.qs[j] >> 4) as usize] as i32;
        }
        sumf += d * (sumi1 + sumi2) as f32;
    }
    sumf
}

fn dot_q2_k(x: &[BlockQ2K], y: &[BlockQ8K]) -> f32 {
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let sc = &bx.scales;
        let summs: i32 = (0..16)
            .map(|j| by.bsums[j] as i32 * (sc[j] >> 4) as i32)
            .sum();
        let dall = by.d * bx.d.to_f32();
        let dmin = by.d * bx.dmin.to_f32();
        let mut isum = 0i32;
        let mut is = 0;
        let mut q8 = 0;
        for k in 0..QK_K / 128 {
            let q2 = &bx.qs[32 * k..32 * k + 32];
            let mut shift = 0;
            for _ in 0..4 {
                for half in 0..2 {
                    let d = (sc[is] & 0xF) as i32;
                    is += 1;
                    let mut isuml = 0i32;
                    for l in 16 * half..16 * half + 16 {
                        isuml += by.qs[q8 + l] as i32 * ((q2[l] >> shift) & 3) as i32;
                    }
                    isum += d * isuml;
                }
                shift += 2;
                q8 += 32;
            }
        }
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

/// Accumulates `scale(k) * q8[k] * a[k]` into 8 lanes by `k % 8`, as ggml's
/// aux32 does, where `scale` is constant over groups of `group` elements.
#[inline]
fn lanes(a: &[i8; QK_K], q8: &[i8; QK_K], group: usize, scale: impl Fn(usize) -> i32) -> [i32; 8] {
    let mut aux32 = [0i32; 8];
    for (g, (ag, qg)) in a
        .chunks_exact(group)
        .zip(q8.chunks_exact(group))
        .enumerate()
    {
        let s = scale(g);
        for (a8, q8) in ag.chunks_exact(8).zip(qg.chunks_exact(8)) {
            for l in 0..8 {
                aux32[l] += s * (q8[l] as i32 * a8[l] as i32);
            }
        }
    }
    aux32
}

fn dot_q3_k(x: &[BlockQ3K], y: &[BlockQ8K]) -> f32 {
    let mut sums = [0.0f32; 8];
    for (bx, by) in x.iter().zip(y) {
        let mut a = [0i8; QK_K];
        let mut m: u8 = 1;
        let mut o = 0;
        for j in 0..QK_K / 128 {
            let q3 = &bx.qs[32 * j..32 * j + 32];
            for shift in [0, 2, 4, 6] {
                for l in 0..32 {
                    let low = ((q3[l] >> shift) & 3) as i8;
                    a[o + l] = low - if bx.hmask[l] & m != 0 { 0 } else { 4 };
                }
                o += 32;
                m = m.wrapping_shl(1);
            }
        }
        let scales = q3k_scales(&bx.scales);
        let aux32 = lanes(&a, &by.qs, 16, |g| scales[g] as i32 - 32);
        let d = bx.d.to_f32() * by.d;
        for (s, v) in sums.iter_mut().zip(aux32) {
            *s += d * v as f32;
        }
    }
    let mut sumf = 0.0f32;
    for s in sums {
        sumf += s;
    }
    sumf
}

fn dot_q4_k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    let mut sums = [0.0f32; 8];
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let mut a = [0i8; QK_K];
        for j in 0..QK_K / 64 {
            for l in 0..32 {
                let q = bx.qs[32 * j + l];
                a[64 * j + l] = (q & 0xF) as i8;
                a[64 * j + 32 + l] = (q >> 4) as i8;
            }
        }
        let sm: [(u8, u8); 8] = std::array::from_fn(|j| scale_min_k4(j, &bx.scales));
        let sumi: i32 = (0..16)
            .map(|j| by.bsums[j] as i32 * sm[j / 2].1 as i32)
            .sum();
        let aux32 = lanes(&a, &by.qs, 32, |g| sm[g].0 as i32);
        let d = bx.d.to_f32() * by.d;
        for (s, v) in sums.iter_mut().zip(aux32) {
            *s += d * v as f32;
        }
        let dmin = bx.dmin.to_f32() * by.d;
        sumf -= dmin * sumi as f32;
    }
    for s in sums {
        sumf += s;
    }
    sumf
}

fn dot_q5_k(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
    let mut sums = [0.0f32; 8];
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let mut a = [0i8; QK_K];
        let mut m: u8 = 1;
        for j in 0..QK_K / 64 {
            for l in 0..32 {
                let q = bx.qs[32 * j + l];
                let h1 = if bx.qh[l] & m != 0 { 16 } else { 0 };
                let h2 = if bx.qh[l] & (m << 1) != 0 { 16 } else { 0 };
                a[64 * j + l] = (q & 0xF) as i8 + h1;
                a[64 * j + 32 + l] = (q >> 4) as i8 + h2;
            }
            m = m.wrapping_shl(2);
        }
        let sm: [(u8, u8); 8] = std::array::from_fn(|j| scale_min_k4(j, &bx.scales));
        let sumi: i32 = (0..16)
            .map(|j| by.bsums[j] as i32 * sm[j / 2].1 as i32)
            .sum();
        let aux32 = lanes(&a, &by.qs, 32, |g| sm[g].0 as i32);
        let d = bx.d.to_f32() * by.d;
        for (s, v) in sums.iter_mut().zip(aux32) {
            *s += d * v as f32;
        }
        let dmin = bx.dmin.to_f32() * by.d;
        sumf -= dmin * sumi as f32;
    }
    for s in sums {
        sumf += s;
    }
    sumf
}

fn dot_q6_k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    let mut sums = [0.0f32; 8];
    for (bx, by) in x.iter().zip(y) {
        let mut a = [0i8; QK_K];
        for n in 0..QK_K / 128 {
            let ql = &bx.ql[64 * n..64 * n + 64];
            let qh = &bx.qh[32 * n..32 * n + 32];
            let o = &mut a[128 * n..128 * n + 128];
            for l in 0..32 {
                o[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
                o[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                o[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                o[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            }
        }
        let aux32 = lanes(&a, &by.qs, 16, |g| bx.scales[g] as i32);
        let d = bx.d.to_f32() * by.d;
        for (s, v) in sums.iter_mut().zip(aux32) {
            *s += d * v as f32;
        }
    }
    let mut sumf = 0.0f32;
    for s in sums {
        sumf += s;
    }
    sumf
}

fn dot_iq4_xs(x: &[BlockIQ4XS], y: &[BlockQ8K]) -> f32 {
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let d4d8 = bx.d.to_f32() * by.d;
        let mut h = bx.scales_h as u32;
        for ib in (0..QK_K / 32).step_by(2) {
            let ls1 = ((bx.scales_l[ib / 2] & 0xF) as u32 | ((h << 4) & 0x30)) as i32;
            let ls2 = ((bx.scales_l[ib / 2] >> 4) as u32 | ((h << 2) & 0x30)) as i32;
            h >>= 4;
            for (k, ls) in [(ib, ls1), (ib + 1, ls2)] {
                let dl = d4d8 * (ls - 32) as f32;
                let qs = &bx.qs[16 * k..16 * k + 16];
                let q8 = &by.qs[32 * k..32 * k + 32];
                let mut sumi1 = 0i32;
                let mut sumi2 = 0i32;
                for j in 0..16 {
                    sumi1 += q8[j] as i32 * KVALUES_IQ4NL[(qs[j] & 0xF) as usize] as i32;
                    sumi2 += q8[j + 16] as i32 * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as i32;
                }
                sumf += dl * (sumi1 + sumi2) as f32;
            }
        }
    }
    sumf
}
