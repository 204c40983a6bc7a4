//! The crate's single error type, [`SamplerError`].

/// Everything that can go wrong when configuring a sampler or sampling from logits.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplerError {
    /// A numeric [`crate::SamplerConfig`] field is NaN, infinite or out of its range.
    #[error("invalid sampler parameter `{name}` = {value}: {reason}")]
    InvalidParameter {
        /// Field name in [`crate::SamplerConfig`].
        name: &'static str,
        /// The rejected value.
        value: f32,
        /// What the field accepts.
        reason: &'static str,
    },
    /// A logit bias is NaN or +inf (finite values and -inf, which bans the token, are allowed).
    #[error("invalid logit bias {bias} for token {token}: must be finite or -inf")]
    InvalidLogitBias {
        /// Token the bias applies to.
        token: u32,
        /// The rejected bias.
        bias: f32,
    },
    /// `sample`/`probabilities` was given an empty logit slice.
    #[error("empty logits: nothing to sample from")]
    EmptyLogits,
    /// More logits than `u32` token ids can address.
    #[error("{len} logits: vocabulary too large for u32 token ids")]
    VocabTooLarge {
        /// Length of the logit slice.
        len: usize,
    },
    /// After logit bias and penalties every logit is NaN or -inf.
    #[error("no candidate tokens: all {n_vocab} logits are NaN or -inf")]
    NoCandidates {
        /// Length of the logit slice.
        n_vocab: usize,
    },
}
