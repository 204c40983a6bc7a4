//! Op-level functions: record kernels into a [`GpuBatch`], submit once.
//!
//! Each op validates shapes on the host, fetches its pipeline from the cache,
//! stages its parameters in a 64-byte slot of the batch's uniform buffers
//! (256 slots per buffer, uploaded at submit) and records one compute pass
//! (several for split weights and two-phase attention). Nothing is read
//! back until the caller asks (`GpuContext::read_*`); a decode step can end in
//! [`GpuBatch::argmax`] and read back one `u32`.
//!
//! Shapes (row-major, f32 unless noted):
//! - matvec: W `[n_rows, n_cols]` (any of `pipeline::GPU_TYPES`), x `[n_cols]`, y `[n_rows]`
//! - embed: table `[n_vocab, n_cols]`, ids `[n_tokens]` u32, out `[n_tokens, n_cols]`
//! - rms_norm(_inplace): x, y `[n_rows, n_cols]`, w `[n_cols]`
//! - rope: x, y `[n_tokens, n_heads, head_dim]`, pos `[n_tokens]` u32; rope_inplace: positions pos0.., optional freq factors `[n_rot/2]`
//! - glu(_inplace), add(_inplace), mul, scale(_inplace): first `n` elements; add_bias: x `[n_rows, row_len]`, bias `[row_len]`
//! - softmax: x, y `[n_rows, n_cols]`
//! - argmax: x `[n]`, out `[1]` u32
//! - copy: f32/u32 ranges; store: src `[n]` f32 into dst `[offset .. offset + n]` (f32: buffer copy, f16: converting kernel)
//! - attention_decode: q `[n_head, head_dim]`, out `[n_head, head_dim_v]`; attention (prefill): q `[n_q, n_head, head_dim]`,
//!   out `[n_q, n_head, head_dim_v]`; K `[n_ctx, n_kv_head, head_dim]`, V `[n_ctx, n_kv_head, head_dim_v]`, f32 or f16
//!
//! Buffers may be larger than an op needs: ops use their leading elements
//! (as `zeta_tensor`'s backend conventions require) and check sizes.

use std::sync::Arc;

use crate::context::GpuContext;
use crate::error::{Result, WgpuError, shape};
use crate::pipeline::{
    EXACT_MULTI_NP, Q8_TPR, ShaderFile, ShaderVariant, attn_variant, exact_np, files,
    has_exact_matmul, matmul_exact_coop_variant, matmul_exact_f32_variant,
    matmul_exact_multi_variant, matmul_exact_tile_variant, matmul_exact_tr_norm_variant,
    matmul_exact_tr_variant, matmul_exact_variant, matmul_q8_variant, matvec_q8_multi_variant,
    matvec_q8_variant, matvec_variant, quant_variant,
};
use crate::tensor::{GpuDType, GpuTensor, QuantMatrix, WeightPart};
use zeta_gguf::GgmlType;
use zeta_tensor::cpu::kernels::{DotOrder, dot_order};

/// The most values [`GpuBatch::argmax`] takes in one workgroup (above: two
/// passes; a 262144-entry vocabulary took ~0.1 ms in one on the H100).
pub const ARGMAX_ONE_PASS: usize = 8192;

/// RoPE element order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeMode {
    /// Adjacent pairs (2i, 2i+1), llama.
    Normal,
    /// Halves (i, i + n_rot/2), NeoX/gemma/qwen.
    Neox,
}

/// Parameters of [`GpuBatch::rope`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeParams {
    /// Elements per head.
    pub head_dim: u32,
    /// Heads per token.
    pub n_heads: u32,
    /// Tokens.
    pub n_tokens: u32,
    /// Rotated dimensions (even, <= head_dim); the rest are copied.
    pub n_rot: u32,
    /// Element order.
    pub mode: RopeMode,
    /// Frequency base (e.g. 10000).
    pub freq_base: f32,
    /// Position scale (1 / linear scaling factor).
    pub freq_scale: f32,
}

/// Gated activation of [`GpuBatch::glu`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GluOp {
    /// silu(gate) * up.
    SwiGlu,
    /// gelu_tanh(gate) * up (computed in f32, like ggml's GPU backends).
    GeGlu,
}

/// Parameters of [`GpuBatch::attention_decode`] / [`GpuBatch::attention`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnParams {
    /// Query/key elements per head.
    pub head_dim: u32,
    /// Value elements per head (usually `head_dim`).
    pub head_dim_v: u32,
    /// Query heads.
    pub n_head: u32,
    /// KV heads (divides n_head).
    pub n_kv_head: u32,
    /// Valid cache positions (query position + 1).
    pub n_kv: u32,
    /// Sliding window (attend to the last `window` positions), 0 = none.
    pub window: u32,
    /// Score scale, usually 1/sqrt(head_dim).
    pub scale: f32,
    /// Logit soft-capping, 0 = off.
    pub softcap: f32,
}

/// How [`GpuBatch::round_activations`] rounds: like ggml's CPU backend
/// quantizes activations to a weight's `vec_dot_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActRound {
    /// Q8_0 / Q8_1 blocks of 32 (d = amax/127 stored as f16).
    Q8,
    /// Q8_K blocks of 256 (iscale = -127/max).
    Q8K,
    /// f16 values.
    F16,
    /// bf16 values.
    Bf16,
}

impl ActRound {
    /// Elements per block.
    pub fn block(self) -> usize {
        match self {
            Self::Q8K => 256,
            _ => 32,
        }
    }
}

/// From this many tokens on, [`GpuBatch::matmul`] uses the tiled kernel.
pub const TILED_MATMUL_MIN_TOKENS: u32 = 8;

/// From this many tokens the tiled matmul uses 64 x 64 tiles with 4 x 4
/// register blocks (matmul_reg.wgsl) instead of 64 x 16 tiles.
pub const REG_MATMUL_MIN_TOKENS: u32 = 48;

/// Largest head dimension the attention kernel supports.
pub const MAX_HEAD_DIM: u32 = 512;
const ATTN_CHUNK: u32 = 256;
/// Rows per workgroup of matmul_exact.wgsl's `lanes` and `blocks`.
const EXACT_ROWS: u64 = 8;

/// Tokens from which the exact matmul takes its one-invocation-per-output
/// kernels (`tile_*`; `ZETA_EXACT_TILE_MIN` overrides, for measurements).
fn exact_tile_min() -> u32 {
    static MIN: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *MIN.get_or_init(|| {
        std::env::var("ZETA_EXACT_TILE_MIN")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(8)
    })
}

/// Rows per workgroup of matmul_exact_sg.wgsl's entry points on a device
/// whose subgroups hold `sg_max` invocations at most: 256 / (8 np) with
/// np = clamp(sg_max / 8, 1, np_max) (the shader's np for its actual
/// subgroup size is at most this one's, so its rows per workgroup at least
/// as many).
fn exact_sg_rows(sg_max: u32, np_max: u32) -> u64 {
    32 / u64::from((sg_max / 8).clamp(1, np_max.max(1)))
}

/// Where an exact matmul dispatch adds and which tokens it reads
/// (`GpuBatch::exact_parts`): accumulate into y, the first token, the
/// activation rows' stride in words, the tokens.
#[derive(Clone, Copy)]
struct ExactAt {
    accumulate: bool,
    tok0: u32,
    x_stride: u32,
    run: u32,
}

/// Recorded GPU work; [`submit`](Self::submit) sends it to the queue.
pub struct GpuBatch<'a> {
    ctx: CtxRef<'a>,
    encoder: wgpu::CommandEncoder,
    /// Uniform buffers holding the dispatches' parameters, one slot each;
    /// their contents are staged here and written at submit, just before the
    /// commands run (instead of one buffer per dispatch).
    params: Vec<ParamBlock>,
    slot: u64,
    timing: Option<Timing>,
    /// The open compute pass: consecutive dispatches share one pass (wgpu
    /// orders them and inserts the barriers their bindings need), which
    /// costs the driver far less than a pass per dispatch. Closed before any
    /// other encoder command (copies, query resolves, finish).
    pass: Option<wgpu::ComputePass<'static>>,
    /// The (cos, sin) table the RoPE dispatches recorded next read (see
    /// [`GpuBatch::set_rope_table`]); `None`: computed in the kernel.
    rope_table: Option<GpuTensor>,
}

/// Bind groups by (pipeline, storage bindings, parameter slot). A decode step
/// records the same dispatches on the same buffers every token, so after the
/// first token its bind groups all come from here. Emptied when any counted
/// buffer is released (see `tensor::Allocation`) or when it grows past
/// `MAX_CACHED_BIND_GROUPS`.
#[derive(Debug, Default)]
pub(crate) struct BindGroupCache {
    map: std::sync::Mutex<crate::pipeline::FastMap<BindKey, wgpu::BindGroup>>,
}

/// What a cached bind group binds.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct BindKey {
    pipeline: wgpu::ComputePipeline,
    /// (binding, buffer, byte offset, bytes; 0 = to the end).
    buffers: Vec<(u32, wgpu::Buffer, u64, u64)>,
    param_binding: u32,
    params: wgpu::Buffer,
    offset: u64,
}

/// Bound on [`BindGroupCache`]'s entries (a model's decode step needs a few
/// hundred to a few thousand).
const MAX_CACHED_BIND_GROUPS: usize = 16384;

impl BindGroupCache {
    /// Drops every cached bind group (and with them their buffer references).
    pub(crate) fn clear(&self) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The bind group for `key`, made by `make` when not cached.
    fn get_or_create(
        &self,
        key: BindKey,
        make: impl FnOnce(&BindKey) -> wgpu::BindGroup,
    ) -> wgpu::BindGroup {
        if let Some(bg) = self.map.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return bg.clone();
        }
        let bg = make(&key);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_CACHED_BIND_GROUPS {
            map.clear();
        }
        map.insert(key, bg.clone());
        bg
    }
}

impl GpuContext {
    /// The `index`-th uniform buffer of parameter slots (`size` bytes),
    /// shared by all batches (see `GpuContext::param_pool`).
    fn param_block(&self, index: usize, size: u64) -> wgpu::Buffer {
        let mut pool = self.param_pool.lock().unwrap_or_else(|e| e.into_inner());
        while pool.len() <= index {
            pool.push(self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("params"),
                size,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        pool[index].clone()
    }
}

/// A weight group's dispatch: its parameters, grid and buffer
/// (`GpuBatch::group_params`).
struct GroupParams {
    params: Vec<u32>,
    grid: (u32, u32, u32),
    buffer: wgpu::Buffer,
}

/// Timestamp queries of a timed batch: two per compute pass.
#[derive(Default)]
struct Timing {
    sets: Vec<wgpu::QuerySet>,
    labels: Vec<String>,
    /// Time whole compute passes (the untimed batch's shape: consecutive
    /// dispatches share a pass) instead of one pass per dispatch.
    passes: bool,
}

/// Compute passes per timestamp query set.
const PASSES_PER_QUERY_SET: u32 = 256;

/// The batch's context: borrowed ([`GpuContext::batch`]) or shared
/// ([`GpuContext::shared_batch`], for a batch stored next to an `Arc`).
#[derive(Clone)]
enum CtxRef<'a> {
    Borrowed(&'a GpuContext),
    Shared(Arc<GpuContext>),
}

impl std::ops::Deref for CtxRef<'_> {
    type Target = GpuContext;
    fn deref(&self) -> &GpuContext {
        match self {
            CtxRef::Borrowed(c) => c,
            CtxRef::Shared(c) => c,
        }
    }
}

/// One uniform buffer of `PARAM_SLOTS` parameter slots and its CPU copy.
struct ParamBlock {
    buffer: wgpu::Buffer,
    bytes: Vec<u8>,
}

/// Recorded work encoded into a command buffer ([`GpuBatch::finish`]),
/// waiting for [`FinishedBatch::submit`]; dropped unsubmitted, it never runs.
pub struct FinishedBatch<'a> {
    ctx: CtxRef<'a>,
    cb: wgpu::CommandBuffer,
    params: Vec<ParamBlock>,
}

impl std::fmt::Debug for FinishedBatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FinishedBatch").finish_non_exhaustive()
    }
}

impl FinishedBatch<'_> {
    /// Writes the dispatches' parameters and submits (does not wait);
    /// reports captured errors.
    pub fn submit(self) -> Result<()> {
        let ctx = self.ctx;
        let cb = self.cb;
        // The parameter buffers are shared by all batches: no other batch's
        // parameters may be written between ours and our submission.
        let _guard = ctx.submit_lock.lock().unwrap_or_else(|e| e.into_inner());
        ctx.scoped(
            || {
                for block in &self.params {
                    ctx.queue.write_buffer(&block.buffer, 0, &block.bytes);
                }
                ctx.queue.submit([cb]);
            },
            submit_error,
        )?;
        ctx.check()
    }
}

fn submit_error(m: String, oom: bool) -> WgpuError {
    if oom {
        WgpuError::OutOfMemory {
            what: "submit".to_string(),
            needed_bytes: 0,
            limit_bytes: None,
        }
    } else {
        WgpuError::Gpu(m)
    }
}

/// Bytes bound per dispatch (the largest params struct, matmul_exact.wgsl's,
/// is 76 bytes).
pub(crate) const PARAM_BYTES: u64 = 80;
/// Slots per uniform buffer.
const PARAM_SLOTS: u64 = 256;

impl std::fmt::Debug for GpuBatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuBatch").finish_non_exhaustive()
    }
}

/// rope.wgsl's parameters: `p`, the mode, then pos0, has_ff, n_kv_heads,
/// head_dim_v, kv_f16 (`rest`, zeros where unused).
fn rope_words(p: &RopeParams, mode: u32, rest: [u32; 5]) -> [u32; 12] {
    [
        p.head_dim,
        p.n_heads,
        p.n_tokens,
        p.n_rot,
        mode,
        // The CPU backend's theta scale (its `powf`), so both iterate the
        // same values.
        p.freq_base.powf(-2.0 / p.n_rot.max(1) as f32).to_bits(),
        p.freq_scale.to_bits(),
        rest[0],
        rest[1],
        rest[2],
        rest[3],
        rest[4],
    ]
}

/// u32 words of an 8-bit-quantised vector of `n` elements (`pack_q8`):
/// n/4 words of quants and two per 32-element block.
pub fn q8_words(n: usize) -> usize {
    n / 4 + n / 16
}

/// u32 words between the token rows of several 8-bit-quantised vectors of
/// `n` elements ([`q8_words`] rounded up to whole vec4s).
pub fn q8_stride(n: usize) -> usize {
    q8_words(n).next_multiple_of(4)
}

/// How `pack_q8` rounds activations: as the CPU backend does for the
/// consuming weight type (its ggml `vec_dot_type`; shaders/q8.wgsl).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Q8Mode {
    /// Q8_0 (Q4_0, Q5_0, Q8_0 weights): blocks of 32, f16 scale.
    Q8_0 = 0,
    /// Q8_1 (Q4_1): as Q8_0, with the f16-rounded scaled sum.
    Q8_1 = 1,
    /// Q8_K (K-quants): blocks of 256 (n a multiple of 256), f32 scale.
    Q8K = 2,
}

impl Q8Mode {
    /// The mode whose rounding the CPU uses for weights of `ty`.
    pub fn of(ty: GgmlType) -> Self {
        match zeta_quant::vec_dot_type(ty) {
            GgmlType::Q8_1 => Q8Mode::Q8_1,
            GgmlType::Q8_K => Q8Mode::Q8K,
            _ => Q8Mode::Q8_0,
        }
    }

    /// Elements per scale block (32, or 256 for Q8_K).
    pub fn block(self) -> usize {
        match self {
            Q8Mode::Q8K => 256,
            _ => 32,
        }
    }
}

/// Checks that `n` elements can be packed in `mode`.
fn q8_len(op: &'static str, n: usize, mode: Q8Mode) -> Result<()> {
    if n == 0 || !n.is_multiple_of(mode.block()) {
        return Err(shape(
            op,
            format!(
                "{n} is not a positive multiple of {} ({mode:?})",
                mode.block()
            ),
        ));
    }
    Ok(())
}

/// Invocations per row of the integer matvec for a row of `units` 32-element
/// units: 32 from 64 units on, 16 from 32, else 8 (`ZETA_GPU_Q8_TPR`
/// overrides it, for tuning). Measured on the H100 (tg128, t/s, one TPR for
/// every matrix): llama-8b Q4_0 8: 116, 16: 144, 32: 152, 64: 129; llama-1b
/// Q4_0 16: 288, 32: 310; llama-8b Q4_K_M 16: 130, 32: 138.
fn q8_tpr(units: u32) -> u32 {
    static FORCED: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    let forced = FORCED.get_or_init(|| {
        std::env::var("ZETA_GPU_Q8_TPR")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|t| Q8_TPR.contains(t))
    });
    if let Some(t) = *forced {
        return t;
    }
    match units {
        64.. => 32,
        32.. => 16,
        _ => 8,
    }
}

/// The checks of an attention that packs its one-query output for the
/// output projection: a Q8_0/Q8_1 mode (Q8_K blocks would span heads),
/// head_dim_v a multiple of 32, `xq` large enough and not aliasing `others`.
fn check_attn_pack(
    op: &'static str,
    p: &AttnParams,
    xq: &GpuTensor,
    mode: Q8Mode,
    others: &[&GpuTensor],
) -> Result<()> {
    if mode == Q8Mode::Q8K || !p.head_dim_v.is_multiple_of(32) {
        return Err(shape(
            op,
            format!("{mode:?} with head_dim_v {}", p.head_dim_v),
        ));
    }
    want_q8(op, xq, p.n_head as usize * p.head_dim_v as usize)?;
    distinct(op, xq, others)
}

fn words_to_bytes(words: &[u32]) -> Vec<u8> {
    let mut v: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    while !v.len().is_multiple_of(16) || v.is_empty() {
        v.push(0);
    }
    v
}

fn want(op: &'static str, t: &GpuTensor, name: &str, dtype: GpuDType, min_len: u64) -> Result<()> {
    if t.dtype() != dtype {
        return Err(shape(
            op,
            format!("{name} is {:?}, expected {dtype:?}", t.dtype()),
        ));
    }
    if (t.len() as u64) < min_len {
        return Err(shape(
            op,
            format!("{name} has {} elements, needs {min_len}", t.len()),
        ));
    }
    Ok(())
}

/// Checks that `xq` (u32) holds the 8-bit activations of `n` elements.
fn want_q8(op: &'static str, xq: &GpuTensor, n: usize) -> Result<()> {
    want_q8_rows(op, xq, n, 1)
}

/// Checks that `xq` (u32) holds `rows` rows of 8-bit activations of `n`
/// elements, [`q8_stride`] words apart.
fn want_q8_rows(op: &'static str, xq: &GpuTensor, n: usize, rows: u64) -> Result<()> {
    let words = rows.saturating_sub(1) * q8_stride(n) as u64 + q8_words(n) as u64;
    want(op, xq, "xq", GpuDType::U32, words)
}

fn distinct(op: &'static str, out: &GpuTensor, inputs: &[&GpuTensor]) -> Result<()> {
    if inputs.iter().any(|i| i.buffer == out.buffer) {
        return Err(shape(op, "the output must not alias an input"));
    }
    Ok(())
}

impl GpuContext {
    /// Starts recording GPU work.
    pub fn batch(&self) -> GpuBatch<'_> {
        GpuBatch::new(CtxRef::Borrowed(self))
    }

    /// Starts recording GPU work on a shared context; the batch owns an
    /// `Arc` and can be stored (e.g. a backend's pending work behind a mutex).
    pub fn shared_batch(self: &Arc<Self>) -> GpuBatch<'static> {
        GpuBatch::new(CtxRef::Shared(Arc::clone(self)))
    }

    /// Runs argmax over `logits` and reads back only the index.
    pub fn argmax_u32(&self, logits: &GpuTensor) -> Result<u32> {
        let out = self.zeros(1, GpuDType::U32)?;
        let mut b = self.batch();
        b.argmax(logits, logits.len(), &out)?;
        b.submit()?;
        let v = self.read_u32(&out)?;
        v.first()
            .copied()
            .ok_or_else(|| WgpuError::ReadBack("empty argmax".to_string()))
    }
}

impl GpuContext {
    /// Whether [`matvec_q8_multi`](GpuBatch::matvec_q8_multi) can take these
    /// matrices together: 2 or 3 of one type (with the integer matvec) and
    /// row length, each one part of the same buffer, on a device with
    /// subgroups.
    pub fn can_matvec_q8_multi(&self, ms: &[&QuantMatrix]) -> bool {
        let Some(first) = ms.first() else {
            return false;
        };
        let buf = first.single_part().map(|p| &p.buffer);
        self.use_subgroups()
            && (2..=3).contains(&ms.len())
            && buf.is_some()
            && ms.iter().all(|m| {
                m.ggml_type() == first.ggml_type()
                    && m.n_cols() == first.n_cols()
                    && m.single_part().map(|p| &p.buffer) == buf
                    && m.single_part()
                        .is_some_and(|p| p.offset + p.size <= u32::MAX as u64)
            })
    }

    /// Whether [`matmul_exact_multi`](GpuBatch::matmul_exact_multi) takes `ms`:
    /// a weight group that [`matvec_q8_multi`](GpuBatch::matvec_q8_multi)
    /// would take, of a type with an exact matmul, whose matrices the CPU
    /// sums in one order for one token.
    pub fn can_matmul_exact_multi(&self, ms: &[&QuantMatrix]) -> bool {
        let order = |m: &QuantMatrix| dot_order(m.ggml_type(), m.n_rows() as usize, 0, 1);
        self.exact_sg()
            && self.can_matvec_q8_multi(ms)
            && has_exact_matmul(ms[0].ggml_type())
            && ms
                .iter()
                .all(|m| order(m).is_some() && order(m) == order(ms[0]))
    }

    /// Whether [`matmul_exact_multi_rope`](GpuBatch::matmul_exact_multi_rope)
    /// takes this Q/K/V group: three matrices that
    /// [`matmul_exact_multi`](GpuBatch::matmul_exact_multi) takes.
    pub fn can_matmul_exact_multi_rope(&self, ms: &[&QuantMatrix]) -> bool {
        ms.len() == 3 && self.can_matmul_exact_multi(ms)
    }

    /// Whether the exact weight-group kernels take `ms` with the RMSNorm of
    /// their input staged in every workgroup
    /// ([`rms_norm_matmul_exact_multi`](GpuBatch::rms_norm_matmul_exact_multi)):
    /// a group [`can_matmul_exact_multi`](Self::can_matmul_exact_multi) takes
    /// in the lane order of a 32-element block type (matmul_exact_tr.wgsl),
    /// rows of at most 8192 columns, on a device with 32 KiB of workgroup
    /// memory.
    pub fn can_rms_norm_matmul_exact_multi(&self, ms: &[&QuantMatrix]) -> bool {
        self.can_matmul_exact_multi(ms) && self.exact_multi_kernel(ms, false, true).is_ok()
    }

    /// The exact weight-group kernel of `ms` (one token) and its rows a
    /// workgroup: matmul_exact_tr.wgsl's `lanes_tr_multi` for the 32-element
    /// types' lane order, else matmul_exact_sg.wgsl's `*_multi`; with
    /// `rope`, their `*_rope` entry (RoPE and the KV-cache write after); with
    /// `norm`, the `*_norm` entry that stages the input's RMSNorm (an error
    /// where there is none, or the device lacks its workgroup memory).
    fn exact_multi_kernel(
        &self,
        ms: &[&QuantMatrix],
        rope: bool,
        norm: bool,
    ) -> Result<(ShaderVariant, u64)> {
        let ty = ms[0].ggml_type();
        let order =
            dot_order(ty, ms[0].n_rows() as usize, 0, 1).ok_or(WgpuError::UnsupportedType(ty))?;
        let (mut v, rows) = match matmul_exact_tr_variant(ty, order, true) {
            Some(v) => (v, EXACT_ROWS),
            None => (
                matmul_exact_multi_variant(ty, order)?,
                exact_sg_rows(self.info().subgroup_size.1, EXACT_MULTI_NP),
            ),
        };
        if rope {
            v.entry = match v.entry {
                "lanes_tr_multi" => "lanes_tr_multi_rope",
                "lanes_sg_multi" => "lanes_sg_multi_rope",
                _ => "blocks_sg_multi_rope",
            };
        }
        if norm {
            const OP: &str = "exact_multi_kernel";
            if self.info().max_compute_workgroup_storage_size
                < crate::pipeline::WORKGROUP_BYTES_LARGE
            {
                return Err(shape(
                    OP,
                    "the device lacks the staged norm's workgroup memory",
                ));
            }
            v = matmul_exact_tr_norm_variant(v, ms[0].n_cols())
                .ok_or_else(|| shape(OP, "no staged-norm kernel for this group"))?;
        }
        Ok((v, rows))
    }
}

impl<'a> GpuBatch<'a> {
    fn new(ctx: CtxRef<'a>) -> Self {
        let encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("zeta batch"),
            });
        GpuBatch {
            ctx,
            encoder,
            params: Vec::new(),
            slot: 0,
            timing: None,
            pass: None,
            rope_table: None,
        }
    }

    /// Makes the RoPE dispatches recorded from now on read their `(cos θ,
    /// sin θ)` from `table` (`[positions, n_rot / 2]` pairs of f32, pair i of
    /// position p at `2 (p · n_rot / 2 + i)`, e.g. from the CPU backend's
    /// `rope_cache_row`, so the rotation is the CPU's bit for bit) instead of
    /// computing them; `None` switches back. The caller makes the table
    /// cover every position it rotates (checked per dispatch).
    pub fn set_rope_table(&mut self, table: Option<GpuTensor>) {
        self.rope_table = table;
    }

    /// Binding 12 and `has_cs` of a RoPE dispatch rotating positions
    /// `..end` with `n_rot` rotated dimensions.
    fn rope_cs(&self, op: &'static str, end: u64, n_rot: u32) -> Result<(GpuTensor, u32)> {
        match &self.rope_table {
            Some(t) => {
                want(op, t, "rope table", GpuDType::F32, end * n_rot as u64)?;
                Ok((t.clone(), 1))
            }
            None => Ok((self.ctx.scratch("rope_no_table", 2, GpuDType::F32)?, 0)),
        }
    }

    /// Ends the open compute pass (if any) so the encoder takes other commands.
    fn end_pass(&mut self) {
        self.pass = None;
    }

    /// Number of dispatches recorded so far.
    pub fn dispatches(&self) -> u64 {
        self.slot
    }

    /// 2-D grid for `groups` workgroups: (x, y) with x * y >= groups.
    fn grid(&self, op: &'static str, groups: u64) -> Result<(u32, u32)> {
        let max = self.ctx.max_workgroups as u64;
        let x = groups.clamp(1, max);
        let y = groups.div_ceil(x).max(1);
        if y > max {
            return Err(shape(
                op,
                format!("{groups} workgroups exceed the dispatch limit"),
            ));
        }
        Ok((x as u32, y as u32))
    }

    /// Records one dispatch of `variant` with `bindings` (binding index, buffer)
    /// and `params` as the uniform at binding `param_binding`.
    fn dispatch(
        &mut self,
        variant: &ShaderVariant,
        bindings: &[(u32, &wgpu::Buffer)],
        param_binding: u32,
        params: &[u32],
        groups: (u32, u32, u32),
    ) -> Result<()> {
        let ranged: Vec<(u32, &wgpu::Buffer, u64, u64)> =
            bindings.iter().map(|&(b, buf)| (b, buf, 0, 0)).collect();
        self.dispatch_ranged(variant, &ranged, param_binding, params, groups)
    }

    /// One dispatch that reads weight part `part` (binding 0, its byte range)
    /// and `x` (1) and writes `y` (2), parameters at binding 3: the layout of
    /// every kernel over a weight.
    fn dispatch_part(
        &mut self,
        variant: &ShaderVariant,
        part: &WeightPart,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        params: &[u32],
        groups: (u32, u32, u32),
    ) -> Result<()> {
        self.dispatch_ranged(
            variant,
            &[
                (0, &part.buffer, part.offset, part.size),
                (1, x, 0, 0),
                (2, y, 0, 0),
            ],
            3,
            params,
            groups,
        )
    }

    /// [`dispatch`](Self::dispatch) binding `size` bytes at `offset` of each
    /// buffer (`size` 0: the rest of the buffer), e.g. a weight of a group.
    fn dispatch_ranged(
        &mut self,
        variant: &ShaderVariant,
        bindings: &[(u32, &wgpu::Buffer, u64, u64)],
        param_binding: u32,
        params: &[u32],
        groups: (u32, u32, u32),
    ) -> Result<()> {
        let ctx = self.ctx.clone();
        let pipeline = ctx.pipeline(variant)?;
        // Parameter slot: offsets are multiples of the uniform offset alignment.
        let stride = ctx.param_stride;
        let index = self.slot % PARAM_SLOTS;
        if index == 0 {
            let buffer = ctx.param_block(self.params.len(), stride * PARAM_SLOTS);
            self.params.push(ParamBlock {
                buffer,
                bytes: Vec::new(),
            });
        }
        let block = self
            .params
            .last_mut()
            .ok_or_else(|| WgpuError::Gpu("no parameter block".to_string()))?;
        let offset = index * stride;
        let data = words_to_bytes(params);
        if data.len() as u64 > PARAM_BYTES {
            return Err(shape("dispatch", "parameter block too large"));
        }
        block.bytes.resize(offset as usize, 0);
        block.bytes.extend_from_slice(&data);
        block.bytes.resize((offset + PARAM_BYTES) as usize, 0);
        self.slot += 1;
        let key = BindKey {
            pipeline: pipeline.clone(),
            buffers: bindings
                .iter()
                .map(|&(b, buf, o, n)| (b, buf.clone(), o, n))
                .collect(),
            param_binding,
            params: block.buffer.clone(),
            offset,
        };
        let bind_group = ctx.mem.bind_groups.get_or_create(key, |k| {
            let mut entries: Vec<wgpu::BindGroupEntry<'_>> = k
                .buffers
                .iter()
                .map(|(b, buf, offset, size)| wgpu::BindGroupEntry {
                    binding: *b,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: buf,
                        offset: *offset,
                        size: std::num::NonZeroU64::new(*size),
                    }),
                })
                .collect();
            entries.push(wgpu::BindGroupEntry {
                binding: k.param_binding,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &k.params,
                    offset: k.offset,
                    size: std::num::NonZeroU64::new(PARAM_BYTES),
                }),
            });
            // Invalid bindings are reported by the device's uncaptured-error
            // handler and returned by `submit` (`GpuContext::check`).
            ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(variant.file.name),
                layout: &k.pipeline.get_bind_group_layout(0),
                entries: &entries,
            })
        });
        let per_dispatch = self.timing.as_ref().is_some_and(|t| !t.passes);
        let new_pass = self.pass.is_none() || per_dispatch;
        let timestamp_writes = match &mut self.timing {
            Some(t) if new_pass => {
                let pass = t.labels.len() as u32;
                let set = (pass / PASSES_PER_QUERY_SET) as usize;
                if set == t.sets.len() {
                    t.sets
                        .push(ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                            label: Some("timestamps"),
                            ty: wgpu::QueryType::Timestamp,
                            count: 2 * PASSES_PER_QUERY_SET,
                        }));
                }
                t.labels.push(if t.passes {
                    "compute pass".to_string()
                } else {
                    variant.label()
                });
                let i = 2 * (pass % PASSES_PER_QUERY_SET);
                t.sets.get(set).map(|qs| wgpu::ComputePassTimestampWrites {
                    query_set: qs,
                    beginning_of_pass_write_index: Some(i),
                    end_of_pass_write_index: Some(i + 1),
                })
            }
            _ => None,
        };
        if per_dispatch {
            // Timed: one pass per dispatch, its timestamps around it.
            self.pass = None;
        }
        let pass = match &mut self.pass {
            Some(p) => p,
            open => open.insert(
                self.encoder
                    .begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("zeta"),
                        timestamp_writes,
                    })
                    .forget_lifetime(),
            ),
        };
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, groups.2);
        if per_dispatch {
            self.end_pass();
        }
        Ok(())
    }

    /// Times every following compute pass with GPU timestamps (read back by
    /// [`submit_timed`](Self::submit_timed)). Returns false, and times
    /// nothing, when the device lacks `TIMESTAMP_QUERY`. Call before recording.
    pub fn enable_timing(&mut self) -> bool {
        self.enable_timing_mode(false)
    }

    /// [`enable_timing`](Self::enable_timing) of whole compute passes
    /// (labelled "compute pass"): the batch runs as it would untimed, and
    /// the times say how long the device was busy with it.
    pub fn enable_pass_timing(&mut self) -> bool {
        self.enable_timing_mode(true)
    }

    fn enable_timing_mode(&mut self, passes: bool) -> bool {
        let ok = self
            .ctx
            .device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY);
        if ok && self.timing.is_none() {
            self.timing = Some(Timing {
                passes,
                ..Timing::default()
            });
        }
        ok
    }

    /// Whether [`enable_timing`](Self::enable_timing) is in effect.
    pub fn is_timed(&self) -> bool {
        self.timing.is_some()
    }

    /// Submits, waits, and returns (pipeline label, GPU nanoseconds) per
    /// timed pass, in recording order (empty when timing is off).
    pub fn submit_timed(mut self) -> Result<Vec<(String, f64)>> {
        let Some(timing) = self.timing.take() else {
            self.submit()?;
            return Ok(Vec::new());
        };
        let ctx = self.ctx.clone();
        let n = timing.labels.len() as u32;
        let mut resolved = Vec::new();
        for (k, set) in timing.sets.iter().enumerate() {
            let used = (n - k as u32 * PASSES_PER_QUERY_SET).min(PASSES_PER_QUERY_SET) * 2;
            let buf = ctx.scoped(
                || {
                    ctx.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("timestamps"),
                        size: used as u64 * 8,
                        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                        mapped_at_creation: false,
                    })
                },
                |m, _| WgpuError::Gpu(m),
            )?;
            self.end_pass();
            self.encoder.resolve_query_set(set, 0..used, &buf, 0);
            resolved.push((buf, used));
        }
        self.submit()?;
        let period = ctx.queue.get_timestamp_period() as f64;
        let mut ticks = Vec::new();
        for (buf, used) in &resolved {
            let bytes = ctx.read_bytes(buf, *used as u64 * 8)?;
            ticks.extend(
                bytes
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])),
            );
        }
        Ok(timing
            .labels
            .into_iter()
            .zip(ticks.chunks_exact(2))
            .map(|(l, t)| (l, t[1].saturating_sub(t[0]) as f64 * period))
            .collect())
    }

    /// Submits the recorded work (does not wait) and reports captured errors.
    pub fn submit(self) -> Result<()> {
        self.finish()?.submit()
    }

    /// Encodes the recorded work into a command buffer (wgpu validates and
    /// encodes a pass's commands here: ~3.6 µs a dispatch on the H100's
    /// host) for a later [`FinishedBatch::submit`].
    pub fn finish(mut self) -> Result<FinishedBatch<'a>> {
        self.end_pass();
        let ctx = self.ctx.clone();
        let encoder = self.encoder;
        let cb = ctx.scoped(|| encoder.finish(), submit_error)?;
        ctx.check()?;
        Ok(FinishedBatch {
            ctx: self.ctx,
            cb,
            params: self.params,
        })
    }

    /// y = W x, dequantising W on the fly; one dispatch per weight part.
    pub fn matvec(&mut self, w: &QuantMatrix, x: &GpuTensor, y: &GpuTensor) -> Result<()> {
        self.matvec_impl(w, x, y, false)
    }

    /// y += W x (a projection added to a residual stream, in the same
    /// dispatch): each output gets one f32 add, as a separate `add` would.
    pub fn matvec_add(&mut self, w: &QuantMatrix, x: &GpuTensor, y: &GpuTensor) -> Result<()> {
        self.matvec_impl(w, x, y, true)
    }

    fn matvec_impl(
        &mut self,
        w: &QuantMatrix,
        x: &GpuTensor,
        y: &GpuTensor,
        accumulate: bool,
    ) -> Result<()> {
        const OP: &str = "matvec";
        want(OP, x, "x", GpuDType::F32, w.n_cols())?;
        want(OP, y, "y", GpuDType::F32, w.n_rows())?;
        distinct(OP, y, &[x])?;
        let variant = matvec_variant(w.ggml_type(), self.ctx.use_subgroups())?;
        self.matvec_parts(OP, &variant, w, x, y, 1, accumulate)
    }

    /// One matvec dispatch per weight part (`rows_per_group` rows per
    /// workgroup), with matvec.wgsl / matvec_q8.wgsl's parameter layout.
    #[allow(clippy::too_many_arguments)]
    fn matvec_parts(
        &mut self,
        op: &'static str,
        variant: &ShaderVariant,
        w: &QuantMatrix,
        x: &GpuTensor,
        y: &GpuTensor,
        rows_per_group: u64,
        accumulate: bool,
    ) -> Result<()> {
        let n_cols = w.n_cols() as u32;
        for part in w.parts() {
            let (gx, gy) = self.grid(op, part.n_rows.div_ceil(rows_per_group))?;
            let params = [
                n_cols,
                n_cols.div_ceil(32),
                w.row_bytes() as u32,
                part.n_rows as u32,
                part.first_row as u32,
                gx,
                u32::from(accumulate),
            ];
            self.dispatch_part(variant, part, &x.buffer, &y.buffer, &params, (gx, gy, 1))?;
        }
        Ok(())
    }

    /// Prefill: Y `[n_tok, n_rows]` = X `[n_tok, n_cols]` W^T; one dispatch
    /// per weight part. Up to [`TILED_MATMUL_MIN_TOKENS`]` - 1` tokens use a
    /// row-per-workgroup kernel (W dequantised once per 8 tokens), more use
    /// the shared-memory tiled kernel (64 rows x 16 tokens per workgroup).
    pub fn matmul(
        &mut self,
        w: &QuantMatrix,
        x: &GpuTensor,
        y: &GpuTensor,
        n_tok: u32,
    ) -> Result<()> {
        self.matmul_with(w, x, y, n_tok, n_tok >= TILED_MATMUL_MIN_TOKENS)
    }

    /// [`matmul`](Self::matmul) with the kernel chosen explicitly (tests, tuning).
    pub fn matmul_with(
        &mut self,
        w: &QuantMatrix,
        x: &GpuTensor,
        y: &GpuTensor,
        n_tok: u32,
        tiled: bool,
    ) -> Result<()> {
        const OP: &str = "matmul";
        if n_tok == 0 {
            return Err(shape(OP, "no tokens"));
        }
        want(OP, x, "x", GpuDType::F32, n_tok as u64 * w.n_cols())?;
        want(OP, y, "y", GpuDType::F32, n_tok as u64 * w.n_rows())?;
        distinct(OP, y, &[x])?;
        let n_cols = w.n_cols() as u32;
        let max = self.ctx.max_workgroups;
        for part in w.parts() {
            if tiled {
                // (kernel, rows, tokens) per workgroup: cooperative matrices
                // (128 x 64) or 4 x 4 register blocks (64 x 64) from
                // REG_MATMUL_MIN_TOKENS tokens, else 64 x 16 tiles.
                let (file, bm, bn) = if n_tok < REG_MATMUL_MIN_TOKENS {
                    (files::MATMUL_TILED, 64, 16)
                } else if self.ctx.use_coop() {
                    (files::MATMUL_COOP, 128, 64)
                } else {
                    (files::MATMUL_REG, 64, 64)
                };
                let (gx, gy) = (part.n_rows.div_ceil(bm), n_tok.div_ceil(bn));
                if gx > max as u64 || gy > max {
                    return Err(shape(OP, "too many rows/tokens for one dispatch"));
                }
                let params = [
                    n_cols,
                    n_cols.div_ceil(32),
                    w.row_bytes() as u32,
                    part.n_rows as u32,
                    part.first_row as u32,
                    n_tok,
                    w.n_rows() as u32,
                ];
                self.dispatch_part(
                    &quant_variant(file, w.ggml_type())?,
                    part,
                    &x.buffer,
                    &y.buffer,
                    &params,
                    (gx as u32, gy, 1),
                )?;
            } else {
                let blocks = n_tok.div_ceil(8);
                if blocks > max {
                    return Err(shape(
                        OP,
                        format!("{n_tok} tokens exceed the dispatch limit"),
                    ));
                }
                let (gx, gy) = self.grid(OP, part.n_rows)?;
                let params = [
                    n_cols,
                    n_cols.div_ceil(32),
                    w.row_bytes() as u32,
                    part.n_rows as u32,
                    part.first_row as u32,
                    gx,
                    n_tok,
                    w.n_rows() as u32,
                ];
                self.dispatch_part(
                    &quant_variant(files::MATMUL, w.ggml_type())?,
                    part,
                    &x.buffer,
                    &y.buffer,
                    &params,
                    (gx, gy, blocks),
                )?;
            }
        }
        Ok(())
    }

    /// `out[t] = table[ids[t]]` dequantised; ids >= n_rows give zeros.
    pub fn embed(&mut self, table: &QuantMatrix, ids: &GpuTensor, out: &GpuTensor) -> Result<()> {
        self.embed_n(table, ids, ids.len(), out)
    }

    /// [`embed`](Self::embed) of the first `n_ids` ids of `ids` (a reused,
    /// larger buffer).
    pub fn embed_n(
        &mut self,
        table: &QuantMatrix,
        ids: &GpuTensor,
        n_ids: usize,
        out: &GpuTensor,
    ) -> Result<()> {
        const OP: &str = "embed";
        if n_ids == 0 {
            return Err(shape(OP, "no ids"));
        }
        want(OP, ids, "ids", GpuDType::U32, n_ids as u64)?;
        let n_tokens = n_ids as u64;
        want(OP, out, "out", GpuDType::F32, n_tokens * table.n_cols())?;
        let variant = quant_variant(files::EMBED, table.ggml_type())?;
        let n_cols = table.n_cols() as u32;
        let n_units = n_cols.div_ceil(32);
        if n_tokens > self.ctx.max_workgroups as u64 {
            return Err(shape(
                OP,
                format!("{n_tokens} tokens exceed the dispatch limit"),
            ));
        }
        for part in table.parts() {
            let params = [
                n_cols,
                n_units,
                table.row_bytes() as u32,
                part.n_rows as u32,
                part.first_row as u32,
                table.n_rows() as u32,
                n_tokens as u32,
            ];
            self.dispatch_part(
                &variant,
                part,
                &ids.buffer,
                &out.buffer,
                &params,
                (n_units.div_ceil(64), n_tokens as u32, 1),
            )?;
        }
        Ok(())
    }

    /// y = x / sqrt(mean(x^2) + eps) * w for `n_rows` rows of `n_cols`
    /// elements (`w`: `[n_cols]`).
    pub fn rms_norm(
        &mut self,
        x: &GpuTensor,
        w: &GpuTensor,
        y: &GpuTensor,
        n_rows: u32,
        n_cols: u32,
        eps: f32,
    ) -> Result<()> {
        const OP: &str = "rms_norm";
        let n = self.rows_check(OP, n_rows, n_cols)?;
        want(OP, x, "x", GpuDType::F32, n)?;
        want(OP, w, "w", GpuDType::F32, n_cols as u64)?;
        want(OP, y, "y", GpuDType::F32, n)?;
        distinct(OP, y, &[x, w])?;
        let entry = if n_cols.is_multiple_of(4) {
            "main"
        } else {
            "main_scalar"
        };
        self.dispatch(
            &ShaderVariant::plain(files::RMSNORM, entry),
            &[(0, &x.buffer), (1, &w.buffer), (2, &y.buffer)],
            3,
            &[n_cols, n_rows, eps.to_bits()],
            (n_rows, 1, 1),
        )
    }

    /// [`rms_norm`](Self::rms_norm) of one row x `[n_cols]` (a multiple of
    /// the mode's block) into y, and y quantised for
    /// [`matvec_q8`](Self::matvec_q8) into `xq` (as [`pack_q8`](Self::pack_q8)
    /// would): one dispatch.
    #[allow(clippy::too_many_arguments)]
    pub fn rms_norm_pack_q8(
        &mut self,
        x: &GpuTensor,
        w: &GpuTensor,
        y: &GpuTensor,
        xq: &GpuTensor,
        n_cols: u32,
        eps: f32,
        mode: Q8Mode,
    ) -> Result<()> {
        const OP: &str = "rms_norm_pack_q8";
        let n = self.rows_check(OP, 1, n_cols)?;
        q8_len(OP, n_cols as usize, mode)?;
        want(OP, x, "x", GpuDType::F32, n)?;
        want(OP, w, "w", GpuDType::F32, n)?;
        want(OP, y, "y", GpuDType::F32, n)?;
        want_q8(OP, xq, n_cols as usize)?;
        distinct(OP, y, &[x, w, xq])?;
        distinct(OP, xq, &[x, w])?;
        self.dispatch(
            &ShaderVariant::plain(files::RMSNORM, "norm_pack_q8"),
            &[
                (0, &x.buffer),
                (1, &w.buffer),
                (2, &y.buffer),
                (9, &xq.buffer),
            ],
            3,
            &[n_cols, 1, eps.to_bits(), mode as u32],
            // A workgroup per 256 vec4s of the row (rmsnorm.wgsl).
            (n_cols.div_ceil(4 * 256), 1, 1),
        )
    }

    /// [`rms_norm_inplace_add`](Self::rms_norm_inplace_add) of `src` (weight
    /// `post`) into `x` (one row), then
    /// [`rms_norm_pack_q8`](Self::rms_norm_pack_q8) of the new `x` (weight
    /// `w`) into `y` and `xq`: one dispatch, bit for bit the two.
    #[allow(clippy::too_many_arguments)]
    pub fn post_add_rms_norm_pack_q8(
        &mut self,
        src: &GpuTensor,
        post: &GpuTensor,
        x: &GpuTensor,
        w: &GpuTensor,
        y: &GpuTensor,
        xq: &GpuTensor,
        n_cols: u32,
        eps: f32,
        mode: Q8Mode,
    ) -> Result<()> {
        const OP: &str = "post_add_rms_norm_pack_q8";
        let n = self.rows_check(OP, 1, n_cols)?;
        q8_len(OP, n_cols as usize, mode)?;
        for (t, name) in [(src, "src"), (post, "post"), (x, "x"), (w, "w"), (y, "y")] {
            want(OP, t, name, GpuDType::F32, n)?;
        }
        want_q8(OP, xq, n_cols as usize)?;
        distinct(OP, src, &[post, x, w, y, xq])?;
        distinct(OP, x, &[post, w, y, xq])?;
        distinct(OP, y, &[post, w, xq])?;
        distinct(OP, xq, &[post, w])?;
        self.dispatch(
            &ShaderVariant::plain(files::RMSNORM, "post_add_norm_pack_q8"),
            &[
                (1, &w.buffer),
                (2, &x.buffer),
                (4, &src.buffer),
                (5, &post.buffer),
                (6, &y.buffer),
                (9, &xq.buffer),
            ],
            3,
            &[n_cols, 1, eps.to_bits(), mode as u32],
            (1, 1, 1),
        )
    }

    /// In-place [`rms_norm`](Self::rms_norm) of `x`.
    pub fn rms_norm_inplace(
        &mut self,
        x: &GpuTensor,
        w: &GpuTensor,
        n_rows: u32,
        n_cols: u32,
        eps: f32,
    ) -> Result<()> {
        self.norm_inplace("rms_norm_inplace", x, w, None, n_rows, n_cols, eps)
    }

    /// [`rms_norm_inplace`](Self::rms_norm_inplace) of `x`, then `y += x`
    /// (a post-norm into the residual stream): one dispatch.
    pub fn rms_norm_inplace_add(
        &mut self,
        x: &GpuTensor,
        w: &GpuTensor,
        y: &GpuTensor,
        n_rows: u32,
        n_cols: u32,
        eps: f32,
    ) -> Result<()> {
        self.norm_inplace("rms_norm_inplace_add", x, w, Some(y), n_rows, n_cols, eps)
    }

    #[allow(clippy::too_many_arguments)]
    fn norm_inplace(
        &mut self,
        op: &'static str,
        x: &GpuTensor,
        w: &GpuTensor,
        add_to: Option<&GpuTensor>,
        n_rows: u32,
        n_cols: u32,
        eps: f32,
    ) -> Result<()> {
        let n = self.rows_check(op, n_rows, n_cols)?;
        want(op, x, "x", GpuDType::F32, n)?;
        want(op, w, "w", GpuDType::F32, n_cols as u64)?;
        distinct(op, x, &[w])?;
        // Without an add, Y (statically used by the shared shader code) is
        // bound to a small scratch buffer that is never written.
        let dummy;
        let y = match add_to {
            Some(y) => {
                want(op, y, "y", GpuDType::F32, n)?;
                distinct(op, y, &[x, w])?;
                y
            }
            None => {
                dummy = self.ctx.scratch("norm_no_add", 4, GpuDType::F32)?;
                &dummy
            }
        };
        let bind = [(1, &w.buffer), (2, &y.buffer), (4, &x.buffer)];
        self.dispatch(
            &ShaderVariant::plain(
                files::RMSNORM,
                if add_to.is_some() {
                    "inplace_add"
                } else {
                    "inplace"
                },
            ),
            &bind,
            3,
            &[n_cols, n_rows, eps.to_bits()],
            (n_rows, 1, 1),
        )
    }

    fn rows_check(&self, op: &'static str, n_rows: u32, n_cols: u32) -> Result<u64> {
        if n_rows == 0 || n_cols == 0 {
            return Err(shape(op, format!("[{n_rows}, {n_cols}] is empty")));
        }
        if n_rows > self.ctx.max_workgroups {
            return Err(shape(
                op,
                format!("{n_rows} rows exceed the dispatch limit"),
            ));
        }
        Ok(n_rows as u64 * n_cols as u64)
    }

    fn rope_check(&self, op: &'static str, x: &GpuTensor, p: &RopeParams) -> Result<u32> {
        if p.head_dim == 0
            || !p.head_dim.is_multiple_of(2)
            || !p.n_rot.is_multiple_of(2)
            || p.n_rot == 0
            || p.n_rot > p.head_dim
        {
            return Err(shape(
                op,
                format!(
                    "head_dim {} / n_rot {} must be even, 0 < n_rot <= head_dim",
                    p.head_dim, p.n_rot
                ),
            ));
        }
        let max = self.ctx.max_workgroups;
        if p.n_heads == 0 || p.n_tokens == 0 || p.n_heads > max || p.n_tokens > max {
            return Err(shape(op, "heads/tokens empty or beyond the dispatch limit"));
        }
        want(
            op,
            x,
            "x",
            GpuDType::F32,
            p.head_dim as u64 * p.n_heads as u64 * p.n_tokens as u64,
        )?;
        Ok(match p.mode {
            RopeMode::Normal => 0,
            RopeMode::Neox => 2,
        })
    }

    /// Rotary position embedding, out of place; token `t` at position `pos[t]`.
    pub fn rope(
        &mut self,
        x: &GpuTensor,
        pos: &GpuTensor,
        y: &GpuTensor,
        p: &RopeParams,
    ) -> Result<()> {
        const OP: &str = "rope";
        let mode = self.rope_check(OP, x, p)?;
        want(
            OP,
            y,
            "y",
            GpuDType::F32,
            p.head_dim as u64 * p.n_heads as u64 * p.n_tokens as u64,
        )?;
        want(OP, pos, "pos", GpuDType::U32, p.n_tokens as u64)?;
        distinct(OP, y, &[x])?;
        // FF and CS are unused (has_ff = has_cs = 0: positions are only
        // known on the device) but bound: the entry point's layout has them.
        let cs = self.ctx.scratch("rope_no_table", 2, GpuDType::F32)?;
        self.dispatch(
            &ShaderVariant::plain(files::ROPE, "main"),
            &[
                (0, &x.buffer),
                (1, &pos.buffer),
                (2, &y.buffer),
                (5, &x.buffer),
                (12, &cs.buffer),
            ],
            3,
            &rope_words(p, mode, [0, 0, 0, 0, 0]),
            ((p.head_dim / 2).div_ceil(64), p.n_heads, p.n_tokens),
        )
    }

    /// Rotary position embedding in place; token `t` at position `pos0 + t`.
    /// `freq_factors` (llama3 `rope_freqs`, `[n_rot/2]`) divide the per-pair
    /// frequencies.
    pub fn rope_inplace(
        &mut self,
        x: &GpuTensor,
        pos0: u32,
        p: &RopeParams,
        freq_factors: Option<&GpuTensor>,
    ) -> Result<()> {
        const OP: &str = "rope_inplace";
        let mode = self.rope_check(OP, x, p)?;
        if p.n_tokens.checked_add(pos0).is_none() {
            return Err(shape(OP, "position overflow"));
        }
        if let Some(f) = freq_factors {
            want(OP, f, "freq_factors", GpuDType::F32, p.n_rot as u64 / 2)?;
            distinct(OP, x, &[f])?;
        }
        // Without factors the read-only binding still needs a buffer (not x).
        let dummy;
        let ff_buf = match freq_factors {
            Some(f) => &f.buffer,
            None => {
                dummy = self.ctx.scratch("rope_no_factors", 1, GpuDType::F32)?;
                &dummy.buffer
            }
        };
        let (cs, has_cs) = self.rope_cs(OP, pos0 as u64 + p.n_tokens as u64, p.n_rot)?;
        self.dispatch(
            &ShaderVariant::plain(files::ROPE, "inplace"),
            &[(4, &x.buffer), (5, ff_buf), (12, &cs.buffer)],
            3,
            &rope_words(p, mode, [pos0, u32::from(freq_factors.is_some()), 0, 0, 0])
                .into_iter()
                .chain([0, 0, has_cs])
                .collect::<Vec<u32>>(),
            ((p.head_dim / 2).div_ceil(64), p.n_heads, p.n_tokens),
        )
    }

    /// A layer's RoPE and KV-cache write in one dispatch: q `[n_tokens,
    /// n_heads, head_dim]` rotated in place (as
    /// [`rope_inplace`](Self::rope_inplace)), k `[n_tokens, n_kv_heads,
    /// head_dim]` rotated into `k_cache` and v `[n_tokens, n_kv_heads,
    /// head_dim_v]` copied into `v_cache` (as [`store`](Self::store)), at rows
    /// `pos0 ..` of caches `[n_ctx, n_kv_heads * head_dim(_v)]` (both F16 or
    /// both F32); the rotated q is then multiplied by `q_scale` (1.0: an
    /// exact no-op). k is left unchanged. head_dim_v must be even.
    #[allow(clippy::too_many_arguments)]
    pub fn rope_store_kv(
        &mut self,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        k_cache: &GpuTensor,
        v_cache: &GpuTensor,
        pos0: u32,
        p: &RopeParams,
        n_kv_heads: u32,
        head_dim_v: u32,
        freq_factors: Option<&GpuTensor>,
        q_scale: f32,
        qk_norm: Option<(&GpuTensor, &GpuTensor, f32)>,
    ) -> Result<()> {
        const OP: &str = "rope_store_kv";
        let mode = self.rope_check(OP, q, p)?;
        if let Some((qn, kn, _)) = qk_norm {
            if p.head_dim > MAX_HEAD_DIM {
                return Err(shape(OP, format!("head_dim {} with q/k norms", p.head_dim)));
            }
            want(OP, qn, "q_norm", GpuDType::F32, p.head_dim as u64)?;
            want(OP, kn, "k_norm", GpuDType::F32, p.head_dim as u64)?;
        }
        let kp = RopeParams {
            n_heads: n_kv_heads,
            ..*p
        };
        self.rope_check(OP, k, &kp)?;
        if head_dim_v == 0 || !head_dim_v.is_multiple_of(2) {
            return Err(shape(OP, format!("head_dim_v {head_dim_v} must be even")));
        }
        let max = self.ctx.max_workgroups;
        let heads = p.n_heads as u64 + 2 * n_kv_heads as u64;
        if heads > max as u64 {
            return Err(shape(OP, "too many heads for one dispatch"));
        }
        let tokens = p.n_tokens as u64;
        let end = (pos0 as u64)
            .checked_add(tokens)
            .ok_or_else(|| shape(OP, "position overflow"))?;
        let kv_dtype = k_cache.dtype();
        if kv_dtype == GpuDType::U32 || v_cache.dtype() != kv_dtype {
            return Err(shape(OP, "caches must both be f16 or both f32"));
        }
        want(
            OP,
            v,
            "v",
            GpuDType::F32,
            tokens * n_kv_heads as u64 * head_dim_v as u64,
        )?;
        want(
            OP,
            k_cache,
            "k_cache",
            kv_dtype,
            end * n_kv_heads as u64 * p.head_dim as u64,
        )?;
        want(
            OP,
            v_cache,
            "v_cache",
            kv_dtype,
            end * n_kv_heads as u64 * head_dim_v as u64,
        )?;
        distinct(OP, q, &[k, v, k_cache, v_cache])?;
        distinct(OP, k_cache, &[k, v, v_cache])?;
        distinct(OP, v_cache, &[k, v])?;
        if let Some(f) = freq_factors {
            want(OP, f, "freq_factors", GpuDType::F32, p.n_rot as u64 / 2)?;
        }
        let dummy;
        let ff_buf = match freq_factors {
            Some(f) => &f.buffer,
            None => {
                dummy = self.ctx.scratch("rope_no_factors", 1, GpuDType::F32)?;
                &dummy.buffer
            }
        };
        let words = p.head_dim.max(head_dim_v) / 2;
        let mut binds = vec![
            (0, &k.buffer),
            (4, &q.buffer),
            (5, ff_buf),
            (6, &k_cache.buffer),
            (7, &v_cache.buffer),
            (8, &v.buffer),
        ];
        let (cs, has_cs) = self.rope_cs(OP, end, p.n_rot)?;
        binds.push((12, &cs.buffer));
        let (entry, gx, eps) = match qk_norm {
            // One workgroup per head: the norm needs the whole head.
            Some((qn, kn, eps)) => {
                binds.extend([(10, &qn.buffer), (11, &kn.buffer)]);
                ("norm_rope_kv", 1, eps)
            }
            None => ("rope_kv", words.div_ceil(64), 0.0),
        };
        self.dispatch(
            &ShaderVariant::plain(files::ROPE, entry),
            &binds,
            3,
            &rope_words(
                p,
                mode,
                [
                    pos0,
                    u32::from(freq_factors.is_some()),
                    n_kv_heads,
                    head_dim_v,
                    u32::from(kv_dtype == GpuDType::F16),
                ],
            )
            .into_iter()
            .chain([q_scale.to_bits(), eps.to_bits(), has_cs])
            .collect::<Vec<u32>>(),
            (gx, heads as u32, p.n_tokens),
        )
    }

    /// One elementwise dispatch of entry `entry` over `n` elements; `bind`
    /// lists the (binding, tensor) pairs it uses (binding 2 is the output).
    #[allow(clippy::too_many_arguments)]
    fn elementwise(
        &mut self,
        op: &'static str,
        file: ShaderFile,
        entry: &'static str,
        bind: &[(u32, &GpuTensor)],
        n: usize,
        s: f32,
        m: u32,
    ) -> Result<()> {
        for (b, t) in bind {
            want(
                op,
                t,
                if *b == 2 { "out" } else { "input" },
                GpuDType::F32,
                n as u64,
            )?;
        }
        if let Some((_, out)) = bind.iter().find(|(b, _)| *b == 2) {
            let inputs: Vec<&GpuTensor> = bind
                .iter()
                .filter(|(b, _)| *b != 2)
                .map(|(_, t)| *t)
                .collect();
            distinct(op, out, &inputs)?;
        }
        if n == 0 {
            return Ok(());
        }
        let n32 = u32::try_from(n).map_err(|_| shape(op, "more than 2^32 elements"))?;
        let (gx, gy) = self.grid(op, (n as u64).div_ceil(256))?;
        let mut buffers: Vec<(u32, &wgpu::Buffer)> =
            bind.iter().map(|(b, t)| (*b, &t.buffer)).collect();
        let table;
        if file == files::GLU && entry.starts_with("geglu") {
            table = self.ctx.gelu_table()?;
            buffers.push((4, &table.buffer));
        }
        self.dispatch(
            &ShaderVariant::plain(file, entry),
            &buffers,
            3,
            &[n32, gx * 256, s.to_bits(), m],
            (gx, gy, 1),
        )
    }

    /// out = act(gate) * up over `n` elements.
    pub fn glu(
        &mut self,
        gate: &GpuTensor,
        up: &GpuTensor,
        out: &GpuTensor,
        n: usize,
        kind: GluOp,
    ) -> Result<()> {
        let entry = match kind {
            GluOp::SwiGlu => "swiglu",
            GluOp::GeGlu => "geglu",
        };
        self.elementwise(
            entry,
            files::GLU,
            entry,
            &[(0, gate), (1, up), (2, out)],
            n,
            0.0,
            0,
        )
    }

    /// gate = act(gate) * up over `n` elements, in place.
    pub fn glu_inplace(
        &mut self,
        gate: &GpuTensor,
        up: &GpuTensor,
        n: usize,
        kind: GluOp,
    ) -> Result<()> {
        let entry = match kind {
            GluOp::SwiGlu => "swiglu_assign",
            GluOp::GeGlu => "geglu_assign",
        };
        self.elementwise(entry, files::GLU, entry, &[(1, up), (2, gate)], n, 0.0, 0)
    }

    /// [`glu_inplace`](Self::glu_inplace) of one token's `n` elements (a
    /// multiple of 32), and the result quantised for
    /// [`matvec_q8`](Self::matvec_q8) into `xq` (as
    /// [`pack_q8`](Self::pack_q8) would): one dispatch.
    pub fn glu_inplace_pack_q8(
        &mut self,
        gate: &GpuTensor,
        up: &GpuTensor,
        xq: &GpuTensor,
        n: usize,
        kind: GluOp,
        mode: Q8Mode,
    ) -> Result<()> {
        const OP: &str = "glu_pack_q8";
        q8_len(OP, n, mode)?;
        want(OP, gate, "gate", GpuDType::F32, n as u64)?;
        want(OP, up, "up", GpuDType::F32, n as u64)?;
        want_q8(OP, xq, n)?;
        distinct(OP, gate, &[up, xq])?;
        distinct(OP, xq, &[up])?;
        let entry = match kind {
            GluOp::SwiGlu => "swiglu_assign_q8",
            GluOp::GeGlu => "geglu_assign_q8",
        };
        let nb = u32::try_from(n / 32).map_err(|_| shape(OP, "too many blocks"))?;
        let (gx, gy) = self.grid(OP, (nb as u64).div_ceil(8))?;
        let table = self.ctx.gelu_table()?;
        self.dispatch(
            &ShaderVariant::plain(files::GLU, entry),
            &[
                (1, &up.buffer),
                (2, &gate.buffer),
                (4, &table.buffer),
                (9, &xq.buffer),
            ],
            3,
            &[n as u32, gx, mode as u32],
            (gx, gy, 1),
        )
    }

    /// out = a + b over `n` elements.
    pub fn add(&mut self, a: &GpuTensor, b: &GpuTensor, out: &GpuTensor, n: usize) -> Result<()> {
        self.elementwise(
            "add",
            files::ADD,
            "main",
            &[(0, a), (1, b), (2, out)],
            n,
            0.0,
            0,
        )
    }

    /// a += b over `n` elements (residual add in place).
    pub fn add_inplace(&mut self, a: &GpuTensor, b: &GpuTensor, n: usize) -> Result<()> {
        self.elementwise(
            "add_inplace",
            files::ADD,
            "add_assign",
            &[(1, b), (2, a)],
            n,
            0.0,
            0,
        )
    }

    /// x[r, :] += bias for `n_rows` rows of `row_len` elements.
    pub fn add_bias(
        &mut self,
        x: &GpuTensor,
        bias: &GpuTensor,
        n_rows: usize,
        row_len: usize,
    ) -> Result<()> {
        const OP: &str = "add_bias";
        let m = u32::try_from(row_len).map_err(|_| shape(OP, "row too long"))?;
        if m == 0 {
            return Err(shape(OP, "empty rows"));
        }
        want(OP, bias, "bias", GpuDType::F32, row_len as u64)?;
        let n = n_rows
            .checked_mul(row_len)
            .ok_or_else(|| shape(OP, "size overflow"))?;
        want(OP, x, "x", GpuDType::F32, n as u64)?;
        distinct(OP, x, &[bias])?;
        if n == 0 {
            return Ok(());
        }
        let n32 = u32::try_from(n).map_err(|_| shape(OP, "more than 2^32 elements"))?;
        let (gx, gy) = self.grid(OP, (n as u64).div_ceil(256))?;
        self.dispatch(
            &ShaderVariant::plain(files::ADD, "add_rows"),
            &[(1, &bias.buffer), (2, &x.buffer)],
            3,
            &[n32, gx * 256, 0, m],
            (gx, gy, 1),
        )
    }

    /// out = a * b over `n` elements.
    pub fn mul(&mut self, a: &GpuTensor, b: &GpuTensor, out: &GpuTensor, n: usize) -> Result<()> {
        self.elementwise(
            "mul",
            files::ADD,
            "mul",
            &[(0, a), (1, b), (2, out)],
            n,
            0.0,
            0,
        )
    }

    /// out = x * s over `n` elements (e.g. Gemma's embedding scale).
    pub fn scale(&mut self, x: &GpuTensor, s: f32, out: &GpuTensor, n: usize) -> Result<()> {
        self.elementwise("scale", files::ADD, "scale", &[(0, x), (2, out)], n, s, 0)
    }

    /// x *= s over `n` elements, in place.
    pub fn scale_inplace(&mut self, x: &GpuTensor, s: f32, n: usize) -> Result<()> {
        self.elementwise(
            "scale_inplace",
            files::ADD,
            "scale_assign",
            &[(2, x)],
            n,
            s,
            0,
        )
    }

    /// x = cap * tanh(x / cap) over `n` elements, in place (Gemma 2's
    /// final-logit soft-capping); `cap` must be positive.
    pub fn softcap_inplace(&mut self, x: &GpuTensor, cap: f32, n: usize) -> Result<()> {
        if cap.is_nan() || cap <= 0.0 {
            return Err(shape(
                "softcap_inplace",
                format!("cap {cap} must be positive"),
            ));
        }
        self.elementwise(
            "softcap_inplace",
            files::ADD,
            "softcap_assign",
            &[(2, x)],
            n,
            cap,
            0,
        )
    }

    /// y = softmax(scale * x) for `n_rows` rows of `n_cols`.
    pub fn softmax(
        &mut self,
        x: &GpuTensor,
        y: &GpuTensor,
        n_rows: u32,
        n_cols: u32,
        scale: f32,
    ) -> Result<()> {
        const OP: &str = "softmax";
        let n = self.rows_check(OP, n_rows, n_cols)?;
        want(OP, x, "x", GpuDType::F32, n)?;
        want(OP, y, "y", GpuDType::F32, n)?;
        distinct(OP, y, &[x])?;
        self.dispatch(
            &ShaderVariant::plain(files::SOFTMAX, "main"),
            &[(0, &x.buffer), (1, &y.buffer)],
            2,
            &[n_cols, n_rows, scale.to_bits()],
            (n_rows, 1, 1),
        )
    }

    /// `out[0]` = index of the largest non-NaN value among `x[..n]`, smallest on ties
    /// (argmax.wgsl: one workgroup up to [`ARGMAX_ONE_PASS`] values, else
    /// workgroups' partial results and a second pass).
    pub fn argmax(&mut self, x: &GpuTensor, n: usize, out: &GpuTensor) -> Result<()> {
        const OP: &str = "argmax";
        if n == 0 {
            return Err(shape(OP, "no values"));
        }
        want(OP, x, "x", GpuDType::F32, n as u64)?;
        want(OP, out, "out", GpuDType::U32, 1)?;
        let n32 = u32::try_from(n).map_err(|_| shape(OP, "more than 2^32 values"))?;
        if n <= ARGMAX_ONE_PASS {
            return self.dispatch(
                &ShaderVariant::plain(files::ARGMAX, "main"),
                &[(0, &x.buffer), (1, &out.buffer)],
                2,
                &[n32],
                (1, 1, 1),
            );
        }
        // Workgroups of 256 with ~8 values an invocation, at most 256 of
        // them (`finish` takes a pair an invocation).
        let groups = n.div_ceil(2048).min(256) as u32;
        let part = self
            .ctx
            .scratch("argmax_part", 2 * groups as usize, GpuDType::U32)?;
        self.dispatch(
            &ShaderVariant::plain(files::ARGMAX, "partial"),
            &[(0, &x.buffer), (1, &part.buffer)],
            2,
            &[n32, groups],
            (groups, 1, 1),
        )?;
        self.dispatch(
            &ShaderVariant::plain(files::ARGMAX, "finish"),
            &[(0, &part.buffer), (1, &out.buffer)],
            2,
            &[groups],
            (1, 1, 1),
        )
    }

    /// dst[dst_off .. dst_off + n] = src[src_off .. src_off + n] (both f32 or both u32).
    pub fn copy(
        &mut self,
        src: &GpuTensor,
        src_off: usize,
        dst: &GpuTensor,
        dst_off: usize,
        n: usize,
    ) -> Result<()> {
        const OP: &str = "copy";
        if src.dtype() != dst.dtype() || src.dtype() == GpuDType::F16 {
            return Err(shape(OP, "src and dst must both be f32 or both u32"));
        }
        let (Some(se), Some(de)) = (src_off.checked_add(n), dst_off.checked_add(n)) else {
            return Err(shape(OP, "range overflow"));
        };
        if se > src.len() || de > dst.len() {
            return Err(shape(OP, "range out of bounds"));
        }
        if src.buffer == dst.buffer && src_off.max(dst_off) < src_off.min(dst_off) + n {
            return Err(shape(OP, "overlapping copy"));
        }
        if n > 0 {
            self.end_pass();
            self.encoder.copy_buffer_to_buffer(
                &src.buffer,
                src_off as u64 * 4,
                &dst.buffer,
                dst_off as u64 * 4,
                Some(n as u64 * 4),
            );
        }
        Ok(())
    }

    /// dst[offset .. offset + n] = src[..n], converting to f16 when dst is f16
    /// (KV-cache append; any offset). f32 destinations use a buffer copy.
    pub fn store(
        &mut self,
        src: &GpuTensor,
        n: usize,
        dst: &GpuTensor,
        offset: usize,
    ) -> Result<()> {
        const OP: &str = "store";
        want(OP, src, "src", GpuDType::F32, n as u64)?;
        let end = offset
            .checked_add(n)
            .ok_or_else(|| shape(OP, "offset overflow"))?;
        if end > dst.len() {
            return Err(shape(
                OP,
                format!("{offset}+{n} exceeds {} elements", dst.len()),
            ));
        }
        distinct(OP, dst, &[src])?;
        if n == 0 {
            return Ok(());
        }
        match dst.dtype() {
            GpuDType::F32 => self.copy(src, 0, dst, offset, n),
            GpuDType::F16 => {
                let first_word = offset / 2;
                let n_words = (end.div_ceil(2) - first_word) as u64;
                let (gx, gy) = self.grid(OP, n_words.div_ceil(256))?;
                if gy > 1 || end > u32::MAX as usize {
                    return Err(shape(OP, "too many elements for one dispatch"));
                }
                self.dispatch(
                    &ShaderVariant::plain(files::KV_STORE, "main"),
                    &[(0, &src.buffer), (1, &dst.buffer)],
                    2,
                    &[n as u32, offset as u32, first_word as u32, n_words as u32],
                    (gx, 1, 1),
                )
            }
            GpuDType::U32 => Err(shape(OP, "dst must be f32 or f16")),
        }
    }

    /// y[..n] = x[..n] rounded like ggml's CPU activation quantization
    /// (quantize, then dequantize in f32); `n` is a multiple of the block.
    pub fn round_activations(
        &mut self,
        x: &GpuTensor,
        y: &GpuTensor,
        n: usize,
        kind: ActRound,
    ) -> Result<()> {
        const OP: &str = "round_activations";
        want(OP, x, "x", GpuDType::F32, n as u64)?;
        want(OP, y, "y", GpuDType::F32, n as u64)?;
        distinct(OP, y, &[x])?;
        let block = kind.block();
        if !n.is_multiple_of(block) {
            return Err(shape(OP, format!("{n} is not a multiple of {block}")));
        }
        let n_blocks = u32::try_from(n / block).map_err(|_| shape(OP, "too many blocks"))?;
        if n_blocks == 0 {
            return Ok(());
        }
        let (gx, gy) = self.grid(OP, (n_blocks as u64).div_ceil(64))?;
        let k = match kind {
            ActRound::Q8 => 0,
            ActRound::Q8K => 1,
            ActRound::F16 => 2,
            ActRound::Bf16 => 3,
        };
        self.dispatch(
            &ShaderVariant::plain(files::ACT_QUANT, "main"),
            &[(0, &x.buffer), (1, &y.buffer)],
            2,
            &[n_blocks, block as u32, k, gx * 64],
            (gx, gy, 1),
        )
    }

    /// Quantises x `[n]` (n a multiple of the mode's block) to 8 bits for
    /// [`matvec_q8`](Self::matvec_q8): `xq` (u32, at least
    /// [`q8_words`]`(n)`) gets n/4 words of packed quants, then (d, s) per
    /// 32-element block, rounded as the CPU's activations for `mode`.
    pub fn pack_q8(&mut self, x: &GpuTensor, xq: &GpuTensor, n: usize, mode: Q8Mode) -> Result<()> {
        self.pack_q8_rows(x, xq, n, 1, mode)
    }

    /// [`pack_q8`](Self::pack_q8) of `n_rows` rows x `[n_rows, n]`: row t
    /// at word t·[`q8_stride`]`(n)` of `xq` (for [`matmul_q8`](Self::matmul_q8)).
    pub fn pack_q8_rows(
        &mut self,
        x: &GpuTensor,
        xq: &GpuTensor,
        n: usize,
        n_rows: usize,
        mode: Q8Mode,
    ) -> Result<()> {
        const OP: &str = "pack_q8";
        q8_len(OP, n, mode)?;
        let total = n as u64 * n_rows as u64;
        want(OP, x, "x", GpuDType::F32, total)?;
        let stride = q8_stride(n);
        want_q8_rows(OP, xq, n, n_rows as u64)?;
        distinct(OP, xq, &[x])?;
        let too_many = || shape(OP, "too many blocks");
        let n_blocks = u32::try_from(n / 32).map_err(|_| too_many())?;
        let rows = u32::try_from(n_rows).map_err(|_| too_many())?;
        let all = n_blocks.checked_mul(rows).ok_or_else(too_many)?;
        if all == 0 {
            return Ok(());
        }
        // A workgroup per 32 blocks (256 vec4s, 8 a block).
        let (gx, gy) = self.grid(OP, (all as u64).div_ceil(32))?;
        self.dispatch(
            &ShaderVariant::plain(files::ACT_QUANT, "pack_q8"),
            &[(0, &x.buffer), (9, &xq.buffer)],
            2,
            &[n_blocks, 32, 0, gx * 256, rows, stride as u32, mode as u32],
            (gx, gy, 1),
        )
    }

    /// Y `[n_tok, n_rows]` (+)= X W^T with X `[n_tok, n_cols]` quantised
    /// by [`pack_q8_rows`](Self::pack_q8_rows) in the weight type's
    /// [`Q8Mode`]: the integer dot products of [`matvec_q8`](Self::matvec_q8),
    /// 8 tokens per workgroup (matmul_q8.wgsl).
    pub fn matmul_q8(
        &mut self,
        w: &QuantMatrix,
        xq: &GpuTensor,
        y: &GpuTensor,
        n_tok: u32,
        accumulate: bool,
    ) -> Result<()> {
        const OP: &str = "matmul_q8";
        let n_cols = w.n_cols();
        if !n_cols.is_multiple_of(32) {
            return Err(shape(OP, format!("{n_cols} columns: not a multiple of 32")));
        }
        if n_tok == 0 {
            return Err(shape(OP, "no tokens"));
        }
        let stride = q8_stride(n_cols as usize);
        want_q8_rows(OP, xq, n_cols as usize, n_tok as u64)?;
        want(OP, y, "y", GpuDType::F32, n_tok as u64 * w.n_rows())?;
        distinct(OP, y, &[xq])?;
        let units = (n_cols / 32) as u32;
        let tpr = q8_tpr(units).max(8);
        let variant = matmul_q8_variant(w.ggml_type(), tpr)?;
        let rpw = (64 / tpr) as u64;
        let gz = n_tok.div_ceil(8);
        if gz > self.ctx.max_workgroups {
            return Err(shape(
                OP,
                format!("{n_tok} tokens exceed the dispatch limit"),
            ));
        }
        for part in w.parts() {
            let (gx, gy) = self.grid(OP, part.n_rows.div_ceil(rpw))?;
            let params = [
                n_cols as u32,
                units,
                w.row_bytes() as u32,
                part.n_rows as u32,
                part.first_row as u32,
                gx,
                u32::from(accumulate),
                n_tok,
                w.n_rows() as u32,
                (stride / 4) as u32,
            ];
            self.dispatch_part(&variant, part, &xq.buffer, &y.buffer, &params, (gx, gy, gz))?;
        }
        Ok(())
    }

    /// y = W xq (or y += W xq when `accumulate`) with x quantised by
    /// [`pack_q8`](Self::pack_q8): integer dot products on the weights'
    /// quants (types with [`has_q8_matvec`](crate::has_q8_matvec); n_cols a multiple of 32).
    pub fn matvec_q8(
        &mut self,
        w: &QuantMatrix,
        xq: &GpuTensor,
        y: &GpuTensor,
        accumulate: bool,
    ) -> Result<()> {
        const OP: &str = "matvec_q8";
        let n_cols = w.n_cols();
        if !n_cols.is_multiple_of(32) {
            return Err(shape(OP, format!("{n_cols} columns: not a multiple of 32")));
        }
        want_q8(OP, xq, n_cols as usize)?;
        want(OP, y, "y", GpuDType::F32, w.n_rows())?;
        distinct(OP, y, &[xq])?;
        let units = (n_cols / 32) as u32;
        let tpr = q8_tpr(units);
        let variant = matvec_q8_variant(w.ggml_type(), tpr, self.ctx.use_subgroups())?;
        self.matvec_parts(OP, &variant, w, xq, y, (64 / tpr) as u64, accumulate)
    }

    /// Y `[n_tok, n_rows]` (+)= X W^T with X quantised by
    /// [`pack_q8_rows`](Self::pack_q8_rows) in the weight type's
    /// [`Q8Mode`], every output summed in the CPU backend's float order
    /// (`zeta_tensor::cpu::kernels::dot_order` for the token's place in the
    /// batch; matmul_exact.wgsl): the CPU's bits. Types with
    /// [`has_exact_matmul`](crate::has_exact_matmul).
    pub fn matmul_exact(
        &mut self,
        w: &QuantMatrix,
        xq: &GpuTensor,
        y: &GpuTensor,
        n_tok: u32,
        accumulate: bool,
    ) -> Result<()> {
        const OP: &str = "matmul_exact";
        let ty = w.ggml_type();
        let n_cols = w.n_cols();
        let block = Q8Mode::of(ty).block() as u64;
        if !n_cols.is_multiple_of(block) {
            return Err(shape(
                OP,
                format!("{n_cols} columns: not a multiple of {block}"),
            ));
        }
        if n_tok == 0 {
            return Err(shape(OP, "no tokens"));
        }
        let stride = q8_stride(n_cols as usize);
        want_q8_rows(OP, xq, n_cols as usize, n_tok as u64)?;
        want(OP, y, "y", GpuDType::F32, n_tok as u64 * w.n_rows())?;
        distinct(OP, y, &[xq])?;
        let (rows, n) = (w.n_rows() as usize, n_tok as usize);
        let order = |t: usize| dot_order(ty, rows, t, n).ok_or(WgpuError::UnsupportedType(ty));
        // Runs of tokens with one order (Q4_K: gemm order, then gemv for n % 4).
        let mut t0 = 0;
        while t0 < n {
            let o = order(t0)?;
            let mut t1 = t0 + 1;
            while t1 < n && order(t1)? == o {
                t1 += 1;
            }
            let run = (t1 - t0) as u32;
            // Prompts: the one-chain orders on cooperative matrices where the
            // device has them (matmul_exact_coop.wgsl), else one invocation
            // per output (`tile_*`, 16 x 16 per workgroup); else the subgroup
            // kernels wherever subgroups are on and hold 8 invocations at
            // least (lavapipe: 8, NVIDIA: 32), or the plain ones.
            // (Not the Q4_K gemm order: four packets per block made it
            // slower there, llama-1b Q4_K_M pp512 1305 t/s vs 1970 with
            // `blocks_sg`; Q4_0's repacked order went from 1214 to 2227.)
            let prompt = run >= exact_tile_min();
            let coop = if prompt && self.ctx.use_coop() {
                matmul_exact_coop_variant(ty, o)
            } else {
                None
            };
            let tile = prompt && o != DotOrder::Q4KGemm;
            let sg = self.ctx.exact_sg();
            let np = if sg { exact_np(o) } else { 0 };
            let (variant, rows_per_wg, gz) = if let Some(c) = coop {
                // 64 rows x 64 tokens a workgroup (matmul_exact_coop.wgsl).
                (c, 64, run.div_ceil(64))
            } else if tile {
                (matmul_exact_tile_variant(ty, o)?, 16, run.div_ceil(16))
            } else if let Some(v) = matmul_exact_tr_variant(ty, o, false) {
                // The 32-element types' lane order: matmul_exact_tr.wgsl.
                (v, EXACT_ROWS, run)
            } else if sg {
                let rows = exact_sg_rows(self.ctx.info().subgroup_size.1, np);
                (matmul_exact_variant(ty, o, np)?, rows, run)
            } else {
                (matmul_exact_variant(ty, o, 0)?, EXACT_ROWS, run)
            };
            if gz > self.ctx.max_workgroups {
                return Err(shape(
                    OP,
                    format!("{n_tok} tokens exceed the dispatch limit"),
                ));
            }
            let at = ExactAt {
                accumulate,
                tok0: t0 as u32,
                x_stride: stride as u32,
                run,
            };
            self.exact_parts(OP, &variant, w, rows_per_wg, &xq.buffer, y, at, gz)?;
            t0 = t1;
        }
        Ok(())
    }

    /// Whether [`matmul_exact_f32`](Self::matmul_exact_f32) takes `w`: Q4_K
    /// or Q6_K in the order the CPU sums one token of it, on a device with
    /// the subgroup exact kernels.
    pub fn can_matmul_exact_f32(&self, w: &QuantMatrix) -> bool {
        self.exact_f32_kernel(w).is_some()
    }

    /// [`matmul_exact_f32`](Self::matmul_exact_f32)'s kernel for `w` and the
    /// order it sums in, where this device has one.
    fn exact_f32_kernel(&self, w: &QuantMatrix) -> Option<(ShaderVariant, DotOrder)> {
        let o = dot_order(w.ggml_type(), w.n_rows() as usize, 0, 1)?;
        let v = matmul_exact_f32_variant(w.ggml_type(), o).filter(|_| self.ctx.exact_sg())?;
        Some((v, o))
    }

    /// y (+)= W x for one token of f32 activations `x` (`[n_cols]`): what
    /// [`pack_q8_rows`](Self::pack_q8_rows) in Q8_K then
    /// [`matmul_exact`](Self::matmul_exact) give, bit for bit, in one
    /// dispatch: every workgroup packs each chunk of x it reads
    /// (matmul_exact_sg.wgsl, SG_F32). Types that
    /// [`can_matmul_exact_f32`](Self::can_matmul_exact_f32) takes.
    pub fn matmul_exact_f32(
        &mut self,
        w: &QuantMatrix,
        x: &GpuTensor,
        y: &GpuTensor,
        accumulate: bool,
    ) -> Result<()> {
        const OP: &str = "matmul_exact_f32";
        let (variant, o) = self
            .exact_f32_kernel(w)
            .ok_or(WgpuError::UnsupportedType(w.ggml_type()))?;
        let n_cols = w.n_cols();
        if !n_cols.is_multiple_of(256) {
            return Err(shape(
                OP,
                format!("{n_cols} columns: not a multiple of 256"),
            ));
        }
        want(OP, x, "x", GpuDType::F32, n_cols)?;
        want(OP, y, "y", GpuDType::F32, w.n_rows())?;
        distinct(OP, y, &[x])?;
        let rows_per_wg = exact_sg_rows(self.ctx.info().subgroup_size.1, exact_np(o));
        let at = ExactAt {
            accumulate,
            tok0: 0,
            x_stride: 0,
            run: 1,
        };
        self.exact_parts(OP, &variant, w, rows_per_wg, &x.buffer, y, at, 1)
    }

    /// One dispatch of an exact matmul `variant` per part of `w`
    /// (`rows_per_wg` rows a workgroup, `gz` token workgroups), activations
    /// `x`, output `y`: matmul_exact.wgsl's parameters.
    #[allow(clippy::too_many_arguments)]
    fn exact_parts(
        &mut self,
        op: &'static str,
        variant: &ShaderVariant,
        w: &QuantMatrix,
        rows_per_wg: u64,
        x: &wgpu::Buffer,
        y: &GpuTensor,
        at: ExactAt,
        gz: u32,
    ) -> Result<()> {
        let n_cols = w.n_cols();
        for part in w.parts() {
            let (gx, gy) = self.grid(op, part.n_rows.div_ceil(rows_per_wg))?;
            let params = [
                n_cols as u32,
                (n_cols / 32) as u32,
                w.row_bytes() as u32,
                part.n_rows as u32,
                part.first_row as u32,
                gx,
                u32::from(at.accumulate),
                at.tok0,
                w.n_rows() as u32,
                at.x_stride,
                0,
                0,
                0,
                0,
                0,
                at.run,
            ];
            self.dispatch_part(variant, part, x, &y.buffer, &params, (gx, gy, gz))?;
        }
        Ok(())
    }

    /// [`GpuContext::can_matmul_exact_multi`].
    pub fn can_matmul_exact_multi(&self, ms: &[&QuantMatrix]) -> bool {
        self.ctx.can_matmul_exact_multi(ms)
    }

    /// [`matvec_q8_multi`](Self::matvec_q8_multi) in the CPU backend's float
    /// order (one token; matmul_exact_sg.wgsl `*_multi`): each output has
    /// the bits of [`matmul_exact`](Self::matmul_exact).
    pub fn matmul_exact_multi(
        &mut self,
        ms: &[&QuantMatrix],
        xq: &GpuTensor,
        ys: &[&GpuTensor],
        dummy: &GpuTensor,
    ) -> Result<()> {
        const OP: &str = "matmul_exact_multi";
        if !self.can_matmul_exact_multi(ms) || ys.len() != ms.len() {
            return Err(shape(OP, "not a group of 2-3 exact matrices in one buffer"));
        }
        group_activations(OP, ms, xq)?;
        group_outputs(OP, ms, xq, ys, dummy)?;
        let (variant, rows_per_wg) = self.ctx.exact_multi_kernel(ms, false, false)?;
        self.group_dispatch(OP, &variant, ms, xq, ys, dummy, rows_per_wg, None)
    }

    /// [`GpuContext::can_rms_norm_matmul_exact_multi`].
    pub fn can_rms_norm_matmul_exact_multi(&self, ms: &[&QuantMatrix]) -> bool {
        self.ctx.can_rms_norm_matmul_exact_multi(ms)
    }

    /// [`rms_norm_pack_q8`](Self::rms_norm_pack_q8) of `norm` (into
    /// `norm.xb`, and 8-bit activations in the weight type's mode), then
    /// [`matmul_exact_multi`](Self::matmul_exact_multi) of them, in one
    /// dispatch: every workgroup normalises and packs the row for itself
    /// (matmul_exact_tr.wgsl `lanes_tr_multi_norm`; `xq` is bound but
    /// neither read nor written). Same bits as the two ops.
    pub fn rms_norm_matmul_exact_multi(
        &mut self,
        norm: &GroupNorm<'_>,
        ms: &[&QuantMatrix],
        xq: &GpuTensor,
        ys: &[&GpuTensor],
        dummy: &GpuTensor,
    ) -> Result<()> {
        const OP: &str = "rms_norm_matmul_exact_multi";
        if !self.can_matmul_exact_multi(ms) || ys.len() != ms.len() {
            return Err(shape(OP, "not a group of 2-3 exact matrices in one buffer"));
        }
        let (variant, rows_per_wg) = self.ctx.exact_multi_kernel(ms, false, true)?;
        group_activations(OP, ms, xq)?;
        group_outputs(OP, ms, xq, ys, dummy)?;
        let mut outs = ys.to_vec();
        outs.push(dummy);
        norm.check(OP, ms[0].n_cols(), &outs)?;
        self.group_dispatch(OP, &variant, ms, xq, ys, dummy, rows_per_wg, Some(norm))
    }

    /// [`GpuContext::can_matmul_exact_multi_rope`].
    pub fn can_matmul_exact_multi_rope(&self, ms: &[&QuantMatrix]) -> bool {
        self.ctx.can_matmul_exact_multi_rope(ms)
    }

    /// [`matmul_exact_multi`](Self::matmul_exact_multi) of a Q/K/V group
    /// `ms` for one token at position `pos` followed by
    /// [`rope_store_kv`](Self::rope_store_kv) in the normal (llama) order
    /// without q/k norms or a q scale, in one dispatch: q (`[n_heads,
    /// head_dim]`) gets the rotated queries, the f16 caches the rotated key
    /// and the value at row `pos` (k and v themselves are never written).
    /// The rotation reads the table set by
    /// [`set_rope_table`](Self::set_rope_table) (required). Same bits as
    /// the two ops.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_exact_multi_rope(
        &mut self,
        ms: &[&QuantMatrix],
        xq: &GpuTensor,
        q: &GpuTensor,
        k_cache: &GpuTensor,
        v_cache: &GpuTensor,
        pos: u32,
        p: &RopeParams,
        n_kv_heads: u32,
        head_dim_v: u32,
    ) -> Result<()> {
        let kv = (k_cache, v_cache);
        self.multi_rope(
            "matmul_exact_multi_rope",
            None,
            ms,
            xq,
            q,
            kv,
            pos,
            p,
            n_kv_heads,
            head_dim_v,
        )
    }

    /// [`rms_norm_pack_q8`](Self::rms_norm_pack_q8) of `norm`, then
    /// [`matmul_exact_multi_rope`](Self::matmul_exact_multi_rope), in one
    /// dispatch (`lanes_tr_multi_rope_norm`; a group
    /// [`can_rms_norm_matmul_exact_multi`](Self::can_rms_norm_matmul_exact_multi)
    /// takes; `xq` is bound but neither read nor written). Same bits as the
    /// two ops.
    #[allow(clippy::too_many_arguments)]
    pub fn rms_norm_matmul_exact_multi_rope(
        &mut self,
        norm: &GroupNorm<'_>,
        ms: &[&QuantMatrix],
        xq: &GpuTensor,
        q: &GpuTensor,
        k_cache: &GpuTensor,
        v_cache: &GpuTensor,
        pos: u32,
        p: &RopeParams,
        n_kv_heads: u32,
        head_dim_v: u32,
    ) -> Result<()> {
        // (multi_rope checks the norm and refuses groups without a
        // staged-norm kernel.)
        let kv = (k_cache, v_cache);
        self.multi_rope(
            "rms_norm_matmul_exact_multi_rope",
            Some(norm),
            ms,
            xq,
            q,
            kv,
            pos,
            p,
            n_kv_heads,
            head_dim_v,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn multi_rope(
        &mut self,
        op: &'static str,
        norm: Option<&GroupNorm<'_>>,
        ms: &[&QuantMatrix],
        xq: &GpuTensor,
        q: &GpuTensor,
        (k_cache, v_cache): (&GpuTensor, &GpuTensor),
        pos: u32,
        p: &RopeParams,
        n_kv_heads: u32,
        head_dim_v: u32,
    ) -> Result<()> {
        if !self.can_matmul_exact_multi_rope(ms) {
            return Err(shape(
                op,
                "not a Q/K/V group of exact matrices in one buffer",
            ));
        }
        if let Some(n) = norm {
            n.check(op, ms[0].n_cols(), &[q, k_cache, v_cache, xq])?;
        }
        if p.mode != RopeMode::Normal || p.n_tokens != 1 {
            return Err(shape(op, "one token in the normal RoPE order"));
        }
        self.rope_check(op, q, p)?;
        if head_dim_v == 0 || !head_dim_v.is_multiple_of(2) {
            return Err(shape(op, format!("head_dim_v {head_dim_v} must be even")));
        }
        let rows = [
            p.n_heads as u64 * p.head_dim as u64,
            n_kv_heads as u64 * p.head_dim as u64,
            n_kv_heads as u64 * head_dim_v as u64,
        ];
        if ms.iter().zip(rows).any(|(m, r)| m.n_rows() != r) {
            return Err(shape(op, "the matrices' rows are not q, k and v heads"));
        }
        group_activations(op, ms, xq)?;
        let end = pos as u64 + 1;
        want(op, k_cache, "k_cache", GpuDType::F16, end * rows[1])?;
        want(op, v_cache, "v_cache", GpuDType::F16, end * rows[2])?;
        distinct(op, q, &[xq, k_cache, v_cache])?;
        distinct(op, k_cache, &[xq, v_cache])?;
        distinct(op, v_cache, &[xq])?;
        let (cs, has_cs) = self.rope_cs(op, end, p.n_rot)?;
        if has_cs == 0 {
            return Err(shape(op, "no RoPE table set"));
        }
        let (variant, rows_per_wg) = self.ctx.exact_multi_kernel(ms, true, norm.is_some())?;
        let GroupParams {
            mut params,
            grid,
            buffer,
        } = self.group_params(op, ms, rows_per_wg)?;
        // n_tok (unused), then the RoPE fields and the norm's epsilon.
        params.extend([0, pos, p.n_rot, p.head_dim]);
        params.push(norm.map_or(0, |n| n.eps.to_bits()));
        let mut bindings = vec![
            (0, &buffer, 0, 0),
            (1, &xq.buffer, 0, 0),
            (2, &q.buffer, 0, 0),
            (6, &k_cache.buffer, 0, 0),
            (7, &v_cache.buffer, 0, 0),
            (8, &cs.buffer, 0, 0),
        ];
        if let Some(n) = norm {
            bindings.extend(n.bindings());
        }
        self.dispatch_ranged(&variant, &bindings, 3, &params, grid)
    }

    /// The dispatch of a weight group's kernel (`matvec_q8_multi.wgsl`,
    /// matmul_exact_sg.wgsl `*_multi`: one token, so of their Params only
    /// the row and group fields, which the two lay out alike): the group's
    /// rows, `rows_per_wg` to a workgroup, its outputs and the activations
    /// `xq`.
    #[allow(clippy::too_many_arguments)]
    fn group_dispatch(
        &mut self,
        op: &'static str,
        variant: &ShaderVariant,
        ms: &[&QuantMatrix],
        xq: &GpuTensor,
        ys: &[&GpuTensor],
        dummy: &GpuTensor,
        rows_per_wg: u64,
        norm: Option<&GroupNorm<'_>>,
    ) -> Result<()> {
        let GroupParams {
            mut params,
            grid,
            buffer,
        } = self.group_params(op, ms, rows_per_wg)?;
        let y2 = ys.get(2).copied().unwrap_or(dummy);
        let mut bindings = vec![
            (0, &buffer, 0, 0),
            (1, &xq.buffer, 0, 0),
            (2, &ys[0].buffer, 0, 0),
            (4, &ys[1].buffer, 0, 0),
            (5, &y2.buffer, 0, 0),
        ];
        if let Some(n) = norm {
            // n_tok and the RoPE fields (unused), then the epsilon.
            params.extend([0, 0, 0, 0, n.eps.to_bits()]);
            bindings.extend(n.bindings());
        }
        self.dispatch_ranged(variant, &bindings, 3, &params, grid)
    }

    /// A weight group's parameters (matmul_exact.wgsl / matvec_q8_multi.wgsl
    /// Params up to `off2`: the row and group fields), its grid for
    /// `rows_per_wg` rows a workgroup and the group's buffer.
    fn group_params(
        &self,
        op: &'static str,
        ms: &[&QuantMatrix],
        rows_per_wg: u64,
    ) -> Result<GroupParams> {
        let n_cols = ms[0].n_cols();
        let parts: Vec<&WeightPart> = ms.iter().filter_map(|m| m.single_part()).collect();
        let buffer = parts
            .first()
            .map(|p| p.buffer.clone())
            .ok_or_else(|| shape(op, "a group's matrices are one part each"))?;
        let rows: Vec<u64> = ms.iter().map(|m| m.n_rows()).collect();
        let total: u64 = rows.iter().sum();
        let (gx, gy) = self.grid(op, total.div_ceil(rows_per_wg))?;
        let off = |i: usize| parts.get(i).map_or(0, |p| p.offset as u32);
        let row = |i: usize| rows.get(i).map_or(0, |&r| r as u32);
        let params = vec![
            n_cols as u32,
            (n_cols / 32) as u32,
            ms[0].row_bytes() as u32,
            u32::try_from(total).map_err(|_| shape(op, "too many rows"))?,
            0,
            gx,
            0,
            0,
            0,
            0,
            row(0),
            row(1),
            off(0),
            off(1),
            off(2),
        ];
        Ok(GroupParams {
            params,
            grid: (gx, gy, 1),
            buffer,
        })
    }

    /// `y[i]` = `unpack2x16float(x[i])`'s low half (even `i`) or high half
    /// (odd `i`) for `n` words (f16_probe.wgsl; the probe behind
    /// [`GpuContext::f16_unpack`]).
    pub(crate) fn f16_probe(&mut self, x: &GpuTensor, y: &GpuTensor, n: usize) -> Result<()> {
        want("f16_probe", x, "x", GpuDType::U32, n as u64)?;
        self.per_input("f16_probe", files::F16_PROBE, x, y, n, &[n as u32])
    }

    /// `y[i] = f(x[i])` for one of exact.wgsl's helpers (`which`, see
    /// exact_eval.wgsl) over `n` input vec4s (x: `4 n` f32): their tests,
    /// and the probe for a fused `fma` (`which` = 0 is WGSL's own `fma`).
    pub fn exact_eval(&mut self, which: u32, x: &GpuTensor, y: &GpuTensor, n: usize) -> Result<()> {
        want("exact_eval", x, "x", GpuDType::F32, 4 * n as u64)?;
        self.per_input("exact_eval", files::EXACT_EVAL, x, y, n, &[n as u32, which])
    }

    /// One f32 `y[i]` an input `x[i]` (x checked by the caller), 64 a
    /// workgroup, by `file`'s `main` with parameters `params`.
    fn per_input(
        &mut self,
        op: &'static str,
        file: ShaderFile,
        x: &GpuTensor,
        y: &GpuTensor,
        n: usize,
        params: &[u32],
    ) -> Result<()> {
        want(op, y, "y", GpuDType::F32, n as u64)?;
        distinct(op, y, &[x])?;
        let groups = u32::try_from(n.div_ceil(64))
            .ok()
            .filter(|&g| g <= self.ctx.max_workgroups)
            .ok_or_else(|| shape(op, "too many inputs"))?;
        self.dispatch(
            &ShaderVariant::plain(file, "main"),
            &[(0, &x.buffer), (1, &y.buffer)],
            2,
            params,
            (groups.max(1), 1, 1),
        )
    }

    /// [`GpuContext::can_matvec_q8_multi`].
    pub fn can_matvec_q8_multi(&self, ms: &[&QuantMatrix]) -> bool {
        self.ctx.can_matvec_q8_multi(ms)
    }

    /// `ys[i] = ms[i] xq` for the 2 or 3 matrices of a weight group
    /// ([`can_matvec_q8_multi`](Self::can_matvec_q8_multi)) in one dispatch
    /// (matvec_q8_multi.wgsl); `dummy` is bound as the third output of a
    /// two-matrix group.
    pub fn matvec_q8_multi(
        &mut self,
        ms: &[&QuantMatrix],
        xq: &GpuTensor,
        ys: &[&GpuTensor],
        dummy: &GpuTensor,
    ) -> Result<()> {
        const OP: &str = "matvec_q8_multi";
        if !self.can_matvec_q8_multi(ms) || ys.len() != ms.len() {
            return Err(shape(OP, "not a group of 2-3 matrices in one buffer"));
        }
        let n_cols = ms[0].n_cols();
        if !n_cols.is_multiple_of(32) {
            return Err(shape(OP, format!("{n_cols} columns: not a multiple of 32")));
        }
        want_q8(OP, xq, n_cols as usize)?;
        group_outputs(OP, ms, xq, ys, dummy)?;
        let tpr = q8_tpr((n_cols / 32) as u32);
        let variant = matvec_q8_multi_variant(ms[0].ggml_type(), tpr)?;
        self.group_dispatch(OP, &variant, ms, xq, ys, dummy, (64 / tpr) as u64, None)
    }

    /// Attention of one query over the KV cache (split-K flash-decoding):
    /// q/out `[n_head, head_dim]`, the query at position `p.n_kv - 1`.
    pub fn attention_decode(
        &mut self,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        out: &GpuTensor,
        p: &AttnParams,
    ) -> Result<()> {
        self.attention(q, k, v, out, p, 1)
    }

    /// Causal attention of `n_q` consecutive queries (prefill): q/out
    /// `[n_q, n_head, head_dim]`, query `i` at position `p.n_kv - n_q + i`
    /// attending to positions `<= ` its own (and within `p.window`). The K/V
    /// rows of all `n_q` tokens must already be in the cache.
    pub fn attention(
        &mut self,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        out: &GpuTensor,
        p: &AttnParams,
        n_q: u32,
    ) -> Result<()> {
        self.attention_impl(q, k, v, out, p, n_q, None)
    }

    /// [`attention`](Self::attention) in exactly the CPU backend's
    /// arithmetic (attn_exact.wgsl): f16 K/V, no soft-cap. The KQ and KQV
    /// lane orders follow the CPU's for a batch of `n_q` tokens; queries are
    /// processed in blocks whose scores fit a 64 MiB scratch.
    pub fn attention_exact(
        &mut self,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        out: &GpuTensor,
        p: &AttnParams,
        n_q: u32,
    ) -> Result<()> {
        self.attention_exact_impl(q, k, v, out, p, n_q, None)
    }

    /// [`attention_exact`](Self::attention_exact) of one query that also
    /// writes its output quantised to 8 bits into `xq` (as
    /// [`pack_q8`](Self::pack_q8) in `mode` would; Q8_0 or Q8_1, head_dim_v
    /// a multiple of 32) in its last dispatch (`softmax_kqv`).
    #[allow(clippy::too_many_arguments)]
    pub fn attention_exact_pack(
        &mut self,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        out: &GpuTensor,
        p: &AttnParams,
        xq: &GpuTensor,
        mode: Q8Mode,
    ) -> Result<()> {
        check_attn_pack("attention_exact_pack", p, xq, mode, &[q, k, v, out])?;
        self.attention_exact_impl(q, k, v, out, p, 1, Some((xq, mode)))
    }

    #[allow(clippy::too_many_arguments)]
    fn attention_exact_impl(
        &mut self,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        out: &GpuTensor,
        p: &AttnParams,
        n_q: u32,
        pack: Option<(&GpuTensor, Q8Mode)>,
    ) -> Result<()> {
        const OP: &str = "attention_exact";
        if p.softcap != 0.0 {
            return Err(shape(OP, format!("softcap {}: not supported", p.softcap)));
        }
        if k.dtype() != GpuDType::F16 || v.dtype() != GpuDType::F16 {
            return Err(shape(OP, "K/V must be f16"));
        }
        if !p.head_dim.is_multiple_of(2) {
            // attn_exact.wgsl reads a key's halves in pairs.
            return Err(shape(OP, format!("head_dim {} must be even", p.head_dim)));
        }
        let (kv_stride, v_stride) = attn_args(OP, p, n_q, [q, k, v, out])?;
        let row = p.n_head as u64 * p.n_kv as u64;
        let block = ((16u64 << 20) / row).clamp(1, n_q as u64) as u32;
        let max = self.ctx.max_workgroups;
        let kqv_batch = n_q >= 2;
        // The 16-lane KQ order (tinyBLAS) for batches of whole 16-element
        // steps; `scores_rows` takes it up to head_dim 256 (its staging),
        // 16 queries a workgroup (8 above head_dim 128).
        let kq_batch = n_q >= 2 && p.head_dim.is_multiple_of(16);
        let rows = kq_batch && p.head_dim <= 256;
        // The queries of a `scores_rows` workgroup (its `nq`, the same rule).
        let rows_q = if p.head_dim > 128 { 8 } else { 16 };
        // `kqv` (one query): a workgroup per output.
        let d_groups = p.head_dim_v;
        if p.n_head > max || block > max || d_groups > max {
            return Err(shape(OP, "too many heads/queries for one dispatch"));
        }
        let scratch = self
            .ctx
            .scratch("attn_s", (row * block as u64) as usize, GpuDType::F32)?;
        let mut q0 = 0;
        while q0 < n_q {
            let nb = block.min(n_q - q0);
            let params = [
                p.head_dim,
                p.n_head,
                p.n_kv_head,
                p.n_kv,
                p.window,
                kv_stride as u32,
                n_q,
                q0,
                p.scale.to_bits(),
                p.head_dim_v,
                v_stride as u32,
                u32::from(kq_batch),
                p.n_kv,
                nb,
                // softmax_kqv: the rounding mode, 3 = no pack.
                pack.map_or(3, |(_, m)| m as u32),
            ];
            // One query with whole 32-output blocks: `softmax_kqv` does the
            // softmax itself (and the pack when asked).
            let fused = n_q == 1 && p.head_dim_v.is_multiple_of(32);
            // Raw scores for blocks of `rows_q` queries (each key chunk
            // staged once for the block), or for one query 16 keys a
            // workgroup (16 invocations a key), then the softmax a row at a
            // time unless fused; else `scores` (scores and softmax, a
            // workgroup a row).
            let (scores, groups, softmax) = if rows {
                ("scores_rows", (p.n_head, nb.div_ceil(rows_q), 1), true)
            } else if n_q == 1 {
                ("scores_dec", (p.n_head, p.n_kv.div_ceil(16), 1), !fused)
            } else {
                ("scores", (p.n_head, nb, 1), false)
            };
            if groups.1 > max {
                return Err(shape(OP, "too many keys for one dispatch"));
            }
            self.dispatch(
                &ShaderVariant::plain(files::ATTN_EXACT, scores),
                &[(0, &q.buffer), (1, &k.buffer), (3, &scratch.buffer)],
                4,
                &params,
                groups,
            )?;
            if softmax {
                self.dispatch(
                    &ShaderVariant::plain(files::ATTN_EXACT, "softmax"),
                    &[(3, &scratch.buffer)],
                    4,
                    &params,
                    (p.n_head, nb, 1),
                )?;
            }
            // Batches: one workgroup per head, block of 16 queries and group
            // of 64 outputs (`kqv_block`); one query: a workgroup per head
            // and 32 outputs with the softmax (`softmax_kqv`, packing for
            // the output projection when asked), else a workgroup per
            // output (`kqv`).
            let no_pack;
            let packed = match pack.filter(|_| n_q == 1) {
                Some((xq, _)) => Some(xq),
                None if fused => {
                    // softmax_kqv binds XQ even when it does not pack.
                    no_pack = self.ctx.scratch("attn_no_pack", 16, GpuDType::U32)?;
                    Some(&no_pack)
                }
                None => None,
            };
            let (entry, groups) = if fused {
                ("softmax_kqv", (p.head_dim_v / 32, p.n_head, 1))
            } else if kqv_batch {
                (
                    "kqv_block",
                    (p.n_head, nb.div_ceil(16), p.head_dim_v.div_ceil(64)),
                )
            } else {
                ("kqv", (d_groups, p.n_head, nb))
            };
            let bindings: Vec<(u32, &wgpu::Buffer)> =
                [(2, &v.buffer), (3, &scratch.buffer), (5, &out.buffer)]
                    .into_iter()
                    .chain(packed.map(|xq| (9, &xq.buffer)))
                    .collect();
            self.dispatch(
                &ShaderVariant::plain(files::ATTN_EXACT, entry),
                &bindings,
                4,
                &params,
                groups,
            )?;
            q0 += nb;
        }
        Ok(())
    }

    /// [`attention`](Self::attention) of one query that also writes its
    /// output quantised to 8 bits into `xq` (as [`pack_q8`](Self::pack_q8)
    /// in `mode` would; Q8_0 or Q8_1, head_dim_v a multiple of 32), in the
    /// same dispatch.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_pack_q8(
        &mut self,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        out: &GpuTensor,
        p: &AttnParams,
        xq: &GpuTensor,
        mode: Q8Mode,
    ) -> Result<()> {
        check_attn_pack("attention_pack_q8", p, xq, mode, &[q, k, v, out])?;
        self.attention_impl(q, k, v, out, p, 1, Some((xq, mode)))
    }

    #[allow(clippy::too_many_arguments)]
    fn attention_impl(
        &mut self,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        out: &GpuTensor,
        p: &AttnParams,
        n_q: u32,
        pack: Option<(&GpuTensor, Q8Mode)>,
    ) -> Result<()> {
        const OP: &str = "attention";
        let kv_dtype = k.dtype();
        if kv_dtype == GpuDType::U32 {
            return Err(shape(OP, "K/V must be f32 or f16"));
        }
        let (kv_stride, v_stride) = attn_args(OP, p, n_q, [q, k, v, out])?;
        // The longest attended range is the last query's.
        let longest = if p.window > 0 {
            p.n_kv.min(p.window)
        } else {
            p.n_kv
        };
        let n_chunks = longest.div_ceil(ATTN_CHUNK);
        let max = self.ctx.max_workgroups;
        if n_chunks > max || p.n_head > max || n_q > max {
            return Err(shape(OP, "too many chunks/heads/queries for one dispatch"));
        }
        let slots = n_q as usize * p.n_head as usize * n_chunks as usize;
        let scratch_o = self
            .ctx
            .scratch("attn_o", slots * p.head_dim_v as usize, GpuDType::F32)?;
        let scratch_ml = self.ctx.scratch("attn_ml", slots * 2, GpuDType::F32)?;
        let f16 = kv_dtype == GpuDType::F16;
        let params = [
            p.head_dim,
            p.n_head,
            p.n_kv_head,
            p.n_kv,
            p.window,
            n_chunks,
            kv_stride as u32,
            n_q,
            p.scale.to_bits(),
            p.softcap.to_bits(),
            p.head_dim_v,
            v_stride as u32,
            pack.map_or(0, |(_, m)| m as u32),
        ];
        let packed = |entry: &'static str, pack_entry: &'static str| match pack {
            Some((xq, _)) => (pack_entry, Some((9u32, &xq.buffer))),
            None => (entry, None),
        };
        let single = n_chunks == 1;
        let (entry, xq_bind) = if single {
            packed("chunk", "chunk_pack")
        } else {
            ("chunk", None)
        };
        let mut binds = vec![
            (0, &q.buffer),
            (1, &k.buffer),
            (2, &v.buffer),
            (3, &scratch_o.buffer),
            (4, &scratch_ml.buffer),
            (6, &out.buffer),
        ];
        binds.extend(xq_bind);
        self.dispatch(
            &attn_variant(entry, f16),
            &binds,
            5,
            &params,
            (n_chunks, p.n_head, n_q),
        )?;
        if single {
            // `chunk` wrote the normalised output.
            return Ok(());
        }
        let (entry, xq_bind) = packed("combine", "combine_pack");
        let mut binds = vec![
            (3, &scratch_o.buffer),
            (4, &scratch_ml.buffer),
            (6, &out.buffer),
        ];
        binds.extend(xq_bind);
        self.dispatch(
            &attn_variant(entry, f16),
            &binds,
            5,
            &params,
            (p.n_head, n_q, 1),
        )
    }
}

/// The outputs of a weight-group dispatch (`matvec_q8_multi`,
/// `matmul_exact_multi`): one f32 row per weight row each, none aliasing the
/// activations, the dummy third output or each other.
/// A weight group's activations: its columns a whole number of the 8-bit
/// activation blocks, `xq` holding one token's.
/// The RMSNorm a weight group's `*_norm` kernel applies to its input
/// ([`GpuBatch::rms_norm_matmul_exact_multi`]): `x` (one row of the
/// matrices' columns, f32) normalised with weight `w` and epsilon `eps`;
/// the normalised row is also written to `xb`.
#[derive(Debug, Clone, Copy)]
pub struct GroupNorm<'t> {
    /// The row to normalise.
    pub x: &'t GpuTensor,
    /// The norm's weight.
    pub w: &'t GpuTensor,
    /// Receives the normalised row.
    pub xb: &'t GpuTensor,
    /// The epsilon.
    pub eps: f32,
}

impl GroupNorm<'_> {
    /// Sizes (`n_cols` f32 each) and aliasing: `xb` aliases neither input
    /// nor any of `outs` (the kernel's other outputs and bound buffers),
    /// which alias neither input.
    fn check(&self, op: &'static str, n_cols: u64, outs: &[&GpuTensor]) -> Result<()> {
        want(op, self.x, "x", GpuDType::F32, n_cols)?;
        want(op, self.w, "w", GpuDType::F32, n_cols)?;
        want(op, self.xb, "xb", GpuDType::F32, n_cols)?;
        let mut others = vec![self.x, self.w];
        others.extend_from_slice(outs);
        distinct(op, self.xb, &others)?;
        for o in outs {
            distinct(op, o, &[self.x, self.w])?;
        }
        Ok(())
    }

    fn bindings(&self) -> [(u32, &wgpu::Buffer, u64, u64); 3] {
        [
            (10, &self.x.buffer, 0, 0),
            (11, &self.w.buffer, 0, 0),
            (12, &self.xb.buffer, 0, 0),
        ]
    }
}

fn group_activations(op: &'static str, ms: &[&QuantMatrix], xq: &GpuTensor) -> Result<()> {
    let n_cols = ms[0].n_cols();
    let block = Q8Mode::of(ms[0].ggml_type()).block() as u64;
    if !n_cols.is_multiple_of(block) {
        return Err(shape(
            op,
            format!("{n_cols} columns: not a multiple of {block}"),
        ));
    }
    want_q8_rows(op, xq, n_cols as usize, 1)
}

fn group_outputs(
    op: &'static str,
    ms: &[&QuantMatrix],
    xq: &GpuTensor,
    ys: &[&GpuTensor],
    dummy: &GpuTensor,
) -> Result<()> {
    for (i, (m, y)) in ms.iter().zip(ys).enumerate() {
        want(op, y, "y", GpuDType::F32, m.n_rows())?;
        let mut others: Vec<&GpuTensor> = vec![xq, dummy];
        others.extend(ys.iter().take(i).copied());
        distinct(op, y, &others)?;
    }
    Ok(())
}

/// Checks shared by [`GpuBatch::attention`] and [`GpuBatch::attention_exact`]:
/// head sizes and counts, `n_q`, 32-bit indexing, the sizes of `[q, k, v,
/// out]` (k and v in k's dtype) and that `out` aliases none of them.
/// Returns (kv_stride, v_stride): elements per cached position of K and V.
fn attn_args(
    op: &'static str,
    p: &AttnParams,
    n_q: u32,
    [q, k, v, out]: [&GpuTensor; 4],
) -> Result<(u64, u64)> {
    if p.head_dim == 0 || p.head_dim > MAX_HEAD_DIM || p.head_dim_v == 0 {
        return Err(shape(
            op,
            format!(
                "head_dim {} not in 1..={MAX_HEAD_DIM} (or head_dim_v 0)",
                p.head_dim
            ),
        ));
    }
    if p.n_head == 0 || p.n_kv_head == 0 || !p.n_head.is_multiple_of(p.n_kv_head) || p.n_kv == 0 {
        return Err(shape(
            op,
            format!(
                "n_head {} / n_kv_head {} / n_kv {}",
                p.n_head, p.n_kv_head, p.n_kv
            ),
        ));
    }
    if n_q == 0 || n_q > p.n_kv {
        return Err(shape(op, format!("n_q {n_q} not in 1..={}", p.n_kv)));
    }
    let kv_stride = p.n_kv_head as u64 * p.head_dim as u64;
    let kv_len = kv_stride * p.n_kv as u64;
    let v_stride = p.n_kv_head as u64 * p.head_dim_v as u64;
    let v_len = v_stride * p.n_kv as u64;
    if kv_len > u32::MAX as u64 || v_len > u32::MAX as u64 {
        return Err(shape(op, "KV cache too large for 32-bit indexing"));
    }
    let q_len = n_q as u64 * p.n_head as u64 * p.head_dim as u64;
    let out_len = n_q as u64 * p.n_head as u64 * p.head_dim_v as u64;
    want(op, q, "q", GpuDType::F32, q_len)?;
    want(op, out, "out", GpuDType::F32, out_len)?;
    want(op, k, "k", k.dtype(), kv_len)?;
    want(op, v, "v", k.dtype(), v_len)?;
    distinct(op, out, &[q, k, v])?;
    Ok((kv_stride, v_stride))
}
