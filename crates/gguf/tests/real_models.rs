//! Sanity checks on the real models (found via `$ZETA_MODELS`, default
//! `~/.cache/zeta/models`). A missing model prints `SKIP: …` and passes,
//! unless `ZETA_REQUIRE_MODELS=1`, in which case it fails.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use zeta_gguf::{GgmlType, Gguf, GgufWriter};

const SMOLLM: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const GEMMA: &str = "gemma-3-270m-q4_k_m.gguf";

fn model(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("ZETA_MODELS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/zeta/models")))
        .unwrap_or_else(|| PathBuf::from(".cache/zeta/models"));
    let path = dir.join(name);
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("ZETA_REQUIRE_MODELS").as_deref() == Ok("1") {
        panic!(
            "model {} is missing and ZETA_REQUIRE_MODELS=1",
            path.display()
        );
    }
    eprintln!("SKIP: model {} not found (set ZETA_MODELS)", path.display());
    None
}

fn check_common(g: &Gguf, arch: &str) {
    assert_eq!(g.get_str("general.architecture").unwrap(), arch);
    assert!(g.version() == 2 || g.version() == 3);
    assert!(!g.tensors().is_empty());
    let len = g.as_bytes().len() as u64;
    for t in g.tensors() {
        let d = g.tensor_data(t);
        assert_eq!(d.len() as u64, t.n_bytes, "{}", t.name);
        assert!(g.data_offset() + t.offset + t.n_bytes <= len);
        assert_eq!(t.row_bytes() * t.n_rows(), t.n_bytes);
        assert_eq!((d.as_ptr() as u64) % g.alignment().min(4096), 0);
    }
    let tokens = g.get_array("tokenizer.ggml.tokens").unwrap();
    assert!(tokens.as_strings().unwrap().len() > 1000);
    let n_vocab = tokens.len() as u64;
    let emb = g.tensor("token_embd.weight").unwrap();
    assert_eq!(emb.n_rows(), n_vocab);
    assert_eq!(
        emb.row_len(),
        g.get_u64(&format!("{arch}.embedding_length")).unwrap()
    );
    assert!(g.get_u32(&format!("{arch}.block_count")).unwrap() > 0);
}

#[test]
fn smollm2_reads_and_round_trips() {
    let Some(path) = model(SMOLLM) else { return };
    let g = Gguf::open(&path).unwrap();
    check_common(&g, "llama");
    assert!(g.tensors().iter().any(|t| t.ggml_type == GgmlType::Q4_1));
    assert!(g.get_array("tokenizer.ggml.merges").unwrap().len() > 1000);

    // Write the parsed metadata + tensors back and re-read.
    let mut w = GgufWriter::new().with_version(g.version());
    for (k, v) in g.metadata() {
        w.add_kv(k.clone(), v.clone());
    }
    for t in g.tensors() {
        w.add_tensor_info(&t.name, &t.dims, t.ggml_type).unwrap();
    }
    let mut out = Vec::new();
    w.write_streaming(&mut out, &mut |i, info, sink| {
        assert_eq!(info.name, g.tensors()[i].name);
        sink.write_all(g.tensor_data(&g.tensors()[i]))
    })
    .unwrap();
    // The file was written by ggml; our writer reproduces it exactly.
    assert!(
        out == g.as_bytes(),
        "rewrite differs from the original file"
    );
    let g2 = Gguf::from_bytes(out).unwrap();
    assert_eq!(g2.metadata(), g.metadata());
    assert_eq!(g2.tensors().len(), g.tensors().len());
    for (a, b) in g.tensors().iter().zip(g2.tensors()) {
        assert_eq!(
            (&a.name, &a.dims, a.ggml_type, a.n_bytes),
            (&b.name, &b.dims, b.ggml_type, b.n_bytes)
        );
        assert_eq!(g.tensor_data(a), g2.tensor_data(b), "{}", a.name);
    }
}

#[test]
fn gemma3_reads() {
    let Some(path) = model(GEMMA) else { return };
    let g = Gguf::open(&path).unwrap();
    check_common(&g, "gemma3");
    for ty in [GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::F32] {
        assert!(g.tensors().iter().any(|t| t.ggml_type == ty), "{ty}");
    }
}
