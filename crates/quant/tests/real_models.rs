//! Every tensor of the two real models, dequantized, hashes (sha256 of the
//! little-endian f32 array) to what llama.cpp's libggml produces
//! (`xtask/golden/quant_golden.py` → tests/golden/real_tensors.tsv).
//!
//! Models are found in `$ZETA_MODELS` (default `~/.cache/zeta/models`). A
//! missing model is a loud SKIP unless `ZETA_REQUIRE_MODELS=1`.
#![allow(clippy::unwrap_used)]

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use zeta_gguf::Gguf;
use zeta_quant::{GgmlType, dequantize};

fn models_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ZETA_MODELS") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    Path::new(&home).join(".cache/zeta/models")
}

/// Rows of real_tensors.tsv grouped by model: name → (type name, n_elements, sha256).
fn expected() -> HashMap<String, HashMap<String, (String, u64, String)>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/real_tensors.tsv");
    let text = std::fs::read_to_string(path).unwrap();
    let mut out: HashMap<String, HashMap<String, (String, u64, String)>> = HashMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 5, "bad line {line:?}");
        out.entry(f[0].to_string()).or_default().insert(
            f[1].to_string(),
            (f[2].to_string(), f[3].parse().unwrap(), f[4].to_string()),
        );
    }
    out
}

fn check_model(file: &str, want: &HashMap<String, (String, u64, String)>) {
    let path = models_dir().join(file);
    if !path.exists() {
        if std::env::var("ZETA_REQUIRE_MODELS").as_deref() == Ok("1") {
            panic!(
                "model {} is missing and ZETA_REQUIRE_MODELS=1",
                path.display()
            );
        }
        eprintln!(
            "SKIP: model {} not found; real-tensor dequantization not checked",
            path.display()
        );
        return;
    }
    let g = Gguf::open(&path).unwrap();
    assert_eq!(g.tensors().len(), want.len(), "{file}: tensor count");
    let mut row = Vec::new();
    for t in g.tensors() {
        let (ty, n, sha) = want
            .get(&t.name)
            .unwrap_or_else(|| panic!("{file}: unexpected tensor {}", t.name));
        assert_eq!(
            t.ggml_type,
            GgmlType::from_name(ty).unwrap(),
            "{file}:{}",
            t.name
        );
        assert_eq!(t.n_elements(), *n, "{file}:{}", t.name);
        let data = g.tensor_data(t);
        let row_len = t.row_len() as usize;
        let row_bytes = t.ggml_type.row_bytes(row_len as u64).unwrap() as usize;
        row.resize(row_len, 0f32);
        let mut h = Sha256::new();
        for chunk in data.chunks_exact(row_bytes) {
            dequantize(t.ggml_type, chunk, &mut row).unwrap();
            for v in &row {
                h.update(v.to_le_bytes());
            }
        }
        let got: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            &got, sha,
            "{file}: tensor {} ({}) dequantizes differently from ggml",
            t.name, ty
        );
    }
}

#[test]
fn real_model_tensors_dequantize_like_ggml() {
    let want = expected();
    for file in [
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "gemma-3-270m-q4_k_m.gguf",
    ] {
        check_model(file, &want[file]);
    }
}
