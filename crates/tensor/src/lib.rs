//! zeta-tensor: the compute-backend trait the model code is written against,
//! and the CPU backend that implements it.
//!
//! Data flow: weights are *uploaded* once ([`Backend::upload_weight`]; the CPU
//! backend only keeps a reference into the memory-mapped GGUF file), activation
//! buffers and KV caches are *allocated* once per session ([`Backend::alloc`],
//! [`Backend::alloc_kv`]), and every op then reads and writes those buffers in
//! place with explicit shapes. Nothing is allocated per op in hot loops, so a
//! GPU backend can keep all data on the device and only [`Backend::read`]
//! logits back.
//!
//! Invariant: this crate never names a GPU API; numerics of the CPU backend
//! follow ggml's CPU path (activations quantized to the weight's
//! `vec_dot_type`, K/V cache stored as f16, softmax in f32).

pub mod backend;
pub mod cpu;
pub mod error;

pub use backend::{
    AttnParams, Backend, GluKind, QkNorm, RopeKind, RopeParams, rms_norm_qkv_rope_store_kv_unfused,
    rope_store_kv_unfused,
};
pub use cpu::{CpuBackend, CpuBuffer, CpuKvBuffer, CpuWeight};
pub use error::TensorError;
