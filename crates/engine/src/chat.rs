//! Chat templates: the GGUF's `tokenizer.chat_template` (a Jinja template
//! from Hugging Face) rendered with minijinja, sandboxed: a fuel limit bounds
//! the work a template may do and the output size is capped.

use minijinja::{Environment, Error as JinjaError, ErrorKind, context};
use serde::Serialize;
use zeta_model::tokenizer::Tokenizer;

use crate::{EngineError, Result};

/// ChatML, used when a GGUF file has no chat template and its architecture
/// has no built-in one (llama.cpp falls back to ChatML too).
pub const CHATML_TEMPLATE: &str = include_str!("templates/chatml.jinja");

/// Gemma's turn format (`<start_of_turn>user … <end_of_turn>`), used for
/// `gemma3` files that carry no template of their own.
pub const GEMMA_TEMPLATE: &str = include_str!("templates/gemma.jinja");

/// The template to use when a GGUF file has none.
pub fn builtin_template(arch: zeta_model::Arch) -> &'static str {
    match arch {
        zeta_model::Arch::Gemma3 => GEMMA_TEMPLATE,
        _ => CHATML_TEMPLATE,
    }
}

/// Instruction budget for one render (minijinja "fuel").
const FUEL: u64 = 5_000_000;
/// Largest rendered prompt accepted.
const MAX_OUTPUT_BYTES: usize = 4 << 20;
/// Largest template source accepted.
const MAX_TEMPLATE_BYTES: usize = 256 << 10;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

fn raise_exception(msg: String) -> std::result::Result<String, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
}

impl ChatTemplate {
    /// Compiles `source`; special token texts come from `tokenizer`.
    pub fn new(source: &str, tokenizer: &Tokenizer) -> Result<Self> {
        if source.len() > MAX_TEMPLATE_BYTES {
            return Err(EngineError::ChatTemplate(format!(
                "template is {} bytes (limit {MAX_TEMPLATE_BYTES})",
                source.len()
            )));
        }
        let mut env = Environment::new();
        // Hugging Face renders chat templates with these two on.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(64);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned("chat", source.to_owned())
            .map_err(|e| EngineError::ChatTemplate(format!("{e:#}")))?;
        let text = |id: Option<u32>| {
            id.and_then(|t| tokenizer.token_text(t))
                .unwrap_or("")
                .to_owned()
        };
        Ok(Self {
            env,
            bos: text(tokenizer.bos()),
            eos: text(tokenizer.eos()),
        })
    }

    /// Renders the conversation; with `add_generation_prompt` the text ends
    /// where the assistant's reply starts.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| EngineError::ChatTemplate(format!("{e:#}")))?;
        let out = tmpl
            .render(context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos,
                eos_token => self.eos,
            })
            .map_err(|e| EngineError::ChatTemplate(format!("{e:#}")))?;
        if out.len() > MAX_OUTPUT_BYTES {
            return Err(EngineError::ChatTemplate(format!(
                "rendered prompt is {} bytes (limit {MAX_OUTPUT_BYTES})",
                out.len()
            )));
        }
        Ok(out)
    }
}

/// Tokenizes a rendered chat: special tokens are parsed; BOS is added when
/// the model wants one and the template did not already write it.
pub fn tokenize_rendered(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    let mut ids = tokenizer.encode(text, false, true)?;
    if tokenizer.add_bos()
        && let Some(bos) = tokenizer.bos()
        && ids.first() != Some(&bos)
    {
        ids.insert(0, bos);
    }
    Ok(ids)
}
