//! The transformer: weights (uploaded once), per-session [`State`] (KV cache
//! plus scratch buffers, allocated once) and the forward pass shared by all
//! supported architectures. Read `llm_build_llama`, `llm_build_qwen2`,
//! `llm_build_qwen3` and `llm_build_gemma3` in llama.cpp for the spec.
//!
//! Data flow of one batch of `n` tokens (shapes row-major, `[rows, cols]`):
//! ```text
//! x    [n, n_embd]   = token_embd[ids] (* sqrt(n_embd) for gemma3)
//! per layer:
//!   xb [n, n_embd]   = rms_norm(x) * attn_norm
//!   q  [n, n_head*hd] = xb·wqᵀ (+bq)   k,v [n, n_head_kv*hd] = xb·wkᵀ, xb·wvᵀ (+bk,+bv)
//!   q,k              = per-head rms_norm (qwen3, gemma3), RoPE at pos0..pos0+n
//!   K/V cache rows pos0..pos0+n = k, v (f16)
//!   att [n, n_head*hd] = causal GQA attention (sliding window on gemma3 SWA layers)
//!   proj [n, n_embd]  = att·woᵀ (+bo) (gemma3: rms_norm * attn_post_norm)
//!   x += proj
//!   xb = rms_norm(x) * ffn_norm
//!   gate, up [n, n_ff] = xb·w_gateᵀ, xb·w_upᵀ ;  gate = act(gate) * up
//!   proj = gate·w_downᵀ (gemma3: rms_norm * ffn_post_norm) ; x += proj
//! logits [n_out, n_vocab] = (rms_norm(x) * output_norm)·outputᵀ
//! ```
//! Each post-norm and residual add is recorded with the norm that follows
//! it (`Backend::rms_norm_add_matmul_many`): the attention's with the FFN
//! norm, the FFN's with the next layer's attention norm (the last layer's
//! on its own), so a backend can fuse the pair.

use std::sync::Arc;

use zeta_gguf::Gguf;
use zeta_tensor::{AttnParams, Backend, GluKind, RopeParams};

use crate::config::{Arch, ModelConfig};
use crate::error::ModelError;

/// Tokens processed per internal micro-batch (bounds scratch memory).
pub const UBATCH: usize = 512;
/// Logit rows computed per output matmul (bounds the device logits buffer).
const LOGITS_CHUNK: usize = 32;

/// Which logits `forward` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's logits: `[1, n_vocab]`.
    Last,
    /// Every token's logits: `[n_tokens, n_vocab]`.
    All,
}

/// Weights of one transformer block.
#[derive(Debug)]
struct LayerWeights<B: Backend> {
    attn_norm: B::Weight,              // [n_embd]
    wq: B::Weight,                     // [n_embd, n_head*head_dim]      (ggml dims: cols, rows)
    wk: B::Weight,                     // [n_embd, n_head_kv*head_dim]
    wv: B::Weight,                     // [n_embd, n_head_kv*head_dim_v]
    bq: Option<B::Weight>,             // [n_head*head_dim]      (qwen2)
    bk: Option<B::Weight>,             // [n_head_kv*head_dim]   (qwen2)
    bv: Option<B::Weight>,             // [n_head_kv*head_dim_v] (qwen2)
    q_norm: Option<B::Weight>,         // [head_dim]             (qwen3, gemma3)
    k_norm: Option<B::Weight>,         // [head_dim]             (qwen3, gemma3)
    wo: B::Weight,                     // [n_head*head_dim_v, n_embd]
    bo: Option<B::Weight>,             // [n_embd]
    attn_post_norm: Option<B::Weight>, // [n_embd]               (gemma3)
    ffn_norm: B::Weight,               // [n_embd]
    ffn_gate: B::Weight,               // [n_embd, n_ff]
    ffn_up: B::Weight,                 // [n_embd, n_ff]
    ffn_down: B::Weight,               // [n_ff, n_embd]
    ffn_post_norm: Option<B::Weight>,  // [n_embd]               (gemma3)
}

/// All weights.
#[derive(Debug)]
struct Weights<B: Backend> {
    tok_embd: B::Weight,           // [n_embd, n_vocab]
    output_norm: B::Weight,        // [n_embd]
    output: Option<B::Weight>,     // [n_embd, n_vocab]; None = tied to tok_embd
    output_b: Option<B::Weight>,   // [n_vocab] (qwen2, optional)
    rope_freqs: Option<B::Weight>, // [n_rot/2] (llama3 rope scaling)
    layers: Vec<LayerWeights<B>>,
}

/// A loaded model on backend `B`.
#[derive(Debug)]
pub struct Model<B: Backend> {
    config: ModelConfig,
    backend: B,
    weights: Weights<B>,
    /// Keeps the mapped file alive for backends that reference it.
    _gguf: Arc<Gguf>,
}

/// Per-session state: KV cache and scratch buffers, allocated once.
#[derive(Debug)]
pub struct State<B: Backend> {
    n_ctx: usize,
    /// Tokens in the cache (next position).
    pos: usize,
    /// Micro-batch size the scratch buffers hold.
    n_ub: usize,
    k_cache: Vec<B::KvBuffer>, // per layer [n_ctx, n_head_kv*head_dim]   (f16)
    v_cache: Vec<B::KvBuffer>, // per layer [n_ctx, n_head_kv*head_dim_v] (f16)
    x: B::Buffer,              // [n_ub, n_embd] residual stream
    xb: B::Buffer,             // [n_ub, n_embd] normed input of a sub-block
    q: B::Buffer,              // [n_ub, n_head*head_dim]
    k: B::Buffer,              // [n_ub, n_head_kv*head_dim]
    v: B::Buffer,              // [n_ub, n_head_kv*head_dim_v]
    att: B::Buffer,            // [n_ub, n_head*head_dim_v]
    proj: B::Buffer,           // [n_ub, n_embd] sub-block output
    gate: B::Buffer,           // [n_ub, n_ff]
    up: B::Buffer,             // [n_ub, n_ff]
    logits_dev: B::Buffer,     // [logits_rows, n_vocab]
    /// Rows `logits_dev` holds: 1 at first, up to `LOGITS_CHUNK` once more
    /// rows are asked for at once (a 262k vocabulary makes each row 1 MiB).
    logits_rows: usize,
    logits: Vec<f32>, // [n_out, n_vocab] on the host
    /// Shape fingerprint of the model that created the state.
    shape: (usize, usize, usize, usize),
    /// A one-token step at this position recorded ahead on the backend,
    /// under this ticket ([`Model::record_ahead`]).
    ahead: Option<(usize, u64)>,
    /// The step at this position already running on the device with this
    /// token, its greedy choice ([`Model::read_argmax_feed`]), not yet
    /// accepted by [`Model::submit`].
    fed: Option<(usize, u32)>,
    /// Whether `logits_dev` row 0 holds the logits of the last step
    /// [`Model::submit`] ran (what [`Model::read_logits`] reads).
    submitted: bool,
}

impl<B: Backend> State<B> {
    /// Number of tokens in the cache (position of the next token).
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Context size (cache capacity in tokens).
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Forgets cached tokens from `pos` on (no-op if `pos >= self.pos()`).
    pub fn truncate(&mut self, pos: usize) {
        if pos < self.pos {
            self.pos = pos;
            self.ahead = None;
            self.fed = None;
            self.submitted = false;
        }
    }
}

/// Compares ggml dims ignoring trailing 1s.
fn same_dims(a: &[u64], b: &[u64]) -> bool {
    let trim = |d: &[u64]| -> Vec<u64> {
        let mut v = d.to_vec();
        while v.len() > 1 && v.last() == Some(&1) {
            v.pop();
        }
        v
    };
    trim(a) == trim(b)
}

struct Loader<'a, B: Backend> {
    gguf: &'a Arc<Gguf>,
    backend: &'a B,
}

impl<B: Backend> Loader<'_, B> {
    fn opt(&self, name: &str, dims: &[usize]) -> Result<Option<B::Weight>, ModelError> {
        let Some(t) = self.gguf.tensor(name) else {
            return Ok(None);
        };
        let expected: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
        if !same_dims(&t.dims, &expected) {
            return Err(ModelError::BadShape {
                name: name.to_string(),
                expected,
                found: t.dims.clone(),
            });
        }
        Ok(Some(self.backend.upload_weight(self.gguf, name)?))
    }

    fn req(&self, name: &str, dims: &[usize]) -> Result<B::Weight, ModelError> {
        self.opt(name, dims)?
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.to_string(),
            })
    }
}

impl<B: Backend> Model<B> {
    /// Reads the config, checks every tensor's shape and uploads the weights.
    pub fn load(gguf: Arc<Gguf>, backend: B) -> Result<Self, ModelError> {
        let c = ModelConfig::from_gguf(&gguf)?;
        let l = Loader {
            gguf: &gguf,
            backend: &backend,
        };
        let (e, v, ff) = (c.n_embd, c.n_vocab, c.n_ff);
        let nq = c.n_head * c.head_dim;
        let nk = c.n_head_kv * c.head_dim;
        let nv = c.n_head_kv * c.head_dim_v;
        let no = c.n_head * c.head_dim_v;
        let tok_embd = l.req("token_embd.weight", &[e, v])?;
        let output_norm = l.req("output_norm.weight", &[e])?;
        let output = l.opt("output.weight", &[e, v])?;
        let output_b = l.opt("output.bias", &[v])?;
        let rope_freqs = if c.arch == Arch::Llama {
            l.opt("rope_freqs.weight", &[c.n_rot / 2])?
        } else {
            None
        };
        let needs_qk_norm = matches!(c.arch, Arch::Qwen3 | Arch::Gemma3);
        let gemma = c.arch == Arch::Gemma3;
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}");
            if gguf.tensor(&n("attn_qkv.weight")).is_some()
                && gguf.tensor(&n("attn_q.weight")).is_none()
            {
                return Err(ModelError::Unsupported(format!(
                    "fused {} tensor",
                    n("attn_qkv.weight")
                )));
            }
            let qk_norm = |s: &str| -> Result<Option<B::Weight>, ModelError> {
                if needs_qk_norm {
                    l.req(&n(s), &[c.head_dim]).map(Some)
                } else {
                    Ok(None)
                }
            };
            let post_norm = |s: &str| -> Result<Option<B::Weight>, ModelError> {
                if gemma {
                    l.req(&n(s), &[e]).map(Some)
                } else {
                    Ok(None)
                }
            };
            layers.push(LayerWeights {
                attn_norm: l.req(&n("attn_norm.weight"), &[e])?,
                wq: l.req(&n("attn_q.weight"), &[e, nq])?,
                wk: l.req(&n("attn_k.weight"), &[e, nk])?,
                wv: l.req(&n("attn_v.weight"), &[e, nv])?,
                bq: l.opt(&n("attn_q.bias"), &[nq])?,
                bk: l.opt(&n("attn_k.bias"), &[nk])?,
                bv: l.opt(&n("attn_v.bias"), &[nv])?,
                q_norm: qk_norm("attn_q_norm.weight")?,
                k_norm: qk_norm("attn_k_norm.weight")?,
                wo: l.req(&n("attn_output.weight"), &[no, e])?,
                bo: l.opt(&n("attn_output.bias"), &[e])?,
                attn_post_norm: post_norm("post_attention_norm.weight")?,
                ffn_norm: l.req(&n("ffn_norm.weight"), &[e])?,
                ffn_gate: l.req(&n("ffn_gate.weight"), &[e, ff])?,
                ffn_up: l.req(&n("ffn_up.weight"), &[e, ff])?,
                ffn_down: l.req(&n("ffn_down.weight"), &[ff, e])?,
                ffn_post_norm: post_norm("post_ffw_norm.weight")?,
            });
        }
        let weights = Weights {
            tok_embd,
            output_norm,
            output,
            output_b,
            rope_freqs,
            layers,
        };
        Ok(Self {
            config: c,
            backend,
            weights,
            _gguf: gguf,
        })
    }

    /// Hyperparameters.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    fn shape_key(&self) -> (usize, usize, usize, usize) {
        let c = &self.config;
        (c.n_layer, c.n_embd, c.n_head_kv * c.head_dim, c.n_vocab)
    }

    /// A fresh state with a KV cache of `n_ctx` positions (`1..=n_ctx_train`).
    pub fn new_state(&self, n_ctx: usize) -> Result<State<B>, ModelError> {
        let c = &self.config;
        if n_ctx == 0 || n_ctx > c.n_ctx_train {
            return Err(ModelError::BadContextSize {
                requested: n_ctx,
                max: c.n_ctx_train,
            });
        }
        let b = &self.backend;
        let n_ub = UBATCH.min(n_ctx);
        let kd = c.n_head_kv * c.head_dim;
        let vd = c.n_head_kv * c.head_dim_v;
        let mul = |a: usize, b2: usize| {
            a.checked_mul(b2)
                .ok_or_else(|| ModelError::BadConfig(format!("buffer size {a} x {b2} overflows")))
        };
        let mut k_cache = Vec::with_capacity(c.n_layer);
        let mut v_cache = Vec::with_capacity(c.n_layer);
        for _ in 0..c.n_layer {
            k_cache.push(b.alloc_kv(mul(n_ctx, kd)?)?);
            v_cache.push(b.alloc_kv(mul(n_ctx, vd)?)?);
        }
        Ok(State {
            n_ctx,
            pos: 0,
            n_ub,
            k_cache,
            v_cache,
            x: b.alloc(mul(n_ub, c.n_embd)?)?,
            xb: b.alloc(mul(n_ub, c.n_embd)?)?,
            q: b.alloc(mul(n_ub, c.n_head * c.head_dim)?)?,
            k: b.alloc(mul(n_ub, kd)?)?,
            v: b.alloc(mul(n_ub, vd)?)?,
            att: b.alloc(mul(n_ub, c.n_head * c.head_dim_v)?)?,
            proj: b.alloc(mul(n_ub, c.n_embd)?)?,
            gate: b.alloc(mul(n_ub, c.n_ff)?)?,
            up: b.alloc(mul(n_ub, c.n_ff)?)?,
            logits_dev: b.alloc(c.n_vocab)?,
            logits_rows: 1,
            logits: Vec::new(),
            shape: self.shape_key(),
            ahead: None,
            fed: None,
            submitted: false,
        })
    }

    /// Runs `tokens` at positions `state.pos()..` and appends them to the
    /// cache; returns logits row-major `[n_out, n_vocab]` where `n_out` is 1
    /// ([`Logits::Last`]) or `tokens.len()` ([`Logits::All`]).
    pub fn forward<'s>(
        &self,
        state: &'s mut State<B>,
        tokens: &[u32],
        logits: Logits,
    ) -> Result<&'s [f32], ModelError> {
        let total = self.run(state, tokens, logits)?;
        Ok(&state.logits[..total])
    }

    /// [`Model::forward`] with [`Logits::Last`] followed by an argmax of the
    /// logits (NaNs ignored, ties → lowest id), computed by the backend
    /// ([`Backend::argmax`]): a device backend reads back one id instead of
    /// a row of logits. Returns the id of greedy decoding's next token
    /// ([`Model::submit`] then [`Model::read_argmax`]).
    pub fn forward_argmax(&self, state: &mut State<B>, tokens: &[u32]) -> Result<u32, ModelError> {
        self.submit(state, tokens)?;
        self.read_argmax(state)
    }

    /// Final logit soft-capping, where the model has it.
    fn softcap(&self, logits: &mut [f32]) {
        if let Some(cap) = self.config.final_logit_softcap {
            for v in logits.iter_mut() {
                *v = (*v / cap).tanh() * cap;
            }
        }
    }

    /// The checks every step makes before touching the backend.
    fn check_tokens(&self, state: &State<B>, tokens: &[u32]) -> Result<(), ModelError> {
        let c = &self.config;
        if state.shape != self.shape_key() {
            return Err(ModelError::StateMismatch);
        }
        if tokens.is_empty() {
            return Err(ModelError::NoTokens);
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= c.n_vocab) {
            return Err(ModelError::TokenOutOfRange {
                token: bad,
                n_vocab: c.n_vocab,
            });
        }
        if state.pos + tokens.len() > state.n_ctx {
            return Err(ModelError::ContextOverflow {
                pos: state.pos,
                n_tokens: tokens.len(),
                n_ctx: state.n_ctx,
            });
        }
        Ok(())
    }

    // --- Pipelined decoding --------------------------------------------
    //
    // `submit` a step, `record_ahead` the next one while the device runs
    // it, then `read_logits` (or `read_argmax`), sample, and `submit` the
    // sampled token: on a device backend the next step then costs the host
    // one submission, and recording it (wgpu: ~6 µs of host time a
    // dispatch, ~250 dispatches a token) overlaps the device's work instead
    // of delaying it. On the CPU `record_ahead` does nothing and `submit`
    // computes the step.

    /// Runs `tokens` at positions `state.pos()..` and appends them to the
    /// cache without waiting for the result: the last position's logits
    /// stay on the device for [`Model::read_logits`] / [`Model::read_argmax`].
    /// A one-token step recorded ahead for this position
    /// ([`Model::record_ahead`]) runs as recorded, reading `tokens`.
    pub fn submit(&self, state: &mut State<B>, tokens: &[u32]) -> Result<(), ModelError> {
        self.check_tokens(state, tokens)?;
        state.submitted = false;
        if let Some((pos, id)) = state.fed.take()
            && pos == state.pos
            && tokens == [id]
        {
            // Already running (`read_argmax_feed`); a step recorded ahead
            // for this position is stale.
            state.ahead = None;
            state.pos += 1;
            state.submitted = true;
            return Ok(());
        }
        if let Some((pos, ticket)) = state.ahead.take()
            && pos == state.pos
            && tokens.len() == 1
            && self.backend.submit_ahead(ticket, tokens)?
        {
            state.pos += 1;
            state.submitted = true;
            return Ok(());
        }
        let n_chunks = tokens.len().div_ceil(state.n_ub);
        for (ci, chunk) in tokens.chunks(state.n_ub).enumerate() {
            if ci + 1 == n_chunks {
                self.record_step(state, StepIds::Host(chunk))?;
            } else {
                self.layers(state, StepIds::Host(chunk), None)?;
            }
            state.pos += chunk.len();
        }
        self.backend.flush()?;
        state.submitted = true;
        Ok(())
    }

    /// Records the one-token step at `state.pos()` before its token is
    /// known, where the backend can hold work (device backends); the next
    /// [`Model::submit`] of one token runs it. Returns whether it did
    /// (false on the CPU, or with no room left in the context).
    pub fn record_ahead(&self, state: &mut State<B>) -> Result<bool, ModelError> {
        if state.shape != self.shape_key() {
            return Err(ModelError::StateMismatch);
        }
        state.ahead = None;
        if state.pos >= state.n_ctx {
            return Ok(false);
        }
        let Some(ticket) = self.backend.begin_ahead()? else {
            return Ok(false);
        };
        let recorded = self.record_step(state, StepIds::Ahead(1));
        let ended = self.backend.end_ahead();
        recorded?;
        ended?;
        state.ahead = Some((state.pos, ticket));
        Ok(true)
    }

    /// Waits for the step [`Model::submit`] ran and returns its last
    /// position's logits `[n_vocab]`.
    pub fn read_logits<'s>(&self, state: &'s mut State<B>) -> Result<&'s [f32], ModelError> {
        if !state.submitted {
            return Err(ModelError::NotSubmitted);
        }
        reset_logits(state, self.config.n_vocab)?;
        self.backend.read(&state.logits_dev, 0, &mut state.logits)?;
        self.softcap(&mut state.logits);
        Ok(&state.logits)
    }

    /// [`Model::read_logits`] reduced to their argmax (as
    /// [`Model::forward_argmax`]): a device backend reads back one id.
    pub fn read_argmax(&self, state: &mut State<B>) -> Result<u32, ModelError> {
        if !state.submitted {
            return Err(ModelError::NotSubmitted);
        }
        if self.config.final_logit_softcap.is_some() {
            // Capping can merge distinct logits into ties: decide on the capped values.
            return Ok(host_argmax(self.read_logits(state)?));
        }
        Ok(self
            .backend
            .argmax(&state.logits_dev, 0, self.config.n_vocab)?)
    }

    /// [`Model::read_argmax`] for greedy decoding, pipelined further: where
    /// a step is recorded ahead for the next position
    /// ([`Model::record_ahead`]) and the backend can, that step starts on
    /// the device with the argmax as its token before the host knows it,
    /// so the device does not wait for the host between steps.
    /// [`Model::submit`] of that token then accepts the running step; any
    /// other call runs as usual (the speculative step's cache row and
    /// logits are overwritten). Until that submit the logits are no longer
    /// readable ([`ModelError::NotSubmitted`]).
    pub fn read_argmax_feed(&self, state: &mut State<B>) -> Result<u32, ModelError> {
        if !state.submitted {
            return Err(ModelError::NotSubmitted);
        }
        let ahead = state.ahead.filter(|&(pos, _)| pos == state.pos);
        let Some((pos, ticket)) = ahead else {
            return self.read_argmax(state);
        };
        if self.config.final_logit_softcap.is_some() {
            return self.read_argmax(state);
        }
        let (id, ran) =
            self.backend
                .argmax_feed_ahead(&state.logits_dev, 0, self.config.n_vocab, ticket)?;
        if ran {
            state.ahead = None;
            state.fed = Some((pos, id));
            state.submitted = false;
        }
        Ok(id)
    }

    /// Records one micro-batch at `state.pos` and its last position's
    /// logits into `logits_dev` row 0.
    fn record_step(&self, s: &mut State<B>, ids: StepIds<'_>) -> Result<(), ModelError> {
        let n = ids.len();
        let n_act = self.layers(s, ids, Some(n - 1..n))?;
        self.record_logits_row(s, n_act, n - 1)
    }

    /// The logits of batch row `row` (`n_act` rows left after the last
    /// layer) into `logits_dev` row 0: final norm, output projection, bias.
    fn record_logits_row(
        &self,
        s: &mut State<B>,
        n_act: usize,
        row: usize,
    ) -> Result<(), ModelError> {
        let c = &self.config;
        let b = &self.backend;
        let w = &self.weights;
        let e = c.n_embd;
        let output = w.output.as_ref().unwrap_or(&w.tok_embd);
        // After the last layer's row selection the row is x's first.
        let first = if n_act == 1 { 0 } else { row };
        if first == 0 {
            // One fused norm + projection (the norm's 8-bit pack shared).
            b.rms_norm_matmul_many(
                &s.x,
                &w.output_norm,
                &mut s.xb,
                &mut [(output, &mut s.logits_dev)],
                1,
                c.rms_eps,
            )?;
        } else {
            b.copy(&s.x, first * e, &mut s.proj, 0, e)?;
            b.rms_norm(&s.proj, &w.output_norm, &mut s.xb, 1, c.rms_eps)?;
            b.matmul(output, &s.xb, &mut s.logits_dev, 1)?;
        }
        if let Some(ob) = &w.output_b {
            b.add_bias(&mut s.logits_dev, ob, 1)?;
        }
        Ok(())
    }

    /// The body of [`Model::forward`]. Returns the number of host logits
    /// written.
    fn run(
        &self,
        state: &mut State<B>,
        tokens: &[u32],
        logits: Logits,
    ) -> Result<usize, ModelError> {
        let c = &self.config;
        self.check_tokens(state, tokens)?;
        // A step recorded ahead (or fed) for this position would now be stale.
        state.ahead = None;
        state.fed = None;
        state.submitted = false;
        let n_out = match logits {
            Logits::Last => 1,
            Logits::All => tokens.len(),
        };
        let total = n_out
            .checked_mul(c.n_vocab)
            .ok_or_else(|| ModelError::BadConfig("logits size overflows".into()))?;
        reset_logits(state, total)?;

        let n_chunks = tokens.len().div_ceil(state.n_ub);
        for (ci, chunk) in tokens.chunks(state.n_ub).enumerate() {
            let first = ci * state.n_ub;
            let out = match logits {
                Logits::All => Some((0..chunk.len(), first)),
                Logits::Last if ci + 1 == n_chunks => Some((chunk.len() - 1..chunk.len(), 0)),
                Logits::Last => None,
            };
            self.ubatch(state, chunk, out)?;
            state.pos += chunk.len();
        }
        Ok(total)
    }

    /// One micro-batch at `state.pos`. `out = Some((rows, dst_row))` computes
    /// logits of batch rows `rows` into host rows starting at `dst_row`.
    fn ubatch(
        &self,
        s: &mut State<B>,
        ids: &[u32],
        out: Option<(std::ops::Range<usize>, usize)>,
    ) -> Result<(), ModelError> {
        let n = ids.len();
        let Some((rows, dst_row)) = out else {
            self.layers(s, StepIds::Host(ids), None)?;
            return Ok(());
        };
        let n_act = self.layers(s, StepIds::Host(ids), Some(rows.clone()))?;
        let c = &self.config;
        let b = &self.backend;
        let w = &self.weights;
        let e = c.n_embd;
        let nv = c.n_vocab;
        if rows.len() == 1 {
            self.record_logits_row(s, n_act, rows.start)?;
            let dst = &mut s.logits[dst_row * nv..(dst_row + 1) * nv];
            b.read(&s.logits_dev, 0, dst)?;
            self.softcap(dst);
            return Ok(());
        }
        // Final norm of the requested rows into xb[0..], then logits in chunks.
        let n_rows = rows.len();
        let first = if n_act < n { 0 } else { rows.start };
        b.copy(&s.x, first * e, &mut s.proj, 0, n_rows * e)?;
        b.rms_norm(&s.proj, &w.output_norm, &mut s.xb, n_rows, c.rms_eps)?;
        let output = w.output.as_ref().unwrap_or(&w.tok_embd);
        let chunk = LOGITS_CHUNK.min(s.n_ub).min(n_rows).max(1);
        if s.logits_rows < chunk {
            let len = chunk.checked_mul(nv).ok_or_else(|| {
                ModelError::BadConfig(format!("buffer size {chunk} x {nv} overflows"))
            })?;
            s.logits_dev = b.alloc(len)?;
            s.logits_rows = chunk;
        }
        let mut r = 0;
        while r < n_rows {
            let m = chunk.min(n_rows - r);
            b.copy(&s.xb, r * e, &mut s.proj, 0, m * e)?;
            b.matmul(output, &s.proj, &mut s.logits_dev, m)?;
            if let Some(ob) = &w.output_b {
                b.add_bias(&mut s.logits_dev, ob, m)?;
            }
            let dst = &mut s.logits[(dst_row + r) * nv..(dst_row + r + m) * nv];
            b.read(&s.logits_dev, 0, dst)?;
            self.softcap(dst);
            r += m;
        }
        Ok(())
    }

    /// Embeds `ids` and runs every layer at `s.pos`. With `out`, the last
    /// layer finishes only the rows whose logits are wanted, moved to the
    /// front when fewer than all; returns how many rows x then holds (0
    /// without `out`: the last layer stops after attention's K/V).
    fn layers(
        &self,
        s: &mut State<B>,
        ids: StepIds<'_>,
        out: Option<std::ops::Range<usize>>,
    ) -> Result<usize, ModelError> {
        let c = &self.config;
        let b = &self.backend;
        let w = &self.weights;
        let n = ids.len();
        let pos0 = s.pos;
        let e = c.n_embd;
        let (hd, hdv) = (c.head_dim, c.head_dim_v);

        match ids {
            StepIds::Host(ids) => b.get_rows(&w.tok_embd, ids, &mut s.x)?,
            StepIds::Ahead(n) => b.get_rows_ahead(&w.tok_embd, n, &mut s.x)?,
        }
        if let Some(sc) = c.embd_scale {
            b.scale(&mut s.x, n * e, sc)?;
        }

        // Rows still being computed (all, until the last layer selects the outputs).
        let mut n_act = n;
        // The previous layer's FFN post-norm weight (gemma3), its output in
        // `proj` not yet normalised and added to x: done together with this
        // layer's attention norm, one op where the backend fuses them (after
        // the loop for the last layer).
        let mut pending_post: Option<&B::Weight> = None;
        for (il, lw) in w.layers.iter().enumerate() {
            // --- attention ---
            let swa = c.is_swa(il);
            let rope = RopeParams {
                kind: c.rope_kind,
                n_dims: c.n_rot,
                freq_base: if swa {
                    c.rope_freq_base_swa
                } else {
                    c.rope_freq_base
                },
                freq_scale: if swa {
                    c.rope_freq_scale_swa
                } else {
                    c.rope_freq_scale
                },
            };
            let ap = AttnParams {
                n_tokens: n,
                pos0,
                n_head: c.n_head,
                n_head_kv: c.n_head_kv,
                head_dim_k: hd,
                head_dim_v: hdv,
                scale: c.kq_scale,
                window: if swa { Some(c.n_swa) } else { None },
            };
            let plain = lw.bq.is_none()
                && lw.bk.is_none()
                && lw.bv.is_none()
                && lw.q_norm.is_none()
                && lw.k_norm.is_none();
            if plain {
                if let Some(pn) = pending_post.take() {
                    b.rms_norm_add(&mut s.x, &mut s.proj, pn, n, c.rms_eps)?;
                }
                // Projections, RoPE and the cache write: one fused op where
                // the backend has one.
                b.rms_norm_qkv_rope_store_kv(
                    &s.x,
                    &lw.attn_norm,
                    &mut s.xb,
                    [&lw.wq, &lw.wk, &lw.wv],
                    [&mut s.q, &mut s.k, &mut s.v],
                    &mut s.k_cache[il],
                    &mut s.v_cache[il],
                    c.rms_eps,
                    &ap,
                    &rope,
                    w.rope_freqs.as_ref(),
                    c.q_prescale,
                )?;
            } else {
                let qkv = &mut [(&lw.wq, &mut s.q), (&lw.wk, &mut s.k), (&lw.wv, &mut s.v)];
                match pending_post.take() {
                    Some(pn) => b.rms_norm_add_matmul_many(
                        &mut s.x,
                        &mut s.proj,
                        pn,
                        &lw.attn_norm,
                        &mut s.xb,
                        qkv,
                        n,
                        c.rms_eps,
                    )?,
                    None => {
                        b.rms_norm_matmul_many(&s.x, &lw.attn_norm, &mut s.xb, qkv, n, c.rms_eps)?
                    }
                }
                if let Some(bq) = &lw.bq {
                    b.add_bias(&mut s.q, bq, n)?;
                }
                if let Some(bk) = &lw.bk {
                    b.add_bias(&mut s.k, bk, n)?;
                }
                if let Some(bv) = &lw.bv {
                    b.add_bias(&mut s.v, bv, n)?;
                }
                // Per-head q/k norms (Qwen3, Gemma 3) go with RoPE when both
                // are there (one fused op where the backend has one).
                let qk_norm = match (&lw.q_norm, &lw.k_norm) {
                    (Some(qn), Some(kn)) => Some((qn, kn, c.rms_eps)),
                    (qn, kn) => {
                        if let Some(qn) = qn {
                            b.rms_norm_inplace(&mut s.q, qn, n * c.n_head, c.rms_eps)?;
                        }
                        if let Some(kn) = kn {
                            b.rms_norm_inplace(&mut s.k, kn, n * c.n_head_kv, c.rms_eps)?;
                        }
                        None
                    }
                };
                b.rope_store_kv(
                    &mut s.q,
                    &mut s.k,
                    &s.v,
                    &mut s.k_cache[il],
                    &mut s.v_cache[il],
                    &ap,
                    &rope,
                    w.rope_freqs.as_ref(),
                    c.q_prescale,
                    qk_norm,
                )?;
            }
            b.attention(&s.q, &s.k_cache[il], &s.v_cache[il], &mut s.att, &ap)?;
            // Without a bias or post-norm the projection adds straight into
            // the residual stream (one fused op where the backend has one).
            let fused_o = lw.bo.is_none() && lw.attn_post_norm.is_none();
            if fused_o {
                b.matmul_add(&lw.wo, &s.att, &mut s.x, &mut s.proj, n)?;
            } else {
                b.matmul(&lw.wo, &s.att, &mut s.proj, n)?;
            }
            if let Some(bo) = &lw.bo {
                b.add_bias(&mut s.proj, bo, n)?;
            }
            if il + 1 == c.n_layer {
                // Like llama.cpp's `inp_out_ids`: the rest of the last layer only
                // runs on the rows whose logits are wanted.
                match &out {
                    None => return Ok(0),
                    Some(rows) if rows.len() < n => {
                        let m = rows.len();
                        if !fused_o {
                            b.copy(&s.proj, rows.start * e, &mut s.xb, 0, m * e)?;
                            b.copy(&s.xb, 0, &mut s.proj, 0, m * e)?;
                        }
                        b.copy(&s.x, rows.start * e, &mut s.xb, 0, m * e)?;
                        b.copy(&s.xb, 0, &mut s.x, 0, m * e)?;
                        n_act = m;
                    }
                    Some(_) => {}
                }
            }
            let n = n_act;
            // --- feed-forward (its norm fused with the attention post-norm
            // where the backend can) ---
            let ffn = &mut [(&lw.ffn_gate, &mut s.gate), (&lw.ffn_up, &mut s.up)];
            match (&lw.attn_post_norm, fused_o) {
                (Some(pn), false) => b.rms_norm_add_matmul_many(
                    &mut s.x,
                    &mut s.proj,
                    pn,
                    &lw.ffn_norm,
                    &mut s.xb,
                    ffn,
                    n,
                    c.rms_eps,
                )?,
                (None, false) => {
                    b.add(&mut s.x, &s.proj, n * e)?;
                    b.rms_norm_matmul_many(&s.x, &lw.ffn_norm, &mut s.xb, ffn, n, c.rms_eps)?;
                }
                (_, true) => {
                    b.rms_norm_matmul_many(&s.x, &lw.ffn_norm, &mut s.xb, ffn, n, c.rms_eps)?
                }
            }
            let act = if c.arch == Arch::Gemma3 {
                GluKind::GeGlu
            } else {
                GluKind::SwiGlu
            };
            b.glu(&mut s.gate, &s.up, n, c.n_ff, act)?;
            match &lw.ffn_post_norm {
                None => b.matmul_add(&lw.ffn_down, &s.gate, &mut s.x, &mut s.proj, n)?,
                Some(pn) => {
                    b.matmul(&lw.ffn_down, &s.gate, &mut s.proj, n)?;
                    pending_post = Some(pn);
                }
            }
        }
        // The last layer's FFN post-norm has no attention norm to go with.
        if let Some(pn) = pending_post {
            b.rms_norm_add(&mut s.x, &mut s.proj, pn, n_act, c.rms_eps)?;
        }

        Ok(n_act)
    }
}

/// Empties the state's host logits and sizes them to `total` zeros.
fn reset_logits<B: Backend>(state: &mut State<B>, total: usize) -> Result<(), ModelError> {
    state.logits.clear();
    state.logits.try_reserve_exact(total).map_err(|_| {
        ModelError::Tensor(zeta_tensor::TensorError::Alloc {
            bytes: total as u128 * 4,
        })
    })?;
    state.logits.resize(total, 0.0);
    Ok(())
}

/// Where a step's token ids come from.
#[derive(Debug, Clone, Copy)]
enum StepIds<'a> {
    /// Known now.
    Host(&'a [u32]),
    /// This many, given at [`Backend::submit_ahead`].
    Ahead(usize),
}

impl StepIds<'_> {
    fn len(&self) -> usize {
        match self {
            StepIds::Host(ids) => ids.len(),
            StepIds::Ahead(n) => *n,
        }
    }
}

/// Index of the largest non-NaN value (ties → lowest; 0 when all are NaN),
/// as [`Backend::argmax`].
fn host_argmax(l: &[f32]) -> u32 {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in l.iter().enumerate() {
        if !v.is_nan() && best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    // Token ids fit 32 bits (the vocabulary size was checked at load).
    best.map_or(0, |(i, _)| i as u32)
}
