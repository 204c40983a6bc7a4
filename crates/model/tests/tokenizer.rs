//! Tokenizer tests on tiny hand-made vocabularies (GGUF built in memory):
//! SPM merge order and byte fallback, BPE merges and round trips, special
//! tokens, EOG detection, the stream decoder, and bad metadata.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use zeta_gguf::{Array, Gguf, GgufWriter, Value};
use zeta_model::tokenizer::{StreamDecoder, Tokenizer, TokenizerError, TokenizerKind};

fn gguf(kvs: Vec<(&str, Value)>) -> Gguf {
    let mut w = GgufWriter::new();
    for (k, v) in kvs {
        w.add_kv(k, v);
    }
    let mut bytes = Vec::new();
    w.write_to(&mut bytes).unwrap();
    Gguf::from_bytes(bytes).unwrap()
}

fn strings(v: &[String]) -> Value {
    Value::Array(Array::String(v.to_vec()))
}

/// An SPM vocabulary: `<unk> <s> </s>`, 256 byte tokens, then `extra` (text, score, type).
fn spm_vocab(extra: &[(&str, f32, i32)]) -> Vec<(&'static str, Value)> {
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    let mut scores = vec![0.0f32; 3];
    let mut types = vec![2, 3, 3];
    for b in 0..256 {
        tokens.push(format!("<0x{b:02X}>"));
        scores.push(0.0);
        types.push(6);
    }
    for &(t, s, ty) in extra {
        tokens.push(t.to_string());
        scores.push(s);
        types.push(ty);
    }
    vec![
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.scores", Value::Array(Array::F32(scores))),
        ("tokenizer.ggml.token_type", Value::Array(Array::I32(types))),
    ]
}

fn spm(extra: &[(&str, f32, i32)]) -> Tokenizer {
    Tokenizer::from_gguf(&gguf(spm_vocab(extra))).unwrap()
}

fn id(tok: &Tokenizer, text: &str) -> u32 {
    tok.find_token(text)
        .unwrap_or_else(|| panic!("no token {text:?}"))
}

/// A byte-level BPE vocabulary: the 256 GPT-2 byte characters (ids 0..256 in byte
/// order), then the results of `merges`, then `extra` (text, type).
fn bpe_vocab(pre: &str, merges: &[&str], extra: &[(&str, i32)]) -> Vec<(&'static str, Value)> {
    let mut tokens: Vec<String> = (0u32..256)
        .map(|b| {
            let printable = (0x21..=0x7E).contains(&b)
                || (0xA1..=0xAC).contains(&b)
                || (0xAE..=0xFF).contains(&b);
            let cp = if printable {
                b
            } else {
                256 + (0..b)
                    .filter(|&c| {
                        !((0x21..=0x7E).contains(&c)
                            || (0xA1..=0xAC).contains(&c)
                            || (0xAE..=0xFF).contains(&c))
                    })
                    .count() as u32
            };
            char::from_u32(cp).unwrap().to_string()
        })
        .collect();
    let mut types = vec![1; 256];
    for m in merges {
        tokens.push(m.replace(' ', ""));
        types.push(1);
    }
    for &(t, ty) in extra {
        tokens.push(t.to_string());
        types.push(ty);
    }
    vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String(pre.into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.token_type", Value::Array(Array::I32(types))),
        (
            "tokenizer.ggml.merges",
            strings(&merges.iter().map(|m| m.to_string()).collect::<Vec<_>>()),
        ),
    ]
}

const MERGES: &[&str] = &["Ġ t", "h e", "Ġt he", "l l", "he ll", "hell o", "Ġ a"];

fn bpe() -> Tokenizer {
    Tokenizer::from_gguf(&gguf(bpe_vocab(
        "gpt-2",
        MERGES,
        &[("<|im_end|>", 1), ("<ctl>", 3), ("<ud>", 4)],
    )))
    .unwrap()
}

#[test]
fn spm_merges_by_score_then_leftmost() {
    // "abc": "bc" (score -0.5) beats "ab" (-1.0).
    let tok = spm(&[
        ("a", -5.0, 1),
        ("b", -5.0, 1),
        ("c", -5.0, 1),
        ("ab", -1.0, 1),
        ("bc", -0.5, 1),
        ("▁", -5.0, 1),
    ]);
    assert_eq!(tok.kind(), TokenizerKind::Spm);
    assert!(tok.add_space_prefix());
    let ids = tok.encode("abc", false, false).unwrap();
    assert_eq!(ids, vec![id(&tok, "▁"), id(&tok, "a"), id(&tok, "bc")]);

    // Equal scores: the leftmost pair merges first.
    let tok = spm(&[
        ("a", -5.0, 1),
        ("b", -5.0, 1),
        ("c", -5.0, 1),
        ("ab", -1.0, 1),
        ("bc", -1.0, 1),
        ("▁", -5.0, 1),
    ]);
    let ids = tok.encode("abc", false, false).unwrap();
    assert_eq!(ids, vec![id(&tok, "▁"), id(&tok, "ab"), id(&tok, "c")]);
}

#[test]
fn spm_space_prefix_bos_and_byte_fallback() {
    let tok = spm(&[
        ("▁", -1.0, 1),
        ("h", -2.0, 1),
        ("i", -2.0, 1),
        ("▁h", -1.5, 1),
        ("▁hi", -1.0, 1),
        ("<ctl>", 0.0, 3),
        ("<ud>", 0.0, 4),
    ]);
    assert!(tok.add_bos());
    assert_eq!(tok.bos(), Some(1));
    assert_eq!(tok.eos(), Some(2));
    let hi = id(&tok, "▁hi");
    assert_eq!(tok.encode("hi", true, false).unwrap(), vec![1, hi]);
    assert_eq!(tok.encode("", true, false).unwrap(), vec![1]);
    assert!(tok.encode("", false, false).unwrap().is_empty());
    // "é" is not a token: its two UTF-8 bytes become <0xC3> <0xA9> (ids 3 + byte).
    assert_eq!(
        tok.encode("é", false, false).unwrap(),
        vec![id(&tok, "▁"), 3 + 0xC3, 3 + 0xA9]
    );
    // Control tokens are matched only with parse_special; user-defined always.
    let ctl = id(&tok, "<ctl>");
    let ud = id(&tok, "<ud>");
    assert_eq!(tok.encode("<ctl>hi", false, true).unwrap(), vec![ctl, hi]);
    assert_ne!(tok.encode("<ctl>hi", false, false).unwrap()[0], ctl);
    assert_eq!(tok.encode("<ud>hi", false, false).unwrap(), vec![ud, hi]);
    // Pieces: ▁ is a space, bytes are raw, control only with `special`.
    assert_eq!(tok.token_to_piece(hi, false), b" hi");
    assert_eq!(tok.token_to_piece(3 + 0xC3, false), vec![0xC3]);
    assert_eq!(tok.token_to_piece(ctl, false), b"");
    assert_eq!(tok.token_to_piece(ctl, true), b"<ctl>");
    assert_eq!(tok.token_to_piece(ud, false), b"<ud>");
    assert_eq!(tok.token_to_piece(u32::MAX, true), b"");
    assert_eq!(tok.decode(&[1, hi, 3 + 0xC3, 3 + 0xA9], false), " hié");
    // llama_detokenize drops the space prefix and, with remove_special, BOS.
    assert_eq!(tok.detokenize(&[hi], false, false), b"hi");
    assert_eq!(tok.detokenize(&[1, hi], true, false), b" hi");
    assert_eq!(tok.detokenize(&[1, hi], false, true), b"<s> hi");
}

#[test]
fn spm_long_input_without_spaces_is_fast() {
    let tok = spm(&[
        ("▁", -1.0, 1),
        ("a", -2.0, 1),
        ("aa", -1.0, 1),
        ("aaaa", -0.5, 1),
    ]);
    let text = "a".repeat(100_000);
    let t0 = std::time::Instant::now();
    let ids = tok.encode(&text, false, false).unwrap();
    assert!(t0.elapsed().as_secs_f64() < 2.0);
    assert_eq!(tok.decode(&ids, false), format!(" {text}"));
}

#[test]
fn bpe_merges_by_rank() {
    let tok = bpe();
    assert_eq!(tok.kind(), TokenizerKind::Bpe);
    assert_eq!(tok.pre(), "gpt-2");
    assert_eq!(
        tok.encode(" the", false, false).unwrap(),
        vec![id(&tok, "Ġthe")]
    );
    assert_eq!(
        tok.encode("hello", false, false).unwrap(),
        vec![id(&tok, "hello")]
    );
    // "Ġ a" has a rank but the pre-tokenizer splits " a" as one word: merged.
    assert_eq!(
        tok.encode(" a", false, false).unwrap(),
        vec![id(&tok, "Ġa")]
    );
    // Byte-level: every byte is a token.
    let ids = tok.encode("é!", false, false).unwrap();
    assert_eq!(ids, vec![0xC3, 0xA9, u32::from(b'!')]);
    assert_eq!(tok.decode(&ids, false), "é!");
    // No BOS/EOS by default for gpt2 vocabularies.
    assert!(!tok.add_bos());
    assert_eq!(
        tok.encode("hello", true, false).unwrap(),
        vec![id(&tok, "hello")]
    );
}

#[test]
fn bpe_special_tokens_and_eog() {
    let tok = bpe();
    let im_end = id(&tok, "<|im_end|>");
    // "<|im_end|>" is stored as a normal token; like llama.cpp we make it control and EOG.
    assert!(tok.is_eog(im_end));
    assert!(tok.is_control(im_end));
    assert_eq!(tok.eot(), Some(im_end));
    assert_eq!(
        tok.encode("a<|im_end|>", false, true).unwrap(),
        vec![u32::from(b'a'), im_end]
    );
    assert!(
        !tok.encode("a<|im_end|>", false, false)
            .unwrap()
            .contains(&im_end)
    );
    assert_eq!(tok.token_to_piece(im_end, false), b"");
    assert_eq!(tok.token_to_piece(im_end, true), b"<|im_end|>");
    let ud = id(&tok, "<ud>");
    assert_eq!(tok.encode("<ud>", false, false).unwrap(), vec![ud]);
    assert_eq!(tok.token_text(ud), Some("<ud>"));
    assert_eq!(tok.token_text(1_000_000), None);
    assert!(!tok.is_eog(1_000_000));
}

#[test]
fn longest_special_token_wins() {
    let tok = Tokenizer::from_gguf(&gguf(bpe_vocab(
        "gpt-2",
        &[],
        &[("<a>", 3), ("<a><b>", 3), ("<b>", 3)],
    )))
    .unwrap();
    let ab = id(&tok, "<a><b>");
    let a = id(&tok, "<a>");
    assert_eq!(tok.encode("<a><b><a>", false, true).unwrap(), vec![ab, a]);
}

#[test]
fn add_bos_without_bos_is_an_error() {
    let mut kvs = bpe_vocab("gpt-2", MERGES, &[]);
    kvs.push(("tokenizer.ggml.add_bos_token", Value::Bool(true)));
    // llama.cpp's BPE default BOS is id 11; it exists in this vocabulary.
    let tok = Tokenizer::from_gguf(&gguf(kvs)).unwrap();
    assert_eq!(tok.bos(), Some(11));
    assert_eq!(
        tok.encode("a", true, false).unwrap(),
        vec![11, u32::from(b'a')]
    );

    // In a vocabulary of 3 tokens the default BOS is out of range, so there is none.
    let tokens: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let small = gguf(vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.merges", strings(&[])),
        ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
    ]);
    let tok = Tokenizer::from_gguf(&small).unwrap();
    assert_eq!(tok.bos(), None);
    assert!(matches!(
        tok.encode("a", true, false),
        Err(TokenizerError::MissingSpecial(_))
    ));
    assert_eq!(tok.encode("a", false, false).unwrap(), vec![0]);
}

fn load_err(kvs: Vec<(&str, Value)>) -> TokenizerError {
    Tokenizer::from_gguf(&gguf(kvs)).unwrap_err()
}

fn replace(
    mut kvs: Vec<(&'static str, Value)>,
    key: &'static str,
    v: Option<Value>,
) -> Vec<(&'static str, Value)> {
    kvs.retain(|(k, _)| *k != key);
    if let Some(v) = v {
        kvs.push((key, v));
    }
    kvs
}

#[test]
fn bad_metadata_is_an_error() {
    let base = spm_vocab(&[]);
    assert!(matches!(
        load_err(replace(base.clone(), "tokenizer.ggml.model", None)),
        TokenizerError::MissingKey("tokenizer.ggml.model")
    ));
    assert!(matches!(
        load_err(replace(
            base.clone(),
            "tokenizer.ggml.model",
            Some(Value::String("t5".into()))
        )),
        TokenizerError::UnsupportedModel(_)
    ));
    assert!(matches!(
        load_err(replace(
            base.clone(),
            "tokenizer.ggml.model",
            Some(Value::U32(1))
        )),
        TokenizerError::BadMetadata { .. }
    ));
    assert!(matches!(
        load_err(replace(base.clone(), "tokenizer.ggml.tokens", None)),
        TokenizerError::MissingKey(_)
    ));
    assert!(matches!(
        load_err(replace(
            base.clone(),
            "tokenizer.ggml.tokens",
            Some(Value::Array(Array::U32(vec![1, 2])))
        )),
        TokenizerError::BadMetadata { .. }
    ));
    assert!(matches!(
        load_err(replace(
            base.clone(),
            "tokenizer.ggml.tokens",
            Some(strings(&[]))
        )),
        TokenizerError::BadMetadata { .. }
    ));
    assert!(matches!(
        load_err(replace(
            base.clone(),
            "tokenizer.ggml.scores",
            Some(Value::Array(Array::F32(vec![0.0])))
        )),
        TokenizerError::BadMetadata { .. }
    ));
    assert!(matches!(
        load_err(replace(
            base.clone(),
            "tokenizer.ggml.scores",
            Some(Value::Array(Array::String(vec![])))
        )),
        TokenizerError::BadMetadata { .. }
    ));
    assert!(matches!(
        load_err(replace(
            base.clone(),
            "tokenizer.ggml.token_type",
            Some(Value::Array(Array::F32(vec![0.0; 259])))
        )),
        TokenizerError::BadMetadata { .. }
    ));
    assert!(matches!(
        load_err(replace(
            base.clone(),
            "tokenizer.ggml.token_type",
            Some(Value::Array(Array::I32(vec![1; 5])))
        )),
        TokenizerError::BadMetadata { .. }
    ));
    assert!(matches!(
        load_err(replace(
            base.clone(),
            "tokenizer.ggml.bos_token_id",
            Some(Value::I32(-1))
        )),
        TokenizerError::BadMetadata { .. }
    ));
    assert!(matches!(
        load_err(replace(
            base.clone(),
            "tokenizer.ggml.add_bos_token",
            Some(Value::String("yes".into()))
        )),
        TokenizerError::BadMetadata { .. }
    ));
    // Special ids outside the vocabulary are ignored (llama.cpp keeps the default).
    let tok = Tokenizer::from_gguf(&gguf(replace(
        base.clone(),
        "tokenizer.ggml.eos_token_id",
        Some(Value::U32(1_000_000)),
    )))
    .unwrap();
    assert_eq!(tok.eos(), Some(2));

    let bpe_base = bpe_vocab("gpt-2", MERGES, &[]);
    assert!(matches!(
        load_err(replace(bpe_base.clone(), "tokenizer.ggml.merges", None)),
        TokenizerError::MissingKey("tokenizer.ggml.merges")
    ));
    assert!(matches!(
        load_err(replace(
            bpe_base.clone(),
            "tokenizer.ggml.pre",
            Some(Value::String("no-such-pre".into()))
        )),
        TokenizerError::UnsupportedPre(_)
    ));
    // Missing pre-tokenizer name: llama.cpp's "default".
    let tok = Tokenizer::from_gguf(&gguf(replace(bpe_base, "tokenizer.ggml.pre", None))).unwrap();
    assert_eq!(tok.pre(), "");
    assert_eq!(
        tok.decode(&tok.encode("x = 1000", false, false).unwrap(), false),
        "x = 1000"
    );
}

#[test]
fn input_limit() {
    let tok = bpe();
    let big = "a".repeat(zeta_model::tokenizer::MAX_INPUT_BYTES + 1);
    assert!(matches!(
        tok.encode(&big, false, false),
        Err(TokenizerError::TooLong { .. })
    ));
}

#[test]
fn stream_decoder_holds_partial_characters() {
    let tok = bpe();
    // "😀" is F0 9F 98 80: one byte token each.
    let mut sd = StreamDecoder::new(false);
    assert_eq!(sd.push(&tok, 0xF0), "");
    assert_eq!(sd.push(&tok, 0x9F), "");
    assert_eq!(sd.push(&tok, 0x98), "");
    assert_eq!(sd.push(&tok, 0x80), "😀");
    assert_eq!(sd.push(&tok, u32::from(b'a')), "a");
    assert_eq!(sd.push(&tok, 0xE2), "");
    assert_eq!(sd.finish(), "\u{FFFD}");
    assert_eq!(sd.finish(), "");
}

fn spm_bytes() -> Tokenizer {
    spm(&[("▁", -1.0, 1)])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Byte-level BPE loses nothing: decode(encode(s)) == s.
    #[test]
    fn bpe_round_trip(s in "\\PC{0,40}|[ \\t\\n a-z'0-9<>|_]{0,40}") {
        let tok = bpe();
        let ids = tok.encode(&s, false, false).unwrap();
        prop_assert_eq!(tok.decode(&ids, false), s.clone());
        let ids = tok.encode(&s, false, true).unwrap();
        prop_assert_eq!(tok.decode(&ids, true), s);
    }

    /// Any text encodes without panicking, in every mode.
    #[test]
    fn encode_never_panics(s in "\\PC{0,60}|[<>|a-z_ \\n]{0,60}") {
        let spm = spm(&[("▁", -1.0, 1), ("<ctl>", 0.0, 3), ("<ud>", 0.0, 4), ("ab", -1.0, 1)]);
        let bpe = bpe();
        for tok in [&spm, &bpe] {
            for (a, p) in [(false, false), (false, true), (true, true)] {
                let ids = tok.encode(&s, a, p).unwrap();
                prop_assert!(ids.iter().all(|&id| (id as usize) < tok.n_vocab()));
            }
        }
    }

    /// The stream decoder never splits a character: what it returns, concatenated,
    /// equals the lossy decoding of all bytes at once; valid input comes back intact.
    #[test]
    fn stream_decoder_never_splits_utf8(bytes in proptest::collection::vec(any::<u8>(), 0..64), valid in "\\PC{0,20}") {
        let tok = spm_bytes();
        for input in [bytes.clone(), valid.as_bytes().to_vec()] {
            let mut sd = StreamDecoder::new(false);
            let mut out = String::new();
            for &b in &input {
                out.push_str(&sd.push(&tok, 3 + u32::from(b)));
            }
            out.push_str(&sd.finish());
            prop_assert_eq!(&out, &String::from_utf8_lossy(&input).into_owned());
        }
        // Pieces of several bytes (SPM normal tokens) behave the same.
        let mut sd = StreamDecoder::new(false);
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            out.push_str(&sd.push_bytes(chunk));
        }
        out.push_str(&sd.finish());
        prop_assert_eq!(out, String::from_utf8_lossy(&bytes).into_owned());
    }
}

#[test]
fn types_are_shareable() {
    fn check<T: Send + Sync + std::fmt::Debug>() {}
    check::<Tokenizer>();
    check::<StreamDecoder>();
    check::<TokenizerError>();
    // Debug prints a summary, not the vocabulary.
    assert!(format!("{:?}", bpe()).len() < 400);
}
