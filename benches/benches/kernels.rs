//! Kernel benchmarks: `cargo bench -p zeta-benches` (add `-- matvec/Q4_0` to
//! filter). Quick smoke run: `cargo test -p zeta-benches --benches`.
//!
//! - `matvec/<TYPE>/<rows>x<cols>/backend`: the CPU backend's `matmul` with
//!   one token (all cores), the call every decode step makes per weight.
//! - `matvec/<TYPE>/<rows>x<cols>/reference`: a single-threaded row loop over
//!   `zeta_quant::vec_dot` (the portable reference arithmetic).
//! - `rms_norm/2048`, `attention/decode/…`: the other per-token ops.
//! - `gpu_matvec/<TYPE>/<rows>x<cols>/wgpu`: the wgpu backend's fused
//!   dequantise+matvec kernel (the adapter `GpuContext::new` picks, or
//!   `ZETA_ADAPTER`), 64 dispatches per submission, time per dispatch after
//!   waiting for the device; skipped, with a message, without an adapter.
//!   Their shares are of the GPU's own copy bandwidth (a 64 MiB device-side
//!   buffer copy, measured before them), in a second summary.
//!
//! Throughput is `Throughput::Bytes` of the data each call streams (weights
//! for matvec; x, out and the scale for RMSNorm; the K and V rows for
//! attention). Before the benchmarks a 256 MiB memcpy measures the memory
//! bandwidth; after them a summary prints each benchmark's median GB/s and
//! its share of that bandwidth.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use zeta_benches::{QuantMatrix, Recorder, SHAPES, WEIGHT_TYPES, random_f32, vector_weight};
use zeta_tensor::{AttnParams, Backend, CpuBackend};

fn matvec(c: &mut Criterion, rec: &Recorder, backend: &CpuBackend) {
    let mut group = c.benchmark_group("matvec");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for ty in WEIGHT_TYPES {
        for (rows, cols) in SHAPES {
            let m = match QuantMatrix::random(backend, ty, rows, cols, 42) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("skipping matvec {ty} {rows}x{cols}: {e}");
                    continue;
                }
            };
            let x = random_f32(cols, 43);
            group.throughput(Throughput::Bytes(m.bytes()));
            let shape = format!("{ty}/{rows}x{cols}");

            let Ok(mut xb) = backend.alloc(cols) else {
                continue;
            };
            xb.data.copy_from_slice(&x); // [1, cols]
            let Ok(mut out) = backend.alloc(rows) else {
                continue;
            }; // [1, rows]
            let id = format!("matvec/{shape}/backend");
            group.bench_function(BenchmarkId::new(&shape, "backend"), |b| {
                b.iter_custom(|iters| {
                    rec.time(&id, m.bytes(), iters, || {
                        if let Err(e) = m.matvec_backend(backend, &xb, &mut out) {
                            panic!("matmul failed: {e}");
                        }
                    })
                })
            });

            let Ok(act) = m.quantize_activation(&x) else {
                continue;
            };
            let mut out_ref = vec![0f32; rows]; // [rows]
            let id = format!("matvec/{shape}/reference");
            group.bench_function(BenchmarkId::new(&shape, "reference"), |b| {
                b.iter_custom(|iters| {
                    rec.time(&id, m.bytes(), iters, || {
                        if let Err(e) = m.matvec_reference(&act, &mut out_ref) {
                            panic!("vec_dot failed: {e}");
                        }
                    })
                })
            });
        }
    }
    group.finish();
}

/// Dispatches recorded per submission in the GPU benchmark (a decode step
/// records a few hundred in one).
const GPU_BATCH: u64 = 64;

/// GPU memory bandwidth: best of 5 device-side copies of 64 MiB (read +
/// write bytes per second), or `None` if the copy fails.
fn gpu_copy_bandwidth(ctx: &zeta_wgpu::GpuContext) -> Option<f64> {
    let n = 16 << 20; // f32 elements
    let a = ctx.zeros(n, zeta_wgpu::GpuDType::F32).ok()?; // [n]
    let b = ctx.zeros(n, zeta_wgpu::GpuDType::F32).ok()?; // [n]
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let mut batch = ctx.batch();
        batch.copy(&a, 0, &b, 0, n).ok()?;
        batch.submit().ok()?;
        ctx.wait().ok()?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Some(2.0 * 4.0 * n as f64 / best)
}

/// GPU matvec benchmarks; returns the GPU's copy bandwidth (None: no GPU).
/// GPU matvec shapes: the CPU ones and Llama-3-8B's FFN up/gate
/// (14336 x 4096), where a GPU reaches its bandwidth.
const GPU_SHAPES: [(usize, usize); 3] = [SHAPES[0], SHAPES[1], (14336, 4096)];

fn gpu_matvec(c: &mut Criterion, rec: &Recorder, backend: &CpuBackend) -> Option<f64> {
    let ctx = match zeta_wgpu::GpuContext::new() {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("SKIP: gpu_matvec benchmarks: {e}");
            return None;
        }
    };
    let gpu_bw = gpu_copy_bandwidth(&ctx).unwrap_or(0.0);
    eprintln!(
        "GPU adapter: {}; device copy bandwidth (64 MiB, best of 5, read+write, incl. submit): {:.2} GB/s",
        ctx.info().name,
        gpu_bw / 1e9
    );
    let mut group = c.benchmark_group("gpu_matvec");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for ty in WEIGHT_TYPES {
        for (rows, cols) in GPU_SHAPES {
            let Ok(m) = QuantMatrix::random(backend, ty, rows, cols, 42) else {
                continue;
            };
            let uploaded = (
                ctx.upload_matrix(ty, rows as u64, cols as u64, &m.data),
                ctx.upload_f32(&random_f32(cols, 43)), // x: [cols]
                ctx.zeros(rows, zeta_wgpu::GpuDType::F32), // y: [rows]
            );
            let (Ok(w), Ok(x), Ok(y)) = uploaded else {
                eprintln!("skipping gpu_matvec {ty} {rows}x{cols}: upload failed");
                continue;
            };
            group.throughput(Throughput::Bytes(m.bytes()));
            let shape = format!("{ty}/{rows}x{cols}");
            let id = format!("gpu_matvec/{shape}/wgpu");
            group.bench_function(BenchmarkId::new(&shape, "wgpu"), |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    let mut left = iters;
                    while left > 0 {
                        let n = left.min(GPU_BATCH);
                        let mut batch = ctx.batch();
                        for _ in 0..n {
                            if let Err(e) = batch.matvec(&w, &x, &y) {
                                panic!("gpu matvec failed: {e}");
                            }
                        }
                        if let Err(e) = batch.submit() {
                            panic!("gpu submit failed: {e}");
                        }
                        left -= n;
                    }
                    if let Err(e) = ctx.wait() {
                        panic!("gpu wait failed: {e}");
                    }
                    let total = start.elapsed();
                    rec.record(&id, m.bytes(), iters, total);
                    total
                })
            });
        }
    }
    group.finish();
    Some(gpu_bw)
}

fn norm_and_attention(c: &mut Criterion, rec: &Recorder, backend: &CpuBackend) {
    let mut group = c.benchmark_group("ops");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    // RMSNorm of one 2048-wide row: reads x and w, writes out.
    let n = 2048;
    if let (Ok(w), Ok(mut x), Ok(mut out)) = (
        vector_weight(backend, &random_f32(n, 1)),
        backend.alloc(n),
        backend.alloc(n),
    ) {
        x.data.copy_from_slice(&random_f32(n, 2)); // [1, 2048]
        let bytes = 3 * 4 * n as u64;
        group.throughput(Throughput::Bytes(bytes));
        group.bench_function("rms_norm/2048", |b| {
            b.iter_custom(|iters| {
                rec.time("ops/rms_norm/2048", bytes, iters, || {
                    if let Err(e) = backend.rms_norm(&x, &w, &mut out, 1, 1e-5) {
                        panic!("rms_norm failed: {e}");
                    }
                })
            })
        });
    }

    // Decode attention of one token over a filled cache, llama-1b heads:
    // 32 query heads, 4 KV heads of 64 (TinyLlama), 512 cached positions.
    let (n_head, n_head_kv, head_dim, n_pos) = (32usize, 4usize, 64usize, 512usize);
    let row = n_head_kv * head_dim;
    if let (Ok(mut k), Ok(mut v), Ok(mut q), Ok(mut out)) = (
        backend.alloc_kv(n_pos * row),    // [n_pos, n_head_kv*head_dim] f16
        backend.alloc_kv(n_pos * row),    // [n_pos, n_head_kv*head_dim] f16
        backend.alloc(n_head * head_dim), // [1, n_head, head_dim]
        backend.alloc(n_head * head_dim), // [1, n_head, head_dim]
    ) {
        for (dst, src) in [(&mut k.data, 3u64), (&mut v.data, 4u64)] {
            for (d, s) in dst.iter_mut().zip(random_f32(n_pos * row, src)) {
                *d = half::f16::from_f32(s).to_bits();
            }
        }
        q.data.copy_from_slice(&random_f32(n_head * head_dim, 5));
        let params = AttnParams {
            n_tokens: 1,
            pos0: n_pos - 1,
            n_head,
            n_head_kv,
            head_dim_k: head_dim,
            head_dim_v: head_dim,
            scale: 1.0 / (head_dim as f32).sqrt(),
            window: None,
        };
        let bytes = 2 * 2 * (n_pos * row) as u64; // K and V, f16
        group.throughput(Throughput::Bytes(bytes));
        let id = format!("ops/attention/decode/{n_pos}");
        group.bench_function(format!("attention/decode/{n_pos}"), |b| {
            b.iter_custom(|iters| {
                rec.time(&id, bytes, iters, || {
                    if let Err(e) = backend.attention(&q, &k, &v, &mut out, &params) {
                        panic!("attention failed: {e}");
                    }
                })
            })
        });
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let backend = CpuBackend::new();
    let bw = zeta_benches::memcpy_bandwidth(256 << 20, 5);
    eprintln!(
        "memory bandwidth (256 MiB memcpy, best of 5, read+write): {:.2} GB/s; CPU backend threads: {}",
        bw / 1e9,
        backend.threads()
    );
    let rec = Recorder::default();
    matvec(&mut c, &rec, &backend);
    norm_and_attention(&mut c, &rec, &backend);
    let gpu_bw = gpu_matvec(&mut c, &rec, &backend);
    c.final_summary();
    eprintln!(
        "\nshare of the measured memcpy bandwidth ({:.2} GB/s):\n{}",
        bw / 1e9,
        rec.summary_where(bw, |id| !id.starts_with("gpu_"))
    );
    if let Some(gbw) = gpu_bw {
        eprintln!(
            "\nGPU benchmarks, share of the GPU's measured copy bandwidth ({:.2} GB/s):\n{}",
            gbw / 1e9,
            rec.summary_where(gbw, |id| id.starts_with("gpu_"))
        );
    }
}
