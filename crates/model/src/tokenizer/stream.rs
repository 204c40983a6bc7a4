//! [`StreamDecoder`]: token ids in, complete UTF-8 text out.
//!
//! A token's piece may end in the middle of a multi-byte character (byte
//! tokens, or BPE tokens holding part of an emoji). The decoder keeps such an
//! incomplete tail until the next piece completes it. Invalid bytes become
//! U+FFFD exactly as [`String::from_utf8_lossy`] would replace them in the
//! whole byte stream, so the concatenation of everything `push` and `finish`
//! return equals `String::from_utf8_lossy(all pieces)`.

use super::Tokenizer;

/// Incremental detokenizer; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct StreamDecoder {
    special: bool,
    /// Bytes of an incomplete UTF-8 sequence (at most 3).
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// `special`: render control tokens (as [`Tokenizer::token_to_piece`]).
    pub fn new(special: bool) -> Self {
        Self {
            special,
            pending: Vec::new(),
        }
    }

    /// Add one token; returns the text that became complete (maybe empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> String {
        let piece = tok.token_to_piece(id, self.special);
        self.push_bytes(&piece)
    }

    /// Add raw bytes; returns the text that became complete (maybe empty).
    pub fn push_bytes(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // `valid` is valid UTF-8 by construction.
                    out.push_str(&String::from_utf8_lossy(valid));
                    match e.error_len() {
                        Some(n) => {
                            out.push('\u{FFFD}');
                            rest = after.get(n..).unwrap_or(&[]);
                        }
                        None => {
                            // Incomplete sequence at the end: keep it.
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        out
    }

    /// End of stream: returns whatever is left (an incomplete tail becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}
