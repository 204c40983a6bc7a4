//! `zeta bench`: throughput benchmarks in the spirit of llama.cpp's
//! `llama-bench`, so that numbers from both tools can be put side by side.
//!
//! Tests (one record each, per model × thread count):
//!
//! - `ppP` (prompt processing): `P` random-but-valid token ids (the first is
//!   BOS when the model adds one) are evaluated in one batch from an empty KV
//!   cache; only the last position's logits are computed, as llama-bench's
//!   `test_prompt` does. The same run also samples one token greedily, which
//!   gives the time to first token (`ttft_ms`).
//! - `tgN` (token generation): `N` single-token decode steps from an empty
//!   cache (first token BOS or random, then random ids), logits computed every
//!   step and read back before the next step starts, no sampling —
//!   llama-bench's `test_gen`. Steps run as generation runs them: each is
//!   submitted, the next one recorded ahead while the device computes (the
//!   GPU backend), then the logits are read. Each step's wall time gives the
//!   per-token latency percentiles.
//!
//! Each test runs `--warmup` unmeasured runs (a full prompt for pp, one token
//! for tg, like llama-bench) and then `-r` measured repetitions; `avg_ts` is
//! the mean of the per-repetition tokens/s and `stddev_ts` their sample
//! standard deviation (n − 1), exactly llama-bench's definitions.
//!
//! Progress goes to stderr, results (md, json or csv) to stdout.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args as ClapArgs, ValueEnum};
use serde_json::{Value, json};
use zeta_engine::{BackendKind, Engine, GenerateParams, KernelTime, LoadOptions, SamplerConfig};

/// Output formats of `zeta bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A Markdown table like llama-bench's.
    Md,
    /// A JSON array of records (llama-bench field names where they apply).
    Json,
    /// One CSV line per record (the scalar JSON fields).
    Csv,
}

/// Arguments of `zeta bench`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Models: GGUF paths or models.lock names.
    #[arg(required = true)]
    pub models: Vec<String>,
    /// Prompt lengths to test (comma-separated; 0 skips the pp test).
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_delimiter = ',',
        default_value = "512"
    )]
    pub n_prompt: Vec<usize>,
    /// Generation lengths to test (comma-separated; 0 skips the tg test).
    #[arg(
        short = 'n',
        long = "n-gen",
        value_delimiter = ',',
        default_value = "128"
    )]
    pub n_gen: Vec<usize>,
    /// Measured repetitions of each test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub repetitions: usize,
    /// Unmeasured warm-up runs before each test.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Compute backend: `cpu` or `gpu`.
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// CPU threads (comma-separated to compare several; default: all cores).
    #[arg(short = 't', long, value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// KV-cache size in tokens (default: what each test needs).
    #[arg(short = 'c', long = "ctx")]
    pub ctx: Option<usize>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "md")]
    pub output: Format,
    /// Per-kernel timings, and the device's busy time per token against the
    /// measured time (only where the backend can measure them).
    #[arg(long)]
    pub profile: bool,
    /// Never download: fail if a models.lock model is not in the store.
    #[arg(long)]
    pub offline: bool,
    /// tg as greedy generation runs it (test `tgN-greedy`): each step's
    /// token is the argmax of the step before (computed on the device; on
    /// the GPU the next step starts there with it before the id comes back)
    /// instead of a random id after a read-back of the logits.
    #[arg(long)]
    pub greedy: bool,
    /// Seed of the random token ids.
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
}

/// Evaluates `prompt` and samples one token greedily (what `ppP` times,
/// like llama-bench's `test_prompt`: the last position's logits only).
fn prompt_and_one_token(
    session: &mut zeta_engine::Session<'_>,
    prompt: &[u32],
) -> Result<zeta_engine::Timings> {
    let params = GenerateParams {
        max_tokens: Some(1),
        sampler: SamplerConfig {
            temperature: 0.0,
            ..SamplerConfig::default()
        },
        stop: Vec::new(),
        ignore_eos: true,
        render_special: false,
    };
    let mut generation = session.generate(prompt, params)?;
    if let Some(step) = generation.next() {
        step?;
    }
    Ok(generation.timings().clone())
}

/// Upper bound on `-p`/`-n`/`-r`/`--warmup` values (a typo guard).
const MAX_TOKENS: usize = 1 << 20;
const MAX_REPS: usize = 10_000;

pub fn run(args: Args) -> Result<()> {
    validate(&args)?;
    let backend: BackendKind = args.backend.parse()?;
    let machine = Machine::detect();
    if args.profile && backend != BackendKind::Gpu {
        eprintln!(
            "zeta bench: --profile: per-kernel timing is not available for the {} backend; \
             no kernel profile will be printed",
            args.backend
        );
    }
    let thread_list: Vec<Option<usize>> = if args.threads.is_empty() {
        vec![None]
    } else {
        args.threads.iter().map(|&t| Some(t)).collect()
    };
    let mut records = Vec::new();
    let mut rng = SplitMix64(args.seed);
    for (mi, model) in args.models.iter().enumerate() {
        for &threads in &thread_list {
            let opts = LoadOptions {
                backend,
                threads,
                offline: args.offline,
            };
            eprintln!(
                "zeta bench: model {}/{}: loading {model}",
                mi + 1,
                args.models.len()
            );
            let engine = Engine::load(model, &opts)
                .with_context(|| format!("cannot load model `{model}`"))?;
            let info = ModelInfo::of(&engine);
            let n_threads = threads.unwrap_or(machine.cores);
            eprintln!(
                "zeta bench: loaded {} ({}) in {:.1} ms",
                info.filename,
                info.model_type,
                ms(engine.load_time())
            );
            let ctx = Ctx {
                engine: &engine,
                info: &info,
                machine: &machine,
                args: &args,
                n_threads,
            };
            for &p in args.n_prompt.iter().filter(|&&p| p > 0) {
                records.push(ctx.bench_pp(p, &mut rng)?);
            }
            for &n in args.n_gen.iter().filter(|&&n| n > 0) {
                records.push(ctx.bench_tg(n, &mut rng)?);
            }
        }
    }
    let text = match args.output {
        Format::Md => format_md(&records),
        Format::Json => format_json(&records)?,
        Format::Csv => format_csv(&records),
    };
    crate::output::print(&text)
}

/// Kernel kind of a pipeline label: `shader[+suffix]:entry`, without the
/// specialisation defines (`[T=q4_0,…]`).
fn kernel_kind(label: &str) -> &str {
    label.split('[').next().unwrap_or(label)
}

/// Per kernel kind: GPU µs per token, dispatches per token and share of the
/// profiled GPU time, largest first, as a Markdown table.
fn format_profile(model: &str, test: &str, kernels: &[KernelTime], n_tokens: usize) -> String {
    let mut kinds: Vec<(&str, f64, u64)> = Vec::new();
    for k in kernels {
        let kind = kernel_kind(&k.label);
        match kinds.iter_mut().find(|(n, _, _)| *n == kind) {
            Some(e) => {
                e.1 += k.ns;
                e.2 += k.dispatches;
            }
            None => kinds.push((kind, k.ns, k.dispatches)),
        }
    }
    kinds.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = kinds.iter().map(|k| k.1).sum();
    let per_tok = n_tokens.max(1) as f64;
    let mut out = format!(
        "\nGPU kernel profile: {model} {test} ({:.1} µs of GPU time per token)\n\n\
         | kernel | µs/token | dispatches/token | share |\n|---|---:|---:|---:|\n",
        total / 1e3 / per_tok
    );
    for (kind, ns, n) in &kinds {
        let share = if total > 0.0 { 100.0 * ns / total } else { 0.0 };
        out.push_str(&format!(
            "| {kind} | {:.2} | {:.2} | {share:.1}% |\n",
            ns / 1e3 / per_tok,
            *n as f64 / per_tok
        ));
    }
    out
}

/// The host's time recording a decode step ahead (median, seconds) against
/// the measured time per token: where it comes near, the host's recording
/// bounds the step rate, not the device.
fn format_recording(median_s: f64, samples: &[Duration], n_tokens: usize) -> String {
    let secs: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
    let wall = percentile(&secs, 50.0).unwrap_or(0.0) * 1e6 / n_tokens.max(1) as f64;
    format!(
        "host time recording a step ahead: {:.1} µs per token (median), against {wall:.1} µs \
         per token measured\n",
        median_s * 1e6
    )
}

/// The device's busy time per token (whole compute passes, recorded as
/// they are unprofiled) against the measured wall-clock time per token.
fn format_busy(passes: &[KernelTime], wall: Duration, n_tokens: usize) -> String {
    let per_tok = n_tokens.max(1) as f64;
    let busy: f64 = passes.iter().map(|k| k.ns).sum::<f64>() / 1e3 / per_tok;
    let n: u64 = passes.iter().map(|k| k.dispatches).sum();
    let wall = wall.as_secs_f64() * 1e6 / per_tok;
    let share = if wall > 0.0 { 100.0 * busy / wall } else { 0.0 };
    format!(
        "\nGPU busy {busy:.1} µs per token in {:.2} compute passes per token; \
         measured {wall:.1} µs per token ({share:.0}% busy; the rest: the device idle \
         between submissions, waiting for the host)\n",
        n as f64 / per_tok
    )
}

fn validate(args: &Args) -> Result<()> {
    if args.repetitions == 0 || args.repetitions > MAX_REPS {
        bail!("-r must be between 1 and {MAX_REPS}");
    }
    if args.warmup > MAX_REPS {
        bail!("--warmup must be at most {MAX_REPS}");
    }
    if let Some(&t) = args.threads.iter().find(|&&t| t == 0 || t > 4096) {
        bail!("--threads {t}: must be between 1 and 4096");
    }
    for &v in args.n_prompt.iter().chain(&args.n_gen) {
        if v > MAX_TOKENS {
            bail!("-p/-n value {v} is too large (at most {MAX_TOKENS})");
        }
    }
    if !args.n_prompt.iter().chain(&args.n_gen).any(|&v| v > 0) {
        bail!("nothing to do: every -p and -n value is 0");
    }
    Ok(())
}

/// Everything one test needs.
struct Ctx<'a> {
    engine: &'a Engine,
    info: &'a ModelInfo,
    machine: &'a Machine,
    args: &'a Args,
    n_threads: usize,
}

impl Ctx<'_> {
    /// The KV-cache size for a test that needs `need` tokens.
    fn n_ctx(&self, need: usize) -> Result<usize> {
        match self.args.ctx {
            Some(c) if c < need => {
                bail!("--ctx {c} is smaller than the {need} tokens this test needs")
            }
            Some(c) => Ok(c),
            None => Ok(need),
        }
    }

    /// Random valid token ids; the first is BOS when the model adds one.
    fn random_tokens(&self, n: usize, rng: &mut SplitMix64) -> Vec<u32> {
        let tok = self.engine.tokenizer();
        let n_vocab = self.engine.config().n_vocab.max(1) as u64;
        let mut out: Vec<u32> = (0..n).map(|_| (rng.next() % n_vocab) as u32).collect();
        if let (Some(first), true, Some(bos)) = (out.first_mut(), tok.add_bos(), tok.bos()) {
            *first = bos;
        }
        out
    }

    fn bench_pp(&self, n_prompt: usize, rng: &mut SplitMix64) -> Result<Record> {
        let name = format!("pp{n_prompt}");
        let mut session = self.engine.session(Some(self.n_ctx(n_prompt)?))?;
        let total = self.args.warmup + self.args.repetitions;
        let mut samples = Vec::with_capacity(self.args.repetitions);
        let mut ttft = Vec::with_capacity(self.args.repetitions);
        for i in 0..total {
            let warm = i < self.args.warmup;
            session.reset();
            let prompt = self.random_tokens(n_prompt, rng);
            let t = prompt_and_one_token(&mut session, &prompt)?;
            if t.prompt_tokens_evaluated != n_prompt {
                bail!(
                    "internal: {} of {n_prompt} prompt tokens were evaluated",
                    t.prompt_tokens_evaluated
                );
            }
            progress(
                &self.info.filename,
                &name,
                i,
                self.args.warmup,
                total,
                n_prompt,
                t.prompt_eval,
            );
            if !warm {
                samples.push(t.prompt_eval);
                ttft.push(ms(t.time_to_first_token));
            }
        }
        let mut r = self.record(n_prompt, 0, &samples);
        r.ttft_ms = Some(mean(&ttft));
        if self.args.profile {
            // The measured work: the prompt with the last position's logits.
            let tokens = self.random_tokens(n_prompt, rng);
            self.profile(&name, &mut session, n_prompt, &samples, |s| {
                prompt_and_one_token(s, &tokens).map(|_| ())
            })?;
        }
        Ok(r)
    }

    fn bench_tg(&self, n_gen: usize, rng: &mut SplitMix64) -> Result<Record> {
        let name = if self.args.greedy {
            format!("tg{n_gen}-greedy")
        } else {
            format!("tg{n_gen}")
        };
        let greedy = self.args.greedy;
        let mut session = self.engine.session(Some(self.n_ctx(n_gen)?))?;
        let mut samples = Vec::with_capacity(self.args.repetitions);
        let mut latencies_ms = Vec::with_capacity(self.args.repetitions * n_gen);
        let mut recording = Vec::with_capacity(self.args.repetitions * n_gen);
        // Warm-up: one decode step, like llama-bench.
        for _ in 0..self.args.warmup {
            session.reset();
            let tokens = self.random_tokens(1, rng);
            session.eval_all(&tokens)?;
        }
        let total = self.args.repetitions;
        for i in 0..total {
            session.reset();
            let tokens = self.random_tokens(n_gen, rng);
            let start = Instant::now();
            decode(&mut session, &tokens, greedy, |d, rec| {
                latencies_ms.push(ms(d));
                if let Some(r) = rec {
                    recording.push(r.as_secs_f64());
                }
            })?;
            let elapsed = start.elapsed();
            progress(&self.info.filename, &name, i, 0, total, n_gen, elapsed);
            samples.push(elapsed);
        }
        let mut r = self.record(0, n_gen, &samples);
        r.latency_p50_ms = percentile(&latencies_ms, 50.0);
        r.latency_p95_ms = percentile(&latencies_ms, 95.0);
        r.latency_p99_ms = percentile(&latencies_ms, 99.0);
        if self.args.profile {
            let tokens = self.random_tokens(n_gen, rng);
            self.profile(&name, &mut session, n_gen, &samples, |s| {
                decode(s, &tokens, greedy, |_, _| {})
            })?;
            if let Some(r) = percentile(&recording, 50.0) {
                eprint!("{}", format_recording(r, &samples, n_gen));
            }
        }
        Ok(r)
    }

    /// Two extra, unmeasured runs of `run` (over `n_tokens` tokens, as one
    /// batch or one token at a time) under the GPU profiler; prints on
    /// stderr the time per kernel per token (a pass and a wait per dispatch:
    /// read the shares, not the totals), then how long the device was busy
    /// per token when the work is recorded as it is unprofiled, against the
    /// median of `samples`, the measured runs' times for the same work.
    fn profile(
        &self,
        name: &str,
        session: &mut zeta_engine::Session<'_>,
        n_tokens: usize,
        samples: &[Duration],
        run: impl Fn(&mut zeta_engine::Session<'_>) -> Result<()>,
    ) -> Result<()> {
        let mut kernels = Vec::new();
        for passes in [false, true] {
            if !self.engine.start_gpu_profile(passes)? {
                if self.engine.backend() == BackendKind::Gpu {
                    eprintln!(
                        "zeta bench: --profile: the adapter has no timestamp queries; \
                         no kernel profile"
                    );
                }
                return Ok(());
            }
            session.reset();
            let result = run(session);
            // Stop profiling whether or not the run failed.
            let k = self.engine.take_gpu_profile()?;
            result?;
            kernels.push(k.unwrap_or_default());
        }
        if let [per_kernel, per_pass] = &kernels[..] {
            eprint!(
                "{}",
                format_profile(&self.info.filename, name, per_kernel, n_tokens)
            );
            let secs: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
            let wall = Duration::from_secs_f64(percentile(&secs, 50.0).unwrap_or(0.0));
            eprint!("{}", format_busy(per_pass, wall, n_tokens));
        }
        Ok(())
    }

    fn record(&self, n_prompt: usize, n_gen: usize, samples: &[Duration]) -> Record {
        // The wgpu backend reports its adapter and the peak bytes of the GPU
        // buffers it allocated since load (null on the CPU backend).
        let gpu = self.engine.gpu_info();
        let samples_ns: Vec<u64> = samples
            .iter()
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1))
            .collect();
        Record {
            cpu_info: self.machine.cpu_info.clone(),
            gpu_info: gpu.map(|g| g.name.clone()).unwrap_or_default(),
            backends: self.args.backend.to_uppercase(),
            adapter: gpu.map(|g| {
                format!(
                    "{} ({}, driver {} {})",
                    g.name, g.backend, g.driver, g.driver_info
                )
            }),
            model_filename: self.info.filename.clone(),
            model_type: self.info.model_type.clone(),
            model_size: self.info.size,
            model_n_params: self.info.n_params,
            n_threads: self.n_threads,
            n_prompt,
            n_gen,
            test_time: utc_now_rfc3339(),
            samples_ns,
            ttft_ms: None,
            latency_p50_ms: None,
            latency_p95_ms: None,
            latency_p99_ms: None,
            load_ms: ms(self.engine.load_time()),
            greedy: self.args.greedy,
            peak_rss_bytes: peak_rss_bytes(),
            peak_gpu_bytes: self.engine.gpu_peak_bytes(),
        }
    }
}

/// One-token decode steps of `tokens`, each step's logits read back before
/// the next step starts (llama-bench's `test_gen`), as generation runs
/// them: the step is submitted, the next one recorded ahead while the
/// device runs it (GPU), then the logits are read. With `greedy`, only the
/// first token is taken from `tokens` and each step's token is the argmax
/// of the one before, read as greedy generation reads it
/// (`Session::read_argmax_feed`). `step` gets each step's wall time and,
/// where the next step was recorded ahead, the host time that recording
/// took.
fn decode(
    session: &mut zeta_engine::Session<'_>,
    tokens: &[u32],
    greedy: bool,
    mut step: impl FnMut(Duration, Option<Duration>),
) -> Result<()> {
    // The argmax of the step before (`greedy` only).
    let mut next = None;
    for (i, &given) in tokens.iter().enumerate() {
        let t = next.unwrap_or(given);
        let t0 = Instant::now();
        session.submit(&[t])?;
        let mut recorded = None;
        if i + 1 < tokens.len() {
            let r0 = Instant::now();
            if session.record_ahead()? {
                recorded = Some(r0.elapsed());
            }
        }
        if greedy {
            next = Some(if recorded.is_some() {
                session.read_argmax_feed()?
            } else {
                session.read_argmax()?
            });
        } else {
            session.read_logits()?;
        }
        step(t0.elapsed(), recorded);
    }
    Ok(())
}

fn progress(
    model: &str,
    test: &str,
    i: usize,
    warmup: usize,
    total: usize,
    n_tokens: usize,
    d: Duration,
) {
    let what = if i < warmup {
        format!("warm-up {}/{warmup}", i + 1)
    } else {
        format!("run {}/{}", i + 1 - warmup, total - warmup)
    };
    eprintln!(
        "zeta bench: {model} {test} {what}: {:.1} ms, {:.2} t/s",
        ms(d),
        tokens_per_second(n_tokens, d.as_nanos() as f64)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn tokens_per_second(n_tokens: usize, ns: f64) -> f64 {
    if ns <= 0.0 {
        0.0
    } else {
        1e9 * n_tokens as f64 / ns
    }
}

// ---------------------------------------------------------------- statistics

/// Arithmetic mean (0 for no values, like llama-bench's `avg`).
pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.iter().sum::<f64>() / v.len() as f64
}

/// Sample standard deviation (n − 1 in the denominator; 0 for fewer than two
/// values, like llama-bench's `stdev`). Two-pass for accuracy.
pub fn stddev(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    let ss: f64 = v.iter().map(|x| (x - m) * (x - m)).sum();
    (ss / (v.len() - 1) as f64).sqrt()
}

/// The `p`-th percentile (0–100) with linear interpolation between the
/// closest ranks (numpy's default); `None` for no values.
pub fn percentile(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() || !p.is_finite() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = (p.clamp(0.0, 100.0) / 100.0) * (s.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let (a, b) = (s[lo], s[hi.min(s.len() - 1)]);
    Some(a + (b - a) * (rank - lo as f64))
}

// ------------------------------------------------------------------- records

/// One test's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub cpu_info: String,
    pub gpu_info: String,
    pub backends: String,
    pub adapter: Option<String>,
    pub model_filename: String,
    pub model_type: String,
    pub model_size: u64,
    pub model_n_params: u64,
    pub n_threads: usize,
    pub n_prompt: usize,
    pub n_gen: usize,
    pub test_time: String,
    /// Wall time of each measured repetition.
    pub samples_ns: Vec<u64>,
    pub ttft_ms: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub load_ms: f64,
    pub peak_rss_bytes: Option<u64>,
    pub peak_gpu_bytes: Option<u64>,
    /// tg steps fed the argmax of the step before (`--greedy`).
    pub greedy: bool,
}

impl Record {
    /// Tokens/s of each repetition (`n_prompt + n_gen` tokens per sample).
    pub fn samples_ts(&self) -> Vec<f64> {
        let n = self.n_prompt + self.n_gen;
        self.samples_ns
            .iter()
            .map(|&ns| tokens_per_second(n, ns as f64))
            .collect()
    }

    pub fn avg_ns(&self) -> u64 {
        mean(&self.samples_ns_f64()) as u64
    }

    pub fn stddev_ns(&self) -> u64 {
        stddev(&self.samples_ns_f64()) as u64
    }

    pub fn avg_ts(&self) -> f64 {
        mean(&self.samples_ts())
    }

    pub fn stddev_ts(&self) -> f64 {
        stddev(&self.samples_ts())
    }

    fn samples_ns_f64(&self) -> Vec<f64> {
        self.samples_ns.iter().map(|&n| n as f64).collect()
    }

    /// llama-bench's test name: `pp512`, `tg128` or `pp512+tg128`
    /// (`tg128-greedy` with `--greedy`).
    pub fn test_name(&self) -> String {
        let name = match (self.n_prompt, self.n_gen) {
            (p, 0) => format!("pp{p}"),
            (0, n) => format!("tg{n}"),
            (p, n) => format!("pp{p}+tg{n}"),
        };
        if self.greedy && self.n_gen > 0 {
            name + "-greedy"
        } else {
            name
        }
    }

    /// The scalar fields in output order (llama-bench's names first), as
    /// JSON values.
    pub fn scalar_fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("zeta_version", json!(env!("CARGO_PKG_VERSION"))),
            ("cpu_info", json!(self.cpu_info)),
            ("gpu_info", json!(self.gpu_info)),
            ("backends", json!(self.backends)),
            ("model_filename", json!(self.model_filename)),
            ("model_type", json!(self.model_type)),
            ("model_size", json!(self.model_size)),
            ("model_n_params", json!(self.model_n_params)),
            ("n_threads", json!(self.n_threads)),
            ("type_k", json!("f16")),
            ("type_v", json!("f16")),
            ("n_prompt", json!(self.n_prompt)),
            ("n_gen", json!(self.n_gen)),
            ("n_depth", json!(0)),
            ("test_time", json!(self.test_time)),
            ("avg_ns", json!(self.avg_ns())),
            ("stddev_ns", json!(self.stddev_ns())),
            ("avg_ts", json!(self.avg_ts())),
            ("stddev_ts", json!(self.stddev_ts())),
            ("ttft_ms", json!(self.ttft_ms)),
            ("latency_p50_ms", json!(self.latency_p50_ms)),
            ("latency_p95_ms", json!(self.latency_p95_ms)),
            ("latency_p99_ms", json!(self.latency_p99_ms)),
            ("load_ms", json!(self.load_ms)),
            ("peak_rss_bytes", json!(self.peak_rss_bytes)),
            ("peak_gpu_bytes", json!(self.peak_gpu_bytes)),
            ("adapter", json!(self.adapter)),
            ("greedy", json!(self.greedy)),
        ]
    }

    /// The full JSON object: the scalar fields plus `samples_ns`/`samples_ts`.
    pub fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        for (k, v) in self.scalar_fields() {
            m.insert(k.to_string(), v);
        }
        m.insert("samples_ns".into(), json!(self.samples_ns));
        m.insert("samples_ts".into(), json!(self.samples_ts()));
        Value::Object(m)
    }
}

/// A JSON array of records, one per line-indented object.
pub fn format_json(records: &[Record]) -> Result<String> {
    let arr = Value::Array(records.iter().map(Record::to_json).collect());
    let mut s = serde_json::to_string_pretty(&arr).context("serializing results")?;
    s.push('\n');
    Ok(s)
}

/// CSV: a header of the scalar field names, then one line per record.
pub fn format_csv(records: &[Record]) -> String {
    let mut out = String::new();
    let header: Vec<&str> = match records.first() {
        Some(r) => r.scalar_fields().iter().map(|(k, _)| *k).collect(),
        None => Record::empty()
            .scalar_fields()
            .iter()
            .map(|(k, _)| *k)
            .collect(),
    };
    out.push_str(&header.join(","));
    out.push('\n');
    for r in records {
        let cells: Vec<String> = r
            .scalar_fields()
            .into_iter()
            .map(|(_, v)| csv_cell(&v))
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

fn csv_cell(v: &Value) -> String {
    let raw = match v {
        Value::Null => return String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if raw.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", raw.replace('"', "\"\""))
    } else {
        raw
    }
}

/// llama-bench's Markdown table, then a table of zeta's latency and memory
/// figures.
pub fn format_md(records: &[Record]) -> String {
    let mut out = String::new();
    let head = [
        "model", "size", "params", "backend", "threads", "test", "t/s",
    ];
    let rows: Vec<[String; 7]> = records
        .iter()
        .map(|r| {
            [
                r.model_type.clone(),
                human_size(r.model_size),
                human_params(r.model_n_params),
                r.backends.clone(),
                r.n_threads.to_string(),
                r.test_name(),
                format!("{:.2} ± {:.2}", r.avg_ts(), r.stddev_ts()),
            ]
        })
        .collect();
    md_table(
        &mut out,
        &head,
        &rows,
        &[false, true, true, false, true, true, true],
    );
    out.push('\n');
    let head2 = [
        "model", "test", "ttft ms", "p50 ms", "p95 ms", "p99 ms", "load ms", "peak RSS", "peak GPU",
    ];
    let opt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |x| format!("{x:.2}"));
    let rows2: Vec<[String; 9]> = records
        .iter()
        .map(|r| {
            [
                r.model_type.clone(),
                r.test_name(),
                opt(r.ttft_ms),
                opt(r.latency_p50_ms),
                opt(r.latency_p95_ms),
                opt(r.latency_p99_ms),
                format!("{:.1}", r.load_ms),
                r.peak_rss_bytes.map_or_else(|| "-".to_string(), human_size),
                r.peak_gpu_bytes.map_or_else(|| "-".to_string(), human_size),
            ]
        })
        .collect();
    md_table(
        &mut out,
        &head2,
        &rows2,
        &[false, true, true, true, true, true, true, true, true],
    );
    out
}

fn md_table<const N: usize>(
    out: &mut String,
    head: &[&str; N],
    rows: &[[String; N]],
    right: &[bool; N],
) {
    let mut w = [0usize; N];
    for (i, h) in head.iter().enumerate() {
        w[i] = h.chars().count();
    }
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let cell = |s: &str, i: usize| {
        let pad = w[i].saturating_sub(s.chars().count());
        if right[i] {
            format!(" {}{s} |", " ".repeat(pad))
        } else {
            format!(" {s}{} |", " ".repeat(pad))
        }
    };
    out.push('|');
    for (i, h) in head.iter().enumerate() {
        out.push_str(&cell(h, i));
    }
    out.push_str("\n|");
    for i in 0..N {
        let dashes = "-".repeat(w[i].max(2) - 1);
        if right[i] {
            let _ = write!(out, " {dashes}: |");
        } else {
            let _ = write!(out, " {dashes}- |");
        }
    }
    out.push('\n');
    for r in rows {
        out.push('|');
        for (i, c) in r.iter().enumerate() {
            out.push_str(&cell(c, i));
        }
        out.push('\n');
    }
}

/// llama-bench's size column: MiB below 1 GiB, else GiB.
fn human_size(b: u64) -> String {
    if b < 1 << 30 {
        format!("{:.2} MiB", b as f64 / (1024.0 * 1024.0))
    } else {
        format!("{:.2} GiB", b as f64 / (1024.0 * 1024.0 * 1024.0))
    }
}

/// llama-bench's params column: M below 10⁹, else B.
fn human_params(n: u64) -> String {
    if n < 1_000_000_000 {
        format!("{:.2} M", n as f64 / 1e6)
    } else {
        format!("{:.2} B", n as f64 / 1e9)
    }
}

impl Record {
    /// A record with no data (for the CSV header of an empty result).
    fn empty() -> Self {
        Self {
            cpu_info: String::new(),
            gpu_info: String::new(),
            backends: String::new(),
            adapter: None,
            model_filename: String::new(),
            model_type: String::new(),
            model_size: 0,
            model_n_params: 0,
            n_threads: 0,
            n_prompt: 0,
            n_gen: 0,
            test_time: String::new(),
            samples_ns: Vec::new(),
            ttft_ms: None,
            latency_p50_ms: None,
            latency_p95_ms: None,
            latency_p99_ms: None,
            load_ms: 0.0,
            peak_rss_bytes: None,
            peak_gpu_bytes: None,
            greedy: false,
        }
    }
}

// ------------------------------------------------------------ model, machine

/// What llama-bench reports about a model.
#[derive(Debug, Clone)]
struct ModelInfo {
    filename: String,
    /// `"{arch} {params} {ftype}"`, e.g. `llama 135M Q4_1` (llama.cpp prints
    /// a size class from the layer count instead of the parameter count).
    model_type: String,
    /// Bytes of all tensors.
    size: u64,
    /// Elements of all tensors.
    n_params: u64,
}

impl ModelInfo {
    fn of(engine: &Engine) -> Self {
        let g = engine.gguf();
        let size = g.tensors().iter().map(|t| t.n_bytes).sum();
        let n_params = g.tensors().iter().map(|t| t.n_elements()).sum();
        let arch = g.get_str("general.architecture").unwrap_or("?");
        let ftype = g
            .get_u32("general.file_type")
            .ok()
            .and_then(ftype_name)
            .map_or_else(|| "?".to_string(), str::to_string);
        Self {
            filename: engine.path().display().to_string(),
            model_type: format!("{arch} {} {ftype}", size_class(n_params)),
            size,
            n_params,
        }
    }
}

/// llama.cpp's `llama_model_ftype_name` for `general.file_type`.
fn ftype_name(id: u32) -> Option<&'static str> {
    Some(match id {
        0 => "all F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K - Medium",
        11 => "Q3_K - Small",
        12 => "Q3_K - Medium",
        13 => "Q3_K - Large",
        14 => "Q4_K - Small",
        15 => "Q4_K - Medium",
        16 => "Q5_K - Small",
        17 => "Q5_K - Medium",
        18 => "Q6_K",
        21 => "Q2_K - Small",
        25 => "IQ4_NL - 4.5 bpw",
        30 => "IQ4_XS - 4.25 bpw",
        32 => "BF16",
        _ => return None,
    })
}

/// `135M`, `1.1B`: a parameter count rounded for the model type string.
fn size_class(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.1}B", n as f64 / 1e9)
    } else if n >= 1_000_000 {
        format!("{}M", (n as f64 / 1e6).round() as u64)
    } else {
        format!("{}K", (n as f64 / 1e3).round() as u64)
    }
}

/// The machine the benchmark runs on.
#[derive(Debug, Clone)]
struct Machine {
    cpu_info: String,
    cores: usize,
}

impl Machine {
    fn detect() -> Self {
        Self {
            cpu_info: cpu_model().unwrap_or_else(|| std::env::consts::ARCH.to_string()),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// The CPU model name from /proc/cpuinfo (`None` where there is none).
pub fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    cpu_model_from(&text)
}

fn cpu_model_from(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        let k = k.trim();
        (k == "model name" || k == "Model" || k == "Hardware")
            .then(|| v.trim().to_string())
            .filter(|v| !v.is_empty())
    })
}

/// Peak resident set size of this process (`VmHWM`), `None` off Linux.
pub fn peak_rss_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    vm_hwm_from(&text)
}

fn vm_hwm_from(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut it = line["VmHWM:".len()..].split_whitespace();
    let n: u64 = it.next()?.parse().ok()?;
    match it.next() {
        Some("kB") | None => n.checked_mul(1024),
        Some(_) => None,
    }
}

/// Current UTC time as RFC 3339 (`2026-01-02T03:04:05Z`), like llama-bench's
/// `test_time`.
fn utc_now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// A small deterministic PRNG for token ids.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn profile_groups_kernels_by_kind_per_token() {
        assert_eq!(
            kernel_kind("matvec+reduce:main[T=q4_0,R=2]"),
            "matvec+reduce:main"
        );
        assert_eq!(kernel_kind("add:main"), "add:main");
        let k = |label: &str, ns: f64, dispatches: u64| KernelTime {
            label: label.to_string(),
            ns,
            dispatches,
        };
        let t = format_profile(
            "m.gguf",
            "tg2",
            &[
                k("matvec:main[T=q4_0]", 3000.0, 4),
                k("add:main[]", 2000.0, 2),
                k("matvec:main[T=q6_k]", 3000.0, 2),
            ],
            2,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[1],
            "GPU kernel profile: m.gguf tg2 (4.0 µs of GPU time per token)"
        );
        assert_eq!(lines[5], "| matvec:main | 3.00 | 3.00 | 75.0% |");
        assert_eq!(lines[6], "| add:main | 1.00 | 1.00 | 25.0% |");
        assert_eq!(lines.len(), 7);
    }

    #[test]
    fn recording_per_token() {
        let t = format_recording(
            250e-6,
            &[Duration::from_micros(900), Duration::from_micros(1100)],
            2,
        );
        assert_eq!(
            t,
            "host time recording a step ahead: 250.0 µs per token (median), against 500.0 µs \
             per token measured\n"
        );
    }

    #[test]
    fn busy_share_per_token() {
        let pass = KernelTime {
            label: "compute pass".to_string(),
            ns: 3000.0,
            dispatches: 4,
        };
        let t = format_busy(&[pass], Duration::from_micros(12), 2);
        assert_eq!(
            t.trim(),
            "GPU busy 1.5 µs per token in 2.00 compute passes per token; measured 6.0 µs \
             per token (25% busy; the rest: the device idle between submissions, waiting \
             for the host)"
        );
    }

    #[test]
    fn mean_and_stddev() {
        assert_eq!(mean(&[]), 0.0);
        assert!(close(mean(&[1.0, 2.0, 3.0, 4.0]), 2.5));
        assert_eq!(stddev(&[5.0]), 0.0);
        // Sample stddev of 2,4,4,4,5,5,7,9: sum of squares 32, n-1 = 7.
        assert!(close(
            stddev(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]),
            (32.0f64 / 7.0).sqrt()
        ));
        // Large offset: the two-pass formula stays exact.
        assert!(close(stddev(&[1e9 + 1.0, 1e9 + 3.0]), 2f64.sqrt()));
    }

    #[test]
    fn percentiles_interpolate() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        let v = [4.0, 1.0, 3.0, 2.0]; // sorted 1 2 3 4
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 100.0), Some(4.0));
        assert_eq!(percentile(&v, 50.0), Some(2.5));
        let hundred: Vec<f64> = (1..=101).map(f64::from).collect();
        assert_eq!(percentile(&hundred, 95.0), Some(96.0));
        assert_eq!(percentile(&hundred, 99.0), Some(100.0));
        assert!(close(percentile(&[0.0, 10.0], 95.0).unwrap(), 9.5));
    }

    fn sample() -> Record {
        Record {
            cpu_info: "Test CPU, 3 GHz".into(),
            gpu_info: String::new(),
            backends: "CPU".into(),
            adapter: None,
            model_filename: "/m/a.gguf".into(),
            model_type: "llama 135M Q4_1".into(),
            model_size: 96_576_768,
            model_n_params: 134_515_008,
            n_threads: 2,
            n_prompt: 0,
            n_gen: 128,
            test_time: "2026-01-02T03:04:05Z".into(),
            samples_ns: vec![1_000_000_000, 2_000_000_000],
            ttft_ms: None,
            latency_p50_ms: Some(7.5),
            latency_p95_ms: Some(9.0),
            latency_p99_ms: Some(9.9),
            load_ms: 12.5,
            peak_rss_bytes: Some(1 << 20),
            peak_gpu_bytes: None,
            greedy: false,
        }
    }

    #[test]
    fn record_statistics_follow_llama_bench() {
        let r = sample();
        assert_eq!(r.samples_ts(), vec![128.0, 64.0]);
        assert_eq!(r.avg_ns(), 1_500_000_000);
        assert!(close(r.avg_ts(), 96.0));
        assert!(close(r.stddev_ts(), (2.0f64 * 32.0 * 32.0).sqrt()));
        assert_eq!(r.test_name(), "tg128");
        let g = Record {
            greedy: true,
            ..r.clone()
        };
        assert_eq!(g.test_name(), "tg128-greedy");
        let mut pp = r.clone();
        pp.n_prompt = 512;
        pp.n_gen = 0;
        assert_eq!(pp.test_name(), "pp512");
    }

    #[test]
    fn json_uses_llama_bench_field_names() {
        let json = format_json(&[sample()]).unwrap();
        let v: Value = serde_json::from_str(&json).unwrap();
        let obj = v.as_array().unwrap()[0].as_object().unwrap();
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
            assert!(obj.contains_key(key), "missing {key}");
        }
        assert_eq!(obj["n_gen"], json!(128));
        assert_eq!(obj["model_size"], json!(96_576_768u64));
        assert_eq!(
            obj["samples_ns"],
            json!([1_000_000_000u64, 2_000_000_000u64])
        );
        assert_eq!(obj["avg_ts"], json!(96.0));
        assert!(obj["peak_gpu_bytes"].is_null());
        assert!(obj["ttft_ms"].is_null());
        assert_eq!(obj["latency_p95_ms"], json!(9.0));
    }

    #[test]
    fn csv_quotes_and_aligns_with_header() {
        let csv = format_csv(&[sample(), sample()]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("zeta_version,cpu_info,gpu_info,backends,model_filename,"));
        assert!(lines[1].contains("\"Test CPU, 3 GHz\""));
        // Same number of cells as header fields (the quoted comma is one cell).
        let n_header = lines[0].split(',').count();
        let n_cells = lines[1]
            .replace("\"Test CPU, 3 GHz\"", "x")
            .split(',')
            .count();
        assert_eq!(n_header, n_cells);
        let header: Vec<&str> = lines[0].split(',').collect();
        let cells: Vec<&str> = lines[1]
            .replace("\"Test CPU, 3 GHz\"", "x")
            .leak()
            .split(',')
            .collect();
        let at = |k: &str| cells[header.iter().position(|h| *h == k).unwrap()];
        assert_eq!(at("n_gen"), "128");
        assert_eq!(at("avg_ts"), "96.0");
        assert_eq!(at("ttft_ms"), "");
        assert_eq!(at("model_type"), "llama 135M Q4_1");
        assert_eq!(csv_cell(&json!("a\"b")), "\"a\"\"b\"");
        assert_eq!(csv_cell(&Value::Null), "");
        assert_eq!(format_csv(&[]).lines().count(), 1);
    }

    #[test]
    fn md_table_like_llama_bench() {
        let md = format_md(&[sample()]);
        let lines: Vec<&str> = md.lines().collect();
        assert!(lines[0].starts_with("| model"));
        for h in [
            "model", "size", "params", "backend", "threads", "test", "t/s",
        ] {
            assert!(lines[0].contains(h), "{h}");
        }
        assert!(
            lines[1].starts_with("| -") && lines[1].ends_with(": |"),
            "{}",
            lines[1]
        );
        assert!(lines[2].contains("llama 135M Q4_1"));
        assert!(lines[2].contains("92.10 MiB"));
        assert!(lines[2].contains("134.52 M"));
        assert!(lines[2].contains("tg128"));
        assert!(lines[2].contains("96.00 ± 45.25"));
        // Every row of the first table has the same width.
        assert_eq!(lines[0].chars().count(), lines[2].chars().count());
        assert!(md.contains("| ttft ms"));
    }

    #[test]
    fn proc_parsing() {
        assert_eq!(
            vm_hwm_from("Name:\tzeta\nVmHWM:\t  2048 kB\n"),
            Some(2048 * 1024)
        );
        assert_eq!(vm_hwm_from("Name:\tzeta\n"), None);
        assert_eq!(
            cpu_model_from("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\n"),
            Some("Intel(R) Xeon(R) Processor".to_string())
        );
        assert_eq!(cpu_model_from("processor: 0\n"), None);
    }

    #[test]
    fn helpers() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(size_class(134_515_008), "135M");
        assert_eq!(size_class(1_100_048_384), "1.1B");
        assert_eq!(ftype_name(15), Some("Q4_K - Medium"));
        assert_eq!(human_size(2 << 30), "2.00 GiB");
        assert_eq!(human_params(1_500_000_000), "1.50 B");
    }
}
