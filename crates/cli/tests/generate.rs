//! End-to-end tests of the generation commands (`run`, `tokenize`, `chat`,
//! `perplexity`) on the tiny synthetic llama model of the golden set, and
//! their error lines on bad input.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value as Json;

fn tiny() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../model/tests/golden/synth/llama-tiny.gguf")
        .display()
        .to_string()
}

fn zeta(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_zeta"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn json(o: &Output) -> Json {
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn ids(v: &Json) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

/// One `error: …` line on stderr, exit status 1, no backtrace.
fn assert_one_line_error(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "stderr: {err}");
    assert!(err.starts_with("error: "), "stderr: {err}");
    assert!(err.contains(needle), "stderr: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

#[test]
fn run_json_has_tokens_text_and_timings() {
    let m = tiny();
    let o = zeta(
        &[
            "run",
            &m,
            "-p",
            "hello world",
            "-n",
            "6",
            "--temp",
            "0",
            "--json",
        ],
        None,
    );
    let v = json(&o);
    let prompt = ids(&v["prompt_tokens"]);
    let tokens = ids(&v["tokens"]);
    assert!(!prompt.is_empty());
    assert!(tokens.len() <= 6);
    assert!(v["text"].is_string());
    assert!(v["timings"]["prompt_tokens_evaluated"].as_u64().unwrap() as usize == prompt.len());
    assert!(v["timings"]["ttft_ms"].as_f64().unwrap() >= 0.0);

    // The prompt is tokenized like `zeta tokenize`, plus BOS when the model adds one.
    let t = json(&zeta(&["tokenize", &m, "hello world", "--json"], None));
    let plain = ids(&t);
    assert!(prompt.ends_with(&plain), "{prompt:?} vs {plain:?}");
    assert!(prompt.len() - plain.len() <= 1);
}

#[test]
fn run_is_reproducible_with_a_seed() {
    let m = tiny();
    let args = [
        "run",
        &m,
        "-p",
        "once",
        "-n",
        "8",
        "--temp",
        "1.0",
        "--seed",
        "7",
        "--json",
        "--ignore-eos",
    ];
    let a = json(&zeta(&args, None));
    let b = json(&zeta(&args, None));
    assert_eq!(a["tokens"], b["tokens"]);
    assert_eq!(ids(&a["tokens"]).len(), 8);
}

#[test]
fn chat_reads_turns_from_stdin() {
    let m = tiny();
    let o = zeta(
        &["chat", &m, "-n", "4", "--temp", "0"],
        Some("hi\n\nhow are you\n"),
    );
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // One reply line per non-empty user line.
    assert!(String::from_utf8_lossy(&o.stdout).matches('\n').count() >= 2);
}

#[test]
fn perplexity_json_and_logit_dump() {
    let m = tiny();
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.txt");
    std::fs::write(
        &text,
        "the quick brown fox jumps over the lazy dog. ".repeat(20),
    )
    .unwrap();
    let npy = dir.path().join("logits.npy");
    let o = zeta(
        &[
            "perplexity",
            &m,
            "-f",
            text.to_str().unwrap(),
            "--ctx",
            "16",
            "--chunks",
            "2",
            "--dump-logits",
            npy.to_str().unwrap(),
            "--json",
        ],
        None,
    );
    let v = json(&o);
    let ppl = v["ppl"].as_f64().unwrap();
    assert!(ppl.is_finite() && ppl >= 1.0, "{ppl}");
    assert_eq!(v["per_chunk"].as_array().unwrap().len(), 2);
    let bytes = std::fs::read(&npy).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = String::from_utf8_lossy(&bytes[10..10 + hlen]);
    assert!(header.contains("'shape': (16, 512)"), "{header}");
    assert_eq!(bytes.len(), 10 + hlen + 16 * 512 * 4);
}

#[test]
fn bad_inputs_give_one_error_line() {
    let m = tiny();
    assert_one_line_error(
        &zeta(&["run", "/nonexistent/model.gguf", "-p", "x"], None),
        "model",
    );
    assert_one_line_error(
        &zeta(&["run", &m, "-p", "x", "--ctx", "100000"], None),
        "context",
    );
    assert_one_line_error(
        &zeta(&["run", &m, "-p", "x", "--backend", "tpu"], None),
        "backend",
    );
    assert_one_line_error(
        &zeta(&["run", &m, "-p", "x", "--temp", "NaN"], None),
        "temperature",
    );
    assert_one_line_error(
        &zeta(&["run", &m, "-f", "/nonexistent.txt"], None),
        "prompt file",
    );
    assert_one_line_error(
        &zeta(&["tokenize", "no-such-model-name", "x"], None),
        "no-such-model-name",
    );
}
