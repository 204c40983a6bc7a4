//! [`Sampler`]: runs the configured chain over a logit vector and draws a token.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use crate::chain::{Candidates, Penalties};
use crate::rng::Xoshiro256;
use crate::{SamplerConfig, SamplerError};

/// A configured sampling chain with its penalty window and seeded PRNG.
///
/// Usage per step: `let t = sampler.sample(&logits)?; sampler.accept(t);`. [`Sampler::sample`] does
/// **not** record the token it returns: call [`Sampler::accept`] for every token that becomes part
/// of the context (prompt tokens too, so the penalties see them), like llama.cpp's
/// `common_sampler_accept`.
///
/// The candidate buffer (`[n_vocab]` entries) and scratch space live in the struct and are reused,
/// so after the first call sampling does not allocate (the penalty window allocates in
/// [`Sampler::accept`] only while it grows).
pub struct Sampler {
    cfg: SamplerConfig,
    rng: Xoshiro256,
    /// Last accepted tokens, oldest first: `[min(accepted, penalty_last_n)]`.
    window: VecDeque<u32>,
    /// token → occurrences in `window` (entries with count 0 are removed).
    counts: HashMap<u32, u32>,
    cands: Candidates,
}

impl fmt::Debug for Sampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sampler")
            .field("cfg", &self.cfg)
            .field("window_len", &self.window.len())
            .finish_non_exhaustive()
    }
}

impl Sampler {
    /// Validates `cfg` and builds a sampler whose PRNG is seeded with `cfg.seed`.
    pub fn new(cfg: SamplerConfig) -> Result<Self, SamplerError> {
        cfg.validate()?;
        Ok(Self {
            rng: Xoshiro256::seed_from_u64(cfg.seed),
            cfg,
            window: VecDeque::new(),
            counts: HashMap::new(),
            cands: Candidates::default(),
        })
    }

    /// The configuration this sampler runs.
    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// True when [`Sampler::sample`] returns the plain argmax of the logits (ties → lowest id):
    /// greedy, no logit bias, no penalties. A caller may then choose the token by an argmax where
    /// the logits are (e.g. on a GPU) and skip `sample`; it still calls [`Sampler::accept`].
    pub fn is_plain_argmax(&self) -> bool {
        self.greedy_shortcut() && self.cfg.logit_bias.is_empty() && !self.cfg.penalties_enabled()
    }

    /// Runs the chain on `logits` (`[n_vocab]`) and draws a token.
    ///
    /// With temperature 0 the result is the most likely remaining candidate (ties → lowest id) and
    /// no randomness is consumed; otherwise exactly one PRNG draw is made.
    ///
    /// Errors: [`SamplerError::EmptyLogits`], [`SamplerError::NoCandidates`] (every logit NaN or
    /// -inf after bias and penalties), [`SamplerError::VocabTooLarge`].
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32, SamplerError> {
        if self.greedy_shortcut() {
            return self.greedy(logits);
        }
        self.run_chain(logits)?;
        if self.cfg.temperature <= 0.0 {
            return Ok(self.cands.argmax().id);
        }
        self.cands.softmax_with_temperature(self.cfg.temperature);
        let u = self.rng.next_f64();
        Ok(self.cands.draw(u).id)
    }

    /// Records `token` in the penalty window (keeps the last `penalty_last_n` tokens). Call it for
    /// prompt tokens and for every generated token. A no-op when the penalties are disabled
    /// (`penalty_last_n == 0`, or repeat 1 / presence 0 / frequency 0).
    pub fn accept(&mut self, token: u32) {
        if !self.cfg.penalties_enabled() {
            return;
        }
        self.window.push_back(token);
        *self.counts.entry(token).or_insert(0) += 1;
        if self.window.len() > self.cfg.penalty_last_n
            && let Some(old) = self.window.pop_front()
            && let Some(c) = self.counts.get_mut(&old)
        {
            *c -= 1;
            if *c == 0 {
                self.counts.remove(&old);
            }
        }
    }

    /// Forgets the penalty window and re-seeds the PRNG with `cfg.seed` (a fresh sampler).
    pub fn reset(&mut self) {
        self.window.clear();
        self.counts.clear();
        self.rng = Xoshiro256::seed_from_u64(self.cfg.seed);
    }

    /// The candidates left after the whole chain (temperature included) with their normalized
    /// probabilities, most likely first (ties → lower id). With temperature 0 this is the single
    /// greedy token with probability 1. Consumes no randomness and does not touch the window.
    pub fn probabilities(&mut self, logits: &[f32]) -> Result<Vec<(u32, f32)>, SamplerError> {
        if self.greedy_shortcut() {
            return Ok(vec![(self.greedy(logits)?, 1.0)]);
        }
        self.run_chain(logits)?;
        if self.cfg.temperature <= 0.0 {
            return Ok(vec![(self.cands.argmax().id, 1.0)]);
        }
        self.cands.softmax_with_temperature(self.cfg.temperature);
        let mut out: Vec<(u32, f32)> = self
            .cands
            .items
            .iter()
            .map(|c| (c.id, c.p as f32))
            .collect();
        out.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// The penalty parameters, if the penalty stage is enabled.
    fn penalties(&self) -> Option<Penalties> {
        let cfg = &self.cfg;
        cfg.penalties_enabled().then_some(Penalties {
            repeat: cfg.repeat_penalty,
            presence: cfg.presence_penalty,
            frequency: cfg.frequency_penalty,
        })
    }

    /// Greedy without typical-p: top-k, top-p and min-p all keep the most likely token (ties →
    /// lowest id), so the result is the argmax of the biased, penalized logits and the chain can
    /// be skipped. (Typical-p can drop the most likely token, so it needs the full chain.)
    fn greedy_shortcut(&self) -> bool {
        self.cfg.temperature <= 0.0 && self.cfg.typical_p >= 1.0
    }

    /// Argmax of the biased, penalized logits.
    fn greedy(&mut self, logits: &[f32]) -> Result<u32, SamplerError> {
        let pen = self.penalties();
        self.cands
            .fill_argmax(logits, &self.cfg.logit_bias, &self.counts, pen)
    }

    /// logit bias → penalties → top-k → typical-p → top-p → min-p, leaving the survivors in the
    /// candidate buffer.
    fn run_chain(&mut self, logits: &[f32]) -> Result<(), SamplerError> {
        let pen = self.penalties();
        let cfg = &self.cfg;
        self.cands
            .fill(logits, &cfg.logit_bias, &self.counts, pen)?;
        self.cands.top_k(cfg.top_k);
        self.cands.typical(cfg.typical_p);
        self.cands.top_p(cfg.top_p);
        self.cands.min_p(cfg.min_p);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SamplerConfig {
        SamplerConfig {
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            temperature: 1.0,
            ..Default::default()
        }
    }

    #[test]
    fn new_rejects_invalid_config() {
        let bad = SamplerConfig {
            temperature: f32::NAN,
            ..Default::default()
        };
        assert!(matches!(
            Sampler::new(bad),
            Err(SamplerError::InvalidParameter {
                name: "temperature",
                ..
            })
        ));
    }

    #[test]
    fn plain_argmax_only_without_bias_penalties_or_temperature() {
        assert!(
            Sampler::new(SamplerConfig::greedy())
                .unwrap()
                .is_plain_argmax()
        );
        assert!(
            !Sampler::new(SamplerConfig::default())
                .unwrap()
                .is_plain_argmax()
        );
        let biased = SamplerConfig {
            logit_bias: vec![(1, 2.0)],
            ..SamplerConfig::greedy()
        };
        assert!(!Sampler::new(biased).unwrap().is_plain_argmax());
        let penalized = SamplerConfig {
            repeat_penalty: 1.1,
            penalty_last_n: 64,
            ..SamplerConfig::greedy()
        };
        assert!(!Sampler::new(penalized).unwrap().is_plain_argmax());
        let typical = SamplerConfig {
            typical_p: 0.5,
            ..SamplerConfig::greedy()
        };
        assert!(!Sampler::new(typical).unwrap().is_plain_argmax());
        // Where it holds, `sample` is the argmax (ties → lowest id).
        let mut g = Sampler::new(SamplerConfig::greedy()).unwrap();
        assert_eq!(g.sample(&[0.5, 2.0, f32::NAN, 2.0, -1.0]), Ok(1));
    }

    #[test]
    fn sample_errors() {
        let mut s = Sampler::new(SamplerConfig::default()).unwrap();
        assert_eq!(s.sample(&[]), Err(SamplerError::EmptyLogits));
        assert_eq!(
            s.sample(&[f32::NAN, f32::NEG_INFINITY, f32::NAN]),
            Err(SamplerError::NoCandidates { n_vocab: 3 })
        );
        assert_eq!(s.probabilities(&[]), Err(SamplerError::EmptyLogits));
        let mut g = Sampler::new(SamplerConfig::greedy()).unwrap();
        assert_eq!(
            g.sample(&[f32::NAN]),
            Err(SamplerError::NoCandidates { n_vocab: 1 })
        );
    }

    #[test]
    fn greedy_is_argmax_lowest_id_on_ties() {
        let mut s = Sampler::new(SamplerConfig::greedy()).unwrap();
        assert_eq!(s.sample(&[0.1, 5.0, -3.0, 5.0]).unwrap(), 1);
        assert_eq!(s.sample(&[f32::NAN, -1.0, f32::NEG_INFINITY]).unwrap(), 1);
        assert_eq!(
            s.probabilities(&[0.1, 5.0, -3.0, 5.0]).unwrap(),
            vec![(1, 1.0)]
        );
    }

    #[test]
    fn temperature_zero_respects_bias_and_penalties() {
        let mut s = Sampler::new(SamplerConfig {
            temperature: 0.0,
            logit_bias: vec![(0, 10.0)],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.sample(&[0.0, 5.0]).unwrap(), 0);

        let mut s = Sampler::new(SamplerConfig {
            temperature: 0.0,
            presence_penalty: 10.0,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.sample(&[0.0, 5.0]).unwrap(), 1);
        s.accept(1);
        assert_eq!(s.sample(&[0.0, 5.0]).unwrap(), 0);
    }

    #[test]
    fn typical_can_change_greedy_choice() {
        // With a peaked distribution the argmax is "atypical" (its surprisal is far below the
        // entropy) and typical_p = 0 keeps only the single most typical token.
        let logits = [3.0f32, 2.9, 2.8, 2.7, 2.6, 2.5, 2.4, 2.3, -5.0];
        let mut s = Sampler::new(SamplerConfig {
            temperature: 0.0,
            typical_p: 0.0,
            ..cfg()
        })
        .unwrap();
        let t = s.sample(&logits).unwrap();
        let mut reference = Candidates::default();
        reference.fill(&logits, &[], &HashMap::new(), None).unwrap();
        reference.typical(0.0);
        assert_eq!(reference.items.len(), 1);
        assert_eq!(t, reference.items[0].id);
        assert_ne!(t, 0, "typical-p should have dropped the argmax here");
    }

    proptest::proptest! {
        #[test]
        fn greedy_shortcut_equals_full_chain(
            logits in proptest::collection::vec(
                proptest::prop_oneof![
                    8 => -20.0f32..20.0,
                    1 => proptest::strategy::Just(f32::NEG_INFINITY),
                    1 => proptest::strategy::Just(f32::INFINITY),
                    1 => proptest::strategy::Just(f32::NAN),
                    2 => proptest::strategy::Just(1.0f32),
                ],
                1..80,
            ),
            bias in proptest::collection::vec((0u32..90, -10.0f32..10.0), 0..4),
            history in proptest::collection::vec(0u32..90, 0..12),
            top_k in -1i32..10,
            top_p in 0.0f32..=1.0,
            min_p in 0.0f32..=1.0,
        ) {
            let cfg = SamplerConfig {
                temperature: 0.0,
                top_k,
                top_p,
                min_p,
                repeat_penalty: 1.3,
                presence_penalty: 0.2,
                frequency_penalty: 0.1,
                penalty_last_n: 8,
                logit_bias: bias,
                ..Default::default()
            };
            let mut s = Sampler::new(cfg).unwrap();
            for t in history {
                s.accept(t);
            }
            let fast = s.sample(&logits);
            let slow = s.run_chain(&logits).map(|()| s.cands.argmax().id);
            proptest::prop_assert_eq!(fast, slow);
        }
    }

    #[test]
    fn penalty_window_slides() {
        let mut s = Sampler::new(SamplerConfig {
            temperature: 0.0,
            penalty_last_n: 2,
            presence_penalty: 100.0,
            ..Default::default()
        })
        .unwrap();
        let logits = [3.0, 2.0, 1.0];
        s.accept(0);
        assert_eq!(s.sample(&logits).unwrap(), 1);
        s.accept(1);
        assert_eq!(s.sample(&logits).unwrap(), 2);
        s.accept(2); // window is now [1, 2]: token 0 fell out
        assert_eq!(s.sample(&logits).unwrap(), 0);
        assert_eq!(s.window.len(), 2);
        assert_eq!(s.counts.len(), 2);
        s.reset();
        assert!(s.window.is_empty() && s.counts.is_empty());
        assert_eq!(s.sample(&logits).unwrap(), 0);
    }

    #[test]
    fn frequency_penalty_counts_occurrences() {
        let mut s = Sampler::new(SamplerConfig {
            frequency_penalty: 1.0,
            ..cfg()
        })
        .unwrap();
        for t in [0, 0, 0, 1] {
            s.accept(t);
        }
        let p = s.probabilities(&[0.0, 0.0, 0.0]).unwrap();
        let get = |id: u32| p.iter().find(|x| x.0 == id).unwrap().1;
        // logits become [-3, -1, 0]
        let z = (-3.0f32).exp() + (-1.0f32).exp() + 1.0;
        assert!((get(0) - (-3.0f32).exp() / z).abs() < 1e-6);
        assert!((get(1) - (-1.0f32).exp() / z).abs() < 1e-6);
        assert!((get(2) - 1.0 / z).abs() < 1e-6);
    }

    #[test]
    fn probabilities_match_softmax_with_temperature() {
        let logits = [1.0f32, 2.0, 3.0];
        let mut s = Sampler::new(SamplerConfig {
            temperature: 0.5,
            ..cfg()
        })
        .unwrap();
        let p = s.probabilities(&logits).unwrap();
        let z: f32 = logits.iter().map(|l| (l / 0.5).exp()).sum();
        assert_eq!(p.iter().map(|x| x.0).collect::<Vec<_>>(), vec![2, 1, 0]);
        for (id, prob) in p {
            assert!((prob - (logits[id as usize] / 0.5).exp() / z).abs() < 1e-6);
        }
    }

    #[test]
    fn default_chain_filters() {
        // Logits 0, −0.1, −0.2, … (probability ratio r = e^−0.1 between neighbours), vocab 100.
        let logits: Vec<f32> = (0..100).map(|i| -(i as f32) * 0.1).collect();
        let kept = |cfg: SamplerConfig| {
            let mut s = Sampler::new(cfg).unwrap();
            let p = s.probabilities(&logits).unwrap();
            let ids: Vec<u32> = p.iter().map(|x| x.0).collect();
            ids
        };
        // Defaults: top-k 40, then top-p 0.95 over those 40: r^n <= 0.05 + 0.95·r^40 ⇒ n = 27
        // (min-p 0.05 alone would keep 30: logits >= ln 0.05 ≈ −2.996).
        assert_eq!(
            kept(SamplerConfig::default()),
            (0..27).collect::<Vec<u32>>()
        );
        // Without top-p, min-p binds.
        let no_top_p = SamplerConfig {
            top_p: 1.0,
            ..Default::default()
        };
        assert_eq!(kept(no_top_p), (0..30).collect::<Vec<u32>>());
        // A small top-k binds first.
        let k10 = SamplerConfig {
            top_k: 10,
            ..Default::default()
        };
        assert_eq!(kept(k10), (0..10).collect::<Vec<u32>>());
    }

    #[test]
    fn empirical_distribution_matches_probabilities() {
        let logits = [0.0f32, 1.0, 2.0, 0.5];
        let mut s = Sampler::new(SamplerConfig { seed: 1, ..cfg() }).unwrap();
        let p = s.probabilities(&logits).unwrap();
        let n = 200_000;
        let mut hist = [0usize; 4];
        for _ in 0..n {
            hist[s.sample(&logits).unwrap() as usize] += 1;
        }
        for (id, prob) in p {
            let freq = hist[id as usize] as f32 / n as f32;
            assert!((freq - prob).abs() < 0.005, "token {id}: {freq} vs {prob}");
        }
    }

    #[test]
    fn reset_reseeds() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let mut s = Sampler::new(SamplerConfig { seed: 9, ..cfg() }).unwrap();
        let a: Vec<u32> = (0..20).map(|_| s.sample(&logits).unwrap()).collect();
        s.reset();
        let b: Vec<u32> = (0..20).map(|_| s.sample(&logits).unwrap()).collect();
        assert_eq!(a, b);
        let mut other = Sampler::new(SamplerConfig { seed: 10, ..cfg() }).unwrap();
        let c: Vec<u32> = (0..20).map(|_| other.sample(&logits).unwrap()).collect();
        assert_ne!(a, c);
    }

    #[test]
    fn large_vocab_default_chain() {
        let n = 262_144usize;
        let logits: Vec<f32> = (0..n)
            .map(|i| ((i as u32).wrapping_mul(2654435761) % 10_000) as f32 / 1000.0)
            .collect();
        let mut s = Sampler::new(SamplerConfig {
            top_k: 0,
            min_p: 0.0,
            ..Default::default()
        })
        .unwrap();
        let t = s.sample(&logits).unwrap();
        assert!((t as usize) < n);
        let p = s.probabilities(&logits).unwrap();
        let sum: f64 = p.iter().map(|x| f64::from(x.1)).sum();
        assert!((sum - 1.0).abs() < 1e-5);
        assert!(p.len() > 256);
    }
}
