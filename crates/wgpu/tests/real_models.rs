//! Real GGUF weights on the GPU: for each model in `$ZETA_MODELS` (default
//! `~/.cache/zeta/models`), the first tensor of every weight type goes through
//! matvec against `zeta_quant::dequantize`; Gemma 3's 262144×640 token table
//! (bigger than lavapipe's 128 MiB binding limit, so split) is checked through
//! embedding lookup and a full logits matvec + argmax.
//! Missing models print `SKIP` unless `ZETA_REQUIRE_MODELS=1`; no adapter
//! prints `SKIP` unless `ZETA_REQUIRE_GPU=1`.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use zeta_gguf::Gguf;
use zeta_quant::dequantize;
use zeta_wgpu::{GpuContext, WgpuError};

fn model(name: &str) -> Option<Gguf> {
    let dir = std::env::var_os("ZETA_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/zeta/models")
        });
    let path = dir.join(name);
    if !path.exists() {
        if std::env::var("ZETA_REQUIRE_MODELS").as_deref() == Ok("1") {
            panic!("ZETA_REQUIRE_MODELS=1 but {} is missing", path.display());
        }
        println!("SKIP: model {} not found", path.display());
        return None;
    }
    Some(Gguf::open(&path).unwrap())
}

fn ctx() -> Option<GpuContext> {
    match GpuContext::new() {
        Ok(c) => Some(c),
        Err(WgpuError::NoAdapter { .. }) => {
            if std::env::var("ZETA_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("ZETA_REQUIRE_GPU=1 but no GPU adapter was found");
            }
            println!("SKIP: no GPU adapter");
            None
        }
        Err(e) => panic!("GPU setup failed: {e}"),
    }
}

fn row_dot_ref(ty: zeta_gguf::GgmlType, row: &[u8], x: &[f32]) -> f64 {
    let mut w = vec![0f32; x.len()];
    dequantize(ty, row, &mut w).unwrap();
    w.iter().zip(x).map(|(&a, &b)| a as f64 * b as f64).sum()
}

fn nmse(got: &[f32], want: &[f64]) -> f64 {
    let mut num = 0.0;
    let mut den = 0.0;
    for (&g, &w) in got.iter().zip(want) {
        assert!(g.is_finite());
        num += (g as f64 - w).powi(2);
        den += w * w;
    }
    num / den
}

#[test]
fn matvec_on_real_tensors_of_every_type() {
    let Some(ctx) = ctx() else { return };
    for name in [
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "gemma-3-270m-q4_k_m.gguf",
    ] {
        let Some(g) = model(name) else { continue };
        let mut seen = Vec::new();
        for t in g.tensors() {
            if t.dims.len() != 2 || seen.contains(&t.ggml_type) || t.n_bytes > 64 << 20 {
                continue;
            }
            seen.push(t.ggml_type);
            let (n_cols, n_rows) = (t.dims[0] as usize, t.dims[1] as usize);
            let data = g.tensor_data(t);
            let m = ctx.upload_tensor(t, data).unwrap();
            let mut rng = StdRng::seed_from_u64(1);
            let x: Vec<f32> = (0..n_cols).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let row_bytes = t.ggml_type.row_bytes(n_cols as u64).unwrap() as usize;
            let want: Vec<f64> = (0..n_rows)
                .map(|r| row_dot_ref(t.ggml_type, &data[r * row_bytes..(r + 1) * row_bytes], &x))
                .collect();
            let xg = ctx.upload_f32(&x).unwrap();
            let y = ctx.upload_f32(&vec![f32::NAN; n_rows]).unwrap();
            let mut b = ctx.batch();
            b.matvec(&m, &xg, &y).unwrap();
            b.submit().unwrap();
            let e = nmse(&ctx.read_f32(&y).unwrap(), &want);
            println!(
                "{name}: {} {} [{n_rows}, {n_cols}] NMSE {e:.3e}",
                t.name,
                t.ggml_type.name()
            );
            assert!(e <= 1e-9, "{}: NMSE {e}", t.name);
        }
        assert!(!seen.is_empty());
    }
}

#[test]
fn gemma_token_table_is_split_and_correct() {
    let Some(ctx) = ctx() else { return };
    let Some(g) = model("gemma-3-270m-q4_k_m.gguf") else {
        return;
    };
    let t = g.tensor("token_embd.weight").unwrap();
    let data = g.tensor_data(t);
    let (n_cols, n_rows) = (t.dims[0] as usize, t.dims[1] as usize);
    let table = ctx.upload_tensor(t, data).unwrap();
    println!(
        "token_embd {} [{n_rows}, {n_cols}] {} bytes in {} parts (part limit {})",
        t.ggml_type.name(),
        data.len(),
        table.parts().len(),
        ctx.max_part_bytes()
    );
    if data.len() as u64 > ctx.max_part_bytes() {
        assert!(table.parts().len() >= 2);
    }
    let row_bytes = t.ggml_type.row_bytes(n_cols as u64).unwrap() as usize;

    // Embedding rows from both sides of every split.
    let mut ids: Vec<u32> = vec![0, 1, 2, (n_rows - 1) as u32];
    for p in table.parts() {
        ids.push(p.first_row as u32);
        if p.first_row > 0 {
            ids.push(p.first_row as u32 - 1);
        }
    }
    let idg = ctx.upload_u32(&ids).unwrap();
    let out = ctx.upload_f32(&vec![f32::NAN; ids.len() * n_cols]).unwrap();
    let mut b = ctx.batch();
    b.embed(&table, &idg, &out).unwrap();
    b.submit().unwrap();
    let got = ctx.read_f32(&out).unwrap();
    for (k, &id) in ids.iter().enumerate() {
        let mut want = vec![0f32; n_cols];
        let id = id as usize;
        dequantize(
            t.ggml_type,
            &data[id * row_bytes..(id + 1) * row_bytes],
            &mut want,
        )
        .unwrap();
        assert_eq!(&got[k * n_cols..(k + 1) * n_cols], &want[..], "row {id}");
    }

    // Tied-output logits over all 262144 rows, then argmax on the GPU.
    let mut rng = StdRng::seed_from_u64(2);
    let x: Vec<f32> = (0..n_cols).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    let want: Vec<f64> = (0..n_rows)
        .map(|r| row_dot_ref(t.ggml_type, &data[r * row_bytes..(r + 1) * row_bytes], &x))
        .collect();
    let xg = ctx.upload_f32(&x).unwrap();
    let logits = ctx.upload_f32(&vec![f32::NAN; n_rows]).unwrap();
    let mut b = ctx.batch();
    b.matvec(&table, &xg, &logits).unwrap();
    b.submit().unwrap();
    let got = ctx.read_f32(&logits).unwrap();
    let e = nmse(&got, &want);
    println!("logits matvec NMSE {e:.3e}");
    assert!(e <= 1e-9);
    let best = want
        .iter()
        .enumerate()
        .fold(0, |b, (i, &v)| if v > want[b] { i } else { b });
    let gpu_best = ctx.argmax_u32(&logits).unwrap() as usize;
    // Equal unless two logits are within f32 rounding of each other.
    assert!(
        gpu_best == best || (want[gpu_best] - want[best]).abs() < 1e-4,
        "{gpu_best} vs {best}"
    );
}

#[test]
fn whole_models_upload() {
    let Some(ctx) = ctx() else { return };
    for name in [
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "gemma-3-270m-q4_k_m.gguf",
    ] {
        let Some(g) = model(name) else { continue };
        let mut types = Vec::new();
        let mut gpu_bytes = 0u64;
        for t in g.tensors() {
            let m = ctx.upload_tensor(t, g.tensor_data(t)).unwrap();
            assert_eq!(m.n_rows() * m.row_bytes(), t.n_bytes, "{}", t.name);
            gpu_bytes += m.size_bytes();
            if !types.contains(&t.ggml_type) {
                types.push(t.ggml_type);
            }
        }
        let file_bytes: u64 = g.tensors().iter().map(|t| t.n_bytes).sum();
        assert!(gpu_bytes >= file_bytes && gpu_bytes < file_bytes + 4 * g.tensors().len() as u64);
        let n = ctx.precompile(&types).unwrap();
        println!(
            "{name}: {} tensors, {gpu_bytes} bytes on the GPU, {n} pipelines",
            g.tensors().len()
        );
        ctx.check().unwrap();
    }
}
