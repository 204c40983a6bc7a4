//! Finding and opening the model a command names.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use zeta_gguf::Gguf;

use crate::progress::StoreBars;

/// Resolves a path or models.lock name (fetching it on first use, with a
/// progress bar on stderr).
pub fn resolve(name_or_path: &str) -> Result<PathBuf> {
    let mut bars = StoreBars::default();
    let res = zeta_engine::store::resolve(name_or_path, true, &mut |ev| bars.event(ev));
    bars.clear();
    Ok(res?)
}

/// Opens a GGUF file.
pub fn open(path: &Path) -> Result<Gguf> {
    Gguf::open(path).with_context(|| format!("cannot read {} as GGUF", path.display()))
}
