//! Perplexity, computed exactly as llama.cpp's `llama-perplexity` does:
//! the text is tokenized with BOS, cut into chunks of `n_ctx` tokens; each
//! chunk is evaluated from an empty cache with its first token replaced by
//! BOS (when the model adds one); only the second half of each chunk is
//! scored (positions `n_ctx/2 .. n_ctx-1` predicting the next token).
//! PPL = exp(mean negative log-likelihood) over all scored tokens.

use crate::{Engine, EngineError, Result};

/// Options for [`perplexity`].
#[derive(Debug, Clone)]
pub struct PerplexityOptions {
    /// Tokens per chunk.
    pub n_ctx: usize,
    /// Stop after this many chunks (`None`: all whole chunks).
    pub max_chunks: Option<usize>,
}

/// The result of [`perplexity`].
#[derive(Debug, Clone)]
pub struct PerplexityResult {
    /// Final estimate.
    pub ppl: f64,
    /// llama.cpp's "+/-" uncertainty of the estimate.
    pub ppl_stddev: f64,
    /// Running estimate after each chunk (llama.cpp's `[i]x.xxxx` values).
    pub per_chunk: Vec<f64>,
    /// Tokens in the text.
    pub n_tokens: usize,
    /// Tokens scored.
    pub n_scored: usize,
    /// Logits of every position of the first chunk, `[n_ctx, n_vocab]`
    /// row-major (kept only when asked for).
    pub first_chunk_logits: Option<Vec<f32>>,
}

/// Computes the perplexity of `text`. `progress(done, total)` is called
/// after each chunk.
pub fn perplexity(
    engine: &Engine,
    text: &str,
    opts: &PerplexityOptions,
    keep_first_logits: bool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PerplexityResult> {
    let n_ctx = engine.check_ctx(Some(opts.n_ctx))?;
    if n_ctx < 2 {
        return Err(EngineError::InvalidParameter(
            "perplexity needs a context of at least 2 tokens".into(),
        ));
    }
    let tokenizer = engine.tokenizer();
    let mut tokens = tokenizer.encode(text, true, false)?;
    if tokens.len() < 2 * n_ctx {
        return Err(EngineError::TextTooShort {
            needed: 2 * n_ctx,
            n_ctx,
            got: tokens.len(),
        });
    }
    let n_vocab = engine.config().n_vocab;
    let mut n_chunk = tokens.len() / n_ctx;
    if let Some(m) = opts.max_chunks {
        n_chunk = n_chunk.min(m.max(1));
    }
    let bos = if tokenizer.add_bos() {
        tokenizer.bos()
    } else {
        None
    };
    let first = n_ctx / 2;
    let mut session = engine.session(Some(n_ctx))?;
    let (mut nll, mut nll2, mut count) = (0.0f64, 0.0f64, 0usize);
    let mut per_chunk = Vec::with_capacity(n_chunk);
    let mut first_chunk_logits = None;
    for i in 0..n_chunk {
        let start = i * n_ctx;
        let chunk = &mut tokens[start..start + n_ctx];
        let original = chunk[0];
        if let Some(b) = bos {
            chunk[0] = b;
        }
        session.reset();
        // Only positions `first..` are scored: evaluate the first half with
        // last-position logits only (the output projection of a large
        // vocabulary is the costliest part), unless all logits are wanted.
        let keep_all = i == 0 && keep_first_logits;
        let skip = if keep_all { 0 } else { first };
        if skip > 0 {
            session.eval_last(&chunk[..skip])?;
        }
        let logits = session.eval_all(&chunk[skip..])?;
        chunk[0] = original;
        if keep_all {
            first_chunk_logits = Some(logits.to_vec());
        }
        for j in first..n_ctx - 1 {
            let r = j - skip;
            let row = &logits[r * n_vocab..(r + 1) * n_vocab];
            let target = tokens[start + j + 1] as usize;
            let lp = log_softmax_at(row, target);
            nll -= lp;
            nll2 += lp * lp;
            count += 1;
        }
        per_chunk.push((nll / count as f64).exp());
        progress(i + 1, n_chunk);
    }
    let mean = nll / count as f64;
    let ppl = mean.exp();
    let var = nll2 / count as f64 - mean * mean;
    let ppl_stddev = if var > 0.0 && count > 1 {
        (var / (count - 1) as f64).sqrt() * ppl
    } else {
        0.0
    };
    Ok(PerplexityResult {
        ppl,
        ppl_stddev,
        per_chunk,
        n_tokens: tokens.len(),
        n_scored: count,
        first_chunk_logits,
    })
}

/// log softmax(row)[i], in f64 like llama.cpp's `log_softmax`.
fn log_softmax_at(row: &[f32], i: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    row[i] as f64 - max - sum.ln()
}

#[cfg(test)]
mod tests {
    use super::log_softmax_at;

    #[test]
    fn log_softmax_matches_definition() {
        let row = [1.0f32, 2.0, 3.0];
        let z: f64 = row.iter().map(|&x| (x as f64).exp()).sum();
        for i in 0..3 {
            let want = (row[i] as f64).exp() / z;
            assert!((log_softmax_at(&row, i).exp() - want).abs() < 1e-12);
        }
    }
}
