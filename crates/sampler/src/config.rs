//! [`SamplerConfig`]: the parameters of the sampling chain, with llama.cpp's defaults and validation.

use crate::SamplerError;

/// Default seed of [`SamplerConfig::default`].
///
/// It has the value of llama.cpp's `LLAMA_DEFAULT_SEED`, but unlike llama.cpp it does **not** mean
/// "pick a random seed": zeta's sampler is always deterministic for a given seed. Callers that want
/// a fresh seed per run choose one themselves.
pub const DEFAULT_SEED: u64 = 0xFFFF_FFFF;

/// Parameters of the sampling chain.
///
/// The chain runs, in llama.cpp's common-sampler order: logit bias → penalties (repeat, presence,
/// frequency over the last `penalty_last_n` accepted tokens) → top-k → typical-p → top-p → min-p →
/// temperature → draw. Every stage keeps at least one candidate (llama.cpp's `min_keep` = 1).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    /// Temperature; `0.0` means greedy (argmax, ties → lowest token id). Must be finite and `>= 0`.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; `<= 0` disables the stage.
    pub top_k: i32,
    /// Nucleus sampling: keep the smallest most-likely set whose probability is `>= top_p`.
    /// In `[0, 1]`; `1.0` disables the stage.
    pub top_p: f32,
    /// Keep tokens whose probability is `>= min_p * p_max`. In `[0, 1]`; `0.0` disables the stage.
    pub min_p: f32,
    /// Locally typical sampling. In `[0, 1]`; `1.0` disables the stage.
    pub typical_p: f32,
    /// Repetition penalty for tokens in the window: positive logits are divided by it, negative ones
    /// multiplied. Finite and `> 0`; `1.0` disables it.
    pub repeat_penalty: f32,
    /// Subtracted once from the logit of every token present in the window. Finite; `0.0` disables it.
    pub presence_penalty: f32,
    /// Subtracted `count` times from the logit of a token seen `count` times in the window. Finite;
    /// `0.0` disables it.
    pub frequency_penalty: f32,
    /// Number of most recently accepted tokens the penalties look at; `0` disables all penalties.
    pub penalty_last_n: usize,
    /// `(token, bias)` pairs added to the logits before anything else. A bias of `-inf` bans the
    /// token. Tokens outside the vocabulary are ignored; repeated tokens add up.
    pub logit_bias: Vec<(u32, f32)>,
    /// Seed of the sampler's PRNG. Same seed and same inputs → same tokens.
    pub seed: u64,
}

impl Default for SamplerConfig {
    /// llama.cpp's `common_params_sampling` defaults (seed: [`DEFAULT_SEED`], deterministic).
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            typical_p: 1.0,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            logit_bias: Vec::new(),
            seed: DEFAULT_SEED,
        }
    }
}

impl SamplerConfig {
    /// Pure greedy decoding: temperature 0 and every filter and penalty disabled, so
    /// [`crate::Sampler::sample`] returns the argmax of the logits (ties → lowest token id).
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            typical_p: 1.0,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 0,
            logit_bias: Vec::new(),
            seed: DEFAULT_SEED,
        }
    }

    /// Checks every field; NaN, infinities and out-of-range values are errors.
    pub fn validate(&self) -> Result<(), SamplerError> {
        fn bad(name: &'static str, value: f32, reason: &'static str) -> SamplerError {
            SamplerError::InvalidParameter {
                name,
                value,
                reason,
            }
        }
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(bad(
                "temperature",
                self.temperature,
                "must be finite and >= 0 (0 = greedy)",
            ));
        }
        for (name, value) in [
            ("top_p", self.top_p),
            ("min_p", self.min_p),
            ("typical_p", self.typical_p),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(bad(name, value, "must be in [0, 1]"));
            }
        }
        let r = self.repeat_penalty;
        if !r.is_finite() || r <= 0.0 || !(1.0 / r).is_finite() {
            return Err(bad(
                "repeat_penalty",
                r,
                "must be finite and > 0 (1 = disabled)",
            ));
        }
        if !self.presence_penalty.is_finite() {
            return Err(bad(
                "presence_penalty",
                self.presence_penalty,
                "must be finite",
            ));
        }
        if !self.frequency_penalty.is_finite() {
            return Err(bad(
                "frequency_penalty",
                self.frequency_penalty,
                "must be finite",
            ));
        }
        for &(token, bias) in &self.logit_bias {
            if bias.is_nan() || bias == f32::INFINITY {
                return Err(SamplerError::InvalidLogitBias { token, bias });
            }
        }
        Ok(())
    }

    /// Whether the penalty stage changes anything (llama.cpp's `is_disabled` negated).
    pub(crate) fn penalties_enabled(&self) -> bool {
        self.penalty_last_n > 0
            && (self.repeat_penalty != 1.0
                || self.presence_penalty != 0.0
                || self.frequency_penalty != 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_llama_cpp_defaults_and_valid() {
        let c = SamplerConfig::default();
        assert_eq!(c.temperature, 0.8);
        assert_eq!(c.top_k, 40);
        assert_eq!(c.top_p, 0.95);
        assert_eq!(c.min_p, 0.05);
        assert_eq!(c.typical_p, 1.0);
        assert_eq!(c.penalty_last_n, 64);
        assert!(!c.penalties_enabled());
        c.validate().unwrap();
        SamplerConfig::greedy().validate().unwrap();
    }

    #[test]
    fn rejects_bad_values() {
        let cases: Vec<(&str, SamplerConfig)> = vec![
            (
                "temperature",
                SamplerConfig {
                    temperature: f32::NAN,
                    ..Default::default()
                },
            ),
            (
                "temperature",
                SamplerConfig {
                    temperature: -0.5,
                    ..Default::default()
                },
            ),
            (
                "temperature",
                SamplerConfig {
                    temperature: f32::INFINITY,
                    ..Default::default()
                },
            ),
            (
                "top_p",
                SamplerConfig {
                    top_p: f32::NAN,
                    ..Default::default()
                },
            ),
            (
                "top_p",
                SamplerConfig {
                    top_p: 1.5,
                    ..Default::default()
                },
            ),
            (
                "min_p",
                SamplerConfig {
                    min_p: -0.1,
                    ..Default::default()
                },
            ),
            (
                "typical_p",
                SamplerConfig {
                    typical_p: f32::NAN,
                    ..Default::default()
                },
            ),
            (
                "repeat_penalty",
                SamplerConfig {
                    repeat_penalty: 0.0,
                    ..Default::default()
                },
            ),
            (
                "repeat_penalty",
                SamplerConfig {
                    repeat_penalty: 1e-45,
                    ..Default::default()
                },
            ),
            (
                "repeat_penalty",
                SamplerConfig {
                    repeat_penalty: f32::NAN,
                    ..Default::default()
                },
            ),
            (
                "presence_penalty",
                SamplerConfig {
                    presence_penalty: f32::INFINITY,
                    ..Default::default()
                },
            ),
            (
                "frequency_penalty",
                SamplerConfig {
                    frequency_penalty: f32::NAN,
                    ..Default::default()
                },
            ),
        ];
        for (field, cfg) in cases {
            match cfg.validate() {
                Err(SamplerError::InvalidParameter { name, .. }) => assert_eq!(name, field),
                other => panic!("{field}: expected InvalidParameter, got {other:?}"),
            }
        }
    }

    #[test]
    fn logit_bias_validation() {
        let mut c = SamplerConfig {
            logit_bias: vec![(3, f32::NEG_INFINITY), (4, -2.0), (5, 7.5)],
            ..Default::default()
        };
        c.validate().unwrap();
        c.logit_bias.push((9, f32::NAN));
        assert!(matches!(
            c.validate(),
            Err(SamplerError::InvalidLogitBias { token: 9, .. })
        ));
        c.logit_bias.pop();
        c.logit_bias.push((10, f32::INFINITY));
        assert!(matches!(
            c.validate(),
            Err(SamplerError::InvalidLogitBias { token: 10, .. })
        ));
    }

    #[test]
    fn negative_penalties_are_allowed() {
        let c = SamplerConfig {
            presence_penalty: -1.0,
            frequency_penalty: -0.5,
            repeat_penalty: 0.5,
            ..Default::default()
        };
        c.validate().unwrap();
        assert!(c.penalties_enabled());
        let off = SamplerConfig {
            penalty_last_n: 0,
            ..c
        };
        assert!(!off.penalties_enabled());
    }
}
