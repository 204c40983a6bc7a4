//! The forward pass against llama.cpp (golden data from
//! `xtask/golden/llama_golden.py`, stored in `tests/golden/`):
//! teacher-forced top-k log-probs (top-1 agreement, KL divergence), greedy
//! generations, synthetic tiny qwen2/qwen3 files and long-context positions.
//!
//! Real models are found in `$ZETA_MODELS` (default `~/.cache/zeta/models`);
//! a missing model prints `SKIP:` unless `ZETA_REQUIRE_MODELS=1`.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use zeta_model::{Logits, Model};
use zeta_tensor::CpuBackend;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn models_dir() -> PathBuf {
    match std::env::var_os("ZETA_MODELS") {
        Some(d) => PathBuf::from(d),
        None => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/zeta/models")
        }
    }
}

fn require_models() -> bool {
    std::env::var("ZETA_REQUIRE_MODELS").is_ok_and(|v| v == "1")
}

/// Loads a golden JSON file, or `None` (with a SKIP line) when absent.
fn golden(name: &str) -> Option<Value> {
    let p = golden_dir().join(name);
    match std::fs::read(&p) {
        Ok(b) => Some(serde_json::from_slice(&b).unwrap()),
        Err(_) => {
            assert!(!require_models(), "golden file {} missing", p.display());
            eprintln!("SKIP: golden file {} not present", p.display());
            None
        }
    }
}

/// Loads the model the golden file names, or `None` (SKIP) when absent.
fn load(file: &str) -> Option<Model<CpuBackend>> {
    let p = if file.starts_with("synth/") {
        golden_dir().join(file)
    } else {
        models_dir().join(file)
    };
    if !p.exists() {
        assert!(
            !require_models(),
            "model {} missing (ZETA_REQUIRE_MODELS=1)",
            p.display()
        );
        eprintln!("SKIP: model {} not found (set ZETA_MODELS)", p.display());
        return None;
    }
    let g = Arc::new(zeta_gguf::Gguf::open(&p).unwrap());
    Some(Model::load(g, CpuBackend::new()).unwrap())
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let s: f64 = row.iter().map(|&x| (x as f64 - m).exp()).sum();
    let lse = m + s.ln();
    row.iter().map(|&x| x as f64 - lse).collect()
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// KL(llama.cpp ‖ zeta) from llama.cpp's top-k log-probs plus the remaining mass.
fn kl_topk(top_ids: &[u32], top_lp: &[f64], ours: &[f64]) -> f64 {
    let mut kl = 0.0;
    let (mut p_in, mut q_in) = (0.0, 0.0);
    for (&id, &lp) in top_ids.iter().zip(top_lp) {
        let p = lp.exp();
        let lq = ours[id as usize];
        kl += p * (lp - lq);
        p_in += p;
        q_in += lq.exp();
    }
    let (p_rest, q_rest) = ((1.0 - p_in).max(0.0), (1.0 - q_in).max(1e-12));
    if p_rest > 1e-12 {
        kl += p_rest * (p_rest.ln() - q_rest.ln());
    }
    kl
}

struct Agreement {
    n: usize,
    top1: usize,
    kl_sum: f64,
    kl_max: f64,
}

/// Teacher-forces `tokens` (in chunks) and compares each position with the golden entries.
fn compare_positions(
    model: &Model<CpuBackend>,
    tokens: &[u32],
    positions: &[(usize, Vec<u32>, Vec<f64>)],
    n_ctx: usize,
    chunk: usize,
) -> Agreement {
    let mut st = model.new_state(n_ctx).unwrap();
    let nv = model.config().n_vocab;
    let mut a = Agreement {
        n: 0,
        top1: 0,
        kl_sum: 0.0,
        kl_max: 0.0,
    };
    let mut it = positions.iter().peekable();
    // Batch boundaries like llama.cpp's (n_batch = chunk); a trailing batch of a single
    // token would take the single-token kernels, so it is merged into the previous one.
    let mut bounds: Vec<(usize, usize)> = (0..tokens.len())
        .step_by(chunk)
        .map(|s| (s, (s + chunk).min(tokens.len())))
        .collect();
    if bounds.len() > 1 && bounds[bounds.len() - 1].1 - bounds[bounds.len() - 1].0 == 1 {
        let last = bounds.pop().unwrap();
        bounds.last_mut().unwrap().1 = last.1;
    }
    for (p0, p1) in bounds {
        let c = &tokens[p0..p1];
        let wanted = it.peek().is_some_and(|(p, ..)| *p < p0 + c.len());
        let mode = if wanted { Logits::All } else { Logits::Last };
        let lg = model.forward(&mut st, c, mode).unwrap();
        while let Some((p, top_ids, top_lp)) = it.peek() {
            if *p >= p0 + c.len() {
                break;
            }
            let row = &lg[(p - p0) * nv..(p - p0 + 1) * nv];
            let ours = log_softmax(row);
            a.n += 1;
            if argmax(row) == top_ids[0] as usize {
                a.top1 += 1;
            }
            let kl = kl_topk(top_ids, top_lp, &ours);
            a.kl_sum += kl;
            a.kl_max = a.kl_max.max(kl);
            it.next();
        }
    }
    a
}

fn parse_positions(v: &Value) -> Vec<(usize, Vec<u32>, Vec<f64>)> {
    v.as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let p = e
                .get("pos")
                .and_then(Value::as_u64)
                .map_or(i, |p| p as usize);
            let lps = e["top_logprobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            (p, ids(&e["top_ids"]), lps)
        })
        .collect()
}

fn teacher_forced(golden_file: &str) {
    let Some(g) = golden(golden_file) else { return };
    let Some(model) = load(g["model"].as_str().unwrap()) else {
        return;
    };
    let mut total = Agreement {
        n: 0,
        top1: 0,
        kl_sum: 0.0,
        kl_max: 0.0,
    };
    let t0 = std::time::Instant::now();
    let mut n_tok = 0;
    for text in g["texts"].as_array().unwrap() {
        let tokens = ids(&text["tokens"]);
        n_tok += tokens.len();
        let pos = parse_positions(&text["positions"]);
        let a = compare_positions(
            &model,
            &tokens,
            &pos,
            tokens.len().next_power_of_two().max(64),
            256,
        );
        eprintln!(
            "{golden_file} {}: {} positions, top-1 {:.2}%, mean KL {:.6}, max KL {:.6}",
            text["name"],
            a.n,
            100.0 * a.top1 as f64 / a.n as f64,
            a.kl_sum / a.n as f64,
            a.kl_max
        );
        total.n += a.n;
        total.top1 += a.top1;
        total.kl_sum += a.kl_sum;
        total.kl_max = total.kl_max.max(a.kl_max);
    }
    let dt = t0.elapsed().as_secs_f64();
    let top1 = total.top1 as f64 / total.n as f64;
    let kl = total.kl_sum / total.n as f64;
    eprintln!(
        "{golden_file}: TOTAL {} positions, top-1 {:.2}%, mean KL {kl:.6}, max KL {:.6}, {:.1} tok/s",
        total.n,
        100.0 * top1,
        total.kl_max,
        n_tok as f64 / dt
    );
    assert!(top1 >= 0.99, "top-1 agreement {:.2}% < 99%", 100.0 * top1);
    assert!(kl <= 0.005, "mean KL {kl} > 0.005");
}

#[test]
fn teacher_forced_smollm2() {
    teacher_forced("logits_smollm2.json");
}

#[test]
fn teacher_forced_gemma3() {
    teacher_forced("logits_gemma3.json");
}

fn greedy(golden_file: &str) {
    let Some(g) = golden(golden_file) else { return };
    let Some(model) = load(g["model"].as_str().unwrap()) else {
        return;
    };
    let nv = model.config().n_vocab;
    let prompts = g["prompts"].as_array().unwrap();
    let mut ok = 0;
    let t0 = std::time::Instant::now();
    let mut n_gen = 0;
    for p in prompts {
        let prompt = ids(&p["prompt_tokens"]);
        let want = ids(&p["generated"]);
        let mut st = model.new_state(prompt.len() + want.len() + 1).unwrap();
        let mut got = Vec::new();
        let mut lg = model.forward(&mut st, &prompt, Logits::Last).unwrap();
        while got.len() < want.len() {
            let t = argmax(&lg[..nv]) as u32;
            got.push(t);
            n_gen += 1;
            if got.len() == want.len() {
                break;
            }
            lg = model.forward(&mut st, &[t], Logits::Last).unwrap();
        }
        if got == want {
            ok += 1;
        } else {
            let first_diff = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
            eprintln!(
                "{golden_file}: prompt {:?} differs at token {first_diff}",
                p["prompt"]
            );
        }
    }
    let frac = ok as f64 / prompts.len() as f64;
    eprintln!(
        "{golden_file}: {ok}/{} prompts identical ({:.1}%), {:.1} generated tok/s",
        prompts.len(),
        100.0 * frac,
        n_gen as f64 / t0.elapsed().as_secs_f64()
    );
    assert!(
        frac >= 0.9,
        "only {:.1}% of greedy generations match",
        100.0 * frac
    );
}

#[test]
fn greedy_smollm2() {
    greedy("greedy_smollm2.json");
}

#[test]
fn greedy_gemma3() {
    greedy("greedy_gemma3.json");
}

fn synth(golden_file: &str) {
    let Some(g) = golden(golden_file) else { return };
    let Some(model) = load(g["model"].as_str().unwrap()) else {
        return;
    };
    let tokens = ids(&g["tokens"]);
    let nv = model.config().n_vocab;
    let mut st = model.new_state(tokens.len()).unwrap();
    let lg = model.forward(&mut st, &tokens, Logits::All).unwrap();
    let want = g["logits"].as_array().unwrap();
    let mut max_diff = 0f64;
    let mut top1 = 0;
    for (p, row) in want.iter().enumerate() {
        let row: Vec<f32> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let ours = &lg[p * nv..(p + 1) * nv];
        let scale = row.iter().fold(0f32, |a, &b| a.max(b.abs())).max(1.0);
        for (a, b) in ours.iter().zip(&row) {
            max_diff = max_diff.max(f64::from((a - b).abs() / scale));
        }
        if argmax(ours) == argmax(&row) {
            top1 += 1;
        }
    }
    eprintln!(
        "{golden_file}: max relative logit diff {max_diff:.2e}, top-1 {top1}/{}",
        want.len()
    );
    assert_eq!(top1, want.len(), "top-1 mismatch");
    // The golden logits are rounded to 6 significant digits.
    assert!(
        max_diff < 1e-4,
        "logits differ by {max_diff:.3e} (relative to max |logit|)"
    );
}

#[test]
fn synth_qwen2() {
    synth("synth/logits_qwen2.json");
}

#[test]
fn synth_qwen3() {
    synth("synth/logits_qwen3.json");
}

#[test]
fn synth_qwen3_q8_0() {
    synth("synth/logits_qwen3-q8_0.json");
}

#[test]
fn synth_llama() {
    synth("synth/logits_llama.json");
}

#[test]
fn synth_gemma3() {
    synth("synth/logits_gemma3.json");
}

fn long_context(golden_file: &str) {
    let Some(g) = golden(golden_file) else { return };
    let Some(model) = load(g["model"].as_str().unwrap()) else {
        return;
    };
    let tokens = ids(&g["tokens"]);
    let pos = parse_positions(&g["positions"]);
    // One long run at a time, so the peak-RSS check sees only this one.
    static LONG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = LONG.lock().unwrap_or_else(|e| e.into_inner());
    let rss_before = reset_peak_rss();
    let t0 = std::time::Instant::now();
    let chunk = 512;
    let a = compare_positions(&model, &tokens, &pos, tokens.len(), chunk);
    // Memory stays as estimated: the mapped weights, the KV cache
    // `kv_cache_bytes` reports, one chunk of logits, and 256 MiB for
    // activations and scratch.
    if let (Some(before), Some(peak)) = (rss_before, peak_rss()) {
        let cfg = model.config();
        let file = std::fs::metadata(models_dir().join(g["model"].as_str().unwrap()))
            .map(|m| m.len())
            .unwrap_or(0);
        let estimate = file
            + cfg.kv_cache_bytes(tokens.len())
            + (chunk * cfg.n_vocab * 4) as u64
            + (256 << 20);
        let grown = peak.saturating_sub(before);
        eprintln!(
            "{golden_file}: peak RSS grew by {} MiB (estimate ≤ {} MiB)",
            grown >> 20,
            estimate >> 20
        );
        assert!(
            grown <= estimate,
            "peak RSS grew {grown} > estimate {estimate}"
        );
    }
    let kl = a.kl_sum / a.n as f64;
    eprintln!(
        "{golden_file}: {} tokens in {:.1}s, {} positions, top-1 {}/{}, mean KL {kl:.6}, max KL {:.6}",
        tokens.len(),
        t0.elapsed().as_secs_f64(),
        a.n,
        a.top1,
        a.n,
        a.kl_max
    );
    assert!(a.top1 + 1 >= a.n, "top-1 agreement {}/{}", a.top1, a.n);
    assert!(kl <= 0.01, "mean KL {kl} > 0.01");
}

/// Resets the peak RSS (Linux `clear_refs` 5) and returns the current RSS.
fn reset_peak_rss() -> Option<u64> {
    std::fs::write("/proc/self/clear_refs", "5").ok()?;
    status_kib("VmRSS:")
}

/// Peak RSS since the last reset, in bytes.
fn peak_rss() -> Option<u64> {
    status_kib("VmHWM:")
}

fn status_kib(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[test]
#[ignore = "slow: 8192-token prefill (minutes on 2 cores); run with --ignored"]
fn long_context_smollm2() {
    long_context("longctx_smollm2.json");
}

#[test]
#[ignore = "slow: 8192-token prefill (minutes on 2 cores); run with --ignored"]
fn long_context_gemma3() {
    long_context("longctx_gemma3.json");
}
