//! Rough GPU throughput check: matvec per weight type at model-like shapes,
//! decode attention, and one 16-token prefill matmul, timed by wall clock
//! over many dispatches in one batch. Prints the adapter and GB/s of weight
//! bytes read (decode is bandwidth-bound, so compare with the GPU's memory
//! bandwidth).
//!
//! Run: `cargo run --release -p zeta-wgpu --example gpu_bench [iterations]`
//! (`ZETA_ADAPTER=<name>` picks an adapter).

use std::time::Instant;

use zeta_wgpu::{AttnParams, GgmlType, GpuContext, GpuDType, WgpuError};

fn main() -> Result<(), WgpuError> {
    let iters: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let ctx = GpuContext::new()?;
    print!("{}", ctx.info());
    println!("subgroup reduction: {}", ctx.use_subgroups());

    // (type, rows, cols): Gemma-3-270M / SmolLM2 / 1B-class shapes.
    let shapes = [
        (GgmlType::Q8_0, 2048usize, 640usize),
        (GgmlType::Q4_K, 2048, 2048),
        (GgmlType::Q6_K, 2048, 2048),
        (GgmlType::Q4_0, 8192, 2048),
        (GgmlType::Q4_1, 1536, 576),
        (GgmlType::Q5_0, 1024, 640),
        (GgmlType::F16, 2048, 2048),
    ];
    for (ty, rows, cols) in shapes {
        let row_bytes = ty.row_bytes(cols as u64).unwrap_or(0) as usize;
        // Arbitrary bytes are fine for timing; keep f16 scales finite (0x3c3c).
        let bytes = vec![0x3cu8; rows * row_bytes];
        let w = ctx.upload_matrix(ty, rows as u64, cols as u64, &bytes)?;
        let x = ctx.upload_f32(&vec![0.5; cols])?;
        let y = ctx.zeros(rows, GpuDType::F32)?;
        let mut warm = ctx.batch();
        warm.matvec(&w, &x, &y)?;
        warm.submit()?;
        ctx.wait()?;
        let t = Instant::now();
        let mut b = ctx.batch();
        for _ in 0..iters {
            b.matvec(&w, &x, &y)?;
        }
        b.submit()?;
        ctx.wait()?;
        let s = t.elapsed().as_secs_f64() / iters as f64;
        let gbs = (rows * row_bytes) as f64 / s / 1e9;
        println!(
            "matvec {:<5} [{rows:>5}, {cols:>5}]  {:>9.1} us  {gbs:>7.2} GB/s",
            ty.name(),
            s * 1e6
        );
    }

    // Integer matvec (decode) at llama-8b shapes: the dispatches write the
    // same y, so each waits for the one before, as in a forward pass.
    for (ty, rows, cols) in [
        (GgmlType::Q4_0, 2048usize, 2048usize),
        (GgmlType::Q4_0, 2048, 5632),
        (GgmlType::Q4_0, 4096, 4096),
        (GgmlType::Q4_0, 14336, 4096),
        (GgmlType::Q4_0, 4096, 14336),
        (GgmlType::Q4_K, 4096, 4096),
        (GgmlType::Q4_K, 14336, 4096),
        (GgmlType::Q6_K, 4096, 14336),
    ] {
        let row_bytes = ty.row_bytes(cols as u64).unwrap_or(0) as usize;
        let w = ctx.upload_matrix(
            ty,
            rows as u64,
            cols as u64,
            &vec![0x3cu8; rows * row_bytes],
        )?;
        let x = ctx.upload_f32(&vec![0.5; cols])?;
        let xq = ctx.zeros(zeta_wgpu::q8_words(cols), GpuDType::U32)?;
        let y = ctx.zeros(rows, GpuDType::F32)?;
        let mut b = ctx.batch();
        b.pack_q8(&x, &xq, cols, zeta_wgpu::Q8Mode::of(ty))?;
        b.matvec_q8(&w, &xq, &y, false)?;
        b.submit()?;
        ctx.wait()?;
        let t = Instant::now();
        let mut b = ctx.batch();
        for _ in 0..iters {
            b.matvec_q8(&w, &xq, &y, false)?;
        }
        let recorded = t.elapsed().as_secs_f64();
        b.submit()?;
        let submitted = t.elapsed().as_secs_f64();
        ctx.wait()?;
        let s = t.elapsed().as_secs_f64() / iters as f64;
        let gbs = (rows * row_bytes) as f64 / s / 1e9;
        println!(
            "matvec_q8 {:<5} [{rows:>5}, {cols:>5}]  {:>9.1} us  {gbs:>7.2} GB/s  (host: record {:.1} us, submit {:.1} us a dispatch)",
            ty.name(),
            s * 1e6,
            recorded / iters as f64 * 1e6,
            (submitted - recorded) / iters as f64 * 1e6
        );
        // The same product in the CPU backend's float order (exact mode).
        let mut b = ctx.batch();
        b.matmul_exact(&w, &xq, &y, 1, false)?;
        b.submit()?;
        ctx.wait()?;
        let t = Instant::now();
        let mut b = ctx.batch();
        for _ in 0..iters {
            b.matmul_exact(&w, &xq, &y, 1, false)?;
        }
        b.submit()?;
        ctx.wait()?;
        let s = t.elapsed().as_secs_f64() / iters as f64;
        println!(
            "matmul_exact {:<5} [{rows:>5}, {cols:>5}]  {:>9.1} us  {:>7.2} GB/s",
            ty.name(),
            s * 1e6,
            (rows * row_bytes) as f64 / s / 1e9
        );
    }
    // The floor: a chain of tiny dependent dispatches.
    let v = ctx.upload_f32(&[1.0; 64])?;
    let mut b = ctx.batch();
    b.scale_inplace(&v, 1.0, 64)?;
    b.submit()?;
    ctx.wait()?;
    let t = Instant::now();
    let mut b = ctx.batch();
    for _ in 0..iters {
        b.scale_inplace(&v, 1.0, 64)?;
    }
    b.submit()?;
    ctx.wait()?;
    println!(
        "tiny dependent dispatch  {:.1} us",
        t.elapsed().as_secs_f64() / iters as f64 * 1e6
    );

    // Prefill: 16 tokens through a Q4_K [2048, 2048].
    let (rows, cols, n_tok) = (2048usize, 2048usize, 16u32);
    let ty = GgmlType::Q4_K;
    let w = ctx.upload_matrix(
        ty,
        rows as u64,
        cols as u64,
        &vec![0x3cu8; rows * ty.row_bytes(cols as u64).unwrap_or(0) as usize],
    )?;
    let x = ctx.upload_f32(&vec![0.5; cols * n_tok as usize])?;
    let y = ctx.zeros(rows * n_tok as usize, GpuDType::F32)?;
    let t = Instant::now();
    let mut b = ctx.batch();
    for _ in 0..iters {
        b.matmul(&w, &x, &y, n_tok)?;
    }
    b.submit()?;
    ctx.wait()?;
    let s = t.elapsed().as_secs_f64() / iters as f64;
    println!(
        "matmul q4_K [{rows}, {cols}] x {n_tok} tokens  {:.1} us  {:.1} GFLOP/s",
        s * 1e6,
        2.0 * (rows * cols) as f64 * n_tok as f64 / s / 1e9
    );

    // Decode attention: 8 heads / 2 kv heads, head_dim 128, f16 cache.
    for n_kv in [512u32, 4096] {
        let p = AttnParams {
            head_dim: 128,
            head_dim_v: 128,
            n_head: 8,
            n_kv_head: 2,
            n_kv,
            window: 0,
            scale: 0.088,
            softcap: 0.0,
        };
        let q = ctx.upload_f32(&vec![0.1; 8 * 128])?;
        let kv = ctx.upload_f16(&vec![half::f16::from_f32(0.01); n_kv as usize * 2 * 128])?;
        let out = ctx.zeros(8 * 128, GpuDType::F32)?;
        let t = Instant::now();
        let mut b = ctx.batch();
        for _ in 0..iters {
            b.attention_decode(&q, &kv, &kv, &out, &p)?;
        }
        b.submit()?;
        ctx.wait()?;
        let s = t.elapsed().as_secs_f64() / iters as f64;
        println!("attention decode n_kv {n_kv:>5}  {:.1} us", s * 1e6);
    }
    Ok(())
}
