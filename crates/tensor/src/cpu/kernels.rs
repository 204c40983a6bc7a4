//! Dot-product kernels on raw block bytes: `w` holds weight blocks of one
//! type, `a` the activation row quantized to that type's `vec_dot_type`
//! (ggml's pairing), `n` is the element count (a multiple of the block size).
//!
//! Each kernel computes what `zeta_quant::vec_dot` (ggml's generic C path)
//! computes — exact integer sums per block, then the block scales in f32 —
//! in a form the compiler vectorizes; the tests compare every kernel with
//! `zeta_quant::vec_dot`. Blocks are read from bytes (the mapped file gives
//! no alignment guarantee), little-endian as in GGUF.

use half::{bf16, f16};
use zeta_gguf::GgmlType;

/// f32 dot product with 8 partial sums (vectorizes; order like ggml's SIMD
/// reduction, not sequential).
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = 0f32;
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    acc.iter().sum::<f32>() + s
}

#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

#[inline(always)]
fn f32_at(b: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// A dot-product routine: `(weight row bytes, activation row bytes, n) -> f32`.
pub type DotFn = fn(&[u8], &[u8], usize) -> f32;

/// The specialised kernel for weight type `ty`, if this module has one.
pub fn fast_kernel(ty: GgmlType) -> Option<DotFn> {
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

/// F32 weights · F32 activations.
pub fn dot_f32_f32(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut acc = [0f32; 8];
    let mut i = 0;
    while i + 8 <= n {
        for l in 0..8 {
            acc[l] += f32_at(w, (i + l) * 4) * f32_at(a, (i + l) * 4);
        }
        i += 8;
    }
    let mut s = 0f32;
    while i < n {
        s += f32_at(w, i * 4) * f32_at(a, i * 4);
        i += 1;
    }
    acc.iter().sum::<f32>() + s
}

/// F16 weights · F16 activations, accumulated in f32.
pub fn dot_f16_f16(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut acc = [0f32; 8];
    let mut i = 0;
    while i + 8 <= n {
        for l in 0..8 {
            acc[l] += f16_at(w, (i + l) * 2) * f16_at(a, (i + l) * 2);
        }
        i += 8;
    }
    let mut s = 0f32;
    while i < n {
        s += f16_at(w, i * 2) * f16_at(a, i * 2);
        i += 1;
    }
    acc.iter().sum::<f32>() + s
}

/// BF16 weights · BF16 activations, accumulated in f32.
pub fn dot_bf16_bf16(w: &[u8], a: &[u8], n: usize) -> f32 {
    let at = |b: &[u8], i: usize| bf16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32();
    let mut acc = [0f32; 8];
    let mut i = 0;
    while i + 8 <= n {
        for l in 0..8 {
            acc[l] += at(w, (i + l) * 2) * at(a, (i + l) * 2);
        }
        i += 8;
    }
    let mut s = 0f32;
    while i < n {
        s += at(w, i * 2) * at(a, i * 2);
        i += 1;
    }
    acc.iter().sum::<f32>() + s
}

/// Q8_0 · Q8_0 (blocks of 34 bytes: f16 d, 32 × i8).
pub fn dot_q8_0_q8_0(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut sumf = 0f32;
    for (bw, ba) in w.chunks_exact(34).zip(a.chunks_exact(34)).take(n / 32) {
        let (qw, qa) = (&bw[2..34], &ba[2..34]);
        let mut sumi = 0i32;
        for j in 0..32 {
            sumi += i32::from(qw[j] as i8) * i32::from(qa[j] as i8);
        }
        sumf += sumi as f32 * (f16_at(bw, 0) * f16_at(ba, 0));
    }
    sumf
}

/// Q4_0 (18 bytes: f16 d, 16 nibble bytes) · Q8_0.
pub fn dot_q4_0_q8_0(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut sumf = 0f32;
    for (bw, ba) in w.chunks_exact(18).zip(a.chunks_exact(34)).take(n / 32) {
        let (qw, qa) = (&bw[2..18], &ba[2..34]);
        let mut sumi = 0i32;
        for j in 0..16 {
            let v0 = i32::from(qw[j] & 0x0F) - 8;
            let v1 = i32::from(qw[j] >> 4) - 8;
            sumi += v0 * i32::from(qa[j] as i8) + v1 * i32::from(qa[j + 16] as i8);
        }
        sumf += sumi as f32 * (f16_at(bw, 0) * f16_at(ba, 0));
    }
    sumf
}

/// Q4_1 (20 bytes: f16 d, f16 m, 16 nibble bytes) · Q8_1 (36 bytes: f16 d, f16 s, 32 × i8).
pub fn dot_q4_1_q8_1(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut sumf = 0f32;
    for (bw, ba) in w.chunks_exact(20).zip(a.chunks_exact(36)).take(n / 32) {
        let (qw, qa) = (&bw[4..20], &ba[4..36]);
        let mut sumi = 0i32;
        for j in 0..16 {
            sumi += i32::from(qw[j] & 0x0F) * i32::from(qa[j] as i8)
                + i32::from(qw[j] >> 4) * i32::from(qa[j + 16] as i8);
        }
        sumf += (f16_at(bw, 0) * f16_at(ba, 0)) * sumi as f32 + f16_at(bw, 2) * f16_at(ba, 2);
    }
    sumf
}

/// Q5_0 (22 bytes: f16 d, u32 qh, 16 nibble bytes) · Q8_0.
pub fn dot_q5_0_q8_0(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut sumf = 0f32;
    for (bw, ba) in w.chunks_exact(22).zip(a.chunks_exact(34)).take(n / 32) {
        let qh = u32::from_le_bytes([bw[2], bw[3], bw[4], bw[5]]);
        let (qw, qa) = (&bw[6..22], &ba[2..34]);
        let mut sumi = 0i32;
        for j in 0..16 {
            let h0 = (((qh >> j) << 4) & 0x10) as u8;
            let h1 = ((qh >> (j + 12)) & 0x10) as u8;
            let v0 = i32::from((qw[j] & 0x0F) | h0) - 16;
            let v1 = i32::from((qw[j] >> 4) | h1) - 16;
            sumi += v0 * i32::from(qa[j] as i8) + v1 * i32::from(qa[j + 16] as i8);
        }
        sumf += sumi as f32 * (f16_at(bw, 0) * f16_at(ba, 0));
    }
    sumf
}

/// Q5_1 (24 bytes: f16 d, f16 m, u32 qh, 16 nibble bytes) · Q8_1.
pub fn dot_q5_1_q8_1(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut sumf = 0f32;
    for (bw, ba) in w.chunks_exact(24).zip(a.chunks_exact(36)).take(n / 32) {
        let qh = u32::from_le_bytes([bw[4], bw[5], bw[6], bw[7]]);
        let (qw, qa) = (&bw[8..24], &ba[4..36]);
        let mut sumi = 0i32;
        for j in 0..16 {
            let h0 = (((qh >> j) << 4) & 0x10) as u8;
            let h1 = ((qh >> (j + 12)) & 0x10) as u8;
            let v0 = i32::from((qw[j] & 0x0F) | h0);
            let v1 = i32::from((qw[j] >> 4) | h1);
            sumi += v0 * i32::from(qa[j] as i8) + v1 * i32::from(qa[j + 16] as i8);
        }
        sumf += (f16_at(bw, 0) * f16_at(ba, 0)) * sumi as f32 + f16_at(bw, 2) * f16_at(ba, 2);
    }
    sumf
}

/// Q8_K block: f32 d (0..4), 256 × i8 (4..260), 16 × i16 bsums (260..292).
const Q8K_BYTES: usize = 292;

#[inline(always)]
fn q8k_bsum(ba: &[u8], j: usize) -> i32 {
    i32::from(i16::from_le_bytes([ba[260 + 2 * j], ba[261 + 2 * j]]))
}

/// The k-quant 6-bit scale and min of sub-block `j` (`get_scale_min_k4`).
#[inline(always)]
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

#[inline(always)]
fn isum32(a: &[i8; 32], y: &[u8]) -> i32 {
    let mut s = 0i32;
    for l in 0..32 {
        s += i32::from(a[l]) * i32::from(y[l] as i8);
    }
    s
}

/// Q4_K (144 bytes: f16 d, f16 dmin, 12 scale bytes, 128 nibble bytes) · Q8_K.
pub fn dot_q4_k_q8_k(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut sumf = 0f32;
    for (bw, ba) in w.chunks_exact(144).zip(a.chunks_exact(Q8K_BYTES)).take(n / 256) {
        let d = f16_at(bw, 0) * f32_at(ba, 0);
        let dmin = f16_at(bw, 2) * f32_at(ba, 0);
        let scales = &bw[4..16];
        let qs = &bw[16..144];
        let qy = &ba[4..260];
        let mut isum = 0i32;
        let mut msum = 0i32;
        let mut q = [0i8; 32];
        for c in 0..4 {
            let chunk = &qs[c * 32..c * 32 + 32];
            for half in 0..2 {
                let j = 2 * c + half;
                let (sc, m) = scale_min_k4(j, scales);
                for l in 0..32 {
                    q[l] = if half == 0 { chunk[l] & 0xF } else { chunk[l] >> 4 } as i8;
                }
                isum += i32::from(sc) * isum32(&q, &qy[j * 32..j * 32 + 32]);
                msum += i32::from(m) * (q8k_bsum(ba, 2 * j) + q8k_bsum(ba, 2 * j + 1));
            }
        }
        sumf += d * isum as f32 - dmin * msum as f32;
    }
    sumf
}

/// Q5_K (176 bytes: f16 d, f16 dmin, 12 scale bytes, 32 high-bit bytes, 128 nibble bytes) · Q8_K.
pub fn dot_q5_k_q8_k(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut sumf = 0f32;
    for (bw, ba) in w.chunks_exact(176).zip(a.chunks_exact(Q8K_BYTES)).take(n / 256) {
        let d = f16_at(bw, 0) * f32_at(ba, 0);
        let dmin = f16_at(bw, 2) * f32_at(ba, 0);
        let scales = &bw[4..16];
        let qh = &bw[16..48];
        let qs = &bw[48..176];
        let qy = &ba[4..260];
        let mut isum = 0i32;
        let mut msum = 0i32;
        let mut q = [0i8; 32];
        for c in 0..4 {
            let chunk = &qs[c * 32..c * 32 + 32];
            for half in 0..2 {
                let j = 2 * c + half;
                let mask = 1u8 << j;
                let (sc, m) = scale_min_k4(j, scales);
                for l in 0..32 {
                    let lo = if half == 0 { chunk[l] & 0xF } else { chunk[l] >> 4 };
                    let hi = if qh[l] & mask != 0 { 16 } else { 0 };
                    q[l] = (lo + hi) as i8;
                }
                isum += i32::from(sc) * isum32(&q, &qy[j * 32..j * 32 + 32]);
                msum += i32::from(m) * (q8k_bsum(ba, 2 * j) + q8k_bsum(ba, 2 * j + 1));
            }
        }
        sumf += d * isum as f32 - dmin * msum as f32;
    }
    sumf
}

/// Q6_K (210 bytes: 128 low-nibble bytes, 64 high-bit bytes, 16 × i8 scales, f16 d) · Q8_K.
pub fn dot_q6_k_q8_k(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut sumf = 0f32;
    for (bw, ba) in w.chunks_exact(210).zip(a.chunks_exact(Q8K_BYTES)).take(n / 256) {
        let d = f16_at(bw, 208) * f32_at(ba, 0);
        let qy = &ba[4..260];
        let mut q = [0i8; 256];
        for half in 0..2 {
            let ql = &bw[half * 64..half * 64 + 64];
            let qh = &bw[128 + half * 32..128 + half * 32 + 32];
            let o = &mut q[half * 128..half * 128 + 128];
            for l in 0..32 {
                o[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
                o[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                o[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                o[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            }
        }
        let mut isum = 0i32;
        for g in 0..16 {
            let sc = i32::from(bw[192 + g] as i8);
            let mut s = 0i32;
            for l in 0..16 {
                s += i32::from(q[g * 16 + l]) * i32::from(qy[g * 16 + l] as i8);
            }
            isum += sc * s;
        }
        sumf += d * isum as f32;
    }
    sumf
}
