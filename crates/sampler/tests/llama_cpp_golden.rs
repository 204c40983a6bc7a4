//! Conformance with llama.cpp's own sampler chain (logit_bias → penalties → top_k → typical →
//! top_p → min_p → temp) on golden data from `xtask/golden/sampler_golden.py`: the surviving
//! candidates and their probabilities must match (the random draw itself is not compared).
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use zeta_sampler::{Sampler, SamplerConfig};

const GOLDEN: &str = include_str!("golden/llama_cpp_chain.json");

fn f32_of(v: &Value) -> f32 {
    match v {
        Value::String(s) if s == "-inf" => f32::NEG_INFINITY,
        _ => v.as_f64().unwrap() as f32,
    }
}

fn config(c: &Value) -> SamplerConfig {
    SamplerConfig {
        temperature: f32_of(&c["temperature"]),
        top_k: c["top_k"].as_i64().unwrap() as i32,
        top_p: f32_of(&c["top_p"]),
        min_p: f32_of(&c["min_p"]),
        typical_p: f32_of(&c["typical_p"]),
        repeat_penalty: f32_of(&c["repeat_penalty"]),
        presence_penalty: f32_of(&c["presence_penalty"]),
        frequency_penalty: f32_of(&c["frequency_penalty"]),
        penalty_last_n: c["penalty_last_n"].as_u64().unwrap() as usize,
        logit_bias: c["logit_bias"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| (b[0].as_u64().unwrap() as u32, f32_of(&b[1])))
            .collect(),
        seed: 1,
    }
}

#[test]
fn chain_matches_llama_cpp() {
    let golden: Value = serde_json::from_str(GOLDEN).unwrap();
    let cases = golden["cases"].as_array().unwrap();
    assert!(cases.len() >= 50);
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let logits: Vec<f32> = case["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(f32_of)
            .collect();
        let mut s = Sampler::new(config(&case["config"])).unwrap();
        for t in case["history"].as_array().unwrap() {
            s.accept(t.as_u64().unwrap() as u32);
        }
        let got = s.probabilities(&logits).unwrap();
        let want: Vec<(u32, f64)> = case["expected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e[0].as_u64().unwrap() as u32, e[1].as_f64().unwrap()))
            .collect();

        let mut got_ids: Vec<u32> = got.iter().map(|x| x.0).collect();
        let mut want_ids: Vec<u32> = want.iter().map(|x| x.0).collect();
        got_ids.sort_unstable();
        want_ids.sort_unstable();
        if got_ids != want_ids {
            failures.push(format!(
                "{name}: candidate sets differ: {} vs {} tokens",
                got_ids.len(),
                want_ids.len()
            ));
            continue;
        }
        for &(id, p) in &want {
            let g = got.iter().find(|x| x.0 == id).unwrap().1;
            if (f64::from(g) - p).abs() > 1e-5 {
                failures.push(format!("{name}: token {id}: p {g} vs llama.cpp {p}"));
                break;
            }
        }
        // Greedy draws and the sampled token agree with the candidate set.
        let t = s.sample(&logits).unwrap();
        assert!(want_ids.binary_search(&t).is_ok(), "{name}: sampled {t}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
