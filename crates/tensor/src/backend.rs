//! The [`Backend`] trait: one method per op, explicit shapes, caller-owned
//! buffers.
//!
//! Conventions shared by every op:
//! - A `Buffer` is a flat f32 array on the backend's device. Matrices are
//!   row-major: an activation `[n_tokens, dim]` stores token `t` at
//!   `t*dim .. (t+1)*dim`. Ops use a buffer's leading elements and check that
//!   it is large enough, so one buffer sized for the largest batch serves all.
//! - A `Weight` is a GGUF tensor with ggml dims `[cols, rows]` (`dims[0]` is
//!   the row length). `matmul` computes `out[t, r] = Σ_k w[r, k] · x[t, k]`.
//! - A `KvBuffer` is a per-layer K or V cache `[n_ctx, n_head_kv*head_dim]`
//!   stored as f16 (llama.cpp's default cache type).

use std::sync::Arc;

use zeta_gguf::{GgmlType, Gguf};

use crate::error::TensorError;

/// Order in which RoPE pairs dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeKind {
    /// ggml rope type 0 (llama): rotates adjacent pairs `(2i, 2i+1)`.
    Normal,
    /// ggml rope type 2 (GPT-NeoX, Qwen, Gemma): rotates `(i, i + n_dims/2)`.
    Neox,
}

/// Rotary position embedding parameters for one layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeParams {
    /// Pairing order.
    pub kind: RopeKind,
    /// Number of leading dimensions of each head that are rotated (even).
    pub n_dims: usize,
    /// Frequency base θ (`rope.freq_base`).
    pub freq_base: f32,
    /// Linear position scale (`1 / rope.scaling.factor`, 1.0 when unscaled).
    pub freq_scale: f32,
}

/// Gated-linear-unit activation applied to the gate half.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GluKind {
    /// `silu(gate) * up` (llama, Qwen).
    SwiGlu,
    /// `gelu_tanh(gate) * up` (Gemma), with ggml's f16 GELU table semantics.
    GeGlu,
}

/// Shapes and options of one causal attention call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnParams {
    /// Query tokens in this batch; token `t` is at position `pos0 + t`.
    pub n_tokens: usize,
    /// Position of the first query token; the cache holds `pos0 + n_tokens` valid rows.
    pub pos0: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (`n_head` must be a multiple; query head `h` reads kv head `h / (n_head/n_head_kv)`).
    pub n_head_kv: usize,
    /// Key (and query) head size.
    pub head_dim_k: usize,
    /// Value head size.
    pub head_dim_v: usize,
    /// Multiplier of `q·k` before the softmax.
    pub scale: f32,
    /// Sliding window: query at `p` sees key at `q` only when `p - q < window`.
    pub window: Option<usize>,
}

/// Per-head RMSNorms of q and k before RoPE (Qwen3, Gemma 3): the q and k
/// norm weights (`[head_dim_k]` each) and the epsilon.
pub type QkNorm<'a, W> = Option<(&'a W, &'a W, f32)>;

/// [`Backend::rms_norm_qkv_rope_store_kv`] as separate ops (its default;
/// backends that fuse it fall back to this where their kernel does not
/// apply).
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_qkv_rope_store_kv_unfused<B: Backend + ?Sized>(
    b: &B,
    x: &B::Buffer,
    norm: &B::Weight,
    xb: &mut B::Buffer,
    w: [&B::Weight; 3],
    [q, k, v]: [&mut B::Buffer; 3],
    k_cache: &mut B::KvBuffer,
    v_cache: &mut B::KvBuffer,
    eps: f32,
    shape: &AttnParams,
    params: &RopeParams,
    freq_factors: Option<&B::Weight>,
    q_scale: Option<f32>,
) -> Result<(), TensorError> {
    b.rms_norm_matmul_many(
        x,
        norm,
        xb,
        &mut [(w[0], &mut *q), (w[1], &mut *k), (w[2], &mut *v)],
        shape.n_tokens,
        eps,
    )?;
    b.rope_store_kv(
        q,
        k,
        v,
        k_cache,
        v_cache,
        shape,
        params,
        freq_factors,
        q_scale,
        None,
    )
}

/// [`Backend::rope_store_kv`] as separate ops (its default; backends
/// that fuse it fall back to this where their kernel does not apply).
#[allow(clippy::too_many_arguments)]
pub fn rope_store_kv_unfused<B: Backend + ?Sized>(
    b: &B,
    q: &mut B::Buffer,
    k: &mut B::Buffer,
    v: &B::Buffer,
    k_cache: &mut B::KvBuffer,
    v_cache: &mut B::KvBuffer,
    s: &AttnParams,
    params: &RopeParams,
    freq_factors: Option<&B::Weight>,
    q_scale: Option<f32>,
    qk_norm: QkNorm<'_, B::Weight>,
) -> Result<(), TensorError> {
    if let Some((qn, kn, eps)) = qk_norm {
        b.rms_norm_inplace(q, qn, s.n_tokens.saturating_mul(s.n_head), eps)?;
        b.rms_norm_inplace(k, kn, s.n_tokens.saturating_mul(s.n_head_kv), eps)?;
    }
    b.rope(
        q,
        s.n_tokens,
        s.n_head,
        s.head_dim_k,
        s.pos0,
        params,
        freq_factors,
    )?;
    b.rope(
        k,
        s.n_tokens,
        s.n_head_kv,
        s.head_dim_k,
        s.pos0,
        params,
        freq_factors,
    )?;
    if let Some(qs) = q_scale {
        let n = s
            .n_tokens
            .saturating_mul(s.n_head)
            .saturating_mul(s.head_dim_k);
        b.scale(q, n, qs)?;
    }
    let kd = s.n_head_kv.saturating_mul(s.head_dim_k);
    let vd = s.n_head_kv.saturating_mul(s.head_dim_v);
    b.store_kv(k, k_cache, s.n_tokens, kd, s.pos0)?;
    b.store_kv(v, v_cache, s.n_tokens, vd, s.pos0)
}

/// A compute backend. See the module docs for buffer conventions.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// A flat f32 device buffer.
    type Buffer: Send + std::fmt::Debug;
    /// A flat f16 device buffer used for the KV cache.
    type KvBuffer: Send + std::fmt::Debug;
    /// A model weight resident on (or referenced by) the device.
    type Weight: Send + Sync + std::fmt::Debug;

    /// Short backend name for logs (`"cpu"`).
    fn name(&self) -> &'static str;

    /// Makes the GGUF tensor `name` available to ops. The CPU backend keeps a
    /// reference into the mapped file (no copy) for matrices.
    fn upload_weight(&self, gguf: &Arc<Gguf>, name: &str) -> Result<Self::Weight, TensorError>;

    /// ggml dims of a weight (`[cols, rows]`, or `[n]` for vectors).
    fn weight_dims(&self, w: &Self::Weight) -> Vec<u64>;

    /// Element type of a weight.
    fn weight_type(&self, w: &Self::Weight) -> GgmlType;

    /// A zero-filled f32 buffer of `len` elements.
    fn alloc(&self, len: usize) -> Result<Self::Buffer, TensorError>;

    /// A zero-filled f16 buffer of `len` elements.
    fn alloc_kv(&self, len: usize) -> Result<Self::KvBuffer, TensorError>;

    /// Copies `data` into `buf[offset..]`.
    fn write(&self, buf: &mut Self::Buffer, offset: usize, data: &[f32])
    -> Result<(), TensorError>;

    /// Copies `buf[offset .. offset+out.len()]` into `out`.
    fn read(&self, buf: &Self::Buffer, offset: usize, out: &mut [f32]) -> Result<(), TensorError>;

    /// Index (relative to `offset`) of the largest value among
    /// `buf[offset .. offset+n]`: NaNs are ignored, ties go to the lowest
    /// index, and the result is 0 when every value is NaN; `n == 0` is an
    /// error. Greedy decoding uses it so that a device backend reads back one
    /// id instead of a row of logits.
    fn argmax(&self, buf: &Self::Buffer, offset: usize, n: usize) -> Result<u32, TensorError>;

    /// Starts running the ops recorded so far without waiting for them
    /// (device backends record ops and run them at the next read; the CPU
    /// runs each op as it is called, so its default does nothing).
    fn flush(&self) -> Result<(), TensorError> {
        Ok(())
    }

    // --- Recording ahead (pipelined decoding) --------------------------
    //
    // A device backend can record a step before its token is known, while
    // the device still computes the previous step, and run it later for
    // the cost of one submission: [`Backend::begin_ahead`], the step's ops
    // (its embedding by [`Backend::get_rows_ahead`]), [`Backend::end_ahead`];
    // later [`Backend::submit_ahead`] with the ids. The defaults say "cannot"
    // (the CPU runs ops as they are called).

    /// Starts recording ahead: until [`Backend::end_ahead`], the ops that
    /// this thread calls are recorded and held (no read submits them).
    /// Returns a ticket for [`Backend::submit_ahead`], or `None` (and
    /// changes nothing) where the backend cannot hold work. Work held from
    /// an earlier ticket is dropped.
    fn begin_ahead(&self) -> Result<Option<u64>, TensorError> {
        Ok(None)
    }

    /// [`Backend::get_rows`] of `n` ids given later, to
    /// [`Backend::submit_ahead`]; only while recording ahead.
    fn get_rows_ahead(
        &self,
        table: &Self::Weight,
        n: usize,
        out: &mut Self::Buffer,
    ) -> Result<(), TensorError> {
        let _ = (table, n, out);
        Err(TensorError::Shape {
            op: "get_rows_ahead",
            msg: "the backend does not record ahead".into(),
        })
    }

    /// Ends recording ahead: the held work waits for
    /// [`Backend::submit_ahead`]. An error drops it.
    fn end_ahead(&self) -> Result<(), TensorError> {
        Ok(())
    }

    /// Runs the work held under `ticket` (after everything recorded
    /// before), its embedding reading `ids`; does not wait. Returns false,
    /// running nothing, when no work is held under `ticket` (dropped, or
    /// replaced by a later [`Backend::begin_ahead`]).
    fn submit_ahead(&self, ticket: u64, ids: &[u32]) -> Result<bool, TensorError> {
        let _ = (ticket, ids);
        Ok(false)
    }

    /// Greedy decoding's pipelining: [`Backend::argmax`] of
    /// `buf[offset .. offset+n]`, and the work held under `ticket` (a
    /// one-id step, [`Backend::begin_ahead`]) run with that argmax as its
    /// id, on the device, before the host knows it: the device goes on
    /// from one step to the next without waiting for the host. Returns the
    /// argmax (waiting for it, not for the held work) and whether the held
    /// work runs; where it does not (none held under `ticket`, or a device
    /// backend that cannot), nothing but the argmax ran. The default:
    /// the argmax alone.
    fn argmax_feed_ahead(
        &self,
        buf: &Self::Buffer,
        offset: usize,
        n: usize,
        ticket: u64,
    ) -> Result<(u32, bool), TensorError> {
        let _ = ticket;
        Ok((self.argmax(buf, offset, n)?, false))
    }

    /// `dst[dst_off .. dst_off+n] = src[src_off .. src_off+n]`.
    fn copy(
        &self,
        src: &Self::Buffer,
        src_off: usize,
        dst: &mut Self::Buffer,
        dst_off: usize,
        n: usize,
    ) -> Result<(), TensorError>;

    /// Embedding lookup: `out[t, :] = table[ids[t], :]` (one row dequantized per id).
    fn get_rows(
        &self,
        table: &Self::Weight,
        ids: &[u32],
        out: &mut Self::Buffer,
    ) -> Result<(), TensorError>;

    /// `out[t, r] = Σ_k w[r, k] · x[t, k]` for `t < n_tokens`; `x` is `[n_tokens, cols]`,
    /// `out` is `[n_tokens, rows]`.
    fn matmul(
        &self,
        w: &Self::Weight,
        x: &Self::Buffer,
        out: &mut Self::Buffer,
        n_tokens: usize,
    ) -> Result<(), TensorError>;

    /// [`Backend::matmul`] of several weights with one input (Q/K/V, gate/up):
    /// `outs[i].1 = x · outs[i].0ᵀ`. The default calls `matmul` for each; a
    /// backend may share work on `x` (the GPU quantises it once).
    fn matmul_many(
        &self,
        x: &Self::Buffer,
        outs: &mut [(&Self::Weight, &mut Self::Buffer)],
        n_tokens: usize,
    ) -> Result<(), TensorError> {
        for (w, out) in outs.iter_mut() {
            self.matmul(w, x, out, n_tokens)?;
        }
        Ok(())
    }

    /// [`Backend::rms_norm`] of `x` into `xb`, then [`Backend::matmul_many`]
    /// of `xb` (a pre-norm block's input projections). The default makes the
    /// two calls; a backend may fuse the norm with its preparation of `xb`.
    fn rms_norm_matmul_many(
        &self,
        x: &Self::Buffer,
        norm: &Self::Weight,
        xb: &mut Self::Buffer,
        outs: &mut [(&Self::Weight, &mut Self::Buffer)],
        n_tokens: usize,
        eps: f32,
    ) -> Result<(), TensorError> {
        self.rms_norm(x, norm, xb, n_tokens, eps)?;
        self.matmul_many(xb, outs, n_tokens)
    }

    /// `out[t, r] += Σ_k w[r, k] · x[t, k]`: a projection added to a residual
    /// stream. `tmp` (at least `[n_tokens, rows]`) is scratch. The default is
    /// [`Backend::matmul`] into `tmp`, then [`Backend::add`]; a backend may
    /// fuse the two (the sum is the same: each output gets one f32 add).
    fn matmul_add(
        &self,
        w: &Self::Weight,
        x: &Self::Buffer,
        out: &mut Self::Buffer,
        tmp: &mut Self::Buffer,
        n_tokens: usize,
    ) -> Result<(), TensorError> {
        self.matmul(w, x, tmp, n_tokens)?;
        let rows = self
            .weight_dims(w)
            .iter()
            .skip(1)
            .try_fold(1usize, |a, &d| a.checked_mul(usize::try_from(d).ok()?))
            .ok_or(TensorError::Shape {
                op: "matmul_add",
                msg: "weight rows overflow".into(),
            })?;
        self.add(out, tmp, n_tokens.saturating_mul(rows))
    }

    /// `x[i, :] += bias` for `i < n_rows`; the row length is the bias length.
    fn add_bias(
        &self,
        x: &mut Self::Buffer,
        bias: &Self::Weight,
        n_rows: usize,
    ) -> Result<(), TensorError>;

    /// RMSNorm of each of `n_rows` rows (row length = weight length):
    /// `out = x / sqrt(mean(x²) + eps) * w`.
    fn rms_norm(
        &self,
        x: &Self::Buffer,
        w: &Self::Weight,
        out: &mut Self::Buffer,
        n_rows: usize,
        eps: f32,
    ) -> Result<(), TensorError>;

    /// In-place [`Backend::rms_norm`] (used for per-head q/k norms and post-norms).
    fn rms_norm_inplace(
        &self,
        x: &mut Self::Buffer,
        w: &Self::Weight,
        n_rows: usize,
        eps: f32,
    ) -> Result<(), TensorError>;

    /// A post-norm into the residual stream: `src` = [`Backend::rms_norm`]
    /// of `src` (in place, `n_rows` rows of the weight's length), then
    /// `x += src`. The default makes the two calls; a backend may fuse them.
    fn rms_norm_add(
        &self,
        x: &mut Self::Buffer,
        src: &mut Self::Buffer,
        w: &Self::Weight,
        n_rows: usize,
        eps: f32,
    ) -> Result<(), TensorError> {
        self.rms_norm_inplace(src, w, n_rows, eps)?;
        let rows = self
            .weight_dims(w)
            .first()
            .and_then(|&d| usize::try_from(d).ok())
            .ok_or(TensorError::Shape {
                op: "rms_norm_add",
                msg: "norm weight without dims".into(),
            })?;
        self.add(x, src, n_rows.saturating_mul(rows))
    }

    /// `a[i] += b[i]` for `i < n`.
    fn add(&self, a: &mut Self::Buffer, b: &Self::Buffer, n: usize) -> Result<(), TensorError>;

    /// `x[i] *= s` for `i < n`.
    fn scale(&self, x: &mut Self::Buffer, n: usize, s: f32) -> Result<(), TensorError>;

    /// RoPE in place on `x = [n_tokens, n_heads, head_dim]`; token `t` is at
    /// position `pos0 + t`. `freq_factors` (llama3 `rope_freqs`, `[n_dims/2]`)
    /// divide the per-pair angles.
    #[allow(clippy::too_many_arguments)]
    fn rope(
        &self,
        x: &mut Self::Buffer,
        n_tokens: usize,
        n_heads: usize,
        head_dim: usize,
        pos0: usize,
        params: &RopeParams,
        freq_factors: Option<&Self::Weight>,
    ) -> Result<(), TensorError>;

    /// Gated activation in place on `n_rows` rows of `n_cols`:
    /// `gate[i] = act(gate[i]) * up[i]`.
    fn glu(
        &self,
        gate: &mut Self::Buffer,
        up: &Self::Buffer,
        n_rows: usize,
        n_cols: usize,
        kind: GluKind,
    ) -> Result<(), TensorError>;

    /// Stores `n_tokens` rows of `src` (`[n_tokens, row_len]`) as f16 into
    /// cache rows `pos0 .. pos0+n_tokens` of `dst` (`[n_ctx, row_len]`).
    fn store_kv(
        &self,
        src: &Self::Buffer,
        dst: &mut Self::KvBuffer,
        n_tokens: usize,
        row_len: usize,
        pos0: usize,
    ) -> Result<(), TensorError>;

    /// [`Backend::rms_norm_add`] (`x += rms_norm(src)`, `src` normalised in
    /// place with `post`), then [`Backend::rms_norm_matmul_many`] of the new
    /// `x` with `norm` (Gemma 3's attention post-norm followed by the FFN
    /// norm and projections). The default makes the two calls; a backend may
    /// fuse the two norms.
    #[allow(clippy::too_many_arguments)]
    fn rms_norm_add_matmul_many(
        &self,
        x: &mut Self::Buffer,
        src: &mut Self::Buffer,
        post: &Self::Weight,
        norm: &Self::Weight,
        xb: &mut Self::Buffer,
        outs: &mut [(&Self::Weight, &mut Self::Buffer)],
        n_tokens: usize,
        eps: f32,
    ) -> Result<(), TensorError> {
        self.rms_norm_add(x, src, post, n_tokens, eps)?;
        self.rms_norm_matmul_many(x, norm, xb, outs, n_tokens, eps)
    }

    /// A layer's RoPE and KV-cache write: with `qk_norm`, first
    /// [`Backend::rms_norm_inplace`] of every q and k head by its weight;
    /// then [`Backend::rope`] of q
    /// `[n_tokens, n_head, head_dim_k]` and k `[n_tokens, n_head_kv,
    /// head_dim_k]` (same parameters, token `t` at `pos0 + t`), then
    /// [`Backend::store_kv`] of k and v (`[n_tokens, n_head_kv * head_dim_v]`)
    /// at row `pos0` of the caches; shapes from `shape` (its `scale` and
    /// `window` are not used); `q_scale` then multiplies the rotated q
    /// (Gemma 3's query pre-scaling). Afterwards k's contents are unspecified (the
    /// default rotates it in place; a backend may write the rotated values
    /// straight into the cache).
    #[allow(clippy::too_many_arguments)]
    fn rope_store_kv(
        &self,
        q: &mut Self::Buffer,
        k: &mut Self::Buffer,
        v: &Self::Buffer,
        k_cache: &mut Self::KvBuffer,
        v_cache: &mut Self::KvBuffer,
        shape: &AttnParams,
        params: &RopeParams,
        freq_factors: Option<&Self::Weight>,
        q_scale: Option<f32>,
        qk_norm: QkNorm<'_, Self::Weight>,
    ) -> Result<(), TensorError> {
        rope_store_kv_unfused(
            self,
            q,
            k,
            v,
            k_cache,
            v_cache,
            shape,
            params,
            freq_factors,
            q_scale,
            qk_norm,
        )
    }

    /// A layer's Q/K/V projections with its RoPE and KV-cache write:
    /// [`Backend::rms_norm_matmul_many`] of `x` (weight `norm`, into `xb`)
    /// by `w = [wq, wk, wv]` into `q`, `k`, `v`, then
    /// [`Backend::rope_store_kv`] without q/k norms. The default runs those
    /// two ops; a backend may fuse them (afterwards k's and v's contents are
    /// unspecified).
    #[allow(clippy::too_many_arguments)]
    fn rms_norm_qkv_rope_store_kv(
        &self,
        x: &Self::Buffer,
        norm: &Self::Weight,
        xb: &mut Self::Buffer,
        w: [&Self::Weight; 3],
        [q, k, v]: [&mut Self::Buffer; 3],
        k_cache: &mut Self::KvBuffer,
        v_cache: &mut Self::KvBuffer,
        eps: f32,
        shape: &AttnParams,
        params: &RopeParams,
        freq_factors: Option<&Self::Weight>,
        q_scale: Option<f32>,
    ) -> Result<(), TensorError> {
        rms_norm_qkv_rope_store_kv_unfused(
            self,
            x,
            norm,
            xb,
            w,
            [q, k, v],
            k_cache,
            v_cache,
            eps,
            shape,
            params,
            freq_factors,
            q_scale,
        )
    }

    /// Causal multi-head attention with grouped-query heads:
    /// `q = [n_tokens, n_head, head_dim_k]`, caches `[n_ctx, n_head_kv*head_dim]`,
    /// `out = [n_tokens, n_head, head_dim_v]`.
    fn attention(
        &self,
        q: &Self::Buffer,
        k_cache: &Self::KvBuffer,
        v_cache: &Self::KvBuffer,
        out: &mut Self::Buffer,
        params: &AttnParams,
    ) -> Result<(), TensorError>;
}
