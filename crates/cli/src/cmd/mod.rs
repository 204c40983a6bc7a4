//! The subcommands, one module each.

pub mod bench;
pub mod chat;
pub mod common;
pub mod info;
pub mod perplexity;
pub mod run;
pub mod tensor;
pub mod tokenize;
