//! The dot-product kernels against golden outputs of ggml's own x86 kernels
//! (`xtask/golden/kernel_golden.py`): activation quantization must be
//! byte-identical and the lane-ordered kernels bit-identical; all kernels
//! must also agree with `zeta_quant::vec_dot` (the generic reference) to
//! within float reassociation error.
#![allow(clippy::unwrap_used)]

use zeta_gguf::GgmlType;
use zeta_tensor::cpu::kernels::{
    dot_q4_k_q8_k_gemm, dot_q4_k_q8_k_gemv, dot_q6_k_q8_k_tiled, fast_kernel, has_avx2_fma,
    kernel_for, kernel4_for, portable_kernel,
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

/// Deterministic pseudo-random bytes (SplitMix64).
fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) as u8
        })
        .collect()
}

/// The four-token kernels equal the one-token kernel `kernel_for` picks for
/// each of the four tokens, bit for bit, for every batch position and size
/// where one is handed out (weights: random blocks with sane f16 scales;
/// activations: random f32 rows quantized like the backend does).
#[test]
fn four_token_kernels_equal_one_token_kernels() {
    let types = [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ];
    let mut checked = 0;
    for (ti, ty) in types.into_iter().enumerate() {
        let n = 512;
        let aty = zeta_quant::vec_dot_type(ty);
        let arb = aty.row_bytes(n as u64).unwrap() as usize;
        // Weights: quantize random floats so every scale field is sane.
        let wf: Vec<f32> = random_bytes(n, 100 + ti as u64)
            .iter()
            .map(|&b| (f32::from(b) - 127.5) / 50.0)
            .collect();
        let mut w = vec![0u8; ty.row_bytes(n as u64).unwrap() as usize];
        zeta_quant::quantize(ty, &wf, &mut w).unwrap();
        for n_tokens in [4usize, 5, 7, 8, 9, 12] {
            let mut act = vec![0u8; arb * n_tokens];
            for t in 0..n_tokens {
                let x: Vec<f32> = random_bytes(n, 1000 * ti as u64 + t as u64)
                    .iter()
                    .map(|&b| (f32::from(b) - 120.0) / 37.0)
                    .collect();
                quantize_act(aty, &x, &mut act[t * arb..(t + 1) * arb]).unwrap();
            }
            for rows in [8usize, 6] {
                for t in 0..n_tokens.saturating_sub(3) {
                    let Some(k4) = kernel4_for(ty, rows, t, n_tokens) else {
                        continue;
                    };
                    let mut out = [0f32; 4];
                    k4(&w, &act[t * arb..(t + 4) * arb], arb, n, &mut out);
                    for (j, got) in out.iter().enumerate() {
                        let k1 = kernel_for(ty, rows, t + j, n_tokens).unwrap();
                        let want = k1(&w, &act[(t + j) * arb..(t + j + 1) * arb], n);
                        assert_eq!(
                            got.to_bits(),
                            want.to_bits(),
                            "{ty} rows={rows} tokens={n_tokens} t={t}+{j}: {got} vs {want}"
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    if has_avx2_fma() {
        assert!(checked > 500, "only {checked} results compared");
    } else {
        eprintln!("SKIPPED four-token kernels: this CPU lacks AVX2/FMA/F16C");
    }
}
