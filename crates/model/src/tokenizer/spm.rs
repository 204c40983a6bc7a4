//! SentencePiece-style tokenization (`tokenizer.ggml.model = "llama"`), as
//! llama.cpp's `llm_tokenizer_spm_session` does it.
//!
//! The text (spaces already replaced by `▁`) is split into UTF-8 characters;
//! every adjacent pair whose concatenation is a vocabulary token is a
//! candidate merge. The candidate with the highest token score is merged
//! first (ties: the leftmost), new candidates are formed with the merged
//! symbol's neighbours, and so on until no candidate is left. A remaining
//! symbol that is not a token is emitted as byte tokens `<0xXX>`.
//!
//! Cost: O(n log n) in the number of characters (a binary heap, stale
//! entries skipped); candidate strings longer than the longest token are
//! never looked up.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::{TokenizerError, Vocab};

/// One symbol of the text: `text[start..start + n]`, linked to its neighbours.
/// `n == 0` marks a symbol merged into its left neighbour.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    n: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A merge candidate: symbols `left` and `right` (adjacent), forming a token
/// with `score` and `size` bytes.
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
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
    /// Max-heap order: higher score first, then smaller `left`.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// Tokenize one text fragment (already whitespace-escaped) into `out`.
pub(super) fn tokenize(
    vocab: &Vocab,
    text: &str,
    out: &mut Vec<u32>,
) -> Result<(), TokenizerError> {
    let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
    for (i, (start, ch)) in text.char_indices().enumerate() {
        let n = ch.len_utf8();
        symbols.push(Symbol {
            start,
            n,
            prev: i.checked_sub(1),
            next: if start + n == text.len() {
                None
            } else {
                Some(i + 1)
            },
        });
    }
    if symbols.is_empty() {
        return Ok(());
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
        let size = l.n + r.n;
        if size > vocab.max_token_len {
            return;
        }
        let Some(piece) = text.get(l.start..l.start + size) else {
            return;
        };
        if let Some(id) = vocab.text_to_token(piece) {
            heap.push(Bigram {
                left,
                right,
                score: vocab.score(id),
                size,
            });
        }
    };

    for i in 1..symbols.len() {
        try_add(&mut heap, &symbols, Some(i - 1), Some(i));
    }

    while let Some(bigram) = heap.pop() {
        let (l, r) = (symbols[bigram.left], symbols[bigram.right]);
        // One of the symbols was merged away, or grew: stale candidate.
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

    let mut i = Some(0);
    while let Some(idx) = i {
        let sym = symbols[idx];
        let piece = text.get(sym.start..sym.start + sym.n).unwrap_or("");
        // A merged symbol is always a token; a single character may not be:
        // then its bytes are emitted as byte tokens. (llama.cpp's `rev_merge`
        // re-segmentation can only apply to merged symbols, which never miss.)
        if let Some(id) = vocab.text_to_token(piece) {
            out.push(id);
        } else {
            for &b in piece.as_bytes() {
                out.push(vocab.spm_byte_to_token(b)?);
            }
        }
        i = sym.next;
    }
    Ok(())
}
