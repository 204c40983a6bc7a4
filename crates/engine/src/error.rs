//! The engine's one error type.

use thiserror::Error;

/// Everything that can go wrong between "a model name" and "generated text".
#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Gguf(#[from] zeta_gguf::GgufError),
    #[error(transparent)]
    Model(#[from] zeta_model::ModelError),
    #[error(transparent)]
    Tokenizer(#[from] zeta_model::tokenizer::TokenizerError),
    #[error(transparent)]
    Sampler(#[from] zeta_sampler::SamplerError),
    /// The backend cannot run here (e.g. `gpu: no GPU adapter found`).
    #[error("backend unavailable: {0}")]
    BackendUnavailable(String),
    /// A GPU failure other than a missing adapter (device request, shader,
    /// out of memory, device lost).
    #[error(transparent)]
    Gpu(#[from] zeta_wgpu::WgpuError),
    #[error(
        "context size {requested} is out of range: must be between 1 and the model's trained length {max}"
    )]
    BadContext { requested: usize, max: usize },
    #[error(
        "the prompt is {prompt} tokens but the context holds {n_ctx}; shorten the prompt or raise --ctx (at most {max})"
    )]
    PromptTooLong {
        prompt: usize,
        n_ctx: usize,
        max: usize,
    },
    #[error("the prompt is empty (no tokens after tokenization)")]
    EmptyPrompt,
    #[error("chat template error: {0}")]
    ChatTemplate(String),
    #[error(
        "perplexity needs at least {needed} tokens for a context of {n_ctx}; the text has {got}"
    )]
    TextTooShort {
        needed: usize,
        n_ctx: usize,
        got: usize,
    },
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
