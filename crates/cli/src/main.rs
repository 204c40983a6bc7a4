//! `zeta`: the command-line interface.
//!
//! One module per subcommand under [`cmd`]; each has an `Args` (clap derive)
//! and a `run(Args) -> anyhow::Result<()>`. Adding a command: a module, a
//! variant in [`Command`], an arm in [`run`].
//!
//! Errors are printed as one line, `error: …` (the anyhow context chain), with
//! exit status 1 — never a panic or a backtrace.

mod cmd;
mod model;
mod output;
mod progress;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "zeta", version, about = "zeta: GGUF LLM inference in Rust")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate text from a prompt (streams to stdout).
    Run(cmd::run::RunArgs),
    /// Chat interactively using the model's chat template.
    Chat(cmd::chat::ChatArgs),
    /// Print the token ids of a text (no BOS added).
    Tokenize(cmd::tokenize::TokenizeArgs),
    /// Perplexity of a text file, as llama-perplexity computes it.
    Perplexity(cmd::perplexity::PerplexityArgs),
    /// Show a model's architecture, hyper-parameters, vocabulary and tensors.
    Info(cmd::info::Args),
    /// Dump one tensor, dequantized to f32, as a .npy file.
    Tensor(cmd::tensor::Args),
    /// Benchmark prompt processing and generation speed (like llama-bench).
    Bench(cmd::bench::Args),
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => cmd::run::run(args),
        Command::Chat(args) => cmd::chat::run(args),
        Command::Tokenize(args) => cmd::tokenize::run(args),
        Command::Perplexity(args) => cmd::perplexity::run(args),
        Command::Info(args) => cmd::info::run(args),
        Command::Tensor(args) => cmd::tensor::run(args),
        Command::Bench(args) => cmd::bench::run(args),
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        // `{:#}` prints the context chain on one line; no backtrace.
        let msg = format!("{e:#}").replace('\n', " ");
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}
