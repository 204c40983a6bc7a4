//! Rough GPU throughput check: matvec per weight type at model-like shapes,
//! decode attention, and one 16-token prefill matmul, timed by wall clock
//! over many dispatches in one batch. Prints the adapter and GB/s of weight
//! bytes read (decode is bandwidth-bound, so compare with the GPU's memory
//! bandwidth). The decode kernels are also timed on the device (timestamps
//! around the batch's compute pass): "busy" is the GPU's time a dispatch,
//! the host's recording and submission left out.
//!
//! Run: `cargo run --release -p zeta-wgpu --example gpu_bench [iterations]`
//! (`ZETA_ADAPTER=<name>` picks an adapter).

use std::time::Instant;

use zeta_wgpu::{AttnParams, GgmlType, GpuBatch, GpuContext, GpuDType, WgpuError};

/// GPU time per dispatch (µs) of `iters` repetitions of `record` in one
/// compute pass, from the pass's timestamps; `None` without timestamp queries.
fn busy_us(
    ctx: &GpuContext,
    iters: usize,
    record: impl Fn(&mut GpuBatch<'_>) -> Result<(), WgpuError>,
) -> Result<Option<f64>, WgpuError> {
    let mut b = ctx.batch();
    if !b.enable_pass_timing() {
        return Ok(None);
    }
    for _ in 0..iters {
        record(&mut b)?;
    }
    let passes = b.submit_timed()?;
    let ns: f64 = passes.iter().map(|(_, ns)| ns).sum();
    Ok(Some(ns / 1e3 / iters as f64))
}

/// GPU time per repetition (µs) of each kernel `record` dispatches (one
/// timed pass per dispatch), as "entry point: µs" pairs.
fn per_kernel(
    ctx: &GpuContext,
    iters: usize,
    record: impl Fn(&mut GpuBatch<'_>) -> Result<(), WgpuError>,
) -> Result<String, WgpuError> {
    let mut b = ctx.batch();
    if !b.enable_timing() {
        return Ok(String::new());
    }
    for _ in 0..iters {
        record(&mut b)?;
    }
    let mut kinds: Vec<(String, f64)> = Vec::new();
    for (label, ns) in b.submit_timed()? {
        let kind = label.split('[').next().unwrap_or(&label).to_string();
        match kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some(e) => e.1 += ns,
            None => kinds.push((kind, ns)),
        }
    }
    Ok(kinds
        .iter()
        .map(|(k, ns)| format!("{k} {:.1} us", ns / 1e3 / iters as f64))
        .collect::<Vec<_>>()
        .join(", "))
}

/// Attention inputs: `n_q` queries of `n_head` heads over an f16 cache of
/// `n_kv` positions (`n_kv_head` heads), `head_dim` elements a head.
struct AttnCase {
    p: AttnParams,
    q: zeta_wgpu::GpuTensor,
    kv: zeta_wgpu::GpuTensor,
    out: zeta_wgpu::GpuTensor,
}

fn attn_case(
    ctx: &GpuContext,
    (n_head, n_kv_head, head_dim): (u32, u32, u32),
    n_q: u32,
    n_kv: u32,
) -> Result<AttnCase, WgpuError> {
    let p = AttnParams {
        head_dim,
        head_dim_v: head_dim,
        n_head,
        n_kv_head,
        n_kv,
        window: 0,
        scale: 1.0 / (head_dim as f32).sqrt(),
        softcap: 0.0,
    };
    let n = (n_q * n_head * head_dim) as usize;
    Ok(AttnCase {
        p,
        q: ctx.upload_f32(&vec![0.1; n])?,
        kv: ctx.upload_f16(&vec![
            half::f16::from_f32(0.01);
            (n_kv * n_kv_head * head_dim) as usize
        ])?,
        out: ctx.zeros(n, GpuDType::F32)?,
    })
}

fn fmt_busy(us: Option<f64>) -> String {
    us.map_or_else(|| "-".to_string(), |us| format!("{us:.1} us"))
}

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
        (GgmlType::Q4_1, 1536, 576),
        (GgmlType::Q8_0, 2048, 640),
        (GgmlType::Q5_0, 1024, 640),
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
        let busy = busy_us(&ctx, iters, |b| b.matvec_q8(&w, &xq, &y, false))?;
        println!(
            "matvec_q8 {:<5} [{rows:>5}, {cols:>5}]  {:>9.1} us  {gbs:>7.2} GB/s  (host: record {:.1} us, submit {:.1} us a dispatch; GPU busy {})",
            ty.name(),
            s * 1e6,
            recorded / iters as f64 * 1e6,
            (submitted - recorded) / iters as f64 * 1e6,
            fmt_busy(busy)
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
        let busy = busy_us(&ctx, iters, |b| b.matmul_exact(&w, &xq, &y, 1, false))?;
        println!(
            "matmul_exact {:<5} [{rows:>5}, {cols:>5}]  {:>9.1} us  {:>7.2} GB/s  (GPU busy {})",
            ty.name(),
            s * 1e6,
            (rows * row_bytes) as f64 / s / 1e9,
            fmt_busy(busy)
        );
    }
    // The same decode products with the weights past the device's L2: a
    // model reads each weight once a token, while the loop above reads one
    // matrix again and again (the H100's 50 MB L2 holds every one of those
    // shapes). Copies of the matrix (together ≥ 320 MB) take turns; GPU
    // busy a dispatch, one pass, each dispatch writing the same y.
    // (`docs/bench/gpu-speed-log.md` 73.)
    for (ty, rows, cols) in [
        (GgmlType::Q4_0, 4096usize, 4096usize),
        (GgmlType::Q4_0, 14336, 4096),
        (GgmlType::Q4_0, 4096, 14336),
        (GgmlType::Q4_K, 14336, 4096),
        (GgmlType::Q4_K, 4096, 14336),
        (GgmlType::Q6_K, 4096, 14336),
    ] {
        let row_bytes = ty.row_bytes(cols as u64).unwrap_or(0) as usize;
        let bytes = rows * row_bytes;
        let copies = (320_000_000 / bytes.max(1)).max(2);
        let mut data = vec![0x3cu8; bytes];
        let ws = (0..copies)
            .map(|i| {
                // Copies differ (a driver cannot share them).
                data[0] = i as u8;
                ctx.upload_matrix(ty, rows as u64, cols as u64, &data)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let x = ctx.upload_f32(&vec![0.5; cols])?;
        let xq = ctx.zeros(zeta_wgpu::q8_words(cols), GpuDType::U32)?;
        let y = ctx.zeros(rows, GpuDType::F32)?;
        let mut b = ctx.batch();
        b.pack_q8(&x, &xq, cols, zeta_wgpu::Q8Mode::of(ty))?;
        b.submit()?;
        ctx.wait()?;
        // The best of three rounds (the first touch of fresh buffers is slow).
        let rotate = |exact: bool| -> Result<Option<f64>, WgpuError> {
            let next = std::cell::Cell::new(0usize);
            let mut best: Option<f64> = None;
            for _ in 0..3 {
                let us = busy_us(&ctx, iters.max(copies), |b| {
                    let w = &ws[next.get() % copies];
                    next.set(next.get() + 1);
                    if exact {
                        b.matmul_exact(w, &xq, &y, 1, false)
                    } else {
                        b.matvec_q8(w, &xq, &y, false)
                    }
                })?;
                best = best.into_iter().chain(us).reduce(f64::min);
            }
            Ok(best)
        };
        let gbs = |us: Option<f64>| us.map_or(0.0, |us| bytes as f64 / us / 1e3);
        let (exact, fast) = (rotate(true)?, rotate(false)?);
        println!(
            "past the L2 ({copies} copies) {:<5} [{rows:>5}, {cols:>5}]: exact {} ({:.0} GB/s), fast {} ({:.0} GB/s)",
            ty.name(),
            fmt_busy(exact),
            gbs(exact),
            fmt_busy(fast),
            gbs(fast)
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
    let busy = busy_us(&ctx, iters, |b| b.scale_inplace(&v, 1.0, 64))?;
    println!(
        "tiny dependent dispatch  {:.1} us  (GPU busy {})",
        t.elapsed().as_secs_f64() / iters as f64 * 1e6,
        fmt_busy(busy)
    );

    // The exact decode step's small kernels at llama-1b shapes (GPU time a
    // dispatch, in one pass: compare with the tiny dispatch above).
    let n = 2048usize;
    let x = ctx.upload_f32(&vec![0.5; n])?;
    let nw = ctx.upload_f32(&vec![1.0; n])?;
    let y = ctx.zeros(n, GpuDType::F32)?;
    let xq = ctx.zeros(zeta_wgpu::q8_words(n), GpuDType::U32)?;
    let mode = zeta_wgpu::Q8Mode::Q8_0;
    let norm = busy_us(&ctx, iters, |b| {
        b.rms_norm_pack_q8(&x, &nw, &y, &xq, n as u32, 1e-5, mode)
    })?;
    let pack = busy_us(&ctx, iters, |b| b.pack_q8(&x, &xq, n, mode))?;
    println!(
        "exact decode kernels [{n}]: rms_norm_pack_q8 {}, pack_q8 {} (a pass each: {})",
        fmt_busy(norm),
        fmt_busy(pack),
        per_kernel(&ctx, iters, |b| {
            b.rms_norm_pack_q8(&x, &nw, &y, &xq, n as u32, 1e-5, mode)
        })?
    );
    for n_kv in [128u32, 1024] {
        let AttnCase { p, q, kv, out } = attn_case(&ctx, (32, 4, 64), 1, n_kv)?;
        let exact = busy_us(&ctx, iters, |b| {
            b.attention_exact(&q, &kv, &kv, &out, &p, 1)
        })?;
        let fast = busy_us(&ctx, iters, |b| b.attention_decode(&q, &kv, &kv, &out, &p))?;
        let parts = per_kernel(&ctx, iters, |b| {
            b.attention_exact(&q, &kv, &kv, &out, &p, 1)
        })?;
        println!(
            "attention 32/4 heads x 64, n_kv {n_kv}: exact (2 dispatches) {}, fast {} (exact, a pass each: {parts})",
            fmt_busy(exact),
            fmt_busy(fast)
        );
    }

    // Exact prompt attention: 512 queries over their 512 keys (llama-1b,
    // llama-8b and Gemma-3-270M heads).
    for (nh, nkv, hd) in [(32u32, 4u32, 64u32), (32, 8, 128), (4, 1, 256)] {
        let n_q = 512u32;
        let AttnCase { p, q, kv, out } = attn_case(&ctx, (nh, nkv, hd), n_q, n_q)?;
        let reps = iters.div_ceil(20);
        let parts = per_kernel(&ctx, reps, |b| {
            b.attention_exact(&q, &kv, &kv, &out, &p, n_q)
        })?;
        println!(
            "attention exact {nh}/{nkv} heads x {hd}, {n_q} queries: a pass each: {parts} (per {n_q} tokens)"
        );
    }

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
        let AttnCase { p, q, kv, out } = attn_case(&ctx, (8, 2, 128), 1, n_kv)?;
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
