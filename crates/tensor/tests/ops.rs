//! Every CPU op against a naive f64/f32 reference on awkward sizes, plus
//! error handling (undersized buffers, bad ids) and threading consistency.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use zeta_gguf::{GgmlType, Gguf, GgufWriter, Value};
use zeta_tensor::{AttnParams, Backend, CpuBackend, GluKind, RopeKind, RopeParams, TensorError};

/// Deterministic pseudo-random numbers in [-1, 1).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

/// An in-memory GGUF with one tensor `w` of `ty`, dims `[cols, rows]`, from `vals` (quantized).
/// Returns the file and the dequantized values the tensor really holds.
fn gguf_with(ty: GgmlType, cols: usize, rows: usize, vals: &[f32]) -> (Arc<Gguf>, Vec<f32>) {
    let row_bytes = ty.row_bytes(cols as u64).unwrap() as usize;
    let mut data = vec![0u8; row_bytes * rows];
    for r in 0..rows {
        let src = &vals[r * cols..(r + 1) * cols];
        let dst = &mut data[r * row_bytes..(r + 1) * row_bytes];
        match ty {
            GgmlType::F32 => dst.copy_from_slice(bytemuck::cast_slice(src)),
            _ => zeta_quant::quantize(ty, src, dst).unwrap(),
        }
    }
    let mut deq = vec![0f32; rows * cols];
    for r in 0..rows {
        let src = &data[r * row_bytes..(r + 1) * row_bytes];
        match ty {
            GgmlType::F32 => {
                deq[r * cols..(r + 1) * cols].copy_from_slice(bytemuck::cast_slice(src))
            }
            _ => zeta_quant::dequantize(ty, src, &mut deq[r * cols..(r + 1) * cols]).unwrap(),
        }
    }
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", Value::String("test".into()));
    let dims: Vec<u64> = if rows == 1 {
        vec![cols as u64]
    } else {
        vec![cols as u64, rows as u64]
    };
    w.add_tensor("w", &dims, ty, data).unwrap();
    let mut bytes = Vec::new();
    w.write_to(&mut bytes).unwrap();
    (Arc::new(Gguf::from_bytes(bytes).unwrap()), deq)
}

const MATMUL_TYPES: &[GgmlType] = &[
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

/// `w · x` for the `n_tok` rows of `xv` through the backend (the input
/// buffer a few elements longer than needed).
fn run_matmul(
    be: &CpuBackend,
    w: &<CpuBackend as Backend>::Weight,
    xv: &[f32],
    rows: usize,
    n_tok: usize,
) -> Vec<f32> {
    let mut x = be.alloc(xv.len() + 5).unwrap();
    be.write(&mut x, 0, xv).unwrap();
    let mut out = be.alloc(n_tok * rows).unwrap();
    be.matmul(w, &x, &mut out, n_tok).unwrap();
    let mut got = vec![0f32; n_tok * rows];
    be.read(&out, 0, &mut got).unwrap();
    got
}

#[test]
fn matmul_matches_naive_reference_for_every_type() {
    let mut rng = Rng(7);
    for &ty in MATMUL_TYPES {
        if ty != GgmlType::F32 && !zeta_quant::can_quantize(ty) {
            eprintln!("SKIP: zeta-quant cannot quantize {ty}");
            continue;
        }
        let cols = if ty.block_size() == 256 { 512 } else { 96 };
        // 13 rows: not a multiple of 8 (plain kernels); 24: multiple of 8 (Q4_K repacked order).
        for rows in [13usize, 24] {
            let (g, wd) = gguf_with(ty, cols, rows, &rng.vec(rows * cols, 1.0));
            for threads in [1usize, 2] {
                let be = CpuBackend::with_threads(threads);
                let w = be.upload_weight(&g, "w").unwrap();
                assert_eq!(be.weight_dims(&w), vec![cols as u64, rows as u64]);
                for n_tok in [1usize, 3, 7, 17] {
                    let xv = rng.vec(n_tok * cols, 2.0);
                    let got = run_matmul(&be, &w, &xv, rows, n_tok);
                    for t in 0..n_tok {
                        for r in 0..rows {
                            let (mut exact, mut mag) = (0f64, 0f64);
                            for k in 0..cols {
                                let p = f64::from(wd[r * cols + k]) * f64::from(xv[t * cols + k]);
                                exact += p;
                                mag += p.abs();
                            }
                            let tol = if ty == GgmlType::F32 { 1e-5 } else { 2e-2 } * mag + 1e-6;
                            let g = f64::from(got[t * rows + r]);
                            assert!(
                                (g - exact).abs() <= tol,
                                "{ty} rows={rows} t={t} r={r}: {g} vs {exact} (tol {tol})"
                            );
                        }
                    }
                    // The last token alone.
                    let mut single = be.alloc(rows).unwrap();
                    let mut x1 = be.alloc(cols).unwrap();
                    be.write(&mut x1, 0, &xv[(n_tok - 1) * cols..]).unwrap();
                    be.matmul(&w, &x1, &mut single, 1).unwrap();
                    let mut s1 = vec![0f32; rows];
                    be.read(&single, 0, &mut s1).unwrap();
                    // Same values up to float summation order: llama.cpp's kernels (and
                    // hence ours) differ between batch sizes for some types.
                    for (a, b) in s1.iter().zip(&got[(n_tok - 1) * rows..]) {
                        assert!(
                            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                            "{ty}: single {a} vs batch {b}"
                        );
                    }
                }
            }
        }
    }
}

/// One weight row times one activation row in the order of the panel GEMM
/// for 32-column types (and of ggml's repacked Q4_0 kernels): per block an
/// exact integer sum, then `acc = fma(float(sum), d_w · d_a, acc)`.
fn block_order_dot(ty: GgmlType, w: &[u8], a: &[u8], n: usize) -> f32 {
    let f16 = |b: &[u8]| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
    let wb = ty.type_size();
    let mut acc = 0f32;
    for b in 0..n / 32 {
        let (bw, ba) = (&w[b * wb..(b + 1) * wb], &a[b * 34..(b + 1) * 34]);
        let q: Vec<i32> = (0..32)
            .map(|j| match ty {
                GgmlType::Q4_0 => i32::from((bw[2 + j % 16] >> (4 * (j / 16))) & 0xF) - 8,
                GgmlType::Q5_0 => {
                    let qh = u32::from_le_bytes([bw[2], bw[3], bw[4], bw[5]]);
                    let lo = i32::from((bw[6 + j % 16] >> (4 * (j / 16))) & 0xF);
                    lo + 16 * ((qh >> j) & 1) as i32 - 16
                }
                _ => i32::from(bw[2 + j] as i8),
            })
            .collect();
        let isum: i32 = (0..32).map(|j| q[j] * i32::from(ba[2 + j] as i8)).sum();
        acc = (isum as f32).mul_add(f16(bw) * f16(ba), acc);
    }
    acc
}

/// Batches of ≥ 16 tokens of Q4_0/Q4_1/Q5_0/Q8_0/Q4_K/Q6_K weights take the
/// AVX-512 VNNI panel GEMM where the CPU has it. Its results equal, bit for
/// bit, the order it documents: [`block_order_dot`] for Q4_0 with rows in
/// groups of eight (llama.cpp's repacked kernels), else the per-token kernel
/// `kernel_for` picks (ggml's `vec_dot` lane order for Q4_1/Q5_0/Q8_0, the
/// repacked gemm/gemv orders of Q4_K, the tiled order of Q6_K) — for partial
/// panels, every token remainder and 1 or 2 threads.
#[test]
fn batched_matmul_gemm_orders_are_bit_exact() {
    use zeta_tensor::cpu::kernels::{has_avx512_vnni, kernel_for};
    use zeta_tensor::cpu::matmul::quantize_act;
    if !has_avx512_vnni() {
        eprintln!("SKIPPED: no AVX-512 VNNI on this CPU (the panel GEMM is not used)");
        return;
    }
    let mut rng = Rng(11);
    let types = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ];
    for ty in types {
        let cols = if ty.block_size() == 256 { 512 } else { 96 };
        let aty = zeta_quant::vec_dot_type(ty);
        let arb = aty.row_bytes(cols as u64).unwrap() as usize;
        let wrb = ty.row_bytes(cols as u64).unwrap() as usize;
        // 24 rows: one and a half panels; 40: two and a half (both multiples
        // of 8: Q4_0 and Q4_K in the repacked orders); 20: not (Q4_0 in
        // `vec_dot`'s order, Q4_K not in the GEMM).
        for rows in [24usize, 40, 20] {
            let (g, _) = gguf_with(ty, cols, rows, &rng.vec(rows * cols, 1.0));
            let wbytes = g.tensor_data(&g.tensors()[0]).to_vec();
            for threads in [1usize, 2] {
                let be = CpuBackend::with_threads(threads);
                let w = be.upload_weight(&g, "w").unwrap();
                for n_tok in [16usize, 17, 19, 26, 37] {
                    let xv = rng.vec(n_tok * cols, 2.0);
                    let got = run_matmul(&be, &w, &xv, rows, n_tok);
                    for t in 0..n_tok {
                        let mut a = vec![0u8; arb];
                        quantize_act(aty, &xv[t * cols..(t + 1) * cols], &mut a).unwrap();
                        for r in 0..rows {
                            let wr = &wbytes[r * wrb..(r + 1) * wrb];
                            let want = match ty {
                                GgmlType::Q4_0 if rows % 8 == 0 => {
                                    block_order_dot(ty, wr, &a, cols)
                                }
                                _ => kernel_for(ty, rows, t, n_tok).unwrap()(wr, &a, cols),
                            };
                            let g = got[t * rows + r];
                            assert_eq!(
                                g.to_bits(),
                                want.to_bits(),
                                "{ty} rows={rows} threads={threads} n={n_tok} t={t} r={r}: {g} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn matmul_rejects_undersized_buffers() {
    let (g, _) = gguf_with(GgmlType::Q8_0, 64, 4, &Rng(1).vec(256, 1.0));
    let be = CpuBackend::with_threads(2);
    let w = be.upload_weight(&g, "w").unwrap();
    let x = be.alloc(64).unwrap();
    let mut out = be.alloc(4).unwrap();
    assert!(matches!(
        be.matmul(&w, &x, &mut out, 2),
        Err(TensorError::BufferTooSmall { .. })
    ));
    assert!(matches!(
        be.upload_weight(&g, "nope"),
        Err(TensorError::MissingTensor { .. })
    ));
}

#[test]
fn get_rows_dequantizes_one_row_and_checks_ids() {
    let mut rng = Rng(3);
    for ty in [
        GgmlType::F32,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ] {
        let cols = 256;
        let rows = 11;
        let (g, deq) = gguf_with(ty, cols, rows, &rng.vec(rows * cols, 1.0));
        let be = CpuBackend::new();
        let w = be.upload_weight(&g, "w").unwrap();
        let ids = [10u32, 0, 3, 3];
        let mut out = be.alloc(ids.len() * cols).unwrap();
        be.get_rows(&w, &ids, &mut out).unwrap();
        let mut got = vec![0f32; ids.len() * cols];
        be.read(&out, 0, &mut got).unwrap();
        for (t, &id) in ids.iter().enumerate() {
            let id = id as usize;
            assert_eq!(
                got[t * cols..(t + 1) * cols],
                deq[id * cols..(id + 1) * cols],
                "{ty}"
            );
        }
        assert!(matches!(
            be.get_rows(&w, &[11], &mut out),
            Err(TensorError::RowOutOfRange { .. })
        ));
    }
}

#[test]
fn rms_norm_matches_reference() {
    let mut rng = Rng(5);
    let n = 77;
    let rows = 5;
    let wv = rng.vec(n, 1.5);
    let (g, _) = gguf_with(GgmlType::F32, n, 1, &wv);
    let be = CpuBackend::new();
    let w = be.upload_weight(&g, "w").unwrap();
    let xv = rng.vec(rows * n, 3.0);
    let mut x = be.alloc(rows * n).unwrap();
    be.write(&mut x, 0, &xv).unwrap();
    let mut out = be.alloc(rows * n).unwrap();
    be.rms_norm(&x, &w, &mut out, rows, 1e-5).unwrap();
    let mut got = vec![0f32; rows * n];
    be.read(&out, 0, &mut got).unwrap();
    for r in 0..rows {
        let row = &xv[r * n..(r + 1) * n];
        let ms: f64 = row
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            / n as f64;
        let s = 1.0 / (ms + 1e-5).sqrt();
        for i in 0..n {
            let want = f64::from(row[i]) * s * f64::from(wv[i]);
            assert!((f64::from(got[r * n + i]) - want).abs() < 1e-5 * (1.0 + want.abs()));
        }
    }
    be.rms_norm_inplace(&mut x, &w, rows, 1e-5).unwrap();
    let mut inplace = vec![0f32; rows * n];
    be.read(&x, 0, &mut inplace).unwrap();
    assert_eq!(inplace, got);
}

#[test]
fn rope_matches_reference_in_both_orders() {
    let mut rng = Rng(9);
    let (n_tok, n_heads, hd) = (4, 3, 20);
    for kind in [RopeKind::Normal, RopeKind::Neox] {
        for n_dims in [20usize, 12] {
            let p = RopeParams {
                kind,
                n_dims,
                freq_base: 10000.0,
                freq_scale: 0.5,
            };
            let xv = rng.vec(n_tok * n_heads * hd, 1.0);
            let be = CpuBackend::new();
            let mut x = be.alloc(xv.len()).unwrap();
            be.write(&mut x, 0, &xv).unwrap();
            let pos0 = 37;
            be.rope(&mut x, n_tok, n_heads, hd, pos0, &p, None).unwrap();
            let mut got = vec![0f32; xv.len()];
            be.read(&x, 0, &mut got).unwrap();
            for t in 0..n_tok {
                for h in 0..n_heads {
                    let base = (t * n_heads + h) * hd;
                    let mut want: Vec<f64> =
                        xv[base..base + hd].iter().map(|&v| f64::from(v)).collect();
                    for i in 0..n_dims / 2 {
                        let theta = 0.5
                            * (pos0 + t) as f64
                            * 10000f64.powf(-2.0 * i as f64 / n_dims as f64);
                        let (a, b) = match kind {
                            RopeKind::Normal => (2 * i, 2 * i + 1),
                            RopeKind::Neox => (i, i + n_dims / 2),
                        };
                        let (x0, x1) = (want[a], want[b]);
                        want[a] = x0 * theta.cos() - x1 * theta.sin();
                        want[b] = x0 * theta.sin() + x1 * theta.cos();
                    }
                    for i in 0..hd {
                        let g = f64::from(got[base + i]);
                        assert!(
                            (g - want[i]).abs() < 1e-4,
                            "{kind:?} n_dims={n_dims} i={i}: {g} vs {}",
                            want[i]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn rope_freq_factors_divide_angles() {
    let hd = 8;
    let ff = [1.0f32, 2.0, 4.0, 8.0];
    let (g, _) = gguf_with(GgmlType::F32, 4, 1, &ff);
    let be = CpuBackend::new();
    let w = be.upload_weight(&g, "w").unwrap();
    let p = RopeParams {
        kind: RopeKind::Normal,
        n_dims: hd,
        freq_base: 100.0,
        freq_scale: 1.0,
    };
    let xv: Vec<f32> = (0..hd)
        .map(|i| if i % 2 == 0 { 1.0 } else { 0.0 })
        .collect();
    let mut x = be.alloc(hd).unwrap();
    be.write(&mut x, 0, &xv).unwrap();
    be.rope(&mut x, 1, 1, hd, 5, &p, Some(&w)).unwrap();
    let mut got = vec![0f32; hd];
    be.read(&x, 0, &mut got).unwrap();
    for i in 0..4 {
        let theta = 5.0 * 100f64.powf(-2.0 * i as f64 / hd as f64) / f64::from(ff[i]);
        assert!((f64::from(got[2 * i]) - theta.cos()).abs() < 1e-5);
        assert!((f64::from(got[2 * i + 1]) - theta.sin()).abs() < 1e-5);
    }
}

#[test]
fn glu_activations_match_formulas() {
    let mut rng = Rng(11);
    let (rows, cols) = (3, 37);
    let g = rng.vec(rows * cols, 6.0);
    let u = rng.vec(rows * cols, 2.0);
    let be = CpuBackend::new();
    for kind in [GluKind::SwiGlu, GluKind::GeGlu] {
        let mut gb = be.alloc(g.len()).unwrap();
        let mut ub = be.alloc(u.len()).unwrap();
        be.write(&mut gb, 0, &g).unwrap();
        be.write(&mut ub, 0, &u).unwrap();
        be.glu(&mut gb, &ub, rows, cols, kind).unwrap();
        let mut got = vec![0f32; g.len()];
        be.read(&gb, 0, &mut got).unwrap();
        for i in 0..g.len() {
            let x = f64::from(g[i]);
            let act = match kind {
                GluKind::SwiGlu => x / (1.0 + (-x).exp()),
                GluKind::GeGlu => {
                    0.5 * x
                        * (1.0
                            + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x))
                                .tanh())
                }
            };
            let want = act * f64::from(u[i]);
            // GeGLU goes through ggml's f16 table: ~1e-3 relative.
            let tol = if kind == GluKind::GeGlu { 2e-3 } else { 1e-5 } * (1.0 + want.abs());
            assert!(
                (f64::from(got[i]) - want).abs() < tol,
                "{kind:?} x={x}: {} vs {want}",
                got[i]
            );
        }
    }
}

/// Naive causal GQA attention in f64 over f32 inputs.
fn naive_attention(q: &[f32], k: &[f32], v: &[f32], p: &AttnParams) -> Vec<f64> {
    let mut out = vec![0f64; p.n_tokens * p.n_head * p.head_dim_v];
    let kd = p.n_head_kv * p.head_dim_k;
    let vd = p.n_head_kv * p.head_dim_v;
    for t in 0..p.n_tokens {
        let pos = p.pos0 + t;
        for h in 0..p.n_head {
            let g = h / (p.n_head / p.n_head_kv);
            let start = p.window.map_or(0, |w| (pos + 1).saturating_sub(w));
            let qr = &q[(t * p.n_head + h) * p.head_dim_k..][..p.head_dim_k];
            let s: Vec<f64> = (start..=pos)
                .map(|j| {
                    let kr = &k[j * kd + g * p.head_dim_k..][..p.head_dim_k];
                    qr.iter()
                        .zip(kr)
                        .map(|(a, b)| f64::from(*a) * f64::from(*b))
                        .sum::<f64>()
                        * f64::from(p.scale)
                })
                .collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for (idx, j) in (start..=pos).enumerate() {
                let vr = &v[j * vd + g * p.head_dim_v..][..p.head_dim_v];
                for d in 0..p.head_dim_v {
                    out[(t * p.n_head + h) * p.head_dim_v + d] += e[idx] / z * f64::from(vr[d]);
                }
            }
        }
    }
    out
}

#[test]
fn attention_matches_naive_reference() {
    let mut rng = Rng(13);
    for (hd, window, n_tokens, pos0) in [
        (32usize, None, 5usize, 0usize),
        (24, Some(3), 4, 6),
        (64, None, 1, 9),
        (16, Some(4), 1, 20),
    ] {
        let (n_head, n_head_kv) = (4, 2);
        let n_ctx = 32;
        let p = AttnParams {
            n_tokens,
            pos0,
            n_head,
            n_head_kv,
            head_dim_k: hd,
            head_dim_v: hd,
            scale: 1.0 / (hd as f32).sqrt(),
            window,
        };
        let be = CpuBackend::with_threads(2);
        let kv_dim = n_head_kv * hd;
        // Keys/values for all positions so far, rounded to f16 like the cache.
        let round = |v: Vec<f32>| -> Vec<f32> {
            v.into_iter()
                .map(|x| half::f16::from_f32(x).to_f32())
                .collect()
        };
        let kall = round(rng.vec((pos0 + n_tokens) * kv_dim, 2.0));
        let vall = round(rng.vec((pos0 + n_tokens) * kv_dim, 1.0));
        let qv = round(rng.vec(n_tokens * n_head * hd, 2.0));
        let mut kc = be.alloc_kv(n_ctx * kv_dim).unwrap();
        let mut vc = be.alloc_kv(n_ctx * kv_dim).unwrap();
        let mut kb = be.alloc((pos0 + n_tokens) * kv_dim).unwrap();
        let mut vb = be.alloc((pos0 + n_tokens) * kv_dim).unwrap();
        be.write(&mut kb, 0, &kall).unwrap();
        be.write(&mut vb, 0, &vall).unwrap();
        be.store_kv(&kb, &mut kc, pos0 + n_tokens, kv_dim, 0)
            .unwrap();
        be.store_kv(&vb, &mut vc, pos0 + n_tokens, kv_dim, 0)
            .unwrap();
        let mut qb = be.alloc(qv.len()).unwrap();
        be.write(&mut qb, 0, &qv).unwrap();
        let mut out = be.alloc(n_tokens * n_head * hd).unwrap();
        be.attention(&qb, &kc, &vc, &mut out, &p).unwrap();
        let mut got = vec![0f32; n_tokens * n_head * hd];
        be.read(&out, 0, &mut got).unwrap();
        let want = naive_attention(&qv, &kall, &vall, &p);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            // Probabilities are rounded to f16 (ggml): ~1e-3 relative per term.
            assert!(
                (f64::from(*g) - w).abs() < 3e-3,
                "hd={hd} window={window:?} i={i}: {g} vs {w}"
            );
        }
        // Undersized cache → error, not panic.
        let small = be.alloc_kv(kv_dim).unwrap();
        assert!(be.attention(&qb, &small, &vc, &mut out, &p).is_err());
    }
}

#[test]
fn ggml_expf_is_accurate_and_saturates() {
    use zeta_tensor::cpu::ops_exports::ggml_v_expf;
    let mut x = -87.0f32;
    while x < 88.0 {
        let want = f64::from(x).exp();
        let got = f64::from(ggml_v_expf(x));
        assert!(((got - want) / want).abs() < 3e-7, "x={x}: {got} vs {want}");
        x += 0.173;
    }
    assert_eq!(ggml_v_expf(-1000.0), 0.0);
    assert_eq!(ggml_v_expf(1000.0), f32::INFINITY);
    assert_eq!(ggml_v_expf(f32::NEG_INFINITY), 0.0);
}
