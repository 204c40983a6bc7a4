//! The subcommands, one module each.

pub mod info;
pub mod tensor;
