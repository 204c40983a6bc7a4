//! The dot-product kernels against golden outputs of ggml's own x86 kernels
//! (`xtask/golden/kernel_golden.py`): activation quantization must be
//! byte-identical and the lane-ordered kernels bit-identical; all kernels
//! must also agree with `zeta_quant::vec_dot` (the generic reference) to
//! within float reassociation error.
#![allow(clippy::unwrap_used)]

use zeta_gguf::GgmlType;
use zeta_tensor::cpu::kernels::{
    dot_q4_k_q8_k_gemm, dot_q4_k_q8_k_gemv, dot_q6_k_q8_k_tiled, fast_kernel, kernel_for,
    portable_kernel,
};
use zeta_tensor::cpu::matmul::quantize_act;

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn activation_quantization_matches_ggml_x86() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/vec_dot.json");
    let g: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let cases = g["quant"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for c in cases {
        let ty = GgmlType::from_name(c["type"].as_str().unwrap()).unwrap();
        let x = f32s(&hex(c["x"].as_str().unwrap()));
        let want = hex(c["a"].as_str().unwrap());
        let mut got = vec![0u8; want.len()];
        quantize_act(ty, &x, &mut got).unwrap();
        let bb = ty.type_size();
        let bad = got
            .chunks(bb)
            .zip(want.chunks(bb))
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            bad,
            0,
            "{ty}: {bad} of {} blocks differ from ggml",
            want.len() / bb
        );
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn kernels_match_ggml_bit_exactly() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/vec_dot.json");
    let g: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut checked = 0;
    for c in g["cases"].as_array().unwrap() {
        let ty = GgmlType::from_name(c["type"].as_str().unwrap()).unwrap();
        let n = c["n"].as_u64().unwrap() as usize;
        let w = hex(c["w"].as_str().unwrap());
        let x = f32s(&hex(c["x"].as_str().unwrap()));
        let a_ggml = hex(c["a"].as_str().unwrap());
        let want = f32::from_bits(c["result_bits"].as_u64().unwrap() as u32);

        let aty = zeta_quant::vec_dot_type(ty);
        let mut a = vec![0u8; a_ggml.len()];
        quantize_act(aty, &x, &mut a).unwrap();
        assert_eq!(a, a_ggml, "{ty}: activation quantization differs from ggml");

        let reference = zeta_quant::vec_dot(ty, &w, &a, n).unwrap();
        for (label, k) in [
            ("fast", fast_kernel(ty).unwrap()),
            ("portable", portable_kernel(ty).unwrap()),
        ] {
            let got = k(&w, &a, n);
            let tol = 1e-4 * reference.abs().max(1.0);
            assert!(
                (got - reference).abs() <= tol,
                "{ty} {label}: {got} vs reference {reference}"
            );
            if ty != GgmlType::Q5_K {
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{ty} {label} n={n}: {got} vs ggml {want}"
                );
            }
        }
        if ty == GgmlType::Q4_K {
            // Repacked-order kernel: same exact integer sums, different float order.
            for got in [dot_q4_k_q8_k_gemv(&w, &a, n), dot_q4_k_q8_k_gemm(&w, &a, n)] {
                assert!(
                    (got - reference).abs() <= 1e-4 * reference.abs().max(1.0),
                    "q4_K repacked: {got} vs {reference}"
                );
            }
        }
        // The SIMD builds llama.cpp-order selection hands out equal the portable builds.
        if ty == GgmlType::Q4_K {
            let v = kernel_for(ty, 8, 0, 1).unwrap()(&w, &a, n);
            assert_eq!(v.to_bits(), dot_q4_k_q8_k_gemv(&w, &a, n).to_bits());
            let v = kernel_for(ty, 8, 0, 4).unwrap()(&w, &a, n);
            assert_eq!(v.to_bits(), dot_q4_k_q8_k_gemm(&w, &a, n).to_bits());
        }
        if ty == GgmlType::Q6_K {
            let v = kernel_for(ty, 1, 0, 8).unwrap()(&w, &a, n);
            let p = dot_q6_k_q8_k_tiled(&w, &a, n);
            assert_eq!(v.to_bits(), p.to_bits());
            assert!((p - reference).abs() <= 1e-4 * reference.abs().max(1.0));
        }
        checked += 1;
    }
    assert!(checked >= 40);
}
