//! zeta-engine: the public API — load a model (by path or models.lock name),
//! open sessions with their own KV caches, generate streaming text.
//!
//! This is the one crate that picks a compute backend. Data flow:
//!
//! ```text
//! name/path ──store──▶ GGUF file ──mmap──▶ Gguf ──▶ ModelConfig + weights (Model<B>)
//!                                              └──▶ Tokenizer (+ chat template)
//! prompt ──tokenize──▶ ids ──Session::generate──▶ Model::forward ──logits──▶ Sampler ──▶ id
//!                                                   ▲ KV cache (State)             │
//!                                                   └─────────── next id ◀─────────┘
//! id ──StreamDecoder──▶ UTF-8 pieces ──StopMatcher──▶ text the caller may print
//! ```
//!
//! ```no_run
//! use zeta_engine::{Engine, LoadOptions, GenerateParams};
//! let engine = Engine::load("smollm2-135m-instruct-q4_1", &LoadOptions::default())?;
//! let mut session = engine.session(None)?;
//! let prompt = engine.tokenize_prompt("The capital of France is")?;
//! let mut generation = session.generate(&prompt, GenerateParams::default())?;
//! for step in &mut generation {
//!     print!("{}", step?.text);
//! }
//! # Ok::<(), zeta_engine::EngineError>(())
//! ```

pub mod chat;
pub mod error;
pub mod generate;
pub mod perplexity;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use chat::{ChatMessage, ChatTemplate};
pub use error::{EngineError, Result};
pub use generate::{FinishReason, GenerateParams, Generation, Step, Timings};
pub use perplexity::{PerplexityOptions, PerplexityResult};
pub use zeta_model::tokenizer::Tokenizer;
pub use zeta_model::{Arch, ModelConfig};
pub use zeta_sampler::SamplerConfig;
pub use zeta_wgpu::KernelTime;

use zeta_gguf::Gguf;
use zeta_model::{Logits, Model, ModelError, State};
use zeta_tensor::CpuBackend;
use zeta_wgpu::{GpuBackend, GpuContext, WgpuError};

/// Default context when none is asked for: the trained length, capped here.
pub const DEFAULT_CTX_CAP: usize = 8192;

/// Which compute backend runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// The multi-threaded CPU backend (always available).
    #[default]
    Cpu,
    /// The wgpu backend (Vulkan/Metal/DX12; `ZETA_ADAPTER` picks the adapter).
    Gpu,
}

impl std::str::FromStr for BackendKind {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "gpu" | "wgpu" => Ok(Self::Gpu),
            other => Err(EngineError::InvalidParameter(format!(
                "unknown backend `{other}` (expected `cpu` or `gpu`)"
            ))),
        }
    }
}

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Compute backend.
    pub backend: BackendKind,
    /// CPU threads (`None`: all available cores; ignored by the GPU backend).
    pub threads: Option<usize>,
    /// Do not download a missing models.lock model (error instead).
    pub offline: bool,
}

/// The model on the backend chosen at load time.
#[derive(Debug)]
enum Loaded {
    Cpu(Box<Model<CpuBackend>>),
    Gpu(Box<Model<GpuBackend>>),
}

/// A session's KV cache and scratch buffers, on the engine's backend.
#[derive(Debug)]
enum SessionState {
    Cpu(Box<State<CpuBackend>>),
    Gpu(Box<State<GpuBackend>>),
}

impl Loaded {
    fn config(&self) -> &ModelConfig {
        match self {
            Self::Cpu(m) => m.config(),
            Self::Gpu(m) => m.config(),
        }
    }

    fn backend_name(&self) -> &'static str {
        match self {
            Self::Cpu(_) => "cpu",
            Self::Gpu(_) => "gpu",
        }
    }

    fn new_state(&self, n_ctx: usize) -> Result<SessionState> {
        Ok(match self {
            Self::Cpu(m) => SessionState::Cpu(Box::new(m.new_state(n_ctx)?)),
            Self::Gpu(m) => SessionState::Gpu(Box::new(m.new_state(n_ctx)?)),
        })
    }

    fn forward<'s>(
        &self,
        state: &'s mut SessionState,
        tokens: &[u32],
        logits: Logits,
    ) -> Result<&'s [f32]> {
        Ok(match (self, state) {
            (Self::Cpu(m), SessionState::Cpu(s)) => m.forward(s, tokens, logits)?,
            (Self::Gpu(m), SessionState::Gpu(s)) => m.forward(s, tokens, logits)?,
            _ => return Err(ModelError::StateMismatch.into()),
        })
    }
}

/// Calls a `Model` method on the matching (model, state) pair.
macro_rules! on_model {
    ($loaded:expr, $state:expr, |$m:ident, $s:ident| $body:expr) => {
        match ($loaded, $state) {
            (Loaded::Cpu($m), SessionState::Cpu($s)) => $body,
            (Loaded::Gpu($m), SessionState::Gpu($s)) => $body,
            _ => return Err(ModelError::StateMismatch.into()),
        }
    };
}

impl Loaded {
    fn submit(&self, state: &mut SessionState, tokens: &[u32]) -> Result<()> {
        on_model!(self, state, |m, s| m.submit(s, tokens)?);
        Ok(())
    }

    fn record_ahead(&self, state: &mut SessionState) -> Result<bool> {
        Ok(on_model!(self, state, |m, s| m.record_ahead(s)?))
    }

    fn read_logits<'s>(&self, state: &'s mut SessionState) -> Result<&'s [f32]> {
        Ok(on_model!(self, state, |m, s| m.read_logits(s)?))
    }

    fn read_argmax(&self, state: &mut SessionState) -> Result<u32> {
        Ok(on_model!(self, state, |m, s| m.read_argmax(s)?))
    }

    fn read_argmax_feed(&self, state: &mut SessionState) -> Result<u32> {
        Ok(on_model!(self, state, |m, s| m.read_argmax_feed(s)?))
    }
}

impl SessionState {
    fn n_ctx(&self) -> usize {
        match self {
            Self::Cpu(s) => s.n_ctx(),
            Self::Gpu(s) => s.n_ctx(),
        }
    }

    fn truncate(&mut self, pos: usize) {
        match self {
            Self::Cpu(s) => s.truncate(pos),
            Self::Gpu(s) => s.truncate(pos),
        }
    }
}

/// Describes the GPU adapter `--backend gpu` would use (the best one, or
/// `ZETA_ADAPTER`'s), with its enabled features and limits.
/// No adapter: [`EngineError::BackendUnavailable`].
pub fn gpu_info() -> Result<zeta_wgpu::GpuInfo> {
    Ok(GpuContext::new().map_err(gpu_error)?.info().clone())
}

/// Every adapter wgpu can see, best first (may be empty).
pub fn gpu_adapters() -> Vec<zeta_wgpu::GpuInfo> {
    zeta_wgpu::list_adapters()
}

/// "No adapter" is [`EngineError::BackendUnavailable`]; other GPU failures
/// keep their type.
fn gpu_error(e: WgpuError) -> EngineError {
    match e {
        WgpuError::NoAdapter { .. } => EngineError::BackendUnavailable(format!("gpu: {e}")),
        other => EngineError::Gpu(other),
    }
}

/// The distinct types of the file's matrices (the weights the GPU kernels
/// dequantize) and their distinct row lengths, in file order.
fn matrix_types(gguf: &Gguf) -> (Vec<zeta_gguf::GgmlType>, Vec<u64>) {
    let (mut types, mut cols) = (Vec::new(), Vec::new());
    for t in gguf.tensors().iter().filter(|t| t.dims.len() >= 2) {
        if !types.contains(&t.ggml_type) {
            types.push(t.ggml_type);
        }
        if !cols.contains(&t.row_len()) {
            cols.push(t.row_len());
        }
    }
    (types, cols)
}

/// A loaded model: weights (memory-mapped, or uploaded to the GPU),
/// tokenizer and chat template. Sessions borrow it; any number of sessions
/// can share one engine.
pub struct Engine {
    path: PathBuf,
    gguf: Arc<Gguf>,
    model: Loaded,
    tokenizer: Tokenizer,
    chat_template: Option<String>,
    load_time: Duration,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("path", &self.path)
            .field("arch", &self.model.config().arch)
            .field("backend", &self.model.backend_name())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Loads a model by path or models.lock name (fetched and verified on
    /// first use unless `opts.offline`).
    pub fn load(name_or_path: &str, opts: &LoadOptions) -> Result<Self> {
        Self::load_with_progress(name_or_path, opts, &mut |_| {})
    }

    /// [`Engine::load`] with a download progress callback.
    pub fn load_with_progress(
        name_or_path: &str,
        opts: &LoadOptions,
        progress: &mut dyn FnMut(store::Progress<'_>),
    ) -> Result<Self> {
        let path = store::resolve(name_or_path, !opts.offline, progress)?;
        Self::load_path(&path, opts)
    }

    /// Loads a GGUF file from a path.
    pub fn load_path(path: &Path, opts: &LoadOptions) -> Result<Self> {
        let start = Instant::now();
        if opts.threads == Some(0) {
            return Err(EngineError::InvalidParameter(
                "threads must be at least 1".into(),
            ));
        }
        let gguf = Arc::new(Gguf::open(path)?);
        let tokenizer = Tokenizer::from_gguf(&gguf)?;
        let model = match opts.backend {
            BackendKind::Cpu => {
                let backend = match opts.threads {
                    Some(n) => CpuBackend::with_threads(n),
                    None => CpuBackend::new(),
                };
                Loaded::Cpu(Box::new(Model::load(Arc::clone(&gguf), backend)?))
            }
            BackendKind::Gpu => {
                let backend = GpuBackend::new().map_err(gpu_error)?;
                let model = Model::load(Arc::clone(&gguf), backend)?;
                // Compile every kernel the model will use now, so that the
                // first token does not pay for pipeline creation.
                let (types, cols) = matrix_types(&gguf);
                model
                    .backend()
                    .precompile(&types, &cols)
                    .map_err(ModelError::from)?;
                Loaded::Gpu(Box::new(model))
            }
        };
        let chat_template = gguf
            .get("tokenizer.chat_template")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        Ok(Self {
            path: path.to_path_buf(),
            gguf,
            model,
            tokenizer,
            chat_template,
            load_time: start.elapsed(),
        })
    }

    /// The GGUF file the model came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed GGUF file.
    pub fn gguf(&self) -> &Gguf {
        &self.gguf
    }

    /// The backend the model runs on.
    pub fn backend(&self) -> BackendKind {
        match self.model {
            Loaded::Cpu(_) => BackendKind::Cpu,
            Loaded::Gpu(_) => BackendKind::Gpu,
        }
    }

    /// The GPU adapter the model runs on (`None` on the CPU backend).
    pub fn gpu_info(&self) -> Option<&zeta_wgpu::GpuInfo> {
        match &self.model {
            Loaded::Cpu(_) => None,
            Loaded::Gpu(m) => Some(m.backend().context().info()),
        }
    }

    /// Bytes of GPU buffers (weights, KV caches, activations, scratch) the
    /// model and its sessions hold now (`None` on the CPU backend).
    pub fn gpu_allocated_bytes(&self) -> Option<u64> {
        match &self.model {
            Loaded::Cpu(_) => None,
            Loaded::Gpu(m) => Some(m.backend().context().allocated_bytes()),
        }
    }

    /// The most [`Engine::gpu_allocated_bytes`] has been since load (`None`
    /// on the CPU backend).
    pub fn gpu_peak_bytes(&self) -> Option<u64> {
        match &self.model {
            Loaded::Cpu(_) => None,
            Loaded::Gpu(m) => Some(m.backend().context().peak_allocated_bytes()),
        }
    }

    /// Starts timing every GPU kernel with timestamp queries (see
    /// [`zeta_wgpu::GpuBackend::start_profile`]), or with `passes` whole
    /// compute passes, which run as they do unprofiled (see
    /// [`zeta_wgpu::GpuBackend::start_pass_profile`]); false when the backend
    /// is the CPU's or the adapter lacks timestamp queries.
    pub fn start_gpu_profile(&self, passes: bool) -> Result<bool, EngineError> {
        match &self.model {
            Loaded::Cpu(_) => Ok(false),
            Loaded::Gpu(m) => {
                let b = m.backend();
                let started = if passes {
                    b.start_pass_profile()
                } else {
                    b.start_profile()
                };
                Ok(started.map_err(zeta_model::ModelError::from)?)
            }
        }
    }

    /// Stops profiling; GPU time per kernel since [`Engine::start_gpu_profile`],
    /// largest first (`None` when not profiling).
    pub fn take_gpu_profile(&self) -> Result<Option<Vec<KernelTime>>, EngineError> {
        match &self.model {
            Loaded::Cpu(_) => Ok(None),
            Loaded::Gpu(m) => Ok(m
                .backend()
                .take_profile()
                .map_err(zeta_model::ModelError::from)?),
        }
    }

    /// Hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        self.model.config()
    }

    /// The tokenizer built from the GGUF vocabulary.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Time spent in [`Engine::load_path`] (mapping, parsing, weight setup).
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// The default context for this model: its trained length capped at
    /// [`DEFAULT_CTX_CAP`].
    pub fn default_ctx(&self) -> usize {
        self.config().n_ctx_train.clamp(1, DEFAULT_CTX_CAP)
    }

    /// Checks a requested context size against the trained length.
    pub fn check_ctx(&self, n_ctx: Option<usize>) -> Result<usize> {
        let max = self.config().n_ctx_train.max(1);
        let n = n_ctx.unwrap_or_else(|| self.default_ctx());
        if n == 0 || n > max {
            return Err(EngineError::BadContext { requested: n, max });
        }
        Ok(n)
    }

    /// Bytes the KV cache takes for `n_ctx` tokens.
    pub fn kv_cache_bytes(&self, n_ctx: usize) -> u64 {
        self.config().kv_cache_bytes(n_ctx)
    }

    /// Tokenizes a plain prompt the way llama.cpp does by default: BOS when
    /// the model's metadata asks for it, no special-token parsing.
    pub fn tokenize_prompt(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.tokenizer.encode(text, true, false)?)
    }

    /// The chat template: the GGUF's `tokenizer.chat_template`, or a
    /// built-in one for the architecture when the file has none (Gemma's
    /// turn format for `gemma3`, ChatML otherwise).
    pub fn chat_template(&self) -> Result<ChatTemplate> {
        let src = self
            .chat_template
            .as_deref()
            .unwrap_or_else(|| chat::builtin_template(self.config().arch));
        ChatTemplate::new(src, &self.tokenizer)
    }

    /// Renders `messages` with the chat template and tokenizes the result
    /// (special tokens parsed; BOS added only if the template did not).
    pub fn tokenize_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        let text = self.chat_template()?.render(messages, true)?;
        chat::tokenize_rendered(&self.tokenizer, &text)
    }

    /// Opens a session with its own KV cache of `n_ctx` tokens (default:
    /// [`Engine::default_ctx`]).
    pub fn session(&self, n_ctx: Option<usize>) -> Result<Session<'_>> {
        let n_ctx = self.check_ctx(n_ctx)?;
        let state = self.model.new_state(n_ctx)?;
        Ok(Session {
            engine: self,
            state,
            cached: Vec::new(),
        })
    }

    pub(crate) fn model(&self) -> &Loaded {
        &self.model
    }
}

/// One conversation's state: a KV cache and the tokens it holds.
pub struct Session<'e> {
    engine: &'e Engine,
    state: SessionState,
    /// The tokens whose keys/values are in the cache, in order.
    cached: Vec<u32>,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("n_ctx", &self.state.n_ctx())
            .field("cached", &self.cached.len())
            .finish_non_exhaustive()
    }
}

impl<'e> Session<'e> {
    /// The engine this session runs on.
    pub fn engine(&self) -> &'e Engine {
        self.engine
    }

    /// Context size in tokens.
    pub fn n_ctx(&self) -> usize {
        self.state.n_ctx()
    }

    /// Tokens currently in the KV cache.
    pub fn cached_tokens(&self) -> &[u32] {
        &self.cached
    }

    /// Drops everything from the KV cache.
    pub fn reset(&mut self) {
        self.state.truncate(0);
        self.cached.clear();
    }

    /// Starts generating after `prompt`. The longest prefix of `prompt`
    /// already in the cache is reused (multi-turn chat costs only the new
    /// tokens). The returned iterator yields one [`Step`] per token.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        params: GenerateParams,
    ) -> Result<Generation<'_, 'e>> {
        Generation::new(self, prompt, params)
    }

    /// Runs `tokens` through the model appending them to the cache and
    /// returns the logits of every position (`[tokens.len(), n_vocab]`).
    /// Used by perplexity and tests.
    pub fn eval_all(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        self.check_fits(tokens.len())?;
        let logits = self
            .engine
            .model()
            .forward(&mut self.state, tokens, Logits::All)?;
        self.cached.extend_from_slice(tokens);
        Ok(logits)
    }

    pub(crate) fn check_fits(&self, extra: usize) -> Result<()> {
        let n_ctx = self.state.n_ctx();
        let total = self.cached.len() + extra;
        if total > n_ctx {
            return Err(EngineError::PromptTooLong {
                prompt: total,
                n_ctx,
                max: self.engine.config().n_ctx_train,
            });
        }
        Ok(())
    }

    /// Makes the cache hold exactly `prompt[..keep]` where `keep` is the
    /// common prefix with what is cached, leaving at least one prompt token
    /// to evaluate (its logits are needed). Returns `keep`.
    pub(crate) fn reuse_prefix(&mut self, prompt: &[u32]) -> usize {
        let common = self
            .cached
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        let keep = common.min(prompt.len().saturating_sub(1));
        self.state.truncate(keep);
        self.cached.truncate(keep);
        keep
    }

    /// Starts evaluating `tokens` (appended to the cache) without waiting;
    /// [`Session::read_logits`] / [`Session::read_argmax`] then give the
    /// last position's logits. With [`Session::record_ahead`] between the
    /// two, a device backend records the next one-token step while it runs
    /// this one (pipelined decoding: see `zeta_model::Model::submit`).
    pub fn submit(&mut self, tokens: &[u32]) -> Result<()> {
        self.check_fits(tokens.len())?;
        self.engine.model().submit(&mut self.state, tokens)?;
        self.cached.extend_from_slice(tokens);
        Ok(())
    }

    /// Records the next one-token step ahead of its token where the backend
    /// can (the GPU); the next one-token [`Session::submit`] then only
    /// submits it. Returns whether it did.
    pub fn record_ahead(&mut self) -> Result<bool> {
        self.engine.model().record_ahead(&mut self.state)
    }

    /// Waits for the last [`Session::submit`] and returns its last
    /// position's logits.
    pub fn read_logits(&mut self) -> Result<&[f32]> {
        self.engine.model().read_logits(&mut self.state)
    }

    /// Waits for the last [`Session::submit`] and returns the argmax of its
    /// last position's logits (on a device backend, computed there).
    pub fn read_argmax(&mut self) -> Result<u32> {
        self.engine.model().read_argmax(&mut self.state)
    }

    /// [`Session::read_argmax`] for greedy decoding after
    /// [`Session::record_ahead`]: the step recorded ahead starts on the
    /// device with the argmax as its token before it comes back, and the
    /// next [`Session::submit`] of that token only accepts it (the device
    /// runs step after step without waiting for the host). Until then the
    /// last logits are not readable. Submitting another token, or
    /// anything else, simply runs that instead.
    pub fn read_argmax_feed(&mut self) -> Result<u32> {
        self.engine.model().read_argmax_feed(&mut self.state)
    }

    /// Evaluates `tokens` and returns the last position's logits.
    pub(crate) fn eval_last(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        self.check_fits(tokens.len())?;
        let logits = self
            .engine
            .model()
            .forward(&mut self.state, tokens, Logits::Last)?;
        self.cached.extend_from_slice(tokens);
        Ok(logits)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// SmolLM2 loaded on the GPU, or `None` after a loud skip (no model
    /// unless `ZETA_REQUIRE_MODELS=1`, no adapter unless `ZETA_REQUIRE_GPU=1`).
    fn gpu_smollm2() -> Option<Engine> {
        let dir = std::env::var_os("ZETA_MODELS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/zeta/models")
            });
        let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
        if !path.is_file() {
            assert_ne!(
                std::env::var("ZETA_REQUIRE_MODELS").as_deref(),
                Ok("1"),
                "ZETA_REQUIRE_MODELS=1 but {} is missing",
                path.display()
            );
            eprintln!("SKIP: model {} not found", path.display());
            return None;
        }
        let opts = LoadOptions {
            backend: BackendKind::Gpu,
            ..LoadOptions::default()
        };
        match Engine::load_path(&path, &opts) {
            Ok(e) => Some(e),
            Err(EngineError::BackendUnavailable(msg)) => {
                assert_ne!(
                    std::env::var("ZETA_REQUIRE_GPU").as_deref(),
                    Ok("1"),
                    "ZETA_REQUIRE_GPU=1 but the GPU backend is unavailable: {msg}"
                );
                eprintln!("SKIP: {msg}");
                None
            }
            Err(e) => panic!("GPU load failed: {e}"),
        }
    }

    /// Loading on the GPU compiles every pipeline that prefill, decode,
    /// greedy (device argmax) and sampled generation use: none is created
    /// after load.
    #[test]
    fn gpu_load_precompiles_the_kernels_generation_uses() {
        let Some(engine) = gpu_smollm2() else { return };
        let Loaded::Gpu(m) = &engine.model else {
            panic!("not on the GPU")
        };
        let ctx = m.backend().context();
        let compiled = ctx.cached_pipelines();
        eprintln!(
            "load {:?}, {compiled} pipelines compiled at load",
            engine.load_time()
        );
        // A prompt long enough for the tiled prefill matmul.
        let prompt = engine
            .tokenize_prompt("Once upon a time, in a small village by the sea, there lived")
            .unwrap();
        assert!(prompt.len() >= zeta_wgpu::TILED_MATMUL_MIN_TOKENS as usize);
        for sampler in [SamplerConfig::greedy(), SamplerConfig::default()] {
            let mut session = engine.session(Some(128)).unwrap();
            let params = GenerateParams {
                max_tokens: Some(3),
                sampler,
                ignore_eos: true,
                ..GenerateParams::default()
            };
            let mut g = session.generate(&prompt, params).unwrap();
            g.collect_text().unwrap();
            eprintln!(
                "time to first token {:?} ({} prompt tokens)",
                g.timings().time_to_first_token,
                prompt.len()
            );
            // The small-batch (< 8 tokens) matmul.
            session.eval_all(&prompt[..2]).unwrap();
        }
        assert!(compiled > 0, "nothing was compiled at load");
        // GPU memory: at least the weights stay allocated; sessions' KV
        // caches and scratch raised the peak and were freed with them.
        let (now, peak) = (
            engine.gpu_allocated_bytes().unwrap(),
            engine.gpu_peak_bytes().unwrap(),
        );
        eprintln!("GPU bytes: {now} now, {peak} peak");
        let weights: u64 = engine
            .gguf()
            .tensors()
            .iter()
            .map(|t| t.row_bytes() * t.n_rows())
            .sum();
        assert!(
            now >= weights / 2,
            "{now} bytes for {weights} bytes of weights"
        );
        assert!(
            peak >= now + engine.kv_cache_bytes(128),
            "peak {peak}, now {now}"
        );
        assert_eq!(
            ctx.cached_pipelines(),
            compiled,
            "pipelines were compiled after load"
        );
    }
}
