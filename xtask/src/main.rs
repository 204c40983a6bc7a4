//! zeta developer commands (`cargo xtask …`):
//!
//! - `models list | fetch [NAME…|--all] | verify [NAME…]`: the model store
//!   (models.lock, `$ZETA_MODELS`).
//! - `synth --shape NAME --quant TYPE OUT.gguf`: random-weight llama models in
//!   the shapes of real ones, for tests and benchmarks.
//! - `tidy`: repository rules rustfmt and clippy do not check.
//! - `bench-compare`: zeta vs. llama.cpp's llama-bench on the same models,
//!   results in docs/bench/ and docs/BENCHMARKS.md.

mod bench_compare;
mod models;
mod progress;
mod synth;
mod tidy;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "zeta developer commands")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Model store: list, fetch and verify the models of models.lock.
    Models {
        #[command(subcommand)]
        cmd: ModelsCmd,
    },
    /// Write a random-weight llama model with complete metadata and vocab.
    Synth {
        /// Shape: tiny, llama-1b (TinyLlama-1.1B dims), llama-8b (Llama-3-8B dims).
        #[arg(long)]
        shape: String,
        /// File type: f16, q8_0, q4_0, q4_k_m.
        #[arg(long)]
        quant: String,
        /// RNG seed (same seed → same file).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output .gguf path.
        out: PathBuf,
    },
    /// Check repository rules: module docs, SAFETY comments, golden-data size.
    Tidy,
    /// Benchmark zeta against llama.cpp's llama-bench (writes docs/bench/, docs/BENCHMARKS.md).
    BenchCompare(bench_compare::Args),
}

#[derive(Debug, Subcommand)]
enum ModelsCmd {
    /// List the models with their store status (no hashing).
    List,
    /// Download (if needed) and verify models.
    Fetch {
        /// Model names from models.lock.
        names: Vec<String>,
        /// Fetch every model.
        #[arg(long, conflicts_with = "names")]
        all: bool,
    },
    /// Re-hash models and compare with the lock (all present models if none named).
    Verify {
        /// Model names from models.lock.
        names: Vec<String>,
    },
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Models { cmd } => match cmd {
            ModelsCmd::List => models::list(),
            ModelsCmd::Fetch { names, all } => models::fetch(&names, all),
            ModelsCmd::Verify { names } => models::verify(&names),
        },
        Cmd::BenchCompare(args) => {
            bench_compare::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Tidy => {
            // xtask/ is one level below the repository root
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap_or_else(|| std::path::Path::new("."));
            tidy::tidy(root)
        }
        Cmd::Synth {
            shape,
            quant,
            seed,
            out,
        } => {
            let s = synth::shape(&shape)?;
            let q = synth::Quant::parse(&quant)?;
            let start = Instant::now();
            let mut bar = progress::ByteBar::new(&format!("synth {} {}", s.name, q.name()));
            synth::synth(s, q, seed, &out, &mut |done, total| bar.set(done, total))?;
            bar.finish();
            let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
            eprintln!(
                "wrote {} ({:.1} MiB) in {:.1} s",
                out.display(),
                size as f64 / (1024.0 * 1024.0),
                start.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
