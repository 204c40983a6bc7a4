//! Per-op tests on the default adapter (lavapipe in CI) against CPU references:
//! `zeta_quant::dequantize` for the weight formats and naive f64 loops for the
//! rest, on random inputs of awkward sizes (like ggml's test-backend-ops).
//! Outputs are poisoned with NaN first, so an unwritten element fails.
//! Limits: NMSE <= 1e-7 for elementwise/norm ops, <= 5e-4 for matvec and
//! attention. Without an adapter the tests print `SKIP` and pass, unless
//! `ZETA_REQUIRE_GPU=1`.
#![allow(clippy::unwrap_used)]

use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use zeta_quant::{GgmlType, dequantize, quantize};
use zeta_wgpu::{
    AttnParams, GluOp, GpuContext, GpuDType, GpuTensor, Q8Mode, RopeMode, RopeParams, WgpuError,
};

fn ctx() -> Option<GpuContext> {
    match GpuContext::new() {
        Ok(c) => Some(c),
        Err(WgpuError::NoAdapter { .. }) => {
            if std::env::var("ZETA_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("ZETA_REQUIRE_GPU=1 but no GPU adapter was found");
            }
            println!("SKIP: no GPU adapter (install mesa-vulkan-drivers for lavapipe)");
            None
        }
        Err(e) => panic!("GPU setup failed: {e}"),
    }
}

fn rand_vec(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| rng.gen_range(-1.0f32..1.0) * scale)
        .collect()
}

/// Normalised mean squared error; panics on NaN/inf in `got`.
fn nmse(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let mut num = 0.0;
    let mut den = 0.0;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(g.is_finite(), "element {i} is {g} (want {w})");
        num += (g as f64 - w).powi(2);
        den += w * w;
    }
    if den == 0.0 { num } else { num / den }
}

fn poison(ctx: &GpuContext, n: usize) -> zeta_wgpu::GpuTensor {
    ctx.upload_f32(&vec![f32::NAN; n]).unwrap()
}

/// Raw bytes of `w` ([rows, cols] f32) in type `ty`.
fn encode(ty: GgmlType, w: &[f32]) -> Vec<u8> {
    match ty {
        GgmlType::F32 => bytemuck::cast_slice(w).to_vec(),
        GgmlType::F16 => w
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_bits().to_le_bytes())
            .collect(),
        GgmlType::BF16 => w
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_bits().to_le_bytes())
            .collect(),
        _ => {
            let mut out = vec![0u8; ty.row_bytes(w.len() as u64).unwrap() as usize];
            quantize(ty, w, &mut out).unwrap();
            out
        }
    }
}

fn decode(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    match ty {
        GgmlType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        _ => dequantize(ty, bytes, &mut out).unwrap(),
    }
    out
}

/// y = W x in f64 for a dequantised W `[n_rows, x.len()]`.
fn ref_matvec(wd: &[f32], x: &[f32], n_rows: usize) -> Vec<f64> {
    let n_cols = x.len();
    (0..n_rows)
        .map(|r| {
            (0..n_cols)
                .map(|c| wd[r * n_cols + c] as f64 * x[c] as f64)
                .sum()
        })
        .collect()
}

fn matvec_case(
    ctx: &GpuContext,
    ty: GgmlType,
    n_rows: usize,
    n_cols: usize,
    split: Option<u64>,
    seed: u64,
) -> f64 {
    let mut rng = StdRng::seed_from_u64(seed);
    let w = rand_vec(&mut rng, n_rows * n_cols, 1.0);
    let x = rand_vec(&mut rng, n_cols, 1.0);
    let bytes = encode(ty, &w);
    let wd = decode(ty, &bytes, n_rows * n_cols);
    let want = ref_matvec(&wd, &x, n_rows);
    let m = match split {
        Some(s) => ctx
            .upload_matrix_split(ty, n_rows as u64, n_cols as u64, &bytes, s)
            .unwrap(),
        None => ctx
            .upload_matrix(ty, n_rows as u64, n_cols as u64, &bytes)
            .unwrap(),
    };
    let xg = ctx.upload_f32(&x).unwrap();
    let y = poison(ctx, n_rows);
    let mut b = ctx.batch();
    b.matvec(&m, &xg, &y).unwrap();
    b.submit().unwrap();
    let got = ctx.read_f32(&y).unwrap();
    nmse(&got, &want)
}

#[test]
fn matvec_all_types() {
    let Some(ctx) = ctx() else { return };
    println!("adapter: {}", ctx.info().name);
    let cases: &[(GgmlType, usize)] = &[
        (GgmlType::F32, 101),
        (GgmlType::F16, 101),
        (GgmlType::BF16, 77),
        (GgmlType::Q4_0, 224),
        (GgmlType::Q4_1, 224),
        (GgmlType::Q5_0, 224),
        (GgmlType::Q5_1, 224),
        (GgmlType::Q8_0, 224),
        (GgmlType::Q4_K, 768),
        (GgmlType::Q5_K, 768),
        (GgmlType::Q6_K, 768),
        (GgmlType::Q2_K, 768),
        (GgmlType::Q3_K, 768),
        (GgmlType::IQ4_NL, 224),
        (GgmlType::IQ4_XS, 768),
    ];
    for (i, &(ty, n_cols)) in cases.iter().enumerate() {
        let e = matvec_case(&ctx, ty, 37, n_cols, None, 100 + i as u64);
        println!("matvec {:<5} [37, {n_cols}] NMSE {e:.3e}", ty.name());
        assert!(e <= 5e-4, "{} NMSE {e}", ty.name());
        // The kernel computes exactly the dequantised product: far below the bound.
        assert!(
            e <= 1e-9,
            "{} NMSE {e} (dequantisation mismatch?)",
            ty.name()
        );
    }
}

/// Against ggml's CPU path (`zeta_quant::vec_dot`, activations quantised to
/// `vec_dot_type`): the GPU keeps x in f32, so they differ by the activation
/// quantisation error only; test-backend-ops' matmul bound is 5e-4.
#[test]
fn matvec_vs_ggml_cpu_vec_dot() {
    let Some(ctx) = ctx() else { return };
    let cases = [
        (GgmlType::Q4_0, 224usize),
        (GgmlType::Q4_1, 224),
        (GgmlType::Q5_0, 224),
        (GgmlType::Q5_1, 224),
        (GgmlType::Q8_0, 224),
        (GgmlType::Q4_K, 768),
        (GgmlType::Q5_K, 768),
        (GgmlType::Q6_K, 768),
        (GgmlType::Q2_K, 768),
        (GgmlType::Q3_K, 768),
        (GgmlType::IQ4_NL, 224),
        (GgmlType::IQ4_XS, 768),
    ];
    let n_rows = 29;
    for (i, (ty, n_cols)) in cases.into_iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(300 + i as u64);
        let w = rand_vec(&mut rng, n_rows * n_cols, 1.0);
        let x = rand_vec(&mut rng, n_cols, 1.0);
        let bytes = encode(ty, &w);
        let vt = zeta_quant::vec_dot_type(ty);
        let mut xq = vec![0u8; vt.row_bytes(n_cols as u64).unwrap() as usize];
        quantize(vt, &x, &mut xq).unwrap();
        let rb = ty.row_bytes(n_cols as u64).unwrap() as usize;
        let want: Vec<f64> = (0..n_rows)
            .map(|r| {
                zeta_quant::vec_dot(ty, &bytes[r * rb..(r + 1) * rb], &xq, n_cols).unwrap() as f64
            })
            .collect();
        let m = ctx
            .upload_matrix(ty, n_rows as u64, n_cols as u64, &bytes)
            .unwrap();
        let xg = ctx.upload_f32(&x).unwrap();
        let y = poison(&ctx, n_rows);
        let mut b = ctx.batch();
        b.matvec(&m, &xg, &y).unwrap();
        b.submit().unwrap();
        let e = nmse(&ctx.read_f32(&y).unwrap(), &want);
        println!(
            "matvec {:<5} vs vec_dot ({}) NMSE {e:.3e}",
            ty.name(),
            vt.name()
        );
        assert!(e <= 5e-4, "{} vs vec_dot: NMSE {e}", ty.name());
    }
}

/// GELU (tanh approximation) as ggml's CPU computes it: inputs in (-10, 10)
/// rounded to f16, the result rounded to f16 (its lookup table).
fn gelu_ggml(x: f64) -> f64 {
    if x <= -10.0 {
        return 0.0;
    }
    if x >= 10.0 {
        return x;
    }
    let h = f16::from_f64(x).to_f64();
    let g =
        0.5 * h * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (h + 0.044715 * h * h * h)).tanh());
    f16::from_f64(g).to_f64()
}

/// x quantised as the CPU backend does for weights of `ty` (its
/// `vec_dot_type`, with the x86 rounding of Q8_0/Q8_1).
fn cpu_act(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let vt = zeta_quant::vec_dot_type(ty);
    let mut out = vec![0u8; vt.row_bytes(x.len() as u64).unwrap() as usize];
    zeta_tensor::cpu::matmul::quantize_act(vt, x, &mut out).unwrap();
    out
}

/// ggml's `vec_dot` of every row of `bytes` (`[n_rows, n_cols]` of `ty`)
/// with every token of x `[n_tok, n_cols]` quantised as the CPU does:
/// `[n_tok, n_rows]`.
fn ggml_products(ty: GgmlType, bytes: &[u8], x: &[f32], n_rows: usize, n_cols: usize) -> Vec<f64> {
    let rb = ty.row_bytes(n_cols as u64).unwrap() as usize;
    x.chunks(n_cols)
        .flat_map(|xt| {
            let xv = cpu_act(ty, xt);
            (0..n_rows)
                .map(|r| {
                    zeta_quant::vec_dot(ty, &bytes[r * rb..(r + 1) * rb], &xv, n_cols).unwrap()
                        as f64
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Activations that exercise the rounding: random magnitudes per block,
/// values on rounding ties of the Q8_0 grid, a zero block, and the largest
/// |x| occurring with both signs (Q8_K takes the first one's sign).
fn awkward_acts(rng: &mut StdRng, n: usize) -> Vec<f32> {
    let mut x = rand_vec(rng, n, 1.0);
    for (b, blk) in x.chunks_mut(32).enumerate() {
        let scale = [1.0f32, 1e-3, 37.0, 0.25][b % 4];
        for v in blk.iter_mut() {
            *v *= scale;
        }
        match b % 7 {
            0 => blk.fill(0.0),
            1 => {
                // amax = 127 · 0.5: x = k + 0.5 halves are ties of x·127/amax.
                blk[0] = 63.5;
                for (i, v) in blk.iter_mut().enumerate().skip(1) {
                    *v = (i as f32 - 16.0) + 0.5;
                }
            }
            2 => {
                blk[3] = -2.0 * scale;
                blk[9] = 2.0 * scale;
            }
            _ => {}
        }
    }
    x
}

/// An integer product `y` (and `ya` = y0 + the product) against ggml's
/// `vec_dot` results: the same integer sums and per-block scale products as
/// the CPU's, so only f32 summation order differs (a single activation
/// quantised differently costs ~1e-8, a wrong nibble or scale > 1e-4).
fn check_vs_ggml(
    c: &GpuContext,
    y: &GpuTensor,
    ya: &GpuTensor,
    ggml: &[f64],
    y0: &[f32],
    what: &str,
) {
    let eg = nmse(&c.read_f32(y).unwrap(), ggml);
    let want_acc: Vec<f64> = ggml.iter().zip(y0).map(|(a, b)| a + *b as f64).collect();
    let ea = nmse(&c.read_f32(ya).unwrap(), &want_acc);
    println!("{what}: NMSE vs vec_dot {eg:.2e}, accumulate {ea:.2e}");
    assert!(eg <= 1e-10, "{what}: NMSE {eg}");
    assert!(ea <= 1e-10, "{what} accumulate: NMSE {ea}");
}

/// `pack_q8` in each mode gives exactly the CPU backend's activation bytes
/// (quants, scale, and the sum term), for several rows at once; the fused
/// producers (RMSNorm, GLU) give exactly `pack_q8` of their own output.
#[test]
fn pack_q8_matches_cpu_activations_bit_for_bit() {
    let Some(ctx) = ctx() else { return };
    let mut rng = StdRng::seed_from_u64(77);
    for (ty, mode) in [
        (GgmlType::Q4_0, Q8Mode::Q8_0),
        (GgmlType::Q4_1, Q8Mode::Q8_1),
        (GgmlType::Q4_K, Q8Mode::Q8K),
    ] {
        assert_eq!(Q8Mode::of(ty), mode);
        for (n, rows, awkward) in [
            (256usize, 1usize, true),
            (1536, 3, true),
            (4096, 2, true),
            (8192, 8, false),
        ] {
            let x = if awkward {
                awkward_acts(&mut rng, n * rows)
            } else {
                rand_vec(&mut rng, n * rows, 1.0)
            };
            let stride = zeta_wgpu::q8_stride(n);
            let xg = ctx.upload_f32(&x).unwrap();
            let xq = ctx.upload_u32(&vec![u32::MAX; stride * rows]).unwrap();
            let mut b = ctx.batch();
            b.pack_q8_rows(&xg, &xq, n, rows, mode).unwrap();
            b.submit().unwrap();
            let got = ctx.read_u32(&xq).unwrap();
            let nb = n / 32;
            for (r, xr) in x.chunks(n).enumerate() {
                let g = &got[r * stride..r * stride + zeta_wgpu::q8_words(n)];
                let cpu = cpu_act(ty, xr);
                for blk in 0..nb {
                    let quants: Vec<u8> = g[8 * blk..8 * blk + 8]
                        .iter()
                        .flat_map(|w| w.to_le_bytes())
                        .collect();
                    let (d, sw) = (f32::from_bits(g[8 * nb + 2 * blk]), g[8 * nb + 2 * blk + 1]);
                    let what = format!("{mode:?} n {n} row {r} block {blk}");
                    let (cq, cd, cs): (&[u8], f32, u32) = match mode {
                        Q8Mode::Q8_0 => {
                            let c = &cpu[34 * blk..34 * blk + 34];
                            let isum: i32 = c[2..].iter().map(|&q| q as i8 as i32).sum();
                            (
                                &c[2..],
                                f16::from_le_bytes([c[0], c[1]]).to_f32(),
                                isum as u32,
                            )
                        }
                        Q8Mode::Q8_1 => {
                            let c = &cpu[36 * blk..36 * blk + 36];
                            let s = f16::from_le_bytes([c[2], c[3]]).to_f32();
                            (
                                &c[4..],
                                f16::from_le_bytes([c[0], c[1]]).to_f32(),
                                s.to_bits(),
                            )
                        }
                        Q8Mode::Q8K => {
                            let c = &cpu[292 * (blk / 8)..292 * (blk / 8 + 1)];
                            let o = 4 + 32 * (blk % 8);
                            let bs = |j: usize| {
                                i16::from_le_bytes([c[260 + 2 * j], c[261 + 2 * j]]) as i32
                            };
                            let isum = bs(2 * (blk % 8)) + bs(2 * (blk % 8) + 1);
                            let d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                            (&c[o..o + 32], d, isum as u32)
                        }
                    };
                    assert_eq!(quants, cq, "{what}: quants");
                    assert_eq!(d.to_bits(), cd.to_bits(), "{what}: d {d} vs {cd}");
                    assert_eq!(sw, cs, "{what}: s");
                }
            }
            {
                // RMSNorm and GLU fused with the pack (on the first row):
                // their f32 output packed separately gives the same words.
                let w = rand_vec(&mut rng, n, 1.0);
                let (wg, y) = (ctx.upload_f32(&w).unwrap(), poison(&ctx, n));
                let up = ctx.upload_f32(&rand_vec(&mut rng, n, 2.0)).unwrap();
                let gate = ctx.upload_f32(&x).unwrap();
                let words = zeta_wgpu::q8_words(n);
                let bufs: Vec<_> = (0..4)
                    .map(|_| ctx.upload_u32(&vec![u32::MAX; words]).unwrap())
                    .collect();
                let mut b = ctx.batch();
                b.rms_norm_pack_q8(&xg, &wg, &y, &bufs[0], n as u32, 1e-6, mode)
                    .unwrap();
                b.pack_q8(&y, &bufs[1], n, mode).unwrap();
                b.glu_inplace_pack_q8(&gate, &up, &bufs[2], n, GluOp::SwiGlu, mode)
                    .unwrap();
                b.pack_q8(&gate, &bufs[3], n, mode).unwrap();
                b.submit().unwrap();
                let w: Vec<Vec<u32>> = bufs.iter().map(|t| ctx.read_u32(t).unwrap()).collect();
                assert_eq!(w[0], w[1], "{mode:?}: fused RMSNorm pack");
                assert_eq!(w[2], w[3], "{mode:?}: fused GLU pack");
            }
        }
    }
}

/// The integer matvec (x quantised to 8 bits by `pack_q8` as the CPU does,
/// packed 4x8-bit dot products) for every type that has it, at row lengths
/// that pick each invocations-per-row variant (8, 16, 32, 64), with subgroup
/// and shared-memory reductions, split weights and `accumulate`: against
/// ggml's CPU `vec_dot` on the CPU's activations (the same per-block values;
/// only the order of the f32 sums differs).
#[test]
fn matvec_q8_all_types_and_shapes() {
    let Some(def) = ctx() else { return };
    let plain = GpuContext::with_options(&zeta_wgpu::GpuOptions {
        adapter: Some(def.info().name.clone()),
        no_optional_features: true,
        ..Default::default()
    })
    .unwrap();
    let types = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ];
    for ty in zeta_wgpu::GPU_TYPES {
        assert_eq!(
            zeta_wgpu::has_q8_matvec(ty),
            types.contains(&ty),
            "{}",
            ty.name()
        );
    }
    let mut seed = 900;
    for ty in types {
        let k = ty.block_size();
        // ~4 units per invocation: 8, 16, 32 and 64 invocations per row.
        let shapes = if k == 256 {
            [(37usize, 768usize), (29, 2304), (19, 4352), (9, 8448)]
        } else {
            [(37, 224), (29, 2080), (19, 4128), (9, 8224)]
        };
        for (si, (n_rows, n_cols)) in shapes.into_iter().enumerate() {
            seed += 1;
            let mut rng = StdRng::seed_from_u64(seed);
            let w = rand_vec(&mut rng, n_rows * n_cols, 1.0);
            let x = rand_vec(&mut rng, n_cols, 1.0);
            let y0 = rand_vec(&mut rng, n_rows, 1.0);
            let bytes = encode(ty, &w);
            let ggml = ggml_products(ty, &bytes, &x, n_rows, n_cols);
            let rb = ty.row_bytes(n_cols as u64).unwrap() as usize;
            for (name, c) in [("default", &def), ("plain", &plain)] {
                // Every other shape in parts of 5 rows (plus 3 bytes).
                let m = if si % 2 == 1 {
                    c.upload_matrix_split(
                        ty,
                        n_rows as u64,
                        n_cols as u64,
                        &bytes,
                        5 * rb as u64 + 3,
                    )
                    .unwrap()
                } else {
                    c.upload_matrix(ty, n_rows as u64, n_cols as u64, &bytes)
                        .unwrap()
                };
                let xg = c.upload_f32(&x).unwrap();
                let xq = c
                    .upload_u32(&vec![u32::MAX; zeta_wgpu::q8_words(n_cols)])
                    .unwrap();
                let y = poison(c, n_rows);
                let ya = c.upload_f32(&y0).unwrap();
                let mut b = c.batch();
                b.pack_q8(&xg, &xq, n_cols, Q8Mode::of(ty)).unwrap();
                b.matvec_q8(&m, &xq, &y, false).unwrap();
                b.matvec_q8(&m, &xq, &ya, true).unwrap();
                b.submit().unwrap();
                let what = format!("matvec_q8 {name} {} [{n_rows}, {n_cols}]", ty.name());
                check_vs_ggml(c, &y, &ya, &ggml, &y0, &what);
            }
        }
    }
}

/// A weight group (one buffer, weights at aligned offsets): the grouped
/// integer matvec gives each member's product as ggml's `vec_dot` does, and
/// every other kernel reading a member (f32 matvec, both matmuls, the
/// integer matmul, embedding rows) gives what it gives for the same weight
/// uploaded alone.
#[test]
fn weight_group_kernels() {
    let Some(c) = ctx() else { return };
    let mut seed = 3100;
    for (ty, n_cols, rows) in [
        (GgmlType::Q4_1, 576usize, &[37usize, 13, 13][..]),
        (GgmlType::Q5_0, 640, &[29, 7][..]),
        (GgmlType::Q4_K, 2048, &[19, 5, 3][..]),
        (GgmlType::Q6_K, 4352, &[9, 9][..]),
    ] {
        seed += 1;
        let mut rng = StdRng::seed_from_u64(seed);
        let bytes: Vec<Vec<u8>> = rows
            .iter()
            .map(|&r| encode(ty, &rand_vec(&mut rng, r * n_cols, 1.0)))
            .collect();
        let group: Vec<(GgmlType, u64, u64, &[u8])> = rows
            .iter()
            .zip(&bytes)
            .map(|(&r, b)| (ty, r as u64, n_cols as u64, b.as_slice()))
            .collect();
        let ms = c.upload_group(&group).unwrap();
        let x = rand_vec(&mut rng, n_cols, 1.0);
        let xg = c.upload_f32(&x).unwrap();
        let xq = c
            .upload_u32(&vec![u32::MAX; zeta_wgpu::q8_words(n_cols)])
            .unwrap();
        let ys: Vec<_> = rows.iter().map(|&r| poison(&c, r)).collect();
        let dummy = poison(&c, 4);
        let mut b = c.batch();
        let refs: Vec<&zeta_wgpu::QuantMatrix> = ms.iter().collect();
        assert_eq!(b.can_matvec_q8_multi(&refs), c.use_subgroups());
        b.pack_q8(&xg, &xq, n_cols, Q8Mode::of(ty)).unwrap();
        if c.use_subgroups() {
            let yr: Vec<&GpuTensor> = ys.iter().collect();
            b.matvec_q8_multi(&refs, &xq, &yr, &dummy).unwrap();
        } else {
            for (m, y) in ms.iter().zip(&ys) {
                b.matvec_q8(m, &xq, y, false).unwrap();
            }
        }
        b.submit().unwrap();
        for (i, ((m, y), wb)) in ms.iter().zip(&ys).zip(&bytes).enumerate() {
            let want = ggml_products(ty, wb, &x, rows[i], n_cols);
            let e = nmse(&c.read_f32(y).unwrap(), &want);
            println!(
                "group {} member {i} [{}, {n_cols}] NMSE {e:.2e}",
                ty.name(),
                rows[i]
            );
            assert!(e <= 1e-10, "{} member {i}: NMSE {e}", ty.name());
            // Every kernel on the member equals the same kernel on the
            // weight uploaded alone (3 and 50 tokens: the small and the
            // large matmul).
            let alone = c
                .upload_matrix(ty, rows[i] as u64, n_cols as u64, wb)
                .unwrap();
            assert_eq!(m.size_bytes(), alone.size_bytes());
            for n_tok in [1usize, 3, 50] {
                let xs = rand_vec(&mut rng, n_tok * n_cols, 1.0);
                let xsg = c.upload_f32(&xs).unwrap();
                let xq = c
                    .upload_u32(&vec![0; zeta_wgpu::q8_stride(n_cols) * n_tok])
                    .unwrap();
                let outs: Vec<Vec<f32>> = [m, &alone]
                    .iter()
                    .map(|w| {
                        let (y1, y2) = (poison(&c, n_tok * rows[i]), poison(&c, n_tok * rows[i]));
                        let mut b = c.batch();
                        if n_tok == 1 {
                            b.matvec(w, &xsg, &y1).unwrap();
                        } else {
                            b.matmul(w, &xsg, &y1, n_tok as u32).unwrap();
                        }
                        b.pack_q8_rows(&xsg, &xq, n_cols, n_tok, Q8Mode::of(ty))
                            .unwrap();
                        b.matmul_q8(w, &xq, &y2, n_tok as u32, false).unwrap();
                        b.submit().unwrap();
                        let mut v = c.read_f32(&y1).unwrap();
                        v.extend(c.read_f32(&y2).unwrap());
                        v
                    })
                    .collect();
                assert_eq!(outs[0], outs[1], "{} member {i}, {n_tok} tokens", ty.name());
            }
            let ids = c.upload_u32(&[0, rows[i] as u32 - 1, 1]).unwrap();
            let rows_of = |w: &zeta_wgpu::QuantMatrix| {
                let out = poison(&c, 3 * n_cols);
                let mut b = c.batch();
                b.embed(w, &ids, &out).unwrap();
                b.submit().unwrap();
                c.read_f32(&out).unwrap()
            };
            assert_eq!(
                rows_of(m),
                rows_of(&alone),
                "{} member {i}: embed",
                ty.name()
            );
        }
    }
}

/// The integer matmul of several tokens (matmul_q8.wgsl) for every type and
/// invocations-per-row variant, token counts around its 8-token groups,
/// split weights and `accumulate`: against ggml's `vec_dot` per token.
#[test]
fn matmul_q8_all_types_and_token_counts() {
    let Some(c) = ctx() else { return };
    let mut seed = 1900;
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ] {
        let k = ty.block_size();
        let shapes = if k == 256 {
            [
                (37usize, 768usize, 1usize),
                (29, 2304, 9),
                (19, 4352, 16),
                (9, 8448, 3),
            ]
        } else {
            [(37, 224, 13), (29, 2080, 2), (19, 4128, 8), (9, 8224, 17)]
        };
        for (si, (n_rows, n_cols, n_tok)) in shapes.into_iter().enumerate() {
            seed += 1;
            let mut rng = StdRng::seed_from_u64(seed);
            let w = rand_vec(&mut rng, n_rows * n_cols, 1.0);
            let x = awkward_acts(&mut rng, n_tok * n_cols);
            let y0 = rand_vec(&mut rng, n_tok * n_rows, 1.0);
            let bytes = encode(ty, &w);
            let ggml = ggml_products(ty, &bytes, &x, n_rows, n_cols);
            let rb = ty.row_bytes(n_cols as u64).unwrap();
            let m = if si % 2 == 1 {
                c.upload_matrix_split(ty, n_rows as u64, n_cols as u64, &bytes, 5 * rb + 3)
                    .unwrap()
            } else {
                c.upload_matrix(ty, n_rows as u64, n_cols as u64, &bytes)
                    .unwrap()
            };
            let xg = c.upload_f32(&x).unwrap();
            let xq = c
                .upload_u32(&vec![u32::MAX; zeta_wgpu::q8_stride(n_cols) * n_tok])
                .unwrap();
            let y = poison(&c, n_tok * n_rows);
            let ya = c.upload_f32(&y0).unwrap();
            let mut b = c.batch();
            b.pack_q8_rows(&xg, &xq, n_cols, n_tok, Q8Mode::of(ty))
                .unwrap();
            b.matmul_q8(&m, &xq, &y, n_tok as u32, false).unwrap();
            b.matmul_q8(&m, &xq, &ya, n_tok as u32, true).unwrap();
            b.submit().unwrap();
            let what = format!("matmul_q8 {} [{n_rows}, {n_cols}] x {n_tok}", ty.name());
            check_vs_ggml(&c, &y, &ya, &ggml, &y0, &what);
        }
    }
}

#[test]
fn matvec_shared_memory_reduction_path() {
    // A device without optional features uses matvec_reduce_wg; the default
    // device on lavapipe (SUBGROUP present) uses matvec_reduce_sg.
    let Some(def) = ctx() else { return };
    println!("default context uses subgroups: {}", def.use_subgroups());
    let plain = GpuContext::with_options(&zeta_wgpu::GpuOptions {
        adapter: Some(def.info().name.clone()),
        no_optional_features: true,
        ..Default::default()
    })
    .unwrap();
    assert!(!plain.use_subgroups());
    for (i, (ty, n_cols)) in [
        (GgmlType::Q4_K, 512usize),
        (GgmlType::Q5_1, 96),
        (GgmlType::F16, 33),
    ]
    .into_iter()
    .enumerate()
    {
        for (name, c) in [("default", &def), ("plain", &plain)] {
            let e = matvec_case(c, ty, 70_001 % 97, n_cols, None, 40 + i as u64);
            println!("matvec {name} {:<5} NMSE {e:.3e}", ty.name());
            assert!(e <= 1e-9, "{name} {} NMSE {e}", ty.name());
        }
    }
}

#[test]
fn matmul_prefill() {
    let Some(ctx) = ctx() else { return };
    let mut rng = StdRng::seed_from_u64(11);
    for (ty, n_rows, n_cols, n_tok, split) in [
        (GgmlType::Q4_0, 19usize, 96usize, 13usize, None),
        (GgmlType::Q6_K, 21, 512, 8, Some(4u64)),
        (GgmlType::F16, 5, 45, 1, None),
        (GgmlType::Q8_0, 33, 64, 17, Some(10)),
        (GgmlType::Q4_K, 130, 256, 37, None),
        (GgmlType::F32, 70, 45, 20, Some(64)),
        // >= 48 tokens: the 64 x 64 register-blocked kernel (partial tiles,
        // a split weight, a row tail).
        (GgmlType::Q4_0, 133, 160, 70, Some(50)),
        (GgmlType::Q6_K, 67, 256, 129, None),
        (GgmlType::F16, 64, 45, 64, None),
    ] {
        let w = rand_vec(&mut rng, n_rows * n_cols, 1.0);
        let x = rand_vec(&mut rng, n_tok * n_cols, 1.0);
        // Exact up to f32 summation, except the cooperative-matrix kernel
        // (tensor cores, where the device has them): x and W rounded to f16.
        let coop = ctx.use_coop() && n_tok >= zeta_wgpu::REG_MATMUL_MIN_TOKENS as usize;
        let bound = |tiled: bool| if tiled && coop { 1e-5 } else { 1e-9 };
        let bytes = encode(ty, &w);
        let wd = decode(ty, &bytes, n_rows * n_cols);
        let mut want = vec![0f64; n_tok * n_rows];
        for t in 0..n_tok {
            for r in 0..n_rows {
                want[t * n_rows + r] = (0..n_cols)
                    .map(|c| wd[r * n_cols + c] as f64 * x[t * n_cols + c] as f64)
                    .sum();
            }
        }
        let row_bytes = ty.row_bytes(n_cols as u64).unwrap();
        let m = match split {
            Some(r) => ctx
                .upload_matrix_split(ty, n_rows as u64, n_cols as u64, &bytes, r * row_bytes)
                .unwrap(),
            None => ctx
                .upload_matrix(ty, n_rows as u64, n_cols as u64, &bytes)
                .unwrap(),
        };
        let xg = ctx.upload_f32(&x).unwrap();
        let y = poison(&ctx, n_tok * n_rows);
        for tiled in [false, true] {
            let y = poison(&ctx, n_tok * n_rows);
            let mut b = ctx.batch();
            b.matmul_with(&m, &xg, &y, n_tok as u32, tiled).unwrap();
            b.submit().unwrap();
            let e = nmse(&ctx.read_f32(&y).unwrap(), &want);
            println!(
                "matmul tiled={tiled} {:<5} [{n_tok}x{n_cols}]·[{n_rows}x{n_cols}]^T NMSE {e:.3e}",
                ty.name()
            );
            assert!(e <= bound(tiled), "{} tiled={tiled} NMSE {e}", ty.name());
        }
        let mut b = ctx.batch();
        b.matmul(&m, &xg, &y, n_tok as u32).unwrap();
        b.submit().unwrap();
        let e = nmse(&ctx.read_f32(&y).unwrap(), &want);
        println!(
            "matmul {:<5} [{n_tok}x{n_cols}]·[{n_rows}x{n_cols}]^T parts {} NMSE {e:.3e}",
            ty.name(),
            m.parts().len()
        );
        assert!(e <= bound(true), "{} NMSE {e}", ty.name());
    }
}

#[test]
fn f16_special_values_decode_exactly() {
    let Some(ctx) = ctx() else { return };
    let vals: Vec<f16> = [
        0x0000u16, 0x8000, 0x0001, 0x83ff, 0x0400, 0x3c00, 0xc000, 0x7bff, 0xfbff, 0x7c00, 0xfc00,
        0x3555,
    ]
    .into_iter()
    .map(f16::from_bits)
    .collect();
    let n_cols = vals.len();
    let bytes: Vec<u8> = vals
        .iter()
        .flat_map(|v| v.to_bits().to_le_bytes())
        .collect();
    let m = ctx
        .upload_matrix(GgmlType::F16, 1, n_cols as u64, &bytes)
        .unwrap();
    let ids = ctx.upload_u32(&[0]).unwrap();
    let out = poison(&ctx, n_cols);
    let mut b = ctx.batch();
    b.embed(&m, &ids, &out).unwrap();
    b.submit().unwrap();
    let got = ctx.read_f32(&out).unwrap();
    for (g, v) in got.iter().zip(&vals) {
        assert_eq!(g.to_bits(), v.to_f32().to_bits(), "{v:?}: got {g}");
    }
}

#[test]
fn store_into_f16_and_f32_caches() {
    let Some(ctx) = ctx() else { return };
    let mut rng = StdRng::seed_from_u64(12);
    let mut src = rand_vec(&mut rng, 301, 70000.0);
    let specials = [
        0.0f32,
        -0.0,
        1e-8,
        -3e-8,
        6e-8,
        2.98e-8,
        65504.0,
        65519.0,
        65520.0,
        1e9,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1.0 + 1.0 / 1024.0,
        1.0 + 1.0 / 2048.0,
        1.0 + 3.0 / 4096.0,
        6.1e-5,
    ];
    src[..specials.len()].copy_from_slice(&specials);
    for v in src.iter_mut().skip(specials.len()).step_by(3) {
        *v *= 1e-6; // small and subnormal halves
    }
    let srcg = ctx.upload_f32(&src).unwrap();
    for offset in [0usize, 7, 100] {
        let len = offset + src.len() + 5;
        let init: Vec<f16> = (0..len).map(|i| f16::from_f32(i as f32)).collect();
        let dst = ctx.upload_f16(&init).unwrap();
        let dst32 = ctx.upload_f32(&vec![-1.0; len]).unwrap();
        let mut b = ctx.batch();
        b.store(&srcg, src.len(), &dst, offset).unwrap();
        b.store(&srcg, src.len(), &dst32, offset).unwrap();
        b.submit().unwrap();
        let bytes = read_f16(&ctx, &dst, len);
        for i in 0..len {
            let want = if i >= offset && i < offset + src.len() {
                f16::from_f32(src[i - offset])
            } else {
                init[i]
            };
            assert_eq!(
                bytes[i].to_bits(),
                want.to_bits(),
                "element {i} (offset {offset}): {} vs {}",
                bytes[i],
                want
            );
        }
        let got32 = ctx.read_f32(&dst32).unwrap();
        for i in 0..len {
            let want = if i >= offset && i < offset + src.len() {
                src[i - offset]
            } else {
                -1.0
            };
            assert_eq!(got32[i].to_bits(), want.to_bits());
        }
    }
    // NaN stays NaN.
    let nan = ctx.upload_f32(&[f32::NAN, 1.0]).unwrap();
    let dst = ctx.upload_f16(&[f16::ZERO; 2]).unwrap();
    let mut b = ctx.batch();
    b.store(&nan, 2, &dst, 0).unwrap();
    b.submit().unwrap();
    assert!(read_f16(&ctx, &dst, 2)[0].is_nan());
}

/// Reads an f16 tensor back from its raw bytes.
fn read_f16(ctx: &GpuContext, t: &zeta_wgpu::GpuTensor, len: usize) -> Vec<f16> {
    let raw = ctx.read_raw(t).unwrap();
    raw.chunks_exact(2)
        .take(len)
        .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])))
        .collect()
}

#[test]
fn too_large_allocation_is_out_of_memory() {
    let Some(ctx) = ctx() else { return };
    let huge = (ctx.info().max_buffer_size / 4 + 16) as usize;
    assert!(matches!(
        ctx.zeros(huge, GpuDType::F32),
        Err(WgpuError::OutOfMemory { .. })
    ));
}

#[test]
fn matvec_split_weights() {
    let Some(ctx) = ctx() else { return };
    for (ty, n_cols) in [
        (GgmlType::Q8_0, 224usize),
        (GgmlType::Q6_K, 512),
        (GgmlType::F16, 99),
    ] {
        let row_bytes = ty.row_bytes(n_cols as u64).unwrap();
        let limit = 5 * row_bytes + 3;
        let bytes = vec![0u8; (row_bytes * 37) as usize];
        let m = ctx
            .upload_matrix_split(ty, 37, n_cols as u64, &bytes, limit)
            .unwrap();
        assert_eq!(m.parts().len(), 8, "{}", ty.name());
        assert_eq!(m.parts()[7].first_row, 35);
        assert_eq!(m.parts()[7].n_rows, 2);
        let e = matvec_case(&ctx, ty, 37, n_cols, Some(limit), 7);
        println!("matvec split {:<5} 8 parts NMSE {e:.3e}", ty.name());
        assert!(e <= 1e-9, "{} split NMSE {e}", ty.name());
    }
}

#[test]
fn embedding_lookup() {
    let Some(ctx) = ctx() else { return };
    let mut rng = StdRng::seed_from_u64(3);
    let mut cases = vec![
        (GgmlType::Q8_0, 96usize, None),
        (GgmlType::Q6_K, 256, Some(3)),
        (GgmlType::Q4_K, 512, Some(4)),
        (GgmlType::Q5_0, 64, Some(2)),
        (GgmlType::F32, 45, Some(5)),
    ];
    // Every other GPU type once, unsplit.
    for ty in zeta_wgpu::GPU_TYPES {
        if !cases.iter().any(|c| c.0 == ty) {
            let n_cols = if ty.block_size() == 1 {
                37
            } else {
                2 * ty.block_size()
            };
            cases.push((ty, n_cols, None));
        }
    }
    for (ty, n_cols, split) in cases {
        let n_rows = 23usize;
        let w = rand_vec(&mut rng, n_rows * n_cols, 1.0);
        let bytes = encode(ty, &w);
        let wd = decode(ty, &bytes, n_rows * n_cols);
        let row_bytes = ty.row_bytes(n_cols as u64).unwrap();
        let m = match split {
            Some(r) => ctx
                .upload_matrix_split(ty, n_rows as u64, n_cols as u64, &bytes, r * row_bytes)
                .unwrap(),
            None => ctx
                .upload_matrix(ty, n_rows as u64, n_cols as u64, &bytes)
                .unwrap(),
        };
        let ids = [0u32, 22, 5, 5, 17, 999, 3];
        let want: Vec<f64> = ids
            .iter()
            .flat_map(|&id| {
                (0..n_cols).map(move |c| {
                    if (id as usize) < n_rows {
                        id as usize * n_cols + c
                    } else {
                        usize::MAX
                    }
                })
            })
            .map(|i| if i == usize::MAX { 0.0 } else { wd[i] as f64 })
            .collect();
        let idg = ctx.upload_u32(&ids).unwrap();
        let out = poison(&ctx, ids.len() * n_cols);
        let mut b = ctx.batch();
        b.embed(&m, &idg, &out).unwrap();
        b.submit().unwrap();
        let e = nmse(&ctx.read_f32(&out).unwrap(), &want);
        println!(
            "embed {:<5} parts {} NMSE {e:.3e}",
            ty.name(),
            m.parts().len()
        );
        assert!(e <= 1e-12, "{} NMSE {e}", ty.name());
    }
}

/// Row lengths: scalar (333), vec4 (1028, 4100: loop tail and unrolled body)
/// and the fused norm + 8-bit pack (one row of 2080 and 4096).
#[test]
fn rms_norm() {
    let Some(ctx) = ctx() else { return };
    let mut rng = StdRng::seed_from_u64(4);
    let eps = 1e-6f32;
    for (rows, cols) in [
        (5usize, 333usize),
        (3, 1028),
        (2, 4100),
        (1, 2080),
        (1, 4096),
    ] {
        let x = rand_vec(&mut rng, rows * cols, 3.0);
        let w = rand_vec(&mut rng, cols, 1.0);
        let mut want = Vec::new();
        for r in 0..rows {
            let row = &x[r * cols..(r + 1) * cols];
            let ms: f64 = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / cols as f64;
            let s = 1.0 / (ms + eps as f64).sqrt();
            want.extend(row.iter().zip(&w).map(|(&v, &g)| v as f64 * s * g as f64));
        }
        let (xg, wg, y) = (
            ctx.upload_f32(&x).unwrap(),
            ctx.upload_f32(&w).unwrap(),
            poison(&ctx, rows * cols),
        );
        let mut b = ctx.batch();
        b.rms_norm(&xg, &wg, &y, rows as u32, cols as u32, eps)
            .unwrap();
        b.submit().unwrap();
        let got = ctx.read_f32(&y).unwrap();
        let e = nmse(&got, &want);
        println!("rms_norm [{rows}, {cols}] NMSE {e:.3e}");
        assert!(e <= 1e-7);
        if rows == 1 && cols % 32 == 0 {
            // Fused: the same y, and the same quants as pack_q8 of that y.
            let y2 = poison(&ctx, cols);
            let n_words = zeta_wgpu::q8_words(cols);
            let (xq, xq_ref) = (
                ctx.upload_u32(&vec![u32::MAX; n_words]).unwrap(),
                ctx.upload_u32(&vec![u32::MAX; n_words]).unwrap(),
            );
            let mut b = ctx.batch();
            b.rms_norm_pack_q8(&xg, &wg, &y2, &xq, cols as u32, eps, Q8Mode::Q8_0)
                .unwrap();
            b.pack_q8(&y2, &xq_ref, cols, Q8Mode::Q8_0).unwrap();
            b.submit().unwrap();
            let e = nmse(&ctx.read_f32(&y2).unwrap(), &want);
            println!("rms_norm_pack_q8 [{cols}] NMSE {e:.3e}");
            assert!(e <= 1e-7);
            assert_eq!(ctx.read_u32(&xq).unwrap(), ctx.read_u32(&xq_ref).unwrap());
        }
    }
}

/// The post-norm + residual add + next norm + pack in one dispatch equals
/// `rms_norm_inplace_add` then `rms_norm_pack_q8` bit for bit (projection,
/// residual, normalised x, packed words), in the Q8_0 and Q8_K modes.
#[test]
fn post_add_norm_pack_equals_separate_ops() {
    let Some(ctx) = ctx() else { return };
    let mut rng = StdRng::seed_from_u64(57);
    for (cols, mode) in [
        (640usize, Q8Mode::Q8_0),
        (2048, Q8Mode::Q8K),
        (576, Q8Mode::Q8_1),
    ] {
        let src = rand_vec(&mut rng, cols, 3.0);
        let x = rand_vec(&mut rng, cols, 2.0);
        let pw = ctx.upload_f32(&rand_vec(&mut rng, cols, 1.0)).unwrap();
        let w = ctx.upload_f32(&rand_vec(&mut rng, cols, 1.0)).unwrap();
        let mut out = Vec::new();
        for fused in [false, true] {
            let (sg, xg, y) = (
                ctx.upload_f32(&src).unwrap(),
                ctx.upload_f32(&x).unwrap(),
                poison(&ctx, cols),
            );
            let xq = ctx
                .upload_u32(&vec![u32::MAX; zeta_wgpu::q8_words(cols)])
                .unwrap();
            let mut b = ctx.batch();
            if fused {
                b.post_add_rms_norm_pack_q8(&sg, &pw, &xg, &w, &y, &xq, cols as u32, 1e-6, mode)
                    .unwrap();
            } else {
                b.rms_norm_inplace_add(&sg, &pw, &xg, 1, cols as u32, 1e-6)
                    .unwrap();
                b.rms_norm_pack_q8(&xg, &w, &y, &xq, cols as u32, 1e-6, mode)
                    .unwrap();
            }
            b.submit().unwrap();
            out.push((
                ctx.read_f32(&sg).unwrap(),
                ctx.read_f32(&xg).unwrap(),
                ctx.read_f32(&y).unwrap(),
                ctx.read_u32(&xq).unwrap(),
            ));
        }
        assert_eq!(out[0], out[1], "{cols} {mode:?}");
    }
}

/// The fused RoPE + KV-cache write equals the separate ops bit for bit (q,
/// both caches; f16 and f32 caches, both element orders, partial rotation,
/// frequency factors, q scaling, several tokens at pos0 > 0, value heads of
/// another size), with and without the per-head q/k RMSNorms first.
#[test]
fn rope_store_kv_equals_separate_ops() {
    let Some(ctx) = ctx() else { return };
    let mut rng = StdRng::seed_from_u64(21);
    for (dtype, mode, hd, n_rot, hdv, ff, qs) in [
        (
            GpuDType::F16,
            RopeMode::Neox,
            64u32,
            64u32,
            64u32,
            false,
            1.0f32,
        ),
        (GpuDType::F16, RopeMode::Normal, 64, 48, 32, true, 1.0),
        (GpuDType::F32, RopeMode::Normal, 32, 32, 32, false, 0.125),
        (GpuDType::F32, RopeMode::Neox, 80, 40, 96, true, 0.0625),
        (GpuDType::F16, RopeMode::Neox, 256, 256, 256, false, 0.0625),
    ] {
        for norms in [false, true] {
            let (n_head, n_kv, n_tok, pos0, n_ctx) = (6u32, 2u32, 3u32, 5u32, 11usize);
            let p = RopeParams {
                head_dim: hd,
                n_heads: n_head,
                n_tokens: n_tok,
                n_rot,
                mode,
                freq_base: 10000.0,
                freq_scale: 0.5,
            };
            let kp = RopeParams { n_heads: n_kv, ..p };
            let q = rand_vec(&mut rng, (n_tok * n_head * hd) as usize, 2.0);
            let k = rand_vec(&mut rng, (n_tok * n_kv * hd) as usize, 2.0);
            let v = rand_vec(&mut rng, (n_tok * n_kv * hdv) as usize, 2.0);
            let f: Vec<f32> = (0..n_rot / 2).map(|i| 1.0 + i as f32 * 0.25).collect();
            let ffg = ctx.upload_f32(&f).unwrap();
            let ffo = if ff { Some(&ffg) } else { None };
            let (kd, vd) = (n_ctx * (n_kv * hd) as usize, n_ctx * (n_kv * hdv) as usize);
            let qw = ctx
                .upload_f32(&rand_vec(&mut rng, hd as usize, 1.5))
                .unwrap();
            let kw = ctx
                .upload_f32(&rand_vec(&mut rng, hd as usize, 1.5))
                .unwrap();
            let eps = 1e-6;
            let mut results = Vec::new();
            for fused in [false, true] {
                let (qg, kg, vg) = (
                    ctx.upload_f32(&q).unwrap(),
                    ctx.upload_f32(&k).unwrap(),
                    ctx.upload_f32(&v).unwrap(),
                );
                let (kc, vc) = (ctx.zeros(kd, dtype).unwrap(), ctx.zeros(vd, dtype).unwrap());
                let mut b = ctx.batch();
                if fused {
                    let nw = if norms { Some((&qw, &kw, eps)) } else { None };
                    b.rope_store_kv(&qg, &kg, &vg, &kc, &vc, pos0, &p, n_kv, hdv, ffo, qs, nw)
                        .unwrap();
                } else {
                    if norms {
                        b.rms_norm_inplace(&qg, &qw, n_tok * n_head, hd, eps)
                            .unwrap();
                        b.rms_norm_inplace(&kg, &kw, n_tok * n_kv, hd, eps).unwrap();
                    }
                    b.rope_inplace(&qg, pos0, &p, ffo).unwrap();
                    if qs != 1.0 {
                        b.scale_inplace(&qg, qs, q.len()).unwrap();
                    }
                    b.rope_inplace(&kg, pos0, &kp, ffo).unwrap();
                    let (kr, vr) = ((n_kv * hd) as usize, (n_kv * hdv) as usize);
                    b.store(&kg, n_tok as usize * kr, &kc, pos0 as usize * kr)
                        .unwrap();
                    b.store(&vg, n_tok as usize * vr, &vc, pos0 as usize * vr)
                        .unwrap();
                }
                b.submit().unwrap();
                let words = |t: &zeta_wgpu::GpuTensor| ctx.read_raw(t).unwrap();
                results.push((ctx.read_f32(&qg).unwrap(), words(&kc), words(&vc)));
            }
            let label = format!(
                "{dtype:?} {mode:?} hd {hd} n_rot {n_rot} hdv {hdv} ff {ff} q_scale {qs} norms {norms}"
            );
            assert_eq!(results[0].0, results[1].0, "q: {label}");
            assert_eq!(results[0].1, results[1].1, "k cache: {label}");
            assert_eq!(results[0].2, results[1].2, "v cache: {label}");
            assert!(
                results[1].1.iter().any(|&w| w != 0),
                "k cache empty: {label}"
            );
            println!("rope_store_kv {label}: identical");
        }
    }
}

fn rope_ref(x: &[f32], pos: &[u32], p: &RopeParams) -> Vec<f64> {
    rope_ref_ff(x, pos, p, None)
}

fn rope_ref_ff(x: &[f32], pos: &[u32], p: &RopeParams, ff: Option<&[f32]>) -> Vec<f64> {
    let (hd, nh) = (p.head_dim as usize, p.n_heads as usize);
    let n_rot = p.n_rot as usize;
    let mut y: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    for (t, &ps) in pos.iter().enumerate() {
        for h in 0..nh {
            let base = (t * nh + h) * hd;
            for i in 0..n_rot / 2 {
                let theta = ps as f64
                    * p.freq_scale as f64
                    * (p.freq_base as f64).powf(-2.0 * i as f64 / n_rot as f64)
                    / ff.map_or(1.0, |f| f[i] as f64);
                let (a, b) = match p.mode {
                    RopeMode::Normal => (2 * i, 2 * i + 1),
                    RopeMode::Neox => (i, i + n_rot / 2),
                };
                let (x0, x1) = (x[base + a] as f64, x[base + b] as f64);
                y[base + a] = x0 * theta.cos() - x1 * theta.sin();
                y[base + b] = x0 * theta.sin() + x1 * theta.cos();
            }
        }
    }
    y
}

#[test]
fn rope_normal_and_neox() {
    let Some(ctx) = ctx() else { return };
    let mut rng = StdRng::seed_from_u64(5);
    for mode in [RopeMode::Normal, RopeMode::Neox] {
        for (head_dim, n_rot) in [(64u32, 64u32), (80, 32), (6, 6)] {
            let p = RopeParams {
                head_dim,
                n_heads: 3,
                n_tokens: 4,
                n_rot,
                mode,
                freq_base: 10000.0,
                freq_scale: 0.5,
            };
            let n = (head_dim * 3 * 4) as usize;
            let x = rand_vec(&mut rng, n, 2.0);
            let pos = [0u32, 7, 100, 513];
            let want = rope_ref(&x, &pos, &p);
            let (xg, pg, y) = (
                ctx.upload_f32(&x).unwrap(),
                ctx.upload_u32(&pos).unwrap(),
                poison(&ctx, n),
            );
            let mut b = ctx.batch();
            b.rope(&xg, &pg, &y, &p).unwrap();
            b.submit().unwrap();
            let e = nmse(&ctx.read_f32(&y).unwrap(), &want);
            println!("rope {mode:?} head_dim {head_dim} n_rot {n_rot} NMSE {e:.3e}");
            assert!(e <= 1e-7, "rope {mode:?} {head_dim}/{n_rot}: {e}");
        }
    }
}

#[test]
fn gated_activations_and_add() {
    let Some(ctx) = ctx() else { return };
    let mut rng = StdRng::seed_from_u64(6);
    let n = 1037;
    let g = rand_vec(&mut rng, n, 6.0);
    let u = rand_vec(&mut rng, n, 2.0);
    let (gg, ug) = (ctx.upload_f32(&g).unwrap(), ctx.upload_f32(&u).unwrap());
    let silu = |x: f64| x / (1.0 + (-x).exp());
    let gelu = gelu_ggml;
    for name in ["swiglu", "geglu", "add", "mul", "scale"] {
        let want: Vec<f64> = g
            .iter()
            .zip(&u)
            .map(|(&a, &b)| {
                let (a, b) = (a as f64, b as f64);
                match name {
                    "swiglu" => silu(a) * b,
                    "geglu" => gelu(a) * b,
                    "mul" => a * b,
                    "scale" => a * 640f32.sqrt() as f64,
                    _ => a + b,
                }
            })
            .collect();
        let out = poison(&ctx, n);
        let mut b = ctx.batch();
        match name {
            "swiglu" => b.glu(&gg, &ug, &out, n, GluOp::SwiGlu).unwrap(),
            "geglu" => b.glu(&gg, &ug, &out, n, GluOp::GeGlu).unwrap(),
            "mul" => b.mul(&gg, &ug, &out, n).unwrap(),
            "scale" => b.scale(&gg, 640f32.sqrt(), &out, n).unwrap(),
            _ => b.add(&gg, &ug, &out, n).unwrap(),
        }
        b.submit().unwrap();
        let e = nmse(&ctx.read_f32(&out).unwrap(), &want);
        println!("{name} NMSE {e:.3e}");
        assert!(e <= 1e-7, "{name}: {e}");
    }
}

#[test]
fn softmax_rows() {
    let Some(ctx) = ctx() else { return };
    let mut rng = StdRng::seed_from_u64(7);
    let (rows, cols) = (3usize, 1001usize);
    let x = rand_vec(&mut rng, rows * cols, 10.0);
    let scale = 0.7f32;
    let mut want = Vec::new();
    for r in 0..rows {
        let row: Vec<f64> = x[r * cols..(r + 1) * cols]
            .iter()
            .map(|&v| v as f64 * scale as f64)
            .collect();
        let m = row.iter().cloned().fold(f64::MIN, f64::max);
        let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
        want.extend(row.iter().map(|v| (v - m).exp() / s));
    }
    let (xg, y) = (ctx.upload_f32(&x).unwrap(), poison(&ctx, rows * cols));
    let mut b = ctx.batch();
    b.softmax(&xg, &y, rows as u32, cols as u32, scale).unwrap();
    b.submit().unwrap();
    let e = nmse(&ctx.read_f32(&y).unwrap(), &want);
    println!("softmax NMSE {e:.3e}");
    assert!(e <= 1e-7);
}

#[test]
fn argmax_token() {
    let Some(ctx) = ctx() else { return };
    let mut rng = StdRng::seed_from_u64(8);
    let n = 262_147;
    let mut x = rand_vec(&mut rng, n, 5.0);
    x[12_345] = 50.0;
    x[200_000] = 50.0; // tie: the smaller index wins
    x[7] = f32::NAN; // ignored
    let xg = ctx.upload_f32(&x).unwrap();
    assert_eq!(ctx.argmax_u32(&xg).unwrap(), 12_345);
    let y = ctx
        .upload_f32(&[-3.0, f32::NAN, -1.0, -2.0, f32::NEG_INFINITY])
        .unwrap();
    assert_eq!(ctx.argmax_u32(&y).unwrap(), 2);
}

#[allow(clippy::too_many_arguments)]
/// Attention in f64; with `f16` (an f16 cache) in the GPU's (and the CPU
/// backend's) arithmetic: the query rounded to f16, and over at most 256
/// positions (one chunk) the normalised probabilities rounded to f16.
fn attn_ref(q: &[f32], k: &[f32], v: &[f32], p: &AttnParams, f16: bool) -> Vec<f64> {
    let rq = |x: f32| {
        if f16 {
            half::f16::from_f32(x).to_f64()
        } else {
            x as f64
        }
    };
    let (hd, nh, nkv) = (p.head_dim as usize, p.n_head as usize, p.n_kv_head as usize);
    let stride = nkv * hd;
    let start = if p.window > 0 {
        (p.n_kv as usize).saturating_sub(p.window as usize)
    } else {
        0
    };
    let mut out = vec![0.0; nh * hd];
    for h in 0..nh {
        let kvh = h / (nh / nkv);
        let scores: Vec<f64> = (start..p.n_kv as usize)
            .map(|t| {
                let mut s: f64 = (0..hd)
                    .map(|d| rq(q[h * hd + d]) * k[t * stride + kvh * hd + d] as f64)
                    .sum();
                s *= p.scale as f64;
                if p.softcap > 0.0 {
                    s = p.softcap as f64 * (s / p.softcap as f64).tanh();
                }
                s
            })
            .collect();
        let m = scores.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
        let sum: f64 = e.iter().sum();
        let one_chunk = f16 && e.len() <= 256;
        for d in 0..hd {
            let acc = e
                .iter()
                .enumerate()
                .map(|(j, w)| {
                    let w = if one_chunk {
                        half::f16::from_f64(w / sum).to_f64()
                    } else {
                        *w
                    };
                    w * v[(start + j) * stride + kvh * hd + d] as f64
                })
                .sum::<f64>();
            out[h * hd + d] = if one_chunk { acc } else { acc / sum };
        }
    }
    out
}

/// Decode attention that also packs its output for the output projection
/// (one chunk and several, f16 and f32 caches, Q8_0 and Q8_1): the same
/// output as plain attention, and the same words as `pack_q8` of it.
#[test]
fn attention_pack_q8_equals_attention_then_pack() {
    let Some(ctx) = ctx() else { return };
    let mut rng = StdRng::seed_from_u64(41);
    for (n_kv, f16kv, mode) in [
        (37u32, true, Q8Mode::Q8_0),
        (200, false, Q8Mode::Q8_1),
        (600, true, Q8Mode::Q8_1),
        (300, false, Q8Mode::Q8_0),
    ] {
        let p = AttnParams {
            head_dim: 64,
            head_dim_v: 64,
            n_head: 6,
            n_kv_head: 2,
            n_kv,
            window: 0,
            scale: 0.125,
            softcap: 0.0,
        };
        let q = rand_vec(&mut rng, 6 * 64, 1.0);
        let k = rand_vec(&mut rng, n_kv as usize * 2 * 64, 1.0);
        let v = rand_vec(&mut rng, n_kv as usize * 2 * 64, 1.0);
        let (kg, vg) = if f16kv {
            let h = |x: &[f32]| x.iter().map(|&a| f16::from_f32(a)).collect::<Vec<_>>();
            (
                ctx.upload_f16(&h(&k)).unwrap(),
                ctx.upload_f16(&h(&v)).unwrap(),
            )
        } else {
            (ctx.upload_f32(&k).unwrap(), ctx.upload_f32(&v).unwrap())
        };
        let qg = ctx.upload_f32(&q).unwrap();
        let (o1, o2) = (poison(&ctx, 6 * 64), poison(&ctx, 6 * 64));
        let words = zeta_wgpu::q8_words(6 * 64);
        let (x1, x2) = (
            ctx.upload_u32(&vec![u32::MAX; words]).unwrap(),
            ctx.upload_u32(&vec![u32::MAX; words]).unwrap(),
        );
        let mut b = ctx.batch();
        b.attention_pack_q8(&qg, &kg, &vg, &o1, &p, &x1, mode)
            .unwrap();
        b.attention(&qg, &kg, &vg, &o2, &p, 1).unwrap();
        b.pack_q8(&o2, &x2, 6 * 64, mode).unwrap();
        b.submit().unwrap();
        let what = format!("n_kv {n_kv} f16 {f16kv} {mode:?}");
        assert_eq!(
            ctx.read_f32(&o1).unwrap(),
            ctx.read_f32(&o2).unwrap(),
            "{what}"
        );
        assert_eq!(
            ctx.read_u32(&x1).unwrap(),
            ctx.read_u32(&x2).unwrap(),
            "{what}"
        );
        if !f16kv {
            continue;
        }
        // Exact mode (`softmax_kqv`): the same against attention_exact +
        // pack_q8, with and without a window.
        for window in [0, 29] {
            let p = AttnParams { window, ..p };
            let (o1, o2) = (poison(&ctx, 6 * 64), poison(&ctx, 6 * 64));
            let (x1, x2) = (
                ctx.upload_u32(&vec![u32::MAX; words]).unwrap(),
                ctx.upload_u32(&vec![u32::MAX; words]).unwrap(),
            );
            let mut b = ctx.batch();
            b.attention_exact_pack(&qg, &kg, &vg, &o1, &p, &x1, mode)
                .unwrap();
            b.attention_exact(&qg, &kg, &vg, &o2, &p, 1).unwrap();
            b.pack_q8(&o2, &x2, 6 * 64, mode).unwrap();
            b.submit().unwrap();
            let what = format!("{what} exact window {window}");
            let (a, e) = (ctx.read_f32(&o1).unwrap(), ctx.read_f32(&o2).unwrap());
            assert!(
                a.iter().zip(&e).all(|(a, e)| a.to_bits() == e.to_bits()),
                "{what}"
            );
            assert_eq!(
                ctx.read_u32(&x1).unwrap(),
                ctx.read_u32(&x2).unwrap(),
                "{what}"
            );
        }
    }
    // Q8_K blocks would span heads: refused.
    let t = poison(&ctx, 256);
    let xq = ctx.upload_u32(&[0; 64]).unwrap();
    let p = AttnParams {
        head_dim: 32,
        head_dim_v: 32,
        n_head: 8,
        n_kv_head: 8,
        n_kv: 1,
        window: 0,
        scale: 1.0,
        softcap: 0.0,
    };
    let kv = ctx.upload_f32(&[0.0; 256]).unwrap();
    let mut b = ctx.batch();
    assert!(
        b.attention_pack_q8(&t, &kv, &kv, &poison(&ctx, 256), &p, &xq, Q8Mode::Q8K)
            .is_err()
    );
    let kv16 = ctx.upload_f16(&[f16::ZERO; 256]).unwrap();
    assert!(
        b.attention_exact_pack(&t, &kv16, &kv16, &poison(&ctx, 256), &p, &xq, Q8Mode::Q8K)
            .is_err()
    );
}

#[test]
fn attention_decode_gqa_window_f16() {
    let Some(ctx) = ctx() else { return };
    let mut rng = StdRng::seed_from_u64(9);
    for (f16kv, head_dim, n_kv, window, softcap) in [
        (false, 64u32, 600u32, 0u32, 0.0f32),
        (true, 64, 600, 0, 0.0),
        (false, 80, 517, 300, 0.0),
        (true, 256, 1, 0, 0.0),
        (false, 32, 260, 0, 5.0),
        // f16 V read a word per invocation by 4, 2 and 6 position groups.
        (true, 128, 517, 300, 0.0),
        (true, 256, 300, 0, 0.0),
        (true, 80, 263, 0, 0.0),
        // One chunk: `chunk` writes the normalised output itself.
        (true, 128, 200, 0, 0.0),
        (false, 64, 1000, 100, 0.0),
    ] {
        let p = AttnParams {
            head_dim,
            head_dim_v: head_dim,
            n_head: 4,
            n_kv_head: 2,
            n_kv,
            window,
            scale: 1.0 / (head_dim as f32).sqrt(),
            softcap,
        };
        let ctx_len = n_kv as usize + 3; // cache capacity larger than the valid part
        let kv_n = ctx_len * 2 * head_dim as usize;
        let q = rand_vec(&mut rng, 4 * head_dim as usize, 2.0);
        let mut k = rand_vec(&mut rng, kv_n, 2.0);
        let mut v = rand_vec(&mut rng, kv_n, 1.0);
        if f16kv {
            for t in k.iter_mut().chain(v.iter_mut()) {
                *t = f16::from_f32(*t).to_f32();
            }
        }
        let want = attn_ref(&q, &k, &v, &p, f16kv);
        let (kg, vg) = if f16kv {
            let kh: Vec<f16> = k.iter().map(|&x| f16::from_f32(x)).collect();
            let vh: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
            (ctx.upload_f16(&kh).unwrap(), ctx.upload_f16(&vh).unwrap())
        } else {
            (ctx.upload_f32(&k).unwrap(), ctx.upload_f32(&v).unwrap())
        };
        assert_eq!(
            kg.dtype(),
            if f16kv { GpuDType::F16 } else { GpuDType::F32 }
        );
        let qg = ctx.upload_f32(&q).unwrap();
        let out = poison(&ctx, q.len());
        let mut b = ctx.batch();
        b.attention_decode(&qg, &kg, &vg, &out, &p).unwrap();
        b.submit().unwrap();
        let e = nmse(&ctx.read_f32(&out).unwrap(), &want);
        println!(
            "attention f16={f16kv} head_dim {head_dim} n_kv {n_kv} window {window} softcap {softcap} NMSE {e:.3e}"
        );
        // f16 caches: probabilities next to an f16 rounding tie may round
        // the other way with the device's exp (H100: 3.6e-8 once).
        let bound = if f16kv { 1e-7 } else { 1e-8 };
        assert!(e <= bound, "attention: {e}");
    }
}

#[test]
fn attention_prefill_causal() {
    let Some(ctx) = ctx() else { return };
    let mut rng = StdRng::seed_from_u64(10);
    for (f16kv, head_dim, n_kv, n_q, window) in [
        (false, 64u32, 300u32, 37u32, 0u32),
        (true, 48, 270, 270, 0),
        (false, 32, 700, 9, 100),
        (true, 64, 20, 5, 3),
    ] {
        let (nh, nkv) = (6u32, 2u32);
        let kv_n = n_kv as usize * (nkv * head_dim) as usize;
        let q = rand_vec(&mut rng, (n_q * nh * head_dim) as usize, 2.0);
        let mut k = rand_vec(&mut rng, kv_n, 2.0);
        let mut v = rand_vec(&mut rng, kv_n, 1.0);
        if f16kv {
            for t in k.iter_mut().chain(v.iter_mut()) {
                *t = f16::from_f32(*t).to_f32();
            }
        }
        let base = AttnParams {
            head_dim,
            head_dim_v: head_dim,
            n_head: nh,
            n_kv_head: nkv,
            n_kv,
            window,
            scale: 0.125,
            softcap: 0.0,
        };
        // Reference: query i is a decode step with n_kv_i = n_kv - n_q + i + 1.
        let qs = (nh * head_dim) as usize;
        let mut want = Vec::new();
        for i in 0..n_q {
            let p = AttnParams {
                n_kv: n_kv - n_q + i + 1,
                ..base
            };
            want.extend(attn_ref(
                &q[i as usize * qs..(i as usize + 1) * qs],
                &k,
                &v,
                &p,
                f16kv,
            ));
        }
        let (kg, vg) = if f16kv {
            let kh: Vec<f16> = k.iter().map(|&x| f16::from_f32(x)).collect();
            let vh: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
            (ctx.upload_f16(&kh).unwrap(), ctx.upload_f16(&vh).unwrap())
        } else {
            (ctx.upload_f32(&k).unwrap(), ctx.upload_f32(&v).unwrap())
        };
        let qg = ctx.upload_f32(&q).unwrap();
        let out = poison(&ctx, q.len());
        let mut b = ctx.batch();
        b.attention(&qg, &kg, &vg, &out, &base, n_q).unwrap();
        b.submit().unwrap();
        let e = nmse(&ctx.read_f32(&out).unwrap(), &want);
        println!(
            "attention prefill f16={f16kv} head_dim {head_dim} n_kv {n_kv} n_q {n_q} window {window} NMSE {e:.3e}"
        );
        let bound = if f16kv { 1e-7 } else { 1e-8 };
        assert!(e <= bound, "prefill attention: {e}");
    }
}

#[test]
fn matvec_more_rows_than_one_grid_dimension() {
    let Some(ctx) = ctx() else { return };
    // 70001 rows > 65535 workgroups per dimension: 2-D grid.
    let n_rows = 70_001usize;
    let e = matvec_case(&ctx, GgmlType::F16, n_rows, 3, None, 13);
    println!("matvec f16 [{n_rows}, 3] NMSE {e:.3e}");
    assert!(e <= 1e-9);
}

#[test]
fn inplace_ops_and_oversized_buffers() {
    let Some(ctx) = ctx() else { return };
    let mut rng = StdRng::seed_from_u64(14);
    let pad = 13; // every buffer is larger than the op's extent; the tail must stay intact
    let check = |name: &str, got: &[f32], want: &[f64], tail: &[f32]| {
        let n = want.len();
        let e = nmse(&got[..n], want);
        println!("{name} NMSE {e:.3e}");
        assert!(e <= 1e-7, "{name}: {e}");
        assert_eq!(&got[n..], tail, "{name}: tail modified");
    };

    // rms_norm_inplace: 3 rows of 77.
    let (rows, cols) = (3usize, 77usize);
    let x = rand_vec(&mut rng, rows * cols + pad, 2.0);
    let w = rand_vec(&mut rng, cols, 1.0);
    let mut want = Vec::new();
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let ms: f64 = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / cols as f64;
        let s = 1.0 / (ms + 1e-5).sqrt();
        want.extend(row.iter().zip(&w).map(|(&v, &g)| v as f64 * s * g as f64));
    }
    let (xg, wg) = (ctx.upload_f32(&x).unwrap(), ctx.upload_f32(&w).unwrap());
    let mut b = ctx.batch();
    b.rms_norm_inplace(&xg, &wg, rows as u32, cols as u32, 1e-5)
        .unwrap();
    b.submit().unwrap();
    check(
        "rms_norm_inplace",
        &ctx.read_f32(&xg).unwrap(),
        &want,
        &x[rows * cols..],
    );

    // rms_norm_inplace_add: the same norm, and the result added into y.
    let y = rand_vec(&mut rng, rows * cols + pad, 1.0);
    let (xg, yg) = (ctx.upload_f32(&x).unwrap(), ctx.upload_f32(&y).unwrap());
    let mut b = ctx.batch();
    b.rms_norm_inplace_add(&xg, &wg, &yg, rows as u32, cols as u32, 1e-5)
        .unwrap();
    b.submit().unwrap();
    check(
        "rms_norm_inplace_add (x)",
        &ctx.read_f32(&xg).unwrap(),
        &want,
        &x[rows * cols..],
    );
    let want_y: Vec<f64> = want.iter().zip(&y).map(|(a, b)| a + *b as f64).collect();
    check(
        "rms_norm_inplace_add (y)",
        &ctx.read_f32(&yg).unwrap(),
        &want_y,
        &y[rows * cols..],
    );

    // rope_inplace from pos0, with and without llama3 frequency factors.
    for with_ff in [false, true] {
        let p = RopeParams {
            head_dim: 64,
            n_heads: 2,
            n_tokens: 3,
            n_rot: 48,
            mode: RopeMode::Normal,
            freq_base: 500000.0,
            freq_scale: 1.0,
        };
        let n = 64 * 2 * 3;
        let x = rand_vec(&mut rng, n + pad, 1.0);
        let ff: Vec<f32> = (0..24).map(|i| 1.0 + i as f32 * 0.37).collect();
        let want = rope_ref_ff(&x[..n], &[40, 41, 42], &p, with_ff.then_some(&ff[..]));
        let (xg, ffg) = (ctx.upload_f32(&x).unwrap(), ctx.upload_f32(&ff).unwrap());
        let mut b = ctx.batch();
        b.rope_inplace(&xg, 40, &p, with_ff.then_some(&ffg))
            .unwrap();
        b.submit().unwrap();
        check("rope_inplace", &ctx.read_f32(&xg).unwrap(), &want, &x[n..]);
    }

    // glu_inplace, add_inplace, scale_inplace, add_bias.
    let n = 555;
    let g = rand_vec(&mut rng, n + pad, 5.0);
    let u = rand_vec(&mut rng, n + pad, 1.0);
    let silu = |x: f64| x / (1.0 + (-x).exp());
    let gelu = gelu_ggml;
    for kind in [GluOp::SwiGlu, GluOp::GeGlu] {
        let want: Vec<f64> = (0..n)
            .map(|i| {
                let a = g[i] as f64;
                (if kind == GluOp::SwiGlu {
                    silu(a)
                } else {
                    gelu(a)
                }) * u[i] as f64
            })
            .collect();
        let (gg, ug) = (ctx.upload_f32(&g).unwrap(), ctx.upload_f32(&u).unwrap());
        let mut b = ctx.batch();
        b.glu_inplace(&gg, &ug, n, kind).unwrap();
        b.submit().unwrap();
        check("glu_inplace", &ctx.read_f32(&gg).unwrap(), &want, &g[n..]);
    }
    let (gg, ug) = (ctx.upload_f32(&g).unwrap(), ctx.upload_f32(&u).unwrap());
    let mut b = ctx.batch();
    b.add_inplace(&gg, &ug, n).unwrap();
    b.scale_inplace(&gg, -0.5, n).unwrap();
    b.submit().unwrap();
    let want: Vec<f64> = (0..n).map(|i| (g[i] as f64 + u[i] as f64) * -0.5).collect();
    check(
        "add_inplace+scale_inplace",
        &ctx.read_f32(&gg).unwrap(),
        &want,
        &g[n..],
    );

    let gg = ctx.upload_f32(&g).unwrap();
    let mut b = ctx.batch();
    b.softcap_inplace(&gg, 3.0, n).unwrap();
    assert!(b.softcap_inplace(&gg, 0.0, n).is_err());
    b.submit().unwrap();
    let want: Vec<f64> = (0..n).map(|i| 3.0 * (g[i] as f64 / 3.0).tanh()).collect();
    check(
        "softcap_inplace",
        &ctx.read_f32(&gg).unwrap(),
        &want,
        &g[n..],
    );

    let (rows, row_len) = (5usize, 111usize);
    let x = rand_vec(&mut rng, rows * row_len + pad, 1.0);
    let bias = rand_vec(&mut rng, row_len, 1.0);
    let want: Vec<f64> = (0..rows * row_len)
        .map(|i| x[i] as f64 + bias[i % row_len] as f64)
        .collect();
    let (xg, bg) = (ctx.upload_f32(&x).unwrap(), ctx.upload_f32(&bias).unwrap());
    let mut b = ctx.batch();
    b.add_bias(&xg, &bg, rows, row_len).unwrap();
    b.submit().unwrap();
    check(
        "add_bias",
        &ctx.read_f32(&xg).unwrap(),
        &want,
        &x[rows * row_len..],
    );

    // F32 weights double as tensors; ranged read-back.
    let wm = ctx
        .upload_matrix(
            GgmlType::F32,
            1,
            5,
            bytemuck::cast_slice(&[1f32, 2.0, 3.0, 4.0, 5.0]),
        )
        .unwrap();
    let wt = wm.as_f32_tensor().unwrap();
    assert_eq!(ctx.read_f32_range(&wt, 1, 3).unwrap(), vec![2.0, 3.0, 4.0]);
    assert!(ctx.read_f32_range(&wt, 3, 3).is_err());
    // The same straight into a slice (the logits' path); its bytes are
    // overwritten, out-of-range and non-f32 reads are refused.
    let mut into = [f32::NAN; 3];
    ctx.read_f32_into(&wt, 2, &mut into).unwrap();
    assert_eq!(into, [3.0, 4.0, 5.0]);
    assert!(ctx.read_f32_into(&wt, 3, &mut into).is_err());
    let ids = ctx.upload_u32(&[1, 2, 3]).unwrap();
    assert!(ctx.read_f32_into(&ids, 0, &mut into).is_err());
    ctx.read_f32_into(&wt, 5, &mut []).unwrap();
    let q8 = ctx
        .upload_matrix(GgmlType::Q8_0, 1, 32, &[0u8; 34])
        .unwrap();
    assert!(q8.as_f32_tensor().is_none());

    // copy between ranges.
    let a = ctx.upload_f32(&[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
    let d = ctx.upload_f32(&[0.0; 6]).unwrap();
    let mut b = ctx.batch();
    b.copy(&a, 1, &d, 3, 3).unwrap();
    assert!(b.copy(&a, 3, &d, 0, 3).is_err());
    assert!(b.copy(&a, 0, &a, 1, 3).is_err());
    b.submit().unwrap();
    assert_eq!(
        ctx.read_f32(&d).unwrap(),
        vec![0.0, 0.0, 0.0, 2.0, 3.0, 4.0]
    );
}

#[test]
fn attention_value_head_size_differs() {
    let Some(ctx) = ctx() else { return };
    let mut rng = StdRng::seed_from_u64(15);
    let (hd, hdv, nh, nkv, n_kv, n_q) = (48usize, 32usize, 4usize, 1usize, 300usize, 3usize);
    let q = rand_vec(&mut rng, n_q * nh * hd, 1.0);
    let k = rand_vec(&mut rng, n_kv * nkv * hd, 1.0);
    let v = rand_vec(&mut rng, n_kv * nkv * hdv, 1.0);
    let scale = 0.2f64;
    let mut want = Vec::new();
    for i in 0..n_q {
        let n_kv_i = n_kv - n_q + i + 1;
        for h in 0..nh {
            let s: Vec<f64> = (0..n_kv_i)
                .map(|t| {
                    (0..hd)
                        .map(|d| q[(i * nh + h) * hd + d] as f64 * k[t * hd + d] as f64)
                        .sum::<f64>()
                        * scale
                })
                .collect();
            let m = s.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let sum: f64 = e.iter().sum();
            for d in 0..hdv {
                want.push(
                    (0..n_kv_i)
                        .map(|t| e[t] * v[t * hdv + d] as f64)
                        .sum::<f64>()
                        / sum,
                );
            }
        }
    }
    let p = AttnParams {
        head_dim: hd as u32,
        head_dim_v: hdv as u32,
        n_head: nh as u32,
        n_kv_head: nkv as u32,
        n_kv: n_kv as u32,
        window: 0,
        scale: scale as f32,
        softcap: 0.0,
    };
    let (qg, kg, vg) = (
        ctx.upload_f32(&q).unwrap(),
        ctx.upload_f32(&k).unwrap(),
        ctx.upload_f32(&v).unwrap(),
    );
    let out = poison(&ctx, n_q * nh * hdv);
    let mut b = ctx.batch();
    b.attention(&qg, &kg, &vg, &out, &p, n_q as u32).unwrap();
    b.submit().unwrap();
    let e = nmse(&ctx.read_f32(&out).unwrap(), &want);
    println!("attention head_dim {hd} head_dim_v {hdv} NMSE {e:.3e}");
    assert!(e <= 1e-8);
}

#[test]
fn shape_errors_are_typed() {
    let Some(ctx) = ctx() else { return };
    let x = ctx.upload_f32(&[1.0; 10]).unwrap();
    let y = ctx.zeros(4, GpuDType::F32).unwrap();
    let w = ctx
        .upload_matrix(GgmlType::F32, 4, 12, &[0u8; 4 * 12 * 4])
        .unwrap();
    let mut b = ctx.batch();
    assert!(matches!(b.matvec(&w, &x, &y), Err(WgpuError::Shape { .. })));
    assert!(matches!(
        b.add(&x, &x, &x, 10),
        Err(WgpuError::Shape { .. })
    ));
    assert!(matches!(
        b.add(&x, &y, &y, 10),
        Err(WgpuError::Shape { .. })
    ));
    assert!(matches!(
        ctx.upload_matrix(GgmlType::IQ2_XXS, 1, 256, &[0u8; 66]),
        Err(WgpuError::UnsupportedType(GgmlType::IQ2_XXS))
    ));
    assert!(matches!(
        ctx.upload_matrix(GgmlType::Q8_0, 1, 33, &[0u8; 34]),
        Err(WgpuError::Shape { .. })
    ));
    assert!(matches!(
        ctx.upload_matrix(GgmlType::Q8_0, 2, 32, &[0u8; 34]),
        Err(WgpuError::Shape { .. })
    ));
    assert!(matches!(
        ctx.upload_matrix_split(GgmlType::Q8_0, 2, 64, &[0u8; 136], 40),
        Err(WgpuError::OutOfMemory { .. })
    ));
    b.submit().unwrap();
}

#[test]
fn info_and_adapter_selection() {
    let Some(ctx) = ctx() else { return };
    let info = ctx.info();
    println!("{info}");
    assert!(!info.name.is_empty());
    assert!(info.max_storage_buffer_binding_size >= 128 << 20);
    assert!(ctx.max_part_bytes() <= info.max_storage_buffer_binding_size);
    assert!(!zeta_wgpu::list_adapters().is_empty());
    let by_name = GpuContext::with_options(&zeta_wgpu::GpuOptions {
        adapter: Some(info.name.to_uppercase()),
        no_optional_features: true,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(by_name.info().name, info.name);
    // No optional wgpu feature; "fused-fma" and "f16-unpack" are properties
    // of the device's `fma` and `unpack2x16float` (probed), not features
    // (the H100 lists both, lavapipe the second).
    assert!(
        by_name
            .info()
            .features
            .iter()
            .all(|f| f == "fused-fma" || f == "f16-unpack"),
        "{:?} with no optional features ({})",
        by_name.info().features,
        by_name.info().backend
    );
    let missing = GpuContext::with_options(&zeta_wgpu::GpuOptions {
        adapter: Some("no such adapter 1234".into()),
        no_optional_features: false,
        ..Default::default()
    });
    assert!(matches!(missing, Err(WgpuError::NoAdapter { .. })));
}

#[test]
fn many_dispatches_in_one_batch() {
    // More dispatches than one parameter buffer holds (256), each with its
    // own parameters, in dependency order.
    let Some(ctx) = ctx() else { return };
    let acc = ctx.upload_f32(&[0.0; 7]).unwrap();
    let one = ctx.upload_f32(&[1.0; 7]).unwrap();
    let mut b = ctx.batch();
    for i in 0..600 {
        if i % 2 == 0 {
            b.add_inplace(&acc, &one, 7 - (i / 2) % 3).unwrap();
        } else {
            b.scale_inplace(&acc, 1.0, 7).unwrap();
        }
    }
    b.submit().unwrap();
    // Element j was incremented in the 300 even steps where 7 - k > j, k = step % 3.
    let want: Vec<f32> = (0..7)
        .map(|j| (0..300).filter(|s| 7 - s % 3 > j).count() as f32)
        .collect();
    assert_eq!(ctx.read_f32(&acc).unwrap(), want);
}

#[test]
fn shared_batch_crosses_threads() {
    let Some(ctx) = ctx() else { return };
    let ctx = std::sync::Arc::new(ctx);
    let x = ctx.upload_f32(&[1.0, 2.0]).unwrap();
    let pending = std::sync::Mutex::new(Some(ctx.shared_batch()));
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut guard = pending.lock().unwrap();
            let b = guard.as_mut().unwrap();
            b.scale_inplace(&x, 3.0, 2).unwrap();
            assert_eq!(b.dispatches(), 1);
        });
    });
    pending.into_inner().unwrap().unwrap().submit().unwrap();
    assert_eq!(ctx.read_f32(&x).unwrap(), vec![3.0, 6.0]);
}

#[test]
fn every_variant_compiles_on_the_device() {
    let Some(ctx) = ctx() else { return };
    let all = ctx.precompile(&[]).unwrap();
    // 15 types x (matvec + matmul + 2 tiled matmuls + embed), 6 types x 4
    // integer widths x (matvec, matmul_q8, and with subgroups the grouped
    // matvec), + 38 others: rmsnorm 6, glu 6, add 7, softmax,
    // argmax 3, kv_store, act_quant 2, attention 4 x (f32, f16), rope 4;
    // + 8 exact-mode kernels whatever the types (exact_eval, attn_exact 7)
    // and the f16 probe's where it passed
    // and the exact matmuls: per weight type and `DotOrder` (10: Q4_0 2
    // orders, Q4_1, Q5_0, Q8_0, Q4_K 3, Q6_K 2) the one-invocation-per-output
    // form, and the one-token kernel — matmul_exact_tr's for the lane order
    // of Q4_0, Q4_1, Q5_0 and Q8_0, else matmul_exact_sg's or (no
    // subgroups) the plain one — plus, with subgroups, for the 7 one-token
    // orders (6 types' lanes, Q4_K gemv) its weight-group form and the
    // Q/K/V group with RoPE, and for the 3 one-token orders of Q4_K and
    // Q6_K (lanes, Q4_K gemv) the form that packs its f32 input
    // (`matmul_exact_f32`): 37 or 20 (Q4_K and Q6_K: 19 or 10); the two
    // group kernels of matmul_exact_tr's four types also with the RMSNorm
    // staged (`*_norm`, 8 more) where the device has 32 KiB of workgroup
    // memory. With cooperative matrices, matmul_exact_coop replaces the
    // prompt kernel of the Q4_0 / Q4_K gemm and Q6_K tiled orders: the same
    // counts. The cooperative-matrix matmul only where the device has it.
    let coop = if ctx.use_coop() { 15 } else { 0 };
    let int = if ctx.use_subgroups() { 3 } else { 2 };
    let norm = if ctx.info().max_compute_workgroup_storage_size
        >= zeta_wgpu::pipeline::WORKGROUP_BYTES_LARGE
    {
        8
    } else {
        0
    };
    let (exact_all, exact_k) = if ctx.exact_sg() {
        (37 + norm, 19)
    } else {
        (20, 10)
    };
    println!("cooperative-matrix matmul: {}", ctx.use_coop());
    assert_eq!(
        all,
        15 * 5 + coop + 6 * 4 * int + 38 + 8 + usize::from(ctx.f16_unpack()) + exact_all,
        "variants compiled"
    );
    assert_eq!(ctx.cached_pipelines(), all);
    let some = ctx.precompile(&[GgmlType::Q4_K, GgmlType::Q6_K]).unwrap();
    assert_eq!(
        some,
        2 * 5 + coop / 15 * 2 + 2 * 4 * int + 38 + 8 + usize::from(ctx.f16_unpack()) + exact_k
    );
    assert_eq!(
        ctx.cached_pipelines(),
        all,
        "precompiling again hits the cache"
    );
}

#[test]
fn timestamps_per_pass() {
    let Some(ctx) = ctx() else { return };
    let x = ctx.upload_f32(&[1.0; 1000]).unwrap();
    let y = ctx.zeros(1000, GpuDType::F32).unwrap();
    let mut b = ctx.batch();
    let on = b.enable_timing();
    b.add(&x, &x, &y, 1000).unwrap();
    b.scale_inplace(&y, 2.0, 1000).unwrap();
    b.softmax(&y, &x, 1, 1000, 1.0).unwrap();
    let times = b.submit_timed().unwrap();
    println!("timestamps supported: {on}: {times:?}");
    if on {
        let labels: Vec<&str> = times.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(
            labels,
            ["add:main[]", "add:scale_assign[]", "softmax:main[]"]
        );
        assert!(times.iter().all(|(_, ns)| ns.is_finite() && *ns >= 0.0));
    } else {
        assert!(times.is_empty());
    }
    let v = ctx.read_f32(&x).unwrap();
    assert!((v.iter().sum::<f32>() - 1.0).abs() < 1e-4);
}

#[test]
fn pipelines_are_cached() {
    let Some(ctx) = ctx() else { return };
    let x = ctx.upload_f32(&[1.0, 2.0, 3.0]).unwrap();
    let y = ctx.zeros(3, GpuDType::F32).unwrap();
    let mut b = ctx.batch();
    b.add(&x, &x, &y, 3).unwrap();
    let n = ctx.cached_pipelines();
    b.add(&x, &x, &y, 3).unwrap();
    b.submit().unwrap();
    assert_eq!(ctx.cached_pipelines(), n);
    assert_eq!(ctx.read_f32(&y).unwrap(), vec![2.0, 4.0, 6.0]);
}
