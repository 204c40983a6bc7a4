//! Byte-level BPE (`tokenizer.ggml.model = "gpt2"`), as llama.cpp's
//! `llm_tokenizer_bpe_session` does it.
//!
//! The fragment is split into words by the pre-tokenizer
//! ([`super::unicode::split`]), each word's UTF-8 bytes are mapped to GPT-2's
//! printable code points, and within each word the adjacent pair with the
//! lowest merge rank is merged first (ties: the leftmost) until no pair has a
//! rank. Each final symbol is looked up in the vocabulary; a symbol that is
//! not a token falls back to its single bytes (only ASCII bytes can be found,
//! exactly as in llama.cpp).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::Vocab;
use super::unicode;

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    n: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

struct Bigram {
    left: usize,
    right: usize,
    rank: u32,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Max-heap order: lowest rank first, then smaller `left`.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .rank
            .cmp(&self.rank)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// Tokenize one text fragment into `out`.
pub(super) fn tokenize(vocab: &Vocab, bpe: &super::BpeData, text: &str, out: &mut Vec<u32>) {
    let cpts: Vec<u32> = text.chars().map(u32::from).collect();
    let lens = unicode::split(&cpts, bpe.splits);

    let mut word = String::new();
    let mut start = 0;
    for len in lens {
        word.clear();
        let chars = cpts[start..start + len]
            .iter()
            .filter_map(|&c| char::from_u32(c));
        let mut buf = [0u8; 4];
        for ch in chars {
            for &b in ch.encode_utf8(&mut buf).as_bytes() {
                word.push(bpe.byte_to_char[usize::from(b)]);
            }
        }
        start += len;
        tokenize_word(vocab, bpe, &word, out);
    }
}

fn tokenize_word(vocab: &Vocab, bpe: &super::BpeData, word: &str, out: &mut Vec<u32>) {
    let mut symbols: Vec<Symbol> = Vec::with_capacity(word.len());
    if bpe.ignore_merges && vocab.text_to_token(word).is_some() {
        symbols.push(Symbol {
            start: 0,
            n: word.len(),
            prev: None,
            next: None,
        });
    } else {
        for (i, (start, ch)) in word.char_indices().enumerate() {
            let n = ch.len_utf8();
            symbols.push(Symbol {
                start,
                n,
                prev: i.checked_sub(1),
                next: if start + n == word.len() {
                    None
                } else {
                    Some(i + 1)
                },
            });
        }
    }

    let mut heap = BinaryHeap::with_capacity(symbols.len());
    let try_add = |heap: &mut BinaryHeap<Bigram>,
                   symbols: &[Symbol],
                   left: Option<usize>,
                   right: Option<usize>| {
        let (Some(left), Some(right)) = (left, right) else {
            return;
        };
        let (l, r) = (symbols[left], symbols[right]);
        let (Some(lt), Some(rt)) = (
            word.get(l.start..l.start + l.n),
            word.get(r.start..r.start + r.n),
        ) else {
            return;
        };
        if let Some(rank) = bpe.rank(lt, rt) {
            heap.push(Bigram {
                left,
                right,
                rank,
                size: l.n + r.n,
            });
        }
    };

    for i in 1..symbols.len() {
        try_add(&mut heap, &symbols, Some(i - 1), Some(i));
    }

    while let Some(bigram) = heap.pop() {
        let (l, r) = (symbols[bigram.left], symbols[bigram.right]);
        // Adjacent symbols stay adjacent while both live, so "left + right is
        // still the bigram's text" is exactly "both alive with the same sizes".
        if l.n == 0 || r.n == 0 || l.n + r.n != bigram.size {
            continue;
        }
        symbols[bigram.left].n = l.n + r.n;
        symbols[bigram.right].n = 0;
        symbols[bigram.left].next = r.next;
        if let Some(next) = r.next {
            symbols[next].prev = Some(bigram.left);
        }
        let merged = symbols[bigram.left];
        try_add(&mut heap, &symbols, merged.prev, Some(bigram.left));
        try_add(&mut heap, &symbols, Some(bigram.left), merged.next);
    }

    for sym in symbols.iter().filter(|s| s.n > 0) {
        let piece = word.get(sym.start..sym.start + sym.n).unwrap_or("");
        if let Some(id) = vocab.text_to_token(piece) {
            out.push(id);
        } else {
            // llama.cpp looks up each single byte of the (byte-encoded) symbol
            // as a one-byte string: only ASCII bytes can ever be found.
            for &b in piece.as_bytes() {
                if b.is_ascii() {
                    let mut tmp = [0u8; 4];
                    if let Some(id) = vocab.text_to_token(char::from(b).encode_utf8(&mut tmp)) {
                        out.push(id);
                    }
                }
            }
        }
    }
}
