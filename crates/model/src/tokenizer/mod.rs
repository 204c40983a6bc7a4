//! Tokenizer built from a GGUF file's vocabulary, token-for-token identical to
//! llama.cpp's `llama_tokenize` / `llama_token_to_piece` / `llama_detokenize`
//! (reference: llama.cpp 0c1e570, `src/llama-vocab.cpp` and `src/unicode.cpp`).
//!
//! Two vocabulary kinds are supported:
//! - [`TokenizerKind::Spm`] (`tokenizer.ggml.model = "llama"`): SentencePiece-style
//!   score-driven merging with `<0xXX>` byte fallback (module `spm`), e.g. Gemma 3, Llama 2.
//! - [`TokenizerKind::Bpe`] (`tokenizer.ggml.model = "gpt2"`): GPT-2 byte-level BPE with
//!   merge ranks (module `bpe`) after a regex pre-tokenizer chosen by `tokenizer.ggml.pre`
//!   (module `unicode`): `default`, the Llama 3 family (`llama-bpe`, `llama3`, …, `dbrx`,
//!   `smaug-bpe`), the SmolLM/StarCoder family (`smollm`, `starcoder`, `refact`,
//!   `command-r`, `codeshell`, `exaone`, `minerva-7b`, `mellum2`), the GPT-2 family
//!   (`gpt-2`, `phi-2`, `mpt`, `olmo`, `jais`, …) and the Qwen 2 family (`qwen2`,
//!   `deepseek-r1-qwen`, `stablelm2`, `megrez`, `hunyuan`, `solar-open`, …). Any other
//!   pre-tokenizer name is a [`TokenizerError::UnsupportedPre`] error rather than a
//!   silently different tokenization.
//!
//! Pipeline of [`Tokenizer::encode`]: (1) special-token partitioning: control,
//! unknown and user-defined tokens written in the text become their ids, longest
//! token text first, exactly as llama.cpp's `tokenizer_st_partition` (user-defined
//! tokens are always matched; control/unknown ones only with `parse_special`);
//! (2) each remaining text fragment is tokenized on its own; (3) BOS/EOS are added per
//! `tokenizer.ggml.add_bos_token` / `add_eos_token` when `add_special`.
//! The special-token metadata is interpreted as llama.cpp does at load time,
//! including its text-based fix-ups: EOT/EOM/FIM detection by token text, the EOG set
//! (`<|im_end|>`, `<end_of_turn>`, `<|endoftext|>`, `</s>`, … plus eos/eot/eom), control
//! tokens named `unused` marked unused, and the Phi-3 / `<mask>` strip attributes.
//!
//! Why not the `tokenizers` crate: it needs a `tokenizer.json` (a GGUF holds only the
//! vocabulary, scores, merges and a pre-tokenizer *name*), and even when fed an
//! equivalent configuration it is not llama.cpp: llama.cpp's SPM is a bigram-by-score
//! merge (not SentencePiece's unigram/BPE model), its pre-tokenizers are hand-written
//! scanners that deviate from the regexes they stand for in corner cases, and its
//! special-token partitioning is longest-token-first over the whole text rather than
//! HF's leftmost-longest trie. Exact id equality with llama.cpp is the bar here, so
//! each of those pieces is re-implemented from llama.cpp's source (and checked against
//! golden ids from the reference build: `crates/model/tests/tokenizer_golden.rs`).
//!
//! Known, documented divergences (none affects the golden corpus): llama.cpp scans
//! its `unordered_map` of token texts in hash order when it auto-detects EOT/EOM/FIM
//! tokens; with several candidates for one role we take the lowest id. Special tokens of
//! equal text length are tried in ascending id order (llama.cpp: unspecified `std::sort`
//! order), which only matters for overlapping equal-length special tokens. Where llama.cpp
//! would throw or abort (a missing `<0xXX>` byte token in an SPM vocabulary, BOS requested
//! but absent, a Phi-3-named vocabulary without `</s>`/`<unk>`/`<s>`/`<|endoftext|>`) we
//! return an error or skip the missing token instead.
//!
//! The pre-tokenizers are ports of llama.cpp's scanners, not regexes: a regex engine
//! (fancy-regex included) follows the pattern and so disagrees with llama.cpp exactly
//! where llama.cpp's scanners deviate from it. Unicode categories come from a table
//! generated for Unicode 15.1, the version llama.cpp's `unicode-data.cpp` was built from.
//!
//! Input limit: [`MAX_INPUT_BYTES`]. SPM and BPE merging are O(n log n) in the input
//! length; special-token partitioning is one Aho-Corasick pass plus one linear scan per
//! distinct special token that occurs in the text.

mod bpe;
mod spm;
mod stream;
mod unicode;
mod unicode_table;

pub use stream::StreamDecoder;

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use aho_corasick::AhoCorasick;
use zeta_gguf::{Gguf, GgufError, Value};

use unicode::Split;

/// Longest text [`Tokenizer::encode`] accepts, in bytes (16 MiB: far beyond any context).
pub const MAX_INPUT_BYTES: usize = 16 << 20;

/// Errors from loading a vocabulary or encoding text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// A required metadata key is absent.
    #[error("tokenizer: missing metadata key `{0}`")]
    MissingKey(&'static str),
    /// A metadata value has the wrong type or an impossible value.
    #[error("tokenizer: metadata `{key}`: {msg}")]
    BadMetadata { key: &'static str, msg: String },
    /// `tokenizer.ggml.model` names a tokenizer zeta does not implement.
    #[error(
        "tokenizer: unsupported tokenizer model {0:?} (supported: \"llama\" = SPM, \"gpt2\" = BPE)"
    )]
    UnsupportedModel(String),
    /// `tokenizer.ggml.pre` names a pre-tokenizer zeta does not implement.
    #[error("tokenizer: unsupported BPE pre-tokenizer {0:?}")]
    UnsupportedPre(String),
    /// Reading metadata failed.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// `add_special` asks for a BOS/EOS token the vocabulary does not have.
    #[error("tokenizer: the vocabulary asks for a {0} token but defines none")]
    MissingSpecial(&'static str),
    /// SPM byte fallback found no `<0xXX>` token for a byte.
    #[error("tokenizer: the vocabulary has no byte token for byte 0x{0:02X}")]
    NoByteToken(u8),
    /// The input is longer than [`MAX_INPUT_BYTES`].
    #[error("tokenizer: input of {len} bytes is longer than the {max}-byte limit")]
    TooLong { len: usize, max: usize },
}

/// Which algorithm the vocabulary uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerKind {
    /// SentencePiece-style (`tokenizer.ggml.model = "llama"`).
    Spm,
    /// GPT-2 byte-level BPE (`tokenizer.ggml.model = "gpt2"`).
    Bpe,
}

// llama_token_attr bits.
const ATTR_UNKNOWN: u32 = 1 << 0;
const ATTR_UNUSED: u32 = 1 << 1;
const ATTR_NORMAL: u32 = 1 << 2;
const ATTR_CONTROL: u32 = 1 << 3;
const ATTR_USER_DEFINED: u32 = 1 << 4;
const ATTR_BYTE: u32 = 1 << 5;
const ATTR_LSTRIP: u32 = 1 << 7;
const ATTR_RSTRIP: u32 = 1 << 8;

/// Every token's text in one buffer, and the ids sorted by text for the
/// text → id lookup (a 262k-token vocabulary takes ~4 MB this way instead of
/// ~30 MB as a `Vec<String>` plus a `HashMap<String, u32>`).
pub(crate) struct Texts {
    /// The texts one after another.
    arena: String,
    /// `arena[ends[i - 1]..ends[i]]` is token i's text.
    ends: Vec<usize>,
    /// Ids by (text ascending, id descending): the first of equal texts is
    /// the last id, the one a map filled in id order would keep.
    sorted: Vec<u32>,
}

impl Texts {
    fn new<S: AsRef<str>>(words: impl Iterator<Item = S>) -> Self {
        let mut arena = String::new();
        let mut ends = Vec::new();
        for w in words {
            arena.push_str(w.as_ref());
            ends.push(arena.len());
        }
        let mut t = Texts {
            arena,
            ends,
            sorted: Vec::new(),
        };
        let mut sorted: Vec<u32> = (0..t.ends.len() as u32).collect();
        sorted
            .sort_unstable_by(|&a, &b| t.text(a as usize).cmp(t.text(b as usize)).then(b.cmp(&a)));
        t.sorted = sorted;
        t
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Token `id`'s text (`None` outside the vocabulary).
    fn get(&self, id: usize) -> Option<&str> {
        let end = *self.ends.get(id)?;
        let start = if id == 0 { 0 } else { self.ends[id - 1] };
        self.arena.get(start..end)
    }

    /// Token `id`'s text, empty outside the vocabulary.
    fn text(&self, id: usize) -> &str {
        self.get(id).unwrap_or("")
    }

    /// The (last) id whose text is `text`.
    fn find(&self, text: &str) -> Option<u32> {
        let i = self
            .sorted
            .partition_point(|&id| self.text(id as usize) < text);
        let id = *self.sorted.get(i)?;
        (self.text(id as usize) == text).then_some(id)
    }
}

/// Token texts, scores, attributes and the text → id map.
pub(crate) struct Vocab {
    texts: Texts,
    scores: Vec<f32>,
    attrs: Vec<u32>,
    max_token_len: usize,
    /// SPM byte fallback: `<0xXX>` (or the byte itself) per byte value.
    byte_tokens: [Option<u32>; 256],
}

impl Vocab {
    fn text_to_token(&self, text: &str) -> Option<u32> {
        self.texts.find(text)
    }

    fn score(&self, id: u32) -> f32 {
        self.scores.get(id as usize).copied().unwrap_or(0.0)
    }

    fn attr(&self, id: u32) -> u32 {
        self.attrs.get(id as usize).copied().unwrap_or(0)
    }

    fn spm_byte_to_token(&self, b: u8) -> Result<u32, TokenizerError> {
        self.byte_tokens[usize::from(b)].ok_or(TokenizerError::NoByteToken(b))
    }
}

/// BPE-only data: pre-tokenizer, byte mapping and merge ranks.
pub(crate) struct BpeData {
    splits: &'static [Split],
    byte_to_char: [char; 256],
    /// GPT-2 printable code point (all < 0x144) → byte.
    char_to_byte: HashMap<char, u8>,
    ignore_merges: bool,
    /// Interned merge halves.
    parts: HashMap<String, u32>,
    /// (left part, right part) → rank (first occurrence wins, as `emplace`).
    ranks: HashMap<(u32, u32), u32>,
}

impl BpeData {
    fn rank(&self, left: &str, right: &str) -> Option<u32> {
        let l = *self.parts.get(left)?;
        let r = *self.parts.get(right)?;
        self.ranks.get(&(l, r)).copied()
    }
}

/// Pre-tokenizer settings per `tokenizer.ggml.pre` (llama.cpp `llama_vocab::impl::load`).
struct PreCfg {
    splits: &'static [Split],
    ignore_merges: bool,
    add_bos: bool,
    clean_spaces: bool,
}

fn pre_config(pre: &str) -> Option<PreCfg> {
    const DEFAULT: &[Split] = &[
        Split::PunctRun,
        Split::Gpt2,
        Split::NumberRun,
        Split::Digits3,
    ];
    const LLAMA3: &[Split] = &[Split::Llama3];
    const SMOLLM: &[Split] = &[Split::EachNumber, Split::Gpt2];
    const GPT2: &[Split] = &[Split::Gpt2];
    const QWEN2: &[Split] = &[Split::Qwen2];
    let cfg = |splits, ignore_merges, add_bos, clean_spaces| PreCfg {
        splits,
        ignore_merges,
        add_bos,
        clean_spaces,
    };
    Some(match pre {
        "" | "default" => cfg(DEFAULT, false, false, true),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => cfg(LLAMA3, true, true, true),
        "dbrx" | "smaug-bpe" => cfg(LLAMA3, false, false, true),
        "smollm" | "command-r" => cfg(SMOLLM, false, false, false),
        "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
            cfg(SMOLLM, false, false, true)
        }
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
        | "a.x-4.0" | "mellum" | "modern-bert" | "mpt" | "olmo" | "jais" | "exaone4" => {
            cfg(GPT2, false, false, true)
        }
        "trillion" | "granite-docling" => cfg(GPT2, false, false, false),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "hunyuan" | "solar-open" => {
            cfg(QWEN2, false, false, false)
        }
        "stablelm2" | "megrez" => cfg(QWEN2, false, false, true),
        _ => return None,
    })
}

/// A text fragment (byte range of the input) or an already-resolved special token.
#[derive(Debug, Clone, Copy)]
enum Frag {
    Text(usize, usize),
    Token(u32),
}

/// The vocabulary of a GGUF model and llama.cpp-identical (de)tokenization.
pub struct Tokenizer {
    vocab: Vocab,
    kind: TokenizerKind,
    pre: String,
    bpe: Option<BpeData>,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    remove_extra_whitespaces: bool,
    clean_spaces: bool,
    eog: BTreeSet<u32>,
    /// Control/user-defined/unknown token ids, longest text first.
    special_cache: Vec<u32>,
    /// Matches the texts of `special_cache` (same order): which of them occur at all.
    special_ac: Option<AhoCorasick>,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.kind)
            .field("pre", &self.pre)
            .field("n_vocab", &self.vocab.texts.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("eog", &self.eog)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .field("add_space_prefix", &self.add_space_prefix)
            .finish_non_exhaustive()
    }
}

fn opt_value<'g>(g: &'g Gguf, key: &'static str) -> Option<&'g Value> {
    g.get(key)
}

fn opt_str<'g>(g: &'g Gguf, key: &'static str) -> Result<Option<&'g str>, TokenizerError> {
    match opt_value(g, key) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(Some)
            .ok_or_else(|| TokenizerError::BadMetadata {
                key,
                msg: format!("expected a string, found {}", v.type_name()),
            }),
    }
}

fn opt_bool(g: &Gguf, key: &'static str) -> Result<Option<bool>, TokenizerError> {
    match opt_value(g, key) {
        None => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| TokenizerError::BadMetadata {
                key,
                msg: format!("expected a bool, found {}", v.type_name()),
            }),
    }
}

fn opt_u32(g: &Gguf, key: &'static str) -> Result<Option<u32>, TokenizerError> {
    match opt_value(g, key) {
        None => Ok(None),
        Some(v) => match v.as_u64().and_then(|x| u32::try_from(x).ok()) {
            Some(x) => Ok(Some(x)),
            None => Err(TokenizerError::BadMetadata {
                key,
                msg: format!("expected a token id (u32), found {v:?}"),
            }),
        },
    }
}

fn array_of<'g>(
    g: &'g Gguf,
    key: &'static str,
) -> Result<Option<&'g zeta_gguf::Array>, TokenizerError> {
    match opt_value(g, key) {
        None => Ok(None),
        Some(v) => v
            .as_array()
            .map(Some)
            .ok_or_else(|| TokenizerError::BadMetadata {
                key,
                msg: format!("expected an array, found {}", v.type_name()),
            }),
    }
}

const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// C `isspace` in the "C" locale.
fn c_isspace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

impl Tokenizer {
    /// Build the tokenizer from a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(g: &Gguf) -> Result<Self, TokenizerError> {
        const K_MODEL: &str = "tokenizer.ggml.model";
        const K_TOKENS: &str = "tokenizer.ggml.tokens";
        const K_SCORES: &str = "tokenizer.ggml.scores";
        const K_TYPES: &str = "tokenizer.ggml.token_type";
        const K_MERGES: &str = "tokenizer.ggml.merges";

        let model = opt_str(g, K_MODEL)?.ok_or(TokenizerError::MissingKey(K_MODEL))?;
        let pre = opt_str(g, "tokenizer.ggml.pre")?.unwrap_or("").to_owned();

        // Per-kind defaults (llama.cpp: special ids, then flags).
        let kind;
        let mut bos: Option<u32>;
        let mut eos: Option<u32>;
        let mut unk: Option<u32>;
        let mut add_space_prefix;
        let mut add_bos;
        let clean_spaces;
        let mut pre_cfg = None;
        match model {
            "llama" => {
                kind = TokenizerKind::Spm;
                (bos, eos, unk) = (Some(1), Some(2), Some(0));
                add_space_prefix = true;
                add_bos = true;
                clean_spaces = false;
            }
            "gpt2" => {
                kind = TokenizerKind::Bpe;
                (bos, eos, unk) = (Some(11), Some(11), None);
                let cfg =
                    pre_config(&pre).ok_or_else(|| TokenizerError::UnsupportedPre(pre.clone()))?;
                add_space_prefix = false;
                add_bos = cfg.add_bos;
                clean_spaces = cfg.clean_spaces;
                pre_cfg = Some(cfg);
            }
            other => return Err(TokenizerError::UnsupportedModel(other.to_owned())),
        }
        let mut add_eos = false;
        if let Some(v) = opt_bool(g, "tokenizer.ggml.add_space_prefix")? {
            add_space_prefix = v;
        }
        let remove_extra_whitespaces =
            opt_bool(g, "tokenizer.ggml.remove_extra_whitespaces")?.unwrap_or(false);

        // Tokens, scores, types.
        let tokens_arr = array_of(g, K_TOKENS)?.ok_or(TokenizerError::MissingKey(K_TOKENS))?;
        let raw_tokens = tokens_arr
            .as_strings()
            .ok_or_else(|| TokenizerError::BadMetadata {
                key: K_TOKENS,
                msg: format!(
                    "expected an array of strings, found {}",
                    tokens_arr.type_name()
                ),
            })?;
        let n = raw_tokens.len();
        if n == 0 || n > i32::MAX as usize {
            return Err(TokenizerError::BadMetadata {
                key: K_TOKENS,
                msg: format!("{n} tokens"),
            });
        }
        let scores: Vec<f32> = match array_of(g, K_SCORES)? {
            None => vec![0.0; n],
            Some(a) => {
                let s: Vec<f32> = if let Some(f) = a.as_f32() {
                    f.to_vec()
                } else if let Some(i) = a.as_i32() {
                    i.iter().map(|&x| x as f32).collect()
                } else {
                    return Err(TokenizerError::BadMetadata {
                        key: K_SCORES,
                        msg: format!("expected f32 or i32 elements, found {}", a.type_name()),
                    });
                };
                if s.len() < n {
                    return Err(TokenizerError::BadMetadata {
                        key: K_SCORES,
                        msg: format!("{} scores for {n} tokens", s.len()),
                    });
                }
                s
            }
        };
        let types: Option<&[i32]> = match array_of(g, K_TYPES)? {
            None => None,
            Some(a) => {
                let t = a.as_i32().ok_or_else(|| TokenizerError::BadMetadata {
                    key: K_TYPES,
                    msg: format!("expected i32 elements, found {}", a.type_name()),
                })?;
                if t.len() < n {
                    return Err(TokenizerError::BadMetadata {
                        key: K_TYPES,
                        msg: format!("{} token types for {n} tokens", t.len()),
                    });
                }
                Some(t)
            }
        };

        let mut attrs = Vec::with_capacity(n);
        let mut max_token_len = 0;
        let words = raw_tokens.iter().enumerate().map(|(i, word)| {
            if word.is_empty() {
                std::borrow::Cow::Owned(format!("[EMPTY_{i}]"))
            } else {
                std::borrow::Cow::Borrowed(word.as_str())
            }
        });
        let texts = Texts::new(words);
        for i in 0..n {
            max_token_len = max_token_len.max(texts.text(i).len());
            attrs.push(match types.map(|t| t[i]) {
                None | Some(1) => ATTR_NORMAL,
                Some(2) => ATTR_UNKNOWN,
                Some(3) => ATTR_CONTROL,
                Some(4) => ATTR_USER_DEFINED,
                Some(5) => ATTR_UNUSED,
                Some(6) => ATTR_BYTE,
                Some(_) => 0,
            });
        }
        let mut byte_tokens = [None; 256];
        if kind == TokenizerKind::Spm {
            for (b, slot) in byte_tokens.iter_mut().enumerate() {
                *slot = texts.find(&format!("<0x{b:02X}>")).or_else(|| {
                    u8::try_from(b)
                        .ok()
                        .filter(u8::is_ascii)
                        .and_then(|b| texts.find(char::from(b).encode_utf8(&mut [0; 4])))
                });
            }
        }
        let mut vocab = Vocab {
            texts,
            scores: scores[..n].to_vec(),
            attrs,
            max_token_len,
            byte_tokens,
        };

        // BPE merges.
        let bpe = match pre_cfg {
            None => None,
            Some(cfg) => {
                let merges_arr =
                    array_of(g, K_MERGES)?.ok_or(TokenizerError::MissingKey(K_MERGES))?;
                let merges =
                    merges_arr
                        .as_strings()
                        .ok_or_else(|| TokenizerError::BadMetadata {
                            key: K_MERGES,
                            msg: format!(
                                "expected an array of strings, found {}",
                                merges_arr.type_name()
                            ),
                        })?;
                let mut parts: HashMap<String, u32> = HashMap::new();
                let mut ranks = HashMap::with_capacity(merges.len());
                let mut intern = |s: &str| -> u32 {
                    if let Some(&id) = parts.get(s) {
                        return id;
                    }
                    let id = parts.len() as u32;
                    parts.insert(s.to_owned(), id);
                    id
                };
                for (rank, m) in merges.iter().enumerate() {
                    // llama.cpp: split at the first space after byte 0; no space → ("", "").
                    // (byte search: the first character may be multi-byte, e.g. "Ġ")
                    let space = m.as_bytes().iter().skip(1).position(|&b| b == b' ');
                    let (first, second) = match space {
                        Some(p) => (m.get(..p + 1).unwrap_or(""), m.get(p + 2..).unwrap_or("")),
                        None => ("", ""),
                    };
                    let key = (intern(first), intern(second));
                    ranks.entry(key).or_insert(rank as u32);
                }
                let byte_to_char = unicode::byte_to_char_table();
                let char_to_byte = byte_to_char
                    .iter()
                    .enumerate()
                    .map(|(b, &c)| (c, b as u8))
                    .collect();
                Some(BpeData {
                    splits: cfg.splits,
                    byte_to_char,
                    char_to_byte,
                    ignore_merges: cfg.ignore_merges,
                    parts,
                    ranks,
                })
            }
        };

        // Special token ids: defaults out of range are disabled; an out-of-range
        // value in the file keeps the default. The deprecated prefix/suffix/middle
        // keys come last and write the FIM slots, as in llama.cpp.
        let mut eot = None;
        let mut eom = None;
        let mut sep = None;
        let mut pad = None;
        let mut mask = None;
        let (mut fim_pre, mut fim_suf, mut fim_mid) = (None, None, None);
        let (mut fim_pad, mut fim_rep, mut fim_sep) = (None, None, None);
        special_id(g, "tokenizer.ggml.bos_token_id", &mut bos, n)?;
        special_id(g, "tokenizer.ggml.eos_token_id", &mut eos, n)?;
        special_id(g, "tokenizer.ggml.eot_token_id", &mut eot, n)?;
        special_id(g, "tokenizer.ggml.eom_token_id", &mut eom, n)?;
        special_id(g, "tokenizer.ggml.unknown_token_id", &mut unk, n)?;
        special_id(g, "tokenizer.ggml.seperator_token_id", &mut sep, n)?;
        special_id(g, "tokenizer.ggml.padding_token_id", &mut pad, n)?;
        special_id(g, "tokenizer.ggml.mask_token_id", &mut mask, n)?;
        special_id(g, "tokenizer.ggml.fim_pre_token_id", &mut fim_pre, n)?;
        special_id(g, "tokenizer.ggml.fim_suf_token_id", &mut fim_suf, n)?;
        special_id(g, "tokenizer.ggml.fim_mid_token_id", &mut fim_mid, n)?;
        special_id(g, "tokenizer.ggml.fim_pad_token_id", &mut fim_pad, n)?;
        special_id(g, "tokenizer.ggml.fim_rep_token_id", &mut fim_rep, n)?;
        special_id(g, "tokenizer.ggml.fim_sep_token_id", &mut fim_sep, n)?;
        special_id(g, "tokenizer.ggml.prefix_token_id", &mut fim_pre, n)?;
        special_id(g, "tokenizer.ggml.suffix_token_id", &mut fim_suf, n)?;
        special_id(g, "tokenizer.ggml.middle_token_id", &mut fim_mid, n)?;
        // `sep` and `mask` are read (and validated) as llama.cpp does; tokenization never uses them.
        let _ = (sep, mask);
        if let Some(v) = opt_bool(g, "tokenizer.ggml.add_bos_token")? {
            add_bos = v;
        }
        if let Some(v) = opt_bool(g, "tokenizer.ggml.add_eos_token")? {
            add_eos = v;
        }

        // Auto-detect EOT/EOM/FIM by text; the chosen token becomes control. (llama.cpp
        // scans its text → id map in hash order; with several candidates we take the
        // lowest id. Only the id `Texts::find` maps a text to takes part, as there.)
        {
            let roles: [(&mut Option<u32>, &[&str]); 8] = [
                (&mut eot, EOT_TEXTS),
                (&mut eom, EOM_TEXTS),
                (&mut fim_pre, FIM_PRE_TEXTS),
                (&mut fim_suf, FIM_SUF_TEXTS),
                (&mut fim_mid, FIM_MID_TEXTS),
                (&mut fim_pad, FIM_PAD_TEXTS),
                (&mut fim_rep, FIM_REP_TEXTS),
                (&mut fim_sep, FIM_SEP_TEXTS),
            ];
            for (slot, texts) in roles {
                if slot.is_some() {
                    continue;
                }
                let found = texts.iter().filter_map(|t| vocab.text_to_token(t)).min();
                if let Some(id) = found {
                    *slot = Some(id);
                    vocab.attrs[id as usize] |= ATTR_CONTROL;
                }
            }
        }

        // Control tokens with "unused" in their text are unused.
        for id in 0..n {
            let text = vocab.texts.text(id);
            if vocab.attrs[id] & ATTR_CONTROL != 0
                && text.contains("unused")
                && vocab.texts.find(text) == Some(id as u32)
            {
                vocab.attrs[id] |= ATTR_UNUSED;
            }
        }

        // End-of-generation set.
        let mut eog = BTreeSet::new();
        for id in [fim_pad, fim_rep, fim_sep].into_iter().flatten() {
            eog.insert(id);
        }
        for t in EOG_TEXTS {
            if let Some(id) = vocab.text_to_token(t) {
                eog.insert(id);
                vocab.attrs[id as usize] |= ATTR_CONTROL;
            }
        }
        for t in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let Some(id) = vocab.text_to_token(t) {
                vocab.attrs[id as usize] = ATTR_USER_DEFINED;
            }
        }
        for id in [eos, eot, eom].into_iter().flatten() {
            eog.insert(id);
        }
        {
            let find = |eog: &BTreeSet<u32>, t: &str| {
                eog.iter()
                    .copied()
                    .find(|&id| vocab.texts.text(id as usize) == t)
            };
            let has_call = find(&eog, "<|call|>").is_some() || find(&eog, "<|calls|>").is_some();
            // (<|return|> and <|call|>) or (<|calls|> and <|flush|>) → <|end|> is not EOG
            let drop_end = has_call
                && (find(&eog, "<|return|>").is_some() || find(&eog, "<|flush|>").is_some());
            let end_id = find(&eog, "<|end|>");
            let has_marker =
                find(&eog, "<|tool_response>").is_some() || find(&eog, "<|plamo:eos|>").is_some();
            let s_id = find(&eog, "</s>");
            if let (Some(end_id), true) = (end_id, drop_end) {
                eog.remove(&end_id);
                vocab.attrs[end_id as usize] = ATTR_USER_DEFINED;
            }
            // (llama.cpp re-scans the set after the removal; `<|end|>` is not a marker.)
            if let (Some(s_id), true) = (s_id, has_marker) {
                eog.remove(&s_id);
                vocab.attrs[s_id as usize] = ATTR_NORMAL;
            }
        }

        // Special-token cache: longest text first.
        let mut special_cache: Vec<u32> = (0..n as u32)
            .filter(|&id| {
                vocab.attrs[id as usize] & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN) != 0
            })
            .collect();
        special_cache.sort_by_key(|&id| std::cmp::Reverse(vocab.texts.text(id as usize).len()));

        // Per-model strip attributes.
        {
            let name = opt_str(g, "general.name")?.unwrap_or("").to_lowercase();
            let arch = opt_str(g, "general.architecture")?.unwrap_or("");
            let contains_any = |s: &str, subs: &[&str]| subs.iter().any(|x| s.contains(x));
            if contains_any(&pre, &["jina-v2-de", "jina-v2-es", "jina-v2-code"])
                || contains_any(arch, &["nomic-bert-moe", "jina-bert-v3"])
            {
                set_attr(&mut vocab, "<mask>", ATTR_LSTRIP, true);
            } else if contains_any(&name, &["phi-3", "phi3"]) {
                for &id in &special_cache {
                    vocab.attrs[id as usize] |= ATTR_RSTRIP;
                }
                set_attr(&mut vocab, "</s>", ATTR_RSTRIP, true);
                for t in ["<unk>", "<s>", "<|endoftext|>"] {
                    set_attr(&mut vocab, t, ATTR_RSTRIP, false);
                }
            } else if name.contains("modern-bert") {
                set_attr(&mut vocab, "[MASK]", ATTR_LSTRIP, true);
            }
        }

        let special_ac = if special_cache.is_empty() {
            None
        } else {
            // A contiguous NFA builds fast (thousands of patterns in Gemma) and only
            // answers "which special tokens occur at all".
            AhoCorasick::builder()
                .kind(Some(aho_corasick::AhoCorasickKind::ContiguousNFA))
                .build(
                    special_cache
                        .iter()
                        .map(|&id| vocab.texts.text(id as usize)),
                )
                .ok()
        };

        Ok(Tokenizer {
            vocab,
            kind,
            pre,
            bpe,
            bos,
            eos,
            eot,
            unk,
            pad,
            add_bos,
            add_eos,
            add_space_prefix,
            remove_extra_whitespaces,
            clean_spaces,
            eog,
            special_cache,
            special_ac,
        })
    }

    /// Tokenize `text` exactly as `llama_tokenize(vocab, text, add_special, parse_special)`.
    ///
    /// `add_special`: add BOS/EOS as the model's flags say. `parse_special`: control
    /// tokens written in the text (e.g. `<|im_start|>`) become their ids; without it they
    /// are tokenized as plain text (user-defined tokens are matched either way).
    pub fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        if text.len() > MAX_INPUT_BYTES {
            return Err(TokenizerError::TooLong {
                len: text.len(),
                max: MAX_INPUT_BYTES,
            });
        }
        let frags = self.partition(text, parse_special);
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.push(self.bos.ok_or(TokenizerError::MissingSpecial("BOS"))?);
        }
        match (self.kind, &self.bpe) {
            (TokenizerKind::Bpe, Some(bpe)) => {
                for f in frags {
                    match f {
                        Frag::Token(id) => out.push(id),
                        Frag::Text(a, b) => {
                            bpe::tokenize(&self.vocab, bpe, text.get(a..b).unwrap_or(""), &mut out)
                        }
                    }
                }
            }
            _ => {
                // Prefix a space when the fragment follows a special token (or starts the text).
                let mut is_prev_special = true;
                let mut buf = String::new();
                for f in frags {
                    match f {
                        Frag::Token(id) => {
                            out.push(id);
                            is_prev_special = true;
                        }
                        Frag::Text(a, b) => {
                            buf.clear();
                            if self.add_space_prefix && is_prev_special {
                                buf.push('▁');
                            }
                            for ch in text.get(a..b).unwrap_or("").chars() {
                                buf.push(if ch == ' ' { '▁' } else { ch });
                            }
                            spm::tokenize(&self.vocab, &buf, &mut out)?;
                            is_prev_special = false;
                        }
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.push(self.eos.ok_or(TokenizerError::MissingSpecial("EOS"))?);
        }
        Ok(out)
    }

    /// llama.cpp's `tokenizer_st_partition`: split out special tokens, longest first.
    fn partition(&self, text: &str, parse_special: bool) -> Vec<Frag> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut frags = vec![Frag::Text(0, text.len())];
        // Which special tokens occur in the text at all (a token that does not
        // occur in the whole text cannot occur in any fragment of it).
        let present: Vec<bool> = match &self.special_ac {
            Some(ac) => {
                let mut p = vec![false; self.special_cache.len()];
                for m in ac.find_overlapping_iter(text) {
                    p[m.pattern().as_usize()] = true;
                }
                p
            }
            None => self
                .special_cache
                .iter()
                .map(|&id| text.contains(self.vocab.texts.text(id as usize)))
                .collect(),
        };
        let bytes = text.as_bytes();
        for (k, &sid) in self.special_cache.iter().enumerate() {
            if !present[k] {
                continue;
            }
            let attr = self.vocab.attr(sid);
            if !parse_special && attr & (ATTR_CONTROL | ATTR_UNKNOWN) != 0 {
                continue;
            }
            let pat = self.vocab.texts.text(sid as usize);
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags.drain(..) {
                let Frag::Text(mut off, end) = f else {
                    next.push(f);
                    continue;
                };
                loop {
                    let Some(rel) = text.get(off..end).and_then(|s| s.find(pat)) else {
                        if end > off {
                            next.push(Frag::Text(off, end));
                        }
                        break;
                    };
                    let m = off + rel;
                    if m > off {
                        let mut l_end = m;
                        if attr & ATTR_LSTRIP != 0 {
                            while l_end > off && c_isspace(bytes[l_end - 1]) {
                                l_end -= 1;
                            }
                        }
                        if l_end > off {
                            next.push(Frag::Text(off, l_end));
                        }
                    }
                    next.push(Frag::Token(sid));
                    let r = m + pat.len();
                    if r >= end {
                        break;
                    }
                    off = r;
                    if attr & ATTR_RSTRIP != 0 {
                        while off < end && c_isspace(bytes[off]) {
                            off += 1;
                        }
                    }
                }
            }
            frags = next;
        }
        frags
    }

    /// The bytes token `id` stands for, as `llama_token_to_piece(vocab, id, buf, len, 0, special)`:
    /// control and unknown tokens render only when `special`; byte tokens give one raw byte;
    /// SPM `▁` becomes a space; BPE pieces are mapped back from GPT-2's byte alphabet.
    /// An id outside the vocabulary gives an empty piece.
    pub fn token_to_piece(&self, id: u32, special: bool) -> Vec<u8> {
        let Some(text) = self.vocab.texts.get(id as usize) else {
            return Vec::new();
        };
        let attr = self.vocab.attr(id);
        if !special && attr & (ATTR_UNKNOWN | ATTR_CONTROL) != 0 {
            return Vec::new();
        }
        if attr & (ATTR_UNKNOWN | ATTR_CONTROL | ATTR_USER_DEFINED) != 0 {
            return text.as_bytes().to_vec();
        }
        if attr & ATTR_NORMAL != 0 {
            return match &self.bpe {
                None => text.replace('▁', " ").into_bytes(),
                Some(bpe) => decode_bpe_text(bpe, text),
            };
        }
        if attr & ATTR_BYTE != 0 {
            return vec![parse_byte_token(text)];
        }
        Vec::new()
    }

    /// Concatenated pieces of `ids` ([`Tokenizer::token_to_piece`]), as lossy UTF-8.
    /// This is what a [`StreamDecoder`] produces; see [`Tokenizer::detokenize`] for
    /// llama.cpp's `llama_detokenize` with its space clean-up.
    pub fn decode(&self, ids: &[u32], special: bool) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend(self.token_to_piece(id, special));
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// `llama_detokenize(vocab, ids, n, buf, len, remove_special, unparse_special)`, as bytes:
    /// drops a leading BOS / trailing EOS when `remove_special` (and the model adds them),
    /// strips the space prefix of the first piece for `add_space_prefix` vocabularies, and
    /// applies `clean_up_tokenization_spaces` for the BPE pre-tokenizers that use it.
    pub fn detokenize(&self, ids: &[u32], remove_special: bool, unparse_special: bool) -> Vec<u8> {
        let mut ids = ids;
        let mut remove_space = self.add_space_prefix;
        if remove_special
            && self.add_bos
            && let Some((&first, rest)) = ids.split_first()
            && Some(first) == self.bos
        {
            remove_space = false;
            ids = rest;
        }
        if remove_special
            && self.add_eos
            && let Some((&last, rest)) = ids.split_last()
            && Some(last) == self.eos
        {
            ids = rest;
        }
        let mut text = Vec::new();
        for &id in ids {
            let piece = self.token_to_piece(id, unparse_special);
            let skip = usize::from(remove_space && piece.first() == Some(&b' '));
            text.extend_from_slice(&piece[skip..]);
            remove_space = false;
        }
        if self.clean_spaces {
            clean_up_spaces(&mut text);
        }
        text
    }

    /// Vocabulary size.
    pub fn n_vocab(&self) -> usize {
        self.vocab.texts.len()
    }

    /// Beginning-of-sequence token.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// End-of-sequence token.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// End-of-turn token (from metadata, or detected by text).
    pub fn eot(&self) -> Option<u32> {
        self.eot
    }

    /// Unknown token.
    pub fn unk(&self) -> Option<u32> {
        self.unk
    }

    /// Padding token.
    pub fn pad(&self) -> Option<u32> {
        self.pad
    }

    /// True for tokens that end generation (llama.cpp's `llama_vocab_is_eog`).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// All end-of-generation tokens, ascending.
    pub fn eog_ids(&self) -> Vec<u32> {
        self.eog.iter().copied().collect()
    }

    /// True for control tokens (rendered by `token_to_piece` only with `special`).
    pub fn is_control(&self, id: u32) -> bool {
        self.vocab.attr(id) & ATTR_CONTROL != 0
    }

    /// Whether `encode(.., add_special = true, ..)` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether `encode(.., add_special = true, ..)` appends EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// `tokenizer.ggml.add_space_prefix` (SPM: a space before the first fragment).
    pub fn add_space_prefix(&self) -> bool {
        self.add_space_prefix
    }

    /// `tokenizer.ggml.remove_extra_whitespaces`, recorded as read. llama.cpp applies it
    /// only in its UGM (T5) tokenizer, so it changes nothing for SPM and BPE.
    pub fn remove_extra_whitespaces(&self) -> bool {
        self.remove_extra_whitespaces
    }

    /// The vocabulary text of `id` (e.g. `"▁the"`, `"Ġthe"`, `"<|im_end|>"`).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.vocab.texts.get(id as usize)
    }

    /// The id whose vocabulary text is exactly `text`.
    pub fn find_token(&self, text: &str) -> Option<u32> {
        self.vocab.text_to_token(text)
    }

    /// SPM or BPE.
    pub fn kind(&self) -> TokenizerKind {
        self.kind
    }

    /// `tokenizer.ggml.pre` as stored (empty when absent).
    pub fn pre(&self) -> &str {
        &self.pre
    }
}

/// Read one special-token id key into `slot` (llama.cpp semantics: a default
/// outside the vocabulary is disabled; a stored id outside it is ignored).
fn special_id(
    g: &Gguf,
    key: &'static str,
    slot: &mut Option<u32>,
    n: usize,
) -> Result<(), TokenizerError> {
    if slot.is_some_and(|id| id as usize >= n) {
        *slot = None;
    }
    if let Some(id) = opt_u32(g, key)?
        && (id as usize) < n
    {
        *slot = Some(id);
    }
    Ok(())
}

/// Set or clear `attr` on the token whose text is `text`, if any.
fn set_attr(vocab: &mut Vocab, text: &str, attr: u32, on: bool) {
    if let Some(id) = vocab.texts.find(text) {
        let a = &mut vocab.attrs[id as usize];
        *a = if on { *a | attr } else { *a & !attr };
    }
}

/// `<0xXX>` → the byte, as llama.cpp's `strtol(text.substr(3, 2), 16)`.
fn parse_byte_token(text: &str) -> u8 {
    let hex = text.as_bytes().get(3..).unwrap_or(&[]);
    let mut v: u32 = 0;
    for &c in hex.iter().take(2) {
        match char::from(c).to_digit(16) {
            Some(d) => v = v * 16 + d,
            None => break,
        }
    }
    v as u8
}

/// llama.cpp's `llama_decode_text`: GPT-2 alphabet → bytes; characters outside it
/// become `[UNK_BYTE_0x…]` markers.
fn decode_bpe_text(bpe: &BpeData, text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for ch in text.chars() {
        match bpe.char_to_byte.get(&ch) {
            Some(&b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut buf = [0u8; 4];
                for b in ch.encode_utf8(&mut buf).as_bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
    out
}

/// The three in-place passes of `llama_detokenize`'s `clean_spaces`.
fn clean_up_spaces(text: &mut Vec<u8>) {
    // first pass: " ?", " !", " .", " ,"
    let total1 = text.len();
    let mut total = usize::from(total1 > 0);
    for i in 1..total1 {
        let x = text[i];
        if text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            total -= 1;
        }
        text[total] = x;
        total += 1;
    }
    // second pass: strip a single apostrophe between spaces
    let total2 = total;
    total = usize::from(total2 > 0);
    let mut i = 1;
    while i < total2 {
        let x = text[i];
        if x == b'\'' && i + 1 < total2 && text[i - 1] == b' ' && text[i + 1] == b' ' {
            total -= 1;
            i += 1;
            text[i] = 0;
        }
        text[total] = x;
        total += 1;
        i += 1;
    }
    // third pass: apostrophe contractions " 's", " 'm", " 're", " 've"
    let total3 = total;
    total = usize::from(total3 > 0);
    for i in 1..total3 {
        let x = text[i];
        if text[i - 1] == b' ' && x == b'\'' && i + 1 < total3 {
            let x1 = text[i + 1];
            if x1 == b's' || x1 == b'm' {
                total -= 1;
            } else if x1 != b't' && x1 != b'd' && i + 2 < total3 {
                let x2 = text[i + 2];
                if x2 == b'e' && (x1 == b'r' || x1 == b'v') {
                    total -= 1;
                }
            }
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);
}
