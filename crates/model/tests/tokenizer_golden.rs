//! Token-for-token comparison of zeta's tokenizer with llama.cpp on the real
//! models, over the corpus in `tests/golden/tokenizer_corpus.json`.
//!
//! Golden ids come from `xtask/golden/tokenizer_golden.py golden` (llama.cpp
//! 0c1e570). The models are found in `$ZETA_MODELS` (default
//! `~/.cache/zeta/models`); a missing model is a loud SKIP unless
//! `ZETA_REQUIRE_MODELS=1`.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use serde_json::Value as Json;
use zeta_gguf::Gguf;
use zeta_model::tokenizer::{StreamDecoder, Tokenizer};

fn models_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ZETA_MODELS") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    home.join(".cache/zeta/models")
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn load_json(name: &str) -> Json {
    let text = std::fs::read_to_string(golden_dir().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Json) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| u32::try_from(x.as_u64().unwrap()).unwrap())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Loads the model's tokenizer, or `None` (after a loud SKIP) when the file is absent.
fn tokenizer(file: &str) -> Option<Tokenizer> {
    let path = models_dir().join(file);
    if !path.exists() {
        if std::env::var("ZETA_REQUIRE_MODELS").as_deref() == Ok("1") {
            panic!("model {} is missing and ZETA_REQUIRE_MODELS=1", path.display());
        }
        eprintln!("SKIP: model {} not found (set ZETA_MODELS); tokenizer golden test not run", path.display());
        return None;
    }
    let g = Gguf::open(&path).unwrap();
    Some(Tokenizer::from_gguf(&g).unwrap())
}

fn check_model(key: &str, file: &str) {
    let Some(tok) = tokenizer(file) else {
        return;
    };
    let corpus = load_json("tokenizer_corpus.json");
    let corpus: Vec<&str> = corpus.as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    let golden = load_json(&format!("tokenizer_{key}.json"));

    // Vocabulary-level facts.
    assert_eq!(tok.n_vocab() as u64, golden["n_vocab"].as_u64().unwrap(), "n_vocab");
    assert_eq!(tok.bos().map(i64::from), golden["bos"].as_i64().filter(|&b| b >= 0), "bos");
    assert_eq!(tok.eos().map(i64::from), golden["eos"].as_i64().filter(|&b| b >= 0), "eos");
    assert_eq!(tok.add_bos(), golden["add_bos"].as_bool().unwrap(), "add_bos");
    assert_eq!(tok.add_eos(), golden["add_eos"].as_bool().unwrap(), "add_eos");
    assert_eq!(tok.eog_ids(), ids(&golden["eog"]), "EOG set");

    let mut failures: Vec<String> = Vec::new();
    let (mut n_plain, mut ok_plain, mut n_special, mut ok_special, mut n_add, mut ok_add) = (0, 0, 0, 0, 0, 0);
    let (mut n_detok, mut ok_detok) = (0, 0);
    for case in golden["cases"].as_array().unwrap() {
        let i = case["i"].as_u64().unwrap() as usize;
        let text = corpus[i];
        let mut check = |mode: &str, got: Vec<u32>, want: Vec<u32>, n: &mut usize, ok: &mut usize| {
            *n += 1;
            if got == want {
                *ok += 1;
            } else {
                let first = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
                failures.push(format!(
                    "[{key} {mode}] #{i} {text:?}\n    want {want:?}\n    got  {got:?}\n    first difference at index {first}"
                ));
            }
        };
        let plain = tok.encode(text, false, false).unwrap();
        check("plain", plain.clone(), ids(&case["plain"]), &mut n_plain, &mut ok_plain);
        let special = tok.encode(text, false, true).unwrap();
        check("parse_special", special.clone(), ids(&case["special"]), &mut n_special, &mut ok_special);
        if let Some(want) = case.get("add_special") {
            check("add_special", tok.encode(text, true, true).unwrap(), ids(want), &mut n_add, &mut ok_add);
        }

        // llama_detokenize of llama.cpp's own ids (independent of our encoder).
        for (ids_key, detok_key, unparse) in [("plain", "detok", false), ("special", "detok_special", true)] {
            n_detok += 1;
            let got = hex(&tok.detokenize(&ids(&case[ids_key]), false, unparse));
            if got == case[detok_key].as_str().unwrap() {
                ok_detok += 1;
            } else {
                failures.push(format!(
                    "[{key} {detok_key}] #{i} {text:?}: want {} got {got}",
                    case[detok_key].as_str().unwrap()
                ));
            }
        }

        // The stream decoder reproduces the lossy decode of the same ids.
        let mut sd = StreamDecoder::new(true);
        let mut streamed = String::new();
        for &id in &special {
            streamed.push_str(&sd.push(&tok, id));
        }
        streamed.push_str(&sd.finish());
        assert_eq!(streamed, tok.decode(&special, true), "stream decode of #{i}");
    }

    let pieces = golden["pieces"].as_object().unwrap();
    let mut ok_pieces = 0;
    for (id, want) in pieces {
        let id: u32 = id.parse().unwrap();
        let want = want.as_array().unwrap();
        let got = [hex(&tok.token_to_piece(id, true)), hex(&tok.token_to_piece(id, false))];
        if got[0] == want[0].as_str().unwrap() && got[1] == want[1].as_str().unwrap() {
            ok_pieces += 1;
        } else {
            failures.push(format!("[{key} piece] id {id}: want {want:?} got {got:?}"));
        }
    }

    eprintln!(
        "{key}: plain {ok_plain}/{n_plain}, parse_special {ok_special}/{n_special}, add_special {ok_add}/{n_add}, \
         detokenize {ok_detok}/{n_detok}, pieces {ok_pieces}/{}",
        pieces.len()
    );
    if !failures.is_empty() {
        let shown: Vec<&String> = failures.iter().take(40).collect();
        panic!(
            "{} mismatches with llama.cpp for {key} (first {}):\n{}",
            failures.len(),
            shown.len(),
            shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
        );
    }
}

#[test]
fn golden_smollm2() {
    check_model("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf");
}

#[test]
fn golden_gemma3() {
    check_model("gemma3", "gemma-3-270m-q4_k_m.gguf");
}

/// Long inputs stay fast: SPM on 100 KB without spaces, BPE on 100 KB of one word.
#[test]
fn long_inputs_are_fast() {
    for file in ["gemma-3-270m-q4_k_m.gguf", "SmolLM2-135M-Instruct.Q4_1.gguf"] {
        let Some(tok) = tokenizer(file) else {
            continue;
        };
        for text in ["x".repeat(100_000), "ab😀".repeat(20_000), "\n".repeat(100_000), "<".repeat(100_000)] {
            let t0 = std::time::Instant::now();
            let ids = tok.encode(&text, true, true).unwrap();
            let dt = t0.elapsed();
            assert!(!ids.is_empty());
            assert!(dt.as_secs_f64() < 5.0, "{file}: {} bytes took {dt:?}", text.len());
            assert_eq!(tok.decode(&ids, false).len(), text.len(), "{file}: round trip length");
        }
    }
}
