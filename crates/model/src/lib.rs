//! zeta-model: model architectures (llama family, Qwen2/3, Gemma 3), the KV
//! cache and the tokenizer, built from GGUF metadata.
//!
//! Invariant: generic over `zeta_tensor`'s backend trait; this crate never
//! names wgpu or any GPU API.
//!
//! Flow (llama2.c style): [`ModelConfig`] (hyperparameters from metadata) →
//! [`Model`] (weights, each with its shape in a comment) → [`State`] (KV
//! cache + scratch, one per session) → [`Model::forward`] (logits).

pub mod config;
pub mod error;
pub mod model;
pub mod tokenizer;

pub use config::{Arch, DEFAULT_MAX_CTX, ModelConfig};
pub use error::ModelError;
pub use model::{Logits, Model, State, UBATCH};
