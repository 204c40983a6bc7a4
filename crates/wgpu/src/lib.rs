//! zeta-wgpu: the GPU layer of zeta over wgpu/WGSL (Vulkan, Metal, DX12).
//!
//! This crate is the only one that names `wgpu` (and, in tests, `naga`). It
//! provides what a `zeta_tensor` backend needs underneath:
//!
//! - [`GpuContext`]: adapter choice (`ZETA_ADAPTER`), device with optional
//!   features, [`GpuInfo`] for `zeta info --gpu`, typed errors ([`WgpuError`])
//!   captured with error scopes, an uncaptured-error handler and a device-lost
//!   callback.
//! - [`GpuTensor`] (f32/f16/u32 storage buffers) and [`QuantMatrix`] (weights in
//!   their GGUF block form, split at row boundaries into binding-sized
//!   [`WeightPart`]s; see [`tensor`] for the layout).
//! - [`pipeline`]: the WGSL sources from `shaders/`, their specialisations and
//!   the pipeline cache.
//! - [`ops`]: [`GpuBatch`] records kernels — fused dequantise+matvec and a
//!   prefill matmul for F32/F16/BF16/Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q2_K/Q3_K/Q4_K/Q5_K/Q6_K/IQ4_NL/IQ4_XS,
//!   embedding lookup, RMSNorm, RoPE (normal/NeoX, freq factors), SwiGLU/GeGLU,
//!   add/mul/scale/bias, softmax, argmax, f16 KV-cache store, and causal
//!   attention for decode and prefill (GQA, sliding window, soft-cap, f32/f16
//!   KV, split-K flash-decoding). Most have in-place forms.
//!
//! # `zeta_tensor::Backend`
//! [`GpuBackend`] implements the trait: ops record into one pending batch,
//! submitted when the host reads (the logits) or writes; see [`backend`].
//!
//! # Mapping onto the trait
//! `Buffer` = [`GpuTensor`] (F32), `KvBuffer` = [`GpuTensor`] (F16),
//! `Weight` = [`QuantMatrix`] ([`GpuContext::upload_tensor`]; 1-D F32 weights
//! via [`QuantMatrix::as_f32_tensor`]). `matmul` → [`GpuBatch::matvec`] for
//! one token, [`GpuBatch::matmul`] for more; `get_rows` → upload ids +
//! [`GpuBatch::embed`]; `rms_norm(_inplace)`, `add`, `scale`, `rope`, `glu`,
//! `add_bias`, `copy` → the same-named ops (in-place forms); `store_kv` →
//! [`GpuBatch::store`]; `attention` → [`GpuBatch::attention`] with
//! `n_q = n_tokens`, `n_kv = pos0 + n_tokens`; `write`/`read` →
//! [`GpuContext::write_f32`] / [`GpuContext::read_f32_range`]. Ops only
//! record; submit a batch per step (or per op) and read back at the end.
//!
//! ```no_run
//! # fn main() -> Result<(), zeta_wgpu::WgpuError> {
//! use zeta_wgpu::{GpuContext, GpuDType};
//! let ctx = GpuContext::new()?;
//! let w = ctx.upload_matrix(zeta_wgpu::GgmlType::F32, 2, 3, bytemuck::cast_slice(&[1f32, 2., 3., 4., 5., 6.]))?;
//! let x = ctx.upload_f32(&[1.0, 1.0, 1.0])?;
//! let y = ctx.zeros(2, GpuDType::F32)?;
//! let mut b = ctx.batch();
//! b.matvec(&w, &x, &y)?;
//! b.submit()?;
//! assert_eq!(ctx.read_f32(&y)?, vec![6.0, 15.0]);
//! # Ok(()) }
//! ```

pub mod backend;
pub mod context;
pub mod error;
pub mod ops;
pub mod pipeline;
pub mod tensor;

pub use backend::{GpuBackend, GpuWeight, KernelTime, tensor_error};
pub use context::{GpuContext, GpuDeviceType, GpuInfo, GpuOptions, list_adapters};
pub use error::{Result, WgpuError};
pub use ops::{
    ActRound, AttnParams, GluOp, GpuBatch, GroupNorm, MAX_HEAD_DIM, Q8Mode, REG_MATMUL_MIN_TOKENS,
    RopeMode, RopeParams, TILED_MATMUL_MIN_TOKENS, q8_stride, q8_words,
};
pub use pipeline::{
    GPU_TYPES, ShaderFile, ShaderVariant, has_exact_matmul, has_q8_matvec, shader_variants,
};
pub use tensor::{GpuDType, GpuTensor, PendingRead, QuantMatrix, WeightPart};
pub use zeta_gguf::GgmlType;

// The backend trait needs these to cross threads.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<GpuContext>();
    send_sync::<GpuTensor>();
    send_sync::<QuantMatrix>();
    send_sync::<GpuBackend>();
    fn send<T: Send>() {}
    send::<GpuBatch<'static>>();
};
