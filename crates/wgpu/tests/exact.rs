//! The exact kernels against the CPU backend, bit for bit: exact.wgsl's
//! helpers (emulated and native `fma`, float-float division and reciprocal,
//! correctly rounded sqrt, ggml's expf) against their Rust definitions, and
//! `matmul_exact` against `CpuBackend::matmul` for every weight type, row
//! count (repacked or not), batch size (every `DotOrder`) and split. Without
//! an adapter the tests print `SKIP` and pass, unless `ZETA_REQUIRE_GPU=1`.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use zeta_gguf::{GgmlType, Gguf, GgufWriter, Value};
use zeta_tensor::cpu::ops_exports::ggml_v_expf;
use zeta_tensor::{Backend, CpuBackend};
use zeta_wgpu::{GpuContext, GpuDType, GpuOptions, Q8Mode, WgpuError};

fn ctx() -> Option<GpuContext> {
    match GpuContext::new() {
        Ok(c) => {
            println!(
                "GPU adapter: {} (fused fma: {}, f16 unpack: {})",
                c.info().name,
                c.fused_fma(),
                c.f16_unpack()
            );
            Some(c)
        }
        Err(WgpuError::NoAdapter { .. }) => {
            assert_ne!(
                std::env::var("ZETA_REQUIRE_GPU").as_deref(),
                Ok("1"),
                "ZETA_REQUIRE_GPU=1 but no GPU adapter was found"
            );
            println!("SKIP: no GPU adapter");
            None
        }
        Err(e) => panic!("GPU setup failed: {e}"),
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 32) as u32
    }
    /// ±(1..2)·2^e with e uniform in `lo..hi`.
    fn float(&mut self, lo: i32, hi: i32) -> f32 {
        let e = lo + (self.next() % (hi - lo) as u32) as i32;
        let m = 1.0 + (self.next() >> 9) as f32 / (1u32 << 23) as f32;
        let s = if self.next() & 1 == 0 { 1.0 } else { -1.0 };
        s * m * 2f32.powi(e)
    }
    fn uniform(&mut self, scale: f32) -> f32 {
        (self.next() as f32 / u32::MAX as f32 * 2.0 - 1.0) * scale
    }
}

/// Runs exact_eval helper `which` on `x` (vec4 per input).
fn eval(ctx: &GpuContext, which: u32, x: &[[f32; 4]]) -> Vec<f32> {
    let flat: Vec<f32> = x.iter().flatten().copied().collect();
    let xt = ctx.upload_f32(&flat).unwrap();
    let yt = ctx.zeros(x.len(), GpuDType::F32).unwrap();
    let mut b = ctx.batch();
    b.exact_eval(which, &xt, &yt, x.len()).unwrap();
    b.submit().unwrap();
    ctx.read_f32(&yt).unwrap()
}

fn assert_bits(name: &str, x: &[[f32; 4]], got: &[f32], want: impl Fn(&[f32; 4]) -> f32) {
    let mut bad = 0;
    for (v, g) in x.iter().zip(got) {
        let w = want(v);
        if w.to_bits() != g.to_bits() && !(w.is_nan() && g.is_nan()) {
            if bad < 5 {
                eprintln!(
                    "{name}: {v:?}: got {g:e} ({:#x}), want {w:e} ({:#x})",
                    g.to_bits(),
                    w.to_bits()
                );
            }
            bad += 1;
        }
    }
    assert_eq!(bad, 0, "{name}: {bad} of {} differ", x.len());
}

#[test]
fn exact_helpers_round_like_the_cpu() {
    let Some(ctx) = ctx() else { return };
    let mut r = Rng(0x1234_5678_9abc_def1);
    // fma: random magnitudes, and c close to -a·b (cancellation).
    let mut fx = Vec::new();
    for i in 0..4096 {
        let (a, b) = (r.float(-30, 30), r.float(-30, 30));
        let c = match i % 4 {
            0 => r.float(-60, 60),
            1 => -(a * b) * (1.0 + (r.next() % 64) as f32 * 2f32.powi(-23)),
            2 => (a * b) * r.float(-40, 0).abs(),
            _ => 0.0,
        };
        fx.push([a, b, c, 0.0]);
    }
    for which in [1u32, 2] {
        let got = eval(&ctx, which, &fx);
        assert_bits(&format!("fma {which}"), &fx, &got, |v| {
            v[0].mul_add(v[1], v[2])
        });
    }
    // Float-float / n and 1 / float-float: against f64 (exact pairs).
    let mut dx = Vec::new();
    for _ in 0..4096 {
        let hi = r.float(-20, 40).abs();
        let lo = hi * r.float(-30, -24);
        let n = (1 + r.next() % 4096) as f32;
        dx.push([hi, lo, n, 0.0]);
    }
    let got = eval(&ctx, 3, &dx);
    assert_bits("ff_div_n", &dx, &got, |v| {
        ((f64::from(v[0]) + f64::from(v[1])) / f64::from(v[2])) as f32
    });
    let got = eval(&ctx, 4, &dx);
    assert_bits("ff_recip", &dx, &got, |v| {
        (1.0 / (f64::from(v[0]) + f64::from(v[1]))) as f32
    });
    // sqrt, expf (softmax / SiLU arguments), division.
    let sx: Vec<[f32; 4]> = (0..4096)
        .map(|_| [r.float(-40, 40).abs(), 0.0, 0.0, 0.0])
        .collect();
    let got = eval(&ctx, 5, &sx);
    assert_bits("sqrt_rn", &sx, &got, |v| v[0].sqrt());
    let ex: Vec<[f32; 4]> = (0..4096)
        .map(|i| [r.uniform([1.0, 10.0, 90.0, 200.0][i % 4]), 0.0, 0.0, 0.0])
        .filter(|v| ggml_v_expf(v[0]).is_normal() || ggml_v_expf(v[0]) == 0.0)
        .collect();
    let got = eval(&ctx, 6, &ex);
    assert_bits("ggml_expf", &ex, &got, |v| ggml_v_expf(v[0]));
    let vx: Vec<[f32; 4]> = (0..4096)
        .map(|_| [r.float(-30, 30), r.float(-30, 30), 0.0, 0.0])
        .collect();
    let got = eval(&ctx, 7, &vx);
    assert_bits("div_rn", &vx, &got, |v| v[0] / v[1]);
}

/// A GGUF holding one weight `w` ([rows, cols] of `ty`, quantized from `vals`).
fn gguf_with(ty: GgmlType, cols: usize, rows: usize, vals: &[f32]) -> (Arc<Gguf>, Vec<u8>) {
    let row_bytes = ty.row_bytes(cols as u64).unwrap() as usize;
    let mut data = vec![0u8; row_bytes * rows];
    for (src, dst) in vals
        .chunks_exact(cols)
        .zip(data.chunks_exact_mut(row_bytes))
    {
        zeta_quant::quantize(ty, src, dst).unwrap();
    }
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", Value::String("test".into()));
    w.add_tensor("w", &[cols as u64, rows as u64], ty, data.clone())
        .unwrap();
    let mut bytes = Vec::new();
    w.write_to(&mut bytes).unwrap();
    (Arc::new(Gguf::from_bytes(bytes).unwrap()), data)
}

#[test]
fn exact_matmul_equals_cpu_bit_for_bit() {
    let Some(ctx) = ctx() else { return };
    // With subgroups (matmul_exact_sg.wgsl's `lanes_sg` for the lane order),
    // then without (matmul_exact.wgsl's `lanes`).
    assert!(ctx.use_subgroups(), "lavapipe and the H100 have subgroups");
    exact_matmul_on(&ctx);
    // ... and with f16 block scales converted by integer ops where the
    // device's `unpack2x16float` passed the probe (lavapipe's does).
    let plain = GpuContext::with_options(&GpuOptions {
        no_optional_features: true,
        no_f16_unpack: true,
        ..GpuOptions::default()
    })
    .unwrap();
    assert!(!plain.use_subgroups() && !plain.f16_unpack());
    exact_matmul_on(&plain);
}

fn exact_matmul_on(ctx: &GpuContext) {
    let mut r = Rng(77);
    let cpu = CpuBackend::with_threads(2);
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ] {
        // Long rows (many blocks per lane chain) in both block sizes.
        let cols = if ty.block_size() == 256 {
            256 * 97
        } else {
            32 * 101
        };
        // 24 rows: multiples of 8 (repacked orders); 13: not; 72 with 70
        // tokens: more than one 64 x 64 tile of the cooperative-matrix kernel.
        for rows in [24usize, 13, 72] {
            // Row 1 tiny: its blocks' f16 scales are subnormal (the scale
            // conversion must keep them: `GpuContext::f16_unpack`).
            let vals: Vec<f32> = (0..rows * cols)
                .map(|i| r.uniform(1.0) * if i / cols == 1 { 2f32.powi(-12) } else { 1.0 })
                .collect();
            let (g, data) = gguf_with(ty, cols, rows, &vals);
            let w = cpu.upload_weight(&g, "w").unwrap();
            // Tiny parts: several dispatches per matrix.
            let part = ty.row_bytes(cols as u64).unwrap() * 5;
            let gw = ctx
                .upload_matrix_split(ty, rows as u64, cols as u64, &data, part)
                .unwrap();
            let toks: &[usize] = if rows == 72 {
                &[70]
            } else {
                &[1, 2, 4, 7, 9, 17, 22]
            };
            for &n_tok in toks {
                let x: Vec<f32> = (0..n_tok * cols)
                    .map(|i| r.uniform(if i % 7 == 0 { 9.0 } else { 1.5 }))
                    .collect();
                let mut cx = cpu.alloc(x.len()).unwrap();
                cpu.write(&mut cx, 0, &x).unwrap();
                let mut cy = cpu.alloc(n_tok * rows).unwrap();
                cpu.matmul(&w, &cx, &mut cy, n_tok).unwrap();
                let mut want = vec![0f32; n_tok * rows];
                cpu.read(&cy, 0, &mut want).unwrap();

                let gx = ctx.upload_f32(&x).unwrap();
                let xq = ctx
                    .zeros(zeta_wgpu::q8_stride(cols) * n_tok, GpuDType::U32)
                    .unwrap();
                let gy = ctx.upload_f32(&vec![f32::NAN; n_tok * rows]).unwrap();
                let mut b = ctx.batch();
                b.pack_q8_rows(&gx, &xq, cols, n_tok, Q8Mode::of(ty))
                    .unwrap();
                b.matmul_exact(&gw, &xq, &gy, n_tok as u32, false).unwrap();
                b.submit().unwrap();
                let got = ctx.read_f32(&gy).unwrap();
                let bad = bit_diffs(&got, &want);
                assert_eq!(
                    bad,
                    0,
                    "{ty} rows {rows} tokens {n_tok}: {bad} differ, e.g. {:?} vs {:?}",
                    &got[..4.min(got.len())],
                    &want[..4.min(want.len())]
                );
                if n_tok == 1 {
                    exact_f32_matches(ctx, ty, &gw, &gx, &xq, &want);
                }
            }
        }
    }
}

/// The Q8_K pack inside `matmul_exact_f32` finds each 256-block's largest
/// |x| wherever it sits in the block (the rest of the block is smaller),
/// with ties of opposite signs far apart, within a vec4 and in neighbouring
/// vec4s, and a block of zeros; the CPU's bits.
/// (Which of two tied opposite values sets the sign is not observable: it
/// flips every quant and d together.)
#[test]
fn exact_f32_pack_finds_each_blocks_max() {
    let Some(ctx) = ctx() else { return };
    if !ctx.exact_sg() {
        return;
    }
    let mut r = Rng(5);
    let cpu = CpuBackend::with_threads(2);
    let (rows, cols) = (9usize, 256 * 5);
    for ty in [GgmlType::Q4_K, GgmlType::Q6_K] {
        let vals: Vec<f32> = (0..rows * cols).map(|_| r.uniform(1.0)).collect();
        let (g, data) = gguf_with(ty, cols, rows, &vals);
        let w = cpu.upload_weight(&g, "w").unwrap();
        let gw = ctx
            .upload_matrix_split(ty, rows as u64, cols as u64, &data, 1 << 20)
            .unwrap();
        let mut x: Vec<f32> = (0..cols).map(|_| r.uniform(0.9)).collect();
        // Block 0: -3 before +3, 195 elements (48 vec4s) apart.
        x[5] = -3.0;
        x[200] = 3.0;
        // Block 1: a tie inside one vec4, then a later one.
        x[256 + 130] = 3.0;
        x[256 + 131] = -3.0;
        x[256 + 250] = -3.0;
        // Block 2: +2 before -2 in neighbouring vec4s.
        x[512 + 63] = 2.0;
        x[512 + 64] = -2.0;
        // Block 3: zeros.
        x[768..1024].fill(0.0);
        let mut cx = cpu.alloc(cols).unwrap();
        cpu.write(&mut cx, 0, &x).unwrap();
        let mut cy = cpu.alloc(rows).unwrap();
        cpu.matmul(&w, &cx, &mut cy, 1).unwrap();
        let mut want = vec![0f32; rows];
        cpu.read(&cy, 0, &mut want).unwrap();
        let gx = ctx.upload_f32(&x).unwrap();
        let xq = ctx
            .zeros(zeta_wgpu::q8_stride(cols), GpuDType::U32)
            .unwrap();
        let mut b = ctx.batch();
        b.pack_q8_rows(&gx, &xq, cols, 1, Q8Mode::of(ty)).unwrap();
        b.submit().unwrap();
        exact_f32_matches(&ctx, ty, &gw, &gx, &xq, &want);
    }
}

/// `matmul_exact_f32` (one token; the kernel packs its f32 input itself)
/// gives `pack_q8_rows` + `matmul_exact`'s bits (`want`, the CPU's), and
/// accumulates like it; taken by exactly the Q4_K and Q6_K matrices where
/// the device has the subgroup exact kernels.
fn exact_f32_matches(
    ctx: &GpuContext,
    ty: GgmlType,
    w: &zeta_wgpu::QuantMatrix,
    x: &zeta_wgpu::GpuTensor,
    xq: &zeta_wgpu::GpuTensor,
    want: &[f32],
) {
    let mut b = ctx.batch();
    let takes = ctx.exact_sg() && matches!(ty, GgmlType::Q4_K | GgmlType::Q6_K);
    assert_eq!(b.can_matmul_exact_f32(w), takes, "{ty}");
    if !takes {
        assert!(b.matmul_exact_f32(w, x, x, false).is_err());
        return;
    }
    let rows = want.len();
    let y0: Vec<f32> = (0..rows).map(|i| i as f32 * 0.37 - 2.0).collect();
    let gy = ctx.upload_f32(&vec![f32::NAN; rows]).unwrap();
    let (ga, gb) = (ctx.upload_f32(&y0).unwrap(), ctx.upload_f32(&y0).unwrap());
    b.matmul_exact_f32(w, x, &gy, false).unwrap();
    b.matmul_exact_f32(w, x, &ga, true).unwrap();
    b.matmul_exact(w, xq, &gb, 1, true).unwrap();
    b.submit().unwrap();
    let got = ctx.read_f32(&gy).unwrap();
    assert_eq!(bit_diffs(&got, want), 0, "{ty} f32 input, rows {rows}");
    let (a, e) = (ctx.read_f32(&ga).unwrap(), ctx.read_f32(&gb).unwrap());
    assert_eq!(
        bit_diffs(&a, &e),
        0,
        "{ty} f32 input accumulated, rows {rows}"
    );
}

/// RMSNorm (rmsnorm.wgsl) against `CpuBackend::rms_norm`, bit for bit: the
/// float-float Σx² must keep its low word (exact.wgsl's `keep` guards; without
/// them lavapipe's compiler folds the error terms away and a few rows' scale
/// is an ulp or two off).
#[test]
fn rms_norm_equals_cpu_bit_for_bit() {
    let Some(ctx) = ctx() else { return };
    let gpu = zeta_wgpu::GpuBackend::with_context(Arc::new(ctx));
    let cpu = CpuBackend::with_threads(1);
    let mut r = Rng(5);
    for cols in [576usize, 640, 2048, 100] {
        let wv: Vec<f32> = (0..cols).map(|_| 1.0 + r.uniform(0.5)).collect();
        let mut wr = GgufWriter::new();
        wr.add_kv("general.architecture", Value::String("test".into()));
        wr.add_tensor("w", &[cols as u64], GgmlType::F32, bytemuck_f32(&wv))
            .unwrap();
        let mut bytes = Vec::new();
        wr.write_to(&mut bytes).unwrap();
        let g = Arc::new(Gguf::from_bytes(bytes).unwrap());
        let (cw, gw) = (
            cpu.upload_weight(&g, "w").unwrap(),
            gpu.upload_weight(&g, "w").unwrap(),
        );
        for n_rows in [1usize, 5] {
            let x: Vec<f32> = (0..n_rows * cols)
                .map(|i| r.uniform(if i % 13 == 0 { 30.0 } else { 0.7 }))
                .collect();
            let want = norm_with(&cpu, &cw, &x, n_rows);
            let got = norm_with(&gpu, &gw, &x, n_rows);
            let bad: Vec<usize> = (0..x.len())
                .filter(|&i| got[i].to_bits() != want[i].to_bits())
                .collect();
            assert!(
                bad.is_empty(),
                "cols {cols} rows {n_rows}: {} differ, first {:?}: {} vs {}",
                bad.len(),
                bad.first(),
                got[bad[0]],
                want[bad[0]]
            );
        }
    }
}

/// `be.rms_norm` of the `n_rows` rows of x with weight w (eps 1e-6).
fn norm_with<B: Backend>(be: &B, w: &B::Weight, x: &[f32], n_rows: usize) -> Vec<f32> {
    let mut a = be.alloc(x.len()).unwrap();
    be.write(&mut a, 0, x).unwrap();
    let mut o = be.alloc(x.len()).unwrap();
    be.rms_norm(&a, w, &mut o, n_rows, 1e-6).unwrap();
    let mut v = vec![0f32; x.len()];
    be.read(&o, 0, &mut v).unwrap();
    v
}

fn bytemuck_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}

/// A weight group of `ty` matrices with `rows` rows of `cols` uniform
/// random values each, uploaded as one buffer.
fn random_group(
    ctx: &GpuContext,
    r: &mut Rng,
    ty: GgmlType,
    cols: usize,
    rows: &[usize],
) -> Vec<zeta_wgpu::QuantMatrix> {
    let bytes: Vec<Vec<u8>> = rows
        .iter()
        .map(|&n| {
            let vals: Vec<f32> = (0..n * cols).map(|_| r.uniform(1.0)).collect();
            gguf_with(ty, cols, n, &vals).1
        })
        .collect();
    let group: Vec<(GgmlType, u64, u64, &[u8])> = rows
        .iter()
        .zip(&bytes)
        .map(|(&n, b)| (ty, n as u64, cols as u64, b.as_slice()))
        .collect();
    ctx.upload_group(&group).unwrap()
}

/// How many of the pairs of `a` and `b` (up to the shorter length) differ
/// in their bits.
fn bit_diffs(a: &[f32], b: &[f32]) -> usize {
    a.iter()
        .zip(b)
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count()
}

/// `matmul_exact_multi` (a weight group's 2-3 matrices in one dispatch,
/// one token) gives every member the bits of `matmul_exact` on it alone,
/// i.e. the CPU's: the lane and the one-chain (repacked Q4_K gemv) orders.
#[test]
fn exact_weight_group_equals_single_matrices() {
    let Some(ctx) = ctx() else { return };
    let mut r = Rng(91);
    for (ty, cols, rows) in [
        (GgmlType::Q4_0, 32 * 37, &[24usize, 8, 8][..]),
        (GgmlType::Q4_1, 576, &[37, 13, 13][..]),
        (GgmlType::Q5_0, 640, &[29, 7][..]),
        (GgmlType::Q8_0, 32 * 13, &[11, 5, 5][..]),
        (GgmlType::Q4_K, 256 * 9, &[40, 16][..]),
        (GgmlType::Q4_K, 256 * 3, &[19, 5, 3][..]),
        (GgmlType::Q6_K, 256 * 5, &[9, 9][..]),
    ] {
        let ms = random_group(&ctx, &mut r, ty, cols, rows);
        let refs: Vec<&zeta_wgpu::QuantMatrix> = ms.iter().collect();
        let x: Vec<f32> = (0..cols).map(|_| r.uniform(2.0)).collect();
        let gx = ctx.upload_f32(&x).unwrap();
        let xq = ctx
            .zeros(zeta_wgpu::q8_stride(cols), GpuDType::U32)
            .unwrap();
        let nan = |n: usize| ctx.upload_f32(&vec![f32::NAN; n]).unwrap();
        let multi: Vec<_> = rows.iter().map(|&n| nan(n)).collect();
        let single: Vec<_> = rows.iter().map(|&n| nan(n)).collect();
        let dummy = nan(4);
        let mut b = ctx.batch();
        assert!(b.can_matmul_exact_multi(&refs), "{ty}: group not taken");
        b.pack_q8_rows(&gx, &xq, cols, 1, Q8Mode::of(ty)).unwrap();
        let ys: Vec<&zeta_wgpu::GpuTensor> = multi.iter().collect();
        b.matmul_exact_multi(&refs, &xq, &ys, &dummy).unwrap();
        for (m, y) in ms.iter().zip(&single) {
            b.matmul_exact(m, &xq, y, 1, false).unwrap();
        }
        b.submit().unwrap();
        for (i, (a, s)) in multi.iter().zip(&single).enumerate() {
            let (a, s) = (ctx.read_f32(a).unwrap(), ctx.read_f32(s).unwrap());
            assert!(
                s.iter().all(|v| v.is_finite()),
                "{ty} member {i}: unwritten"
            );
            let bad = bit_diffs(&a, &s);
            assert_eq!(bad, 0, "{ty} member {i} of {rows:?}: {bad} differ");
        }
    }
}

/// `matmul_exact_multi_rope` (the Q/K/V group with RoPE and the cache write
/// as its epilogue) gives the bits of `matmul_exact_multi` followed by
/// `rope_store_kv`: the rotated q, and the caches word for word (only row
/// `pos` written), with partly rotated heads (n_rot < head_dim), for the
/// matmul_exact_tr and matmul_exact_sg groups; it refuses the NeoX order,
/// missing tables and groups of two.
#[test]
fn exact_qkv_rope_group_equals_separate_ops() {
    use zeta_wgpu::{RopeMode, RopeParams};
    let Some(ctx) = ctx() else { return };
    if !ctx.exact_sg() {
        return;
    }
    let mut r = Rng(57);
    // (type, cols, n_heads, n_kv, head_dim, head_dim_v, n_rot)
    for (ty, cols, nh, nkv, hd, hdv, n_rot) in [
        (GgmlType::Q4_0, 32 * 9, 4u32, 2u32, 16u32, 16u32, 16u32),
        (GgmlType::Q4_1, 576, 3, 1, 64, 64, 48),
        (GgmlType::Q5_0, 640, 2, 1, 32, 8, 32),
        (GgmlType::Q8_0, 32 * 5, 6, 3, 8, 12, 4),
        (GgmlType::Q4_K, 256 * 3, 4, 2, 16, 16, 16),
        (GgmlType::Q4_K, 256 * 2, 3, 1, 6, 6, 6),
        (GgmlType::Q6_K, 256 * 2, 2, 1, 32, 32, 24),
    ] {
        let rows = [
            (nh * hd) as usize,
            (nkv * hd) as usize,
            (nkv * hdv) as usize,
        ];
        let ms = random_group(&ctx, &mut r, ty, cols, &rows);
        let refs: Vec<&zeta_wgpu::QuantMatrix> = ms.iter().collect();
        assert!(ctx.can_matmul_exact_multi_rope(&refs), "{ty}: not taken");
        let x: Vec<f32> = (0..cols).map(|_| r.uniform(2.0)).collect();
        let gx = ctx.upload_f32(&x).unwrap();
        let xq = ctx
            .zeros(zeta_wgpu::q8_stride(cols), GpuDType::U32)
            .unwrap();
        let pos = 5u32;
        let n_pos = 8usize;
        let table: Vec<f32> = (0..n_pos * n_rot as usize)
            .map(|_| r.uniform(1.0))
            .collect();
        let table = ctx.upload_f32(&table).unwrap();
        let p = RopeParams {
            head_dim: hd,
            n_heads: nh,
            n_tokens: 1,
            n_rot,
            mode: RopeMode::Normal,
            freq_base: 10000.0,
            freq_scale: 1.0,
        };
        let nan = |n: usize| ctx.upload_f32(&vec![f32::NAN; n]).unwrap();
        let (q1, k1, v1, q2) = (nan(rows[0]), nan(rows[1]), nan(rows[2]), nan(rows[0]));
        let dummy = nan(4);
        let cache = |n: usize| ctx.zeros(n_pos * n, GpuDType::F16).unwrap();
        let (kc1, vc1, kc2, vc2) = (
            cache(rows[1]),
            cache(rows[2]),
            cache(rows[1]),
            cache(rows[2]),
        );
        let mut b = ctx.batch();
        b.pack_q8_rows(&gx, &xq, cols, 1, Q8Mode::of(ty)).unwrap();
        b.matmul_exact_multi(&refs, &xq, &[&q1, &k1, &v1], &dummy)
            .unwrap();
        b.set_rope_table(Some(table.clone()));
        b.rope_store_kv(
            &q1, &k1, &v1, &kc1, &vc1, pos, &p, nkv, hdv, None, 1.0, None,
        )
        .unwrap();
        b.matmul_exact_multi_rope(&refs, &xq, &q2, &kc2, &vc2, pos, &p, nkv, hdv)
            .unwrap();
        // Refused: the NeoX order, and (below) no table.
        let neox = RopeParams {
            mode: RopeMode::Neox,
            ..p
        };
        assert!(
            b.matmul_exact_multi_rope(&refs, &xq, &q2, &kc2, &vc2, pos, &neox, nkv, hdv)
                .is_err()
        );
        b.set_rope_table(None);
        assert!(
            b.matmul_exact_multi_rope(&refs, &xq, &q2, &kc2, &vc2, pos, &p, nkv, hdv)
                .is_err()
        );
        b.submit().unwrap();
        let (a, e) = (ctx.read_f32(&q1).unwrap(), ctx.read_f32(&q2).unwrap());
        assert!(a.iter().all(|v| v.is_finite()), "{ty}: q unwritten");
        let bad = bit_diffs(&a, &e);
        assert_eq!(bad, 0, "{ty}: {bad} of q differ");
        for (name, c1, c2) in [("k", &kc1, &kc2), ("v", &vc1, &vc2)] {
            let (a, e) = (ctx.read_raw(c1).unwrap(), ctx.read_raw(c2).unwrap());
            assert!(a.iter().any(|&w| w != 0), "{ty}: {name} cache unwritten");
            assert_eq!(a, e, "{ty}: {name} caches differ");
        }
    }
    // Two matrices are not a Q/K/V group.
    let ms = random_group(&ctx, &mut r, GgmlType::Q4_0, 64, &[8, 8]);
    let refs: Vec<&zeta_wgpu::QuantMatrix> = ms.iter().collect();
    assert!(ctx.can_matmul_exact_multi(&refs));
    assert!(!ctx.can_matmul_exact_multi_rope(&refs));
}

/// The weight-group kernels that stage the RMSNorm of their input in every
/// workgroup (`rms_norm_matmul_exact_multi`, `..._rope`: matmul_exact_tr.wgsl
/// `*_norm`) give the bits of `rms_norm_pack_q8` followed by the group op:
/// every output, the normalised row and (RoPE) both caches, over rows of
/// one to several staging rounds (296 and 1024 vec4s a row); rows over
/// 8192 columns and the subgroup types are refused.
#[test]
fn exact_norm_staged_group_equals_norm_then_group() {
    use zeta_wgpu::{GroupNorm, RopeMode, RopeParams};
    let Some(ctx) = ctx() else { return };
    if !ctx.exact_sg() {
        return;
    }
    let mut r = Rng(73);
    let eps = 1e-5f32;
    let nan = |n: usize| ctx.upload_f32(&vec![f32::NAN; n]).unwrap();
    let same = |what: &str, a: &zeta_wgpu::GpuTensor, e: &zeta_wgpu::GpuTensor| {
        let (a, e) = (ctx.read_f32(a).unwrap(), ctx.read_f32(e).unwrap());
        assert!(a.iter().all(|v| v.is_finite()), "{what}: unwritten");
        let bad = bit_diffs(&a, &e);
        assert_eq!(bad, 0, "{what}: {bad} of {} differ", a.len());
    };
    // (type, cols, rows of the group; three rows: also as a Q/K/V group of
    // heads of 8, one kv head)
    for (ty, cols, rows) in [
        (GgmlType::Q4_0, 32 * 37, &[16usize, 8, 8][..]),
        (GgmlType::Q4_1, 4096, &[24, 8, 8][..]),
        (GgmlType::Q5_0, 32 * 9, &[13, 7][..]),
        (GgmlType::Q8_0, 640, &[16, 8, 8][..]),
    ] {
        let ms = random_group(&ctx, &mut r, ty, cols, rows);
        let refs: Vec<&zeta_wgpu::QuantMatrix> = ms.iter().collect();
        assert!(
            ctx.can_rms_norm_matmul_exact_multi(&refs),
            "{ty}: not taken"
        );
        // Residual-stream-like values and a norm weight around 1.
        let x: Vec<f32> = (0..cols).map(|_| r.uniform(3.0)).collect();
        let w: Vec<f32> = (0..cols).map(|_| 1.0 + r.uniform(0.5)).collect();
        let (gx, gw) = (ctx.upload_f32(&x).unwrap(), ctx.upload_f32(&w).unwrap());
        let xq = || {
            ctx.zeros(zeta_wgpu::q8_stride(cols), GpuDType::U32)
                .unwrap()
        };
        let (xq1, xq2) = (xq(), xq());
        let (xb1, xb2) = (nan(cols), nan(cols));
        let y1: Vec<_> = rows.iter().map(|&n| nan(n)).collect();
        let y2: Vec<_> = rows.iter().map(|&n| nan(n)).collect();
        let dummy = nan(4);
        let mode = Q8Mode::of(ty);
        let norm = GroupNorm {
            x: &gx,
            w: &gw,
            xb: &xb2,
            eps,
        };
        let mut b = ctx.batch();
        b.rms_norm_pack_q8(&gx, &gw, &xb1, &xq1, cols as u32, eps, mode)
            .unwrap();
        b.matmul_exact_multi(&refs, &xq1, &y1.iter().collect::<Vec<_>>(), &dummy)
            .unwrap();
        b.rms_norm_matmul_exact_multi(&norm, &refs, &xq2, &y2.iter().collect::<Vec<_>>(), &dummy)
            .unwrap();
        // The normalised row must not alias the inputs.
        let bad_norm = GroupNorm { xb: &gx, ..norm };
        assert!(
            b.rms_norm_matmul_exact_multi(
                &bad_norm,
                &refs,
                &xq2,
                &y2.iter().collect::<Vec<_>>(),
                &dummy
            )
            .is_err()
        );
        b.submit().unwrap();
        same(&format!("{ty} xb"), &xb2, &xb1);
        for (i, (a, e)) in y2.iter().zip(&y1).enumerate() {
            same(&format!("{ty} member {i}"), a, e);
        }
        if rows.len() != 3 {
            continue;
        }
        // As a Q/K/V group with RoPE (heads of 8: n_heads = rows[0] / 8).
        let (hd, pos, n_pos) = (8u32, 3u32, 4usize);
        let p = RopeParams {
            head_dim: hd,
            n_heads: rows[0] as u32 / hd,
            n_tokens: 1,
            n_rot: hd,
            mode: RopeMode::Normal,
            freq_base: 10000.0,
            freq_scale: 1.0,
        };
        let n_kv = rows[1] as u32 / hd;
        let table: Vec<f32> = (0..n_pos * hd as usize).map(|_| r.uniform(1.0)).collect();
        let table = ctx.upload_f32(&table).unwrap();
        let cache = |n: usize| ctx.zeros(n_pos * n, GpuDType::F16).unwrap();
        let (kc1, vc1, kc2, vc2) = (
            cache(rows[1]),
            cache(rows[2]),
            cache(rows[1]),
            cache(rows[2]),
        );
        let (q1, q2, xb3) = (nan(rows[0]), nan(rows[0]), nan(cols));
        let norm = GroupNorm { xb: &xb3, ..norm };
        let mut b = ctx.batch();
        b.set_rope_table(Some(table));
        b.rms_norm_pack_q8(&gx, &gw, &xb1, &xq1, cols as u32, eps, mode)
            .unwrap();
        b.matmul_exact_multi_rope(&refs, &xq1, &q1, &kc1, &vc1, pos, &p, n_kv, hd)
            .unwrap();
        b.rms_norm_matmul_exact_multi_rope(&norm, &refs, &xq2, &q2, &kc2, &vc2, pos, &p, n_kv, hd)
            .unwrap();
        b.submit().unwrap();
        same(&format!("{ty} rope xb"), &xb3, &xb1);
        same(&format!("{ty} rope q"), &q2, &q1);
        for (name, c1, c2) in [("k", &kc1, &kc2), ("v", &vc1, &vc2)] {
            let (a, e) = (ctx.read_raw(c2).unwrap(), ctx.read_raw(c1).unwrap());
            assert!(a.iter().any(|&w| w != 0), "{ty}: {name} cache unwritten");
            assert_eq!(a, e, "{ty}: {name} caches differ");
        }
    }
    // Refused: rows over 8192 columns, and the subgroup kernels' types.
    for (ty, cols) in [(GgmlType::Q4_0, 8192 + 32), (GgmlType::Q4_K, 256)] {
        let ms = random_group(&ctx, &mut r, ty, cols, &[8, 8]);
        let refs: Vec<&zeta_wgpu::QuantMatrix> = ms.iter().collect();
        assert!(ctx.can_matmul_exact_multi(&refs), "{ty} {cols}: no group");
        assert!(
            !ctx.can_rms_norm_matmul_exact_multi(&refs),
            "{ty} {cols}: taken"
        );
    }
}

/// `attention` of `n_q` queries at positions `pos0..` over an f16 cache of
/// the first `pos0 + n_q` keys, on backend `be`.
fn attention_with<B: Backend>(
    be: &B,
    p: &zeta_tensor::AttnParams,
    q: &[f32],
    k: &[f32],
    v: &[f32],
) -> Vec<f32> {
    let n_kv = p.pos0 + p.n_tokens;
    let (kd, vd) = (p.n_head_kv * p.head_dim_k, p.n_head_kv * p.head_dim_v);
    let (mut kb, mut vb) = (be.alloc(k.len()).unwrap(), be.alloc(v.len()).unwrap());
    be.write(&mut kb, 0, k).unwrap();
    be.write(&mut vb, 0, v).unwrap();
    let (mut kc, mut vc) = (be.alloc_kv(k.len()).unwrap(), be.alloc_kv(v.len()).unwrap());
    be.store_kv(&kb, &mut kc, n_kv, kd, 0).unwrap();
    be.store_kv(&vb, &mut vc, n_kv, vd, 0).unwrap();
    let mut qb = be.alloc(q.len()).unwrap();
    be.write(&mut qb, 0, q).unwrap();
    let n_out = p.n_tokens * p.n_head * p.head_dim_v;
    let mut o = be.alloc(n_out).unwrap();
    be.attention(&qb, &kc, &vc, &mut o, p).unwrap();
    let mut r = vec![0f32; n_out];
    be.read(&o, 0, &mut r).unwrap();
    r
}

/// Exact-mode attention (attn_exact.wgsl: `scores`, or for batches with
/// head_dim <= 256 in 16-element steps `scores_rows` + `softmax`, then
/// `kqv_block`; for one query `scores_dec`, then `softmax_kqv` (the softmax
/// fused; value heads a multiple of 32) or `softmax` + `kqv`) gives the CPU
/// backend's bits: GQA,
/// sliding windows that cut the first 16-key group, head sizes with and
/// without the 16-lane orders, value heads of another size.
#[test]
fn exact_attention_equals_cpu_bit_for_bit() {
    let Some(ctx) = ctx() else { return };
    let gpu = zeta_wgpu::GpuBackend::with_context(Arc::new(ctx));
    let cpu = CpuBackend::with_threads(2);
    let mut r = Rng(7);
    // (n_head, n_head_kv, head_dim, head_dim_v, pos0, n_q, window, q's
    // range): the larger ranges give sharp softmaxes whose f16
    // probabilities turn on the scores' last bits (a change of the KQ lane
    // order fails those cases).
    for (nh, nkv, hd, hdv, pos0, n_q, window, q_amp) in [
        (
            4usize, 2usize, 64usize, 64usize, 0usize, 37usize, None, 2.0f32,
        ),
        (4, 2, 64, 64, 70, 1, None, 2.0),
        (2, 1, 40, 24, 30, 5, Some(13), 2.0),
        (2, 2, 128, 128, 3, 20, Some(9), 2.0),
        (3, 1, 64, 32, 150, 1, Some(37), 2.0),
        (2, 1, 80, 80, 0, 300, None, 2.0),
        (2, 1, 256, 256, 5, 18, None, 2.0),
        (8, 2, 16, 16, 40, 33, Some(21), 2.0),
        (4, 2, 64, 64, 0, 100, None, 12.0),
        (2, 1, 128, 128, 20, 60, None, 12.0),
        (4, 1, 256, 256, 3, 45, Some(30), 12.0),
        (2, 2, 192, 64, 0, 21, None, 2.0),
        (2, 1, 288, 288, 2, 9, None, 2.0),
        // One query (`scores_dec` + `softmax_kqv`; `kqv` where head_dim_v
        // is no multiple of 32): Gemma 3's heads with a window, a tail past
        // the 64-element steps, head_dim 288, rows of 2^k keys and one more
        // (the reduction trees' sizes), long caches (one query has few
        // probabilities: thousands of keys make a changed KQ lane order
        // fail).
        (4, 1, 256, 256, 200, 1, Some(100), 12.0),
        (2, 1, 80, 80, 33, 1, None, 12.0),
        (2, 2, 288, 288, 17, 1, None, 2.0),
        (4, 2, 128, 128, 511, 1, None, 12.0),
        (4, 2, 64, 64, 512, 1, Some(600), 12.0),
        (8, 4, 64, 64, 1000, 1, None, 12.0),
        (8, 2, 128, 128, 3000, 1, None, 4.0),
        (4, 1, 256, 256, 3000, 1, None, 4.0),
    ] {
        let p = zeta_tensor::AttnParams {
            n_tokens: n_q,
            pos0,
            n_head: nh,
            n_head_kv: nkv,
            head_dim_k: hd,
            head_dim_v: hdv,
            scale: 1.0 / (hd as f32).sqrt(),
            window,
        };
        let n_kv = pos0 + n_q;
        let mut vals = |n: usize, s: f32| (0..n).map(|_| r.uniform(s)).collect::<Vec<f32>>();
        let q = vals(n_q * nh * hd, q_amp);
        let k = vals(n_kv * nkv * hd, 2.0);
        let v = vals(n_kv * nkv * hdv, 1.0);
        let want = attention_with(&cpu, &p, &q, &k, &v);
        let got = attention_with(&gpu, &p, &q, &k, &v);
        let bad = bit_diffs(&want, &got);
        assert_eq!(
            bad,
            0,
            "heads {nh}/{nkv} dims {hd}/{hdv} pos0 {pos0} queries {n_q} window {window:?}: \
             {bad} of {} differ",
            want.len()
        );
    }
}
