//! Code point classes and the BPE pre-tokenizers, the way llama.cpp's
//! `unicode.cpp` computes them.
//!
//! llama.cpp does not run the pre-tokenizer regexes from `tokenizer.json`
//! through a real regex engine for the common patterns: GPT-2's, Llama 3's
//! and Qwen 2's are hand-written scanners (`unicode_regex_split_custom_*`)
//! whose results differ from the regexes in corner cases (e.g. a lone space
//! before punctuation at the end of a fragment, digits after a space). The
//! remaining simple patterns (`\p{N}`, `\p{N}+`, a punctuation class run,
//! `[0-9][0-9][0-9]`) go through `std::regex` on a "collapsed" text where
//! every non-ASCII code point is replaced by one byte standing for its
//! category. This module re-implements each of these, scanner for scanner,
//! over code points, so that the word boundaries are identical; a general
//! regex engine (fancy-regex, or the `tokenizers` crate) would follow the
//! regex instead and disagree on exactly those corner cases.
//!
//! All splitters work on a list of segment lengths (in code points): each
//! pass splits every segment further and never merges across segments, as
//! in llama.cpp.

use super::unicode_table::RANGES;

/// Unassigned code point (general category Cn).
pub(super) const UNDEFINED: u16 = 0x0001;
/// `\p{N}`.
pub(super) const NUMBER: u16 = 0x0002;
/// `\p{L}`.
pub(super) const LETTER: u16 = 0x0004;
/// `\p{P}`.
pub(super) const PUNCTUATION: u16 = 0x0020;
/// Unicode `White_Space`.
pub(super) const WHITESPACE: u16 = 0x0100;

/// Marks a position outside the current segment (llama.cpp's `OUT_OF_RANGE`).
const OUT: u32 = 0xFFFF_FFFF;

/// llama.cpp's code point flags for `cp` (see [`RANGES`]).
pub(super) fn flags(cp: u32) -> u16 {
    if cp >= 0x11_0000 {
        return UNDEFINED;
    }
    // RANGES[0].0 == 0, so the partition point is at least 1.
    let i = RANGES.partition_point(|&(start, _)| start <= cp);
    RANGES[i.saturating_sub(1)].1
}

/// The regex passes a pre-tokenizer runs, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Split {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)` (custom scanner).
    Gpt2,
    /// Llama 3's pattern with `\p{N}{1,3}` (custom scanner).
    Llama3,
    /// Qwen 2's pattern: Llama 3's with single-digit `\p{N}` (custom scanner).
    Qwen2,
    /// `\p{N}`: every number code point alone.
    EachNumber,
    /// `\p{N}+`.
    NumberRun,
    /// `[\p{P}\$\+<=>\^~\|]+`.
    PunctRun,
    /// `[0-9][0-9][0-9]`.
    Digits3,
}

/// Split `cpts` into words: returns the word lengths (in code points).
pub(super) fn split(cpts: &[u32], passes: &[Split]) -> Vec<usize> {
    let mut offsets = vec![cpts.len()];
    for pass in passes {
        offsets = match pass {
            Split::Gpt2 => split_custom(cpts, &offsets, scan_gpt2),
            Split::Llama3 => split_custom(cpts, &offsets, |s, out| scan_llama3(s, out, true)),
            Split::Qwen2 => split_custom(cpts, &offsets, |s, out| scan_llama3(s, out, false)),
            Split::EachNumber => split_class(cpts, &offsets, is_number, false),
            Split::NumberRun => split_class(cpts, &offsets, is_number, true),
            Split::PunctRun => split_class(cpts, &offsets, is_punct_run, true),
            Split::Digits3 => split_digits3(cpts, &offsets),
        };
    }
    offsets
}

/// `\p{N}` as llama.cpp's collapsed regex sees it (white space wins over category).
fn is_number(cp: u32) -> bool {
    let f = flags(cp);
    f & WHITESPACE == 0 && f & NUMBER != 0
}

/// `[\p{P}\$\+<=>\^~\|]`.
fn is_punct_run(cp: u32) -> bool {
    if matches!(cp, 0x24 | 0x2B | 0x3C | 0x3D | 0x3E | 0x5E | 0x7E | 0x7C) {
        return true;
    }
    let f = flags(cp);
    f & WHITESPACE == 0 && f & PUNCTUATION != 0
}

/// One segment of the text, with llama.cpp's out-of-segment conventions.
struct Segment<'a> {
    cpts: &'a [u32],
    ini: usize,
    end: usize,
}

impl Segment<'_> {
    fn cpt(&self, pos: usize) -> u32 {
        if pos >= self.ini && pos < self.end {
            self.cpts[pos]
        } else {
            OUT
        }
    }

    /// Flags, or 0 ("no flags at all") outside the segment.
    fn flags(&self, pos: usize) -> u16 {
        if pos >= self.ini && pos < self.end {
            flags(self.cpts[pos])
        } else {
            0
        }
    }
}

/// Collects word lengths; `prev_end` is where the next word starts.
struct Emitter<'o> {
    out: &'o mut Vec<usize>,
    prev_end: usize,
}

impl Emitter<'_> {
    fn add(&mut self, end: usize) {
        let len = end.saturating_sub(self.prev_end);
        if len > 0 {
            self.out.push(len);
        }
        self.prev_end = end;
    }
}

fn split_custom(
    cpts: &[u32],
    offsets: &[usize],
    scan: impl Fn(&Segment<'_>, &mut Emitter<'_>),
) -> Vec<usize> {
    let mut out = Vec::with_capacity(offsets.len());
    let mut start = 0;
    for &len in offsets {
        let seg = Segment {
            cpts,
            ini: start,
            end: start + len,
        };
        start += len;
        let mut em = Emitter {
            out: &mut out,
            prev_end: seg.ini,
        };
        scan(&seg, &mut em);
    }
    out
}

fn is_apostrophe_suffix(seg: &Segment<'_>, pos: usize, fold_case: bool) -> Option<usize> {
    if seg.cpt(pos) != u32::from('\'') || pos + 1 >= seg.end {
        return None;
    }
    // llama.cpp lowercases with the full Unicode table; the only code points
    // whose lowercase is one of the ASCII letters compared here are the ASCII
    // capitals, so ASCII folding is exact.
    let lower = |c: u32| {
        if fold_case && (0x41..=0x5A).contains(&c) {
            c + 0x20
        } else {
            c
        }
    };
    let n1 = lower(seg.cpt(pos + 1));
    if [b's', b't', b'm', b'd'].iter().any(|&b| n1 == u32::from(b)) {
        return Some(pos + 2);
    }
    if pos + 2 < seg.end {
        let n2 = lower(seg.cpt(pos + 2));
        let pair = |a: u8, b: u8| n1 == u32::from(a) && n2 == u32::from(b);
        if pair(b'r', b'e') || pair(b'v', b'e') || pair(b'l', b'l') {
            return Some(pos + 3);
        }
    }
    None
}

/// Port of `unicode_regex_split_custom_gpt2`.
fn scan_gpt2(seg: &Segment<'_>, em: &mut Emitter<'_>) {
    let mut pos = seg.ini;
    while pos < seg.end {
        let cpt = seg.cpt(pos);
        let flags = seg.flags(pos);

        if let Some(end) = is_apostrophe_suffix(seg, pos, false) {
            pos = end;
            em.add(pos);
            continue;
        }

        let is_space = cpt == u32::from(' ');
        let mut flags2 = if is_space { seg.flags(pos + 1) } else { flags };
        // <space>?\p{L}+
        if flags2 & LETTER != 0 {
            pos += usize::from(is_space);
            while flags2 & LETTER != 0 {
                pos += 1;
                flags2 = seg.flags(pos);
            }
            em.add(pos);
            continue;
        }
        // <space>?\p{N}+
        if flags2 & NUMBER != 0 {
            pos += usize::from(is_space);
            while flags2 & NUMBER != 0 {
                pos += 1;
                flags2 = seg.flags(pos);
            }
            em.add(pos);
            continue;
        }
        // <space>?[^\s\p{L}\p{N}]+
        let other = |f: u16| f & (WHITESPACE | LETTER | NUMBER) == 0 && f != 0;
        if other(flags2) {
            pos += usize::from(is_space);
            while other(flags2) {
                pos += 1;
                flags2 = seg.flags(pos);
            }
            em.add(pos);
            continue;
        }

        let mut num_ws = 0;
        while seg.flags(pos + num_ws) & WHITESPACE != 0 {
            num_ws += 1;
        }
        // \s+(?!\S)
        if num_ws > 1 && seg.cpt(pos + num_ws) != OUT {
            pos += num_ws - 1;
            em.add(pos);
            continue;
        }
        // \s+
        if num_ws > 0 {
            pos += num_ws;
            em.add(pos);
            continue;
        }
        // no match
        pos += 1;
        em.add(pos);
    }
}

/// Port of `unicode_regex_split_custom_llama3` (`digits3`) and
/// `unicode_regex_split_custom_qwen2` (`!digits3`).
fn scan_llama3(seg: &Segment<'_>, em: &mut Emitter<'_>, digits3: bool) {
    let is_rn = |c: u32| c == u32::from('\r') || c == u32::from('\n');
    let mut pos = seg.ini;
    while pos < seg.end {
        let cpt = seg.cpt(pos);
        let flags = seg.flags(pos);

        // (?i:'s|'t|'re|'ve|'m|'ll|'d)
        if let Some(end) = is_apostrophe_suffix(seg, pos, true) {
            pos = end;
            em.add(pos);
            continue;
        }

        // [^\r\n\p{L}\p{N}]?\p{L}+
        if !(is_rn(cpt) || flags & NUMBER != 0)
            && (flags & LETTER != 0 || seg.flags(pos + 1) & LETTER != 0)
        {
            pos += 1;
            while seg.flags(pos) & LETTER != 0 {
                pos += 1;
            }
            em.add(pos);
            continue;
        }

        // \p{N}{1,3}  or  \p{N}
        if flags & NUMBER != 0 {
            if digits3 {
                let mut ini = pos;
                while seg.flags(pos) & NUMBER != 0 {
                    pos += 1;
                    if pos - ini >= 3 {
                        em.add(pos);
                        ini = pos;
                    }
                }
            } else {
                pos += 1;
            }
            em.add(pos);
            continue;
        }

        // <space>?[^\s\p{L}\p{N}]+[\r\n]*
        let is_space = cpt == u32::from(' ');
        let mut flags2 = if is_space { seg.flags(pos + 1) } else { flags };
        let other = |f: u16| f & (WHITESPACE | LETTER | NUMBER) == 0;
        // llama.cpp tests the first code point's own flags for "defined" here.
        if other(flags2) && flags != 0 {
            pos += usize::from(is_space);
            while other(flags2) && flags2 != 0 {
                pos += 1;
                flags2 = seg.flags(pos);
            }
            while is_rn(seg.cpt(pos)) {
                pos += 1;
            }
            em.add(pos);
            continue;
        }

        let mut num_ws = 0;
        let mut last_end_rn = 0;
        while seg.flags(pos + num_ws) & WHITESPACE != 0 {
            if is_rn(seg.cpt(pos + num_ws)) {
                last_end_rn = pos + num_ws + 1;
            }
            num_ws += 1;
        }
        // \s*[\r\n]+
        if last_end_rn > 0 {
            pos = last_end_rn;
            em.add(pos);
            continue;
        }
        // \s+(?!\S)
        if num_ws > 1 && seg.cpt(pos + num_ws) != OUT {
            pos += num_ws - 1;
            em.add(pos);
            continue;
        }
        // \s+
        if num_ws > 0 {
            pos += num_ws;
            em.add(pos);
            continue;
        }
        // no match
        pos += 1;
        em.add(pos);
    }
}

/// A `[class]` (`run == false`) or `[class]+` (`run == true`) regex applied the
/// way `unicode_regex_split_stl` does: matches and the gaps between them
/// become words.
fn split_class(cpts: &[u32], offsets: &[usize], class: fn(u32) -> bool, run: bool) -> Vec<usize> {
    let mut out = Vec::with_capacity(offsets.len());
    let mut start = 0;
    for &len in offsets {
        let end = start + len;
        let mut gap_start = start;
        let mut pos = start;
        while pos < end {
            if class(cpts[pos]) {
                if pos > gap_start {
                    out.push(pos - gap_start);
                }
                let m = pos;
                pos += 1;
                if run {
                    while pos < end && class(cpts[pos]) {
                        pos += 1;
                    }
                }
                out.push(pos - m);
                gap_start = pos;
            } else {
                pos += 1;
            }
        }
        if end > gap_start {
            out.push(end - gap_start);
        }
        start = end;
    }
    out
}

/// `[0-9][0-9][0-9]`: non-overlapping ASCII digit triples, leftmost first.
fn split_digits3(cpts: &[u32], offsets: &[usize]) -> Vec<usize> {
    let is_digit = |c: u32| (0x30..=0x39).contains(&c);
    let mut out = Vec::with_capacity(offsets.len());
    let mut start = 0;
    for &len in offsets {
        let end = start + len;
        let mut gap_start = start;
        let mut pos = start;
        while pos < end {
            if pos + 3 <= end && cpts[pos..pos + 3].iter().all(|&c| is_digit(c)) {
                if pos > gap_start {
                    out.push(pos - gap_start);
                }
                out.push(3);
                pos += 3;
                gap_start = pos;
            } else {
                pos += 1;
            }
        }
        if end > gap_start {
            out.push(end - gap_start);
        }
        start = end;
    }
    out
}

/// GPT-2's byte → printable code point table (`bytes_to_unicode`).
pub(super) fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for (b, slot) in table.iter_mut().enumerate() {
        let b32 = b as u32;
        let printable = (0x21..=0x7E).contains(&b32)
            || (0xA1..=0xAC).contains(&b32)
            || (0xAE..=0xFF).contains(&b32);
        let cp = if printable {
            b32
        } else {
            n += 1;
            255 + n
        };
        *slot = char::from_u32(cp).unwrap_or('\u{FFFD}');
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str, passes: &[Split]) -> Vec<String> {
        let cpts: Vec<u32> = text.chars().map(u32::from).collect();
        let mut out = Vec::new();
        let mut start = 0;
        for len in split(&cpts, passes) {
            out.push(
                cpts[start..start + len]
                    .iter()
                    .filter_map(|&c| char::from_u32(c))
                    .collect(),
            );
            start += len;
        }
        out
    }

    #[test]
    fn flags_basic() {
        assert_eq!(flags(u32::from('a')), LETTER);
        assert_eq!(flags(u32::from('7')), NUMBER);
        assert_eq!(flags(u32::from(' ')) & WHITESPACE, WHITESPACE);
        assert_eq!(flags(0x3000) & WHITESPACE, WHITESPACE);
        assert_eq!(flags(u32::from('中')), LETTER);
        assert_eq!(flags(0x0378), UNDEFINED);
        assert_eq!(flags(0x11_0000), UNDEFINED);
    }

    #[test]
    fn gpt2_words() {
        assert_eq!(
            words("Hello world's  end 123!!", &[Split::Gpt2]),
            ["Hello", " world", "'s", " ", " end", " 123", "!!"]
        );
    }

    #[test]
    fn llama3_words() {
        assert_eq!(
            words("I'M 1234567 ok\n\n  x", &[Split::Llama3]),
            ["I", "'M", " ", "123", "456", "7", " ok", "\n\n", " ", " x"]
        );
        assert_eq!(words("12 ab", &[Split::Qwen2]), ["1", "2", " ab"]);
    }

    #[test]
    fn smollm_words() {
        assert_eq!(
            words("a 12b", &[Split::EachNumber, Split::Gpt2]),
            ["a", " ", "1", "2", "b"]
        );
    }

    #[test]
    fn byte_table() {
        let t = byte_to_char_table();
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[b'a' as usize], 'a');
        let mut seen: Vec<char> = t.to_vec();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 256);
    }
}
