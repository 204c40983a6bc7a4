//! Random weights written directly in ggml block formats.
//!
//! Quantized tensors are produced without quantizing anything: the quant bits
//! are uniform random and the scales are chosen so the dequantized weights
//! have a standard deviation of about [`WEIGHT_STD`] and mean ≈ 0. That makes
//! multi-GB models cheap to generate while staying numerically sane (finite
//! activations through a forward pass).

use anyhow::{Result, bail};
use half::f16;
use zeta_gguf::GgmlType;

/// Target standard deviation of every random weight matrix.
pub const WEIGHT_STD: f32 = 0.02;

/// xoshiro256++ seeded with splitmix64: small, fast, reproducible everywhere.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform integer in [lo, hi] (inclusive).
    pub fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + (self.next_u64() % u64::from(hi - lo + 1)) as u32
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-12);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }

    /// Fills `buf` with random bytes.
    pub fn fill_bytes(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&last[..n]);
    }
}

/// Whether [`fill_random`] can produce `ty`.
pub fn supported(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, F32 | F16 | Q8_0 | Q4_0 | Q5_0 | Q4_K | Q6_K)
}

/// A scale jittered by ±25 % around `center`, as f16 bytes.
fn jittered_f16(rng: &mut Rng, center: f32) -> [u8; 2] {
    f16::from_f32(center * (0.75 + 0.5 * rng.uniform())).to_le_bytes()
}

/// Fills `out` (whole blocks / elements of `ty`) with random weights of std
/// ≈ [`WEIGHT_STD`].
pub fn fill_random(ty: GgmlType, rng: &mut Rng, out: &mut [u8]) -> Result<()> {
    let bs = ty.type_size();
    if bs == 0 || !out.len().is_multiple_of(bs) {
        bail!(
            "{} bytes is not a whole number of {} blocks",
            out.len(),
            ty.name()
        );
    }
    match ty {
        GgmlType::F32 => {
            for c in out.chunks_exact_mut(4) {
                c.copy_from_slice(&(rng.normal() * WEIGHT_STD).to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for c in out.chunks_exact_mut(2) {
                c.copy_from_slice(&f16::from_f32(rng.normal() * WEIGHT_STD).to_le_bytes());
            }
        }
        // block_q8_0 { d: f16, qs: [i8; 32] }: w = d·q, q uniform in [-128, 127]
        // (std ≈ 73.9).
        GgmlType::Q8_0 => {
            rng.fill_bytes(out);
            for b in out.chunks_exact_mut(34) {
                b[..2].copy_from_slice(&jittered_f16(rng, WEIGHT_STD / 73.9));
            }
        }
        // block_q4_0 { d: f16, qs: [u8; 16] }: w = d·(q − 8), q uniform 4-bit
        // (std ≈ 4.61).
        GgmlType::Q4_0 => {
            rng.fill_bytes(out);
            for b in out.chunks_exact_mut(18) {
                b[..2].copy_from_slice(&jittered_f16(rng, WEIGHT_STD / 4.61));
            }
        }
        // block_q5_0 { d: f16, qh: [u8; 4], qs: [u8; 16] }: w = d·(q − 16), q
        // uniform 5-bit (std ≈ 9.23).
        GgmlType::Q5_0 => {
            rng.fill_bytes(out);
            for b in out.chunks_exact_mut(22) {
                b[..2].copy_from_slice(&jittered_f16(rng, WEIGHT_STD / 9.23));
            }
        }
        // block_q4_K { d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128] }:
        // sub-block j (32 weights): w = d·sc[j]·q − dmin·m[j], q uniform 4-bit.
        // sc ∈ [32, 63]; dmin = 8·d and m = round(7.5·sc/8) cancel the mean 7.5.
        GgmlType::Q4_K => {
            rng.fill_bytes(out);
            for b in out.chunks_exact_mut(144) {
                let d = f16::from_f32(WEIGHT_STD / (4.61 * 47.5) * (0.75 + 0.5 * rng.uniform()));
                let dmin = f16::from_f32(d.to_f32() * 8.0);
                let mut sc = [0u8; 8];
                let mut m = [0u8; 8];
                for j in 0..8 {
                    sc[j] = rng.range(32, 63) as u8;
                    m[j] = ((7.5 * f32::from(sc[j]) / 8.0).round() as u8).min(63);
                }
                b[0..2].copy_from_slice(&d.to_le_bytes());
                b[2..4].copy_from_slice(&dmin.to_le_bytes());
                b[4..16].copy_from_slice(&pack_scale_min_k4(&sc, &m));
            }
        }
        // block_q6_K { ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16 }:
        // w = d·scale[j]·(q − 32), q uniform 6-bit (std ≈ 18.47), scale ∈ [8, 16].
        GgmlType::Q6_K => {
            rng.fill_bytes(out);
            for b in out.chunks_exact_mut(210) {
                for s in &mut b[192..208] {
                    *s = rng.range(8, 16) as u8;
                }
                b[208..210].copy_from_slice(&jittered_f16(rng, WEIGHT_STD / (18.47 * 12.0)));
            }
        }
        other => bail!("cannot generate random {} blocks", other.name()),
    }
    Ok(())
}

/// Packs eight 6-bit scales and mins the way ggml's `get_scale_min_k4` reads
/// them (Q4_K / Q5_K `scales[12]`).
pub fn pack_scale_min_k4(sc: &[u8; 8], m: &[u8; 8]) -> [u8; 12] {
    let mut q = [0u8; 12];
    for j in 0..4 {
        q[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
        q[j + 4] = (m[j] & 63) | ((m[j + 4] >> 4) << 6);
        q[j + 8] = (sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4);
    }
    q
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// ggml's get_scale_min_k4, to check the packing round-trips.
    fn unpack(j: usize, q: &[u8; 12]) -> (u8, u8) {
        if j < 4 {
            (q[j] & 63, q[j + 4] & 63)
        } else {
            (
                (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
                (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
            )
        }
    }

    #[test]
    fn scale_min_packing_round_trips() {
        let mut rng = Rng::new(1);
        for _ in 0..1000 {
            let mut sc = [0u8; 8];
            let mut m = [0u8; 8];
            for j in 0..8 {
                sc[j] = rng.range(0, 63) as u8;
                m[j] = rng.range(0, 63) as u8;
            }
            let q = pack_scale_min_k4(&sc, &m);
            for j in 0..8 {
                assert_eq!(unpack(j, &q), (sc[j], m[j]));
            }
        }
    }

    #[test]
    fn random_blocks_have_the_target_statistics() {
        use GgmlType::*;
        for ty in [F32, F16, Q8_0, Q4_0, Q5_0, Q4_K, Q6_K] {
            let n = 256 * 64;
            let mut buf = vec![0u8; usize::try_from(ty.row_bytes(n as u64).unwrap()).unwrap()];
            fill_random(ty, &mut Rng::new(7), &mut buf).unwrap();
            let mut w = vec![0f32; n];
            zeta_quant::dequantize(ty, &buf, &mut w).unwrap();
            let mean = w.iter().sum::<f32>() / n as f32;
            let std = (w.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n as f32).sqrt();
            assert!(w.iter().all(|x| x.is_finite()), "{ty:?}");
            assert!(mean.abs() < 0.003, "{ty:?}: mean {mean}");
            assert!((0.015..0.026).contains(&std), "{ty:?}: std {std}");
        }
    }

    #[test]
    fn rng_is_deterministic() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(42);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(42);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }
}
