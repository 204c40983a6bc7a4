//! Arguments shared by the generation commands (model loading, sampling).

use anyhow::{Context, Result};
use clap::Args;
use zeta_engine::{BackendKind, Engine, LoadOptions, SamplerConfig};

/// The model used when none is named.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct-q4_1";

/// How to load the model.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Compute backend: `cpu` or `gpu` (wgpu: Vulkan, Metal, DX12).
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// CPU threads (default: all cores).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// Context size in tokens (default: the trained length, at most 8192).
    #[arg(long = "ctx", short = 'c')]
    pub ctx: Option<usize>,
    /// Never download: fail if a models.lock model is not in the store.
    #[arg(long)]
    pub offline: bool,
}

impl LoadArgs {
    /// Loads `model` (path or models.lock name, fetched on first use with a
    /// progress bar on stderr unless `--offline`).
    pub fn load(&self, model: &str) -> Result<Engine> {
        let backend: BackendKind = self.backend.parse()?;
        let opts = LoadOptions {
            backend,
            threads: self.threads,
            offline: self.offline,
        };
        let path = if self.offline {
            zeta_engine::store::resolve(model, false, &mut |_| {})?
        } else {
            crate::model::resolve(model)?
        };
        Engine::load_path(&path, &opts)
            .with_context(|| format!("cannot load model `{}`", path.display()))
    }
}

/// Sampling settings (llama.cpp's defaults).
#[derive(Debug, Args)]
pub struct SamplingArgs {
    /// Temperature; 0 means greedy.
    #[arg(long, default_value_t = 0.8)]
    pub temp: f32,
    /// Top-k (0 disables).
    #[arg(long = "top-k", default_value_t = 40)]
    pub top_k: i32,
    /// Top-p / nucleus (1.0 disables).
    #[arg(long = "top-p", default_value_t = 0.95)]
    pub top_p: f32,
    /// Min-p (0 disables).
    #[arg(long = "min-p", default_value_t = 0.05)]
    pub min_p: f32,
    /// Locally typical sampling (1.0 disables).
    #[arg(long = "typical-p", default_value_t = 1.0)]
    pub typical_p: f32,
    /// Repetition penalty (1.0 disables).
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Window of recent tokens the penalties look at.
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Presence penalty.
    #[arg(long = "presence-penalty", default_value_t = 0.0)]
    pub presence_penalty: f32,
    /// Frequency penalty.
    #[arg(long = "frequency-penalty", default_value_t = 0.0)]
    pub frequency_penalty: f32,
    /// RNG seed (same seed, same text).
    #[arg(long, short = 's')]
    pub seed: Option<u64>,
    /// Bias a token's logit: `ID=BIAS` (repeatable; `ID=-inf` bans it).
    #[arg(long = "logit-bias", value_parser = parse_bias)]
    pub logit_bias: Vec<(u32, f32)>,
}

fn parse_bias(s: &str) -> std::result::Result<(u32, f32), String> {
    let (id, bias) = s
        .split_once('=')
        .ok_or_else(|| format!("expected ID=BIAS, got `{s}`"))?;
    let id = id
        .trim()
        .parse::<u32>()
        .map_err(|e| format!("bad token id `{id}`: {e}"))?;
    let bias = bias
        .trim()
        .parse::<f32>()
        .map_err(|e| format!("bad bias `{bias}`: {e}"))?;
    if bias.is_nan() {
        return Err("bias must not be NaN".into());
    }
    Ok((id, bias))
}

impl SamplingArgs {
    /// The sampler configuration these flags describe.
    pub fn config(&self) -> SamplerConfig {
        let mut c = SamplerConfig {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            typical_p: self.typical_p,
            repeat_penalty: self.repeat_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            penalty_last_n: self.repeat_last_n,
            logit_bias: self.logit_bias.clone(),
            ..SamplerConfig::default()
        };
        if let Some(seed) = self.seed {
            c.seed = seed;
        }
        c
    }
}
