//! zeta-gguf: the GGUF file format (v2 and v3) and the ggml type table.
//!
//! Invariant: this crate knows nothing of tensors' meaning, quantization
//! math, or GPUs. It parses untrusted bytes into typed metadata and tensor
//! byte ranges, and writes GGUF files.

pub mod types;

pub use types::{GgmlType, QK_K};
