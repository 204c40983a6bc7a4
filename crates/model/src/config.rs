//! [`ModelConfig`]: hyperparameters read from GGUF metadata
//! (`{arch}.embedding_length`, `.attention.head_count`, …), with llama.cpp's
//! defaults (`llama_model_base::load_hparams` and the per-arch
//! `load_arch_hparams`).

use zeta_gguf::{Gguf, Value};
use zeta_tensor::RopeKind;

use crate::error::ModelError;

/// Largest default context (`n_ctx` when the caller does not ask).
pub const DEFAULT_MAX_CTX: usize = 8192;

/// Supported architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// `llama` (Llama 1-3, SmolLM, Mistral-style dense models).
    Llama,
    /// `qwen2`: llama + q/k/v biases, NeoX RoPE.
    Qwen2,
    /// `qwen3`: llama + per-head q/k RMSNorm, NeoX RoPE.
    Qwen3,
    /// `gemma3`: scaled embeddings, q/k norms, post-norms, GELU FFN, sliding windows.
    Gemma3,
}

impl Arch {
    /// Parses `general.architecture`.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "llama" => Self::Llama,
            "qwen2" => Self::Qwen2,
            "qwen3" => Self::Qwen3,
            "gemma3" => Self::Gemma3,
            _ => return None,
        })
    }

    /// The GGUF architecture name (metadata key prefix).
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Gemma3 => "gemma3",
        }
    }

    /// ggml rope type: llama uses NORMAL, the others NEOX (`llama_model_rope_type`).
    pub fn rope_kind(self) -> RopeKind {
        match self {
            Self::Llama => RopeKind::Normal,
            Self::Qwen2 | Self::Qwen3 | Self::Gemma3 => RopeKind::Neox,
        }
    }
}

/// Model hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Architecture.
    pub arch: Arch,
    /// Vocabulary size (rows of `token_embd`).
    pub n_vocab: usize,
    /// Trained context length (`{arch}.context_length`).
    pub n_ctx_train: usize,
    /// Hidden size.
    pub n_embd: usize,
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_head_kv: usize,
    /// Key/query head size (`attention.key_length`, default `n_embd / n_head`).
    pub head_dim: usize,
    /// Value head size (`attention.value_length`, default `n_embd / n_head`).
    pub head_dim_v: usize,
    /// FFN hidden size.
    pub n_ff: usize,
    /// Rotated dimensions per head (`rope.dimension_count`, default `head_dim`).
    pub n_rot: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// RoPE pairing order.
    pub rope_kind: RopeKind,
    /// RoPE base of full-attention layers.
    pub rope_freq_base: f32,
    /// RoPE linear scale of full-attention layers (`1 / rope.scaling.factor`).
    pub rope_freq_scale: f32,
    /// RoPE base of sliding-window layers (gemma3: `rope.freq_base_swa`, default 10000).
    pub rope_freq_base_swa: f32,
    /// RoPE scale of sliding-window layers.
    pub rope_freq_scale_swa: f32,
    /// Sliding window size (0 = no sliding-window layers).
    pub n_swa: usize,
    /// Per layer: does it use the sliding window?
    pub swa_layers: Vec<bool>,
    /// Multiplier of `q·k` inside attention.
    pub kq_scale: f32,
    /// Scale applied to Q before attention (gemma3's `f_attention_scale`), if any.
    pub q_prescale: Option<f32>,
    /// Scale applied to token embeddings (gemma3: `sqrt(n_embd)`), if any.
    pub embd_scale: Option<f32>,
    /// Final logit soft-capping (`final_logit_softcapping`), if set and non-zero.
    pub final_logit_softcap: Option<f32>,
}

/// Reads an optional integer key; per-layer arrays must be uniform.
fn opt_usize(g: &Gguf, key: &str) -> Result<Option<usize>, ModelError> {
    let Some(v) = g.get(key) else { return Ok(None) };
    let one = |v: &Value| -> Result<usize, ModelError> {
        v.as_u64()
            .and_then(|x| usize::try_from(x).ok())
            .ok_or_else(|| {
                ModelError::BadConfig(format!(
                    "{key}: expected a non-negative integer, got {}",
                    v.type_name()
                ))
            })
    };
    if let Some(arr) = v.as_array() {
        let vals: Vec<u64> = match arr {
            zeta_gguf::Array::U32(x) => x.iter().map(|&v| u64::from(v)).collect(),
            zeta_gguf::Array::I32(x) => x
                .iter()
                .map(|&v| u64::try_from(v).unwrap_or(u64::MAX))
                .collect(),
            zeta_gguf::Array::U64(x) => x.clone(),
            zeta_gguf::Array::I64(x) => x
                .iter()
                .map(|&v| u64::try_from(v).unwrap_or(u64::MAX))
                .collect(),
            _ => {
                return Err(ModelError::BadConfig(format!(
                    "{key}: unsupported array type {}",
                    arr.type_name()
                )));
            }
        };
        let Some(&first) = vals.first() else {
            return Err(ModelError::BadConfig(format!("{key}: empty array")));
        };
        if vals.iter().any(|&v| v != first) {
            return Err(ModelError::Unsupported(format!(
                "{key}: per-layer values differ"
            )));
        }
        return usize::try_from(first)
            .ok()
            .filter(|&x| x as u64 != u64::MAX)
            .map(Some)
            .ok_or_else(|| ModelError::BadConfig(format!("{key}: value out of range")));
    }
    one(v).map(Some)
}

fn req_usize(g: &Gguf, key: &str) -> Result<usize, ModelError> {
    opt_usize(g, key)?.ok_or_else(|| ModelError::BadConfig(format!("missing key {key}")))
}

fn opt_f32(g: &Gguf, key: &str) -> Result<Option<f32>, ModelError> {
    match g.get(key) {
        None => Ok(None),
        Some(v) => v.as_f64().map(|x| Some(x as f32)).ok_or_else(|| {
            ModelError::BadConfig(format!("{key}: expected a number, got {}", v.type_name()))
        }),
    }
}

impl ModelConfig {
    /// Reads the hyperparameters of a supported architecture.
    pub fn from_gguf(g: &Gguf) -> Result<Self, ModelError> {
        let arch_name = g.get_str("general.architecture")?;
        let arch = Arch::from_name(arch_name)
            .ok_or_else(|| ModelError::UnknownArch(arch_name.to_string()))?;
        let a = arch.name();
        let k = |s: &str| format!("{a}.{s}");

        let n_ctx_train = req_usize(g, &k("context_length"))?;
        let n_embd = req_usize(g, &k("embedding_length"))?;
        let n_layer = req_usize(g, &k("block_count"))?;
        let n_ff = req_usize(g, &k("feed_forward_length"))?;
        let n_head = req_usize(g, &k("attention.head_count"))?;
        let n_head_kv = opt_usize(g, &k("attention.head_count_kv"))?.unwrap_or(n_head);
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(ModelError::BadConfig(format!(
                "head_count {n_head} must be a positive multiple of head_count_kv {n_head_kv}"
            )));
        }
        if n_layer == 0 || n_layer > 4096 || n_embd == 0 || n_ff == 0 || n_ctx_train == 0 {
            return Err(ModelError::BadConfig(format!(
                "block_count {n_layer}, embedding_length {n_embd}, feed_forward_length {n_ff}, context_length {n_ctx_train} out of range"
            )));
        }
        let head_dim = opt_usize(g, &k("attention.key_length"))?.unwrap_or(n_embd / n_head);
        let head_dim_v = opt_usize(g, &k("attention.value_length"))?.unwrap_or(n_embd / n_head);
        let n_rot = opt_usize(g, &k("rope.dimension_count"))?.unwrap_or(head_dim);
        if head_dim == 0 || head_dim_v == 0 || n_rot > head_dim || n_rot % 2 != 0 {
            return Err(ModelError::BadConfig(format!(
                "head sizes k={head_dim} v={head_dim_v}, rope dims {n_rot} inconsistent"
            )));
        }
        if arch == Arch::Llama && n_rot != head_dim {
            return Err(ModelError::BadConfig(format!(
                "invalid n_rot {n_rot}, expected {head_dim}"
            )));
        }
        let rms_eps = opt_f32(g, &k("attention.layer_norm_rms_epsilon"))?.ok_or_else(|| {
            ModelError::BadConfig(format!(
                "missing key {}",
                k("attention.layer_norm_rms_epsilon")
            ))
        })?;

        let rope_freq_base = opt_f32(g, &k("rope.freq_base"))?.unwrap_or(10000.0);
        let scaling = match g.get(&k("rope.scaling.type")) {
            Some(v) => v
                .as_str()
                .ok_or_else(|| ModelError::BadConfig("rope.scaling.type is not a string".into()))?
                .to_string(),
            None => "linear".to_string(),
        };
        let factor = match opt_f32(g, &k("rope.scaling.factor"))? {
            Some(f) => f,
            None => opt_f32(g, &k("rope.scale_linear"))?.unwrap_or(0.0),
        };
        let rope_freq_scale = if factor == 0.0 { 1.0 } else { 1.0 / factor };
        match scaling.as_str() {
            "none" | "linear" => {}
            other if rope_freq_scale == 1.0 && other == "yarn" => {}
            other => {
                return Err(ModelError::Unsupported(format!(
                    "rope scaling type {other:?}"
                )));
            }
        }
        if !(rope_freq_base > 0.0 && rope_freq_scale.is_finite() && rope_freq_scale > 0.0) {
            return Err(ModelError::BadConfig(format!(
                "rope freq_base {rope_freq_base} / scale {rope_freq_scale} out of range"
            )));
        }

        let n_vocab = match g.tensor("token_embd.weight") {
            Some(t) if t.dims.len() == 2 => usize::try_from(t.dims[1])
                .map_err(|_| ModelError::BadConfig("token_embd too large".into()))?,
            _ => match opt_usize(g, &k("vocab_size"))? {
                Some(n) => n,
                None => g
                    .get("tokenizer.ggml.tokens")
                    .and_then(|v| v.as_array())
                    .map(|a| a.len())
                    .ok_or_else(|| ModelError::BadConfig("cannot determine n_vocab".into()))?,
            },
        };

        let mut cfg = ModelConfig {
            arch,
            n_vocab,
            n_ctx_train,
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            head_dim_v,
            n_ff,
            n_rot,
            rms_eps,
            rope_kind: arch.rope_kind(),
            rope_freq_base,
            rope_freq_scale,
            rope_freq_base_swa: 10000.0,
            rope_freq_scale_swa: 1.0,
            n_swa: 0,
            swa_layers: vec![false; n_layer],
            kq_scale: 1.0 / (head_dim as f32).sqrt(),
            q_prescale: None,
            embd_scale: None,
            final_logit_softcap: None,
        };

        if arch == Arch::Gemma3 {
            cfg.embd_scale = Some((n_embd as f32).sqrt());
            // llama_model_gemma3::load_arch_hparams: 27B (62 layers) scales by n_embd/n_head.
            let q = if n_layer == 62 {
                1.0 / ((n_embd / n_head) as f32).sqrt()
            } else {
                1.0 / (head_dim as f32).sqrt()
            };
            cfg.q_prescale = Some(q);
            cfg.kq_scale = 1.0;
            cfg.final_logit_softcap =
                opt_f32(g, &k("final_logit_softcapping"))?.filter(|&c| c != 0.0);
            let n_swa = opt_usize(g, &k("attention.sliding_window"))?.unwrap_or(0);
            if n_swa > 0 {
                cfg.n_swa = n_swa;
                cfg.swa_layers =
                    swa_pattern(g, &k("attention.sliding_window_pattern"), n_layer, 6)?;
                if let Some(b) = opt_f32(g, &k("rope.freq_base_swa"))? {
                    cfg.rope_freq_base_swa = b;
                }
            }
        }
        Ok(cfg)
    }

    /// Whether layer `il` uses the sliding window.
    pub fn is_swa(&self, il: usize) -> bool {
        self.n_swa > 0 && self.swa_layers.get(il).copied().unwrap_or(false)
    }

    /// Default context size: the trained length capped at [`DEFAULT_MAX_CTX`].
    pub fn default_n_ctx(&self) -> usize {
        self.n_ctx_train.min(DEFAULT_MAX_CTX)
    }

    /// Bytes of the f16 K and V caches for `n_ctx` positions (all layers).
    pub fn kv_cache_bytes(&self, n_ctx: usize) -> u64 {
        let per_pos = (self.n_head_kv as u64) * (self.head_dim as u64 + self.head_dim_v as u64) * 2;
        (self.n_layer as u64)
            .saturating_mul(n_ctx as u64)
            .saturating_mul(per_pos)
    }
}

/// `sliding_window_pattern`: a bool array (one per layer) or a period `n`
/// (layer `il` is SWA unless `il % n == n - 1`; llama.cpp `set_swa_pattern`).
fn swa_pattern(
    g: &Gguf,
    key: &str,
    n_layer: usize,
    default: usize,
) -> Result<Vec<bool>, ModelError> {
    if let Some(zeta_gguf::Array::Bool(b)) = g.get(key).and_then(|v| v.as_array()) {
        if b.len() < n_layer {
            return Err(ModelError::BadConfig(format!(
                "{key}: {} values for {n_layer} layers",
                b.len()
            )));
        }
        return Ok(b[..n_layer].to_vec());
    }
    let n = opt_usize(g, key)?.unwrap_or(default);
    Ok((0..n_layer).map(|il| n == 0 || il % n < n - 1).collect())
}
