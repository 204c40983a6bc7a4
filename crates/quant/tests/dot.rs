//! `vec_dot` against dequantize-then-dot for every supported weight type,
//! ggml's test-quantize-fns dot-product bound, and property tests.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use proptest::prelude::*;
use zeta_quant::blocks::BlockQ8_1;
use zeta_quant::{GgmlType, can_vec_dot, vec_dot, vec_dot_type};

const WEIGHT_TYPES: [GgmlType; 15] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
];

/// Σ dequant(w)·dequant(a) in f64, plus Σ|terms| (the scale of rounding error).
/// For Q8_1 activations ggml uses the stored `s = fp16(d·Σq)` in place of
/// `d·Σq`; the reference applies the same substitution so that only float
/// rounding separates the two.
fn reference(wt: GgmlType, w: &[u8], a: &[u8], n: usize) -> (f64, f64) {
    let at = vec_dot_type(wt);
    let wf = dequant(wt, w, n);
    let af = dequant(at, a, n);
    let mut dot = 0f64;
    let mut mag = 0f64;
    for (x, y) in wf.iter().zip(&af) {
        dot += *x as f64 * *y as f64;
        mag += (*x as f64 * *y as f64).abs();
    }
    if at == GgmlType::Q8_1 {
        let wts = wt.type_size();
        for (bi, ab) in a.chunks_exact(36).enumerate() {
            let blk: BlockQ8_1 = bytemuck::pod_read_unaligned(ab);
            let m = half::f16::from_le_bytes([w[bi * wts + 2], w[bi * wts + 3]]).to_f32() as f64;
            let d = blk.d.to_f32() as f64;
            let sq: i32 = blk.qs.iter().map(|&q| q as i32).sum();
            let exact = d * sq as f64;
            dot += m * (blk.s.to_f32() as f64 - exact);
            mag += (m * blk.s.to_f32() as f64).abs();
        }
    }
    (dot, mag)
}

fn check(wt: GgmlType, w: &[u8], a: &[u8], n: usize) -> Result<(), String> {
    let got = vec_dot(wt, w, a, n).map_err(|e| e.to_string())? as f64;
    let (want, mag) = reference(wt, w, a, n);
    let tol = 2e-6 * mag + 1e-30;
    if (got - want).abs() <= tol {
        Ok(())
    } else {
        Err(format!(
            "{wt}: vec_dot {got:e} vs dequant-dot {want:e} (|diff| {:e} > tol {tol:e}, n {n})",
            (got - want).abs()
        ))
    }
}

#[test]
fn every_weight_type_is_supported_with_its_ggml_pair() {
    use GgmlType::*;
    let pairs = [
        (Q4_0, Q8_0),
        (Q5_0, Q8_0),
        (Q8_0, Q8_0),
        (IQ4_NL, Q8_0),
        (Q4_1, Q8_1),
        (Q5_1, Q8_1),
        (Q2_K, Q8_K),
        (Q3_K, Q8_K),
        (Q4_K, Q8_K),
        (Q5_K, Q8_K),
        (Q6_K, Q8_K),
        (IQ4_XS, Q8_K),
        (F16, F16),
        (BF16, BF16),
        (F32, F32),
    ];
    for (w, a) in pairs {
        assert_eq!(vec_dot_type(w), a, "{w}");
        assert!(can_vec_dot(w), "{w}");
    }
    assert!(!can_vec_dot(Q8_K));
    assert!(!can_vec_dot(IQ2_XXS));
}

#[test]
fn vec_dot_matches_dequantized_dot_on_random_blocks() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for wt in WEIGHT_TYPES {
        let at = vec_dot_type(wt);
        for n in [256usize, 1024, 4096] {
            // Random weight bits (all code points), activations quantized like ggml does.
            let w = random_blocks(&mut rng, wt, n);
            let x = rng.floats(n, 1.5);
            let a = quant(at, &x);
            check(wt, &w, &a, n).unwrap();
            // Unaligned inputs give the same result.
            let mut ws = vec![0u8; w.len() + 1];
            ws[1..].copy_from_slice(&w);
            let mut as_ = vec![0u8; a.len() + 3];
            as_[3..].copy_from_slice(&a);
            assert_eq!(
                vec_dot(wt, &ws[1..], &as_[3..], n).unwrap().to_bits(),
                vec_dot(wt, &w, &a, n).unwrap().to_bits(),
                "{wt} unaligned"
            );
        }
    }
}

#[test]
fn vec_dot_error_within_test_quantize_fns_bounds() {
    // test-quantize-fns: |vec_dot(q(x1), q8(x2)) - x1·x2| / n < 0.02 (0.04 for Q2_K).
    let n = 32 * 128;
    let x1 = synthetic(0.0, n, 2.0);
    let x2 = synthetic(1.0, n, 2.0);
    let exact: f64 = x1.iter().zip(&x2).map(|(a, b)| (*a * *b) as f64).sum();
    for wt in WEIGHT_TYPES {
        if !zeta_quant::can_quantize(wt) {
            continue;
        }
        let w = quant(wt, &x1);
        let a = quant(vec_dot_type(wt), &x2);
        let got = vec_dot(wt, &w, &a, n).unwrap() as f64;
        let err = (got - exact).abs() / n as f64;
        let bound = if wt == GgmlType::Q2_K { 0.04 } else { 0.02 };
        assert!(err < bound, "{wt}: dot product error {err}");
        check(wt, &w, &a, n).unwrap();
    }
}

#[test]
fn vec_dot_rejects_bad_lengths_and_types() {
    let w = vec![0u8; 18];
    let a = vec![0u8; 34];
    assert!(vec_dot(GgmlType::Q4_0, &w, &a, 32).is_ok());
    assert!(vec_dot(GgmlType::Q4_0, &w, &a, 64).is_err());
    assert!(vec_dot(GgmlType::Q4_0, &w, &a, 31).is_err());
    assert!(vec_dot(GgmlType::Q4_0, &w[..17], &a, 32).is_err());
    assert!(vec_dot(GgmlType::Q4_0, &w, &a[..33], 32).is_err());
    assert!(vec_dot(GgmlType::Q4_K, &w, &a, 32).is_err());
    assert!(vec_dot(GgmlType::IQ2_XXS, &[], &[], 0).is_err());
    assert_eq!(vec_dot(GgmlType::Q4_0, &[], &[], 0).unwrap(), 0.0);
}

fn weight_type() -> impl Strategy<Value = GgmlType> {
    proptest::sample::select(WEIGHT_TYPES.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn prop_vec_dot_agrees_with_dequantized_dot(
        wt in weight_type(),
        blocks in 1usize..5,
        seed in any::<u64>(),
        scale in 1e-3f32..100.0,
    ) {
        let mut rng = Rng(seed | 1);
        let n = blocks * 256;
        let at = vec_dot_type(wt);
        let w = if zeta_quant::can_quantize(wt) && seed % 2 == 0 {
            quant(wt, &rng.floats(n, scale))
        } else {
            random_blocks(&mut rng, wt, n)
        };
        let a = quant(at, &rng.floats(n, scale));
        prop_assert!(check(wt, &w, &a, n).is_ok(), "{}", check(wt, &w, &a, n).unwrap_err());
    }

    #[test]
    fn prop_vec_dot_never_panics_on_garbage(
        wt in weight_type(),
        bytes in proptest::collection::vec(any::<u8>(), 0..2000),
        n in 0usize..1024,
    ) {
        let at = vec_dot_type(wt);
        let wl = (wt.row_bytes(n as u64).unwrap_or(0) as usize).min(bytes.len());
        let al = (at.row_bytes(n as u64).unwrap_or(0) as usize).min(bytes.len());
        let _ = vec_dot(wt, &bytes[..wl], &bytes[..al], n);
    }
}
