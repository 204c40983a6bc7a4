//! End-to-end tests of `zeta bench` on the tiny synthetic llama model of the
//! model crate's golden data: JSON fields and values, the Markdown table, and
//! clean errors for bad parameters.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn tiny_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../model/tests/golden/synth/llama-tiny.gguf")
}

fn zeta(args: &[&str]) -> Output {
    let empty = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_zeta"))
        .args(args)
        .env("ZETA_MODELS", empty.path())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

#[test]
fn bench_json_has_llama_bench_and_zeta_fields() {
    let model = tiny_model();
    let o = zeta(&[
        "bench",
        model.to_str().unwrap(),
        "-p",
        "8",
        "-n",
        "4",
        "-r",
        "2",
        "-t",
        "1",
        "-o",
        "json",
    ]);
    assert!(o.status.success(), "stderr: {}", text(&o.stderr));
    let v: Value = serde_json::from_str(&text(&o.stdout)).unwrap();
    let recs = v.as_array().unwrap();
    assert_eq!(recs.len(), 2, "one pp and one tg record");
    for r in recs {
        for key in [
            "model_filename",
            "model_type",
            "model_size",
            "model_n_params",
            "n_prompt",
            "n_gen",
            "n_threads",
            "backends",
            "test_time",
            "avg_ns",
            "stddev_ns",
            "avg_ts",
            "stddev_ts",
            "samples_ns",
            "samples_ts",
            "cpu_info",
            "gpu_info",
            "ttft_ms",
            "latency_p50_ms",
            "latency_p95_ms",
            "latency_p99_ms",
            "load_ms",
            "peak_rss_bytes",
            "peak_gpu_bytes",
            "adapter",
        ] {
            assert!(r.get(key).is_some(), "missing {key} in {r}");
        }
        assert!(
            r["model_filename"]
                .as_str()
                .unwrap()
                .ends_with("llama-tiny.gguf")
        );
        assert!(r["model_type"].as_str().unwrap().starts_with("llama "));
        assert!(r["model_size"].as_u64().unwrap() > 0);
        assert!(r["model_n_params"].as_u64().unwrap() > 0);
        assert_eq!(r["n_threads"], 1);
        assert_eq!(r["backends"], "CPU");
        assert_eq!(
            r["samples_ns"].as_array().unwrap().len(),
            2,
            "warm-up runs are excluded"
        );
        assert_eq!(r["samples_ts"].as_array().unwrap().len(), 2);
        assert!(r["avg_ns"].as_u64().unwrap() > 0);
        let ts = r["avg_ts"].as_f64().unwrap();
        assert!(ts.is_finite() && ts > 0.0);
        // avg_ts is the mean of samples_ts, which is tokens·1e9/samples_ns.
        let tokens = r["n_prompt"].as_f64().unwrap() + r["n_gen"].as_f64().unwrap();
        let ns: Vec<f64> = r["samples_ns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let mean_ts = ns.iter().map(|n| tokens * 1e9 / n).sum::<f64>() / ns.len() as f64;
        assert!((mean_ts - ts).abs() <= 1e-6 * ts, "{mean_ts} vs {ts}");
        assert!(r["load_ms"].as_f64().unwrap() >= 0.0);
        assert!(r["peak_gpu_bytes"].is_null());
        assert!(r["adapter"].is_null());
        if cfg!(target_os = "linux") {
            assert!(r["peak_rss_bytes"].as_u64().unwrap() > 0);
        }
    }
    let pp = &recs[0];
    assert_eq!(
        (pp["n_prompt"].as_u64(), pp["n_gen"].as_u64()),
        (Some(8), Some(0))
    );
    assert!(pp["ttft_ms"].as_f64().unwrap() > 0.0);
    assert!(pp["latency_p50_ms"].is_null());
    let tg = &recs[1];
    assert_eq!(
        (tg["n_prompt"].as_u64(), tg["n_gen"].as_u64()),
        (Some(0), Some(4))
    );
    assert!(tg["ttft_ms"].is_null());
    let p50 = tg["latency_p50_ms"].as_f64().unwrap();
    let p95 = tg["latency_p95_ms"].as_f64().unwrap();
    let p99 = tg["latency_p99_ms"].as_f64().unwrap();
    assert!(0.0 < p50 && p50 <= p95 && p95 <= p99, "{p50} {p95} {p99}");
    assert!(
        text(&o.stderr).contains("zeta bench:"),
        "progress goes to stderr"
    );
}

#[test]
fn bench_md_and_lists() {
    let model = tiny_model();
    let m = model.to_str().unwrap();
    let o = zeta(&[
        "bench",
        m,
        m,
        "-p",
        "4,8",
        "-n",
        "2",
        "-r",
        "1",
        "--warmup",
        "0",
        "--profile",
    ]);
    assert!(o.status.success(), "stderr: {}", text(&o.stderr));
    let out = text(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("| model") && lines[0].ends_with(" t/s |"),
        "{out}"
    );
    let rows: Vec<&&str> = lines.iter().filter(|l| l.contains(" ± ")).collect();
    assert_eq!(rows.len(), 6, "2 models × (pp4, pp8, tg2):\n{out}");
    assert_eq!(rows.iter().filter(|l| l.contains(" pp4 ")).count(), 2);
    assert_eq!(rows.iter().filter(|l| l.contains(" tg2 ")).count(), 2);
    assert!(
        rows.iter()
            .all(|l| l.contains(" CPU ") && l.starts_with("| llama "))
    );
    assert!(
        text(&o.stderr).contains("not available"),
        "--profile says it is unavailable"
    );
}

#[test]
fn bench_rejects_bad_parameters() {
    let model = tiny_model();
    let m = model.to_str().unwrap();
    for args in [
        vec!["bench", m, "-r", "0"],
        vec!["bench", m, "-p", "0", "-n", "0"],
        vec!["bench", m, "-t", "0"],
        vec!["bench", m, "-p", "8", "-n", "0", "--ctx", "4"],
        vec!["bench", m, "--backend", "tpu"],
        vec!["bench", "/no/such/model.gguf"],
    ] {
        let o = zeta(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o.stderr));
        let err = text(&o.stderr);
        assert!(
            err.contains("error:") && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}

/// On the GPU backend the JSON record carries the adapter and the peak GPU
/// memory, and `--profile` prints a per-kernel table and the GPU's busy
/// time per test on stderr (where the adapter has timestamp queries). No adapter: SKIP, or a failure
/// when `ZETA_REQUIRE_GPU=1`.
#[test]
fn bench_gpu_reports_adapter_memory_and_profile() {
    let model = tiny_model();
    let o = zeta(&[
        "bench",
        model.to_str().unwrap(),
        "--backend",
        "gpu",
        "-p",
        "8",
        "-n",
        "3",
        "-r",
        "1",
        "-o",
        "json",
        "--profile",
    ]);
    let err = text(&o.stderr);
    if !o.status.success() && err.contains("no GPU adapter") {
        assert_ne!(
            std::env::var("ZETA_REQUIRE_GPU").as_deref(),
            Ok("1"),
            "no GPU adapter but ZETA_REQUIRE_GPU=1: {err}"
        );
        eprintln!("SKIP: no GPU adapter");
        return;
    }
    assert!(o.status.success(), "stderr: {err}");
    let v: Value = serde_json::from_str(&text(&o.stdout)).unwrap();
    let recs = v.as_array().unwrap();
    assert_eq!(recs.len(), 2);
    for r in recs {
        assert_eq!(r["backends"], "GPU");
        assert!(!r["adapter"].as_str().unwrap().is_empty());
        // At least the model's weights (0.34 MiB) were on the GPU.
        assert!(r["peak_gpu_bytes"].as_u64().unwrap() > 300_000, "{r}");
    }
    if err.contains("no timestamp queries") {
        eprintln!("SKIP: the adapter has no timestamp queries (no profile)");
    } else {
        for test in ["pp8", "tg3"] {
            assert!(
                err.contains(&format!("GPU kernel profile: {} {test}", model.display())),
                "{err}"
            );
        }
        assert!(err.contains("| matmul_tiled:main |"), "{err}");
        // Exact mode (the default) runs attn_exact.wgsl, the fast mode attn_decode.wgsl.
        assert!(
            err.contains("| attn_exact:scores_dec |") || err.contains("| attn_decode:chunk |"),
            "{err}"
        );
        // And per test the device's busy time against the measured time.
        assert_eq!(err.matches("\nGPU busy ").count(), 2, "{err}");
        assert!(err.contains("compute passes per token; measured "), "{err}");
    }
}
