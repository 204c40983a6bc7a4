//! [`StopMatcher`]: detects stop strings in a stream of decoded text without ever emitting them.
//!
//! Text is released as soon as it cannot be the beginning of a stop string; a tail that is a proper
//! prefix of some stop string is held back until later text decides it. Once a stop string is seen,
//! the text before it is released and everything from the stop string on is dropped.

/// Result of [`StopMatcher::push`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StopStep {
    /// Text that is safe to show now.
    pub emit: String,
    /// A stop string was hit (now or earlier); generation should end.
    pub stopped: bool,
}

/// Stop-string matcher over a text stream.
#[derive(Debug, Clone)]
pub struct StopMatcher {
    /// Non-empty stop strings.
    stops: Vec<String>,
    /// Text received but not yet emitted: always a proper prefix of some stop string (empty when
    /// there is none, or after a stop).
    held: String,
    stopped: bool,
}

impl StopMatcher {
    /// A matcher for `stops`. Empty strings are ignored (they would match before any text).
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
            stopped: false,
        }
    }

    /// Whether a stop string has been hit.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Feeds newly decoded text. Returns the text that can be emitted now and whether a stop string
    /// was hit. The stop string itself and anything after it are never emitted; after a stop every
    /// further push returns empty text with `stopped: true`.
    ///
    /// The stop that ends first in the stream wins (ties → the one starting earlier), so the output
    /// does not depend on how the text is chunked.
    pub fn push(&mut self, text: &str) -> StopStep {
        if self.stopped {
            return StopStep {
                emit: String::new(),
                stopped: true,
            };
        }
        self.held.push_str(text);
        let buf = &self.held;

        // The stop occurrence that completes first (smallest end; ties → earliest start, i.e. the
        // longest stop string). Deciding by end position makes the result independent of how the
        // text is split into chunks: it is what feeding one character at a time would give.
        let hit = self
            .stops
            .iter()
            .filter_map(|s| buf.find(s.as_str()).map(|start| (start + s.len(), start)))
            .min();
        if let Some((_, pos)) = hit {
            let mut emit = std::mem::take(&mut self.held);
            emit.truncate(pos);
            self.stopped = true;
            return StopStep {
                emit,
                stopped: true,
            };
        }

        // Earliest start of a tail that is a (proper) prefix of some stop string.
        let bytes = buf.as_bytes();
        let max_len = self.stops.iter().map(String::len).max().unwrap_or(0);
        let first = bytes.len().saturating_sub(max_len.saturating_sub(1));
        let hold_from = (first..bytes.len())
            .find(|&p| {
                buf.is_char_boundary(p)
                    && self
                        .stops
                        .iter()
                        .any(|s| s.as_bytes().starts_with(&bytes[p..]))
            })
            .unwrap_or(bytes.len());
        let rest = self.held.split_off(hold_from);
        let emit = std::mem::replace(&mut self.held, rest);
        StopStep {
            emit,
            stopped: false,
        }
    }

    /// End of stream: returns the held-back text (empty after a stop) and clears it.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(stops: &[&str]) -> StopMatcher {
        StopMatcher::new(stops.iter().map(|s| s.to_string()).collect())
    }

    fn step(emit: &str, stopped: bool) -> StopStep {
        StopStep {
            emit: emit.to_string(),
            stopped,
        }
    }

    #[test]
    fn no_stops_passes_everything() {
        let mut s = m(&[]);
        assert_eq!(s.push("hello"), step("hello", false));
        assert_eq!(s.push(" world"), step(" world", false));
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn holds_partial_match_then_releases() {
        let mut s = m(&["</s>"]);
        assert_eq!(s.push("abc<"), step("abc", false));
        assert_eq!(s.push("/"), step("", false));
        assert_eq!(s.push("x"), step("</x", false));
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn stop_across_chunks() {
        let mut s = m(&["</s>"]);
        assert_eq!(s.push("done</"), step("done", false));
        assert_eq!(s.push("s> trailing"), step("", true));
        assert!(s.is_stopped());
        assert_eq!(s.push("more"), step("", true));
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn earliest_stop_wins() {
        let mut s = m(&["world", "lo w"]);
        assert_eq!(s.push("hello world"), step("hel", true));
    }

    #[test]
    fn first_completed_stop_wins_regardless_of_chunking() {
        // "bc" completes before "abcd" does, so the cut is at "bc" however the text is split.
        let mut s = m(&["abcd", "bc"]);
        assert_eq!(s.push("xabcd"), step("xa", true));
        let mut s = m(&["abcd", "bc"]);
        assert_eq!(s.push("xab"), step("x", false));
        assert_eq!(s.push("cd"), step("a", true));
        // Same end position: the earlier start (longer stop) wins.
        let mut s = m(&["c", "abc"]);
        assert_eq!(s.push("xabcd"), step("x", true));
    }

    #[test]
    fn finish_flushes_held_prefix() {
        let mut s = m(&["STOP"]);
        assert_eq!(s.push("abc ST"), step("abc ", false));
        assert_eq!(s.finish(), "ST");
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn overlapping_prefix_candidates() {
        // "aab" must be found even though the held tail restarts inside a failed partial match.
        let mut s = m(&["aab"]);
        assert_eq!(s.push("a"), step("", false));
        assert_eq!(s.push("a"), step("", false));
        assert_eq!(s.push("a"), step("a", false));
        assert_eq!(s.push("b!"), step("", true));
    }

    #[test]
    fn multibyte_text() {
        let mut s = m(&["é!"]);
        assert_eq!(s.push("café"), step("caf", false));
        assert_eq!(s.push("?"), step("é?", false));
        assert_eq!(s.push("é!x"), step("", true));
        let mut s = m(&["\u{1F600}"]);
        assert_eq!(s.push("a\u{1F600}b"), step("a", true));
    }

    #[test]
    fn empty_stop_strings_ignored() {
        let mut s = m(&["", "x"]);
        assert_eq!(s.push("abc"), step("abc", false));
        assert_eq!(s.push("x"), step("", true));
    }
}
