//! [`GpuBackend`]: `zeta_tensor::Backend` on top of this crate's kernels.
//!
//! Every op only *records* its kernels into one pending [`GpuBatch`] (behind
//! a mutex); nothing runs until someone needs data on the host. A forward
//! pass therefore becomes one command buffer: [`Backend::read`] (the logits)
//! submits the pending batch and copies back only the requested range.
//! [`Backend::write`] submits the pending batch before queueing its upload,
//! so an upload can never overtake earlier recorded work.
//!
//! Types:
//! - `Buffer` = [`GpuTensor`] (F32), `KvBuffer` = [`GpuTensor`] (F16,
//!   `[n_ctx, n_head_kv*head_dim]`).
//! - `Weight` = [`GpuWeight`]: matrices stay in their GGUF block form
//!   ([`QuantMatrix`], split at row boundaries when bigger than a binding);
//!   1-D weights (norms, biases, rope factors — a few KiB) are dequantized on
//!   the host at load and kept as f32 vectors.
//!
//! Numerics: weights are dequantized exactly as ggml does. Projections of
//! fewer than 48 tokens by Q4_0/Q4_1/Q5_0/Q8_0/Q4_K/Q6_K weights quantize x
//! to 8 bits exactly as the CPU backend does for that type (Q8_0, Q8_1 or
//! Q8_K) and sum weight quant x activation quant in integers
//! (`matvec_q8.wgsl`, `matmul_q8.wgsl`), so each block's contribution is the
//! CPU's; other types and longer prompts multiply dequantized weights with
//! f32 activations (the cooperative-matrix prompt kernel with both rounded to
//! f16). Attention over an f16 cache rounds the query (and, within one
//! 256-position chunk, the probabilities) to f16 and GeGLU goes through
//! ggml's f16 table, as the CPU does. What differs is float summation order
//! and `exp`/`tanh`.
//!
//! Weight groups: Q/K/V and gate/up of one type and row length are uploaded
//! into one buffer (`WEIGHT_GROUPS`) and decode reads each group with one
//! dispatch (`matvec_q8_multi`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use zeta_gguf::{GgmlType, Gguf};
use zeta_tensor::{AttnParams, Backend, GluKind, RopeKind, RopeParams, TensorError};

use crate::context::GpuContext;
use crate::error::WgpuError;
use crate::ops::{self, GluOp, GpuBatch, Q8Mode, REG_MATMUL_MIN_TOKENS, RopeMode};
use crate::pipeline::{deq_fn, has_exact_matmul, has_q8_matvec};
use crate::tensor::{GpuDType, GpuTensor, QuantMatrix};

/// A pending batch is submitted once it holds this many dispatches, so the
/// GPU starts on the first layers while the host records the rest (a decode
/// step is several command buffers, still with no CPU wait between them).
/// Measured on the H100 (llama-1b Q4_0 tg128): one submission per token
/// 172 t/s, every 128 dispatches 228, 96: 262, 48: 265, 24: 277.
const SUBMIT_EVERY_DISPATCHES: u64 = 32;

/// `(buffer, n, mode, producer)`: the backend's `q8x` holds the first n
/// values of buffer, packed for the integer matvec in `mode` by `producer`.
type Q8Note = (wgpu::Buffer, usize, Q8Mode, Packer);

/// The RMSNorm before projections: weight, epsilon, output `xb`, row
/// length, and optionally a post-norm into x first: (projection to
/// normalise and add, its weight) — `Backend::rms_norm_add_matmul_many`.
type NormIn<'a> = (
    &'a GpuTensor,
    f32,
    &'a GpuTensor,
    u32,
    Option<(&'a GpuTensor, &'a GpuTensor)>,
);

/// Whether a weight group should stage its input's RMSNorm in every
/// workgroup (`rms_norm_matmul_exact_multi`) rather than take it from a
/// `rms_norm_pack_q8` dispatch: staging repeats the norm (a pass over the
/// row and its 8-bit pack) once per workgroup of 8 rows, which pays only
/// while that repeated work (workgroups × columns) stays small next to the
/// dispatch it saves. Measured on the H100 (tg128, per token): llama-1b's
/// Q/K/V group (320 workgroups × 2048 columns) 470 → 324 µs with its norm;
/// its gate/up group (1408 × 2048) 644 → 774 and llama-8b's Q/K/V (768 ×
/// 4096) 1122 → 1447, i.e. slower.
fn norm_staging_pays(ms: &[&QuantMatrix]) -> bool {
    const MAX_WORK: u64 = 1 << 20;
    let rows: u64 = ms.iter().map(|m| m.n_rows()).sum();
    let cols = ms.first().map_or(0, |m| m.n_cols());
    rows.div_ceil(8).saturating_mul(cols) <= MAX_WORK
}

/// The longest rows for which a lone one-token Q4_K / Q6_K projection packs
/// its f32 input itself (`GpuBatch::matmul_exact_f32`) rather than after a
/// `pack_q8` dispatch: every workgroup packs each 1024-column chunk it
/// reads, which costs more than the dispatch it saves once rows take
/// several chunks. Measured on the H100 (p50 a token): Gemma 3's output
/// projection (1024 columns, one chunk) 1.79–1.83 → 1.78–1.79 ms (greedy
/// 1.62 → 1.59); llama-1b Q4_K_M (2048) unchanged; llama-8b Q4_K_M (4096)
/// 5.69–5.71 → 5.79–5.82, slower.
const F32_PACK_MAX_COLS: u64 = 1024;

/// The ops that pack their own output for the next projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Packer {
    /// `glu` (→ the FFN down projection).
    Glu = 0,
    /// `attention` (→ the output projection).
    Attention = 1,
}

/// Weights (GGUF name suffixes within a layer) that decode reads with one
/// integer-matvec dispatch when they share a type and row length: uploaded
/// into one buffer (`GpuContext::upload_group`), read by `matvec_q8_multi`.
const WEIGHT_GROUPS: [&[&str]; 2] = [
    &["attn_q.weight", "attn_k.weight", "attn_v.weight"],
    &["ffn_gate.weight", "ffn_up.weight"],
];

/// Weights uploaded with a group member that was asked for first, waiting
/// for their own `upload_weight` call: (file, name) → weight. The `Arc`
/// keeps the file (and so its address, the key) alive while an entry waits.
type GroupCache = std::collections::HashMap<(usize, String), (Arc<Gguf>, GpuWeight)>;

/// A model weight on the GPU.
#[derive(Debug)]
pub struct GpuWeight {
    /// ggml dims (`dims[0]` = row length).
    dims: Vec<u64>,
    ty: GgmlType,
    /// Row length.
    cols: usize,
    /// Number of rows (product of `dims[1..]`).
    rows: usize,
    /// `[rows, cols]` in GGUF block form (weights with 2+ dims).
    matrix: Option<QuantMatrix>,
    /// `[cols]` f32 (1-D weights and single-row tensors).
    vector: Option<GpuTensor>,
    /// The same values on the host (RoPE frequency factors enter the
    /// host-computed rotation table).
    host: Option<Arc<[f32]>>,
}

impl GpuWeight {
    /// The quantized matrix, or an error naming the op.
    fn matrix(&self, op: &'static str) -> Result<&QuantMatrix, TensorError> {
        self.matrix
            .as_ref()
            .ok_or_else(|| shape_err(op, format!("expected a matrix, got dims {:?}", self.dims)))
    }

    /// The f32 vector of a 1-D weight, or an error naming the op.
    fn vector(&self, op: &'static str) -> Result<&GpuTensor, TensorError> {
        self.vector.as_ref().ok_or_else(|| {
            shape_err(
                op,
                format!("expected a 1-D weight, got dims {:?}", self.dims),
            )
        })
    }

    /// Bytes this weight takes on the GPU.
    pub fn size_bytes(&self) -> u64 {
        self.matrix.as_ref().map_or(0, QuantMatrix::size_bytes)
            + self.vector.as_ref().map_or(0, GpuTensor::size_bytes)
    }
}

/// The wgpu backend: a shared [`GpuContext`] plus the batch being recorded.
pub struct GpuBackend {
    ctx: Arc<GpuContext>,
    pending: Mutex<Option<GpuBatch<'static>>>,
    /// Token ids of [`Backend::get_rows`] (reused, grown on demand).
    ids: Mutex<Option<GpuTensor>>,
    /// The one-`u32` result of [`Backend::argmax`] (reused: every call
    /// reads it back before returning).
    argmax_out: Mutex<Option<GpuTensor>>,
    /// The 8-bit activations of the integer matvec (reused, grown on demand).
    q8x: Mutex<Option<GpuTensor>>,
    /// Whether projections use the integer matvec/matmul where they can.
    int_matvec: bool,
    /// Whether projections and attention take the kernels that reproduce
    /// the CPU backend's float order (matmul_exact.wgsl, attn_exact.wgsl):
    /// the CPU's logits bit for bit (see `set_exact`).
    exact: bool,
    /// RoPE (cos, sin) tables by (n_dims, freq_base, freq_scale, factors),
    /// computed on the host as the CPU backend computes them.
    rope_tables: Mutex<Vec<RopeTable>>,
    /// `(buffer, n, mode)` when `q8x` holds that buffer's first n values,
    /// packed by the last recorded op (a fused GLU): the next matvec of that
    /// buffer in that mode skips its pack. Any other op clears it (see `record`).
    q8_src: Mutex<Option<Q8Note>>,
    /// The mode each [`Packer`] packs in: the one its last consumer wanted
    /// (the down / output projection's; a mismatch costs one more pack,
    /// once). Attention does not pack for Q8_K.
    pack_modes: Mutex<[Q8Mode; 2]>,
    /// Grouped weights not yet asked for (see [`WEIGHT_GROUPS`]).
    group_cache: Mutex<GroupCache>,
    /// Bound as the unused third output of two-matrix `matvec_q8_multi`s.
    dummy: Mutex<Option<GpuTensor>>,
    /// While profiling: GPU time per kernel (pipeline label → ns, passes).
    profile: Mutex<Option<BTreeMap<String, (f64, u64)>>>,
    /// The profile times whole compute passes (see `start_pass_profile`).
    profile_passes: AtomicBool,
    /// Work recorded ahead (`Backend::begin_ahead`). Locked before `pending`
    /// where both are.
    ahead: Mutex<Ahead>,
    /// Token ids of [`Backend::get_rows_ahead`] (written by `submit_ahead`).
    ahead_ids: Mutex<Option<GpuTensor>>,
}

/// The backend's one slot of work recorded ahead of its token ids.
#[derive(Default)]
struct Ahead {
    /// The ticket of the work recording or held (0: none yet).
    ticket: u64,
    /// The thread recording (between `begin_ahead` and `end_ahead`): its
    /// ops go into `batch`; other threads' go to `pending` as usual.
    recording: Option<std::thread::ThreadId>,
    batch: Option<GpuBatch<'static>>,
    /// `q8_src` of the work recorded ahead (it runs as one command buffer,
    /// after whatever is submitted before it).
    note: Option<Q8Note>,
    /// Ids `get_rows_ahead` recorded reads, and its table's rows (checked
    /// by `submit_ahead`).
    n_ids: usize,
    table_rows: usize,
    /// Encoded, waiting for `submit_ahead`.
    ready: Option<ops::FinishedBatch<'static>>,
}

impl Ahead {
    /// Drops an incomplete step recorded ahead (an op failed while
    /// recording it); its ticket then submits nothing.
    fn abandon(&mut self) {
        self.batch = None;
        self.recording = None;
    }
}

/// RoPE's `(cos, sin)` for positions `0..rows` (see `GpuBackend::rope_table`).
struct RopeTable {
    /// (n_dims, freq_base bits, freq_scale bits, factors).
    key: (usize, u32, u32, Option<Arc<[f32]>>),
    rows: usize,
    table: GpuTensor,
}

/// GPU time of one kernel (pipeline variant) over a profiled stretch.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelTime {
    /// Pipeline label: `shader[+suffix]:entry[defines]`.
    pub label: String,
    /// Total GPU nanoseconds (timestamp queries around each dispatch).
    pub ns: f64,
    /// Dispatches timed.
    pub dispatches: u64,
}

impl std::fmt::Debug for GpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuBackend")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

fn shape_err(op: &'static str, msg: impl Into<String>) -> TensorError {
    TensorError::Shape {
        op,
        msg: msg.into(),
    }
}

/// `zeta_tensor`'s error for a GPU-layer failure in `op`: shape and type
/// errors keep their kind, out-of-memory becomes
/// [`TensorError::DeviceOutOfMemory`] (with the estimated size), every other
/// device-side failure (validation, lost device, read-back, shader) becomes
/// [`TensorError::Device`].
pub fn tensor_error(op: &'static str, e: WgpuError) -> TensorError {
    match e {
        WgpuError::Shape { op, detail } => TensorError::Shape { op, msg: detail },
        WgpuError::OutOfMemory {
            what,
            needed_bytes,
            limit_bytes,
        } => TensorError::DeviceOutOfMemory {
            op,
            what,
            needed_bytes,
            limit_bytes,
        },
        WgpuError::UnsupportedType(ty) => TensorError::UnsupportedType { op, ty },
        other => TensorError::Device {
            op,
            message: other.to_string(),
        },
    }
}

/// Checks that a buffer of `have` elements holds at least `need` (the CPU backend's error).
/// The argument checks of [`Backend::argmax`]: a non-empty range of `buf`
/// whose length fits the kernel's u32.
fn check_argmax(
    op: &'static str,
    buf: &GpuTensor,
    offset: usize,
    n: usize,
) -> Result<(), TensorError> {
    if n == 0 {
        return Err(shape_err(op, "no values"));
    }
    need(op, offset.saturating_add(n), buf.len())?;
    to_u32(op, n)?;
    Ok(())
}

/// The id of an argmax read back.
fn first_id(op: &'static str, v: &[u32]) -> Result<u32, TensorError> {
    v.first()
        .copied()
        .ok_or_else(|| tensor_error(op, WgpuError::ReadBack("empty argmax".to_string())))
}

fn need(op: &'static str, need: usize, have: usize) -> Result<(), TensorError> {
    if have < need {
        Err(TensorError::BufferTooSmall { op, need, have })
    } else {
        Ok(())
    }
}

fn to_u32(op: &'static str, v: usize) -> Result<u32, TensorError> {
    u32::try_from(v).map_err(|_| shape_err(op, format!("{v} does not fit 32 bits")))
}

/// The matrices and outputs of a `matmul_many` of `n_tok` tokens: every
/// weight reads at most `x_len` inputs (its columns per token; exactly
/// `cols` columns when given) and fits its output.
fn targets<'s, 'w>(
    op: &'static str,
    outs: &'s mut [(&'w GpuWeight, &mut GpuTensor)],
    x_len: usize,
    cols: Option<usize>,
    n_tok: usize,
) -> Result<Vec<(&'w QuantMatrix, &'s mut GpuTensor)>, TensorError> {
    let mut mats = Vec::with_capacity(outs.len());
    for (w, out) in outs.iter_mut() {
        if let Some(c) = cols
            && w.cols != c
        {
            return Err(shape_err(
                op,
                format!("{} columns after a norm of {c}", w.cols),
            ));
        }
        need(op, w.cols.saturating_mul(n_tok), x_len)?;
        need(op, w.rows.saturating_mul(n_tok), out.len())?;
        mats.push((w.matrix(op)?, &mut **out));
    }
    Ok(mats)
}

/// The checked arguments of an RMSNorm over `n_rows` rows of `w`'s length
/// whose buffers are `bufs`: (weight vector, rows, columns), or `None` when
/// there is nothing to do.
fn norm_args<'w>(
    op: &'static str,
    w: &'w GpuWeight,
    n_rows: usize,
    bufs: &[&GpuTensor],
) -> Result<Option<(&'w GpuTensor, u32, u32)>, TensorError> {
    let v = w.vector(op)?;
    let n = n_rows.saturating_mul(w.cols);
    for b in bufs {
        need(op, n, b.len())?;
    }
    if n == 0 {
        return Ok(None);
    }
    Ok(Some((v, to_u32(op, n_rows)?, to_u32(op, w.cols)?)))
}

/// Checks RoPE's rotated dimensions against `head_dim` and returns the
/// frequency factors' vector (at least n_dims / 2 values).
fn rope_factors<'a>(
    op: &'static str,
    params: &RopeParams,
    head_dim: usize,
    freq_factors: Option<&'a GpuWeight>,
) -> Result<Option<&'a GpuTensor>, TensorError> {
    if params.n_dims > head_dim || !params.n_dims.is_multiple_of(2) {
        return Err(shape_err(
            op,
            format!(
                "n_dims {} must be even and at most head_dim {head_dim}",
                params.n_dims
            ),
        ));
    }
    match freq_factors {
        Some(w) => {
            let v = w.vector(op)?;
            if w.cols < params.n_dims / 2 {
                return Err(shape_err(
                    op,
                    format!(
                        "rope_freqs has {} values, need {}",
                        w.cols,
                        params.n_dims / 2
                    ),
                ));
            }
            Ok(Some(v))
        }
        None => Ok(None),
    }
}

/// The kernel's RoPE parameters.
fn rope_params(
    op: &'static str,
    params: &RopeParams,
    head_dim: usize,
    n_heads: usize,
    n_tokens: usize,
) -> Result<ops::RopeParams, TensorError> {
    Ok(ops::RopeParams {
        head_dim: to_u32(op, head_dim)?,
        n_heads: to_u32(op, n_heads)?,
        n_tokens: to_u32(op, n_tokens)?,
        n_rot: to_u32(op, params.n_dims)?,
        mode: match params.kind {
            RopeKind::Normal => RopeMode::Normal,
            RopeKind::Neox => RopeMode::Neox,
        },
        freq_base: params.freq_base,
        freq_scale: params.freq_scale,
    })
}

impl GpuBackend {
    /// Opens the best adapter (see [`GpuContext::new`]).
    pub fn new() -> Result<Self, WgpuError> {
        Ok(Self::with_context(Arc::new(GpuContext::new()?)))
    }

    /// A backend on an existing context.
    pub fn with_context(ctx: Arc<GpuContext>) -> Self {
        Self {
            ctx,
            pending: Mutex::new(None),
            ids: Mutex::new(None),
            argmax_out: Mutex::new(None),
            q8x: Mutex::new(None),
            q8_src: Mutex::new(None),
            pack_modes: Mutex::new([Q8Mode::Q8_0; 2]),
            group_cache: Mutex::new(GroupCache::new()),
            dummy: Mutex::new(None),
            int_matvec: std::env::var("ZETA_GPU_NO_Q8").as_deref() != Ok("1"),
            exact: std::env::var("ZETA_GPU_EXACT").as_deref() != Ok("0"),
            rope_tables: Mutex::new(Vec::new()),
            profile: Mutex::new(None),
            profile_passes: AtomicBool::new(false),
            ahead: Mutex::new(Ahead::default()),
            ahead_ids: Mutex::new(None),
        }
    }

    /// Starts timing every dispatch with GPU timestamp queries (each then
    /// gets its own compute pass, and every submit waits for its results, so
    /// profiled runs are slower than plain ones). Returns false, and times
    /// nothing, when the device lacks `TIMESTAMP_QUERY`.
    pub fn start_profile(&self) -> Result<bool, TensorError> {
        self.start_profile_mode(false)
    }

    /// [`start_profile`](Self::start_profile) timing whole compute passes
    /// (all labelled "compute pass") instead of single dispatches: the work
    /// is recorded and run as it is unprofiled, so the total says how long
    /// the device was busy (compare it with the wall-clock time to see the
    /// host's share).
    pub fn start_pass_profile(&self) -> Result<bool, TensorError> {
        self.start_profile_mode(true)
    }

    fn start_profile_mode(&self, passes: bool) -> Result<bool, TensorError> {
        if !self
            .ctx
            .device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
        {
            return Ok(false);
        }
        // Work recorded before this point is not timed.
        self.flush()?;
        *self.profile.lock().unwrap_or_else(|e| e.into_inner()) = Some(BTreeMap::new());
        self.profile_passes.store(passes, Ordering::Relaxed);
        Ok(true)
    }

    /// Stops profiling and returns the time per kernel since
    /// [`start_profile`](Self::start_profile), largest first (`None` when not
    /// profiling). Submits and waits for pending work first.
    pub fn take_profile(&self) -> Result<Option<Vec<KernelTime>>, TensorError> {
        self.sync()?;
        let map = self
            .profile
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        Ok(map.map(|m| {
            let mut v: Vec<KernelTime> = m
                .into_iter()
                .map(|(label, (ns, dispatches))| KernelTime {
                    label,
                    ns,
                    dispatches,
                })
                .collect();
            v.sort_by(|a, b| b.ns.total_cmp(&a.ns));
            v
        }))
    }

    /// A new pending batch (timed while profiling).
    fn new_batch(&self) -> GpuBatch<'static> {
        let mut b = self.ctx.shared_batch();
        if self
            .profile
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            if self.profile_passes.load(Ordering::Relaxed) {
                b.enable_pass_timing();
            } else {
                b.enable_timing();
            }
        }
        b
    }

    /// Submits `b`; a timed batch waits and adds its kernels' times to the profile.
    /// Records the argmax of `buf[offset .. offset + n]` into `out` (one
    /// u32) and, with `feed`, its copy into `feed`'s first id. The kernel
    /// reads from element 0: an offset range is copied to the front of a
    /// scratch buffer first.
    fn record_argmax(
        &self,
        op: &'static str,
        buf: &GpuTensor,
        offset: usize,
        n: usize,
        out: &GpuTensor,
        feed: Option<&GpuTensor>,
    ) -> Result<(), TensorError> {
        let src = if offset == 0 {
            None
        } else {
            Some(
                self.ctx
                    .scratch("argmax_src", n, GpuDType::F32)
                    .map_err(|e| tensor_error(op, e))?,
            )
        };
        self.record(op, |b| {
            match &src {
                Some(tmp) => {
                    b.copy(buf, offset, tmp, 0, n)?;
                    b.argmax(tmp, n, out)?;
                }
                None => b.argmax(buf, n, out)?,
            }
            match feed {
                Some(ids) => b.copy(out, 0, ids, 0, 1),
                None => Ok(()),
            }
        })
    }

    fn submit_batch(&self, b: GpuBatch<'static>) -> Result<(), WgpuError> {
        if !b.is_timed() {
            return b.submit();
        }
        let times = b.submit_timed()?;
        if let Some(m) = self
            .profile
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            for (label, ns) in times {
                let e = m.entry(label).or_insert((0.0, 0));
                e.0 += ns;
                e.1 += 1;
            }
        }
        Ok(())
    }

    /// Takes the note that `q8x` holds a packed copy of some buffer (every
    /// op but the fused GLU's following matvec invalidates it).
    fn forget_q8_src(&self) -> Option<Q8Note> {
        self.q8_src.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// The buffer kept in `slot`, replaced by a larger one when it holds
    /// fewer than `len` elements (backend-owned scratch, reused across calls).
    fn reused(
        &self,
        slot: &mut Option<GpuTensor>,
        len: usize,
        dtype: GpuDType,
    ) -> Result<GpuTensor, WgpuError> {
        match slot.as_ref() {
            Some(t) if t.len() >= len && t.dtype() == dtype => Ok(t.clone()),
            _ => {
                let t = self.ctx.zeros(len.max(1), dtype)?;
                *slot = Some(t.clone());
                Ok(t)
            }
        }
    }

    /// The activation mode in which projections of `n_tok` tokens by `m`
    /// take the integer matvec/matmul, if they do: where the type has one and
    /// the rows split into the mode's blocks, for fewer than
    /// [`REG_MATMUL_MIN_TOKENS`] tokens. Longer prompts take the f32
    /// register-blocked or the cooperative-matrix kernel: on the H100 without
    /// cooperative matrices, pp512 of llama-8b Q4_0 / Q4_K_M ran at 874 / 510
    /// t/s with the integer matmul (8 tokens per workgroup, each weight unit
    /// decoded per token) and 991 / 909 with the register-blocked one.
    fn q8_mode(&self, m: &QuantMatrix, n_tok: usize) -> Option<Q8Mode> {
        let ty = m.ggml_type();
        let mode = Q8Mode::of(ty);
        let blocks = (m.n_cols() as usize).is_multiple_of(mode.block());
        if self.exact && has_exact_matmul(ty) && blocks {
            return Some(mode);
        }
        (self.int_matvec && n_tok < REG_MATMUL_MIN_TOKENS as usize && has_q8_matvec(ty) && blocks)
            .then_some(mode)
    }

    /// Chooses between the kernels that reproduce the CPU backend's float
    /// order (`true`, the default; `ZETA_GPU_EXACT=0` turns it off) for the
    /// projections of Q4_0, Q4_1, Q5_0, Q8_0, Q4_K and Q6_K weights and for
    /// attention over an f16 cache, and the faster ones that sum in their
    /// own order (`false`). RMSNorm, RoPE and the GLU are the CPU's bit for
    /// bit either way.
    pub fn set_exact(&mut self, on: bool) {
        self.exact = on;
    }

    /// The RoPE table of `p` (with `ff`) covering positions `..end`,
    /// computed with the CPU backend's `rope_cache_row` (grown by doubling).
    fn rope_table(
        &self,
        op: &'static str,
        p: &RopeParams,
        ff: Option<&GpuWeight>,
        end: usize,
    ) -> Result<GpuTensor, TensorError> {
        let ff = ff.and_then(|w| w.host.clone());
        let key = (p.n_dims, p.freq_base.to_bits(), p.freq_scale.to_bits(), ff);
        let mut tables = self.rope_tables.lock().unwrap_or_else(|e| e.into_inner());
        let i = match tables.iter().position(|t| t.key == key) {
            Some(i) if tables[i].rows >= end => return Ok(tables[i].table.clone()),
            found => found,
        };
        let rows = end.next_power_of_two().max(512);
        let n = rows
            .checked_mul(p.n_dims)
            .ok_or_else(|| shape_err(op, "RoPE table too large"))?;
        let mut v = Vec::new();
        v.try_reserve_exact(n).map_err(|_| TensorError::Alloc {
            bytes: n as u128 * 4,
        })?;
        v.resize(n, 0f32);
        let theta_scale = zeta_tensor::cpu::ops_exports::rope_theta_scale(p);
        for (pos, row) in v.chunks_exact_mut(p.n_dims.max(1)).enumerate() {
            zeta_tensor::cpu::ops_exports::rope_cache_row(
                pos,
                theta_scale,
                p.freq_scale,
                key.3.as_deref(),
                row,
            );
        }
        let table = self.ctx.upload_f32(&v).map_err(|e| tensor_error(op, e))?;
        let entry = RopeTable {
            key,
            rows,
            table: table.clone(),
        };
        match i {
            Some(i) => tables[i] = entry,
            None => tables.push(entry),
        }
        Ok(table)
    }

    /// Chooses the projections' kernels: integer dot products on 8-bit
    /// activations rounded as the CPU's (`true`, the default where the
    /// weight type has them; the `ZETA_GPU_NO_Q8=1` environment variable
    /// turns it off) or f32 activations throughout (`false`).
    pub fn set_int_matvec(&mut self, on: bool) {
        self.int_matvec = on;
    }

    /// The backend's reused buffer of 8-bit activations, at least `words` long.
    fn q8x(&self, op: &'static str, words: usize) -> Result<GpuTensor, TensorError> {
        self.reused(
            &mut self.q8x.lock().unwrap_or_else(|e| e.into_inner()),
            words,
            GpuDType::U32,
        )
        .map_err(|e| tensor_error(op, e))
    }

    /// The mode `by` packs in (its last consumer's).
    fn pack_mode(&self, by: Packer) -> Q8Mode {
        self.pack_modes.lock().unwrap_or_else(|e| e.into_inner())[by as usize]
    }

    /// Records `f`, an op of one token that also packs the first `n` values
    /// of its output `out` into `q8x` (given to `f`) in `mode`, and leaves the
    /// note that lets the next projection of `out` skip its own pack.
    fn record_packing(
        &self,
        op: &'static str,
        by: Packer,
        out: &GpuTensor,
        n: usize,
        mode: Q8Mode,
        f: impl FnOnce(&mut GpuBatch<'static>, &GpuTensor) -> Result<(), WgpuError>,
    ) -> Result<(), TensorError> {
        let xq = self.q8x(op, ops::q8_words(n))?;
        let note = (out.buffer.clone(), n, mode, by);
        self.record_noted(op, |b, _| {
            f(b, &xq)?;
            Ok(((), Some(note)))
        })
    }

    /// outs[i] (+)= ws[i] x for `n_tok` tokens (x `[n_tok, cols_i]`, out
    /// `[n_tok, rows_i]`): x is quantised once per activation mode (into the
    /// backend's reused `q8x` buffer) for the weights that take the integer
    /// kernels; the others use the f32 ones. With `norm` ([`NormIn`]), x is
    /// first RMS-normalised into `xb` (after a post-norm into x, when
    /// given), which the projections then read; for one token that is fused
    /// with the quantisation when every weight takes the integer matvec in
    /// one mode.
    fn project(
        &self,
        op: &'static str,
        x: &GpuTensor,
        norm: Option<NormIn<'_>>,
        outs: &mut [(&QuantMatrix, &mut GpuTensor)],
        accumulate: bool,
        n_tok: usize,
    ) -> Result<(), TensorError> {
        // Integer groups by (mode, cols), in order of first use; f32 = None.
        let keys: Vec<Option<(Q8Mode, usize)>> = outs
            .iter()
            .map(|(m, _)| self.q8_mode(m, n_tok).map(|md| (md, m.n_cols() as usize)))
            .collect();
        let mut groups: Vec<(Q8Mode, usize)> = Vec::new();
        for k in keys.iter().flatten() {
            if !groups.contains(k) {
                groups.push(*k);
            }
        }
        let fused =
            n_tok == 1 && norm.is_some() && groups.len() == 1 && keys.iter().all(Option::is_some);
        let words = groups
            .iter()
            .map(|&(_, c)| {
                ops::q8_stride(c)
                    .checked_mul(n_tok)
                    .ok_or_else(|| shape_err(op, "too many tokens"))
            })
            .try_fold(0, |a, w| w.map(|w| a.max(w)))?;
        let xq = if groups.is_empty() {
            None
        } else {
            Some(self.q8x(op, words)?)
        };
        let n = to_u32(op, n_tok)?;
        let multi = n_tok == 1 && !accumulate && outs.len() > 1 && self.ctx.use_subgroups();
        // Exact mode: exact types take the exact group kernel, others the integer one.
        let exact_group = |m: &QuantMatrix| self.exact && has_exact_matmul(m.ggml_type());
        let dummy = if multi && !groups.is_empty() {
            Some(
                self.reused(
                    &mut self.dummy.lock().unwrap_or_else(|e| e.into_inner()),
                    4,
                    GpuDType::F32,
                )
                .map_err(|e| tensor_error(op, e))?,
            )
        } else {
            None
        };
        self.record_noted(op, |b, note| {
            // A pre-norm weight group whose kernel stages the norm itself
            // (every workgroup normalises and packs x): one dispatch.
            if let (true, Some((w, eps, xb, _, None)), Some(xq), Some(dummy)) =
                (fused, norm, &xq, &dummy)
            {
                let ms: Vec<&QuantMatrix> = outs.iter().map(|(m, _)| *m).collect();
                if (2..=3).contains(&ms.len())
                    && exact_group(ms[0])
                    && norm_staging_pays(&ms)
                    && b.can_rms_norm_matmul_exact_multi(&ms)
                {
                    let ys: Vec<&GpuTensor> = outs.iter().map(|(_, y)| &**y).collect();
                    let gn = ops::GroupNorm { x, w, xb, eps };
                    b.rms_norm_matmul_exact_multi(&gn, &ms, xq, &ys, dummy)?;
                    return Ok(((), None));
                }
            }
            let x = match norm {
                Some((w, eps, xb, cols, post)) => {
                    match (&xq, fused, post) {
                        (Some(xq), true, Some((src, pw))) => b.post_add_rms_norm_pack_q8(
                            src,
                            pw,
                            x,
                            w,
                            xb,
                            xq,
                            cols,
                            eps,
                            groups[0].0,
                        )?,
                        (Some(xq), true, None) => {
                            b.rms_norm_pack_q8(x, w, xb, xq, cols, eps, groups[0].0)?
                        }
                        (_, _, post) => {
                            if let Some((src, pw)) = post {
                                b.rms_norm_inplace_add(src, pw, x, n, cols, eps)?;
                            }
                            b.rms_norm(x, w, xb, n, cols, eps)?
                        }
                    }
                    xb
                }
                None => x,
            };
            for (g, &(mode, cols)) in groups.iter().enumerate() {
                let Some(xq) = &xq else { break };
                // Packed already by the op just before (fused GLU)?
                let noted = match &note {
                    Some((buf, nn, md, by))
                        if g == 0
                            && n_tok == 1
                            && norm.is_none()
                            && *buf == x.buffer
                            && *nn == cols =>
                    {
                        if *md != mode {
                            // The packer learns its consumer's mode.
                            self.pack_modes.lock().unwrap_or_else(|e| e.into_inner())
                                [*by as usize] = mode;
                        }
                        *md == mode
                    }
                    _ => false,
                };
                if !(fused || noted) {
                    // A lone Q4_K / Q6_K projection of one token with short
                    // rows (e.g. Gemma 3's output projection, after an
                    // attention that does not pack Q8_K): it packs its input
                    // itself, one dispatch fewer.
                    if let [(m, out)] = &mut outs[..]
                        && n_tok == 1
                        && m.n_cols() <= F32_PACK_MAX_COLS
                        && exact_group(m)
                        && b.can_matmul_exact_f32(m)
                    {
                        b.matmul_exact_f32(m, x, out, accumulate)?;
                        continue;
                    }
                    b.pack_q8_rows(x, xq, cols, n_tok, mode)?;
                }
                // Weights of one group buffer (Q/K/V, gate/up): one dispatch.
                let mut done = vec![false; outs.len()];
                if let Some(dummy) = &dummy {
                    for i in 0..outs.len() {
                        if done[i] || keys[i] != Some((mode, cols)) {
                            continue;
                        }
                        let exact = exact_group(outs[i].0);
                        let can = |b: &GpuBatch<'_>, ms: &[&QuantMatrix]| {
                            if exact {
                                b.can_matmul_exact_multi(ms)
                            } else {
                                b.can_matvec_q8_multi(ms)
                            }
                        };
                        let same: Vec<usize> = (i..outs.len())
                            .filter(|&j| {
                                !done[j] && keys[j] == keys[i] && can(b, &[outs[i].0, outs[j].0])
                            })
                            .take(3)
                            .collect();
                        let ms: Vec<&QuantMatrix> = same.iter().map(|&j| outs[j].0).collect();
                        if same.len() >= 2 && can(b, &ms) {
                            let ys: Vec<&GpuTensor> = same.iter().map(|&j| &*outs[j].1).collect();
                            if exact {
                                b.matmul_exact_multi(&ms, xq, &ys, dummy)?;
                            } else {
                                b.matvec_q8_multi(&ms, xq, &ys, dummy)?;
                            }
                            for j in same {
                                done[j] = true;
                            }
                        }
                    }
                }
                for (((m, out), k), _) in outs.iter().zip(&keys).zip(&done).filter(|(_, d)| !**d) {
                    if *k != Some((mode, cols)) {
                        continue;
                    }
                    if self.exact && has_exact_matmul(m.ggml_type()) {
                        b.matmul_exact(m, xq, out, n, accumulate)?;
                    } else if n_tok == 1 {
                        b.matvec_q8(m, xq, out, accumulate)?;
                    } else {
                        b.matmul_q8(m, xq, out, n, accumulate)?;
                    }
                }
            }
            for ((m, out), k) in outs.iter().zip(&keys) {
                match (k, n_tok, accumulate) {
                    (Some(_), _, _) => {}
                    (None, 1, true) => b.matvec_add(m, x, out)?,
                    (None, 1, false) => b.matvec(m, x, out)?,
                    (None, _, false) => b.matmul(m, x, out, n)?,
                    (None, _, true) => {
                        return Err(WgpuError::Gpu(format!(
                            "{op}: f32 matmul cannot accumulate"
                        )));
                    }
                }
            }
            Ok(((), None))
        })
    }

    /// The device context.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    /// Records work into the pending batch. On error the pending batch is
    /// dropped (its work never runs; the caller's forward pass has failed).
    fn record<R>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut GpuBatch<'static>) -> Result<R, WgpuError>,
    ) -> Result<R, TensorError> {
        self.record_noted(op, |b, _| f(b).map(|r| (r, None)))
    }

    /// [`record`](Self::record) for the ops that use or leave a note that
    /// `q8x` holds a packed buffer (`q8_src`): `f` gets the note left by the
    /// op recorded just before and returns the one to leave. Both are read
    /// and written under the pending lock, so ops of other threads sharing
    /// the backend cannot come between.
    fn record_noted<R>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut GpuBatch<'static>, Option<Q8Note>) -> Result<(R, Option<Q8Note>), WgpuError>,
    ) -> Result<R, TensorError> {
        {
            let mut a = self.ahead.lock().unwrap_or_else(|e| e.into_inner());
            if a.recording == Some(std::thread::current().id()) {
                let note = a.note.take();
                let batch = a.batch.get_or_insert_with(|| self.ctx.shared_batch());
                return match f(batch, note) {
                    Ok((r, note)) => {
                        a.note = note;
                        Ok(r)
                    }
                    Err(e) => {
                        a.abandon();
                        Err(tensor_error(op, e))
                    }
                };
            }
        }
        let mut guard = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let note = self.forget_q8_src();
        let batch = guard.get_or_insert_with(|| self.new_batch());
        match f(batch, note) {
            Ok((r, note)) => {
                *self.q8_src.lock().unwrap_or_else(|e| e.into_inner()) = note;
                if batch.dispatches() >= SUBMIT_EVERY_DISPATCHES
                    && let Some(b) = guard.take()
                {
                    self.submit_batch(b).map_err(|e| tensor_error(op, e))?;
                }
                Ok(r)
            }
            Err(e) => {
                *guard = None;
                Err(tensor_error(op, e))
            }
        }
    }

    /// Submits the pending batch (does not wait).
    pub fn flush(&self) -> Result<(), TensorError> {
        let batch = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match batch {
            Some(b) => self.submit_batch(b).map_err(|e| tensor_error("flush", e)),
            None => Ok(()),
        }
    }

    /// Submits the pending batch and waits for the device to finish it.
    pub fn sync(&self) -> Result<(), TensorError> {
        self.flush()?;
        self.ctx.wait().map_err(|e| tensor_error("sync", e))
    }

    /// Compiles the pipelines for weights of `types` now (instead of at
    /// first use), in exact mode also the staged-norm group kernels for rows
    /// of `cols` columns (their workgroup copy is sized by the row);
    /// returns how many were compiled or cached.
    pub fn precompile(&self, types: &[GgmlType], cols: &[u64]) -> Result<usize, TensorError> {
        let err = |e| tensor_error("precompile", e);
        let mut n = self.ctx.precompile(types).map_err(err)?;
        if self.exact {
            n += self.ctx.precompile_staged_norm(types, cols).map_err(err)?;
        }
        Ok(n)
    }
}

impl GpuBackend {
    /// `name` as a member of a weight group ([`WEIGHT_GROUPS`]): from the
    /// cache when a sibling was uploaded first, else uploaded now together
    /// with the siblings of the same type and row length (which wait in the
    /// cache). `None` for weights outside a group of two or more.
    fn grouped_weight(
        &self,
        gguf: &Arc<Gguf>,
        name: &str,
    ) -> Result<Option<GpuWeight>, TensorError> {
        const OP: &str = "upload_weight";
        let file = Arc::as_ptr(gguf) as usize;
        let mut cache = self.group_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, w)) = cache.remove(&(file, name.to_string())) {
            return Ok(Some(w));
        }
        if !self.ctx.use_subgroups() {
            return Ok(None);
        }
        let Some((prefix, group)) = WEIGHT_GROUPS.iter().find_map(|g| {
            g.iter()
                .find_map(|suffix| name.strip_suffix(suffix).map(|p| (p, *g)))
        }) else {
            return Ok(None);
        };
        let Some(me) = gguf.tensor(name) else {
            return Ok(None);
        };
        let key = |i: &zeta_gguf::TensorInfo| (i.ggml_type, i.row_len(), i.dims.len());
        let members: Vec<(String, &zeta_gguf::TensorInfo)> = group
            .iter()
            .map(|suffix| format!("{prefix}{suffix}"))
            .filter_map(|n| gguf.tensor(&n).map(|i| (n, i)))
            .filter(|(_, i)| key(i) == key(me))
            .collect();
        if members.len() < 2 || me.dims.len() != 2 || !has_q8_matvec(me.ggml_type) {
            return Ok(None);
        }
        let mut weights = Vec::with_capacity(members.len());
        for (n, info) in &members {
            let data = gguf.tensor_data(info);
            let want = info
                .ggml_type
                .row_bytes(info.row_len())
                .and_then(|rb| rb.checked_mul(info.n_rows()));
            if want != Some(data.len() as u64) {
                return Err(shape_err(OP, format!("{n}: {} data bytes", data.len())));
            }
            weights.push((info.ggml_type, info.n_rows(), info.row_len(), data));
        }
        let mats = self
            .ctx
            .upload_group(&weights)
            .map_err(|e| tensor_error(OP, e))?;
        let mut mine = None;
        for ((n, info), m) in members.iter().zip(mats) {
            let w = GpuWeight {
                dims: info.dims.clone(),
                ty: info.ggml_type,
                cols: usize::try_from(info.row_len()).map_err(|_| shape_err(OP, "row too long"))?,
                rows: usize::try_from(info.n_rows()).map_err(|_| shape_err(OP, "too many rows"))?,
                matrix: Some(m),
                vector: None,
                host: None,
            };
            if n == name {
                mine = Some(w);
            } else {
                cache.insert((file, n.clone()), (Arc::clone(gguf), w));
            }
        }
        Ok(mine)
    }
}

/// Host dequantization of a 1-D weight to f32.
fn dequantize_vector(ty: GgmlType, data: &[u8], n: usize) -> Result<Vec<f32>, TensorError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| TensorError::Alloc {
        bytes: n as u128 * 4,
    })?;
    v.resize(n, 0f32);
    if ty == GgmlType::F32 {
        need("upload_weight", n * 4, data.len())?;
        for (d, c) in v.iter_mut().zip(data.chunks_exact(4)) {
            *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
    } else {
        zeta_quant::dequantize(ty, data, &mut v)?;
    }
    Ok(v)
}

impl Backend for GpuBackend {
    type Buffer = GpuTensor;
    type KvBuffer = GpuTensor;
    type Weight = GpuWeight;

    fn name(&self) -> &'static str {
        "gpu"
    }

    fn upload_weight(&self, gguf: &Arc<Gguf>, name: &str) -> Result<GpuWeight, TensorError> {
        const OP: &str = "upload_weight";
        if let Some(w) = self.grouped_weight(gguf, name)? {
            return Ok(w);
        }
        let info = gguf
            .tensor(name)
            .ok_or_else(|| TensorError::MissingTensor {
                name: name.to_string(),
            })?;
        let ty = info.ggml_type;
        let cols = usize::try_from(info.row_len()).map_err(|_| shape_err(OP, "row too long"))?;
        let rows = usize::try_from(info.n_rows()).map_err(|_| shape_err(OP, "too many rows"))?;
        let row_bytes = ty
            .row_bytes(info.row_len())
            .and_then(|b| usize::try_from(b).ok())
            .ok_or_else(|| {
                shape_err(
                    OP,
                    format!("{name}: row length {cols} is not a multiple of the {ty} block size"),
                )
            })?;
        let data = gguf.tensor_data(info);
        if data.len() != row_bytes.saturating_mul(rows) {
            return Err(shape_err(
                OP,
                format!(
                    "{name}: {} data bytes for {rows} rows of {row_bytes} bytes",
                    data.len()
                ),
            ));
        }
        let (vector, host) = if info.dims.len() == 1 || rows == 1 {
            let v = dequantize_vector(ty, data, cols)?;
            let t = self.ctx.upload_f32(&v).map_err(|e| tensor_error(OP, e))?;
            (Some(t), Some(Arc::from(v)))
        } else {
            (None, None)
        };
        let matrix = if info.dims.len() >= 2 {
            if deq_fn(ty).is_none() {
                return Err(TensorError::UnsupportedType { op: OP, ty });
            }
            Some(
                self.ctx
                    .upload_tensor(info, data)
                    .map_err(|e| tensor_error(OP, e))?,
            )
        } else {
            None
        };
        Ok(GpuWeight {
            dims: info.dims.clone(),
            ty,
            cols,
            rows,
            matrix,
            vector,
            host,
        })
    }

    fn weight_dims(&self, w: &GpuWeight) -> Vec<u64> {
        w.dims.clone()
    }

    fn weight_type(&self, w: &GpuWeight) -> GgmlType {
        w.ty
    }

    fn alloc(&self, len: usize) -> Result<GpuTensor, TensorError> {
        self.ctx
            .zeros(len, GpuDType::F32)
            .map_err(|e| tensor_error("alloc", e))
    }

    fn alloc_kv(&self, len: usize) -> Result<GpuTensor, TensorError> {
        self.ctx
            .zeros(len, GpuDType::F16)
            .map_err(|e| tensor_error("alloc_kv", e))
    }

    fn write(&self, buf: &mut GpuTensor, offset: usize, data: &[f32]) -> Result<(), TensorError> {
        need("write", offset.saturating_add(data.len()), buf.len())?;
        if data.is_empty() {
            return Ok(());
        }
        // Recorded work that reads `buf` must run before the upload lands.
        self.forget_q8_src();
        self.flush()?;
        self.ctx
            .write_f32(buf, offset, data)
            .map_err(|e| tensor_error("write", e))
    }

    fn read(&self, buf: &GpuTensor, offset: usize, out: &mut [f32]) -> Result<(), TensorError> {
        need("read", offset.saturating_add(out.len()), buf.len())?;
        if out.is_empty() {
            return Ok(());
        }
        self.flush()?;
        self.ctx
            .read_f32_into(buf, offset, out)
            .map_err(|e| tensor_error("read", e))
    }

    fn argmax(&self, buf: &GpuTensor, offset: usize, n: usize) -> Result<u32, TensorError> {
        const OP: &str = "argmax";
        check_argmax(OP, buf, offset, n)?;
        let mut slot = self.argmax_out.lock().unwrap_or_else(|e| e.into_inner());
        let out = self
            .reused(&mut slot, 1, GpuDType::U32)
            .map_err(|e| tensor_error(OP, e))?;
        self.record_argmax(OP, buf, offset, n, &out, None)?;
        self.flush()?;
        let v = self.ctx.read_u32(&out).map_err(|e| tensor_error(OP, e))?;
        first_id(OP, &v)
    }

    fn copy(
        &self,
        src: &GpuTensor,
        src_off: usize,
        dst: &mut GpuTensor,
        dst_off: usize,
        n: usize,
    ) -> Result<(), TensorError> {
        need("copy", src_off.saturating_add(n), src.len())?;
        need("copy", dst_off.saturating_add(n), dst.len())?;
        if n == 0 {
            return Ok(());
        }
        self.record("copy", |b| b.copy(src, src_off, dst, dst_off, n))
    }

    fn get_rows(
        &self,
        table: &GpuWeight,
        ids: &[u32],
        out: &mut GpuTensor,
    ) -> Result<(), TensorError> {
        const OP: &str = "get_rows";
        need(OP, ids.len().saturating_mul(table.cols), out.len())?;
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= table.rows) {
            return Err(TensorError::RowOutOfRange {
                op: OP,
                row: u64::from(bad),
                n_rows: table.rows as u64,
            });
        }
        if ids.is_empty() {
            return Ok(());
        }
        let m = table.matrix(OP)?;
        // One reused ids buffer per backend: a queued write lands before the
        // next submission, so recorded work that still reads the previous ids
        // is submitted first (a decode step starts here with nothing
        // pending). The pending lock is held from that submission to the
        // recording, so no other thread's ids come between.
        let mut guard = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        self.forget_q8_src();
        if let Some(b) = guard.take_if(|b| b.dispatches() > 0) {
            self.submit_batch(b).map_err(|e| tensor_error(OP, e))?;
        }
        let ids_gpu = self
            .reused(
                &mut self.ids.lock().unwrap_or_else(|e| e.into_inner()),
                ids.len(),
                GpuDType::U32,
            )
            .map_err(|e| tensor_error(OP, e))?;
        self.ctx
            .write_u32(&ids_gpu, 0, ids)
            .map_err(|e| tensor_error(OP, e))?;
        let batch = guard.get_or_insert_with(|| self.new_batch());
        if let Err(e) = batch.embed_n(m, &ids_gpu, ids.len(), out) {
            *guard = None;
            return Err(tensor_error(OP, e));
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), TensorError> {
        GpuBackend::flush(self)
    }

    fn begin_ahead(&self) -> Result<Option<u64>, TensorError> {
        // Profiled runs time their batches one by one, as they are recorded.
        if self
            .profile
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return Ok(None);
        }
        let mut a = self.ahead.lock().unwrap_or_else(|e| e.into_inner());
        *a = Ahead {
            ticket: a.ticket + 1,
            recording: Some(std::thread::current().id()),
            ..Ahead::default()
        };
        Ok(Some(a.ticket))
    }

    fn get_rows_ahead(
        &self,
        table: &GpuWeight,
        n: usize,
        out: &mut GpuTensor,
    ) -> Result<(), TensorError> {
        const OP: &str = "get_rows_ahead";
        need(OP, n.saturating_mul(table.cols), out.len())?;
        if n == 0 {
            return Err(shape_err(OP, "no ids"));
        }
        let m = table.matrix(OP)?;
        let mut a = self.ahead.lock().unwrap_or_else(|e| e.into_inner());
        if a.recording != Some(std::thread::current().id()) {
            return Err(shape_err(OP, "not recording ahead"));
        }
        let ids_gpu = self
            .reused(
                &mut self.ahead_ids.lock().unwrap_or_else(|e| e.into_inner()),
                n,
                GpuDType::U32,
            )
            .map_err(|e| tensor_error(OP, e))?;
        a.note = None;
        a.n_ids = n;
        a.table_rows = table.rows;
        let batch = a.batch.get_or_insert_with(|| self.ctx.shared_batch());
        if let Err(e) = batch.embed_n(m, &ids_gpu, n, out) {
            a.abandon();
            return Err(tensor_error(OP, e));
        }
        Ok(())
    }

    fn end_ahead(&self) -> Result<(), TensorError> {
        let mut a = self.ahead.lock().unwrap_or_else(|e| e.into_inner());
        let recording = a.recording.take();
        let batch = a.batch.take();
        a.note = None;
        if recording != Some(std::thread::current().id()) {
            return Err(shape_err("end_ahead", "not recording ahead"));
        }
        // Encoded now, while the device still runs earlier work: at
        // `submit_ahead` only the submission is left.
        a.ready = match batch {
            Some(b) => Some(b.finish().map_err(|e| tensor_error("end_ahead", e))?),
            None => None,
        };
        Ok(())
    }

    fn submit_ahead(&self, ticket: u64, ids: &[u32]) -> Result<bool, TensorError> {
        const OP: &str = "submit_ahead";
        let ready = {
            let mut a = self.ahead.lock().unwrap_or_else(|e| e.into_inner());
            if a.ticket != ticket || a.recording.is_some() || a.ready.is_none() {
                // Dropped, replaced, or still being recorded.
                return Ok(false);
            }
            if ids.len() != a.n_ids {
                return Err(shape_err(
                    OP,
                    format!("{} ids for a step recorded with {}", ids.len(), a.n_ids),
                ));
            }
            if let Some(&bad) = ids.iter().find(|&&id| id as usize >= a.table_rows) {
                // The held step stays held: a valid id can still run it.
                return Err(TensorError::RowOutOfRange {
                    op: OP,
                    row: u64::from(bad),
                    n_rows: a.table_rows as u64,
                });
            }
            match a.ready.take() {
                Some(r) => r,
                None => return Ok(false),
            }
        };
        let ids_gpu = self
            .ahead_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| shape_err(OP, "no ids buffer"))?;
        // Work recorded before runs before; the ids land before this
        // submission (a queued write), after every earlier one.
        let mut guard = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        // What `q8x` holds after the step is the step's business.
        self.forget_q8_src();
        if let Some(b) = guard.take() {
            self.submit_batch(b).map_err(|e| tensor_error(OP, e))?;
        }
        self.ctx
            .write_u32(&ids_gpu, 0, ids)
            .map_err(|e| tensor_error(OP, e))?;
        ready.submit().map_err(|e| tensor_error(OP, e))?;
        Ok(true)
    }

    fn argmax_feed_ahead(
        &self,
        buf: &GpuTensor,
        offset: usize,
        n: usize,
        ticket: u64,
    ) -> Result<(u32, bool), TensorError> {
        const OP: &str = "argmax_feed_ahead";
        check_argmax(OP, buf, offset, n)?;
        let ids_gpu = self
            .ahead_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let held = {
            let mut a = self.ahead.lock().unwrap_or_else(|e| e.into_inner());
            // A one-id step whose embedding takes any argmax (< n <= rows).
            let fits = a.ticket == ticket
                && a.recording.is_none()
                && a.n_ids == 1
                && n <= a.table_rows
                && ids_gpu.is_some();
            if fits { a.ready.take() } else { None }
        };
        let (Some(ready), Some(ids_gpu)) = (held, ids_gpu) else {
            return Ok((Backend::argmax(self, buf, offset, n)?, false));
        };
        let mut slot = self.argmax_out.lock().unwrap_or_else(|e| e.into_inner());
        let out = self
            .reused(&mut slot, 1, GpuDType::U32)
            .map_err(|e| tensor_error(OP, e))?;
        // The argmax, and its copy into the held step's ids.
        self.record_argmax(OP, buf, offset, n, &out, Some(&ids_gpu))?;
        let read = {
            let mut guard = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            // What `q8x` holds after the step is the step's business.
            self.forget_q8_src();
            if let Some(b) = guard.take() {
                self.submit_batch(b).map_err(|e| tensor_error(OP, e))?;
            }
            // The id's read-back before the held step: waiting for it does
            // not wait for the step.
            let read = self
                .ctx
                .start_read_u32(&out, 1)
                .map_err(|e| tensor_error(OP, e))?;
            ready.submit().map_err(|e| tensor_error(OP, e))?;
            read
        };
        let v = self
            .ctx
            .finish_read_u32(read)
            .map_err(|e| tensor_error(OP, e))?;
        Ok((first_id(OP, &v)?, true))
    }

    fn matmul(
        &self,
        w: &GpuWeight,
        x: &GpuTensor,
        out: &mut GpuTensor,
        n_tokens: usize,
    ) -> Result<(), TensorError> {
        const OP: &str = "matmul";
        need(OP, n_tokens.saturating_mul(w.cols), x.len())?;
        need(OP, n_tokens.saturating_mul(w.rows), out.len())?;
        let m = w.matrix(OP)?;
        if n_tokens == 0 {
            return Ok(());
        }
        self.project(OP, x, None, &mut [(m, out)], false, n_tokens)
    }

    fn matmul_many(
        &self,
        x: &GpuTensor,
        outs: &mut [(&GpuWeight, &mut GpuTensor)],
        n_tokens: usize,
    ) -> Result<(), TensorError> {
        const OP: &str = "matmul";
        let mut mats = targets(OP, outs, x.len(), None, n_tokens)?;
        if n_tokens == 0 {
            return Ok(());
        }
        self.project(OP, x, None, &mut mats, false, n_tokens)
    }

    fn rms_norm_matmul_many(
        &self,
        x: &GpuTensor,
        norm: &GpuWeight,
        xb: &mut GpuTensor,
        outs: &mut [(&GpuWeight, &mut GpuTensor)],
        n_tokens: usize,
        eps: f32,
    ) -> Result<(), TensorError> {
        const OP: &str = "rms_norm_matmul_many";
        let v = norm.vector(OP)?;
        let cols = norm.cols;
        let len = cols.saturating_mul(n_tokens);
        need(OP, len, x.len())?;
        need(OP, len, xb.len())?;
        let n = to_u32(OP, cols)?;
        let mut mats = targets(OP, outs, len, Some(cols), n_tokens)?;
        if len == 0 {
            return Ok(());
        }
        self.project(
            OP,
            x,
            Some((v, eps, &*xb, n, None)),
            &mut mats,
            false,
            n_tokens,
        )
    }

    fn rms_norm_add_matmul_many(
        &self,
        x: &mut GpuTensor,
        src: &mut GpuTensor,
        post: &GpuWeight,
        norm: &GpuWeight,
        xb: &mut GpuTensor,
        outs: &mut [(&GpuWeight, &mut GpuTensor)],
        n_tokens: usize,
        eps: f32,
    ) -> Result<(), TensorError> {
        const OP: &str = "rms_norm_add_matmul_many";
        let cols = norm.cols;
        if n_tokens != 1 || post.cols != cols {
            self.rms_norm_add(x, src, post, n_tokens, eps)?;
            return self.rms_norm_matmul_many(x, norm, xb, outs, n_tokens, eps);
        }
        let (v, pv) = (norm.vector(OP)?, post.vector(OP)?);
        need(OP, cols, x.len())?;
        need(OP, cols, src.len())?;
        need(OP, cols, xb.len())?;
        let n = to_u32(OP, cols)?;
        let mut mats = targets(OP, outs, cols, Some(cols), 1)?;
        if cols == 0 {
            return Ok(());
        }
        self.project(
            OP,
            x,
            Some((v, eps, &*xb, n, Some((&*src, pv)))),
            &mut mats,
            false,
            1,
        )
    }

    fn matmul_add(
        &self,
        w: &GpuWeight,
        x: &GpuTensor,
        out: &mut GpuTensor,
        tmp: &mut GpuTensor,
        n_tokens: usize,
    ) -> Result<(), TensorError> {
        const OP: &str = "matmul_add";
        let m = w.matrix(OP)?;
        if n_tokens != 1 && self.q8_mode(m, n_tokens).is_none() {
            // Prefill with an f32 kernel: the matmul, then an add.
            self.matmul(w, x, tmp, n_tokens)?;
            return self.add(out, tmp, n_tokens.saturating_mul(w.rows));
        }
        need(OP, w.cols.saturating_mul(n_tokens), x.len())?;
        need(OP, w.rows.saturating_mul(n_tokens), out.len())?;
        if n_tokens == 0 {
            return Ok(());
        }
        self.project(OP, x, None, &mut [(m, out)], true, n_tokens)
    }

    fn add_bias(
        &self,
        x: &mut GpuTensor,
        bias: &GpuWeight,
        n_rows: usize,
    ) -> Result<(), TensorError> {
        const OP: &str = "add_bias";
        let v = bias.vector(OP)?;
        need(OP, n_rows.saturating_mul(bias.cols), x.len())?;
        if n_rows == 0 || bias.cols == 0 {
            return Ok(());
        }
        self.record(OP, |b| b.add_bias(x, v, n_rows, bias.cols))
    }

    fn rms_norm(
        &self,
        x: &GpuTensor,
        w: &GpuWeight,
        out: &mut GpuTensor,
        n_rows: usize,
        eps: f32,
    ) -> Result<(), TensorError> {
        const OP: &str = "rms_norm";
        let Some((v, r, c)) = norm_args(OP, w, n_rows, &[x, out])? else {
            return Ok(());
        };
        self.record(OP, |b| b.rms_norm(x, v, out, r, c, eps))
    }

    fn rms_norm_inplace(
        &self,
        x: &mut GpuTensor,
        w: &GpuWeight,
        n_rows: usize,
        eps: f32,
    ) -> Result<(), TensorError> {
        const OP: &str = "rms_norm";
        let Some((v, r, c)) = norm_args(OP, w, n_rows, &[x])? else {
            return Ok(());
        };
        self.record(OP, |b| b.rms_norm_inplace(x, v, r, c, eps))
    }

    fn rms_norm_add(
        &self,
        x: &mut GpuTensor,
        src: &mut GpuTensor,
        w: &GpuWeight,
        n_rows: usize,
        eps: f32,
    ) -> Result<(), TensorError> {
        const OP: &str = "rms_norm_add";
        let Some((v, r, c)) = norm_args(OP, w, n_rows, &[src, x])? else {
            return Ok(());
        };
        self.record(OP, |b| b.rms_norm_inplace_add(src, v, x, r, c, eps))
    }

    fn add(&self, a: &mut GpuTensor, b: &GpuTensor, n: usize) -> Result<(), TensorError> {
        need("add", n, a.len())?;
        need("add", n, b.len())?;
        if n == 0 {
            return Ok(());
        }
        self.record("add", |batch| batch.add_inplace(a, b, n))
    }

    fn scale(&self, x: &mut GpuTensor, n: usize, s: f32) -> Result<(), TensorError> {
        need("scale", n, x.len())?;
        if n == 0 {
            return Ok(());
        }
        self.record("scale", |b| b.scale_inplace(x, s, n))
    }

    fn rope(
        &self,
        x: &mut GpuTensor,
        n_tokens: usize,
        n_heads: usize,
        head_dim: usize,
        pos0: usize,
        params: &RopeParams,
        freq_factors: Option<&GpuWeight>,
    ) -> Result<(), TensorError> {
        const OP: &str = "rope";
        let n = n_tokens.saturating_mul(n_heads).saturating_mul(head_dim);
        need(OP, n, x.len())?;
        let ff = rope_factors(OP, params, head_dim, freq_factors)?;
        if n == 0 || params.n_dims == 0 {
            return Ok(());
        }
        let p = rope_params(OP, params, head_dim, n_heads, n_tokens)?;
        let table = self.rope_table(OP, params, freq_factors, pos0.saturating_add(n_tokens))?;
        let pos0 = to_u32(OP, pos0)?;
        self.record(OP, |b| {
            b.set_rope_table(Some(table));
            let r = b.rope_inplace(x, pos0, &p, ff);
            b.set_rope_table(None);
            r
        })
    }

    fn glu(
        &self,
        gate: &mut GpuTensor,
        up: &GpuTensor,
        n_rows: usize,
        n_cols: usize,
        kind: GluKind,
    ) -> Result<(), TensorError> {
        let n = n_rows.saturating_mul(n_cols);
        need("glu", n, gate.len())?;
        need("glu", n, up.len())?;
        if n == 0 {
            return Ok(());
        }
        let op = match kind {
            GluKind::SwiGlu => GluOp::SwiGlu,
            GluKind::GeGlu => GluOp::GeGlu,
        };
        let mode = self.pack_mode(Packer::Glu);
        if n_rows == 1 && self.int_matvec && n.is_multiple_of(mode.block()) {
            // One token: also pack the result for the down projection.
            return self.record_packing("glu", Packer::Glu, gate, n, mode, |b, xq| {
                b.glu_inplace_pack_q8(gate, up, xq, n, op, mode)
            });
        }
        self.record("glu", |b| b.glu_inplace(gate, up, n, op))
    }

    fn rope_store_kv(
        &self,
        q: &mut GpuTensor,
        k: &mut GpuTensor,
        v: &GpuTensor,
        k_cache: &mut GpuTensor,
        v_cache: &mut GpuTensor,
        shape: &AttnParams,
        params: &RopeParams,
        freq_factors: Option<&GpuWeight>,
        q_scale: Option<f32>,
        qk_norm: zeta_tensor::QkNorm<'_, GpuWeight>,
    ) -> Result<(), TensorError> {
        const OP: &str = "rope_store_kv";
        let s = shape;
        let norms = match qk_norm {
            Some((qn, kn, eps)) => Some((qn.vector(OP)?, kn.vector(OP)?, eps)),
            None => None,
        };
        if s.n_tokens == 0
            || params.n_dims == 0
            || !s.head_dim_v.is_multiple_of(2)
            || (norms.is_some() && s.head_dim_k > ops::MAX_HEAD_DIM as usize)
        {
            // Nothing to rotate, or odd value rows: the separate ops.
            return zeta_tensor::rope_store_kv_unfused(
                self,
                q,
                k,
                v,
                k_cache,
                v_cache,
                s,
                params,
                freq_factors,
                q_scale,
                qk_norm,
            );
        }
        if let Some((qn, _, _)) = qk_norm {
            need(OP, s.head_dim_k, qn.cols)?;
        }
        let ff = rope_factors(OP, params, s.head_dim_k, freq_factors)?;
        let p = rope_params(OP, params, s.head_dim_k, s.n_head, s.n_tokens)?;
        let table = self.rope_table(OP, params, freq_factors, s.pos0.saturating_add(s.n_tokens))?;
        let (pos0, n_kv, hdv) = (
            to_u32(OP, s.pos0)?,
            to_u32(OP, s.n_head_kv)?,
            to_u32(OP, s.head_dim_v)?,
        );
        self.record(OP, |b| {
            b.set_rope_table(Some(table));
            let r = b.rope_store_kv(
                q,
                k,
                v,
                k_cache,
                v_cache,
                pos0,
                &p,
                n_kv,
                hdv,
                ff,
                q_scale.unwrap_or(1.0),
                norms,
            );
            b.set_rope_table(None);
            r
        })
    }

    fn rms_norm_qkv_rope_store_kv(
        &self,
        x: &GpuTensor,
        norm: &GpuWeight,
        xb: &mut GpuTensor,
        w: [&GpuWeight; 3],
        [q, k, v]: [&mut GpuTensor; 3],
        k_cache: &mut GpuTensor,
        v_cache: &mut GpuTensor,
        eps: f32,
        shape: &AttnParams,
        params: &RopeParams,
        freq_factors: Option<&GpuWeight>,
        q_scale: Option<f32>,
    ) -> Result<(), TensorError> {
        const OP: &str = "rms_norm_qkv_rope_store_kv";
        let s = shape;
        // One token of the exact group kernel in the normal RoPE order,
        // f16 caches: the group's epilogue does RoPE and the cache write.
        // (A group the kernel takes has one type and row length, so one
        // activation mode.)
        let ms = [w[0].matrix(OP)?, w[1].matrix(OP)?, w[2].matrix(OP)?];
        let fusable = s.n_tokens == 1
            && self.exact
            && params.kind == RopeKind::Normal
            && params.n_dims > 0
            && q_scale.is_none()
            && k_cache.dtype() == GpuDType::F16
            && v_cache.dtype() == GpuDType::F16
            && w[0].cols == norm.cols
            && self.ctx.can_matmul_exact_multi_rope(&ms);
        let Some(mode) = self.q8_mode(ms[0], 1).filter(|_| fusable) else {
            return zeta_tensor::rms_norm_qkv_rope_store_kv_unfused(
                self,
                x,
                norm,
                xb,
                w,
                [q, k, v],
                k_cache,
                v_cache,
                eps,
                s,
                params,
                freq_factors,
                q_scale,
            );
        };
        let nv = norm.vector(OP)?;
        let cols = norm.cols;
        need(OP, cols, x.len())?;
        need(OP, cols, xb.len())?;
        let n = to_u32(OP, cols)?;
        rope_factors(OP, params, s.head_dim_k, freq_factors)?;
        let p = rope_params(OP, params, s.head_dim_k, s.n_head, 1)?;
        let table = self.rope_table(OP, params, freq_factors, s.pos0.saturating_add(1))?;
        let (pos, n_kv, hdv) = (
            to_u32(OP, s.pos0)?,
            to_u32(OP, s.n_head_kv)?,
            to_u32(OP, s.head_dim_v)?,
        );
        let xq = self.q8x(OP, ops::q8_stride(cols))?;
        self.record(OP, |b| {
            // The norm staged by the group kernel's workgroups, or a
            // dispatch of its own.
            let staged = norm_staging_pays(&ms) && b.can_rms_norm_matmul_exact_multi(&ms);
            if !staged {
                b.rms_norm_pack_q8(x, nv, xb, &xq, n, eps, mode)?;
            }
            b.set_rope_table(Some(table));
            let (kc, vc) = (&*k_cache, &*v_cache);
            let r = if staged {
                let gn = ops::GroupNorm { x, w: nv, xb, eps };
                b.rms_norm_matmul_exact_multi_rope(&gn, &ms, &xq, q, kc, vc, pos, &p, n_kv, hdv)
            } else {
                b.matmul_exact_multi_rope(&ms, &xq, q, kc, vc, pos, &p, n_kv, hdv)
            };
            b.set_rope_table(None);
            r
        })
    }

    fn store_kv(
        &self,
        src: &GpuTensor,
        dst: &mut GpuTensor,
        n_tokens: usize,
        row_len: usize,
        pos0: usize,
    ) -> Result<(), TensorError> {
        const OP: &str = "store_kv";
        let n = n_tokens.saturating_mul(row_len);
        need(OP, n, src.len())?;
        let off = pos0.saturating_mul(row_len);
        need(OP, off.saturating_add(n), dst.len())?;
        if n == 0 {
            return Ok(());
        }
        self.record(OP, |b| b.store(src, n, dst, off))
    }

    fn attention(
        &self,
        q: &GpuTensor,
        k_cache: &GpuTensor,
        v_cache: &GpuTensor,
        out: &mut GpuTensor,
        p: &AttnParams,
    ) -> Result<(), TensorError> {
        const OP: &str = "attention";
        if p.n_head_kv == 0 || !p.n_head.is_multiple_of(p.n_head_kv) {
            return Err(shape_err(
                OP,
                format!(
                    "n_head {} is not a multiple of n_head_kv {}",
                    p.n_head, p.n_head_kv
                ),
            ));
        }
        if p.window == Some(0) {
            return Err(shape_err(OP, "sliding window of 0"));
        }
        let kstride = p.n_head_kv.saturating_mul(p.head_dim_k);
        let vstride = p.n_head_kv.saturating_mul(p.head_dim_v);
        let n_kv = p.pos0.saturating_add(p.n_tokens);
        need(OP, n_kv.saturating_mul(kstride), k_cache.len())?;
        need(OP, n_kv.saturating_mul(vstride), v_cache.len())?;
        need(OP, p.n_tokens * p.n_head * p.head_dim_k, q.len())?;
        need(OP, p.n_tokens * p.n_head * p.head_dim_v, out.len())?;
        if p.n_tokens == 0 || p.n_head == 0 {
            return Ok(());
        }
        let gp = ops::AttnParams {
            head_dim: to_u32(OP, p.head_dim_k)?,
            head_dim_v: to_u32(OP, p.head_dim_v)?,
            n_head: to_u32(OP, p.n_head)?,
            n_kv_head: to_u32(OP, p.n_head_kv)?,
            n_kv: to_u32(OP, n_kv)?,
            window: match p.window {
                Some(w) => to_u32(OP, w.min(n_kv))?,
                None => 0,
            },
            scale: p.scale,
            softcap: 0.0,
        };
        let n_q = to_u32(OP, p.n_tokens)?;
        if self.exact
            && k_cache.dtype() == GpuDType::F16
            && v_cache.dtype() == GpuDType::F16
            && gp.head_dim.is_multiple_of(2)
        {
            let mode = self.pack_mode(Packer::Attention);
            if n_q == 1 && mode != Q8Mode::Q8K && p.head_dim_v.is_multiple_of(32) {
                // One token: also pack the output for the output projection.
                let n = p.n_head * p.head_dim_v;
                return self.record_packing(OP, Packer::Attention, out, n, mode, |b, xq| {
                    b.attention_exact_pack(q, k_cache, v_cache, out, &gp, xq, mode)
                });
            }
            return self.record(OP, |b| {
                b.attention_exact(q, k_cache, v_cache, out, &gp, n_q)
            });
        }
        let mode = self.pack_mode(Packer::Attention);
        let n = p.n_head * p.head_dim_v;
        if n_q == 1 && self.int_matvec && mode != Q8Mode::Q8K && p.head_dim_v.is_multiple_of(32) {
            // One token: also pack the output for the output projection.
            return self.record_packing(OP, Packer::Attention, out, n, mode, |b, xq| {
                b.attention_pack_q8(q, k_cache, v_cache, out, &gp, xq, mode)
            });
        }
        self.record(OP, |b| b.attention(q, k_cache, v_cache, out, &gp, n_q))
    }
}
