//! Op-level functions: record kernels into a [`GpuBatch`], submit once.
//!
//! Each op validates shapes on the host, fetches its pipeline from the cache,
//! writes its parameters to a small uniform buffer and records one compute
//! pass (several for split weights and two-phase attention). Nothing is read
//! back until the caller asks (`GpuContext::read_*`); a decode step can end in
//! [`GpuBatch::argmax`] and read back one `u32`.
//!
//! Shapes (row-major, f32 unless noted):
//! - matvec: W `[n_rows, n_cols]` (any of `pipeline::GPU_TYPES`), x `[n_cols]`, y `[n_rows]`
//! - embed: table `[n_vocab, n_cols]`, ids `[n_tokens]` u32, out `[n_tokens, n_cols]`
//! - rms_norm: x, y `[n_rows, n_cols]`, w `[n_cols]`
//! - rope: x, y `[n_tokens, n_heads, head_dim]`, pos `[n_tokens]` u32
//! - swiglu/geglu/add: `[n]`
//! - softmax: x, y `[n_rows, n_cols]`
//! - argmax: x `[n]`, out `[1]` u32
//! - attention_decode: q/out `[n_head, head_dim]`, K/V `[n_ctx, n_kv_head, head_dim]` f32 or f16

use wgpu::util::DeviceExt;

use crate::context::GpuContext;
use crate::error::{Result, WgpuError, shape};
use crate::pipeline::{ShaderVariant, attn_variant, files, quant_variant};
use crate::tensor::{GpuDType, GpuTensor, QuantMatrix};

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

/// Parameters of [`GpuBatch::attention_decode`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnParams {
    /// Elements per head.
    pub head_dim: u32,
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

/// Largest head dimension the attention kernel supports.
pub const MAX_HEAD_DIM: u32 = 512;
const ATTN_CHUNK: u32 = 256;

/// Recorded GPU work; [`submit`](Self::submit) sends it to the queue.
pub struct GpuBatch<'a> {
    ctx: &'a GpuContext,
    encoder: wgpu::CommandEncoder,
}

impl std::fmt::Debug for GpuBatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuBatch").finish_non_exhaustive()
    }
}

fn words_to_bytes(words: &[u32]) -> Vec<u8> {
    let mut v: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    while v.len() % 16 != 0 || v.is_empty() {
        v.push(0);
    }
    v
}

fn want(op: &'static str, t: &GpuTensor, name: &str, dtype: GpuDType, min_len: u64) -> Result<()> {
    if t.dtype() != dtype {
        return Err(shape(op, format!("{name} is {:?}, expected {dtype:?}", t.dtype())));
    }
    if (t.len() as u64) < min_len {
        return Err(shape(op, format!("{name} has {} elements, needs {min_len}", t.len())));
    }
    Ok(())
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
        GpuBatch {
            ctx: self,
            encoder: self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("zeta batch") }),
        }
    }

    /// Runs argmax over `logits` and reads back only the index.
    pub fn argmax_u32(&self, logits: &GpuTensor) -> Result<u32> {
        let out = self.zeros(1, GpuDType::U32)?;
        let mut b = self.batch();
        b.argmax(logits, &out)?;
        b.submit()?;
        let v = self.read_u32(&out)?;
        v.first().copied().ok_or_else(|| WgpuError::ReadBack("empty argmax".to_string()))
    }
}

impl GpuBatch<'_> {
    /// 2-D grid for `groups` workgroups: (x, y) with x * y >= groups.
    fn grid(&self, op: &'static str, groups: u64) -> Result<(u32, u32)> {
        let max = self.ctx.max_workgroups as u64;
        let x = groups.clamp(1, max);
        let y = groups.div_ceil(x).max(1);
        if y > max {
            return Err(shape(op, format!("{groups} workgroups exceed the dispatch limit")));
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
        let ctx = self.ctx;
        let pipeline = ctx.pipeline(variant)?;
        let bind_group = ctx.scoped(
            || {
                let ubuf = ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("params"),
                    contents: &words_to_bytes(params),
                    usage: wgpu::BufferUsages::UNIFORM,
                });
                let mut entries: Vec<wgpu::BindGroupEntry<'_>> = bindings
                    .iter()
                    .map(|(b, buf)| wgpu::BindGroupEntry {
                        binding: *b,
                        resource: buf.as_entire_binding(),
                    })
                    .collect();
                entries.push(wgpu::BindGroupEntry {
                    binding: param_binding,
                    resource: ubuf.as_entire_binding(),
                });
                ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(variant.file.name),
                    layout: &pipeline.get_bind_group_layout(0),
                    entries: &entries,
                })
            },
            |m, _| WgpuError::Gpu(format!("{}: {m}", variant.label())),
        )?;
        let mut pass = self.encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(variant.file.name),
            timestamp_writes: None,
        });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, groups.2);
        Ok(())
    }

    /// Submits the recorded work (does not wait) and reports captured errors.
    pub fn submit(self) -> Result<()> {
        let ctx = self.ctx;
        let encoder = self.encoder;
        ctx.scoped(
            || {
                ctx.queue.submit([encoder.finish()]);
            },
            |m, oom| {
                if oom {
                    WgpuError::OutOfMemory {
                        what: "submit".to_string(),
                        needed_bytes: 0,
                        limit_bytes: None,
                    }
                } else {
                    WgpuError::Gpu(m)
                }
            },
        )?;
        ctx.check()
    }

    /// y = W x, dequantising W on the fly; one dispatch per weight part.
    pub fn matvec(&mut self, w: &QuantMatrix, x: &GpuTensor, y: &GpuTensor) -> Result<()> {
        const OP: &str = "matvec";
        want(OP, x, "x", GpuDType::F32, w.n_cols())?;
        want(OP, y, "y", GpuDType::F32, w.n_rows())?;
        distinct(OP, y, &[x])?;
        let variant = quant_variant(files::MATVEC, w.ggml_type())?;
        let n_cols = w.n_cols() as u32;
        for part in w.parts() {
            let (gx, gy) = self.grid(OP, part.n_rows)?;
            let params = [
                n_cols,
                n_cols.div_ceil(32),
                w.row_bytes() as u32,
                part.n_rows as u32,
                part.first_row as u32,
                gx,
            ];
            self.dispatch(
                &variant,
                &[(0, &part.buffer), (1, &x.buffer), (2, &y.buffer)],
                3,
                &params,
                (gx, gy, 1),
            )?;
        }
        Ok(())
    }

    /// out[t] = table[ids[t]] dequantised; ids >= n_rows give zeros.
    pub fn embed(&mut self, table: &QuantMatrix, ids: &GpuTensor, out: &GpuTensor) -> Result<()> {
        const OP: &str = "embed";
        want(OP, ids, "ids", GpuDType::U32, 1)?;
        let n_tokens = ids.len() as u64;
        want(OP, out, "out", GpuDType::F32, n_tokens * table.n_cols())?;
        let variant = quant_variant(files::EMBED, table.ggml_type())?;
        let n_cols = table.n_cols() as u32;
        let n_units = n_cols.div_ceil(32);
        if n_tokens > self.ctx.max_workgroups as u64 {
            return Err(shape(OP, format!("{n_tokens} tokens exceed the dispatch limit")));
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
            self.dispatch(
                &variant,
                &[(0, &part.buffer), (1, &ids.buffer), (2, &out.buffer)],
                3,
                &params,
                (n_units.div_ceil(64), n_tokens as u32, 1),
            )?;
        }
        Ok(())
    }

    /// y = x / sqrt(mean(x^2) + eps) * w, per row of `n_cols`.
    pub fn rms_norm(&mut self, x: &GpuTensor, w: &GpuTensor, y: &GpuTensor, n_cols: u32, eps: f32) -> Result<()> {
        const OP: &str = "rms_norm";
        if n_cols == 0 || x.len() % n_cols as usize != 0 {
            return Err(shape(OP, format!("x has {} elements, not rows of {n_cols}", x.len())));
        }
        let n_rows = (x.len() / n_cols as usize) as u64;
        want(OP, x, "x", GpuDType::F32, 1)?;
        want(OP, w, "w", GpuDType::F32, n_cols as u64)?;
        want(OP, y, "y", GpuDType::F32, x.len() as u64)?;
        distinct(OP, y, &[x, w])?;
        if n_rows > self.ctx.max_workgroups as u64 {
            return Err(shape(OP, "too many rows for one dispatch"));
        }
        self.dispatch(
            &ShaderVariant::plain(files::RMSNORM, "main"),
            &[(0, &x.buffer), (1, &w.buffer), (2, &y.buffer)],
            3,
            &[n_cols, n_rows as u32, eps.to_bits()],
            (n_rows as u32, 1, 1),
        )
    }

    /// Rotary position embedding, out of place.
    pub fn rope(&mut self, x: &GpuTensor, pos: &GpuTensor, y: &GpuTensor, p: &RopeParams) -> Result<()> {
        const OP: &str = "rope";
        if p.head_dim == 0 || p.head_dim % 2 != 0 || p.n_rot % 2 != 0 || p.n_rot == 0 || p.n_rot > p.head_dim {
            return Err(shape(OP, format!("head_dim {} / n_rot {} must be even, 0 < n_rot <= head_dim", p.head_dim, p.n_rot)));
        }
        let n = p.head_dim as u64 * p.n_heads as u64 * p.n_tokens as u64;
        want(OP, x, "x", GpuDType::F32, n)?;
        want(OP, y, "y", GpuDType::F32, n)?;
        want(OP, pos, "pos", GpuDType::U32, p.n_tokens as u64)?;
        distinct(OP, y, &[x])?;
        let max = self.ctx.max_workgroups;
        if p.n_heads > max || p.n_tokens > max {
            return Err(shape(OP, "too many heads/tokens for one dispatch"));
        }
        let mode = match p.mode {
            RopeMode::Normal => 0,
            RopeMode::Neox => 2,
        };
        self.dispatch(
            &ShaderVariant::plain(files::ROPE, "main"),
            &[(0, &x.buffer), (1, &pos.buffer), (2, &y.buffer)],
            3,
            &[
                p.head_dim,
                p.n_heads,
                p.n_tokens,
                p.n_rot,
                mode,
                p.freq_base.to_bits(),
                p.freq_scale.to_bits(),
            ],
            ((p.head_dim / 2).div_ceil(64), p.n_heads, p.n_tokens),
        )
    }

    fn elementwise(&mut self, op: &'static str, entry: &'static str, file: crate::pipeline::ShaderFile, a: &GpuTensor, b: &GpuTensor, out: &GpuTensor) -> Result<()> {
        let n = a.len() as u64;
        want(op, a, "a", GpuDType::F32, 1)?;
        want(op, b, "b", GpuDType::F32, n)?;
        want(op, out, "out", GpuDType::F32, n)?;
        distinct(op, out, &[a, b])?;
        let (gx, gy) = self.grid(op, n.div_ceil(256))?;
        self.dispatch(
            &ShaderVariant::plain(file, entry),
            &[(0, &a.buffer), (1, &b.buffer), (2, &out.buffer)],
            3,
            &[n as u32, gx * 256],
            (gx, gy, 1),
        )
    }

    /// out = silu(gate) * up.
    pub fn swiglu(&mut self, gate: &GpuTensor, up: &GpuTensor, out: &GpuTensor) -> Result<()> {
        self.elementwise("swiglu", "swiglu", files::GLU, gate, up, out)
    }

    /// out = gelu_tanh(gate) * up.
    pub fn geglu(&mut self, gate: &GpuTensor, up: &GpuTensor, out: &GpuTensor) -> Result<()> {
        self.elementwise("geglu", "geglu", files::GLU, gate, up, out)
    }

    /// out = a + b (residual add).
    pub fn add(&mut self, a: &GpuTensor, b: &GpuTensor, out: &GpuTensor) -> Result<()> {
        self.elementwise("add", "main", files::ADD, a, b, out)
    }

    /// y = softmax(scale * x) per row of `n_cols`.
    pub fn softmax(&mut self, x: &GpuTensor, y: &GpuTensor, n_cols: u32, scale: f32) -> Result<()> {
        const OP: &str = "softmax";
        if n_cols == 0 || x.len() % n_cols as usize != 0 {
            return Err(shape(OP, format!("x has {} elements, not rows of {n_cols}", x.len())));
        }
        let n_rows = (x.len() / n_cols as usize) as u64;
        want(OP, x, "x", GpuDType::F32, 1)?;
        want(OP, y, "y", GpuDType::F32, x.len() as u64)?;
        distinct(OP, y, &[x])?;
        if n_rows > self.ctx.max_workgroups as u64 {
            return Err(shape(OP, "too many rows for one dispatch"));
        }
        self.dispatch(
            &ShaderVariant::plain(files::SOFTMAX, "main"),
            &[(0, &x.buffer), (1, &y.buffer)],
            2,
            &[n_cols, n_rows as u32, scale.to_bits()],
            (n_rows as u32, 1, 1),
        )
    }

    /// out[0] = index of the largest finite-or-infinite (non-NaN) x, smallest on ties.
    pub fn argmax(&mut self, x: &GpuTensor, out: &GpuTensor) -> Result<()> {
        const OP: &str = "argmax";
        want(OP, x, "x", GpuDType::F32, 1)?;
        want(OP, out, "out", GpuDType::U32, 1)?;
        self.dispatch(
            &ShaderVariant::plain(files::ARGMAX, "main"),
            &[(0, &x.buffer), (1, &out.buffer)],
            2,
            &[x.len() as u32],
            (1, 1, 1),
        )
    }

    /// Attention of one query over the KV cache (split-K flash-decoding).
    pub fn attention_decode(&mut self, q: &GpuTensor, k: &GpuTensor, v: &GpuTensor, out: &GpuTensor, p: &AttnParams) -> Result<()> {
        const OP: &str = "attention_decode";
        if p.head_dim == 0 || p.head_dim > MAX_HEAD_DIM {
            return Err(shape(OP, format!("head_dim {} not in 1..={MAX_HEAD_DIM}", p.head_dim)));
        }
        if p.n_head == 0 || p.n_kv_head == 0 || p.n_head % p.n_kv_head != 0 || p.n_kv == 0 {
            return Err(shape(OP, format!("n_head {} / n_kv_head {} / n_kv {}", p.n_head, p.n_kv_head, p.n_kv)));
        }
        let kv_stride = p.n_kv_head as u64 * p.head_dim as u64;
        let kv_len = kv_stride * p.n_kv as u64;
        if kv_len > u32::MAX as u64 {
            return Err(shape(OP, "KV cache too large for 32-bit indexing"));
        }
        let kv_dtype = k.dtype();
        if kv_dtype == GpuDType::U32 {
            return Err(shape(OP, "K/V must be f32 or f16"));
        }
        want(OP, q, "q", GpuDType::F32, p.n_head as u64 * p.head_dim as u64)?;
        want(OP, out, "out", GpuDType::F32, p.n_head as u64 * p.head_dim as u64)?;
        want(OP, k, "k", kv_dtype, kv_len)?;
        want(OP, v, "v", kv_dtype, kv_len)?;
        distinct(OP, out, &[q, k, v])?;
        let start = if p.window > 0 { p.n_kv.saturating_sub(p.window) } else { 0 };
        let n_chunks = (p.n_kv - start).div_ceil(ATTN_CHUNK);
        let max = self.ctx.max_workgroups;
        if n_chunks > max || p.n_head > max {
            return Err(shape(OP, "too many chunks/heads for one dispatch"));
        }
        let scratch_o = self.ctx.zeros(p.n_head as usize * n_chunks as usize * p.head_dim as usize, GpuDType::F32)?;
        let scratch_ml = self.ctx.zeros(p.n_head as usize * n_chunks as usize * 2, GpuDType::F32)?;
        let f16 = kv_dtype == GpuDType::F16;
        let params = [
            p.head_dim,
            p.n_head,
            p.n_kv_head,
            p.n_kv,
            start,
            n_chunks,
            kv_stride as u32,
            0,
            p.scale.to_bits(),
            p.softcap.to_bits(),
        ];
        self.dispatch(
            &attn_variant("chunk", f16),
            &[
                (0, &q.buffer),
                (1, &k.buffer),
                (2, &v.buffer),
                (3, &scratch_o.buffer),
                (4, &scratch_ml.buffer),
            ],
            5,
            &params,
            (n_chunks, p.n_head, 1),
        )?;
        self.dispatch(
            &attn_variant("combine", f16),
            &[(3, &scratch_o.buffer), (4, &scratch_ml.buffer), (6, &out.buffer)],
            5,
            &params,
            (p.n_head, 1, 1),
        )
    }
}
