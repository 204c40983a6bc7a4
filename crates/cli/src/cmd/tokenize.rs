//! `zeta tokenize`: the token ids of a text (no BOS added), like
//! llama.cpp's `llama-tokenize --ids` with `add_special = false`.

use anyhow::Result;
use clap::Args;

/// Arguments of `zeta tokenize`.
#[derive(Debug, Args)]
pub struct TokenizeArgs {
    /// Model: a GGUF path or a models.lock name.
    pub model: String,
    /// The text to tokenize.
    pub text: String,
    /// Parse special/control tokens written in the text (e.g. `<|im_start|>`).
    #[arg(long = "parse-special")]
    pub parse_special: bool,
    /// Print the ids as a JSON array.
    #[arg(long)]
    pub json: bool,
    /// Never download the model.
    #[arg(long)]
    pub offline: bool,
}

pub fn run(args: TokenizeArgs) -> Result<()> {
    let path = if args.offline {
        zeta_engine::store::resolve(&args.model, false, &mut |_| {})?
    } else {
        crate::model::resolve(&args.model)?
    };
    let gguf = crate::model::open(&path)?;
    let tok = zeta_engine::Tokenizer::from_gguf(&gguf)?;
    let ids = tok.encode(&args.text, false, args.parse_special)?;
    if args.json {
        println!("{}", serde_json::to_string(&ids)?);
    } else {
        for id in ids {
            let piece = tok.token_to_piece(id, true);
            println!("{id:>7} -> {:?}", String::from_utf8_lossy(&piece));
        }
    }
    Ok(())
}
