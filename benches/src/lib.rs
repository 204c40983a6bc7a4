//! zeta-benches: helpers for the criterion kernel benchmarks in
//! `benches/kernels.rs` (`cargo bench -p zeta-benches`).
//!
//! - [`memcpy_bandwidth`] measures the machine's memory bandwidth once with a
//!   plain large copy, so every kernel's bytes/s can be shown as a share of it
//!   (a single-token matvec is memory-bound: it streams every weight byte once).
//! - [`QuantMatrix`] builds a random weight matrix of one GGML type and holds it
//!   both as raw blocks (for the `zeta_quant::vec_dot` reference row loop) and
//!   as a [`CpuWeight`] inside an in-memory GGUF (for the CPU backend's
//!   `matmul`, the entry the model uses).
//! - [`Recorder`] keeps the per-iteration times criterion measures through
//!   `iter_custom`, so the summary can print the bandwidth share of the very
//!   numbers criterion reports.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zeta_gguf::{GgmlType, Gguf, GgufWriter};
use zeta_tensor::{Backend, CpuBackend, CpuBuffer, CpuWeight};

/// Errors of the benchmark helpers.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Quantization or the reference dot product failed.
    #[error(transparent)]
    Quant(#[from] zeta_quant::QuantError),
    /// Building or reading the in-memory GGUF failed.
    #[error(transparent)]
    Gguf(#[from] zeta_gguf::GgufError),
    /// A CPU-backend op failed.
    #[error(transparent)]
    Tensor(#[from] zeta_tensor::TensorError),
    /// A shape the type cannot hold (row length not a whole number of blocks).
    #[error("{cols} columns is not a whole number of {ty} blocks")]
    Shape {
        /// The weight type.
        ty: GgmlType,
        /// The row length asked for.
        cols: usize,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, BenchError>;

/// Weight types benchmarked (the ones real GGUF files use most).
pub const WEIGHT_TYPES: [GgmlType; 8] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::F16,
];

/// `(rows, cols)` of llama-1b-ish matrices: attention projections
/// (2048×2048) and the FFN up/gate projections (5632×2048).
pub const SHAPES: [(usize, usize); 2] = [(2048, 2048), (5632, 2048)];

/// Deterministic pseudo-random f32s in [-1, 1) (SplitMix64).
pub fn random_f32(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            // 24 random bits → [0, 1) → [-1, 1)
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Quantizes `x` (whole rows of `cols`) to `ty`.
pub fn quantize(ty: GgmlType, x: &[f32], cols: usize) -> Result<Vec<u8>> {
    let rows = x.len() / cols.max(1);
    let row_bytes = ty
        .row_bytes(cols as u64)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or(BenchError::Shape { ty, cols })?;
    let mut out = vec![0u8; row_bytes * rows];
    zeta_quant::quantize(ty, x, &mut out)?;
    Ok(out)
}

/// A random `[rows, cols]` weight matrix of one type.
#[derive(Debug)]
pub struct QuantMatrix {
    /// Weight type.
    pub ty: GgmlType,
    /// Output rows.
    pub rows: usize,
    /// Row length.
    pub cols: usize,
    /// Bytes per row.
    pub row_bytes: usize,
    /// The blocks: `[rows, row_bytes]`.
    pub data: Vec<u8>,
    /// The same matrix as a CPU-backend weight (in an in-memory GGUF).
    pub weight: CpuWeight,
}

impl QuantMatrix {
    /// Builds the matrix from random values (same seed, same matrix).
    pub fn random(
        backend: &CpuBackend,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        seed: u64,
    ) -> Result<Self> {
        let x = random_f32(rows * cols, seed); // [rows, cols]
        let data = quantize(ty, &x, cols)?;
        let row_bytes = data.len() / rows.max(1);
        let mut w = GgufWriter::new();
        w.add_tensor("w", &[cols as u64, rows as u64], ty, data.clone())?;
        let mut bytes = Vec::new();
        w.write_to(&mut bytes)?;
        let gguf = Arc::new(Gguf::from_bytes(bytes)?);
        let weight = backend.upload_weight(&gguf, "w")?;
        Ok(Self {
            ty,
            rows,
            cols,
            row_bytes,
            data,
            weight,
        })
    }

    /// Bytes of weight data one matvec streams.
    pub fn bytes(&self) -> u64 {
        self.data.len() as u64
    }

    /// The activation `x` (`[cols]`) quantized to this type's `vec_dot_type`.
    pub fn quantize_activation(&self, x: &[f32]) -> Result<Vec<u8>> {
        quantize(zeta_quant::vec_dot_type(self.ty), x, self.cols)
    }

    /// Reference matvec: one `zeta_quant::vec_dot` per row, single-threaded.
    /// `act` comes from [`QuantMatrix::quantize_activation`]; `out` is `[rows]`.
    pub fn matvec_reference(&self, act: &[u8], out: &mut [f32]) -> Result<()> {
        for (row, o) in self.data.chunks_exact(self.row_bytes).zip(out.iter_mut()) {
            *o = zeta_quant::vec_dot(self.ty, row, act, self.cols)?;
        }
        Ok(())
    }

    /// The CPU backend's matmul with one token (`x`: `[1, cols]`, `out`: `[1, rows]`).
    pub fn matvec_backend(
        &self,
        backend: &CpuBackend,
        x: &CpuBuffer,
        out: &mut CpuBuffer,
    ) -> Result<()> {
        backend.matmul(&self.weight, x, out, 1)?;
        Ok(())
    }
}

/// A 1-D f32 weight (e.g. an RMSNorm scale) as a CPU-backend weight.
pub fn vector_weight(backend: &CpuBackend, values: &[f32]) -> Result<CpuWeight> {
    let mut w = GgufWriter::new();
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    w.add_tensor("v", &[values.len() as u64], GgmlType::F32, data)?;
    let mut bytes = Vec::new();
    w.write_to(&mut bytes)?;
    let gguf = Arc::new(Gguf::from_bytes(bytes)?);
    Ok(backend.upload_weight(&gguf, "v")?)
}

/// Memory bandwidth from copying a `bytes`-sized buffer `reps` times (best
/// run), in bytes/s of traffic: each copy reads and writes `bytes`, so
/// `2 * bytes / time` (the STREAM "copy" convention).
pub fn memcpy_bandwidth(bytes: usize, reps: usize) -> f64 {
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    dst.copy_from_slice(&src); // fault the pages in
    let mut best = Duration::MAX;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        best = best.min(t.elapsed());
    }
    bandwidth(2 * bytes as u64, best)
}

/// `bytes / time` in bytes/s (0 for a zero time).
pub fn bandwidth(bytes: u64, time: Duration) -> f64 {
    let s = time.as_secs_f64();
    if s > 0.0 { bytes as f64 / s } else { 0.0 }
}

/// Per-benchmark time samples collected through criterion's `iter_custom`.
#[derive(Debug, Default)]
pub struct Recorder {
    /// id → (bytes per iteration, per-iteration times in ns).
    runs: Mutex<BTreeMap<String, (u64, Vec<f64>)>>,
}

impl Recorder {
    /// Times `iters` calls of `f` and records the mean per-iteration time
    /// under `id`; returns the total for criterion.
    pub fn time(&self, id: &str, bytes: u64, iters: u64, mut f: impl FnMut()) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        let total = start.elapsed();
        self.record(id, bytes, iters, total);
        total
    }

    /// Records `iters` iterations that took `total` (for benchmarks that time
    /// themselves, e.g. GPU work submitted in batches and waited for once).
    pub fn record(&self, id: &str, bytes: u64, iters: u64, total: Duration) {
        if iters > 0 {
            let per = total.as_nanos() as f64 / iters as f64;
            if let Ok(mut m) = self.runs.lock() {
                m.entry(id.to_string())
                    .or_insert((bytes, Vec::new()))
                    .1
                    .push(per);
            }
        }
    }

    /// `(id, bytes, median ns per iteration)` of every recorded benchmark.
    pub fn medians(&self) -> Vec<(String, u64, f64)> {
        let Ok(m) = self.runs.lock() else {
            return Vec::new();
        };
        m.iter()
            .filter_map(|(id, (bytes, v))| median(v).map(|med| (id.clone(), *bytes, med)))
            .collect()
    }

    /// The summary table: bytes/s and the share of `bw` (bytes/s) per benchmark.
    pub fn summary(&self, bw: f64) -> String {
        self.summary_where(bw, |_| true)
    }

    /// [`summary`](Self::summary) of the benchmarks whose id passes `keep`.
    pub fn summary_where(&self, bw: f64, keep: impl Fn(&str) -> bool) -> String {
        let mut s = format!(
            "{:<44} {:>12} {:>12} {:>10}\n",
            "benchmark", "median", "GB/s", "% of copy"
        );
        for (id, bytes, ns) in self.medians().into_iter().filter(|(id, _, _)| keep(id)) {
            let bps = bandwidth(bytes, Duration::from_nanos(ns as u64));
            let share = if bw > 0.0 { 100.0 * bps / bw } else { 0.0 };
            s.push_str(&format!(
                "{id:<44} {:>9.1} µs {:>12.2} {:>9.1}%\n",
                ns / 1e3,
                bps / 1e9,
                share
            ));
        }
        s
    }
}

/// Median of `v` (mean of the two middle values for an even count).
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::needless_range_loop)]
    use super::*;

    #[test]
    fn reference_matches_dequantized_dot() {
        let backend = CpuBackend::with_threads(2);
        for ty in WEIGHT_TYPES {
            let (rows, cols) = (8, 512);
            let m = QuantMatrix::random(&backend, ty, rows, cols, 7).unwrap();
            assert_eq!(m.bytes(), ty.row_bytes(cols as u64).unwrap() * rows as u64);
            let x = random_f32(cols, 9);
            let act = m.quantize_activation(&x).unwrap();
            let mut reference = vec![0f32; rows];
            m.matvec_reference(&act, &mut reference).unwrap();
            // Against dequantized weights · dequantized activation in f64.
            let mut wf = vec![0f32; rows * cols];
            zeta_quant::dequantize(ty, &m.data, &mut wf).unwrap();
            let mut af = vec![0f32; cols];
            zeta_quant::dequantize(zeta_quant::vec_dot_type(ty), &act, &mut af).unwrap();
            for r in 0..rows {
                let exact: f64 = (0..cols)
                    .map(|k| wf[r * cols + k] as f64 * af[k] as f64)
                    .sum();
                let err = (reference[r] as f64 - exact).abs();
                assert!(
                    err < 1e-2 * (1.0 + exact.abs()),
                    "{ty} row {r}: {} vs {exact}",
                    reference[r]
                );
            }
            // The backend's matmul computes the same product.
            let mut xb = backend.alloc(cols).unwrap();
            xb.data.copy_from_slice(&x);
            let mut out = backend.alloc(rows).unwrap();
            m.matvec_backend(&backend, &xb, &mut out).unwrap();
            for r in 0..rows {
                let d = (out.data[r] - reference[r]).abs();
                assert!(
                    d < 1e-3 * (1.0 + reference[r].abs()),
                    "{ty} row {r}: {} vs {}",
                    out.data[r],
                    reference[r]
                );
            }
        }
    }

    #[test]
    fn statistics() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(bandwidth(1_000_000_000, Duration::from_millis(500)), 2e9);
        assert_eq!(bandwidth(1, Duration::ZERO), 0.0);
        let r = Recorder::default();
        let mut calls = 0;
        r.time("a", 100, 3, || calls += 1);
        r.time("a", 100, 0, || calls += 1);
        assert_eq!(calls, 3);
        let m = r.medians();
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].0.as_str(), m[0].1), ("a", 100));
        assert!(memcpy_bandwidth(1 << 20, 2) > 0.0);
        let v = random_f32(1000, 1);
        assert!(v.iter().all(|x| (-1.0..1.0).contains(x)));
        assert_ne!(v, random_f32(1000, 2));
    }
}
