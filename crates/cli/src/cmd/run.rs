//! `zeta run`: generate text from a prompt, streaming it to stdout.

use std::io::Write;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;
use zeta_engine::{ChatMessage, GenerateParams, Timings};

use super::common::{DEFAULT_MODEL, LoadArgs, SamplingArgs};

/// Arguments of `zeta run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Model: a GGUF path or a models.lock name.
    #[arg(default_value = DEFAULT_MODEL)]
    pub model: String,
    /// The prompt.
    #[arg(long, short = 'p', conflicts_with = "file")]
    pub prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(long, short = 'f')]
    pub file: Option<std::path::PathBuf>,
    /// Tokens to generate (-1: until end of generation or a full context).
    #[arg(
        long,
        short = 'n',
        default_value_t = 128,
        allow_negative_numbers = true
    )]
    pub n_predict: i64,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// Stop when this text appears (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens.
    #[arg(long = "ignore-eos")]
    pub ignore_eos: bool,
    /// Print one JSON object with tokens, text and timings instead of streaming.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

pub fn run(args: RunArgs) -> Result<()> {
    let prompt = match (&args.prompt, &args.file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read prompt file {}", f.display()))?,
        (None, None) => bail!("no prompt: pass -p TEXT or -f FILE"),
    };
    let max_tokens = match args.n_predict {
        n if n < 0 => None,
        n => Some(usize::try_from(n).context("-n is too large")?),
    };
    let engine = args.load.load(&args.model)?;
    let prompt_tokens = if args.chat {
        engine.tokenize_chat(&[ChatMessage::new("user", prompt)])?
    } else {
        engine.tokenize_prompt(&prompt)?
    };
    let mut session = engine.session(args.load.ctx)?;
    let params = GenerateParams {
        max_tokens,
        sampler: args.sampling.config(),
        stop: args.stop.clone(),
        ignore_eos: args.ignore_eos,
        render_special: false,
    };
    let mut generation = session.generate(&prompt_tokens, params)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for step in &mut generation {
        let step = step?;
        if !args.json {
            out.write_all(step.text.as_bytes())?;
            out.flush()?;
        }
    }
    let timings = generation.timings().clone();
    let finish = generation
        .finish_reason()
        .map(|f| f.as_str())
        .unwrap_or("eog");
    if args.json {
        let obj = json!({
            "model": engine.path().display().to_string(),
            "prompt_tokens": prompt_tokens,
            "tokens": generation.tokens(),
            "text": generation.text(),
            "finish_reason": finish,
            "timings": timings_json(&timings, engine.load_time()),
        });
        writeln!(out, "{obj}")?;
    } else {
        writeln!(out)?;
        eprintln!("{}", timings_line(&timings));
    }
    Ok(())
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn timings_json(t: &Timings, load: std::time::Duration) -> serde_json::Value {
    let lat: Vec<f64> = t.decode_steps.iter().map(|d| ms(*d)).collect();
    let pct = |p: f64| super::bench::percentile(&lat, p);
    json!({
        "load_ms": ms(load),
        "prompt_tokens_evaluated": t.prompt_tokens_evaluated,
        "prompt_tokens_reused": t.prompt_tokens_reused,
        "prompt_ms": ms(t.prompt_eval),
        "prompt_tokens_per_second": t.prompt_tokens_per_second(),
        "ttft_ms": ms(t.time_to_first_token),
        "generated_tokens": t.generated,
        "decode_tokens_per_second": t.decode_tokens_per_second(),
        "decode_latency_p50_ms": pct(50.0),
        "decode_latency_p95_ms": pct(95.0),
        "decode_latency_p99_ms": pct(99.0),
    })
}

pub fn timings_line(t: &Timings) -> String {
    format!(
        "prompt: {} tokens in {:.1} ms ({:.1} tok/s), first token after {:.1} ms; generated {} tokens ({:.1} tok/s)",
        t.prompt_tokens_evaluated,
        ms(t.prompt_eval),
        t.prompt_tokens_per_second(),
        ms(t.time_to_first_token),
        t.generated,
        t.decode_tokens_per_second()
    )
}
