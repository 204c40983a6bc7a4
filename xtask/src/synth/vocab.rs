//! Synthetic but self-consistent tokenizer vocabularies.
//!
//! - SentencePiece ("llama"): `<unk>`, `<s>`, `</s>`, the 256 byte-fallback
//!   tokens `<0x00>`…`<0xFF>`, then pieces over `a`–`z` with and without the
//!   `▁` word prefix, scored so shorter pieces merge first.
//! - GPT-2 byte-level BPE ("gpt2", pre "llama-bpe"): the 256 byte tokens in
//!   GPT-2's `bytes_to_unicode` order, then merged tokens each with its
//!   merge rule (every merge's parts and result are in the vocab), then the
//!   Llama-3 special tokens.

use anyhow::{Result, bail};

/// llama.cpp token types.
pub const TYPE_NORMAL: i32 = 1;
/// Unknown token.
pub const TYPE_UNKNOWN: i32 = 2;
/// Control (special) token.
pub const TYPE_CONTROL: i32 = 3;
/// Byte-fallback token.
pub const TYPE_BYTE: i32 = 6;

/// A complete vocabulary ready for `tokenizer.ggml.*` keys.
#[derive(Debug, Clone)]
pub struct Vocab {
    /// `tokenizer.ggml.model`.
    pub model: &'static str,
    /// `tokenizer.ggml.pre`, if any.
    pub pre: Option<&'static str>,
    /// Token texts.
    pub tokens: Vec<String>,
    /// Token scores.
    pub scores: Vec<f32>,
    /// Token types.
    pub types: Vec<i32>,
    /// BPE merges ("a b"), empty for SPM.
    pub merges: Vec<String>,
    /// BOS id.
    pub bos: u32,
    /// EOS id.
    pub eos: u32,
    /// UNK id (SPM only).
    pub unk: Option<u32>,
    /// Jinja chat template.
    pub chat_template: &'static str,
}

/// TinyLlama-1.1B-Chat's (Zephyr-style) template.
const ZEPHYR_TEMPLATE: &str = "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";

/// Llama-3-8B-Instruct's template.
const LLAMA3_TEMPLATE: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

/// Strings over `a`–`z` in order of length, then lexicographic: "a", …, "z",
/// "aa", … Calls `f` until it returns false.
fn letter_strings(mut f: impl FnMut(&str, usize) -> bool) {
    for len in 1u32.. {
        let Some(count) = 26usize.checked_pow(len) else {
            return;
        };
        let mut s = vec![b'a'; len as usize];
        for n in 0..count {
            let mut x = n;
            for k in (0..s.len()).rev() {
                s[k] = b'a' + (x % 26) as u8;
                x /= 26;
            }
            let text = std::str::from_utf8(&s).unwrap_or_default();
            if !f(text, len as usize) {
                return;
            }
        }
    }
}

/// A SentencePiece vocabulary of exactly `n_vocab` tokens (Llama-2 layout:
/// 0 `<unk>`, 1 `<s>`, 2 `</s>`, 3..259 byte tokens).
pub fn spm(n_vocab: usize) -> Result<Vocab> {
    if n_vocab < 3 + 256 + 1 {
        bail!("an SPM vocab needs at least 260 tokens, got {n_vocab}");
    }
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![TYPE_UNKNOWN, TYPE_CONTROL, TYPE_CONTROL];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(TYPE_BYTE);
    }
    let mut scores = vec![0f32; tokens.len()];
    // "▁" first, then per length: plain pieces, then "▁"-prefixed ones.
    let mut pieces: Vec<String> = vec!["\u{2581}".into()];
    let need = n_vocab - tokens.len();
    let mut cur_len = 1;
    let mut level: Vec<String> = Vec::new();
    letter_strings(|s, len| {
        if len != cur_len {
            pieces.extend(level.drain(..).map(|p| format!("\u{2581}{p}")));
            cur_len = len;
        }
        if pieces.len() >= need {
            return false;
        }
        pieces.push(s.to_string());
        level.push(s.to_string());
        true
    });
    pieces.truncate(need);
    for (i, p) in pieces.into_iter().enumerate() {
        tokens.push(p);
        types.push(TYPE_NORMAL);
        scores.push(-(i as f32));
    }
    Ok(Vocab {
        model: "llama",
        pre: None,
        tokens,
        scores,
        types,
        merges: Vec::new(),
        bos: 1,
        eos: 2,
        unk: Some(0),
        chat_template: ZEPHYR_TEMPLATE,
    })
}

/// GPT-2's byte → printable-char map (`bytes_to_unicode`), in GPT-2's order:
/// the printable bytes first, then the others mapped to U+0100 and up.
pub fn bytes_to_unicode() -> Vec<(u8, char)> {
    let mut printable: Vec<u8> = (b'!'..=b'~').collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut out: Vec<(u8, char)> = printable.iter().map(|&b| (b, char::from(b))).collect();
    let mut n = 0u32;
    for b in 0..=255u8 {
        if !printable.contains(&b) {
            out.push((b, char::from_u32(256 + n).unwrap_or('?')));
            n += 1;
        }
    }
    out
}

/// Llama-3's named special tokens at their offsets from the first special id;
/// the rest are `<|reserved_special_token_N|>`.
const LLAMA3_SPECIALS: [(usize, &str); 5] = [
    (0, "<|begin_of_text|>"),
    (1, "<|end_of_text|>"),
    (6, "<|start_header_id|>"),
    (7, "<|end_header_id|>"),
    (9, "<|eot_id|>"),
];

/// A Llama-3-style byte-level BPE vocabulary of exactly `n_vocab` tokens, the
/// last `n_special` of them special (`n_special` ≥ 10).
pub fn bpe_llama3(n_vocab: usize, n_special: usize) -> Result<Vocab> {
    if n_special < 10 || n_vocab < 256 + 26 + n_special {
        bail!("a BPE vocab needs ≥ 10 specials and room for merges (n_vocab {n_vocab})");
    }
    let n_regular = n_vocab - n_special;
    let mut tokens: Vec<String> = bytes_to_unicode()
        .into_iter()
        .map(|(_, c)| c.to_string())
        .collect();
    let mut merges = Vec::with_capacity(n_regular - 256);
    let space = 'Ġ';
    // Level 1: "Ġx" = "Ġ" + "x"; level L: plain "s" = s[..L-1] + last, then
    // "Ġs" = "Ġ" s[..L-1] + last. Every left part exists from level L-1.
    let need = n_regular - 256;
    let mut level: Vec<String> = Vec::new();
    let mut cur_len = 1;
    let push = |tokens: &mut Vec<String>, merges: &mut Vec<String>, left: String, right: char| {
        merges.push(format!("{left} {right}"));
        tokens.push(format!("{left}{right}"));
    };
    letter_strings(|s, len| {
        if len != cur_len {
            // flush the Ġ-prefixed strings of the previous length
            for p in level.drain(..) {
                if merges.len() >= need {
                    return false;
                }
                let (head, last) = split_last(&p);
                push(&mut tokens, &mut merges, format!("{space}{head}"), last);
            }
            cur_len = len;
        }
        if merges.len() >= need {
            return false;
        }
        if len >= 2 {
            let (head, last) = split_last(s);
            push(&mut tokens, &mut merges, head.to_string(), last);
        }
        level.push(s.to_string());
        true
    });
    if tokens.len() != n_regular {
        bail!(
            "internal: generated {} regular tokens, wanted {n_regular}",
            tokens.len()
        );
    }
    let mut types = vec![TYPE_NORMAL; n_regular];
    let mut reserved = 0;
    for k in 0..n_special {
        match LLAMA3_SPECIALS.iter().find(|(off, _)| *off == k) {
            Some((_, name)) => tokens.push((*name).to_string()),
            None => {
                tokens.push(format!("<|reserved_special_token_{reserved}|>"));
                reserved += 1;
            }
        }
        types.push(TYPE_CONTROL);
    }
    let first_special = u32::try_from(n_regular)?;
    Ok(Vocab {
        model: "gpt2",
        pre: Some("llama-bpe"),
        scores: vec![0.0; tokens.len()],
        tokens,
        types,
        merges,
        bos: first_special,
        eos: first_special + 9,
        unk: None,
        chat_template: LLAMA3_TEMPLATE,
    })
}

fn split_last(s: &str) -> (&str, char) {
    let mut it = s.char_indices();
    match it.next_back() {
        Some((i, c)) => (&s[..i], c),
        None => ("", ' '),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn spm_vocab_is_unique_and_complete() {
        for n in [320, 32000] {
            let v = spm(n).unwrap();
            assert_eq!(v.tokens.len(), n);
            assert_eq!(v.scores.len(), n);
            assert_eq!(v.types.len(), n);
            let set: HashSet<&String> = v.tokens.iter().collect();
            assert_eq!(set.len(), n, "duplicate tokens");
            assert_eq!(v.tokens[3 + 10], "<0x0A>");
            assert!(v.tokens.contains(&"\u{2581}a".to_string()));
        }
    }

    #[test]
    fn bpe_vocab_merges_are_consistent() {
        let v = bpe_llama3(128_256, 256).unwrap();
        assert_eq!(v.tokens.len(), 128_256);
        let set: HashSet<&str> = v.tokens.iter().map(String::as_str).collect();
        assert_eq!(set.len(), v.tokens.len(), "duplicate tokens");
        assert_eq!(v.merges.len(), 128_000 - 256);
        for m in &v.merges {
            let (a, b) = m.split_once(' ').unwrap();
            assert!(set.contains(a) && set.contains(b), "{m}");
            assert!(set.contains(format!("{a}{b}").as_str()), "{m}");
        }
        assert_eq!(v.tokens[128_000], "<|begin_of_text|>");
        assert_eq!(v.tokens[128_009], "<|eot_id|>");
        assert_eq!(v.eos, 128_009);
        assert!(set.contains("Ċ")); // '\n'
        assert!(set.contains("Ġ")); // ' '
    }
}
