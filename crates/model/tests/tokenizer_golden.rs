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
use zeta_gguf::{Array, Gguf, GgufWriter, Value};
use zeta_model::tokenizer::{StreamDecoder, Tokenizer};

fn models_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ZETA_MODELS") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
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
/// `overrides` (from a variant's golden file: key → value, `null` = remove) rewrite the
/// metadata first, in memory, the way the golden script rewrote it for llama.cpp.
fn tokenizer_with(
    file: &str,
    overrides: Option<&serde_json::Map<String, Json>>,
) -> Option<Tokenizer> {
    let path = models_dir().join(file);
    if !path.exists() {
        if std::env::var("ZETA_REQUIRE_MODELS").as_deref() == Ok("1") {
            panic!(
                "model {} is missing and ZETA_REQUIRE_MODELS=1",
                path.display()
            );
        }
        eprintln!(
            "SKIP: model {} not found (set ZETA_MODELS); tokenizer golden test not run",
            path.display()
        );
        return None;
    }
    let g = Gguf::open(&path).unwrap();
    let Some(overrides) = overrides else {
        return Some(Tokenizer::from_gguf(&g).unwrap());
    };
    let mut w = GgufWriter::new();
    for (k, v) in g.metadata() {
        if overrides.contains_key(k) {
            continue;
        }
        // "key#index": replace one element of an array of strings.
        let mut v = v.clone();
        for (ok, ov) in overrides {
            if let Some((key, idx)) = ok.split_once('#')
                && key == k
            {
                let Value::Array(Array::String(items)) = &mut v else {
                    panic!("{ok}: not an array of strings");
                };
                items[idx.parse::<usize>().unwrap()] = ov.as_str().unwrap().to_string();
            }
        }
        w.add_kv(k.clone(), v);
    }
    for (k, v) in overrides {
        if k.contains('#') {
            continue;
        }
        let v = match v {
            Json::Null => continue,
            Json::Bool(b) => Value::Bool(*b),
            Json::String(s) => Value::String(s.clone()),
            Json::Number(n) => Value::U32(u32::try_from(n.as_u64().unwrap()).unwrap()),
            other => panic!("unsupported override {other}"),
        };
        w.add_kv(k.clone(), v);
    }
    let mut bytes = Vec::new();
    w.write_to(&mut bytes).unwrap();
    Some(Tokenizer::from_gguf(&Gguf::from_bytes(bytes).unwrap()).unwrap())
}

fn tokenizer(file: &str) -> Option<Tokenizer> {
    tokenizer_with(file, None)
}

fn check_model(key: &str) {
    let golden = load_json(&format!("tokenizer_{key}.json"));
    let file = golden["model"].as_str().unwrap();
    let Some(tok) = tokenizer_with(file, golden["overrides"].as_object()) else {
        return;
    };
    let corpus = load_json("tokenizer_corpus.json");
    let corpus: Vec<&str> = corpus
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();

    // Vocabulary-level facts.
    assert_eq!(
        tok.n_vocab() as u64,
        golden["n_vocab"].as_u64().unwrap(),
        "n_vocab"
    );
    assert_eq!(
        tok.bos().map(i64::from),
        golden["bos"].as_i64().filter(|&b| b >= 0),
        "bos"
    );
    assert_eq!(
        tok.eos().map(i64::from),
        golden["eos"].as_i64().filter(|&b| b >= 0),
        "eos"
    );
    assert_eq!(
        tok.add_bos(),
        golden["add_bos"].as_bool().unwrap(),
        "add_bos"
    );
    assert_eq!(
        tok.add_eos(),
        golden["add_eos"].as_bool().unwrap(),
        "add_eos"
    );
    assert_eq!(tok.eog_ids(), ids(&golden["eog"]), "EOG set");

    let mut failures: Vec<String> = Vec::new();
    let (mut n_plain, mut ok_plain, mut n_special, mut ok_special, mut n_add, mut ok_add) =
        (0, 0, 0, 0, 0, 0);
    let (mut n_detok, mut ok_detok) = (0, 0);
    for case in golden["cases"].as_array().unwrap() {
        let i = case["i"].as_u64().unwrap() as usize;
        let text = corpus[i];
        let mut check = |mode: &str,
                         got: Vec<u32>,
                         want: Vec<u32>,
                         n: &mut usize,
                         ok: &mut usize| {
            *n += 1;
            if got == want {
                *ok += 1;
            } else {
                let first = got
                    .iter()
                    .zip(&want)
                    .position(|(a, b)| a != b)
                    .unwrap_or(got.len().min(want.len()));
                failures.push(format!(
                    "[{key} {mode}] #{i} {text:?}\n    want {want:?}\n    got  {got:?}\n    first difference at index {first}"
                ));
            }
        };
        let plain = tok.encode(text, false, false).unwrap();
        check(
            "plain",
            plain.clone(),
            ids(&case["plain"]),
            &mut n_plain,
            &mut ok_plain,
        );
        // Fields equal to their plain counterpart are omitted from the golden file.
        let want_special = case.get("special").unwrap_or(&case["plain"]);
        let special = tok.encode(text, false, true).unwrap();
        check(
            "parse_special",
            special.clone(),
            ids(want_special),
            &mut n_special,
            &mut ok_special,
        );
        let mut detok_cases = vec![
            ("detok", ids(&case["plain"]), false, false, &case["detok"]),
            (
                "detok_special",
                ids(want_special),
                false,
                true,
                case.get("detok_special").unwrap_or(&case["detok"]),
            ),
        ];
        if let Some(want) = case.get("add_special") {
            check(
                "add_special",
                tok.encode(text, true, true).unwrap(),
                ids(want),
                &mut n_add,
                &mut ok_add,
            );
            detok_cases.push(("detok_rm", ids(want), true, true, &case["detok_rm"]));
        }

        // llama_detokenize of llama.cpp's own ids (independent of our encoder).
        for (name, ids, remove_special, unparse, want) in detok_cases {
            n_detok += 1;
            let want = want.as_str().unwrap();
            let got = hex(&tok.detokenize(&ids, remove_special, unparse));
            if got == want {
                ok_detok += 1;
            } else {
                failures.push(format!(
                    "[{key} {name}] #{i} {text:?}: want {want} got {got}"
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
        assert_eq!(
            streamed,
            tok.decode(&special, true),
            "stream decode of #{i}"
        );
    }

    let empty = serde_json::Map::new();
    let pieces = golden
        .get("pieces")
        .and_then(Json::as_object)
        .unwrap_or(&empty);
    let mut ok_pieces = 0;
    for (id, want) in pieces {
        let id: u32 = id.parse().unwrap();
        let want = want.as_array().unwrap();
        let got = [
            hex(&tok.token_to_piece(id, true)),
            hex(&tok.token_to_piece(id, false)),
        ];
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
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn golden_smollm2() {
    check_model("smollm2");
}

#[test]
fn golden_gemma3() {
    check_model("gemma3");
}

/// SmolLM2's vocabulary with `tokenizer.ggml.pre = "default"` (four regex passes).
#[test]
fn golden_variant_default_pre() {
    check_model("smollm2_default");
}

/// SmolLM2's vocabulary with the Llama 3 pre-tokenizer (and its add_bos/ignore_merges defaults).
#[test]
fn golden_variant_llama3_pre() {
    check_model("smollm2_llama3");
}

/// SmolLM2's vocabulary with the Qwen 2 pre-tokenizer.
#[test]
fn golden_variant_qwen2_pre() {
    check_model("smollm2_qwen2");
}

/// SmolLM2's vocabulary with the GPT-2 pre-tokenizer (and clean_up_tokenization_spaces).
#[test]
fn golden_variant_gpt2_pre() {
    check_model("smollm2_gpt2");
}

/// Gemma 3's vocabulary with add_space_prefix and add_eos_token on.
#[test]
fn golden_variant_gemma3_space_prefix() {
    check_model("gemma3_prefix");
}

/// Gemma 3's vocabulary under a jina-v2 pre-tokenizer name: `<mask>` strips spaces on its left.
#[test]
fn golden_variant_gemma3_lstrip() {
    check_model("gemma3_lstrip");
}

/// SmolLM2's vocabulary named like Phi-3: special tokens strip spaces on their right.
#[test]
fn golden_variant_phi3_rstrip() {
    check_model("smollm2_phi3");
}

/// Long inputs stay fast: SPM on 100 KB without spaces, BPE on 100 KB of one word.
#[test]
fn long_inputs_are_fast() {
    for file in [
        "gemma-3-270m-q4_k_m.gguf",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
    ] {
        let path = models_dir().join(file);
        if !path.exists() {
            let _ = tokenizer(file); // SKIP message (or panic under ZETA_REQUIRE_MODELS=1)
            continue;
        }
        let g = Gguf::open(&path).unwrap();
        let t0 = std::time::Instant::now();
        let tok = Tokenizer::from_gguf(&g).unwrap();
        eprintln!("{file}: Tokenizer::from_gguf took {:?}", t0.elapsed());
        let prose =
            "The quick brown fox jumps over the lazy dog. Привет, 世界! 12345 ".repeat(2_000);
        let t0 = std::time::Instant::now();
        let n = tok.encode(&prose, true, true).unwrap().len();
        let dt = t0.elapsed();
        eprintln!(
            "{file}: {} KB of prose -> {n} tokens in {dt:?} ({:.1} MB/s)",
            prose.len() / 1024,
            prose.len() as f64 / dt.as_secs_f64() / 1e6
        );
        for text in [
            "x".repeat(100_000),
            "ab😀".repeat(20_000),
            "\n".repeat(100_000),
            "<".repeat(100_000),
        ] {
            let t0 = std::time::Instant::now();
            let ids = tok.encode(&text, true, true).unwrap();
            let dt = t0.elapsed();
            assert!(!ids.is_empty());
            assert!(
                dt.as_secs_f64() < 5.0,
                "{file}: {} bytes took {dt:?}",
                text.len()
            );
            assert_eq!(
                tok.decode(&ids, false).len(),
                text.len(),
                "{file}: round trip length"
            );
        }
    }
}
