//! End-to-end tests of the engine on the real models against llama.cpp's
//! golden data: prompt text → tokens → greedy generation, perplexity, chat
//! templates, context limits and KV-cache reuse.
#![allow(clippy::unwrap_used)]

mod common;

use common::{GEMMA3, SMOLLM2, model, model_golden, read_json};
use zeta_engine::{
    ChatMessage, ChatTemplate, Engine, EngineError, GenerateParams, LoadOptions, SamplerConfig,
    perplexity::{PerplexityOptions, perplexity},
};

fn load(file: &str) -> Option<Engine> {
    let path = model(file)?;
    Some(Engine::load_path(&path, &LoadOptions::default()).unwrap())
}

fn greedy(n: usize) -> GenerateParams {
    GenerateParams {
        max_tokens: Some(n),
        sampler: SamplerConfig::greedy(),
        ..GenerateParams::default()
    }
}

/// Prompt text → ids → 32 greedy tokens through the public API, compared
/// with llama.cpp's greedy generations (every 3rd prompt of the golden set,
/// to bound CI time; the model crate's tests cover all of them by ids).
fn greedy_matches_llama_cpp(file: &str, golden: &str) {
    let Some(engine) = load(file) else { return };
    let g = read_json(model_golden(golden));
    let prompts = g["prompts"].as_array().unwrap();
    let (mut same, mut total) = (0, 0);
    for p in prompts.iter().step_by(3) {
        let text = p["prompt"].as_str().unwrap();
        let want_prompt: Vec<u32> = serde_json::from_value(p["prompt_tokens"].clone()).unwrap();
        let prompt = engine.tokenize_prompt(text).unwrap();
        assert_eq!(prompt, want_prompt, "prompt tokens of {text:?}");
        let mut want: Vec<u32> = serde_json::from_value(p["generated"].clone()).unwrap();
        if let Some(&last) = want.last()
            && engine.tokenizer().is_eog(last)
        {
            want.pop();
        }
        let mut session = engine.session(Some(512)).unwrap();
        let mut generation = session.generate(&prompt, greedy(32)).unwrap();
        generation.collect_text().unwrap();
        let got = generation.tokens().to_vec();
        total += 1;
        if got == want {
            same += 1;
        } else {
            eprintln!("{file}: {text:?}\n  zeta:      {got:?}\n  llama.cpp: {want:?}");
        }
    }
    eprintln!("{file}: {same}/{total} greedy generations identical to llama.cpp");
    assert!(same * 10 >= total * 9, "{same}/{total} identical (< 90%)");
}

#[test]
fn greedy_smollm2() {
    greedy_matches_llama_cpp(SMOLLM2, "greedy_smollm2.json");
}

#[test]
fn greedy_gemma3() {
    greedy_matches_llama_cpp(GEMMA3, "greedy_gemma3.json");
}

/// llama-perplexity's value on the same text, context and chunk count
/// (flash attention off, the setting the golden logits use).
fn perplexity_matches(file: &str, key: &str) {
    let Some(engine) = load(file) else { return };
    let g = read_json(model_golden("perplexity.json"));
    let n_ctx = g["n_ctx"].as_u64().unwrap() as usize;
    let n_chunks = g["n_chunks"].as_u64().unwrap() as usize;
    let runs = g["models"][key]["llama_perplexity"].as_array().unwrap();
    let reference = runs.iter().find(|r| r["flash_attn"] == "off").unwrap()["final_ppl"]
        .as_f64()
        .unwrap();
    let text = std::fs::read_to_string(model_golden("texts/long.txt")).unwrap();
    let opts = PerplexityOptions {
        n_ctx,
        max_chunks: Some(n_chunks),
    };
    let r = perplexity(&engine, &text, &opts, false, &mut |_, _| {}).unwrap();
    let rel = (r.ppl - reference).abs() / reference;
    eprintln!(
        "{file}: zeta PPL {:.4} vs llama-perplexity {reference:.4} ({:.3}% off), {} scored",
        r.ppl,
        rel * 100.0,
        r.n_scored
    );
    assert_eq!(r.per_chunk.len(), n_chunks);
    assert_eq!(r.n_scored, n_chunks * (n_ctx - n_ctx / 2 - 1));
    assert!(
        rel <= 0.005,
        "perplexity {} vs {reference}: {:.3}% off",
        r.ppl,
        rel * 100.0
    );
}

#[test]
fn perplexity_smollm2() {
    perplexity_matches(SMOLLM2, "smollm2");
}

#[test]
fn perplexity_gemma3() {
    perplexity_matches(GEMMA3, "gemma3");
}

/// minijinja renders both chat templates exactly as Jinja2 does (the
/// golden strings come from xtask/golden/chat_golden.py).
#[test]
fn chat_templates_match_jinja2() {
    let g = read_json(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/chat_templates.json"),
    );
    for (key, file) in [("smollm2", SMOLLM2), ("gemma3", GEMMA3)] {
        let Some(engine) = load(file) else { continue };
        let template = engine.chat_template().unwrap();
        for case in g["models"][key]["cases"].as_array().unwrap() {
            let messages: Vec<ChatMessage> = case["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap())
                })
                .collect();
            let agp = case["add_generation_prompt"].as_bool().unwrap();
            let got = template.render(&messages, agp);
            match case.get("text") {
                Some(want) => {
                    assert_eq!(got.unwrap(), want.as_str().unwrap(), "{key} {messages:?}")
                }
                None => assert!(got.is_err(), "{key}: expected a template error"),
            }
        }
        // A chat prompt starts with exactly one BOS when the model adds one.
        let ids = engine
            .tokenize_chat(&[ChatMessage::new("user", "Hi")])
            .unwrap();
        if let (true, Some(bos)) = (engine.tokenizer().add_bos(), engine.tokenizer().bos()) {
            assert_eq!(ids[0], bos);
            assert_ne!(ids.get(1), Some(&bos), "{key}: double BOS");
        }
    }
}

/// Templates are sandboxed: runaway loops run out of fuel, errors from
/// `raise_exception` surface as typed errors.
#[test]
fn chat_template_is_sandboxed() {
    let Some(engine) = load(SMOLLM2) else { return };
    let tok = engine.tokenizer();
    let runaway = ChatTemplate::new(
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        tok,
    )
    .unwrap();
    assert!(matches!(
        runaway.render(&[], true),
        Err(EngineError::ChatTemplate(_))
    ));
    let raising = ChatTemplate::new("{{ raise_exception('no system role') }}", tok).unwrap();
    let err = raising.render(&[], true).unwrap_err();
    assert!(err.to_string().contains("no system role"), "{err}");
    assert!(ChatTemplate::new("{% for %}", tok).is_err());
}

/// A prompt longer than the context is a clear error, not a panic.
#[test]
fn prompt_longer_than_context_is_rejected() {
    let Some(engine) = load(SMOLLM2) else { return };
    let mut session = engine.session(Some(16)).unwrap();
    let prompt: Vec<u32> = (0..17).map(|i| 100 + i).collect();
    let err = session.generate(&prompt, greedy(4)).unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::PromptTooLong {
                prompt: 17,
                n_ctx: 16,
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        engine.session(Some(0)),
        Err(EngineError::BadContext { .. })
    ));
    assert!(matches!(
        engine.session(Some(1 << 30)),
        Err(EngineError::BadContext { .. })
    ));
    let err = session.generate(&[u32::MAX], greedy(1)).unwrap_err();
    assert!(matches!(err, EngineError::InvalidParameter(_)), "{err}");
    assert!(matches!(
        session.generate(&[], greedy(1)),
        Err(EngineError::EmptyPrompt)
    ));
    // Generation stops cleanly when the context fills up.
    let mut session = engine.session(Some(8)).unwrap();
    let prompt = engine.tokenize_prompt("One two three four").unwrap();
    let mut generation = session.generate(&prompt, greedy(100)).unwrap();
    generation.collect_text().unwrap();
    // Every evaluated token takes a cache slot; the last sampled one is
    // never evaluated, so at most n_ctx + 1 tokens exist in all.
    assert!(prompt.len() + generation.tokens().len() <= 9);
    assert!(matches!(
        generation.finish_reason(),
        Some(zeta_engine::FinishReason::ContextFull | zeta_engine::FinishReason::Eog)
    ));
}

/// Reusing the KV cache across turns gives the same tokens as a fresh
/// session, and stop strings cut the text without emitting them.
#[test]
fn session_reuse_and_stop_strings() {
    let Some(engine) = load(SMOLLM2) else { return };
    let prompt = engine
        .tokenize_prompt("List the days of the week: Monday,")
        .unwrap();
    let mut fresh = engine.session(Some(256)).unwrap();
    let mut g = fresh.generate(&prompt, greedy(12)).unwrap();
    let fresh_text = g.collect_text().unwrap();
    let fresh_tokens = g.tokens().to_vec();
    drop(g);

    // Same session: first a shorter prompt, then the full one (prefix reuse).
    let mut reused = engine.session(Some(256)).unwrap();
    let short = &prompt[..prompt.len() - 2];
    reused
        .generate(short, greedy(5))
        .unwrap()
        .collect_text()
        .unwrap();
    let mut g = reused.generate(&prompt, greedy(12)).unwrap();
    let text = g.collect_text().unwrap();
    assert_eq!(g.tokens(), &fresh_tokens[..]);
    assert_eq!(text, fresh_text);
    assert_eq!(g.timings().prompt_tokens_reused, prompt.len() - 2);
    drop(g);

    // A stop string taken from the middle of that text ends generation
    // before it, and it is not emitted.
    let stop: String = fresh_text.chars().skip(4).take(4).collect();
    if !stop.trim().is_empty() {
        let mut s = engine.session(Some(256)).unwrap();
        let params = GenerateParams {
            stop: vec![stop.clone()],
            ..greedy(12)
        };
        let mut g = s.generate(&prompt, params).unwrap();
        let text = g.collect_text().unwrap();
        assert!(!text.contains(&stop), "{text:?} contains {stop:?}");
        assert!(fresh_text.starts_with(&text), "{text:?} vs {fresh_text:?}");
        assert_eq!(g.finish_reason(), Some(zeta_engine::FinishReason::Stop));
    }
}

/// Same seed, same text; different seeds usually differ.
#[test]
fn seeded_sampling_is_reproducible() {
    let Some(engine) = load(SMOLLM2) else { return };
    let prompt = engine.tokenize_prompt("Once upon a time").unwrap();
    let run = |seed: u64| {
        let mut s = engine.session(Some(128)).unwrap();
        let params = GenerateParams {
            max_tokens: Some(16),
            sampler: SamplerConfig {
                seed,
                temperature: 1.0,
                ..SamplerConfig::default()
            },
            ..GenerateParams::default()
        };
        let mut g = s.generate(&prompt, params).unwrap();
        g.collect_text().unwrap();
        g.tokens().to_vec()
    };
    assert_eq!(run(42), run(42));
}
