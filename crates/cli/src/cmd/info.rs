//! `zeta info MODEL [--json] [--ctx N]`: what is in a GGUF model file.
//! `zeta info --gpu [MODEL]`: the GPU adapter `--backend gpu` would use.
//!
//! Everything comes from the file's metadata and tensor table; nothing is
//! loaded or dequantized. The same [`Report`] is rendered as text or JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Result;
use serde_json::{Value as Json, json};
use zeta_gguf::{Array, GgmlType, Gguf, Value};

use crate::output::{human_bytes, human_count, print};

/// Arguments of `zeta info`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model: a .gguf path or a models.lock name (optional with --gpu).
    #[arg(required_unless_present = "gpu")]
    pub model: Option<String>,
    /// Show the GPU adapter `--backend gpu` would use: name, backend,
    /// driver, enabled features and limits.
    #[arg(long, conflicts_with = "json")]
    pub gpu: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also show the f16 KV cache size for a context of N tokens.
    #[arg(long, value_name = "N")]
    pub ctx: Option<u64>,
}

/// Runs `zeta info`.
pub fn run(args: Args) -> Result<()> {
    if args.gpu {
        let info = zeta_engine::gpu_info()?;
        print(&format!("{info}\n"))?;
    }
    let Some(model) = &args.model else {
        return Ok(());
    };
    let path = crate::model::resolve(model)?;
    let gguf = crate::model::open(&path)?;
    let file_size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let report = Report::new(&gguf, &path.display().to_string(), file_size, args.ctx);
    if args.json {
        let mut s = serde_json::to_string_pretty(&report.to_json())?;
        s.push('\n');
        print(&s)
    } else {
        print(&report.to_text())
    }
}

/// llama.cpp's `llama_ftype` names (include/llama.h).
fn file_type_name(id: u64) -> &'static str {
    match id {
        0 => "ALL_F32",
        1 => "MOSTLY_F16",
        2 => "MOSTLY_Q4_0",
        3 => "MOSTLY_Q4_1",
        7 => "MOSTLY_Q8_0",
        8 => "MOSTLY_Q5_0",
        9 => "MOSTLY_Q5_1",
        10 => "MOSTLY_Q2_K",
        11 => "MOSTLY_Q3_K_S",
        12 => "MOSTLY_Q3_K_M",
        13 => "MOSTLY_Q3_K_L",
        14 => "MOSTLY_Q4_K_S",
        15 => "MOSTLY_Q4_K_M",
        16 => "MOSTLY_Q5_K_S",
        17 => "MOSTLY_Q5_K_M",
        18 => "MOSTLY_Q6_K",
        19 => "MOSTLY_IQ2_XXS",
        20 => "MOSTLY_IQ2_XS",
        21 => "MOSTLY_Q2_K_S",
        22 => "MOSTLY_IQ3_XS",
        23 => "MOSTLY_IQ3_XXS",
        24 => "MOSTLY_IQ1_S",
        25 => "MOSTLY_IQ4_NL",
        26 => "MOSTLY_IQ3_S",
        27 => "MOSTLY_IQ3_M",
        28 => "MOSTLY_IQ2_S",
        29 => "MOSTLY_IQ2_M",
        30 => "MOSTLY_IQ4_XS",
        31 => "MOSTLY_IQ1_M",
        32 => "MOSTLY_BF16",
        36 => "MOSTLY_TQ1_0",
        37 => "MOSTLY_TQ2_0",
        38 => "MOSTLY_MXFP4_MOE",
        _ => "unknown",
    }
}

/// A ggml type's name in upper case ("Q4_K", "F32"), as gguf tools print it.
pub fn type_name(ty: GgmlType) -> String {
    ty.name().to_uppercase()
}

/// llama.cpp token type names (llama_token_type).
fn token_type_name(t: i64) -> String {
    match t {
        0 => "undefined".into(),
        1 => "normal".into(),
        2 => "unknown".into(),
        3 => "control".into(),
        4 => "user_defined".into(),
        5 => "unused".into(),
        6 => "byte".into(),
        other => format!("type{other}"),
    }
}

/// Hyper-parameters shown, as (label, key under `{arch}.`).
const HPARAMS: &[(&str, &str)] = &[
    ("context_length", "context_length"),
    ("embedding_length", "embedding_length"),
    ("block_count", "block_count"),
    ("feed_forward_length", "feed_forward_length"),
    ("head_count", "attention.head_count"),
    ("head_count_kv", "attention.head_count_kv"),
    ("key_length", "attention.key_length"),
    ("value_length", "attention.value_length"),
    ("rope_dimension_count", "rope.dimension_count"),
    ("rope_freq_base", "rope.freq_base"),
    ("rope_scaling_type", "rope.scaling.type"),
    ("rope_scaling_factor", "rope.scaling.factor"),
    ("rms_norm_eps", "attention.layer_norm_rms_epsilon"),
    ("norm_eps", "attention.layer_norm_epsilon"),
    ("sliding_window", "attention.sliding_window"),
    ("expert_count", "expert_count"),
    ("expert_used_count", "expert_used_count"),
    ("vocab_size", "vocab_size"),
];

/// Special-token keys shown, as (label, key).
const SPECIAL: &[(&str, &str)] = &[
    ("bos", "tokenizer.ggml.bos_token_id"),
    ("eos", "tokenizer.ggml.eos_token_id"),
    ("eot", "tokenizer.ggml.eot_token_id"),
    ("eom", "tokenizer.ggml.eom_token_id"),
    ("unk", "tokenizer.ggml.unknown_token_id"),
    ("pad", "tokenizer.ggml.padding_token_id"),
    ("sep", "tokenizer.ggml.seperator_token_id"),
    ("mask", "tokenizer.ggml.mask_token_id"),
];

/// Keys summarised elsewhere (not repeated in the "other metadata" list).
fn is_summarised(key: &str, arch: &str) -> bool {
    key == "general.architecture"
        || key == "general.name"
        || key == "general.file_type"
        || key.starts_with("tokenizer.")
        || HPARAMS
            .iter()
            .any(|(_, k)| key.strip_prefix(arch).and_then(|r| r.strip_prefix('.')) == Some(k))
}

/// A metadata value as JSON; arrays longer than `max_array` become
/// `{"type": "array", "elem": T, "len": N}`.
fn value_json(v: &Value, max_array: usize) -> Json {
    match v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F32(x) => f32_json(*x),
        Value::F64(x) => json!(x),
        Value::Bool(x) => json!(x),
        Value::String(s) => json!(s),
        Value::Array(a) => array_json(a, max_array),
    }
}

fn array_json(a: &Array, max_array: usize) -> Json {
    if a.len() > max_array {
        return json!({"type": "array", "elem": a.type_name(), "len": a.len()});
    }
    match a {
        Array::U8(v) => json!(v),
        Array::I8(v) => json!(v),
        Array::U16(v) => json!(v),
        Array::I16(v) => json!(v),
        Array::U32(v) => json!(v),
        Array::I32(v) => json!(v),
        Array::U64(v) => json!(v),
        Array::I64(v) => json!(v),
        Array::F32(v) => Json::Array(v.iter().map(|&x| f32_json(x)).collect()),
        Array::F64(v) => json!(v),
        Array::Bool(v) => json!(v),
        Array::String(v) => json!(v),
        Array::Array(v) => Json::Array(v.iter().map(|x| array_json(x, max_array)).collect()),
    }
}

/// An f32 as the JSON number with the same shortest decimal form (1e-5, not
/// 9.999999747378752e-6).
fn f32_json(x: f32) -> Json {
    x.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Json::Null, Json::Number)
}

/// Short one-line text for a value.
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let one_line = s.replace('\n', "\\n");
            if one_line.chars().count() > 70 {
                let cut: String = one_line.chars().take(67).collect();
                format!("{cut:?}… ({} chars)", s.chars().count())
            } else {
                format!("{one_line:?}")
            }
        }
        Value::Array(a) if a.len() > 8 => format!("[{}; {}]", a.type_name(), a.len()),
        other => value_json(other, 8).to_string(),
    }
}

/// Integer values of a scalar or per-layer array (for head_count_kv etc.).
fn ints(v: &Value) -> Option<Vec<u64>> {
    match v {
        Value::Array(a) => {
            let mut out = Vec::with_capacity(a.len());
            for i in 0..a.len() {
                let x = match a {
                    Array::U8(v) => v.get(i).map(|&x| u64::from(x)),
                    Array::U16(v) => v.get(i).map(|&x| u64::from(x)),
                    Array::U32(v) => v.get(i).map(|&x| u64::from(x)),
                    Array::U64(v) => v.get(i).copied(),
                    Array::I8(v) => v.get(i).and_then(|&x| u64::try_from(x).ok()),
                    Array::I16(v) => v.get(i).and_then(|&x| u64::try_from(x).ok()),
                    Array::I32(v) => v.get(i).and_then(|&x| u64::try_from(x).ok()),
                    Array::I64(v) => v.get(i).and_then(|&x| u64::try_from(x).ok()),
                    _ => None,
                }?;
                out.push(x);
            }
            Some(out)
        }
        other => other.as_u64().map(|x| vec![x]),
    }
}

/// One row of the tensor table.
#[derive(Debug)]
struct TensorRow {
    name: String,
    ty: GgmlType,
    dims: Vec<u64>,
    n_elements: u64,
    n_bytes: u64,
    offset: u64,
}

/// Totals for one tensor type.
#[derive(Debug, Default, Clone, Copy)]
struct TypeTotal {
    tensors: u64,
    params: u64,
    bytes: u64,
}

/// KV-cache size for a context length.
#[derive(Debug)]
struct KvCache {
    n_ctx: u64,
    n_layer: u64,
    /// KV heads per layer.
    n_head_kv: Vec<u64>,
    k_dim: u64,
    v_dim: u64,
    bytes: u64,
}

/// Everything `zeta info` shows.
#[derive(Debug)]
struct Report {
    path: String,
    file_size: u64,
    version: u32,
    alignment: u64,
    data_offset: u64,
    arch: String,
    name: Option<String>,
    file_type: Option<u64>,
    /// (label, key, value)
    hparams: Vec<(&'static str, String, Json)>,
    head_dim: Option<u64>,
    tok_model: Option<String>,
    tok_pre: Option<String>,
    n_tokens: Option<usize>,
    n_merges: Option<usize>,
    token_types: BTreeMap<String, u64>,
    /// (label, id, token text)
    special: Vec<(&'static str, u64, Option<String>)>,
    add_bos: Option<bool>,
    add_eos: Option<bool>,
    chat_template_chars: Option<usize>,
    tensors: Vec<TensorRow>,
    by_type: BTreeMap<String, TypeTotal>,
    /// (key, value) of the remaining metadata
    other: Vec<(String, Json, String)>,
    kv_cache: Option<KvCache>,
    kv_cache_error: Option<String>,
}

impl Report {
    fn new(g: &Gguf, path: &str, file_size: u64, ctx: Option<u64>) -> Report {
        let arch = g
            .get("general.architecture")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        let akey = |k: &str| format!("{arch}.{k}");
        let hparams: Vec<(&'static str, String, Json)> = HPARAMS
            .iter()
            .filter_map(|(label, k)| {
                let key = akey(k);
                g.get(&key).map(|v| (*label, key, value_json(v, 256)))
            })
            .collect();
        let get_u64 = |k: &str| g.get(&akey(k)).and_then(Value::as_u64);
        let n_embd = get_u64("embedding_length");
        let n_head = g
            .get(&akey("attention.head_count"))
            .and_then(ints)
            .and_then(|v| v.into_iter().max());
        let head_dim = get_u64("attention.key_length").or(match (n_embd, n_head) {
            (Some(e), Some(h)) if h > 0 => Some(e / h),
            _ => None,
        });

        let tokens = g.get("tokenizer.ggml.tokens").and_then(Value::as_array);
        let token_strings = tokens.and_then(Array::as_strings);
        let mut token_types = BTreeMap::new();
        if let Some(types) = g.get("tokenizer.ggml.token_type")
            && let Some(ts) = ints_signed(types)
        {
            for t in ts {
                *token_types.entry(token_type_name(t)).or_insert(0) += 1;
            }
        }
        let special = SPECIAL
            .iter()
            .filter_map(|(label, key)| {
                let id = g.get(key)?.as_u64()?;
                let text = usize::try_from(id)
                    .ok()
                    .and_then(|i| token_strings.and_then(|t| t.get(i)).cloned());
                Some((*label, id, text))
            })
            .collect();

        let tensors: Vec<TensorRow> = g
            .tensors()
            .iter()
            .map(|t| TensorRow {
                name: t.name.clone(),
                ty: t.ggml_type,
                dims: t.dims.clone(),
                n_elements: t.n_elements(),
                n_bytes: t.n_bytes,
                offset: t.offset,
            })
            .collect();
        let mut by_type: BTreeMap<String, TypeTotal> = BTreeMap::new();
        for t in &tensors {
            let e = by_type.entry(type_name(t.ty)).or_default();
            e.tensors += 1;
            e.params += t.n_elements;
            e.bytes += t.n_bytes;
        }
        let other = g
            .metadata()
            .iter()
            .filter(|(k, _)| !is_summarised(k, &arch))
            .map(|(k, v)| (k.clone(), value_json(v, 64), value_text(v)))
            .collect();

        let mut kv_cache = None;
        let mut kv_cache_error = None;
        if let Some(n_ctx) = ctx {
            match kv_cache_size(g, n_ctx) {
                Ok(kv) => kv_cache = Some(kv),
                Err(e) => kv_cache_error = Some(e),
            }
        }

        Report {
            path: path.to_string(),
            file_size,
            version: g.version(),
            alignment: g.alignment(),
            data_offset: g.data_offset(),
            name: g
                .get("general.name")
                .and_then(Value::as_str)
                .map(str::to_owned),
            file_type: g.get("general.file_type").and_then(Value::as_u64),
            hparams,
            head_dim,
            tok_model: g
                .get("tokenizer.ggml.model")
                .and_then(Value::as_str)
                .map(str::to_owned),
            tok_pre: g
                .get("tokenizer.ggml.pre")
                .and_then(Value::as_str)
                .map(str::to_owned),
            n_tokens: tokens.map(Array::len),
            n_merges: g
                .get("tokenizer.ggml.merges")
                .and_then(Value::as_array)
                .map(Array::len),
            token_types,
            special,
            add_bos: g
                .get("tokenizer.ggml.add_bos_token")
                .and_then(Value::as_bool),
            add_eos: g
                .get("tokenizer.ggml.add_eos_token")
                .and_then(Value::as_bool),
            chat_template_chars: g
                .get("tokenizer.chat_template")
                .and_then(Value::as_str)
                .map(|s| s.chars().count()),
            tensors,
            by_type,
            other,
            kv_cache,
            kv_cache_error,
            arch,
        }
    }

    fn total_params(&self) -> u64 {
        self.tensors.iter().map(|t| t.n_elements).sum()
    }

    fn total_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.n_bytes).sum()
    }

    fn to_json(&self) -> Json {
        let mut hp = serde_json::Map::new();
        for (label, _, v) in &self.hparams {
            hp.insert((*label).to_string(), v.clone());
        }
        hp.insert("head_dim".into(), json!(self.head_dim));
        let special: serde_json::Map<String, Json> = self
            .special
            .iter()
            .map(|(label, id, text)| ((*label).to_string(), json!({"id": id, "text": text})))
            .collect();
        let tensors: Vec<Json> = self
            .tensors
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "type": type_name(t.ty),
                    "shape": t.dims,
                    "n_elements": t.n_elements,
                    "bytes": t.n_bytes,
                    "offset": t.offset,
                })
            })
            .collect();
        let by_type: serde_json::Map<String, Json> = self
            .by_type
            .iter()
            .map(|(ty, t)| {
                (
                    ty.clone(),
                    json!({"tensors": t.tensors, "params": t.params, "bytes": t.bytes}),
                )
            })
            .collect();
        let metadata: serde_json::Map<String, Json> = self
            .other
            .iter()
            .map(|(k, v, _)| (k.clone(), v.clone()))
            .collect();
        let kv = self.kv_cache.as_ref().map(|kv| {
            json!({
                "n_ctx": kv.n_ctx,
                "n_layer": kv.n_layer,
                "n_head_kv": kv.n_head_kv,
                "k_dim": kv.k_dim,
                "v_dim": kv.v_dim,
                "dtype": "f16",
                "bytes": kv.bytes,
            })
        });
        let mut root = json!({
            "path": self.path,
            "file_size": self.file_size,
            "gguf_version": self.version,
            "alignment": self.alignment,
            "data_offset": self.data_offset,
            "architecture": self.arch,
            "name": self.name,
            "file_type": self.file_type.map(|id| json!({"id": id, "name": file_type_name(id)})),
            "hparams": hp,
            "tokenizer": {
                "model": self.tok_model,
                "pre": self.tok_pre,
                "n_tokens": self.n_tokens,
                "n_merges": self.n_merges,
                "token_types": self.token_types,
                "special": special,
                "add_bos": self.add_bos,
                "add_eos": self.add_eos,
                "chat_template_chars": self.chat_template_chars,
            },
            "tensors": tensors,
            "totals": {
                "n_tensors": self.tensors.len(),
                "params": self.total_params(),
                "bytes": self.total_bytes(),
                "by_type": by_type,
            },
            "metadata": metadata,
        });
        if let Some(obj) = root.as_object_mut() {
            if let Some(kv) = kv {
                obj.insert("kv_cache".into(), kv);
            }
            if let Some(e) = &self.kv_cache_error {
                obj.insert("kv_cache_error".into(), json!(e));
            }
        }
        root
    }

    fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = self.write_text(&mut s);
        s
    }

    fn write_text(&self, s: &mut String) -> std::fmt::Result {
        writeln!(s, "file:          {}", self.path)?;
        writeln!(
            s,
            "               {} ({} bytes), GGUF v{}, alignment {}, data at offset {}",
            human_bytes(self.file_size),
            self.file_size,
            self.version,
            self.alignment,
            self.data_offset
        )?;
        writeln!(s, "name:          {}", self.name.as_deref().unwrap_or("-"))?;
        writeln!(s, "architecture:  {}", self.arch)?;
        match self.file_type {
            Some(id) => writeln!(s, "file type:     {} ({id})", file_type_name(id))?,
            None => writeln!(s, "file type:     -")?,
        }

        writeln!(s, "\nhyper-parameters:")?;
        if self.hparams.is_empty() {
            writeln!(s, "  (none found under '{}.')", self.arch)?;
        }
        for (label, _, v) in &self.hparams {
            writeln!(s, "  {label:<22} {v}")?;
        }
        if let Some(hd) = self.head_dim {
            writeln!(s, "  {:<22} {hd}", "head_dim")?;
        }

        writeln!(s, "\ntokenizer:")?;
        writeln!(
            s,
            "  model {}, pre {}",
            self.tok_model.as_deref().unwrap_or("-"),
            self.tok_pre.as_deref().unwrap_or("-")
        )?;
        if let Some(n) = self.n_tokens {
            let types: Vec<String> = self
                .token_types
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            write!(s, "  {n} tokens")?;
            if !types.is_empty() {
                write!(s, " ({})", types.join(", "))?;
            }
            writeln!(s)?;
        }
        if let Some(m) = self.n_merges {
            writeln!(s, "  {m} merges")?;
        }
        if !self.special.is_empty() {
            let sp: Vec<String> = self
                .special
                .iter()
                .map(|(label, id, text)| match text {
                    Some(t) => format!("{label} {id} {t:?}"),
                    None => format!("{label} {id}"),
                })
                .collect();
            writeln!(s, "  special: {}", sp.join(", "))?;
        }
        if self.add_bos.is_some() || self.add_eos.is_some() {
            let b = |x: Option<bool>| x.map_or("-".to_string(), |v| v.to_string());
            writeln!(
                s,
                "  add_bos {}, add_eos {}",
                b(self.add_bos),
                b(self.add_eos)
            )?;
        }
        match self.chat_template_chars {
            Some(n) => writeln!(s, "  chat template: yes ({n} chars)")?,
            None => writeln!(s, "  chat template: no")?,
        }

        if !self.other.is_empty() {
            writeln!(s, "\nother metadata:")?;
            for (k, _, text) in &self.other {
                writeln!(s, "  {k:<40} {text}")?;
            }
        }

        writeln!(
            s,
            "\ntensors ({}; shape is ggml ne, fastest dimension first):",
            self.tensors.len()
        )?;
        let w = self
            .tensors
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        writeln!(
            s,
            "  {:<w$}  {:<7} {:<22} {:>12}",
            "name", "type", "shape", "bytes"
        )?;
        for t in &self.tensors {
            let shape = format!(
                "[{}]",
                t.dims
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            writeln!(
                s,
                "  {:<w$}  {:<7} {:<22} {:>12}",
                t.name,
                type_name(t.ty),
                shape,
                t.n_bytes
            )?;
        }

        let params = self.total_params();
        let bytes = self.total_bytes();
        writeln!(
            s,
            "\ntotals: {} params ({params}), {} of tensor data ({bytes} bytes), {:.2} bits/weight",
            human_count(params),
            human_bytes(bytes),
            if params > 0 {
                bytes as f64 * 8.0 / params as f64
            } else {
                0.0
            }
        )?;
        for (ty, t) in &self.by_type {
            writeln!(
                s,
                "  {ty:<7} {:>4} tensors {:>12} params {:>12}",
                t.tensors,
                human_count(t.params),
                human_bytes(t.bytes)
            )?;
        }

        if let Some(kv) = &self.kv_cache {
            let heads = if kv
                .n_head_kv
                .iter()
                .all(|&h| Some(&h) == kv.n_head_kv.first())
            {
                format!("{}", kv.n_head_kv.first().copied().unwrap_or(0))
            } else {
                format!("{:?}", kv.n_head_kv)
            };
            writeln!(
                s,
                "\nKV cache (f16) for {} tokens: {} ({} bytes) = {} layers × {} tokens × {} KV heads × ({} K + {} V) × 2 bytes",
                kv.n_ctx,
                human_bytes(kv.bytes),
                kv.bytes,
                kv.n_layer,
                kv.n_ctx,
                heads,
                kv.k_dim,
                kv.v_dim
            )?;
        }
        if let Some(e) = &self.kv_cache_error {
            writeln!(s, "\nKV cache: cannot compute ({e})")?;
        }
        Ok(())
    }
}

fn ints_signed(v: &Value) -> Option<Vec<i64>> {
    let a = v.as_array()?;
    match a {
        Array::I32(v) => Some(v.iter().map(|&x| i64::from(x)).collect()),
        Array::U32(v) => Some(v.iter().map(|&x| i64::from(x)).collect()),
        Array::I8(v) => Some(v.iter().map(|&x| i64::from(x)).collect()),
        Array::U8(v) => Some(v.iter().map(|&x| i64::from(x)).collect()),
        Array::I16(v) => Some(v.iter().map(|&x| i64::from(x)).collect()),
        Array::U16(v) => Some(v.iter().map(|&x| i64::from(x)).collect()),
        Array::I64(v) => Some(v.clone()),
        _ => None,
    }
}

/// f16 K+V cache bytes for `n_ctx` tokens:
/// Σ_layers n_ctx × n_head_kv(layer) × (k_dim + v_dim) × 2 bytes, i.e.
/// 2 × n_layer × n_ctx × n_head_kv × head_dim × 2 when K and V have the same
/// head size and every layer the same KV heads.
/// The KV cache the engine would allocate for `n_ctx` tokens: sized by the
/// model's own `ModelConfig::kv_cache_bytes`, so `zeta info --ctx` reports
/// exactly what `zeta run --ctx` allocates. Errors (unsupported
/// architecture, bad metadata, context past the trained length) are shown
/// instead of a size.
fn kv_cache_size(g: &Gguf, n_ctx: u64) -> Result<KvCache, String> {
    let cfg = zeta_engine::ModelConfig::from_gguf(g).map_err(|e| e.to_string())?;
    let n = usize::try_from(n_ctx).map_err(|e| e.to_string())?;
    if n == 0 || n > cfg.n_ctx_train {
        return Err(format!(
            "--ctx {n_ctx} is outside 1..={} (the trained context length)",
            cfg.n_ctx_train
        ));
    }
    Ok(KvCache {
        n_ctx,
        n_layer: cfg.n_layer as u64,
        n_head_kv: vec![cfg.n_head_kv as u64; cfg.n_layer],
        k_dim: cfg.head_dim as u64,
        v_dim: cfg.head_dim_v as u64,
        bytes: cfg.kv_cache_bytes(n),
    })
}
