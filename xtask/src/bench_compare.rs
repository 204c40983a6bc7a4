//! `cargo xtask bench-compare`: zeta vs. llama.cpp on the same GGUF files.
//!
//! For every model and test (`ppP`, `tgN`) it runs llama.cpp's `llama-bench
//! -r 1` and `zeta bench -r 1` back to back, `--rounds` times, alternating
//! which goes first, so slow drifts of a shared machine hit both engines
//! alike. Each round gives one ratio zeta/llama.cpp; the report shows medians.
//!
//! Outputs (all generated; never edit the numbers by hand):
//! - `docs/bench/<machine>.csv`: one row per round, metadata (CPU, date,
//!   commits, note, exact commands) in `# key: value` lines;
//! - `docs/bench/<machine>.svg`: tokens/s per model and engine (plotters);
//! - `docs/BENCHMARKS.md`: regenerated from every `docs/bench/*.csv`.
//!
//! Without `--llama-bench`, llama.cpp is built from the llama-cpp-python sdist
//! by `xtask/golden/build_llama_cpp.sh` (sha256-checked download, the fixed
//! CPU flags) into `target/llama-ref`. Without `--zeta`, `zeta` is built with
//! `cargo build --release -p zeta-cli`.

pub mod chart;
pub mod report;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use clap::Args as ClapArgs;
use serde_json::Value;

use report::{Meta, Pair};

/// Models compared when none are named: the two real models of models.lock
/// and synthetic TinyLlama-shaped (llama-1b) models.
pub const DEFAULT_MODELS: &str =
    "smollm2-135m-instruct-q4_1,gemma3-270m-q4_k_m,synth:llama-1b:q4_0,synth:llama-1b:q4_k_m";

/// Arguments of `cargo xtask bench-compare`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// llama.cpp's llama-bench binary (default: build it into target/llama-ref).
    #[arg(long = "llama-bench")]
    pub llama_bench: Option<PathBuf>,
    /// zeta binary (default: `cargo build --release -p zeta-cli`).
    #[arg(long)]
    pub zeta: Option<PathBuf>,
    /// Models: models.lock names, GGUF paths or `synth:SHAPE:QUANT`
    /// (e.g. `synth:llama-8b:q4_0`, generated with `cargo xtask synth` logic).
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_MODELS)]
    pub models: Vec<String>,
    /// Backend: `cpu`, or `gpu` with a GPU build of llama-bench given by
    /// `--llama-bench` (run with `-ngl 99 -fa 1`).
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// Prompt length of the pp test (0 skips it).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    pub n_prompt: usize,
    /// Generated tokens of the tg test (0 skips it).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    pub n_gen: usize,
    /// Rounds (each: one llama-bench run and one zeta run of every test).
    #[arg(short = 'r', long = "rounds", default_value_t = 3)]
    pub rounds: usize,
    /// CPU threads for both engines (default: all cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Machine label for the file names (default: from the CPU model and cores).
    #[arg(long)]
    pub machine: Option<String>,
    /// Caveats to print with the results (e.g. "loaded machine").
    #[arg(long, default_value = "")]
    pub note: String,
    /// Docs directory (results go to DOCS/bench/, the report to DOCS/BENCHMARKS.md).
    #[arg(long, default_value = "docs")]
    pub docs: PathBuf,
    /// Only regenerate DOCS/BENCHMARKS.md from the existing CSV files.
    #[arg(long)]
    pub report_only: bool,
    /// Where synthetic models are written (default: target/bench-models).
    #[arg(long)]
    pub synth_dir: Option<PathBuf>,
}

fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// Runs bench-compare.
pub fn run(args: Args) -> Result<()> {
    let root = repo_root();
    let docs = if args.docs.is_absolute() {
        args.docs.clone()
    } else {
        root.join(&args.docs)
    };
    if args.report_only {
        return write_report(&docs);
    }
    match args.backend.as_str() {
        "cpu" => {}
        "gpu" if args.llama_bench.is_some() => {}
        "gpu" => bail!(
            "--backend gpu needs --llama-bench: a llama-bench built for the GPU (CUDA, Vulkan, \
             Metal); the reference build this command makes is CPU-only"
        ),
        other => bail!("--backend {other}: expected `cpu` or `gpu`"),
    }
    if args.rounds == 0 || args.rounds > 1000 {
        bail!("--rounds must be between 1 and 1000");
    }
    if args.n_prompt == 0 && args.n_gen == 0 {
        bail!("nothing to do: -p and -n are both 0");
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.threads.unwrap_or(cores);
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    let llama_bench = match &args.llama_bench {
        Some(p) => p.clone(),
        None => build_llama_bench(&root)?,
    };
    if !llama_bench.is_file() {
        bail!("llama-bench not found at {}", llama_bench.display());
    }
    let zeta = match &args.zeta {
        Some(p) => p.clone(),
        None => build_zeta(&root)?,
    };
    if !zeta.is_file() {
        bail!("zeta binary not found at {}", zeta.display());
    }
    let synth_dir = args
        .synth_dir
        .clone()
        .unwrap_or_else(|| target_dir(&root).join("bench-models"));
    let mut models = Vec::new();
    for spec in &args.models {
        models.push((spec.clone(), resolve_model(spec, &synth_dir)?));
    }

    let cpu = cpu_model().unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let machine = args
        .machine
        .clone()
        .unwrap_or_else(|| format!("{}-{cores}c", slug(&cpu)));
    let mut tests = Vec::new();
    if args.n_prompt > 0 {
        tests.push((args.n_prompt, 0usize));
    }
    if args.n_gen > 0 {
        tests.push((0usize, args.n_gen));
    }
    let mut pairs = Vec::new();
    let mut llama_commit = String::new();
    let mut date = String::new();
    let mut example_cmds = Vec::new();
    for (spec, path) in &models {
        let file = path.file_name().map_or_else(
            || path.display().to_string(),
            |f| f.to_string_lossy().into_owned(),
        );
        for &(p, n) in &tests {
            let test = if p > 0 {
                format!("pp{p}")
            } else {
                format!("tg{n}")
            };
            let llama_cmd = llama_command(&llama_bench, path, p, n, threads, &args.backend);
            let zeta_cmd = zeta_command(&zeta, path, p, n, threads, &args.backend);
            if example_cmds.len() < 2 * tests.len() {
                example_cmds.push(show(&llama_cmd));
                example_cmds.push(show(&zeta_cmd));
            }
            for round in 0..args.rounds {
                eprintln!(
                    "bench-compare: {spec} {test} round {}/{}",
                    round + 1,
                    args.rounds
                );
                let mut llama = None;
                let mut zeta_ts = None;
                let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
                for who in order {
                    if who == 0 {
                        let rec =
                            run_json(llama_cmd_new(&llama_cmd)).context("llama-bench failed")?;
                        if llama_commit.is_empty() {
                            llama_commit = str_field(&rec, "build_commit");
                        }
                        if date.is_empty() {
                            date = str_field(&rec, "test_time");
                        }
                        llama = Some(avg_ts(&rec)?);
                    } else {
                        let rec =
                            run_json(llama_cmd_new(&zeta_cmd)).context("zeta bench failed")?;
                        zeta_ts = Some(avg_ts(&rec)?);
                    }
                }
                let (Some(llama_ts), Some(zeta_ts)) = (llama, zeta_ts) else {
                    bail!("internal: a run of the pair is missing");
                };
                eprintln!(
                    "bench-compare: {spec} {test}: zeta {zeta_ts:.2} t/s, llama.cpp {llama_ts:.2} t/s, ratio {:.3}",
                    if llama_ts > 0.0 {
                        zeta_ts / llama_ts
                    } else {
                        0.0
                    }
                );
                pairs.push(Pair {
                    model: spec.clone(),
                    file: file.clone(),
                    test: test.clone(),
                    threads,
                    round,
                    zeta_ts,
                    llama_ts,
                });
            }
        }
    }
    let mut commands = vec![format!(
        "cargo xtask bench-compare {}",
        std::env::args()
            .skip(2)
            .map(|a| shell_quote(&a))
            .collect::<Vec<_>>()
            .join(" ")
    )];
    commands.extend(example_cmds);
    let meta = Meta {
        machine: machine.clone(),
        cpu,
        cores,
        date,
        zeta_commit: git_commit(&root),
        llama_commit,
        note: args.note.clone(),
        commands,
    };
    let dir = docs.join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let csv = dir.join(format!("{machine}.csv"));
    std::fs::write(&csv, report::to_csv(&meta, &pairs))
        .with_context(|| format!("cannot write {}", csv.display()))?;
    eprintln!("bench-compare: wrote {}", csv.display());
    write_report(&docs)
}

/// Regenerates DOCS/BENCHMARKS.md and the per-machine SVG charts from the
/// CSV files in DOCS/bench/.
pub fn write_report(docs: &Path) -> Result<()> {
    let dir = docs.join("bench");
    let mut csvs: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "csv"))
            .collect(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    csvs.sort();
    let mut md = String::from(INTRO);
    if csvs.is_empty() {
        md.push_str("No results yet: run `cargo xtask bench-compare`.\n");
    }
    for csv in &csvs {
        let text = std::fs::read_to_string(csv)
            .with_context(|| format!("cannot read {}", csv.display()))?;
        let (mut meta, pairs) =
            report::from_csv(&text).with_context(|| format!("in {}", csv.display()))?;
        let stem = csv
            .file_stem()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        if meta.machine.is_empty() {
            meta.machine = stem.clone();
        }
        let svg_path = dir.join(format!("{stem}.svg"));
        let title = format!(
            "zeta vs llama.cpp — {} ({} threads)",
            meta.cpu,
            threads_of(&pairs)
        );
        let svg = chart::svg(&title, &report::summarize(&pairs))?;
        std::fs::write(&svg_path, svg)
            .with_context(|| format!("cannot write {}", svg_path.display()))?;
        md.push_str(&report::machine_section(
            &meta,
            &pairs,
            Some(&format!("bench/{stem}.svg")),
        ));
    }
    let out = docs.join("BENCHMARKS.md");
    std::fs::write(&out, md).with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!("bench-compare: wrote {}", out.display());
    Ok(())
}

fn threads_of(pairs: &[Pair]) -> String {
    let mut t: Vec<usize> = pairs.iter().map(|p| p.threads).collect();
    t.sort_unstable();
    t.dedup();
    t.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

const INTRO: &str = "\
# zeta benchmarks

<!-- Generated by `cargo xtask bench-compare` from docs/bench/*.csv. Do not edit by hand:
     edit xtask/src/bench_compare.rs (this text) or re-run the benchmark. -->

zeta and llama.cpp measured on the same GGUF files, the same machine and the same thread
count. How (see `xtask/src/bench_compare.rs` and `crates/cli/src/cmd/bench.rs`):

- **pp*N*** (prompt processing): *N* random valid token ids (BOS first when the model adds
  one) evaluated as one batch from an empty KV cache, logits of the last position only —
  llama-bench's `test_prompt`. tokens/s = *N* / time.
- **tg*N*** (token generation): *N* single-token decode steps from an empty cache (random
  token ids, logits every step, no sampling) — llama-bench's `test_gen`. tokens/s = *N* / time.
- Each engine runs with one warm-up (llama-bench: the full prompt for pp, one token for tg;
  zeta bench does the same) and `-r 1`; a *round* is one llama-bench run and one zeta run back
  to back, alternating which engine goes first. The reported t/s are medians over the rounds,
  the ratio is the median of the per-round ratios zeta / llama.cpp (> 1: zeta is faster).
- llama.cpp is the reference build of `xtask/golden/build_llama_cpp.sh` (llama-cpp-python
  0.3.36 sdist, vendored llama.cpp 0c1e570, CPU flags `-DGGML_NATIVE=OFF -DGGML_AVX2=ON
  -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF`,
  OpenMP, llamafile sgemm and CPU weight repacking on, flash attention `auto`).
- Models: the models.lock models by name and `synth:SHAPE:QUANT` random-weight models of
  `cargo xtask synth` (llama-1b = TinyLlama-1.1B dimensions). Add `synth:llama-8b:q4_0` with
  `--models` on machines that can afford it.
- Not identical, and worth knowing when reading the ratios: llama.cpp repacks Q4_0/IQ4_NL
  weights into interleaved SIMD layouts at load and uses flash attention on the CPU by
  default; zeta uses the GGUF blocks in place and plain attention. llama-bench splits prompts
  into micro-batches of 512 (`-ub`), zeta evaluates a prompt as one batch. Both keep the KV
  cache in f16. Every process loads the model afresh (memory-mapped, page cache warm after
  the first run).
- A shared or loaded machine makes single numbers noisy; the alternation and the medians
  reduce drift, they do not remove it. Each machine's section says how loaded it was.

Reproduce (writes `docs/bench/<machine>.csv`, `.svg` and this file):

```sh
cargo xtask bench-compare --llama-bench /path/to/llama-bench -p 512 -n 128 -r 3
cargo xtask bench-compare --report-only     # only regenerate this file from the CSVs
```

Per-run details (TTFT, per-token latency percentiles, load time, peak RSS):
`zeta bench MODEL -p 512 -n 128 -o json`. Kernel throughput vs. memory bandwidth:
`cargo bench -p zeta-benches` (summaries of runs are kept in `docs/bench/*-kernels.txt`).
GPU time per kernel kind per token: `zeta bench MODEL --backend gpu --profile` (timestamp
queries; runs kept in `docs/bench/*-profile.txt`); its \"GPU busy\" line times whole compute passes
of a run recorded as unprofiled, to set against the measured time per token.

";

/// Builds llama-bench with the reference build script into target/llama-ref.
fn build_llama_bench(root: &Path) -> Result<PathBuf> {
    let ref_dir = target_dir(root).join("llama-ref");
    let bin = ref_dir.join("build/bin/llama-bench");
    if bin.is_file() {
        return Ok(bin);
    }
    let script = root.join("xtask/golden/build_llama_cpp.sh");
    eprintln!(
        "bench-compare: building llama.cpp with {} into {} (needs curl, cmake, a C++ compiler)",
        script.display(),
        ref_dir.display()
    );
    let status = Command::new("bash")
        .arg(&script)
        .env("ZETA_REF", &ref_dir)
        .status()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    Ok(bin)
}

/// Builds the zeta CLI in release mode and returns the binary's path.
fn build_zeta(root: &Path) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("bench-compare: cargo build --release -p zeta-cli");
    let mut cmd = Command::new(cargo);
    // `cargo run` sets CARGO_PKG_*, CARGO_MANIFEST_DIR, … for this process;
    // passed on, they change build-script fingerprints and force rebuilds.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_TARGET_DIR" {
            cmd.env_remove(&k);
        }
    }
    let status = cmd
        .args(["build", "--release", "-p", "zeta-cli"])
        .current_dir(root)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo build --release -p zeta-cli failed ({status})");
    }
    Ok(target_dir(root).join("release/zeta"))
}

/// A models.lock name, a path, or `synth:SHAPE:QUANT` (generated once).
fn resolve_model(spec: &str, synth_dir: &Path) -> Result<PathBuf> {
    if let Some(rest) = spec.strip_prefix("synth:") {
        let (shape, quant) = rest
            .split_once(':')
            .with_context(|| format!("`{spec}`: expected synth:SHAPE:QUANT"))?;
        let s = crate::synth::shape(shape)?;
        let q = crate::synth::Quant::parse(quant)?;
        let path = synth_dir.join(format!("synth-{shape}-{}.gguf", q.name()));
        if !path.is_file() {
            std::fs::create_dir_all(synth_dir)
                .with_context(|| format!("cannot create {}", synth_dir.display()))?;
            let mut bar = crate::progress::ByteBar::new(&format!("synth {shape} {}", q.name()));
            crate::synth::synth(s, q, 0, &path, &mut |done, total| bar.set(done, total))?;
            bar.finish();
        }
        return Ok(path);
    }
    let mut bars = crate::progress::StoreBars::default();
    zeta_engine::store::resolve(spec, true, &mut |ev| bars.event(ev))
        .with_context(|| format!("cannot resolve model `{spec}`"))
}

fn llama_command(
    bin: &Path,
    model: &Path,
    p: usize,
    n: usize,
    threads: usize,
    backend: &str,
) -> Vec<String> {
    let mut cmd = vec![
        bin.display().to_string(),
        "-m".into(),
        model.display().to_string(),
        "-p".into(),
        p.to_string(),
        "-n".into(),
        n.to_string(),
        "-r".into(),
        "1".into(),
        "-t".into(),
        threads.to_string(),
        "-o".into(),
        "json".into(),
    ];
    if backend == "gpu" {
        // Every layer on the GPU, with flash attention (llama.cpp's fastest
        // GPU configuration).
        cmd.extend(["-ngl", "99", "-fa", "1"].map(String::from));
    }
    cmd
}

fn zeta_command(
    bin: &Path,
    model: &Path,
    p: usize,
    n: usize,
    threads: usize,
    backend: &str,
) -> Vec<String> {
    vec![
        bin.display().to_string(),
        "bench".into(),
        model.display().to_string(),
        "-p".into(),
        p.to_string(),
        "-n".into(),
        n.to_string(),
        "-r".into(),
        "1".into(),
        "-t".into(),
        threads.to_string(),
        "--backend".into(),
        backend.into(),
        "--offline".into(),
        "-o".into(),
        "json".into(),
    ]
}

fn llama_cmd_new(argv: &[String]) -> Command {
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..]);
    c
}

fn show(argv: &[String]) -> String {
    argv.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(a: &str) -> String {
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@".contains(c))
    {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

/// Runs a command whose stdout is a JSON array of llama-bench-style records
/// and returns the first record.
fn run_json(mut cmd: Command) -> Result<Value> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} exited with {}", out.status);
    }
    let v: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{cmd:?}: stdout is not JSON"))?;
    first_record(v)
}

fn first_record(v: Value) -> Result<Value> {
    match v {
        Value::Array(mut a) if !a.is_empty() => Ok(a.swap_remove(0)),
        _ => bail!("expected a non-empty JSON array of results"),
    }
}

fn avg_ts(rec: &Value) -> Result<f64> {
    rec.get("avg_ts")
        .and_then(Value::as_f64)
        .filter(|v| v.is_finite() && *v >= 0.0)
        .context("result has no valid `avg_ts`")
}

fn str_field(rec: &Value, key: &str) -> String {
    rec.get(key)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// `git rev-parse --short HEAD`, with `-dirty` when the tree has changes.
fn git_commit(root: &Path) -> String {
    let run = |args: &[&str]| -> Option<String> {
        let o = Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(head) = run(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown".into();
    };
    match run(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(s) if !s.is_empty() => format!("{head}-dirty"),
        _ => head,
    }
}

fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "model name").then(|| v.trim().to_string())
    })
}

/// `Intel(R) Xeon(R) Processor` → `intel-xeon-processor`.
fn slug(s: &str) -> String {
    let cleaned = s.replace("(R)", "").replace("(TM)", "").replace("(tm)", "");
    let mut out = String::new();
    for c in cleaned.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() {
        "machine".into()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(
            slug("Intel(R) Xeon(R) Processor @ 2.1GHz"),
            "intel-xeon-processor-2-1ghz"
        );
        assert_eq!(slug("(R)"), "machine");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("-p"), "-p");
        let rec =
            first_record(serde_json::json!([{"avg_ts": 12.5, "build_commit": "0c1e570"}])).unwrap();
        assert_eq!(avg_ts(&rec).unwrap(), 12.5);
        assert_eq!(str_field(&rec, "build_commit"), "0c1e570");
        assert!(first_record(serde_json::json!([])).is_err());
        assert!(avg_ts(&serde_json::json!({"avg_ts": "x"})).is_err());
        let cmd = llama_command(
            Path::new("/b/llama-bench"),
            Path::new("/m.gguf"),
            0,
            32,
            2,
            "cpu",
        );
        assert_eq!(
            show(&cmd),
            "/b/llama-bench -m /m.gguf -p 0 -n 32 -r 1 -t 2 -o json"
        );
        let gpu = llama_command(
            Path::new("/b/llama-bench"),
            Path::new("/m.gguf"),
            512,
            0,
            2,
            "gpu",
        );
        assert!(
            show(&gpu).ends_with("-o json -ngl 99 -fa 1"),
            "{}",
            show(&gpu)
        );
    }
}
