//! Quantize → dequantize error within ggml's test-quantize-fns bounds, length
//! and type errors, and never-panic properties.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use proptest::prelude::*;
use zeta_quant::{GgmlType, QuantError, can_dequantize, can_quantize, dequantize, quantize};

const QUANT_TYPES: [GgmlType; 17] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
];

/// test-quantize-fns' `array_rmse`: sqrt(Σ diff²) / n.
fn rmse(a: &[f32], b: &[f32]) -> f32 {
    let sum: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (*x - *y) as f64;
            d * d
        })
        .sum();
    (sum.sqrt() as f32) / a.len() as f32
}

#[test]
fn total_quantization_error_within_ggml_bounds() {
    let n = 32 * 128;
    let x = synthetic(0.0, n, 2.0);
    for ty in QUANT_TYPES {
        let back = dequant(ty, &quant(ty, &x), n);
        let err = rmse(&x, &back);
        let bound = match ty {
            GgmlType::Q2_K => 0.0075,
            GgmlType::Q3_K => 0.0040,
            _ => 0.002,
        };
        assert!(
            err < bound,
            "{ty}: total quantization error {err} >= {bound}"
        );
    }
}

#[test]
fn round_trip_error_is_bounded_per_block_on_random_data() {
    // Every element of a Q8_0/Q8_1/Q8_K block is within half a step (plus f16 scale rounding).
    let mut rng = Rng(77);
    let n = 4096;
    let x = rng.floats(n, 3.0);
    for ty in [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K] {
        let back = dequant(ty, &quant(ty, &x), n);
        for (xb, bb) in x.chunks(ty.block_size()).zip(back.chunks(ty.block_size())) {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (a, b) in xb.iter().zip(bb) {
                assert!(
                    (a - b).abs() <= amax / 127.0 * 0.5 + amax * 1e-3,
                    "{ty}: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn zero_and_constant_blocks_round_trip() {
    for ty in QUANT_TYPES {
        let n = 512;
        let zeros = vec![0f32; n];
        assert!(
            dequant(ty, &quant(ty, &zeros), n).iter().all(|v| *v == 0.0),
            "{ty}"
        );
        let ones = vec![0.5f32; n];
        let back = dequant(ty, &quant(ty, &ones), n);
        assert!(
            back.iter().all(|v| (v - 0.5).abs() < 0.02),
            "{ty}: {:?}",
            &back[..4]
        );
    }
}

#[test]
fn support_tables() {
    for ty in QUANT_TYPES {
        assert!(can_quantize(ty) && can_dequantize(ty), "{ty}");
    }
    for ty in [
        GgmlType::IQ2_XXS,
        GgmlType::TQ1_0,
        GgmlType::MXFP4,
        GgmlType::I32,
    ] {
        assert!(!can_dequantize(ty) && !can_quantize(ty), "{ty}");
        assert!(matches!(
            dequantize(ty, &[], &mut []),
            Err(QuantError::Unsupported { .. })
        ));
        assert!(matches!(
            quantize(ty, &[], &mut []),
            Err(QuantError::Unsupported { .. })
        ));
    }
}

#[test]
fn bad_lengths_are_errors() {
    let mut out = vec![0f32; 32];
    assert!(matches!(
        dequantize(GgmlType::Q4_0, &[0u8; 17], &mut out),
        Err(QuantError::ByteLength {
            expected: 18,
            found: 17,
            ..
        })
    ));
    assert!(matches!(
        dequantize(GgmlType::Q4_0, &[0u8; 18], &mut out[..31]),
        Err(QuantError::PartialBlock { .. })
    ));
    assert!(matches!(
        dequantize(GgmlType::Q4_K, &[0u8; 18], &mut out),
        Err(QuantError::PartialBlock { .. })
    ));
    let mut bytes = vec![0u8; 35];
    assert!(quantize(GgmlType::Q8_0, &[0.0; 32], &mut bytes).is_err());
    assert!(quantize(GgmlType::Q8_0, &[0.0; 32], &mut bytes[..34]).is_ok());
    assert!(quantize(GgmlType::Q8_0, &[0.0; 33], &mut bytes[..34]).is_err());
    assert!(dequantize(GgmlType::Q8_0, &[], &mut []).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn prop_dequantize_never_panics(
        ty in proptest::sample::select(QUANT_TYPES.to_vec()),
        bytes in proptest::collection::vec(any::<u8>(), 0..1200),
        n in 0usize..600,
    ) {
        let mut out = vec![0f32; n];
        let _ = dequantize(ty, &bytes, &mut out);
        // With the right length it must succeed.
        let want = ty.row_bytes(n as u64).map(|b| b as usize);
        if let Some(len) = want.filter(|&l| l <= bytes.len()) {
            prop_assert!(dequantize(ty, &bytes[..len], &mut out).is_ok());
        }
    }

    #[test]
    fn prop_quantize_never_panics_and_round_trips(
        ty in proptest::sample::select(QUANT_TYPES.to_vec()),
        x in proptest::collection::vec(-1e4f32..1e4, 256..=256),
    ) {
        let q = quant(ty, &x);
        let back = dequant(ty, &q, x.len());
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        // Generous bound: even 2-bit quants stay within the block's range.
        for (a, b) in x.iter().zip(&back) {
            prop_assert!(b.is_finite());
            prop_assert!((a - b).abs() <= amax * 1.01 + 1e-3, "{ty}: {a} -> {b}");
        }
    }

    #[test]
    fn prop_quantize_handles_non_finite_input(
        ty in proptest::sample::select(QUANT_TYPES.to_vec()),
        mut x in proptest::collection::vec(-10f32..10.0, 256..=256),
        pos in 0usize..256,
        bad in proptest::sample::select(vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX]),
    ) {
        x[pos] = bad;
        let mut out = vec![0u8; ty.row_bytes(256).unwrap() as usize];
        prop_assert!(quantize(ty, &x, &mut out).is_ok());
    }
}
