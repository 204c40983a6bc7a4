//! GPU buffers: activations ([`GpuTensor`]) and quantised weights
//! ([`QuantMatrix`]), upload and read-back.
//!
//! # Weight layout
//! A weight `W: [n_rows, n_cols]` (GGUF `dims = [n_cols, n_rows, ...]`) is
//! uploaded as its raw GGUF bytes, row after row, never expanded to f32: a row
//! is `n_cols / block_size` blocks of `type_size` bytes. Shaders read the bytes
//! through `array<u32>` with byte-offset arithmetic, so the buffer is padded
//! with zeros to a multiple of 4 bytes.
//!
//! # Splitting
//! A storage binding is limited (`max_storage_buffer_binding_size`: 128 MiB on
//! lavapipe, often 2-4 GiB on discrete GPUs), while e.g. Gemma 3's 262144×640
//! token table is ~178 MB. A weight is therefore stored as one or more
//! [`WeightPart`]s, split at row boundaries: part `i` holds rows
//! `first_row .. first_row + n_rows`, at most `max_part_bytes` bytes, each in its
//! own buffer whose byte 0 is the part's first row. The kernels are dispatched
//! once per part with the part's row offset (see `ops`), so callers never see
//! the split.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use zeta_gguf::{GgmlType, TensorInfo};

use crate::context::GpuContext;
use crate::error::{Result, WgpuError, shape};
use crate::pipeline::deq_fn;

/// Element type of a [`GpuTensor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuDType {
    /// 32-bit float.
    F32,
    /// 16-bit float, two per 32-bit word (KV caches).
    F16,
    /// 32-bit unsigned integer (token ids, positions).
    U32,
}

impl GpuDType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F16 => 2,
            Self::F32 | Self::U32 => 4,
        }
    }
}

/// Elements of a scratch buffer that must hold `len` and replaces one of
/// `old` elements (0: none): at least twice `old`, but not past
/// [`SCRATCH_GROW_MAX`] unless `len` itself is larger (so growth never
/// turns a request that fits a storage binding into one that does not).
pub(crate) fn scratch_len(len: usize, old: usize) -> usize {
    len.max(old.saturating_mul(2).min(SCRATCH_GROW_MAX))
}

/// Largest read-back staging buffer a context keeps for reuse (bytes).
const STAGING_KEEP_BYTES: u64 = 4 << 20;

/// Largest scratch buffer growth rounds up to (elements; 64 MiB of f32, the
/// attention scores' block limit).
const SCRATCH_GROW_MAX: usize = 1 << 24;

/// Bytes of storage buffers allocated through one [`GpuContext`]: now and
/// at the peak; and the context's bind-group cache, which holds buffers
/// alive and is therefore emptied whenever a counted buffer is released.
#[derive(Debug, Default)]
pub(crate) struct MemCounter {
    current: AtomicU64,
    peak: AtomicU64,
    pub(crate) bind_groups: crate::ops::BindGroupCache,
}

impl MemCounter {
    fn add(self: &Arc<Self>, bytes: u64) -> Arc<Allocation> {
        let now = self.current.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
        Arc::new(Allocation {
            bytes,
            counter: Arc::clone(self),
        })
    }
}

/// One counted buffer: dropping the last handle (tensor clones share it)
/// takes its bytes off the counter, as wgpu frees the buffer then.
#[derive(Debug)]
pub(crate) struct Allocation {
    bytes: u64,
    counter: Arc<MemCounter>,
}

impl Drop for Allocation {
    fn drop(&mut self) {
        self.counter
            .current
            .fetch_sub(self.bytes, Ordering::Relaxed);
        // Cached bind groups may name this buffer: drop them so that wgpu
        // frees it now (they are rebuilt on the next dispatches).
        self.counter.bind_groups.clear();
    }
}

/// A dense vector/matrix on the GPU (storage buffer, 4-byte padded).
#[derive(Debug, Clone)]
pub struct GpuTensor {
    pub(crate) buffer: wgpu::Buffer,
    len: usize,
    dtype: GpuDType,
    _alloc: Arc<Allocation>,
}

impl GpuTensor {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Element type.
    pub fn dtype(&self) -> GpuDType {
        self.dtype
    }

    /// Size of the underlying buffer in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.buffer.size()
    }
}

/// One row range of a split weight: `size` bytes at `offset` of its buffer
/// (its own, or one shared by a group of weights, see
/// [`GpuContext::upload_group`]).
#[derive(Debug, Clone)]
pub struct WeightPart {
    pub(crate) buffer: wgpu::Buffer,
    /// Byte offset of the part in `buffer` (a multiple of the device's
    /// storage offset alignment; 0 for a buffer of its own).
    pub(crate) offset: u64,
    /// Bytes bound for the part (padded to 16).
    pub(crate) size: u64,
    alloc: Arc<Allocation>,
    /// Index of the part's first row in the whole matrix.
    pub first_row: u64,
    /// Rows in this part.
    pub n_rows: u64,
}

/// A quantised weight matrix `[n_rows, n_cols]` in GGUF block form, split in
/// row ranges of at most the binding limit.
#[derive(Debug, Clone)]
pub struct QuantMatrix {
    ty: GgmlType,
    n_rows: u64,
    n_cols: u64,
    row_bytes: u64,
    parts: Vec<WeightPart>,
}

impl QuantMatrix {
    /// Block type.
    pub fn ggml_type(&self) -> GgmlType {
        self.ty
    }
    /// Rows (output features).
    pub fn n_rows(&self) -> u64 {
        self.n_rows
    }
    /// Columns (input features / row length).
    pub fn n_cols(&self) -> u64 {
        self.n_cols
    }
    /// Bytes per row.
    pub fn row_bytes(&self) -> u64 {
        self.row_bytes
    }
    /// The row-range parts (one unless the tensor exceeds the binding limit).
    pub fn parts(&self) -> &[WeightPart] {
        &self.parts
    }
    /// An F32 weight in one part (norm weights, biases, rope factors) viewed
    /// as an f32 [`GpuTensor`] of `n_rows * n_cols` elements, sharing the
    /// buffer; `None` for other types or split weights.
    pub fn as_f32_tensor(&self) -> Option<GpuTensor> {
        match (self.ty, self.parts.as_slice()) {
            (GgmlType::F32, [part]) if part.offset == 0 => Some(GpuTensor {
                buffer: part.buffer.clone(),
                len: usize::try_from(self.n_rows * self.n_cols).ok()?,
                dtype: GpuDType::F32,
                _alloc: Arc::clone(&part.alloc),
            }),
            _ => None,
        }
    }

    /// Total bytes on the GPU (including padding).
    pub fn size_bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum()
    }

    /// The buffer holding the whole matrix, if it is one part: shared with
    /// the other weights of its group (see [`GpuContext::upload_group`]).
    pub(crate) fn single_part(&self) -> Option<&WeightPart> {
        match self.parts.as_slice() {
            [p] => Some(p),
            _ => None,
        }
    }
}

fn pad4(n: u64) -> u64 {
    n.div_ceil(4).max(1) * 4
}

/// Buffer size for `n` bytes: a multiple of 16 (shaders may read f32 data as
/// `vec4`), or of 4 where 16 would pass the largest storage binding.
fn padded_size(n: u64, max_binding: u64) -> u64 {
    let p16 = n.div_ceil(16).max(1) * 16;
    if p16 <= max_binding { p16 } else { pad4(n) }
}

impl GpuContext {
    /// Creates a storage buffer of `size` bytes (rounded up to 16, see
    /// `padded_size`), capturing out-of-memory and validation errors.
    pub(crate) fn create_storage(
        &self,
        what: &str,
        size: u64,
        extra: wgpu::BufferUsages,
    ) -> Result<(wgpu::Buffer, Arc<Allocation>)> {
        let limits = self.device.limits();
        let size = padded_size(size, limits.max_storage_buffer_binding_size);
        let limit = limits.max_buffer_size;
        if size > limit {
            return Err(WgpuError::OutOfMemory {
                what: what.to_string(),
                needed_bytes: size,
                limit_bytes: Some(limit),
            });
        }
        self.scoped(
            || {
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(what),
                    size,
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_DST
                        | wgpu::BufferUsages::COPY_SRC
                        | extra,
                    mapped_at_creation: false,
                })
            },
            |message, oom| {
                if oom {
                    WgpuError::OutOfMemory {
                        what: what.to_string(),
                        needed_bytes: size,
                        limit_bytes: None,
                    }
                } else {
                    WgpuError::Gpu(message)
                }
            },
        )
        .map(|b| (b, self.mem.add(size)))
    }

    /// Bytes of the storage buffers (weights, activations, KV cache,
    /// scratch) this context has allocated and still holds.
    pub fn allocated_bytes(&self) -> u64 {
        self.mem.current.load(Ordering::Relaxed)
    }

    /// The most [`allocated_bytes`](Self::allocated_bytes) has been since the
    /// context was created or [`reset_peak_bytes`](Self::reset_peak_bytes).
    pub fn peak_allocated_bytes(&self) -> u64 {
        self.mem.peak.load(Ordering::Relaxed)
    }

    /// Restarts the peak at the current allocation.
    pub fn reset_peak_bytes(&self) {
        self.mem
            .peak
            .store(self.allocated_bytes(), Ordering::Relaxed);
    }

    /// Writes `bytes` at `offset` (4-aligned) into `buffer`, zero-padding the tail to 4 bytes.
    ///
    /// Queued writes keep a staging copy until the next submission completes,
    /// so after every `STAGING_FLUSH_BYTES` of uploads the queue is flushed and
    /// waited on: loading a multi-GB model holds at most that much staging memory.
    fn write_padded(&self, buffer: &wgpu::Buffer, offset: u64, bytes: &[u8]) {
        const STAGING_FLUSH_BYTES: u64 = 256 << 20;
        let pending =
            self.staged.fetch_add(bytes.len() as u64, Ordering::Relaxed) + bytes.len() as u64;
        if pending > STAGING_FLUSH_BYTES {
            self.staged.store(0, Ordering::Relaxed);
            self.queue.submit([]);
            // A failed wait surfaces later through `check()`.
            let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
        }
        let whole = bytes.len() / 4 * 4;
        if whole > 0 {
            self.queue.write_buffer(buffer, offset, &bytes[..whole]);
        }
        if whole < bytes.len() {
            let mut tail = [0u8; 4];
            tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
            self.queue
                .write_buffer(buffer, offset + whole as u64, &tail);
        }
    }

    fn tensor_from_bytes(
        &self,
        what: &str,
        bytes: &[u8],
        len: usize,
        dtype: GpuDType,
    ) -> Result<GpuTensor> {
        let (buffer, alloc) =
            self.create_storage(what, bytes.len() as u64, wgpu::BufferUsages::empty())?;
        self.write_padded(&buffer, 0, bytes);
        Ok(GpuTensor {
            buffer,
            len,
            dtype,
            _alloc: alloc,
        })
    }

    /// Uploads f32 values.
    pub fn upload_f32(&self, data: &[f32]) -> Result<GpuTensor> {
        self.tensor_from_bytes("f32", bytemuck::cast_slice(data), data.len(), GpuDType::F32)
    }

    /// Uploads f16 values (packed two per word).
    pub fn upload_f16(&self, data: &[half::f16]) -> Result<GpuTensor> {
        let bits: Vec<u16> = data.iter().map(|v| v.to_bits()).collect();
        self.tensor_from_bytes(
            "f16",
            bytemuck::cast_slice(&bits),
            data.len(),
            GpuDType::F16,
        )
    }

    /// Uploads u32 values (token ids, positions).
    pub fn upload_u32(&self, data: &[u32]) -> Result<GpuTensor> {
        self.tensor_from_bytes("u32", bytemuck::cast_slice(data), data.len(), GpuDType::U32)
    }

    /// A zero-filled tensor of `len` elements.
    pub fn zeros(&self, len: usize, dtype: GpuDType) -> Result<GpuTensor> {
        let bytes = (len as u64)
            .checked_mul(dtype.size() as u64)
            .ok_or_else(|| shape("zeros", "size overflow"))?;
        let (buffer, alloc) = self.create_storage("zeros", bytes, wgpu::BufferUsages::empty())?;
        Ok(GpuTensor {
            buffer,
            len,
            dtype,
            _alloc: alloc,
        })
    }

    /// Overwrites u32 elements `offset ..` of `t` (token ids).
    pub fn write_u32(&self, t: &GpuTensor, offset: usize, data: &[u32]) -> Result<()> {
        check_span("write", t, GpuDType::U32, offset, data.len())?;
        self.write_padded(&t.buffer, offset as u64 * 4, bytemuck::cast_slice(data));
        Ok(())
    }

    /// A scratch tensor of at least `len` elements for `purpose`, kept by
    /// the context for the calling thread and reused by that thread's later
    /// calls with that purpose (grown when too small). An op that uses one
    /// records all its dispatches that touch it into one batch, so reuse is
    /// ordered like any other buffer use (barriers between dispatches,
    /// submissions in queue order); batches recorded by other threads get
    /// their own. Callers must not need its contents across ops.
    ///
    /// It grows geometrically (see [`scratch_len`]): the attention scores'
    /// scratch needs a few more elements every decode step, and each new
    /// buffer empties the bind-group cache (the old one is released), which
    /// had every decode step rebuild its bind groups.
    pub(crate) fn scratch(
        &self,
        purpose: &'static str,
        len: usize,
        dtype: GpuDType,
    ) -> Result<GpuTensor> {
        let key = (purpose, std::thread::current().id());
        let mut map = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = map.get(&key)
            && t.len >= len.max(1)
            && t.dtype == dtype
        {
            return Ok(t.clone());
        }
        let old = map.get(&key).map_or(0, |t| t.len);
        let t = self.zeros(scratch_len(len.max(1), old), dtype)?;
        map.insert(key, t.clone());
        Ok(t)
    }

    /// Overwrites f32 elements `offset ..` of `t` (e.g. a KV-cache row).
    pub fn write_f32(&self, t: &GpuTensor, offset: usize, data: &[f32]) -> Result<()> {
        check_span("write", t, GpuDType::F32, offset, data.len())?;
        self.write_padded(&t.buffer, offset as u64 * 4, bytemuck::cast_slice(data));
        Ok(())
    }

    /// Overwrites f16 elements `offset ..` of `t`; `offset` and `data.len()`
    /// must be even (whole words).
    pub fn write_f16(&self, t: &GpuTensor, offset: usize, data: &[half::f16]) -> Result<()> {
        check_span("write", t, GpuDType::F16, offset, data.len())?;
        if !offset.is_multiple_of(2) || !data.len().is_multiple_of(2) {
            return Err(shape("write_f16", "offset and length must be even"));
        }
        let bits: Vec<u16> = data.iter().map(|v| v.to_bits()).collect();
        self.write_padded(&t.buffer, offset as u64 * 2, bytemuck::cast_slice(&bits));
        Ok(())
    }

    /// Uploads a weight `[n_rows, n_cols]` of type `ty` from its raw GGUF
    /// bytes, split at row boundaries into parts of at most
    /// [`GpuContext::max_part_bytes`].
    pub fn upload_matrix(
        &self,
        ty: GgmlType,
        n_rows: u64,
        n_cols: u64,
        bytes: &[u8],
    ) -> Result<QuantMatrix> {
        self.upload_matrix_split(ty, n_rows, n_cols, bytes, self.max_part_bytes)
    }

    /// Uploads a GGUF tensor (`dims[0]` = row length, the product of the other
    /// dims = rows) from its data bytes.
    pub fn upload_tensor(&self, info: &TensorInfo, bytes: &[u8]) -> Result<QuantMatrix> {
        let n_cols = info.dims.first().copied().unwrap_or(1);
        let n_rows = info
            .dims
            .iter()
            .skip(1)
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| shape("upload_tensor", format!("{}: dims overflow", info.name)))?;
        self.upload_matrix(info.ggml_type, n_rows, n_cols, bytes)
    }

    /// [`upload_matrix`](Self::upload_matrix) with an explicit part-size limit
    /// (capped at the device's), e.g. to test splitting with small tensors.
    pub fn upload_matrix_split(
        &self,
        ty: GgmlType,
        n_rows: u64,
        n_cols: u64,
        bytes: &[u8],
        max_part_bytes: u64,
    ) -> Result<QuantMatrix> {
        const OP: &str = "upload_matrix";
        if deq_fn(ty).is_none() {
            return Err(WgpuError::UnsupportedType(ty));
        }
        let row_bytes = ty.row_bytes(n_cols).ok_or_else(|| {
            shape(
                OP,
                format!(
                    "{n_cols} columns is not a whole number of {} blocks",
                    ty.name()
                ),
            )
        })?;
        if n_cols == 0 || n_rows == 0 || n_cols > u32::MAX as u64 || n_rows > u32::MAX as u64 {
            return Err(shape(OP, format!("bad shape [{n_rows}, {n_cols}]")));
        }
        let total = row_bytes
            .checked_mul(n_rows)
            .ok_or_else(|| shape(OP, "size overflow"))?;
        if bytes.len() as u64 != total {
            return Err(shape(
                OP,
                format!(
                    "[{n_rows}, {n_cols}] {} needs {total} bytes, got {}",
                    ty.name(),
                    bytes.len()
                ),
            ));
        }
        let limit = max_part_bytes.min(self.max_part_bytes);
        let rows_per_part = (limit / row_bytes).min(n_rows);
        if rows_per_part == 0 {
            return Err(WgpuError::OutOfMemory {
                what: "one weight row".to_string(),
                needed_bytes: row_bytes,
                limit_bytes: Some(limit),
            });
        }
        let mut parts = Vec::new();
        let mut first = 0u64;
        while first < n_rows {
            let rows = rows_per_part.min(n_rows - first);
            // Both in range: rows * row_bytes <= total == bytes.len().
            let start = (first * row_bytes) as usize;
            let end = ((first + rows) * row_bytes) as usize;
            let (buffer, alloc) = self.create_storage(
                "weight part",
                (end - start) as u64,
                wgpu::BufferUsages::empty(),
            )?;
            self.write_padded(&buffer, 0, &bytes[start..end]);
            parts.push(WeightPart {
                size: buffer.size(),
                buffer,
                offset: 0,
                alloc,
                first_row: first,
                n_rows: rows,
            });
            first += rows;
        }
        self.check()?;
        Ok(QuantMatrix {
            ty,
            n_rows,
            n_cols,
            row_bytes,
            parts,
        })
    }

    /// Uploads weights `[rows_i, cols_i]` of types `ty_i` (from their GGUF
    /// bytes) into one buffer, each at an offset aligned for storage
    /// bindings, so that one dispatch can read several of them (the integer
    /// matvec of Q/K/V or gate/up: `matvec_q8_multi`). Falls back to one
    /// [`upload_matrix`](Self::upload_matrix) each when they do not fit one
    /// binding together.
    pub fn upload_group(
        &self,
        weights: &[(GgmlType, u64, u64, &[u8])],
    ) -> Result<Vec<QuantMatrix>> {
        const OP: &str = "upload_group";
        let align = (self.device.limits().min_storage_buffer_offset_alignment as u64).max(256);
        let mut offsets = Vec::with_capacity(weights.len());
        let mut end = 0u64;
        for &(ty, n_rows, n_cols, bytes) in weights {
            if deq_fn(ty).is_none() {
                return Err(WgpuError::UnsupportedType(ty));
            }
            let total = ty
                .row_bytes(n_cols)
                .and_then(|rb| rb.checked_mul(n_rows))
                .ok_or_else(|| shape(OP, format!("bad shape [{n_rows}, {n_cols}]")))?;
            if n_rows == 0 || n_cols == 0 || bytes.len() as u64 != total {
                return Err(shape(
                    OP,
                    format!("[{n_rows}, {n_cols}] {}: {} bytes", ty.name(), bytes.len()),
                ));
            }
            let start = end.next_multiple_of(align);
            offsets.push(start);
            end = start + total.next_multiple_of(16);
        }
        if weights.len() < 2 || end > self.max_part_bytes {
            return weights
                .iter()
                .map(|&(ty, r, c, b)| self.upload_matrix(ty, r, c, b))
                .collect();
        }
        let (buffer, alloc) =
            self.create_storage("weight group", end, wgpu::BufferUsages::empty())?;
        let mut out = Vec::with_capacity(weights.len());
        for (&(ty, n_rows, n_cols, bytes), &offset) in weights.iter().zip(&offsets) {
            self.write_padded(&buffer, offset, bytes);
            let row_bytes = bytes.len() as u64 / n_rows;
            out.push(QuantMatrix {
                ty,
                n_rows,
                n_cols,
                row_bytes,
                parts: vec![WeightPart {
                    buffer: buffer.clone(),
                    offset,
                    size: (bytes.len() as u64).next_multiple_of(16),
                    alloc: Arc::clone(&alloc),
                    first_row: 0,
                    n_rows,
                }],
            });
        }
        self.check()?;
        Ok(out)
    }

    /// Copies a buffer back to the CPU (blocking).
    pub(crate) fn read_bytes(&self, buffer: &wgpu::Buffer, size: u64) -> Result<Vec<u8>> {
        self.read_bytes_at(buffer, 0, size)
    }

    /// Copies `size` bytes from `offset` (4-aligned) of a buffer back (blocking).
    pub(crate) fn read_bytes_at(
        &self,
        buffer: &wgpu::Buffer,
        offset: u64,
        size: u64,
    ) -> Result<Vec<u8>> {
        self.read_with(buffer, offset, size, <[u8]>::to_vec)
            .map(Option::unwrap_or_default)
    }

    /// Copies `size` bytes from `offset` (4-aligned) of a buffer into a
    /// staging buffer and gives `f` the mapped bytes (blocking; `None` when
    /// there are none): one host copy fewer than `read_bytes_at` where `f`
    /// converts them straight into their destination (a decode step's
    /// logits: 1 MiB a token for a 262K vocabulary).
    fn read_with<R>(
        &self,
        buffer: &wgpu::Buffer,
        offset: u64,
        size: u64,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>> {
        let size = pad4(size).min(buffer.size().saturating_sub(offset));
        if size == 0 {
            return Ok(None);
        }
        // Small reads (a decode step's logits or token id) share one staging
        // buffer, held until the bytes are copied out (reads of other
        // threads wait); larger ones get their own, freed after.
        let mut slot = self.staging.lock().unwrap_or_else(|e| e.into_inner());
        let staging = match slot.as_ref().filter(|b| b.size() >= size).cloned() {
            Some(b) => b,
            None => {
                let keep = size <= STAGING_KEEP_BYTES;
                let len = if keep {
                    size.max(slot.as_ref().map_or(0, |b| 2 * b.size()))
                        .min(STAGING_KEEP_BYTES)
                } else {
                    size
                };
                let b = self.scoped(
                    || {
                        self.device.create_buffer(&wgpu::BufferDescriptor {
                            label: Some("read-back"),
                            size: len,
                            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                            mapped_at_creation: false,
                        })
                    },
                    |m, _| WgpuError::ReadBack(m),
                )?;
                if keep {
                    *slot = Some(b.clone());
                }
                b
            }
        };
        let out = self.read_via(&staging, buffer, offset, size, f);
        if out.is_err() {
            // It may be left mapped or pending: the next read makes a new one.
            *slot = None;
        }
        out.map(Some)
    }

    /// [`read_with`](Self::read_with) through `staging`.
    fn read_via<R>(
        &self,
        staging: &wgpu::Buffer,
        buffer: &wgpu::Buffer,
        offset: u64,
        size: u64,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        self.copy_to_staging(buffer, offset, staging, size);
        self.map_staging(staging, size, None, f)
    }

    /// Submits the copy of `size` bytes from `offset` of `buffer` into
    /// `staging` on its own.
    fn copy_to_staging(
        &self,
        buffer: &wgpu::Buffer,
        offset: u64,
        staging: &wgpu::Buffer,
        size: u64,
    ) -> wgpu::SubmissionIndex {
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("read-back"),
            });
        enc.copy_buffer_to_buffer(buffer, offset, staging, 0, size);
        self.queue.submit([enc.finish()])
    }

    /// Maps the first `size` bytes of `staging` once its copy has run
    /// (waiting for submission `until`, or for the latest one), gives `f`
    /// the bytes and unmaps it.
    fn map_staging<R>(
        &self,
        staging: &wgpu::Buffer,
        size: u64,
        until: Option<wgpu::SubmissionIndex>,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, ..size, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: until,
                timeout: None,
            })
            .map_err(|e| WgpuError::ReadBack(e.to_string()))?;
        self.check()?;
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(WgpuError::ReadBack(e.to_string())),
            Err(_) => return Err(WgpuError::ReadBack("map callback dropped".to_string())),
        }
        let out = {
            let view = staging
                .get_mapped_range(..size)
                .map_err(|e| WgpuError::ReadBack(e.to_string()))?;
            f(&view)
        };
        staging.unmap();
        Ok(out)
    }

    /// Reads any tensor back as its raw little-endian bytes (f16: 2 per element).
    pub fn read_raw(&self, t: &GpuTensor) -> Result<Vec<u8>> {
        let n = t.len * t.dtype.size();
        let mut bytes = self.read_bytes(&t.buffer, n as u64)?;
        bytes.truncate(n);
        Ok(bytes)
    }

    /// Reads an f32 tensor back.
    pub fn read_f32(&self, t: &GpuTensor) -> Result<Vec<f32>> {
        check_span("read_f32", t, GpuDType::F32, 0, t.len)?;
        let mut out = vec![0f32; t.len];
        self.fill_f32(t, 0, &mut out)?;
        Ok(out)
    }

    /// Reads f32 elements `offset .. offset + n` back.
    pub fn read_f32_range(&self, t: &GpuTensor, offset: usize, n: usize) -> Result<Vec<f32>> {
        check_span("read_f32_range", t, GpuDType::F32, offset, n)?;
        let mut out = vec![0f32; n];
        self.fill_f32(t, offset, &mut out)?;
        Ok(out)
    }

    /// Reads f32 elements `offset .. offset + out.len()` back into `out`
    /// (converted from the mapped bytes directly).
    pub fn read_f32_into(&self, t: &GpuTensor, offset: usize, out: &mut [f32]) -> Result<()> {
        check_span("read_f32_into", t, GpuDType::F32, offset, out.len())?;
        self.fill_f32(t, offset, out)
    }

    /// `out` = f32 elements `offset ..` of `t` (the range checked by the caller).
    fn fill_f32(&self, t: &GpuTensor, offset: usize, out: &mut [f32]) -> Result<()> {
        let n = out.len();
        let got = self.read_with(&t.buffer, offset as u64 * 4, n as u64 * 4, |bytes| {
            let mut k = 0;
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                k += 1;
            }
            k
        })?;
        if got.unwrap_or(0) != n {
            return Err(WgpuError::ReadBack("short read".to_string()));
        }
        Ok(())
    }

    /// Starts reading the first `n` elements of a u32 tensor back: their
    /// copy is submitted now, so work submitted after it does not delay
    /// [`finish_read_u32`](Self::finish_read_u32), which waits for this
    /// submission only (greedy decoding reads a step's token id while the
    /// next step, fed that id on the device, already runs).
    pub fn start_read_u32(&self, t: &GpuTensor, n: usize) -> Result<PendingRead> {
        check_span("start_read_u32", t, GpuDType::U32, 0, n)?;
        let size = (n as u64 * 4).max(4);
        let staging = self.scoped(
            || {
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("read-back (pending)"),
                    size,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            },
            |m, _| WgpuError::ReadBack(m),
        )?;
        let index = self.copy_to_staging(&t.buffer, 0, &staging, size);
        Ok(PendingRead {
            staging,
            size,
            n,
            index,
        })
    }

    /// Waits for a read [`start_read_u32`](Self::start_read_u32) started
    /// (its submission only) and returns the values.
    pub fn finish_read_u32(&self, read: PendingRead) -> Result<Vec<u32>> {
        let PendingRead {
            staging,
            size,
            n,
            index,
        } = read;
        self.map_staging(&staging, size, Some(index), |b| le_u32s(b, n))
    }

    /// Reads a u32 tensor back.
    pub fn read_u32(&self, t: &GpuTensor) -> Result<Vec<u32>> {
        if t.dtype != GpuDType::U32 {
            return Err(shape("read_u32", format!("tensor is {:?}", t.dtype)));
        }
        let bytes = self.read_bytes(&t.buffer, t.len as u64 * 4)?;
        Ok(le_u32s(&bytes, t.len))
    }
}

/// The first `n` little-endian u32 of `bytes`.
fn le_u32s(bytes: &[u8], n: usize) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .take(n)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A read-back submitted by [`GpuContext::start_read_u32`], not yet waited for.
#[derive(Debug)]
pub struct PendingRead {
    staging: wgpu::Buffer,
    size: u64,
    n: usize,
    index: wgpu::SubmissionIndex,
}

/// That `t` holds `want` elements and `offset .. offset + n` is inside it
/// (the checks of every host write and read of a tensor range).
fn check_span(
    op: &'static str,
    t: &GpuTensor,
    want: GpuDType,
    offset: usize,
    n: usize,
) -> Result<()> {
    if t.dtype != want {
        return Err(shape(
            op,
            format!("tensor is {:?}, data is {want:?}", t.dtype),
        ));
    }
    match offset.checked_add(n) {
        Some(end) if end <= t.len => Ok(()),
        _ => Err(shape(
            op,
            format!("{offset}+{n} exceeds {} elements", t.len),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_grows_geometrically_up_to_the_cap() {
        assert_eq!(scratch_len(32, 0), 32);
        assert_eq!(scratch_len(64, 32), 64);
        assert_eq!(scratch_len(96, 64), 128);
        assert_eq!(scratch_len(1000, 64), 1000);
        assert_eq!(
            scratch_len(SCRATCH_GROW_MAX - 1, SCRATCH_GROW_MAX - 2),
            SCRATCH_GROW_MAX
        );
        assert_eq!(
            scratch_len(SCRATCH_GROW_MAX + 5, SCRATCH_GROW_MAX),
            SCRATCH_GROW_MAX + 5
        );
        assert_eq!(scratch_len(7, usize::MAX), SCRATCH_GROW_MAX);
    }
}
