//! Helpers shared by the engine's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;

/// The store directory (`$ZETA_MODELS`, default `~/.cache/zeta/models`).
pub fn models_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ZETA_MODELS") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache/zeta/models")
}

/// The path of a real model, or `None` (after a loud SKIP line) when it is
/// absent. With `ZETA_REQUIRE_MODELS=1` a missing model fails the test.
pub fn model(file: &str) -> Option<PathBuf> {
    let p = models_dir().join(file);
    if p.is_file() {
        return Some(p);
    }
    if std::env::var("ZETA_REQUIRE_MODELS").as_deref() == Ok("1") {
        panic!(
            "required model {} is missing (ZETA_REQUIRE_MODELS=1)",
            p.display()
        );
    }
    eprintln!(
        "SKIP: model {} not found; run `cargo xtask models fetch --all`",
        p.display()
    );
    None
}

pub const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";

/// The model crate's golden directory (llama.cpp reference data).
pub fn model_golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../model/tests/golden")
        .join(name)
}

pub fn read_json(path: PathBuf) -> serde_json::Value {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}
