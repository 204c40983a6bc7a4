//! Dequantization to f32, bit-exact with ggml's `dequantize_row_*` reference
//! functions (ggml-quants.c): the same f16→f32 conversion, the same integer
//! unpacking and the same float operations in the same order (for example
//! Q4_K computes `d1 = d*sc`, `m1 = dmin*m`, then `d1*q - m1`; no fused
//! multiply-adds, which the reference build does not use either).

// The loops mirror ggml's index arithmetic one to one, which keeps them
// checkable against the C reference; iterator rewrites would obscure that.
#![allow(clippy::needless_range_loop)]

use crate::QuantError;
use crate::blocks::*;
use half::f16;
use zeta_gguf::GgmlType;

/// Whether [`dequantize`] supports `ty`.
pub fn can_dequantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16
            | BF16
            | Q4_0
            | Q4_1
            | Q5_0
            | Q5_1
            | Q8_0
            | Q8_1
            | Q2_K
            | Q3_K
            | Q4_K
            | Q5_K
            | Q6_K
            | Q8_K
            | IQ4_NL
            | IQ4_XS
    )
}

/// Checks that `src` holds exactly the blocks of `ty` for `n` elements.
pub(crate) fn check_len(ty: GgmlType, n: usize, bytes: usize) -> Result<(), QuantError> {
    let bs = ty.block_size();
    if !n.is_multiple_of(bs) {
        return Err(QuantError::PartialBlock {
            ty,
            n,
            block_size: bs,
        });
    }
    let expected = ty
        .row_bytes(n as u64)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or(QuantError::TooLarge { ty, n })?;
    if bytes != expected {
        return Err(QuantError::ByteLength {
            ty,
            n,
            expected,
            found: bytes,
        });
    }
    Ok(())
}

/// Dequantizes `dst.len()` elements of type `ty` from `src` (whole blocks,
/// `src.len() == ty.row_bytes(dst.len())`, any alignment) into `dst`.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    if !can_dequantize(ty) {
        return Err(QuantError::Unsupported {
            ty,
            op: "dequantize",
        });
    }
    check_len(ty, dst.len(), src.len())?;
    use GgmlType::*;
    match ty {
        F32 => {
            for (o, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        F16 => {
            for (o, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *o = f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        BF16 => {
            for (o, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *o = bf16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        Q4_0 => run(src, dst, deq_q4_0),
        Q4_1 => run(src, dst, deq_q4_1),
        Q5_0 => run(src, dst, deq_q5_0),
        Q5_1 => run(src, dst, deq_q5_1),
        Q8_0 => run(src, dst, deq_q8_0),
        Q8_1 => run(src, dst, deq_q8_1),
        Q2_K => run(src, dst, deq_q2_k),
        Q3_K => run(src, dst, deq_q3_k),
        Q4_K => run(src, dst, deq_q4_k),
        Q5_K => run(src, dst, deq_q5_k),
        Q6_K => run(src, dst, deq_q6_k),
        Q8_K => run(src, dst, deq_q8_k),
        IQ4_NL => run(src, dst, deq_iq4_nl),
        IQ4_XS => run(src, dst, deq_iq4_xs),
        _ => {
            return Err(QuantError::Unsupported {
                ty,
                op: "dequantize",
            });
        }
    }
    Ok(())
}

/// ggml's `GGML_BF16_TO_FP32`: the bf16 bits are the high half of the f32.
#[inline]
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// Applies a per-block dequantizer over all blocks (lengths already checked).
fn run<B: bytemuck::Pod, const N: usize>(src: &[u8], dst: &mut [f32], f: fn(&B, &mut [f32; N])) {
    let mut out = dst.chunks_exact_mut(N);
    blocks_of::<B>(src, |_, b| {
        if let Some(Ok(arr)) = out.next().map(<&mut [f32; N]>::try_from) {
            f(b, arr);
        }
    });
}

fn deq_q4_0(b: &BlockQ4_0, y: &mut [f32; 32]) {
    let d = b.d.to_f32();
    for j in 0..16 {
        let x0 = (b.qs[j] & 0x0F) as i32 - 8;
        let x1 = (b.qs[j] >> 4) as i32 - 8;
        y[j] = x0 as f32 * d;
        y[j + 16] = x1 as f32 * d;
    }
}

fn deq_q4_1(b: &BlockQ4_1, y: &mut [f32; 32]) {
    let d = b.d.to_f32();
    let m = b.m.to_f32();
    for j in 0..16 {
        let x0 = (b.qs[j] & 0x0F) as i32;
        let x1 = (b.qs[j] >> 4) as i32;
        y[j] = x0 as f32 * d + m;
        y[j + 16] = x1 as f32 * d + m;
    }
}

fn deq_q5_0(b: &BlockQ5_0, y: &mut [f32; 32]) {
    let d = b.d.to_f32();
    let qh = u32::from_le_bytes(b.qh);
    for j in 0..16 {
        let xh0 = (((qh >> j) << 4) & 0x10) as u8;
        let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
        let x0 = ((b.qs[j] & 0x0F) | xh0) as i32 - 16;
        let x1 = ((b.qs[j] >> 4) | xh1) as i32 - 16;
        y[j] = x0 as f32 * d;
        y[j + 16] = x1 as f32 * d;
    }
}

fn deq_q5_1(b: &BlockQ5_1, y: &mut [f32; 32]) {
    let d = b.d.to_f32();
    let m = b.m.to_f32();
    let qh = u32::from_le_bytes(b.qh);
    for j in 0..16 {
        let xh0 = (((qh >> j) << 4) & 0x10) as u8;
        let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
        let x0 = ((b.qs[j] & 0x0F) | xh0) as i32;
        let x1 = ((b.qs[j] >> 4) | xh1) as i32;
        y[j] = x0 as f32 * d + m;
        y[j + 16] = x1 as f32 * d + m;
    }
}

fn deq_q8_0(b: &BlockQ8_0, y: &mut [f32; 32]) {
    let d = b.d.to_f32();
    for (o, q) in y.iter_mut().zip(b.qs.iter()) {
        *o = *q as f32 * d;
    }
}

/// ggml has no `dequantize_row_q8_1`; this is `d * q` like Q8_0 (the `s` field is ignored).
fn deq_q8_1(b: &BlockQ8_1, y: &mut [f32; 32]) {
    let d = b.d.to_f32();
    for (o, q) in y.iter_mut().zip(b.qs.iter()) {
        *o = *q as f32 * d;
    }
}

fn deq_q2_k(b: &BlockQ2K, y: &mut [f32; QK_K]) {
    let d = b.d.to_f32();
    let min = b.dmin.to_f32();
    let mut o = 0;
    let mut is = 0;
    for n in 0..QK_K / 128 {
        let q = &b.qs[32 * n..32 * n + 32];
        let mut shift = 0;
        for _ in 0..4 {
            for half in 0..2 {
                let sc = b.scales[is];
                is += 1;
                let dl = d * (sc & 0xF) as f32;
                let ml = min * (sc >> 4) as f32;
                for l in 0..16 {
                    let qv = ((q[l + 16 * half] >> shift) & 3) as f32;
                    y[o] = dl * qv - ml;
                    o += 1;
                }
            }
            shift += 2;
        }
    }
}

fn deq_q3_k(b: &BlockQ3K, y: &mut [f32; QK_K]) {
    let d_all = b.d.to_f32();
    let scales = q3k_scales(&b.scales);
    let mut o = 0;
    let mut is = 0;
    let mut m: u8 = 1;
    for n in 0..QK_K / 128 {
        let q = &b.qs[32 * n..32 * n + 32];
        let mut shift = 0;
        for _ in 0..4 {
            for half in 0..2 {
                let dl = d_all * (scales[is] as i32 - 32) as f32;
                is += 1;
                for l in 0..16 {
                    let k = l + 16 * half;
                    let low = ((q[k] >> shift) & 3) as i32;
                    let sub = if b.hmask[k] & m != 0 { 0 } else { 4 };
                    y[o] = dl * (low - sub) as f32;
                    o += 1;
                }
            }
            shift += 2;
            m = m.wrapping_shl(1);
        }
    }
}

fn deq_q4_k(b: &BlockQ4K, y: &mut [f32; QK_K]) {
    let d = b.d.to_f32();
    let min = b.dmin.to_f32();
    for j in 0..QK_K / 64 {
        let q = &b.qs[32 * j..32 * j + 32];
        let (sc1, m1) = scale_min_k4(2 * j, &b.scales);
        let (sc2, m2) = scale_min_k4(2 * j + 1, &b.scales);
        let d1 = d * sc1 as f32;
        let m1 = min * m1 as f32;
        let d2 = d * sc2 as f32;
        let m2 = min * m2 as f32;
        let out = &mut y[64 * j..64 * j + 64];
        for l in 0..32 {
            out[l] = d1 * (q[l] & 0xF) as f32 - m1;
            out[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

fn deq_q5_k(b: &BlockQ5K, y: &mut [f32; QK_K]) {
    let d = b.d.to_f32();
    let min = b.dmin.to_f32();
    let mut u1: u8 = 1;
    let mut u2: u8 = 2;
    for j in 0..QK_K / 64 {
        let ql = &b.qs[32 * j..32 * j + 32];
        let (sc1, m1) = scale_min_k4(2 * j, &b.scales);
        let (sc2, m2) = scale_min_k4(2 * j + 1, &b.scales);
        let d1 = d * sc1 as f32;
        let m1 = min * m1 as f32;
        let d2 = d * sc2 as f32;
        let m2 = min * m2 as f32;
        let out = &mut y[64 * j..64 * j + 64];
        for l in 0..32 {
            let h1 = if b.qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if b.qh[l] & u2 != 0 { 16 } else { 0 };
            out[l] = d1 * ((ql[l] & 0xF) as i32 + h1) as f32 - m1;
            out[l + 32] = d2 * ((ql[l] >> 4) as i32 + h2) as f32 - m2;
        }
        u1 = u1.wrapping_shl(2);
        u2 = u2.wrapping_shl(2);
    }
}

fn deq_q6_k(b: &BlockQ6K, y: &mut [f32; QK_K]) {
    let d = b.d.to_f32();
    for n in 0..QK_K / 128 {
        let ql = &b.ql[64 * n..64 * n + 64];
        let qh = &b.qh[32 * n..32 * n + 32];
        let sc = &b.scales[8 * n..8 * n + 8];
        let out = &mut y[128 * n..128 * n + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            out[l] = d * sc[is] as f32 * q1 as f32;
            out[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
            out[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
            out[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
        }
    }
}

fn deq_q8_k(b: &BlockQ8K, y: &mut [f32; QK_K]) {
    for (o, q) in y.iter_mut().zip(b.qs.iter()) {
        *o = b.d * *q as f32;
    }
}

fn deq_iq4_nl(b: &BlockIQ4NL, y: &mut [f32; 32]) {
    let d = b.d.to_f32();
    for j in 0..16 {
        y[j] = d * KVALUES_IQ4NL[(b.qs[j] & 0xF) as usize] as f32;
        y[j + 16] = d * KVALUES_IQ4NL[(b.qs[j] >> 4) as usize] as f32;
    }
}

fn deq_iq4_xs(b: &BlockIQ4XS, y: &mut [f32; QK_K]) {
    let d = b.d.to_f32();
    let scales_h = b.scales_h as u32;
    for ib in 0..QK_K / 32 {
        let lo = ((b.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) as i32;
        let hi = (((scales_h >> (2 * ib)) & 3) << 4) as i32;
        let dl = d * ((lo | hi) - 32) as f32;
        let qs = &b.qs[16 * ib..16 * ib + 16];
        let out = &mut y[32 * ib..32 * ib + 32];
        for j in 0..16 {
            out[j] = dl * KVALUES_IQ4NL[(qs[j] & 0xF) as usize] as f32;
            out[j + 16] = dl * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as f32;
        }
    }
}
