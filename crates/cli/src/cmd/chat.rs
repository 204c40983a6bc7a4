//! `zeta chat`: an interactive, streaming conversation using the model's
//! chat template. Reads user turns line by line from stdin (a terminal or a
//! pipe); the KV cache is reused across turns.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Result;
use clap::Args;
use zeta_engine::{ChatMessage, GenerateParams};

use super::common::{DEFAULT_MODEL, LoadArgs, SamplingArgs};

/// Arguments of `zeta chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// Model: a GGUF path or a models.lock name.
    #[arg(default_value = DEFAULT_MODEL)]
    pub model: String,
    /// A system message that starts the conversation.
    #[arg(long)]
    pub system: Option<String>,
    /// Maximum tokens per reply.
    #[arg(long, short = 'n', default_value_t = 512)]
    pub n_predict: usize,
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

pub fn run(args: ChatArgs) -> Result<()> {
    let engine = args.load.load(&args.model)?;
    let template = engine.chat_template()?;
    let mut session = engine.session(args.load.ctx)?;
    let mut messages = Vec::new();
    if let Some(s) = &args.system {
        messages.push(ChatMessage::new("system", s.clone()));
    }
    let interactive = std::io::stdin().is_terminal();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let stdout = std::io::stdout();
    loop {
        if interactive {
            eprint!("> ");
            std::io::stderr().flush()?;
        }
        let Some(line) = lines.next() else { break };
        let line = line?;
        let user = line.trim_end_matches(['\r', '\n']);
        if user.trim().is_empty() {
            continue;
        }
        if interactive && (user == "/exit" || user == "/quit") {
            break;
        }
        messages.push(ChatMessage::new("user", user));
        let text = template.render(&messages, true)?;
        let prompt = zeta_engine::chat::tokenize_rendered(engine.tokenizer(), &text)?;
        let params = GenerateParams {
            max_tokens: Some(args.n_predict),
            sampler: args.sampling.config(),
            ..GenerateParams::default()
        };
        let mut generation = session.generate(&prompt, params)?;
        let mut out = stdout.lock();
        for step in &mut generation {
            out.write_all(step?.text.as_bytes())?;
            out.flush()?;
        }
        writeln!(out)?;
        let reply = generation.text().to_owned();
        drop(generation);
        messages.push(ChatMessage::new("assistant", reply));
    }
    Ok(())
}
