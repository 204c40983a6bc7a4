//! The CPU backend: f32 activation buffers in host memory, weights borrowed
//! from the memory-mapped GGUF file, an f16 KV cache, and ops that follow
//! ggml's CPU numerics. Work is split over `threads` scoped threads only for
//! ops with enough work (matmul, attention).

mod attention;
mod gemm;
pub mod kernels;
pub mod matmul;
mod ops;
mod pool;
#[cfg(target_arch = "x86_64")]
mod simd;

/// ggml-compatible scalar math used by the ops (exposed for tests).
pub mod ops_exports {
    pub use super::ops::{
        gelu_table, ggml_v_expf, rope_cache_row, rope_theta_scale, silu_scalar, silu_vec,
    };
}

use std::sync::{Arc, Mutex};

use zeta_gguf::{GgmlType, Gguf};

use crate::backend::{AttnParams, Backend, GluKind, RopeParams};
use crate::error::{TensorError, need};

/// Below this many multiply-adds an op runs on the calling thread only.
const PAR_MIN_WORK: usize = 1 << 17;

/// A host f32 buffer.
#[derive(Debug, Clone)]
pub struct CpuBuffer {
    /// The elements.
    pub data: Vec<f32>,
}

/// A host f16 buffer (raw f16 bits), used for the KV cache.
#[derive(Debug, Clone)]
pub struct CpuKvBuffer {
    /// The elements as IEEE binary16 bit patterns.
    pub data: Vec<u16>,
}

/// A weight: a tensor of the mapped GGUF file (never copied), plus an f32
/// copy for 1-D tensors (norm weights, biases, rope factors — a few KiB).
#[derive(Debug)]
pub struct CpuWeight {
    gguf: Arc<Gguf>,
    /// Index into `gguf.tensors()`.
    index: usize,
    ty: GgmlType,
    /// ggml dims (`dims[0]` = row length).
    dims: Vec<u64>,
    /// Row length.
    cols: usize,
    /// Number of rows (product of `dims[1..]`).
    rows: usize,
    /// Bytes per row.
    row_bytes: usize,
    /// Dequantized values of a 1-D tensor `[cols]`.
    vector: Option<Vec<f32>>,
}

impl CpuWeight {
    /// The raw tensor bytes, borrowed from the mapped file.
    pub fn bytes(&self) -> &[u8] {
        match self.gguf.tensors().get(self.index) {
            Some(t) => self.gguf.tensor_data(t),
            None => &[],
        }
    }

    /// Element type.
    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// Row length.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The values of a 1-D weight, or an error naming the op.
    fn vector(&self, op: &'static str) -> Result<&[f32], TensorError> {
        self.vector.as_deref().ok_or_else(|| {
            TensorError::shape(
                op,
                format!("expected a 1-D weight, got dims {:?}", self.dims),
            )
        })
    }
}

/// The CPU backend.
#[derive(Debug)]
pub struct CpuBackend {
    threads: usize,
    /// Persistent workers for the parallel ops.
    pool: pool::Pool,
    /// Scratch for activations quantized to the weights' `vec_dot_type`
    /// (grown once to the largest batch, then reused).
    act_scratch: Mutex<Vec<u8>>,
    /// Scratch for the f32 copy of the keys and values one attention call
    /// reads (grown once to the largest, then reused).
    kv_scratch: Mutex<Vec<f32>>,
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuBackend {
    /// A backend using all available cores.
    pub fn new() -> Self {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        Self::with_threads(threads)
    }

    /// A backend using `threads` threads (at least 1).
    pub fn with_threads(threads: usize) -> Self {
        let pool = pool::Pool::new(threads.max(1));
        Self {
            threads: pool.threads(),
            pool,
            act_scratch: Mutex::new(Vec::new()),
            kv_scratch: Mutex::new(Vec::new()),
        }
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Splits `data` (`n_units` units of `unit` elements) into contiguous
    /// per-thread parts and calls `f(first_unit, part)` on each. Runs on the
    /// calling thread alone when `work` (multiply-adds) is small.
    pub(crate) fn par_units<T: Send>(
        &self,
        data: &mut [T],
        unit: usize,
        n_units: usize,
        work: usize,
        f: impl Fn(usize, &mut [T]) + Sync,
    ) {
        let nt = self.threads.min(n_units).max(1);
        let per = n_units.div_ceil(nt);
        let ends: Vec<usize> = (1..=nt).map(|i| (i * per).min(n_units)).collect();
        self.par_parts(data, unit, n_units, work, &ends, f);
    }

    /// [`Self::par_units`] with parts of about equal total `cost(unit)`
    /// instead of equal unit counts (e.g. causal attention, where later
    /// tokens see more keys).
    pub(crate) fn par_units_weighted<T: Send>(
        &self,
        data: &mut [T],
        unit: usize,
        n_units: usize,
        work: usize,
        cost: impl Fn(usize) -> usize,
        f: impl Fn(usize, &mut [T]) + Sync,
    ) {
        let nt = self.threads.min(n_units).max(1);
        let total: usize = (0..n_units).map(&cost).sum::<usize>().max(1);
        // Part boundaries at the first unit where the running cost reaches
        // i/nt of the total.
        let mut ends = Vec::with_capacity(nt);
        let mut acc = 0usize;
        for u in 0..n_units {
            acc += cost(u);
            while ends.len() + 1 < nt && acc * nt >= total * (ends.len() + 1) {
                ends.push(u + 1);
            }
        }
        ends.push(n_units);
        self.par_parts(data, unit, n_units, work, &ends, f);
    }

    /// Calls `f(first_unit, part)` on the parts of `data` that end at unit
    /// `ends[i]` (ascending, the last `n_units`), part `i` on pool thread
    /// `i`; on the calling thread alone when `work` is small or there is
    /// one part.
    fn par_parts<T: Send>(
        &self,
        data: &mut [T],
        unit: usize,
        n_units: usize,
        work: usize,
        ends: &[usize],
        f: impl Fn(usize, &mut [T]) + Sync,
    ) {
        let data = &mut data[..unit * n_units];
        if ends.len() <= 1 || work < PAR_MIN_WORK {
            f(0, data);
            return;
        }
        // Each part is taken out of its slot by exactly one thread.
        let mut slots = Vec::with_capacity(ends.len());
        let mut rest = data;
        let mut start = 0;
        for &end in ends {
            let n = end.max(start) - start;
            let (part, tail) = rest.split_at_mut(n * unit);
            rest = tail;
            if n > 0 {
                slots.push(Mutex::new(Some((start, part))));
            }
            start += n;
        }
        self.pool.run(&|i| {
            let taken = slots
                .get(i)
                .and_then(|s| s.lock().unwrap_or_else(|e| e.into_inner()).take());
            if let Some((first, part)) = taken {
                f(first, part);
            }
        });
    }
}

fn try_vec<T: Clone>(len: usize, v: T) -> Result<Vec<T>, TensorError> {
    let mut out = Vec::new();
    out.try_reserve_exact(len).map_err(|_| TensorError::Alloc {
        bytes: len as u128 * std::mem::size_of::<T>() as u128,
    })?;
    out.resize(len, v);
    Ok(out)
}

impl Backend for CpuBackend {
    type Buffer = CpuBuffer;
    type KvBuffer = CpuKvBuffer;
    type Weight = CpuWeight;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn upload_weight(&self, gguf: &Arc<Gguf>, name: &str) -> Result<CpuWeight, TensorError> {
        let index = gguf
            .tensors()
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| TensorError::MissingTensor {
                name: name.to_string(),
            })?;
        let info = &gguf.tensors()[index];
        let ty = info.ggml_type;
        let cols = usize::try_from(info.row_len())
            .map_err(|_| TensorError::shape("upload_weight", "row too long"))?;
        let rows = usize::try_from(info.n_rows())
            .map_err(|_| TensorError::shape("upload_weight", "too many rows"))?;
        let row_bytes = ty
            .row_bytes(info.row_len())
            .and_then(|b| usize::try_from(b).ok())
            .ok_or_else(|| {
                TensorError::shape(
                    "upload_weight",
                    format!("{name}: row length {cols} is not a multiple of the {ty} block size"),
                )
            })?;
        let data = gguf.tensor_data(info);
        if data.len() != row_bytes.saturating_mul(rows) {
            return Err(TensorError::shape(
                "upload_weight",
                format!(
                    "{name}: {} data bytes for {rows} rows of {row_bytes} bytes",
                    data.len()
                ),
            ));
        }
        let vector = if info.dims.len() == 1 || rows == 1 {
            let mut v = try_vec(cols, 0f32)?;
            ops::dequantize_row(ty, data, &mut v)?;
            Some(v)
        } else {
            None
        };
        Ok(CpuWeight {
            gguf: Arc::clone(gguf),
            index,
            ty,
            dims: info.dims.clone(),
            cols,
            rows,
            row_bytes,
            vector,
        })
    }

    fn weight_dims(&self, w: &CpuWeight) -> Vec<u64> {
        w.dims.clone()
    }

    fn weight_type(&self, w: &CpuWeight) -> GgmlType {
        w.ty
    }

    fn alloc(&self, len: usize) -> Result<CpuBuffer, TensorError> {
        Ok(CpuBuffer {
            data: try_vec(len, 0.0)?,
        })
    }

    fn alloc_kv(&self, len: usize) -> Result<CpuKvBuffer, TensorError> {
        Ok(CpuKvBuffer {
            data: try_vec(len, 0u16)?,
        })
    }

    fn write(&self, buf: &mut CpuBuffer, offset: usize, data: &[f32]) -> Result<(), TensorError> {
        need("write", offset.saturating_add(data.len()), buf.data.len())?;
        buf.data[offset..offset + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn read(&self, buf: &CpuBuffer, offset: usize, out: &mut [f32]) -> Result<(), TensorError> {
        need("read", offset.saturating_add(out.len()), buf.data.len())?;
        out.copy_from_slice(&buf.data[offset..offset + out.len()]);
        Ok(())
    }

    fn argmax(&self, buf: &CpuBuffer, offset: usize, n: usize) -> Result<u32, TensorError> {
        if n == 0 {
            return Err(TensorError::shape("argmax", "no values"));
        }
        need("argmax", offset.saturating_add(n), buf.data.len())?;
        let _ =
            u32::try_from(n).map_err(|_| TensorError::shape("argmax", "more than 2^32 values"))?;
        let mut best: Option<(usize, f32)> = None;
        for (i, &v) in buf.data[offset..offset + n].iter().enumerate() {
            if !v.is_nan() && best.is_none_or(|(_, b)| v > b) {
                best = Some((i, v));
            }
        }
        // `n` fits 32 bits (checked above), so the index does too.
        Ok(best.map_or(0, |(i, _)| i as u32))
    }

    fn copy(
        &self,
        src: &CpuBuffer,
        src_off: usize,
        dst: &mut CpuBuffer,
        dst_off: usize,
        n: usize,
    ) -> Result<(), TensorError> {
        need("copy", src_off.saturating_add(n), src.data.len())?;
        need("copy", dst_off.saturating_add(n), dst.data.len())?;
        dst.data[dst_off..dst_off + n].copy_from_slice(&src.data[src_off..src_off + n]);
        Ok(())
    }

    fn get_rows(
        &self,
        table: &CpuWeight,
        ids: &[u32],
        out: &mut CpuBuffer,
    ) -> Result<(), TensorError> {
        let cols = table.cols;
        need("get_rows", ids.len().saturating_mul(cols), out.data.len())?;
        let bytes = table.bytes();
        for (t, &id) in ids.iter().enumerate() {
            let r = id as usize;
            if r >= table.rows {
                return Err(TensorError::RowOutOfRange {
                    op: "get_rows",
                    row: u64::from(id),
                    n_rows: table.rows as u64,
                });
            }
            let src = &bytes[r * table.row_bytes..(r + 1) * table.row_bytes];
            ops::dequantize_row(table.ty, src, &mut out.data[t * cols..(t + 1) * cols])?;
        }
        Ok(())
    }

    fn matmul(
        &self,
        w: &CpuWeight,
        x: &CpuBuffer,
        out: &mut CpuBuffer,
        n_tokens: usize,
    ) -> Result<(), TensorError> {
        need("matmul", n_tokens.saturating_mul(w.cols), x.data.len())?;
        need("matmul", n_tokens.saturating_mul(w.rows), out.data.len())?;
        let mut scratch = self.act_scratch.lock().unwrap_or_else(|e| e.into_inner());
        matmul::matmul(
            self,
            w,
            &x.data[..n_tokens * w.cols],
            &mut out.data,
            n_tokens,
            &mut scratch,
        )
    }

    fn add_bias(
        &self,
        x: &mut CpuBuffer,
        bias: &CpuWeight,
        n_rows: usize,
    ) -> Result<(), TensorError> {
        let b = bias.vector("add_bias")?;
        need("add_bias", n_rows.saturating_mul(b.len()), x.data.len())?;
        for row in x.data.chunks_exact_mut(b.len()).take(n_rows) {
            for (v, bv) in row.iter_mut().zip(b) {
                *v += bv;
            }
        }
        Ok(())
    }

    fn rms_norm(
        &self,
        x: &CpuBuffer,
        w: &CpuWeight,
        out: &mut CpuBuffer,
        n_rows: usize,
        eps: f32,
    ) -> Result<(), TensorError> {
        let wv = w.vector("rms_norm")?;
        let n = n_rows.saturating_mul(wv.len());
        need("rms_norm", n, x.data.len())?;
        need("rms_norm", n, out.data.len())?;
        out.data[..n].copy_from_slice(&x.data[..n]);
        ops::rms_norm_rows(&mut out.data[..n], wv, eps);
        Ok(())
    }

    fn rms_norm_inplace(
        &self,
        x: &mut CpuBuffer,
        w: &CpuWeight,
        n_rows: usize,
        eps: f32,
    ) -> Result<(), TensorError> {
        let wv = w.vector("rms_norm")?;
        let n = n_rows.saturating_mul(wv.len());
        need("rms_norm", n, x.data.len())?;
        ops::rms_norm_rows(&mut x.data[..n], wv, eps);
        Ok(())
    }

    fn add(&self, a: &mut CpuBuffer, b: &CpuBuffer, n: usize) -> Result<(), TensorError> {
        need("add", n, a.data.len())?;
        need("add", n, b.data.len())?;
        for (x, y) in a.data[..n].iter_mut().zip(&b.data[..n]) {
            *x += y;
        }
        Ok(())
    }

    fn scale(&self, x: &mut CpuBuffer, n: usize, s: f32) -> Result<(), TensorError> {
        need("scale", n, x.data.len())?;
        for v in &mut x.data[..n] {
            *v *= s;
        }
        Ok(())
    }

    fn rope(
        &self,
        x: &mut CpuBuffer,
        n_tokens: usize,
        n_heads: usize,
        head_dim: usize,
        pos0: usize,
        params: &RopeParams,
        freq_factors: Option<&CpuWeight>,
    ) -> Result<(), TensorError> {
        let n = n_tokens.saturating_mul(n_heads).saturating_mul(head_dim);
        need("rope", n, x.data.len())?;
        if params.n_dims > head_dim || !params.n_dims.is_multiple_of(2) {
            return Err(TensorError::shape(
                "rope",
                format!(
                    "n_dims {} must be even and at most head_dim {head_dim}",
                    params.n_dims
                ),
            ));
        }
        let ff = match freq_factors {
            Some(w) => {
                let v = w.vector("rope")?;
                if v.len() < params.n_dims / 2 {
                    return Err(TensorError::shape(
                        "rope",
                        format!(
                            "rope_freqs has {} values, need {}",
                            v.len(),
                            params.n_dims / 2
                        ),
                    ));
                }
                Some(v)
            }
            None => None,
        };
        ops::rope(
            &mut x.data[..n],
            n_tokens,
            n_heads,
            head_dim,
            pos0,
            params,
            ff,
        );
        Ok(())
    }

    fn glu(
        &self,
        gate: &mut CpuBuffer,
        up: &CpuBuffer,
        n_rows: usize,
        n_cols: usize,
        kind: GluKind,
    ) -> Result<(), TensorError> {
        let n = n_rows.saturating_mul(n_cols);
        need("glu", n, gate.data.len())?;
        need("glu", n, up.data.len())?;
        if n_cols == 0 {
            return Ok(());
        }
        for (g, u) in gate.data[..n]
            .chunks_exact_mut(n_cols)
            .zip(up.data[..n].chunks_exact(n_cols))
        {
            ops::glu(g, u, kind);
        }
        Ok(())
    }

    fn store_kv(
        &self,
        src: &CpuBuffer,
        dst: &mut CpuKvBuffer,
        n_tokens: usize,
        row_len: usize,
        pos0: usize,
    ) -> Result<(), TensorError> {
        let n = n_tokens.saturating_mul(row_len);
        need("store_kv", n, src.data.len())?;
        let off = pos0.saturating_mul(row_len);
        need("store_kv", off.saturating_add(n), dst.data.len())?;
        for (d, s) in dst.data[off..off + n].iter_mut().zip(&src.data[..n]) {
            *d = half::f16::from_f32(*s).to_bits();
        }
        Ok(())
    }

    fn attention(
        &self,
        q: &CpuBuffer,
        k_cache: &CpuKvBuffer,
        v_cache: &CpuKvBuffer,
        out: &mut CpuBuffer,
        p: &AttnParams,
    ) -> Result<(), TensorError> {
        attention::attention(
            self,
            &q.data,
            &k_cache.data,
            &v_cache.data,
            &mut out.data,
            p,
        )
    }
}
