//! Streaming generation: a [`Generation`] is an iterator of [`Step`]s, one
//! per sampled token, each carrying the text that is now safe to print
//! (complete UTF-8, with any possible stop-string prefix held back).

use std::time::{Duration, Instant};

use zeta_model::tokenizer::StreamDecoder;
use zeta_sampler::{Sampler, SamplerConfig, StopMatcher};

use crate::{BackendKind, EngineError, Result, Session};

/// What to generate and how to pick tokens.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    /// Maximum number of new tokens (`None`: until the context is full).
    pub max_tokens: Option<usize>,
    /// Sampler settings (greedy when the temperature is ≤ 0).
    pub sampler: SamplerConfig,
    /// Stop when the generated text contains one of these; the stop string
    /// itself is not emitted.
    pub stop: Vec<String>,
    /// Keep going past end-of-generation tokens.
    pub ignore_eos: bool,
    /// Render special/control tokens in the text.
    pub render_special: bool,
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self {
            max_tokens: Some(128),
            sampler: SamplerConfig::default(),
            stop: Vec::new(),
            ignore_eos: false,
            render_special: false,
        }
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end-of-generation token (not emitted).
    Eog,
    /// `max_tokens` were generated.
    Length,
    /// The context window is full.
    ContextFull,
    /// A stop string appeared.
    Stop,
}

impl FinishReason {
    /// Lower-case name, as in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eog => "eog",
            Self::Length => "length",
            Self::ContextFull => "context_full",
            Self::Stop => "stop",
        }
    }
}

/// One generated token.
#[derive(Debug, Clone)]
pub struct Step {
    /// The sampled token id; `None` for the final step that only flushes
    /// held-back text when the generation ends.
    pub token: Option<u32>,
    /// Text that became printable with this token (may be empty while a
    /// UTF-8 character or a possible stop string is incomplete).
    pub text: String,
    /// Wall time of this step: the forward pass that produced the logits
    /// plus sampling (the first step includes prompt processing).
    pub elapsed: Duration,
}

/// Timings of a generation so far.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    /// Prompt tokens evaluated (not counting reused cached tokens).
    pub prompt_tokens_evaluated: usize,
    /// Prompt tokens found in the cache and reused.
    pub prompt_tokens_reused: usize,
    /// Time to evaluate the prompt.
    pub prompt_eval: Duration,
    /// Time from `generate` to the first sampled token.
    pub time_to_first_token: Duration,
    /// Per-token decode times after the first (forward + sampling).
    pub decode_steps: Vec<Duration>,
    /// Tokens generated.
    pub generated: usize,
    /// Steps whose token the backend chose by an argmax on the device
    /// (greedy sampling on the GPU: only the id was read back, not the logits).
    pub argmax_on_device: usize,
}

impl Timings {
    /// Prompt-processing speed in tokens/s.
    pub fn prompt_tokens_per_second(&self) -> f64 {
        per_second(self.prompt_tokens_evaluated, self.prompt_eval)
    }

    /// Decode speed in tokens/s over the steps after the first.
    pub fn decode_tokens_per_second(&self) -> f64 {
        let total: Duration = self.decode_steps.iter().sum();
        per_second(self.decode_steps.len(), total)
    }
}

fn per_second(n: usize, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if n == 0 || s <= 0.0 {
        0.0
    } else {
        n as f64 / s
    }
}

/// An in-progress generation; iterate it to get tokens.
pub struct Generation<'s, 'e> {
    session: &'s mut Session<'e>,
    sampler: Sampler,
    decoder: StreamDecoder,
    stops: StopMatcher,
    params: GenerateParams,
    /// Prompt tokens still to evaluate before the first sample.
    pending_prompt: Option<Vec<u32>>,
    /// The last sampled token, to be fed next.
    last: Option<u32>,
    started: Instant,
    timings: Timings,
    tokens: Vec<u32>,
    text: String,
    finish: Option<FinishReason>,
}

impl std::fmt::Debug for Generation<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("tokens", &self.tokens.len())
            .field("finish", &self.finish)
            .finish_non_exhaustive()
    }
}

impl<'s, 'e> Generation<'s, 'e> {
    pub(crate) fn new(
        session: &'s mut Session<'e>,
        prompt: &[u32],
        params: GenerateParams,
    ) -> Result<Self> {
        if prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        let n_ctx = session.n_ctx();
        if prompt.len() > n_ctx {
            return Err(EngineError::PromptTooLong {
                prompt: prompt.len(),
                n_ctx,
                max: session.engine().config().n_ctx_train,
            });
        }
        let n_vocab = session.engine().config().n_vocab;
        if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(EngineError::InvalidParameter(format!(
                "prompt token id {bad} is outside the vocabulary (size {n_vocab})"
            )));
        }
        let mut sampler = Sampler::new(params.sampler.clone())?;
        for &t in prompt {
            sampler.accept(t);
        }
        let reused = session.reuse_prefix(prompt);
        let timings = Timings {
            prompt_tokens_reused: reused,
            prompt_tokens_evaluated: prompt.len() - reused,
            ..Timings::default()
        };
        Ok(Self {
            decoder: StreamDecoder::new(params.render_special),
            stops: StopMatcher::new(params.stop.clone()),
            pending_prompt: Some(prompt[reused..].to_vec()),
            session,
            sampler,
            params,
            last: None,
            started: Instant::now(),
            timings,
            tokens: Vec::new(),
            text: String::new(),
            finish: None,
        })
    }

    /// Tokens generated so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Text emitted so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Why the generation ended (`None` while it goes on).
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish
    }

    /// Timings so far.
    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    /// Runs to the end and returns the full text.
    pub fn collect_text(&mut self) -> Result<String> {
        for step in self.by_ref() {
            step?;
        }
        Ok(self.text.clone())
    }

    fn step(&mut self) -> Result<Option<Step>> {
        if self.finish.is_some() {
            return Ok(None);
        }
        if let Some(max) = self.params.max_tokens
            && self.tokens.len() >= max
        {
            return self.end(FinishReason::Length);
        }
        let t0 = Instant::now();
        let feed = match (self.pending_prompt.take(), self.last) {
            (Some(p), _) => p,
            (None, Some(t)) => vec![t],
            (None, None) => return self.end(FinishReason::Eog),
        };
        let first = self.tokens.is_empty();
        if self.session.cached.len() + feed.len() > self.session.n_ctx() {
            return self.end(FinishReason::ContextFull);
        }
        // Pipelined: submit this step, record the next one (whose token is
        // this step's result) while the device runs it, then wait.
        self.session.submit(&feed)?;
        let next_may_run = self
            .params
            .max_tokens
            .is_none_or(|max| self.tokens.len() + 1 < max)
            && self.session.cached.len() < self.session.n_ctx();
        let ahead = next_may_run && self.session.record_ahead()?;
        let token = if self.sampler.is_plain_argmax()
            && self.session.engine().backend() == BackendKind::Gpu
        {
            // Greedy on the GPU: the argmax runs there; only the id comes
            // back, and the step recorded ahead already runs with it.
            let id = if ahead {
                self.session.read_argmax_feed()?
            } else {
                self.session.read_argmax()?
            };
            self.timings.argmax_on_device += 1;
            if first {
                self.timings.prompt_eval = t0.elapsed();
            }
            id
        } else {
            let logits = self.session.read_logits()?;
            if first {
                self.timings.prompt_eval = t0.elapsed();
            }
            self.sampler.sample(logits)?
        };
        self.sampler.accept(token);
        let elapsed = t0.elapsed();
        if first {
            self.timings.time_to_first_token = self.started.elapsed();
        } else {
            self.timings.decode_steps.push(elapsed);
        }
        let tokenizer = self.session.engine().tokenizer();
        if tokenizer.is_eog(token) && !self.params.ignore_eos {
            return self.end(FinishReason::Eog);
        }
        self.tokens.push(token);
        self.timings.generated = self.tokens.len();
        self.last = Some(token);
        let piece = self.decoder.push(tokenizer, token);
        let out = self.stops.push(&piece);
        self.text.push_str(&out.emit);
        if out.stopped {
            self.finish = Some(FinishReason::Stop);
        }
        Ok(Some(Step {
            token: Some(token),
            text: out.emit,
            elapsed,
        }))
    }

    /// Ends the generation, flushing held-back text into a final step.
    fn end(&mut self, reason: FinishReason) -> Result<Option<Step>> {
        self.finish = Some(reason);
        let rest = self.decoder.finish();
        let mut out = self.stops.push(&rest);
        if !out.stopped {
            out.emit.push_str(&self.stops.finish());
        } else {
            self.finish = Some(FinishReason::Stop);
        }
        if out.emit.is_empty() {
            return Ok(None);
        }
        self.text.push_str(&out.emit);
        Ok(Some(Step {
            token: None,
            text: out.emit,
            elapsed: Duration::ZERO,
        }))
    }
}

impl Iterator for Generation<'_, '_> {
    type Item = Result<Step>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.step() {
            Ok(Some(s)) => Some(Ok(s)),
            Ok(None) => None,
            Err(e) => {
                self.finish = Some(FinishReason::Eog);
                Some(Err(e))
            }
        }
    }
}
