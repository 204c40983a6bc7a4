//! Helpers shared by the integration tests: deterministic random data and
//! random blocks with sane scale fields.
#![allow(dead_code, clippy::unwrap_used)]

use zeta_quant::GgmlType;

/// A small deterministic xorshift generator (tests must not depend on rand's stream).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Roughly normal (sum of uniforms).
    pub fn normal(&mut self) -> f32 {
        (0..4).map(|_| self.unit()).sum::<f32>() - 2.0
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
    pub fn floats(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal() * scale).collect()
    }
    /// A finite f16 with |v| in [1e-4, 1], random sign.
    pub fn sane_f16(&mut self) -> [u8; 2] {
        let mag = (1e-4f32.ln() * self.unit()).exp();
        let v = if self.unit() < 0.5 { -mag } else { mag };
        half::f16::from_f32(v).to_bits().to_le_bytes()
    }
}

/// Byte offsets of the f16 scale fields in a block of `ty`.
pub fn f16_fields(ty: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL | IQ4_XS | Q8_1 => &[0],
        Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q6_K => &[208],
        _ => &[],
    }
}

/// Random blocks of `ty` for `n` elements, scale fields finite and sane.
/// (Not for Q8_1/Q8_K, whose `s`/`bsums` must agree with `qs`: quantize those.)
pub fn random_blocks(rng: &mut Rng, ty: GgmlType, n: usize) -> Vec<u8> {
    let ts = ty.type_size();
    let nb = n / ty.block_size();
    let mut v = rng.bytes(nb * ts);
    match ty {
        GgmlType::F32 => {
            for c in v.chunks_exact_mut(4) {
                c.copy_from_slice(&rng.normal().to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for c in v.chunks_exact_mut(2) {
                c.copy_from_slice(&half::f16::from_f32(rng.normal()).to_bits().to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for c in v.chunks_exact_mut(2) {
                c.copy_from_slice(&zeta_quant::f32_to_bf16(rng.normal()).to_le_bytes());
            }
        }
        _ => {
            for b in v.chunks_exact_mut(ts) {
                for &off in f16_fields(ty) {
                    b[off..off + 2].copy_from_slice(&rng.sane_f16());
                }
            }
        }
    }
    v
}

/// ggml's test-quantize-fns synthetic data: `0.1 + amplitude*cos(i + offset)`.
pub fn synthetic(offset: f32, n: usize, amplitude: f32) -> Vec<f32> {
    (0..n)
        .map(|i| 0.1 + amplitude * (i as f32 + offset).cos())
        .collect()
}

pub fn dequant(ty: GgmlType, src: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    zeta_quant::dequantize(ty, src, &mut out).unwrap();
    out
}

pub fn quant(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; ty.row_bytes(x.len() as u64).unwrap() as usize];
    zeta_quant::quantize(ty, x, &mut out).unwrap();
    out
}
