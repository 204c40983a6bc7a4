//! End to end: a small random llama-style block decoded for several steps
//! entirely on the GPU (one batch per step: RMSNorm → Q/K/V matvec → NeoX RoPE
//! → f16 KV-cache store → attention → output matvec → residual → SwiGLU FFN →
//! logits → argmax → embedding of the chosen token for the next step, the
//! token id never leaving the GPU), checked against an f64 CPU reference built
//! on `zeta_quant::dequantize`. It exercises op ordering inside one batch.
#![allow(clippy::unwrap_used)]

use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use zeta_quant::{GgmlType, dequantize, quantize};
use zeta_wgpu::{
    AttnParams, GluOp, GpuContext, GpuDType, QuantMatrix, RopeMode, RopeParams, WgpuError,
};

const D: usize = 256;
const HD: usize = 64;
const NH: usize = 4;
const NKV: usize = 2;
const FF: usize = 512;
const VOCAB: usize = 300;
const STEPS: usize = 5;
const EPS: f32 = 1e-6;
const BASE: f32 = 10000.0;

struct W {
    deq: Vec<f32>,
    gpu: QuantMatrix,
    rows: usize,
    cols: usize,
}

fn weight(ctx: &GpuContext, rng: &mut StdRng, ty: GgmlType, rows: usize, cols: usize) -> W {
    let f: Vec<f32> = (0..rows * cols)
        .map(|_| rng.gen_range(-1.0f32..1.0) / (cols as f32).sqrt())
        .collect();
    let mut bytes = vec![0u8; ty.row_bytes((rows * cols) as u64).unwrap() as usize];
    quantize(ty, &f, &mut bytes).unwrap();
    let mut deq = vec![0f32; rows * cols];
    dequantize(ty, &bytes, &mut deq).unwrap();
    // Split the weights that allow it, to mix split and unsplit parts.
    let row_bytes = ty.row_bytes(cols as u64).unwrap();
    let gpu = ctx
        .upload_matrix_split(
            ty,
            rows as u64,
            cols as u64,
            &bytes,
            row_bytes * (rows as u64 / 2 + 1),
        )
        .unwrap();
    W {
        deq,
        gpu,
        rows,
        cols,
    }
}

fn mv(w: &W, x: &[f64]) -> Vec<f64> {
    (0..w.rows)
        .map(|r| {
            (0..w.cols)
                .map(|c| w.deq[r * w.cols + c] as f64 * x[c])
                .sum()
        })
        .collect()
}

fn rms(x: &[f64], g: &[f32]) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let s = 1.0 / (ms + EPS as f64).sqrt();
    x.iter().zip(g).map(|(v, &g)| v * s * g as f64).collect()
}

fn rope(x: &mut [f64], heads: usize, pos: usize) {
    for h in 0..heads {
        for i in 0..HD / 2 {
            let th = pos as f64 * (BASE as f64).powf(-2.0 * i as f64 / HD as f64);
            let (a, b) = (h * HD + i, h * HD + i + HD / 2);
            let (x0, x1) = (x[a], x[b]);
            x[a] = x0 * th.cos() - x1 * th.sin();
            x[b] = x0 * th.sin() + x1 * th.cos();
        }
    }
}

#[test]
fn decode_block_on_gpu_matches_cpu() {
    let ctx = match GpuContext::new() {
        Ok(c) => c,
        Err(WgpuError::NoAdapter { .. }) => {
            assert_ne!(
                std::env::var("ZETA_REQUIRE_GPU").as_deref(),
                Ok("1"),
                "no GPU adapter"
            );
            println!("SKIP: no GPU adapter");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let mut rng = StdRng::seed_from_u64(42);
    let wq = weight(&ctx, &mut rng, GgmlType::Q4_K, NH * HD, D);
    let wk = weight(&ctx, &mut rng, GgmlType::Q8_0, NKV * HD, D);
    let wv = weight(&ctx, &mut rng, GgmlType::Q6_K, NKV * HD, D);
    let wo = weight(&ctx, &mut rng, GgmlType::Q5_0, D, NH * HD);
    let wg = weight(&ctx, &mut rng, GgmlType::Q4_0, FF, D);
    let wu = weight(&ctx, &mut rng, GgmlType::Q4_1, FF, D);
    let wd = weight(&ctx, &mut rng, GgmlType::Q5_K, D, FF);
    let wout = weight(&ctx, &mut rng, GgmlType::Q8_0, VOCAB, D); // tied: also the embedding table
    let n1: Vec<f32> = (0..D).map(|_| rng.gen_range(0.5f32..1.5)).collect();
    let n2: Vec<f32> = (0..D).map(|_| rng.gen_range(0.5f32..1.5)).collect();
    let (n1g, n2g) = (ctx.upload_f32(&n1).unwrap(), ctx.upload_f32(&n2).unwrap());

    let f = |n: usize| ctx.zeros(n, GpuDType::F32).unwrap();
    let (x, h, q, k, v, qr, att, o, x2, h2, g, u, dn, logits) = (
        f(D),
        f(D),
        f(NH * HD),
        f(NKV * HD),
        f(NKV * HD),
        f(NH * HD),
        f(NH * HD),
        f(D),
        f(D),
        f(D),
        f(FF),
        f(FF),
        f(D),
        f(VOCAB),
    );
    let kc = ctx.zeros(STEPS * NKV * HD, GpuDType::F16).unwrap();
    let vc = ctx.zeros(STEPS * NKV * HD, GpuDType::F16).unwrap();
    let tok = ctx.upload_u32(&[7]).unwrap();
    let pos_buf: Vec<_> = (0..STEPS as u32)
        .map(|p| ctx.upload_u32(&[p]).unwrap())
        .collect();

    let mut cpu_tok = 7usize;
    let mut kcache: Vec<Vec<f64>> = Vec::new();
    let mut vcache: Vec<Vec<f64>> = Vec::new();
    for (pos, pos_g) in pos_buf.iter().enumerate() {
        // ---- GPU step: one batch, nothing read back but the final token.
        let mut b = ctx.batch();
        b.embed(&wout.gpu, &tok, &x).unwrap();
        b.rms_norm(&x, &n1g, &h, 1, D as u32, EPS).unwrap();
        b.matvec(&wq.gpu, &h, &q).unwrap();
        b.matvec(&wk.gpu, &h, &k).unwrap();
        b.matvec(&wv.gpu, &h, &v).unwrap();
        let rp = |heads: usize| RopeParams {
            head_dim: HD as u32,
            n_heads: heads as u32,
            n_tokens: 1,
            n_rot: HD as u32,
            mode: RopeMode::Neox,
            freq_base: BASE,
            freq_scale: 1.0,
        };
        b.rope(&q, pos_g, &qr, &rp(NH)).unwrap();
        b.rope_inplace(&k, pos as u32, &rp(NKV), None).unwrap(); // k in place
        b.store(&k, NKV * HD, &kc, pos * NKV * HD).unwrap();
        b.store(&v, NKV * HD, &vc, pos * NKV * HD).unwrap();
        let ap = AttnParams {
            head_dim: HD as u32,
            head_dim_v: HD as u32,
            n_head: NH as u32,
            n_kv_head: NKV as u32,
            n_kv: pos as u32 + 1,
            window: 0,
            scale: 1.0 / (HD as f32).sqrt(),
            softcap: 0.0,
        };
        b.attention_decode(&qr, &kc, &vc, &att, &ap).unwrap();
        b.matvec(&wo.gpu, &att, &o).unwrap();
        b.add(&x, &o, &x2, D).unwrap();
        b.rms_norm(&x2, &n2g, &h2, 1, D as u32, EPS).unwrap();
        b.matvec(&wg.gpu, &h2, &g).unwrap();
        b.matvec(&wu.gpu, &h2, &u).unwrap();
        b.glu_inplace(&g, &u, FF, GluOp::SwiGlu).unwrap();
        b.matvec(&wd.gpu, &g, &dn).unwrap();
        b.add_inplace(&x2, &dn, D).unwrap(); // x2 becomes x3
        b.matvec(&wout.gpu, &x2, &logits).unwrap();
        b.argmax(&logits, VOCAB, &tok).unwrap();
        b.submit().unwrap();
        let gpu_logits = ctx.read_f32(&logits).unwrap();
        let gpu_tok = ctx.read_u32(&tok).unwrap()[0] as usize;

        // ---- CPU reference of the same step.
        let xr: Vec<f64> = (0..D).map(|c| wout.deq[cpu_tok * D + c] as f64).collect();
        let hr = rms(&xr, &n1);
        let mut qv = mv(&wq, &hr);
        let mut kv = mv(&wk, &hr);
        let vv = mv(&wv, &hr);
        rope(&mut qv, NH, pos);
        rope(&mut kv, NKV, pos);
        let r16 = |x: &[f64]| {
            x.iter()
                .map(|&v| f16::from_f64(v).to_f64())
                .collect::<Vec<_>>()
        };
        kcache.push(r16(&kv));
        vcache.push(r16(&vv));
        let mut attn = vec![0f64; NH * HD];
        for hh in 0..NH {
            let kvh = hh / (NH / NKV);
            let s: Vec<f64> = (0..=pos)
                .map(|t| {
                    (0..HD)
                        .map(|d| qv[hh * HD + d] * kcache[t][kvh * HD + d])
                        .sum::<f64>()
                        / (HD as f64).sqrt()
                })
                .collect();
            let m = s.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
            let sum: f64 = e.iter().sum();
            for d in 0..HD {
                attn[hh * HD + d] = (0..=pos)
                    .map(|t| e[t] * vcache[t][kvh * HD + d])
                    .sum::<f64>()
                    / sum;
            }
        }
        let ov = mv(&wo, &attn);
        let x2r: Vec<f64> = xr.iter().zip(&ov).map(|(a, b)| a + b).collect();
        let h2r = rms(&x2r, &n2);
        let gv = mv(&wg, &h2r);
        let uv = mv(&wu, &h2r);
        let ffv: Vec<f64> = gv
            .iter()
            .zip(&uv)
            .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
            .collect();
        let dv = mv(&wd, &ffv);
        let x3r: Vec<f64> = x2r.iter().zip(&dv).map(|(a, b)| a + b).collect();
        let lr = mv(&wout, &x3r);

        let mut num = 0.0;
        let mut den = 0.0;
        for (&gl, &rl) in gpu_logits.iter().zip(&lr) {
            assert!(gl.is_finite());
            num += (gl as f64 - rl).powi(2);
            den += rl * rl;
        }
        let e = num / den;
        let best = (0..VOCAB).fold(0, |b, i| if lr[i] > lr[b] { i } else { b });
        println!("step {pos}: token {gpu_tok} (cpu {best}) logits NMSE {e:.3e}");
        assert!(e <= 5e-4, "step {pos}: NMSE {e}");
        assert!(
            gpu_tok == best || lr[best] - lr[gpu_tok] < 1e-4,
            "step {pos}: {gpu_tok} vs {best}"
        );
        cpu_tok = gpu_tok; // follow the GPU's choice
    }
}
