//! [`ModelError`]: everything that can go wrong loading a model or running
//! its forward pass. Messages name the tensor / key / limit involved.

use zeta_gguf::GgufError;
use zeta_tensor::TensorError;

/// Errors from model loading and inference.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// `general.architecture` names an architecture this crate does not implement.
    #[error("model: unsupported architecture {0:?} (supported: llama, qwen2, qwen3, gemma3)")]
    UnknownArch(String),

    /// A metadata key is missing or has the wrong type.
    #[error("model: {0}")]
    Gguf(#[from] GgufError),

    /// Hyperparameters are missing, inconsistent or out of range.
    #[error("model: bad config: {0}")]
    BadConfig(String),

    /// A feature of this file is not implemented (named in the message).
    #[error("model: unsupported: {0}")]
    Unsupported(String),

    /// A required tensor is absent.
    #[error("model: missing tensor {name:?}")]
    MissingTensor {
        /// Tensor name.
        name: String,
    },

    /// A tensor's dims differ from what the config implies.
    #[error("model: tensor {name:?} has shape {found:?}, expected {expected:?}")]
    BadShape {
        /// Tensor name.
        name: String,
        /// ggml dims implied by the config.
        expected: Vec<u64>,
        /// ggml dims in the file.
        found: Vec<u64>,
    },

    /// The requested context size is outside `1..=n_ctx_train`.
    #[error("model: context size {requested} out of range 1..={max}")]
    BadContextSize {
        /// Requested size.
        requested: usize,
        /// The model's trained context length.
        max: usize,
    },

    /// The tokens do not fit in the remaining context.
    #[error("model: context overflow: {pos} cached + {n_tokens} new tokens > n_ctx {n_ctx}")]
    ContextOverflow {
        /// Tokens already in the cache.
        pos: usize,
        /// Tokens in this call.
        n_tokens: usize,
        /// Context size of the state.
        n_ctx: usize,
    },

    /// A token id is not in the vocabulary.
    #[error("model: token id {token} out of range (n_vocab {n_vocab})")]
    TokenOutOfRange {
        /// The id.
        token: u32,
        /// Vocabulary size.
        n_vocab: usize,
    },

    /// `forward` was called with no tokens.
    #[error("model: forward called with no tokens")]
    NoTokens,

    /// Logits were asked for with no step submitted since the state was
    /// made, truncated or last run through `forward`.
    #[error("model: no submitted step to read logits of")]
    NotSubmitted,

    /// The state was created for a different model shape.
    #[error("model: state does not match this model")]
    StateMismatch,

    /// A backend op failed.
    #[error("model: {0}")]
    Tensor(#[from] TensorError),
}
