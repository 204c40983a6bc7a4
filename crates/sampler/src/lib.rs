//! zeta-sampler: token sampling from a logit vector, plus stop-string detection.
//!
//! Works on logits alone (no model or tokenizer dependency). [`Sampler`] runs llama.cpp's default
//! common-sampler chain:
//!
//! logit bias → penalties (repeat / presence / frequency over the last `penalty_last_n` accepted
//! tokens) → top-k → typical-p → top-p → min-p → temperature → draw
//!
//! (llama.cpp's DRY, top-n-sigma, XTC, mirostat and dynamic temperature are not implemented).
//! Temperature 0 is greedy (argmax, ties → lowest token id). Randomness comes from a seeded
//! xoshiro256** PRNG: the same seed and inputs give the same tokens, but the stream is not
//! bit-compatible with llama.cpp's `std::mt19937`. The candidate sets and probabilities the chain
//! produces are checked against llama.cpp's own samplers (`tests/llama_cpp_golden.rs`).
//!
//! ```
//! use zeta_sampler::{Sampler, SamplerConfig, StopMatcher};
//!
//! let mut sampler = Sampler::new(SamplerConfig { seed: 42, ..Default::default() })?;
//! for &t in &[1u32, 2, 3] {
//!     sampler.accept(t); // prompt tokens feed the penalty window
//! }
//! let logits = vec![0.5f32, 2.0, -1.0, 1.5];
//! let token = sampler.sample(&logits)?;
//! sampler.accept(token);
//! assert!(token < 4);
//!
//! let mut stops = StopMatcher::new(vec!["</s>".to_string()]);
//! let step = stops.push("Hello</s>");
//! assert_eq!((step.emit.as_str(), step.stopped), ("Hello", true));
//! # Ok::<(), zeta_sampler::SamplerError>(())
//! ```

mod chain;
mod config;
mod error;
mod rng;
mod sampler;
mod stop;

pub use config::{DEFAULT_SEED, SamplerConfig};
pub use error::SamplerError;
pub use sampler::Sampler;
pub use stop::{StopMatcher, StopStep};
