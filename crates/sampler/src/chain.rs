//! The individual stages of the sampling chain, working in place on a reusable candidate buffer.
//!
//! Semantics follow llama.cpp's `llama-sampler.cpp` (top-k, typical, top-p, min-p, temperature,
//! dist, penalties, logit bias) with `min_keep` = 1, with these deliberate differences:
//! - candidates whose logit is NaN or -inf are dropped up front (they have probability 0; llama.cpp
//!   keeps them, which can make typical-p compute `0 * log 0 = NaN`);
//! - if any logit is +inf, only the +inf tokens stay, equally likely (the softmax limit);
//! - ties are broken by token id everywhere (higher logit first, then lower id), so every stage's
//!   result is a function of the input alone, independent of the sort algorithm;
//! - probabilities and cumulative sums are computed in `f64`.

use std::cmp::Ordering;
use std::collections::HashMap;

use crate::SamplerError;

/// One candidate token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Candidate {
    /// Token id.
    pub id: u32,
    /// Current (biased, penalized) logit.
    pub logit: f32,
    /// Probability from the last softmax (only meaningful right after one).
    pub p: f64,
}

/// Total order "more likely first": higher logit first, then lower token id.
pub(crate) fn cmp_desc(a: &Candidate, b: &Candidate) -> Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

/// Weighted selection: reorders `v` so that the shortest prefix of the `cmp` order whose total
/// `weight` reaches `target` (`>= target`, or `> target` when `strict`) comes first, and returns its
/// length (`v.len()` if the target is never reached). Expected O(n): halves the window holding the
/// boundary with `select_nth_unstable_by` and sorts only the last ≤ 256 elements. The prefix is in
/// `cmp` order only within that last window.
fn select_mass<T>(
    v: &mut [T],
    cmp: impl Fn(&T, &T) -> Ordering,
    weight: impl Fn(&T) -> f64,
    target: f64,
    strict: bool,
) -> usize {
    let reached = |cum: f64| if strict { cum > target } else { cum >= target };
    let (mut lo, mut hi) = (0usize, v.len());
    let mut acc = 0.0f64; // weight of v[..lo]
    while hi - lo > 256 {
        let mid = lo + (hi - lo) / 2;
        v[lo..hi].select_nth_unstable_by(mid - lo, &cmp);
        let left: f64 = v[lo..=mid].iter().map(&weight).sum();
        if reached(acc + left) {
            hi = mid + 1;
        } else {
            acc += left;
            lo = mid + 1;
        }
    }
    v[lo..hi].sort_unstable_by(&cmp);
    for (i, x) in v.iter().enumerate().take(hi).skip(lo) {
        acc += weight(x);
        if reached(acc) {
            return i + 1;
        }
    }
    // Rounding (sums taken in a different order) kept the scan just short: keep the window.
    hi
}

/// Penalty parameters (see [`crate::SamplerConfig`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Penalties {
    pub repeat: f32,
    pub presence: f32,
    pub frequency: f32,
}

/// The candidate buffer plus scratch space, reused across calls so sampling does not allocate
/// once the buffers have grown to the vocabulary size.
#[derive(Debug, Default)]
pub(crate) struct Candidates {
    /// Candidates: `[n_candidates]`, `n_candidates <= n_vocab`.
    pub items: Vec<Candidate>,
    /// Whether `items` is in [`cmp_desc`] order.
    pub sorted: bool,
    /// Typical-p scratch: `(shifted score, index into items)` per candidate.
    scores: Vec<(f64, u32)>,
    /// Typical-p scratch: the reordered candidates.
    tmp: Vec<Candidate>,
    /// Adjusted logits (bias and penalties applied): `[n_vocab]`.
    work: Vec<f32>,
}

impl Candidates {
    /// Copies `logits` (`[n_vocab]`) into `work`, adds the logit biases and applies the penalties
    /// for the tokens in `counts` (token → occurrences in the window).
    fn load_adjusted(
        &mut self,
        logits: &[f32],
        bias: &[(u32, f32)],
        counts: &HashMap<u32, u32>,
        penalties: Option<Penalties>,
    ) -> Result<(), SamplerError> {
        let n = logits.len();
        if n == 0 {
            return Err(SamplerError::EmptyLogits);
        }
        if u32::try_from(n - 1).is_err() {
            return Err(SamplerError::VocabTooLarge { len: n });
        }
        self.work.clear();
        self.work.extend_from_slice(logits);
        for &(token, b) in bias {
            if let Some(l) = self.work.get_mut(token as usize) {
                *l += b;
            }
        }
        if let Some(pen) = penalties {
            for (&token, &count) in counts {
                if count == 0 {
                    continue;
                }
                if let Some(l) = self.work.get_mut(token as usize) {
                    if *l <= 0.0 {
                        *l *= pen.repeat;
                    } else {
                        *l /= pen.repeat;
                    }
                    *l -= count as f32 * pen.frequency + pen.presence;
                }
            }
        }
        Ok(())
    }

    /// Loads `logits` (`[n_vocab]`), adds the logit biases, applies the penalties for the tokens in
    /// `counts` (token → occurrences in the window), then keeps the possible tokens: the finite
    /// ones, or, if any logit is +inf, only the +inf ones (with logit 0, equally likely).
    pub(crate) fn fill(
        &mut self,
        logits: &[f32],
        bias: &[(u32, f32)],
        counts: &HashMap<u32, u32>,
        penalties: Option<Penalties>,
    ) -> Result<(), SamplerError> {
        self.load_adjusted(logits, bias, counts, penalties)?;
        let mut pos_inf = false;
        self.items.clear();
        for (i, &logit) in self.work.iter().enumerate() {
            if logit.is_finite() {
                self.items.push(Candidate {
                    id: i as u32,
                    logit,
                    p: 0.0,
                });
            } else if logit == f32::INFINITY {
                pos_inf = true;
            }
        }
        if pos_inf {
            self.items.clear();
            self.items.extend(
                self.work
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| **l == f32::INFINITY)
                    .map(|(i, _)| Candidate {
                        id: i as u32,
                        logit: 0.0,
                        p: 0.0,
                    }),
            );
        }
        if self.items.is_empty() {
            return Err(SamplerError::NoCandidates {
                n_vocab: logits.len(),
            });
        }
        self.sorted = false;
        Ok(())
    }

    /// Greedy shortcut, equal to `fill` followed by [`Candidates::argmax`] but without building
    /// the candidate list: the highest adjusted logit (NaN and -inf excluded, +inf beats
    /// everything), ties → lowest id.
    pub(crate) fn fill_argmax(
        &mut self,
        logits: &[f32],
        bias: &[(u32, f32)],
        counts: &HashMap<u32, u32>,
        penalties: Option<Penalties>,
    ) -> Result<u32, SamplerError> {
        self.load_adjusted(logits, bias, counts, penalties)?;
        let mut best: Option<(usize, f32)> = None;
        for (i, &l) in self.work.iter().enumerate() {
            if l.is_nan() || l == f32::NEG_INFINITY {
                continue;
            }
            if best.is_none_or(|(_, b)| l > b) {
                best = Some((i, l));
            }
        }
        match best {
            Some((i, _)) => Ok(i as u32),
            None => Err(SamplerError::NoCandidates {
                n_vocab: logits.len(),
            }),
        }
    }

    /// Sorts the whole buffer in [`cmp_desc`] order (no-op when already sorted). Reference
    /// implementations in the tests use it; the chain itself never needs a full sort.
    #[cfg(test)]
    pub(crate) fn sort(&mut self) {
        if !self.sorted {
            self.items.sort_unstable_by(cmp_desc);
            self.sorted = true;
        }
    }

    /// Highest logit among the candidates (buffer must be non-empty).
    fn max_logit(&self) -> f32 {
        if self.sorted {
            self.items[0].logit
        } else {
            self.items
                .iter()
                .fold(f32::NEG_INFINITY, |m, c| m.max(c.logit))
        }
    }

    /// Softmax of the current logits into `p` (f64).
    pub(crate) fn softmax(&mut self) {
        if self.items.is_empty() {
            return;
        }
        let max = f64::from(self.max_logit());
        let mut sum = 0.0f64;
        for c in &mut self.items {
            c.p = (f64::from(c.logit) - max).exp();
            sum += c.p;
        }
        for c in &mut self.items {
            c.p /= sum;
        }
    }

    /// Top-k: keeps the `k` most likely candidates (ties → lower id), sorted. `k <= 0` disables.
    pub(crate) fn top_k(&mut self, k: i32) {
        let Ok(k) = usize::try_from(k) else {
            return;
        };
        if k == 0 || k >= self.items.len() {
            return;
        }
        if !self.sorted {
            self.items.select_nth_unstable_by(k - 1, cmp_desc);
            self.items.truncate(k);
            self.items.sort_unstable_by(cmp_desc);
            self.sorted = true;
        } else {
            self.items.truncate(k);
        }
    }

    /// Locally typical sampling (Meister et al.): orders candidates by `|−ln p − H|` (ties → more
    /// likely first) and keeps the shortest prefix of that order whose probability exceeds `p`.
    /// `p >= 1` disables. Leaves the buffer unsorted.
    pub(crate) fn typical(&mut self, p: f32) {
        if p >= 1.0 || self.items.is_empty() {
            return;
        }
        self.softmax();
        let entropy: f64 = self
            .items
            .iter()
            .filter(|c| c.p > 0.0)
            .map(|c| -c.p * c.p.ln())
            .sum();
        self.scores.clear();
        self.scores.extend(
            self.items
                .iter()
                .enumerate()
                .map(|(i, c)| ((-c.p.ln() - entropy).abs(), i as u32)),
        );
        let items = &self.items;
        let keep = select_mass(
            &mut self.scores,
            |a, b| {
                a.0.total_cmp(&b.0)
                    .then_with(|| cmp_desc(&items[a.1 as usize], &items[b.1 as usize]))
            },
            |&(_, idx)| items[idx as usize].p,
            f64::from(p),
            true,
        );
        self.tmp.clear();
        self.tmp.extend(
            self.scores[..keep]
                .iter()
                .map(|&(_, idx)| self.items[idx as usize]),
        );
        std::mem::swap(&mut self.items, &mut self.tmp);
        self.sorted = false;
    }

    /// Top-p (nucleus): keeps the smallest most-likely set whose cumulative probability is
    /// `>= p` (at least one token). `p >= 1` disables. Uses an O(n) weighted selection instead of
    /// a full sort; the buffer stays sorted only if it already was.
    pub(crate) fn top_p(&mut self, p: f32) {
        if p >= 1.0 || self.items.is_empty() {
            return;
        }
        self.softmax();
        let target = f64::from(p);
        if self.sorted {
            let mut cum = 0.0f64;
            for i in 0..self.items.len() {
                cum += self.items[i].p;
                if cum >= target {
                    self.items.truncate(i + 1);
                    return;
                }
            }
            return;
        }
        let keep = select_mass(&mut self.items, cmp_desc, |c| c.p, target, false);
        self.items.truncate(keep);
    }

    /// Min-p: keeps tokens with `p >= min_p * p_max`, i.e. `logit >= max_logit + ln(min_p)`.
    /// `p <= 0` disables. Keeps the current order.
    pub(crate) fn min_p(&mut self, p: f32) {
        if p <= 0.0 || self.items.is_empty() {
            return;
        }
        let threshold = self.max_logit() + p.ln();
        self.items.retain(|c| c.logit >= threshold);
    }

    /// Greedy choice: the most likely candidate (ties → lowest id). Buffer must be non-empty.
    pub(crate) fn argmax(&self) -> Candidate {
        if self.sorted {
            return self.items[0];
        }
        let mut best = self.items[0];
        for c in &self.items[1..] {
            if cmp_desc(c, &best) == Ordering::Less {
                best = *c;
            }
        }
        best
    }

    /// Softmax of `logit / temp` into `p`, computed as `exp((logit − max) / temp)` so a small
    /// temperature cannot overflow. `temp` must be `> 0`. The result is normalized in place.
    pub(crate) fn softmax_with_temperature(&mut self, temp: f32) {
        if self.items.is_empty() {
            return;
        }
        let max = f64::from(self.max_logit());
        let t = f64::from(temp);
        let mut sum = 0.0f64;
        for c in &mut self.items {
            c.p = ((f64::from(c.logit) - max) / t).exp();
            sum += c.p;
        }
        for c in &mut self.items {
            c.p /= sum;
        }
    }

    /// Draws one candidate from the (normalized) `p` values using uniform `u` in `[0, 1)`: the first
    /// candidate whose cumulative probability exceeds `u * total`. Never returns a candidate with
    /// `p == 0`. Buffer must be non-empty.
    pub(crate) fn draw(&self, u: f64) -> Candidate {
        let total: f64 = self.items.iter().map(|c| c.p).sum();
        let target = u * total;
        let mut cum = 0.0f64;
        let mut last_positive = self.items[0];
        for c in &self.items {
            if c.p > 0.0 {
                last_positive = *c;
            }
            cum += c.p;
            if cum > target {
                return *c;
            }
        }
        last_positive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(logits: &[f32]) -> Candidates {
        let mut c = Candidates::default();
        c.fill(logits, &[], &HashMap::new(), None).unwrap();
        c
    }

    fn ids(c: &Candidates) -> Vec<u32> {
        let mut v: Vec<u32> = c.items.iter().map(|c| c.id).collect();
        v.sort_unstable();
        v
    }

    fn ordered_ids(c: &Candidates) -> Vec<u32> {
        c.items.iter().map(|c| c.id).collect()
    }

    /// Log-probabilities → logits (softmax inverts exactly up to a constant).
    fn from_probs(p: &[f64]) -> Vec<f32> {
        p.iter().map(|&x| x.ln() as f32).collect()
    }

    #[test]
    fn fill_errors() {
        let mut c = Candidates::default();
        assert_eq!(
            c.fill(&[], &[], &HashMap::new(), None),
            Err(SamplerError::EmptyLogits)
        );
        assert_eq!(
            c.fill(&[f32::NAN, f32::NEG_INFINITY], &[], &HashMap::new(), None),
            Err(SamplerError::NoCandidates { n_vocab: 2 })
        );
        // A -inf bias can ban the only finite token.
        assert_eq!(
            c.fill(
                &[1.0, f32::NAN],
                &[(0, f32::NEG_INFINITY)],
                &HashMap::new(),
                None
            ),
            Err(SamplerError::NoCandidates { n_vocab: 2 })
        );
    }

    #[test]
    fn fill_drops_impossible_and_handles_pos_inf() {
        let c = load(&[1.0, f32::NAN, f32::NEG_INFINITY, 2.0]);
        assert_eq!(ids(&c), vec![0, 3]);
        let c = load(&[1.0, f32::INFINITY, 3.0, f32::INFINITY]);
        assert_eq!(ids(&c), vec![1, 3]);
        assert!(c.items.iter().all(|c| c.logit == 0.0));
    }

    #[test]
    fn logit_bias_adds_and_ignores_out_of_range() {
        let mut c = Candidates::default();
        c.fill(
            &[0.0, 1.0, 2.0],
            &[(0, 5.0), (0, 1.0), (2, f32::NEG_INFINITY), (99, 3.0)],
            &HashMap::new(),
            None,
        )
        .unwrap();
        let got: Vec<(u32, f32)> = c.items.iter().map(|c| (c.id, c.logit)).collect();
        assert_eq!(got, vec![(0, 6.0), (1, 1.0)]);
    }

    #[test]
    fn penalties_only_touch_window_tokens() {
        let logits = [2.0, -2.0, 2.0, -2.0, 1.0];
        let counts: HashMap<u32, u32> = [(0, 3), (1, 1), (100, 2)].into_iter().collect();
        let mut c = Candidates::default();
        c.fill(
            &logits,
            &[],
            &counts,
            Some(Penalties {
                repeat: 2.0,
                presence: 0.0,
                frequency: 0.0,
            }),
        )
        .unwrap();
        let got: Vec<f32> = c.items.iter().map(|c| c.logit).collect();
        // Positive logit divided, negative multiplied; tokens 2..4 untouched.
        assert_eq!(got, vec![1.0, -4.0, 2.0, -2.0, 1.0]);

        c.fill(
            &logits,
            &[],
            &counts,
            Some(Penalties {
                repeat: 1.0,
                presence: 0.5,
                frequency: 0.25,
            }),
        )
        .unwrap();
        let got: Vec<f32> = c.items.iter().map(|c| c.logit).collect();
        assert_eq!(
            got,
            vec![2.0 - 0.75 - 0.5, -2.0 - 0.25 - 0.5, 2.0, -2.0, 1.0]
        );
    }

    #[test]
    fn bias_is_applied_before_penalties() {
        // Token 0: logit -1 + bias 3 = 2 (positive) → divided by 2 → 1.
        let counts: HashMap<u32, u32> = [(0, 1)].into_iter().collect();
        let mut c = Candidates::default();
        c.fill(
            &[-1.0, 0.0],
            &[(0, 3.0)],
            &counts,
            Some(Penalties {
                repeat: 2.0,
                presence: 0.0,
                frequency: 0.0,
            }),
        )
        .unwrap();
        assert_eq!(c.items[0].logit, 1.0);
    }

    #[test]
    fn top_k_keeps_exactly_k_sorted_ties_by_id() {
        let mut c = load(&[0.5, 3.0, 1.0, 3.0, 2.0, 1.0, 1.0]);
        c.top_k(4);
        assert_eq!(ordered_ids(&c), vec![1, 3, 4, 2]);
        assert!(c.sorted);
        // Tie at the boundary: of the three 1.0 logits, the lowest id wins.
        let mut c = load(&[1.0, 1.0, 1.0, 5.0]);
        c.top_k(2);
        assert_eq!(ordered_ids(&c), vec![3, 0]);
        // Disabled and oversize k keep everything.
        let mut c = load(&[1.0, 2.0, 3.0]);
        c.top_k(0);
        assert_eq!(c.items.len(), 3);
        c.top_k(-5);
        assert_eq!(c.items.len(), 3);
        c.top_k(10);
        assert_eq!(c.items.len(), 3);
        c.top_k(1);
        assert_eq!(ordered_ids(&c), vec![2]);
    }

    #[test]
    fn top_p_smallest_set_reaching_p() {
        let logits = from_probs(&[0.1, 0.4, 0.2, 0.3]);
        let mut c = load(&logits);
        c.top_p(0.65);
        // 0.4 + 0.3 = 0.7 >= 0.65, 0.4 alone is not.
        assert_eq!(ordered_ids(&c), vec![1, 3]);
        let mut c = load(&logits);
        c.top_p(0.7 - 1e-6);
        assert_eq!(ordered_ids(&c), vec![1, 3]);
        let mut c = load(&logits);
        c.top_p(0.75);
        assert_eq!(ordered_ids(&c), vec![1, 3, 2]);
        let mut c = load(&logits);
        c.top_p(0.0);
        assert_eq!(ordered_ids(&c), vec![1]);
        let mut c = load(&logits);
        c.top_p(1.0);
        assert_eq!(c.items.len(), 4);
    }

    #[test]
    fn top_p_large_vocab_selection_matches_full_sort() {
        // 5000 tokens with a flat-ish distribution so the nucleus is larger than the first 256.
        let logits: Vec<f32> = (0..5000u32)
            .map(|i| ((i.wrapping_mul(2654435761) % 1000) as f32) / 300.0)
            .collect();
        for p in [0.1f32, 0.5, 0.9, 0.99] {
            let mut c = load(&logits);
            c.top_p(p);
            let got = ids(&c);
            // Reference: full sort, then scan.
            let mut r = load(&logits);
            r.sort();
            r.softmax();
            let mut cum = 0.0;
            let mut keep = r.items.len();
            for (i, x) in r.items.iter().enumerate() {
                cum += x.p;
                if cum >= f64::from(p) {
                    keep = i + 1;
                    break;
                }
            }
            let mut want: Vec<u32> = r.items[..keep].iter().map(|c| c.id).collect();
            want.sort_unstable();
            assert_eq!(got, want, "p = {p}");
            assert!(got.len() > 256 || p < 0.5, "p = {p}: {}", got.len());
        }
    }

    #[test]
    fn min_p_keeps_relative_to_max() {
        let logits = from_probs(&[0.5, 0.25, 0.05, 0.2]);
        // p_max = 0.5: min_p 0.39 → threshold 0.195 keeps 0.5, 0.25, 0.2.
        let mut c = load(&logits);
        c.min_p(0.39);
        assert_eq!(ids(&c), vec![0, 1, 3]);
        // min_p 0.45 → threshold 0.225 drops 0.2 as well.
        c.min_p(0.45);
        assert_eq!(ids(&c), vec![0, 1]);
        let mut c = load(&logits);
        c.min_p(1.0);
        assert_eq!(ids(&c), vec![0]);
        let mut c = load(&logits);
        c.min_p(0.0);
        assert_eq!(c.items.len(), 4);
        // Order is preserved (unsorted input stays in id order).
        let mut c = load(&[1.0, 3.0, 2.0, -10.0]);
        c.min_p(0.05);
        assert_eq!(ordered_ids(&c), vec![0, 1, 2]);
    }

    #[test]
    fn typical_matches_hand_computation() {
        let probs = [0.5f64, 0.2, 0.15, 0.1, 0.05];
        let h: f64 = probs.iter().map(|p| -p * p.ln()).sum();
        // Expected order by |−ln p − H|.
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| {
            (-probs[a].ln() - h)
                .abs()
                .partial_cmp(&(-probs[b].ln() - h).abs())
                .unwrap()
        });
        for p in [0.0f32, 0.3, 0.5, 0.8, 0.95] {
            let mut cum = 0.0;
            let mut keep = order.len();
            for (i, &ix) in order.iter().enumerate() {
                cum += probs[ix];
                if cum > f64::from(p) {
                    keep = i + 1;
                    break;
                }
            }
            let want: Vec<u32> = order[..keep].iter().map(|&i| i as u32).collect();
            let mut c = load(&from_probs(&probs));
            c.typical(p);
            assert_eq!(ordered_ids(&c), want, "p = {p}");
            assert!(!c.sorted);
        }
        let mut c = load(&from_probs(&probs));
        c.typical(1.0);
        assert_eq!(c.items.len(), 5);
    }

    #[test]
    fn typical_large_vocab_selection_matches_full_sort() {
        let logits: Vec<f32> = (0..5000u32)
            .map(|i| ((i.wrapping_mul(2654435761) % 997) as f32) / 150.0)
            .collect();
        for p in [0.05f32, 0.3, 0.8, 0.97] {
            let mut c = load(&logits);
            c.typical(p);
            let got = ids(&c);
            // Reference: full sort by (score, more likely first), then scan.
            let mut r = load(&logits);
            r.softmax();
            let h: f64 = r.items.iter().map(|x| -x.p * x.p.ln()).sum();
            let mut v: Vec<(f64, Candidate)> = r
                .items
                .iter()
                .map(|x| ((-x.p.ln() - h).abs(), *x))
                .collect();
            v.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| cmp_desc(&a.1, &b.1)));
            let mut cum = 0.0;
            let mut keep = v.len();
            for (i, x) in v.iter().enumerate() {
                cum += x.1.p;
                if cum > f64::from(p) {
                    keep = i + 1;
                    break;
                }
            }
            let mut want: Vec<u32> = v[..keep].iter().map(|x| x.1.id).collect();
            want.sort_unstable();
            assert_eq!(got, want, "p = {p}");
            assert!(got.len() > 256 || p < 0.3, "p = {p}: {}", got.len());
        }
    }

    #[test]
    fn typical_survives_underflowing_probabilities() {
        let mut c = load(&[0.0, -2000.0, -1.0]);
        c.typical(0.5);
        assert!(!c.items.is_empty());
        assert!(c.items.iter().all(|x| x.p.is_finite()));
    }

    #[test]
    fn temperature_scales_log_probabilities() {
        let logits = [1.0f32, 2.0, 0.5];
        for t in [0.5f32, 1.0, 2.0] {
            let mut c = load(&logits);
            c.softmax_with_temperature(t);
            let z: f64 = logits
                .iter()
                .map(|&l| (f64::from(l) / f64::from(t)).exp())
                .sum();
            for x in &c.items {
                let want = (f64::from(logits[x.id as usize]) / f64::from(t)).exp() / z;
                assert!((x.p - want).abs() < 1e-12, "t={t}");
            }
        }
        // Tiny temperature with huge logits does not overflow.
        let mut c = load(&[3.0e38, 2.9e38]);
        c.softmax_with_temperature(1e-3);
        assert_eq!(c.items[0].p, 1.0);
        assert_eq!(c.items[1].p, 0.0);
    }

    #[test]
    fn argmax_ties_lowest_id() {
        let c = load(&[1.0, 7.0, 3.0, 7.0]);
        assert_eq!(c.argmax().id, 1);
        let mut c = load(&[1.0, 7.0, 3.0, 7.0]);
        c.sort();
        assert_eq!(c.argmax().id, 1);
    }

    #[test]
    fn draw_follows_cumulative_and_skips_zero() {
        let mut c = load(&[0.0, 0.0, 0.0, 0.0]);
        c.softmax();
        assert_eq!(c.draw(0.0).id, 0);
        assert_eq!(c.draw(0.26).id, 1);
        assert_eq!(c.draw(0.74).id, 2);
        assert_eq!(c.draw(0.999).id, 3);
        // Zero-probability candidates are never drawn, even with u = 0.
        let mut c = load(&[-2000.0, 0.0, -2000.0]);
        c.softmax();
        assert_eq!(c.items[0].p, 0.0);
        assert_eq!(c.draw(0.0).id, 1);
        assert_eq!(c.draw(0.9999999).id, 1);
    }
}
