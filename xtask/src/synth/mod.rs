//! `cargo xtask synth`: random-weight llama-architecture GGUF models with
//! complete metadata and a consistent vocabulary, in the shapes of real models.
//!
//! Weights are random (seeded, reproducible), written block by block straight
//! into the file (`GgufWriter::write_streaming`), so even the 8B shape needs
//! only a few MB of memory. Tensor types follow llama.cpp's choices for the
//! file type (see [`Quant::tensor_type`]).

pub mod blocks;
pub mod vocab;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use zeta_gguf::{Array, GgmlType, GgufWriter, TensorInfo, Value};

use blocks::Rng;
use vocab::Vocab;

/// Tokenizer family of a shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VocabKind {
    /// SentencePiece (`tokenizer.ggml.model = "llama"`).
    Spm,
    /// GPT-2 byte-level BPE with Llama-3 pre-tokenizer and specials.
    BpeLlama3,
}

/// Hyper-parameters of a llama-architecture model.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Name used on the command line.
    pub name: &'static str,
    /// The real model it mirrors (for `general.name`).
    pub mirrors: &'static str,
    /// Vocabulary size.
    pub n_vocab: usize,
    /// Embedding width.
    pub n_embd: u64,
    /// Transformer blocks.
    pub n_layer: u32,
    /// Query heads.
    pub n_head: u64,
    /// Key/value heads (GQA).
    pub n_head_kv: u64,
    /// FFN hidden width.
    pub n_ff: u64,
    /// Training context length.
    pub n_ctx: u32,
    /// RoPE base frequency.
    pub rope_base: f32,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Tokenizer family.
    pub vocab: VocabKind,
}

/// The shapes `synth` knows.
pub const SHAPES: &[Shape] = &[
    // Not a real model: the smallest llama that exercises GQA (2 query heads
    // per KV head), two layers and every K-quant (rows are multiples of 256).
    Shape {
        name: "tiny",
        mirrors: "zeta tiny test llama",
        n_vocab: 320,
        n_embd: 256,
        n_layer: 2,
        n_head: 4,
        n_head_kv: 2,
        n_ff: 512,
        n_ctx: 512,
        rope_base: 10000.0,
        rms_eps: 1e-5,
        vocab: VocabKind::Spm,
    },
    // TinyLlama-1.1B (TinyLlama/TinyLlama-1.1B-Chat-v1.0): Llama-2 architecture
    // and 32000-token SentencePiece vocab, GQA 32/4.
    Shape {
        name: "llama-1b",
        mirrors: "TinyLlama-1.1B (synthetic)",
        n_vocab: 32000,
        n_embd: 2048,
        n_layer: 22,
        n_head: 32,
        n_head_kv: 4,
        n_ff: 5632,
        n_ctx: 2048,
        rope_base: 10000.0,
        rms_eps: 1e-5,
        vocab: VocabKind::Spm,
    },
    // Meta-Llama-3-8B(-Instruct): 128256-token byte-level BPE vocab
    // (128000 regular + 256 special), GQA 32/8, RoPE base 500000.
    Shape {
        name: "llama-8b",
        mirrors: "Llama-3-8B (synthetic)",
        n_vocab: 128_256,
        n_embd: 4096,
        n_layer: 32,
        n_head: 32,
        n_head_kv: 8,
        n_ff: 14336,
        n_ctx: 8192,
        rope_base: 500_000.0,
        rms_eps: 1e-5,
        vocab: VocabKind::BpeLlama3,
    },
];

/// The shape called `name`.
pub fn shape(name: &str) -> Result<&'static Shape> {
    SHAPES.iter().find(|s| s.name == name).with_context(|| {
        let names: Vec<&str> = SHAPES.iter().map(|s| s.name).collect();
        format!("unknown shape '{name}' (known: {})", names.join(", "))
    })
}

/// The file types `synth` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quant {
    /// LLAMA_FTYPE_MOSTLY_F16.
    F16,
    /// LLAMA_FTYPE_MOSTLY_Q8_0.
    Q8_0,
    /// LLAMA_FTYPE_MOSTLY_Q4_0.
    Q4_0,
    /// LLAMA_FTYPE_MOSTLY_Q4_K_M.
    Q4KM,
}

/// What a tensor is, for type selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// RMSNorm weights (1-D, F32, all ones).
    Norm,
    /// token_embd.weight.
    TokenEmbd,
    /// output.weight.
    Output,
    /// attn_q / attn_k / attn_output / ffn_gate / ffn_up.
    Plain,
    /// attn_v.weight of layer i.
    AttnV(u32),
    /// ffn_down.weight of layer i.
    FfnDown(u32),
}

impl Quant {
    /// Parses `f16`, `q8_0`, `q4_0`, `q4_k_m` (case-insensitive).
    pub fn parse(s: &str) -> Result<Quant> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "f16" => Quant::F16,
            "q8_0" => Quant::Q8_0,
            "q4_0" => Quant::Q4_0,
            "q4_k_m" => Quant::Q4KM,
            _ => bail!("unknown quant '{s}' (known: f16, q8_0, q4_0, q4_k_m)"),
        })
    }

    /// `general.file_type` (llama_ftype).
    pub fn file_type(self) -> u32 {
        match self {
            Quant::F16 => 1,
            Quant::Q8_0 => 7,
            Quant::Q4_0 => 2,
            Quant::Q4KM => 15,
        }
    }

    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Quant::F16 => "f16",
            Quant::Q8_0 => "q8_0",
            Quant::Q4_0 => "q4_0",
            Quant::Q4KM => "q4_k_m",
        }
    }

    /// The type llama.cpp's `llama_tensor_get_type` (src/llama-quant.cpp) picks
    /// for a llama-architecture tensor with row length `ne0`:
    /// - 1-D norms stay F32; F16 files are F16 everywhere else.
    /// - output.weight: Q6_K unless the file type is Q8_0 (then Q8_0).
    /// - Q4_K_M: Q4_K, except attn_v and ffn_down of the layers where
    ///   `use_more_bits(i, n) = i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2`
    ///   holds, which get Q6_K (token_embd stays Q4_K).
    /// - Rows that do not divide a type's block fall back like
    ///   `tensor_type_fallback`: Q4_K→Q5_0, Q6_K→Q8_0, then F16.
    pub fn tensor_type(self, role: Role, n_layer: u32, ne0: u64) -> GgmlType {
        let use_more_bits = |i: u32| {
            let (i, n) = (i64::from(i), i64::from(n_layer));
            i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
        };
        if role == Role::Norm {
            return GgmlType::F32;
        }
        let base = match self {
            Quant::F16 => return GgmlType::F16,
            Quant::Q8_0 => GgmlType::Q8_0,
            Quant::Q4_0 => GgmlType::Q4_0,
            Quant::Q4KM => GgmlType::Q4_K,
        };
        let ty = match role {
            Role::Output => {
                if !ne0.is_multiple_of(base.block_size() as u64) || base == GgmlType::Q8_0 {
                    GgmlType::Q8_0
                } else {
                    GgmlType::Q6_K
                }
            }
            Role::AttnV(i) | Role::FfnDown(i) if self == Quant::Q4KM && use_more_bits(i) => {
                GgmlType::Q6_K
            }
            _ => base,
        };
        if ne0.is_multiple_of(ty.block_size() as u64) {
            return ty;
        }
        let fallback = match ty {
            GgmlType::Q4_K => GgmlType::Q5_0,
            GgmlType::Q6_K => GgmlType::Q8_0,
            other => other,
        };
        if ne0.is_multiple_of(fallback.block_size() as u64) {
            fallback
        } else {
            GgmlType::F16
        }
    }
}

/// One tensor to write.
#[derive(Debug, Clone)]
pub struct TensorPlan {
    /// GGUF name.
    pub name: String,
    /// ggml dims (ne[0] = row length).
    pub dims: Vec<u64>,
    /// Storage type.
    pub ty: GgmlType,
    /// Its role (norms are filled with 1.0, everything else random).
    pub role: Role,
}

/// The tensors of a llama model, in llama.cpp's usual file order.
pub fn plan(s: &Shape, q: Quant) -> Vec<TensorPlan> {
    let head_dim = s.n_embd / s.n_head;
    let n_embd_kv = head_dim * s.n_head_kv;
    let n_vocab = s.n_vocab as u64;
    let mut out = Vec::new();
    let mut add = |name: String, dims: Vec<u64>, role: Role| {
        let ty = q.tensor_type(role, s.n_layer, dims[0]);
        out.push(TensorPlan {
            name,
            dims,
            ty,
            role,
        });
    };
    // token_embd.weight: [n_embd, n_vocab] (one row of n_embd per token)
    add(
        "token_embd.weight".into(),
        vec![s.n_embd, n_vocab],
        Role::TokenEmbd,
    );
    for i in 0..s.n_layer {
        let b = |t: &str| format!("blk.{i}.{t}.weight");
        // attn_norm: [n_embd]
        add(b("attn_norm"), vec![s.n_embd], Role::Norm);
        // attn_q: [n_embd, n_embd]; attn_k/attn_v: [n_embd, n_embd_kv]
        add(b("attn_q"), vec![s.n_embd, s.n_embd], Role::Plain);
        add(b("attn_k"), vec![s.n_embd, n_embd_kv], Role::Plain);
        add(b("attn_v"), vec![s.n_embd, n_embd_kv], Role::AttnV(i));
        // attn_output: [n_embd, n_embd]
        add(b("attn_output"), vec![s.n_embd, s.n_embd], Role::Plain);
        // ffn_norm: [n_embd]
        add(b("ffn_norm"), vec![s.n_embd], Role::Norm);
        // ffn_gate/ffn_up: [n_embd, n_ff]; ffn_down: [n_ff, n_embd]
        add(b("ffn_gate"), vec![s.n_embd, s.n_ff], Role::Plain);
        add(b("ffn_up"), vec![s.n_embd, s.n_ff], Role::Plain);
        add(b("ffn_down"), vec![s.n_ff, s.n_embd], Role::FfnDown(i));
    }
    // output_norm: [n_embd]; output: [n_embd, n_vocab]
    add("output_norm.weight".into(), vec![s.n_embd], Role::Norm);
    add(
        "output.weight".into(),
        vec![s.n_embd, n_vocab],
        Role::Output,
    );
    out
}

fn u32_of(x: u64) -> Result<Value> {
    Ok(Value::U32(u32::try_from(x)?))
}

/// A writer with all metadata and tensor infos of the synthetic model.
pub fn build_writer(s: &Shape, q: Quant, vocab: &Vocab) -> Result<(GgufWriter, Vec<TensorPlan>)> {
    let mut w = GgufWriter::new();
    let head_dim = s.n_embd / s.n_head;
    w.add_kv("general.architecture", Value::String("llama".into()));
    w.add_kv(
        "general.name",
        Value::String(format!("{} {}", s.mirrors, q.name())),
    );
    w.add_kv("general.file_type", Value::U32(q.file_type()));
    if q != Quant::F16 {
        w.add_kv("general.quantization_version", Value::U32(2));
    }
    w.add_kv("llama.vocab_size", u32_of(s.n_vocab as u64)?);
    w.add_kv("llama.context_length", Value::U32(s.n_ctx));
    w.add_kv("llama.embedding_length", u32_of(s.n_embd)?);
    w.add_kv("llama.block_count", Value::U32(s.n_layer));
    w.add_kv("llama.feed_forward_length", u32_of(s.n_ff)?);
    w.add_kv("llama.rope.dimension_count", u32_of(head_dim)?);
    w.add_kv("llama.attention.head_count", u32_of(s.n_head)?);
    w.add_kv("llama.attention.head_count_kv", u32_of(s.n_head_kv)?);
    w.add_kv(
        "llama.attention.layer_norm_rms_epsilon",
        Value::F32(s.rms_eps),
    );
    w.add_kv("llama.rope.freq_base", Value::F32(s.rope_base));

    w.add_kv("tokenizer.ggml.model", Value::String(vocab.model.into()));
    if let Some(pre) = vocab.pre {
        w.add_kv("tokenizer.ggml.pre", Value::String(pre.into()));
    }
    w.add_kv(
        "tokenizer.ggml.tokens",
        Value::Array(Array::String(vocab.tokens.clone())),
    );
    w.add_kv(
        "tokenizer.ggml.scores",
        Value::Array(Array::F32(vocab.scores.clone())),
    );
    w.add_kv(
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(vocab.types.clone())),
    );
    if !vocab.merges.is_empty() {
        w.add_kv(
            "tokenizer.ggml.merges",
            Value::Array(Array::String(vocab.merges.clone())),
        );
    }
    w.add_kv("tokenizer.ggml.bos_token_id", Value::U32(vocab.bos));
    w.add_kv("tokenizer.ggml.eos_token_id", Value::U32(vocab.eos));
    if let Some(unk) = vocab.unk {
        w.add_kv("tokenizer.ggml.unknown_token_id", Value::U32(unk));
    }
    w.add_kv("tokenizer.ggml.add_bos_token", Value::Bool(true));
    w.add_kv("tokenizer.ggml.add_eos_token", Value::Bool(false));
    w.add_kv(
        "tokenizer.chat_template",
        Value::String(vocab.chat_template.into()),
    );

    let plan = plan(s, q);
    for t in &plan {
        w.add_tensor_info(t.name.clone(), &t.dims, t.ty)?;
    }
    Ok((w, plan))
}

/// Target bytes per generated chunk (one unit of work for a thread).
const CHUNK_BYTES: u64 = 4 << 20;

/// Writes tensor `index` (`info`) to `out`, generating row chunks on `threads`
/// threads. Chunk `k` of tensor `index` always uses the same RNG stream, so the
/// output does not depend on the thread count.
fn fill_tensor(
    seed: u64,
    index: usize,
    plan: &TensorPlan,
    info: &TensorInfo,
    threads: usize,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> std::io::Result<()> {
    let n_bytes = info.n_bytes;
    if plan.role == Role::Norm {
        // norm weights: 1.0 (F32)
        let mut buf = Vec::with_capacity(n_bytes as usize);
        for _ in 0..n_bytes / 4 {
            buf.extend_from_slice(&1.0f32.to_le_bytes());
        }
        out.write_all(&buf)?;
        progress(n_bytes);
        return Ok(());
    }
    let n_rows = info.n_rows().max(1);
    let row_bytes = n_bytes / n_rows;
    let rows_per_chunk = (CHUNK_BYTES / row_bytes.max(1)).max(1);
    let n_chunks = n_rows.div_ceil(rows_per_chunk);
    let ty = plan.ty;
    let gen_chunk = |k: u64| -> std::io::Result<Vec<u8>> {
        let rows = rows_per_chunk.min(n_rows - k * rows_per_chunk);
        let mut buf = vec![0u8; (rows * row_bytes) as usize];
        let mut rng = Rng::new(
            seed ^ (index as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407)
                ^ (k + 1).wrapping_mul(0x9FB2_1C65_1E98_DF25),
        );
        blocks::fill_random(ty, &mut rng, &mut buf).map_err(std::io::Error::other)?;
        Ok(buf)
    };
    let mut k = 0;
    while k < n_chunks {
        let batch: Vec<u64> = (k..n_chunks.min(k + threads as u64)).collect();
        let bufs: Vec<std::io::Result<Vec<u8>>> = std::thread::scope(|sc| {
            let handles: Vec<_> = batch
                .iter()
                .map(|&c| sc.spawn(move || gen_chunk(c)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(std::io::Error::other("generator thread panicked")))
                })
                .collect()
        });
        for b in bufs {
            let b = b?;
            out.write_all(&b)?;
            progress(b.len() as u64);
        }
        k += batch.len() as u64;
    }
    Ok(())
}

/// Generates the model and writes it atomically to `out_path`. `progress`
/// receives (bytes done, total tensor bytes).
pub fn synth(
    s: &Shape,
    q: Quant,
    seed: u64,
    out_path: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    let vocab = match s.vocab {
        VocabKind::Spm => vocab::spm(s.n_vocab)?,
        VocabKind::BpeLlama3 => vocab::bpe_llama3(s.n_vocab, 256)?,
    };
    let (writer, plan) = build_writer(s, q, &vocab)?;
    for t in &plan {
        if !blocks::supported(t.ty) {
            bail!("internal: no generator for {} ({})", t.name, t.ty.name());
        }
    }
    let infos = writer.tensor_infos()?;
    let total: u64 = infos.iter().map(|t| t.n_bytes).sum();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    let file_name = out_path
        .file_name()
        .with_context(|| format!("{} has no file name", out_path.display()))?;
    let tmp = out_path.with_file_name(format!(".{}.tmp", file_name.to_string_lossy()));
    let res = (|| -> Result<()> {
        let f = File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
        let mut w = BufWriter::with_capacity(8 << 20, f);
        let mut done = 0u64;
        writer.write_streaming(&mut w, &mut |i, info, out| {
            let p = plan
                .get(i)
                .ok_or_else(|| std::io::Error::other("tensor index out of range"))?;
            fill_tensor(seed, i, p, info, threads, out, &mut |n| {
                done += n;
                progress(done, total);
            })
        })?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, out_path)
            .with_context(|| format!("rename {} to {}", tmp.display(), out_path.display()))?;
        Ok(())
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn q4_k_m_mix_matches_llama_cpp() {
        let s = shape("llama-1b").unwrap();
        let p = plan(s, Quant::Q4KM);
        let ty = |n: &str| p.iter().find(|t| t.name == n).unwrap().ty;
        assert_eq!(ty("token_embd.weight"), GgmlType::Q4_K);
        assert_eq!(ty("output.weight"), GgmlType::Q6_K);
        assert_eq!(ty("output_norm.weight"), GgmlType::F32);
        // n_layer 22: n/8 = 2, 7n/8 = 19 → layers 0,1, 4,7,10,13,16, 19,20,21
        let more: Vec<u32> = (0..22)
            .filter(|i| ty(&format!("blk.{i}.ffn_down.weight")) == GgmlType::Q6_K)
            .collect();
        assert_eq!(more, vec![0, 1, 4, 7, 10, 13, 16, 19, 20, 21]);
        for i in 0..22 {
            assert_eq!(
                ty(&format!("blk.{i}.attn_v.weight")),
                ty(&format!("blk.{i}.ffn_down.weight"))
            );
            assert_eq!(ty(&format!("blk.{i}.attn_q.weight")), GgmlType::Q4_K);
        }
        let p = plan(s, Quant::Q4_0);
        let ty = |n: &str| p.iter().find(|t| t.name == n).unwrap().ty;
        assert_eq!(ty("output.weight"), GgmlType::Q6_K);
        assert_eq!(ty("blk.0.ffn_down.weight"), GgmlType::Q4_0);
        let p = plan(s, Quant::Q8_0);
        assert!(
            p.iter()
                .all(|t| t.ty == GgmlType::Q8_0 || t.ty == GgmlType::F32)
        );
        let p = plan(s, Quant::F16);
        assert!(
            p.iter()
                .all(|t| t.ty == GgmlType::F16 || t.ty == GgmlType::F32)
        );
    }

    #[test]
    fn fallbacks_for_rows_not_multiple_of_256() {
        assert_eq!(Quant::Q4KM.tensor_type(Role::Plain, 2, 64), GgmlType::Q5_0);
        assert_eq!(Quant::Q4KM.tensor_type(Role::Output, 2, 64), GgmlType::Q8_0);
        assert_eq!(Quant::Q4_0.tensor_type(Role::Plain, 2, 48), GgmlType::F16);
    }

    #[test]
    fn tiny_synth_is_readable_and_sane() {
        let dir = std::env::temp_dir().join(format!("zeta-synth-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for q in [Quant::F16, Quant::Q8_0, Quant::Q4_0, Quant::Q4KM] {
            let path = dir.join(format!("tiny-{}.gguf", q.name()));
            synth(shape("tiny").unwrap(), q, 1, &path, &mut |_, _| {}).unwrap();
            let g = zeta_gguf::Gguf::open(&path).unwrap();
            assert_eq!(g.get_str("general.architecture").unwrap(), "llama");
            assert_eq!(g.get_u32("general.file_type").unwrap(), q.file_type());
            assert_eq!(g.get_u32("llama.block_count").unwrap(), 2);
            assert_eq!(g.get_array("tokenizer.ggml.tokens").unwrap().len(), 320);
            assert_eq!(g.tensors().len(), 3 + 2 * 9);
            for t in g.tensors() {
                let mut w = vec![0f32; t.n_elements() as usize];
                zeta_quant::dequantize(t.ggml_type, g.tensor_data(t), &mut w).unwrap();
                assert!(w.iter().all(|x| x.is_finite()), "{}", t.name);
                if t.name.ends_with("norm.weight") {
                    assert!(w.iter().all(|&x| x == 1.0));
                } else {
                    let std = (w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32).sqrt();
                    assert!((0.012..0.03).contains(&std), "{}: std {std}", t.name);
                }
            }
            // same seed → same bytes
            let again = dir.join("again.gguf");
            synth(shape("tiny").unwrap(), q, 1, &again, &mut |_, _| {}).unwrap();
            assert_eq!(
                std::fs::read(&path).unwrap(),
                std::fs::read(&again).unwrap()
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
