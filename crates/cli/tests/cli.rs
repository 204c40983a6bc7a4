//! End-to-end tests of the `zeta` binary: `info` and `tensor` on a tiny GGUF
//! written here, bad inputs, and `info` on the real models when present.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value as Json;
use zeta_gguf::{Array, GgmlType, GgufWriter, Value};

fn zeta(args: &[&str], models_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zeta"))
        .args(args)
        .env("ZETA_MODELS", models_dir)
        .env_remove("ZETA_MODELS_LOCK")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// f32 values of the test tensor `vec` ([2, 3] in ggml order: 3 rows of 2).
const VEC: [f32; 6] = [1.0, -2.0, 0.5, 3.25, -0.125, 8.0];

/// A small llama-like GGUF: 2 layers, n_embd 64, 4 heads, 2 KV heads.
fn tiny_gguf(dir: &Path) -> PathBuf {
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", Value::String("llama".into()));
    w.add_kv("general.name", Value::String("cli test".into()));
    w.add_kv("general.file_type", Value::U32(7));
    w.add_kv("general.license", Value::String("mit".into()));
    w.add_kv("llama.context_length", Value::U32(128));
    w.add_kv("llama.embedding_length", Value::U32(64));
    w.add_kv("llama.block_count", Value::U32(2));
    w.add_kv("llama.feed_forward_length", Value::U32(128));
    w.add_kv("llama.attention.head_count", Value::U32(4));
    w.add_kv("llama.attention.head_count_kv", Value::U32(2));
    w.add_kv("llama.rope.freq_base", Value::F32(10000.0));
    w.add_kv("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
    w.add_kv("tokenizer.ggml.model", Value::String("llama".into()));
    let tokens: Vec<String> = ["<unk>", "<s>", "</s>", "a", "b"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    w.add_kv("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
    w.add_kv(
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(vec![2, 3, 3, 1, 1])),
    );
    w.add_kv("tokenizer.ggml.bos_token_id", Value::U32(1));
    w.add_kv("tokenizer.ggml.eos_token_id", Value::U32(2));

    let vec_bytes: Vec<u8> = VEC.iter().flat_map(|x| x.to_le_bytes()).collect();
    w.add_tensor("vec", &[2, 3], GgmlType::F32, vec_bytes)
        .unwrap();

    // A Q8_0 matrix: 2 rows of 64, values i/64 - 0.5 (quantized).
    let src: Vec<f32> = (0..128).map(|i| i as f32 / 64.0 - 0.5).collect();
    let mut q = vec![0u8; GgmlType::Q8_0.row_bytes(128).unwrap() as usize];
    zeta_quant::quantize(GgmlType::Q8_0, &src, &mut q).unwrap();
    w.add_tensor("blk.0.attn_q.weight", &[64, 2], GgmlType::Q8_0, q)
        .unwrap();
    let norm: Vec<u8> = (0..64).flat_map(|_| 1.0f32.to_le_bytes()).collect();
    w.add_tensor("output_norm.weight", &[64], GgmlType::F32, norm)
        .unwrap();
    let path = dir.join("tiny.gguf");
    w.write_file(&path).unwrap();
    path
}

fn assert_one_line_error(o: &Output, needle: &str) {
    assert_eq!(o.status.code(), Some(1), "stderr: {}", stderr(o));
    let err = stderr(o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(
        lines[0].contains(needle),
        "{err:?} should mention {needle:?}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    assert!(o.stdout.is_empty());
}

#[test]
fn info_text() {
    let dir = tempfile::tempdir().unwrap();
    let p = tiny_gguf(dir.path());
    let o = zeta(&["info", p.to_str().unwrap()], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for needle in [
        "architecture:  llama",
        "name:          cli test",
        "MOSTLY_Q8_0 (7)",
        "embedding_length       64",
        "head_count_kv          2",
        "head_dim               16",
        "model llama",
        "5 tokens (control 2, normal 2, unknown 1)",
        "control 2",
        "bos 1 \"<s>\"",
        "blk.0.attn_q.weight",
        "Q8_0",
        "[64, 2]",
        "general.license",
        "totals: 198 params",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    assert!(!out.contains("KV cache"));
}

#[test]
fn info_json_and_kv_cache() {
    let dir = tempfile::tempdir().unwrap();
    let p = tiny_gguf(dir.path());
    let o = zeta(
        &["info", p.to_str().unwrap(), "--json", "--ctx", "100"],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let j: Json = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["architecture"], "llama");
    assert_eq!(j["gguf_version"], 3);
    assert_eq!(j["file_type"]["name"], "MOSTLY_Q8_0");
    assert_eq!(j["hparams"]["block_count"], 2);
    assert_eq!(j["hparams"]["head_count"], 4);
    assert_eq!(j["hparams"]["head_dim"], 16);
    assert_eq!(j["hparams"]["context_length"], 128);
    assert_eq!(j["tokenizer"]["model"], "llama");
    assert_eq!(j["tokenizer"]["n_tokens"], 5);
    assert_eq!(j["tokenizer"]["special"]["eos"]["id"], 2);
    assert_eq!(j["tokenizer"]["special"]["eos"]["text"], "</s>");
    assert_eq!(j["tokenizer"]["token_types"]["normal"], 2);
    let tensors = j["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 3);
    assert_eq!(tensors[1]["name"], "blk.0.attn_q.weight");
    assert_eq!(tensors[1]["type"], "Q8_0");
    assert_eq!(tensors[1]["shape"], serde_json::json!([64, 2]));
    assert_eq!(tensors[1]["bytes"], 2 * 2 * 34);
    assert_eq!(j["totals"]["params"], 6 + 128 + 64);
    assert_eq!(j["totals"]["bytes"], 24 + 136 + 256);
    assert_eq!(j["totals"]["by_type"]["F32"]["tensors"], 2);
    assert_eq!(j["metadata"]["general.license"], "mit");
    // 2 (K,V) × 2 layers × 100 tokens × 2 KV heads × 16 head_dim × 2 bytes
    assert_eq!(j["kv_cache"]["bytes"], 2 * 2 * 100 * 2 * 16 * 2);
    assert_eq!(j["kv_cache"]["n_ctx"], 100);

    let o = zeta(&["info", p.to_str().unwrap(), "--ctx", "100"], dir.path());
    assert!(
        stdout(&o).contains("KV cache (f16) for 100 tokens: 25.00 KiB (25600 bytes)"),
        "{}",
        stdout(&o)
    );
}

fn read_npy(path: &Path) -> (String, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    assert_eq!(&bytes[6..8], &[1, 0]);
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + hlen) % 64, 0, "data must be 64-byte aligned");
    let header = String::from_utf8(bytes[10..10 + hlen].to_vec()).unwrap();
    assert!(header.ends_with('\n'));
    let data = bytes[10 + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (header, data)
}

#[test]
fn tensor_npy() {
    let dir = tempfile::tempdir().unwrap();
    let p = tiny_gguf(dir.path());
    let out = dir.path().join("vec.npy");
    let o = zeta(
        &[
            "tensor",
            p.to_str().unwrap(),
            "vec",
            "--out",
            out.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let (header, data) = read_npy(&out);
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    // ggml [2, 3] → numpy (3, 2)
    assert!(header.contains("'shape': (3, 2)"), "{header}");
    assert_eq!(data, VEC);

    // quantized: matches zeta_quant's dequantization, close to the source
    let out = dir.path().join("q.npy");
    let o = zeta(
        &[
            "tensor",
            p.to_str().unwrap(),
            "blk.0.attn_q.weight",
            "--out",
            out.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let (header, data) = read_npy(&out);
    assert!(header.contains("'shape': (2, 64)"), "{header}");
    assert_eq!(data.len(), 128);
    for (i, x) in data.iter().enumerate() {
        let want = i as f32 / 64.0 - 0.5;
        assert!((x - want).abs() < 0.01, "{i}: {x} vs {want}");
    }

    // 1-D tensor → (64,)
    let out = dir.path().join("n.npy");
    let o = zeta(
        &[
            "tensor",
            p.to_str().unwrap(),
            "output_norm.weight",
            "-o",
            out.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let (header, data) = read_npy(&out);
    assert!(header.contains("'shape': (64,)"), "{header}");
    assert!(data.iter().all(|&x| x == 1.0));
}

#[test]
fn bad_inputs_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = tiny_gguf(dir.path());
    let ps = p.to_str().unwrap();

    let missing = dir.path().join("missing.gguf");
    let o = zeta(&["info", missing.to_str().unwrap()], dir.path());
    assert_one_line_error(&o, "no such file");

    let bad = dir.path().join("bad.gguf");
    std::fs::write(&bad, b"this is not a gguf file at all").unwrap();
    let o = zeta(&["info", bad.to_str().unwrap()], dir.path());
    assert_one_line_error(&o, "as GGUF");
    let truncated = dir.path().join("trunc.gguf");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&truncated, &bytes[..100]).unwrap();
    let o = zeta(&["info", truncated.to_str().unwrap()], dir.path());
    assert_one_line_error(&o, "as GGUF");

    let o = zeta(&["info", "no-such-model"], dir.path());
    assert_one_line_error(&o, "neither an existing file nor a model");

    let out = dir.path().join("x.npy");
    let o = zeta(
        &["tensor", ps, "nope.weight", "--out", out.to_str().unwrap()],
        dir.path(),
    );
    assert_one_line_error(&o, "no tensor named 'nope.weight'");
    assert!(!out.exists());

    let o = zeta(
        &["tensor", ps, "vec", "--out", "/nonexistent-dir/x.npy"],
        dir.path(),
    );
    assert_one_line_error(&o, "cannot create /nonexistent-dir/x.npy");

    // a lock name whose file is not in the (empty) store and cannot be fetched
    // is covered by the store tests; an unknown flag is clap's usage error
    let o = zeta(&["info", ps, "--bogus"], dir.path());
    assert_eq!(o.status.code(), Some(2));
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn info_by_lock_name_fetches_through_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let src = tiny_gguf(dir.path());
    let bytes = std::fs::read(&src).unwrap();
    let lock = dir.path().join("models.lock");
    std::fs::write(
        &lock,
        format!(
            "[[model]]\nname = \"tiny-test\"\nfile = \"tiny-test.gguf\"\nsize = {}\nsha256 = \"{}\"\n\n\
             [[model.sources]]\nkind = \"url\"\nurl = \"file://{}\"\n",
            bytes.len(),
            sha256_hex(&bytes),
            src.display()
        ),
    )
    .unwrap();
    let store = dir.path().join("store");
    let run = |args: &[&str], lock: &Path| {
        Command::new(env!("CARGO_BIN_EXE_zeta"))
            .args(args)
            .env("ZETA_MODELS", &store)
            .env("ZETA_MODELS_LOCK", lock)
            .output()
            .unwrap()
    };
    let o = run(&["info", "tiny-test", "--json"], &lock);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: Json = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["name"], "cli test");
    assert_eq!(std::fs::read(store.join("tiny-test.gguf")).unwrap(), bytes);
    assert!(store.join("tiny-test.gguf.verified").exists());

    // names from the embedded lock are unknown with this lock
    let o = run(&["info", "smollm2-135m-instruct-q4_1"], &lock);
    assert_one_line_error(&o, "known models: tiny-test");

    // a broken lock file is a clear error
    let bad = dir.path().join("bad.lock");
    std::fs::write(&bad, "[[model]]\nname = 3\n").unwrap();
    let o = run(&["info", "tiny-test"], &bad);
    assert_one_line_error(&o, "invalid lock file");

    // a lock whose hash does not match the source: no file is left behind
    let wrong = dir.path().join("wrong.lock");
    let text = std::fs::read_to_string(&lock)
        .unwrap()
        .replace("tiny-test.gguf", "other.gguf")
        .replace(&sha256_hex(&bytes), &"0".repeat(64));
    std::fs::write(&wrong, text).unwrap();
    let o = run(&["info", "tiny-test"], &wrong);
    assert_one_line_error(&o, "sha256 mismatch");
    assert!(!store.join("other.gguf").exists());
}

fn real_model(file: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("ZETA_MODELS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/zeta/models"))
        })?;
    let p = dir.join(file);
    if p.is_file() {
        return Some(p);
    }
    if std::env::var("ZETA_REQUIRE_MODELS").as_deref() == Ok("1") {
        panic!("model {} missing and ZETA_REQUIRE_MODELS=1", p.display());
    }
    eprintln!("SKIP: model {} not found (set ZETA_MODELS)", p.display());
    None
}

#[test]
fn info_on_real_models() {
    let cases = [
        (
            "smollm2-135m-instruct-q4_1",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "llama",
            "gpt2",
        ),
        (
            "gemma3-270m-q4_k_m",
            "gemma-3-270m-q4_k_m.gguf",
            "gemma3",
            "llama",
        ),
    ];
    for (name, file, arch, tok) in cases {
        let Some(path) = real_model(file) else {
            continue;
        };
        let store = path.parent().unwrap();
        // by lock name, through the store (ZETA_MODELS points at the real store)
        let o = zeta(&["info", name, "--json", "--ctx", "1024"], store);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let j: Json = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(j["architecture"], arch);
        assert_eq!(j["tokenizer"]["model"], tok);
        assert_eq!(j["path"], path.to_str().unwrap());
        let n_tensors = j["tensors"].as_array().unwrap().len();
        assert!(n_tensors > 50, "{name}: {n_tensors} tensors");
        let total: u64 = j["totals"]["bytes"].as_u64().unwrap();
        assert!(total > 50_000_000 && total < j["file_size"].as_u64().unwrap());
        assert!(j["kv_cache"]["bytes"].as_u64().unwrap() > 0);
        // and by path, as text
        let o = zeta(&["info", path.to_str().unwrap()], store);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        assert!(stdout(&o).contains(&format!("architecture:  {arch}")));
    }
}

/// `zeta info --gpu` describes the adapter `--backend gpu` would use; with
/// no adapter it is one error line (a failure when `ZETA_REQUIRE_GPU=1`).
#[test]
fn info_gpu_describes_the_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let o = zeta(&["info", "--gpu"], dir.path());
    if o.status.success() {
        let out = stdout(&o);
        assert!(out.starts_with("adapter:"), "{out}");
        assert!(out.contains("limits:"), "{out}");
    } else {
        assert!(
            std::env::var("ZETA_REQUIRE_GPU").as_deref() != Ok("1"),
            "no GPU adapter but ZETA_REQUIRE_GPU=1: {}",
            stderr(&o)
        );
        eprintln!("SKIP: no GPU adapter ({})", stderr(&o).trim());
        assert!(stderr(&o).starts_with("error: "));
    }
    // --gpu and --json do not mix; a model is required without --gpu.
    assert_eq!(
        zeta(&["info", "--gpu", "--json"], dir.path()).status.code(),
        Some(2)
    );
    assert_eq!(zeta(&["info"], dir.path()).status.code(), Some(2));
}
