//! Property tests for the sampler chain and the stop-string matcher.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use zeta_sampler::{Sampler, SamplerConfig, SamplerError, StopMatcher};

/// Logits: mostly finite, sometimes -inf or NaN. `[1..=max_len]`.
fn logits_strategy(max_len: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![
            20 => -30.0f32..30.0,
            2 => (-3i32..3).prop_map(|x| x as f32), // exact ties
            1 => Just(f32::NEG_INFINITY),
            1 => Just(f32::NAN),
        ],
        1..=max_len,
    )
}

/// Any valid configuration (with a good chance that each stage is disabled).
fn config_strategy() -> impl Strategy<Value = SamplerConfig> {
    let unit_or = |disabled: f32| prop_oneof![Just(disabled), 0.0f32..=1.0];
    (
        prop_oneof![Just(0.0f32), 0.05f32..3.0],
        -2i32..50,
        unit_or(1.0),
        unit_or(0.0),
        unit_or(1.0),
        prop_oneof![Just(1.0f32), 0.5f32..2.0],
        -1.0f32..1.0,
        -1.0f32..1.0,
        0usize..10,
        prop::collection::vec(
            (
                0u32..64,
                prop_oneof![4 => -5.0f32..5.0, 1 => Just(f32::NEG_INFINITY)],
            ),
            0..4,
        ),
        any::<u64>(),
    )
        .prop_map(
            |(temperature, top_k, top_p, min_p, typical_p, rp, pp, fp, last_n, bias, seed)| {
                SamplerConfig {
                    temperature,
                    top_k,
                    top_p,
                    min_p,
                    typical_p,
                    repeat_penalty: rp,
                    presence_penalty: pp,
                    frequency_penalty: fp,
                    penalty_last_n: last_n,
                    logit_bias: bias,
                    seed,
                }
            },
        )
}

/// Whether at least one token can survive bias (penalties here cannot make a finite logit
/// non-finite: repeat penalty is in [0.5, 2] and logits are small).
fn has_possible_token(logits: &[f32], cfg: &SamplerConfig) -> bool {
    logits.iter().enumerate().any(|(i, &l)| {
        l.is_finite()
            && !cfg
                .logit_bias
                .iter()
                .any(|&(t, b)| t as usize == i && b == f32::NEG_INFINITY)
    })
}

/// Argmax over non-NaN, non-(-inf) logits, ties → lowest id.
fn argmax(logits: &[f32]) -> Option<u32> {
    let mut best: Option<(u32, f32)> = None;
    for (i, &l) in logits.iter().enumerate() {
        if !l.is_finite() {
            continue;
        }
        match best {
            Some((_, b)) if l <= b => {}
            _ => best = Some((i as u32, l)),
        }
    }
    best.map(|b| b.0)
}

proptest! {
    #[test]
    fn probabilities_sum_to_one(
        logits in logits_strategy(300),
        cfg in config_strategy(),
        history in prop::collection::vec(0u32..64, 0..20),
    ) {
        let possible = has_possible_token(&logits, &cfg);
        let mut s = Sampler::new(cfg).unwrap();
        for t in history {
            s.accept(t);
        }
        match s.probabilities(&logits) {
            Ok(p) => {
                prop_assert!(possible);
                prop_assert!(!p.is_empty());
                let sum: f64 = p.iter().map(|x| f64::from(x.1)).sum();
                prop_assert!((sum - 1.0).abs() <= 1e-5, "sum = {}", sum);
                prop_assert!(p.iter().all(|x| (0.0..=1.0).contains(&x.1)));
                prop_assert!(p.iter().all(|x| (x.0 as usize) < logits.len()));
                // Sorted by probability, descending; no duplicates.
                prop_assert!(p.windows(2).all(|w| w[0].1 >= w[1].1));
                let mut ids: Vec<u32> = p.iter().map(|x| x.0).collect();
                ids.sort_unstable();
                ids.dedup();
                prop_assert_eq!(ids.len(), p.len());
            }
            Err(e) => {
                prop_assert!(!possible);
                prop_assert_eq!(e, SamplerError::NoCandidates { n_vocab: logits.len() });
            }
        }
    }

    #[test]
    fn top_k_keeps_at_most_k(
        logits in logits_strategy(200),
        mut cfg in config_strategy(),
        k in 1i32..30,
    ) {
        cfg.top_k = k;
        let mut s = Sampler::new(cfg).unwrap();
        if let Ok(p) = s.probabilities(&logits) {
            prop_assert!(p.len() <= k as usize);
        }
    }

    #[test]
    fn top_k_alone_keeps_exactly_k_most_likely(
        logits in prop::collection::vec(-30.0f32..30.0, 1..200),
        k in 1i32..40,
    ) {
        let cfg = SamplerConfig { top_k: k, top_p: 1.0, min_p: 0.0, temperature: 1.0,
                                  ..Default::default() };
        let mut s = Sampler::new(cfg).unwrap();
        let p = s.probabilities(&logits).unwrap();
        prop_assert_eq!(p.len(), (k as usize).min(logits.len()));
        let kept_min = p.iter().map(|x| logits[x.0 as usize]).fold(f32::INFINITY, f32::min);
        // Nothing dropped is more likely than anything kept.
        for (i, &l) in logits.iter().enumerate() {
            if !p.iter().any(|x| x.0 as usize == i) {
                prop_assert!(l <= kept_min);
            }
        }
    }

    #[test]
    fn same_seed_same_tokens(
        logits in prop::collection::vec(-5.0f32..5.0, 2..100),
        cfg in config_strategy(),
        prompt in prop::collection::vec(0u32..100, 0..10),
    ) {
        let run = |cfg: SamplerConfig| {
            let mut s = Sampler::new(cfg).unwrap();
            for &t in &prompt {
                s.accept(t);
            }
            let mut out = Vec::new();
            for step in 0..16 {
                // Vary the logits per step so penalties and the RNG both matter.
                let l: Vec<f32> = logits.iter().enumerate()
                    .map(|(i, &x)| x + ((i * 7 + step * 13) % 5) as f32 * 0.3).collect();
                match s.sample(&l) {
                    Ok(t) => { s.accept(t); out.push(Some(t)); }
                    Err(_) => out.push(None),
                }
            }
            out
        };
        prop_assert_eq!(run(cfg.clone()), run(cfg));
    }

    #[test]
    fn greedy_equals_argmax(logits in logits_strategy(300)) {
        let mut s = Sampler::new(SamplerConfig::greedy()).unwrap();
        match argmax(&logits) {
            Some(want) => prop_assert_eq!(s.sample(&logits).unwrap(), want),
            None => prop_assert!(s.sample(&logits).is_err()),
        }
    }

    #[test]
    fn sampled_token_is_a_candidate(
        logits in logits_strategy(300),
        cfg in config_strategy(),
        history in prop::collection::vec(0u32..64, 0..20),
    ) {
        let mut s = Sampler::new(cfg).unwrap();
        for t in history {
            s.accept(t);
        }
        for _ in 0..4 {
            let Ok(p) = s.probabilities(&logits) else { return Ok(()); };
            let t = s.sample(&logits).unwrap();
            let entry = p.iter().find(|x| x.0 == t);
            prop_assert!(entry.is_some(), "token {} not in {:?}", t, p);
            prop_assert!(entry.unwrap().1 > 0.0);
        }
    }

    #[test]
    fn stop_matcher_emits_exactly_the_text_before_the_first_stop(
        text in "[abé<]{0,40}",
        random_stops in prop::collection::vec("[abé<]{1,4}", 0..3),
        // Stops cut out of the text itself, so that matches (and overlapping matches) are common.
        slices in prop::collection::vec((0usize..40, 1usize..5), 0..3),
        cuts in prop::collection::vec(0usize..50, 0..10),
    ) {
        let chars: Vec<char> = text.chars().collect();
        let mut stops = random_stops;
        for (start, len) in slices {
            if start + len <= chars.len() {
                stops.push(chars[start..start + len].iter().collect());
            }
        }
        // Expected: cut at the stop occurrence that ends first (ties → earliest start).
        let first = stops.iter()
            .filter_map(|s| text.find(s.as_str()).map(|start| (start + s.len(), start)))
            .min();
        let want = match first { Some((_, start)) => &text[..start], None => text.as_str() };

        // Split the text at random char boundaries.
        let mut bounds: Vec<usize> = cuts.iter()
            .map(|&c| c.min(text.len()))
            .filter(|&c| text.is_char_boundary(c))
            .collect();
        bounds.push(0);
        bounds.push(text.len());
        bounds.sort_unstable();
        bounds.dedup();

        let mut m = StopMatcher::new(stops.clone());
        let mut out = String::new();
        let mut stopped = false;
        for w in bounds.windows(2) {
            let step = m.push(&text[w[0]..w[1]]);
            prop_assert!(!stopped || step.emit.is_empty(), "emitted after stop");
            out.push_str(&step.emit);
            // Never emits a whole stop string.
            for s in &stops {
                prop_assert!(!out.contains(s.as_str()), "emitted stop {:?} in {:?}", s, out);
            }
            stopped |= step.stopped;
        }
        out.push_str(&m.finish());
        prop_assert_eq!(stopped, first.is_some());
        prop_assert_eq!(out.as_str(), want);
    }
}
