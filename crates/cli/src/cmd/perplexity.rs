//! `zeta perplexity`: llama-perplexity's method on a text file, optionally
//! dumping the first chunk's logits as a float32 `.npy`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;
use zeta_engine::{PerplexityOptions, perplexity::perplexity};

use super::common::LoadArgs;

/// Arguments of `zeta perplexity`.
#[derive(Debug, Args)]
pub struct PerplexityArgs {
    /// Model: a GGUF path or a models.lock name.
    pub model: String,
    /// The text file to score.
    #[arg(long, short = 'f')]
    pub file: PathBuf,
    /// Maximum number of chunks (default: all).
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Write the logits of every position of the first chunk here
    /// (float32 `.npy`, shape `[n_ctx, n_vocab]`).
    #[arg(long = "dump-logits")]
    pub dump_logits: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub load: LoadArgs,
}

pub fn run(args: PerplexityArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let engine = args.load.load(&args.model)?;
    let n_ctx = args.load.ctx.unwrap_or(512);
    let opts = PerplexityOptions {
        n_ctx,
        max_chunks: args.chunks,
    };
    let quiet = args.json;
    let mut progress = |done: usize, total: usize| {
        if !quiet {
            eprint!("\rchunk {done}/{total}");
            if done == total {
                eprintln!();
            }
        }
    };
    let r = perplexity(
        &engine,
        &text,
        &opts,
        args.dump_logits.is_some(),
        &mut progress,
    )?;
    if let (Some(path), Some(logits)) = (&args.dump_logits, &r.first_chunk_logits) {
        let n_vocab = engine.config().n_vocab;
        write_npy_f32(
            path,
            &[(logits.len() / n_vocab) as u64, n_vocab as u64],
            logits,
        )?;
    }
    if args.json {
        println!(
            "{}",
            json!({
                "ppl": r.ppl, "ppl_stddev": r.ppl_stddev, "per_chunk": r.per_chunk,
                "n_ctx": n_ctx, "n_tokens": r.n_tokens, "n_scored": r.n_scored,
            })
        );
    } else {
        let chunks: Vec<String> = r
            .per_chunk
            .iter()
            .enumerate()
            .map(|(i, p)| format!("[{}]{p:.4}", i + 1))
            .collect();
        println!("{}", chunks.join(","));
        println!("Final estimate: PPL = {:.4} +/- {:.5}", r.ppl, r.ppl_stddev);
    }
    Ok(())
}

/// Writes a C-order little-endian float32 `.npy` of `shape`.
fn write_npy_f32(path: &std::path::Path, shape: &[u64], data: &[f32]) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut f = std::io::BufWriter::new(file);
    f.write_all(&super::tensor::npy_header(shape))?;
    for v in data {
        f.write_all(&v.to_le_bytes())?;
    }
    f.flush()?;
    Ok(())
}
