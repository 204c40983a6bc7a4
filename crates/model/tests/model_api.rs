//! Model loading and the forward-pass API on small synthetic GGUF files:
//! config parsing, KV-cache sizing, clear errors for bad files and bad calls,
//! chunking/truncation consistency, and a naive f64 reference forward pass.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use zeta_gguf::{GgmlType, Gguf, GgufWriter, Value};
use zeta_model::{Arch, Logits, Model, ModelConfig, ModelError};
use zeta_tensor::CpuBackend;

const E: usize = 32; // n_embd
const H: usize = 4; // heads
const HKV: usize = 2; // kv heads
const HD: usize = 8; // head dim
const FF: usize = 48;
const V: usize = 40; // vocab
const L: usize = 2; // layers

struct Rng(u64);
impl Rng {
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0) * scale
            })
            .collect()
    }
}

/// Tensors of a tiny llama model: (name, ggml dims, values).
fn llama_tensors() -> Vec<(String, Vec<u64>, Vec<f32>)> {
    let mut r = Rng(42);
    let mut t = vec![
        (
            "token_embd.weight".to_string(),
            vec![E as u64, V as u64],
            r.vec(E * V, 1.0),
        ),
        (
            "output_norm.weight".to_string(),
            vec![E as u64],
            r.vec(E, 0.5).iter().map(|v| 1.0 + v).collect(),
        ),
    ];
    for l in 0..L {
        let n = |s: &str| format!("blk.{l}.{s}");
        let s = 1.0 / (E as f32).sqrt();
        t.push((
            n("attn_norm.weight"),
            vec![E as u64],
            r.vec(E, 0.3).iter().map(|v| 1.0 + v).collect(),
        ));
        t.push((
            n("attn_q.weight"),
            vec![E as u64, (H * HD) as u64],
            r.vec(E * H * HD, s),
        ));
        t.push((
            n("attn_k.weight"),
            vec![E as u64, (HKV * HD) as u64],
            r.vec(E * HKV * HD, s),
        ));
        t.push((
            n("attn_v.weight"),
            vec![E as u64, (HKV * HD) as u64],
            r.vec(E * HKV * HD, s),
        ));
        t.push((
            n("attn_output.weight"),
            vec![(H * HD) as u64, E as u64],
            r.vec(E * H * HD, s),
        ));
        t.push((
            n("ffn_norm.weight"),
            vec![E as u64],
            r.vec(E, 0.3).iter().map(|v| 1.0 + v).collect(),
        ));
        t.push((
            n("ffn_gate.weight"),
            vec![E as u64, FF as u64],
            r.vec(E * FF, s),
        ));
        t.push((
            n("ffn_up.weight"),
            vec![E as u64, FF as u64],
            r.vec(E * FF, s),
        ));
        t.push((
            n("ffn_down.weight"),
            vec![FF as u64, E as u64],
            r.vec(E * FF, 1.0 / (FF as f32).sqrt()),
        ));
    }
    t
}

fn llama_kv(arch: &str) -> Vec<(String, Value)> {
    let k = |s: &str| format!("{arch}.{s}");
    vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (k("context_length"), Value::U32(64)),
        (k("embedding_length"), Value::U32(E as u32)),
        (k("block_count"), Value::U32(L as u32)),
        (k("feed_forward_length"), Value::U32(FF as u32)),
        (k("attention.head_count"), Value::U32(H as u32)),
        (k("attention.head_count_kv"), Value::U32(HKV as u32)),
        (k("attention.layer_norm_rms_epsilon"), Value::F32(1e-5)),
        (k("rope.freq_base"), Value::F32(10000.0)),
    ]
}

fn build(kv: &[(String, Value)], tensors: &[(String, Vec<u64>, Vec<f32>)]) -> Arc<Gguf> {
    let mut w = GgufWriter::new();
    for (k, v) in kv {
        w.add_kv(k.clone(), v.clone());
    }
    for (name, dims, vals) in tensors {
        w.add_tensor(
            name.clone(),
            dims,
            GgmlType::F32,
            bytemuck::cast_slice(vals).to_vec(),
        )
        .unwrap();
    }
    let mut bytes = Vec::new();
    w.write_to(&mut bytes).unwrap();
    Arc::new(Gguf::from_bytes(bytes).unwrap())
}

fn tiny() -> Model<CpuBackend> {
    Model::load(
        build(&llama_kv("llama"), &llama_tensors()),
        CpuBackend::with_threads(2),
    )
    .unwrap()
}

#[test]
fn config_is_read_from_metadata() {
    let g = build(&llama_kv("llama"), &llama_tensors());
    let c = ModelConfig::from_gguf(&g).unwrap();
    assert_eq!(c.arch, Arch::Llama);
    assert_eq!(
        (c.n_vocab, c.n_ctx_train, c.n_embd, c.n_layer),
        (V, 64, E, L)
    );
    assert_eq!(
        (c.n_head, c.n_head_kv, c.head_dim, c.n_ff, c.n_rot),
        (H, HKV, HD, FF, HD)
    );
    assert_eq!(c.default_n_ctx(), 64);
    // K and V, f16, every layer: 2 layers * n_ctx * 2 kv heads * (8 + 8) * 2 bytes.
    assert_eq!(c.kv_cache_bytes(64), (L * 64 * HKV * (HD + HD) * 2) as u64);
    assert_eq!(c.kv_cache_bytes(0), 0);
}

#[test]
fn load_errors_name_the_problem() {
    // unknown architecture
    let g = build(&llama_kv("mamba"), &llama_tensors());
    assert!(
        matches!(Model::load(g, CpuBackend::new()), Err(ModelError::UnknownArch(a)) if a == "mamba")
    );

    // missing tensor
    let mut t = llama_tensors();
    t.retain(|(n, ..)| n != "blk.1.ffn_up.weight");
    let err = Model::load(build(&llama_kv("llama"), &t), CpuBackend::new()).unwrap_err();
    assert!(
        matches!(&err, ModelError::MissingTensor { name } if name == "blk.1.ffn_up.weight"),
        "{err}"
    );

    // mis-shaped tensor
    let mut t = llama_tensors();
    for (n, dims, vals) in &mut t {
        if n == "blk.0.attn_k.weight" {
            *dims = vec![E as u64, (H * HD) as u64];
            *vals = vec![0.0; E * H * HD];
        }
    }
    let err = Model::load(build(&llama_kv("llama"), &t), CpuBackend::new()).unwrap_err();
    match &err {
        ModelError::BadShape {
            name,
            expected,
            found,
        } => {
            assert_eq!(name, "blk.0.attn_k.weight");
            assert_eq!(expected, &vec![E as u64, (HKV * HD) as u64]);
            assert_eq!(found, &vec![E as u64, (H * HD) as u64]);
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("blk.0.attn_k.weight"));

    // missing hyperparameter
    let mut kv = llama_kv("llama");
    kv.retain(|(k, _)| k != "llama.embedding_length");
    assert!(Model::load(build(&kv, &llama_tensors()), CpuBackend::new()).is_err());

    // inconsistent heads
    let mut kv = llama_kv("llama");
    for (k, v) in &mut kv {
        if k == "llama.attention.head_count_kv" {
            *v = Value::U32(3);
        }
    }
    assert!(matches!(
        Model::load(build(&kv, &llama_tensors()), CpuBackend::new()),
        Err(ModelError::BadConfig(_))
    ));
}

#[test]
fn forward_rejects_bad_calls() {
    let m = tiny();
    assert!(matches!(
        m.new_state(0),
        Err(ModelError::BadContextSize { .. })
    ));
    assert!(matches!(
        m.new_state(65),
        Err(ModelError::BadContextSize { .. })
    ));
    let mut st = m.new_state(8).unwrap();
    assert!(matches!(
        m.forward(&mut st, &[], Logits::Last),
        Err(ModelError::NoTokens)
    ));
    assert!(matches!(
        m.forward(&mut st, &[1, V as u32], Logits::Last),
        Err(ModelError::TokenOutOfRange { token, .. }) if token == V as u32
    ));
    assert_eq!(st.pos(), 0);
    m.forward(&mut st, &[1, 2, 3, 4, 5], Logits::Last).unwrap();
    assert!(matches!(
        m.forward(&mut st, &[1, 2, 3, 4], Logits::Last),
        Err(ModelError::ContextOverflow {
            pos: 5,
            n_tokens: 4,
            n_ctx: 8
        })
    ));
    assert_eq!(st.pos(), 5);
    assert_eq!(st.n_ctx(), 8);
}

#[test]
fn chunking_and_truncation_are_consistent() {
    let m = tiny();
    let toks = [3u32, 14, 15, 9, 26, 5, 35, 8, 9, 7];
    let mut a = m.new_state(16).unwrap();
    let all = m.forward(&mut a, &toks, Logits::All).unwrap().to_vec();
    assert_eq!(all.len(), toks.len() * V);
    assert_eq!(a.pos(), toks.len());

    // Same tokens in two batches (both ≥ 2 tokens): identical logits.
    let mut b = m.new_state(16).unwrap();
    let first = m.forward(&mut b, &toks[..6], Logits::All).unwrap().to_vec();
    let second = m.forward(&mut b, &toks[6..], Logits::All).unwrap().to_vec();
    assert_eq!(first, all[..6 * V]);
    assert_eq!(second, all[6 * V..]);

    // Logits::Last is the last row.
    let mut c = m.new_state(16).unwrap();
    let last = m.forward(&mut c, &toks, Logits::Last).unwrap().to_vec();
    assert_eq!(last.len(), V);
    let tail = &all[(toks.len() - 1) * V..];
    for (x, y) in last.iter().zip(tail) {
        assert!((x - y).abs() < 1e-4, "{x} vs {y}");
    }

    // Truncate and re-run the tail: same result as before.
    c.truncate(6);
    assert_eq!(c.pos(), 6);
    let again = m.forward(&mut c, &toks[6..], Logits::All).unwrap().to_vec();
    assert_eq!(again, second);
    c.truncate(100);
    assert_eq!(c.pos(), toks.len());
}

/// Naive llama forward in f64 from the f32 weights (no quantization, exact softmax).
fn reference_llama(tensors: &[(String, Vec<u64>, Vec<f32>)], toks: &[u32]) -> Vec<Vec<f64>> {
    let get = |n: &str| -> Vec<f64> {
        tensors
            .iter()
            .find(|(name, ..)| name == n)
            .unwrap()
            .2
            .iter()
            .map(|&v| f64::from(v))
            .collect()
    };
    let matvec = |w: &[f64], x: &[f64], rows: usize| -> Vec<f64> {
        let cols = x.len();
        (0..rows)
            .map(|r| (0..cols).map(|k| w[r * cols + k] * x[k]).sum())
            .collect()
    };
    let rms = |x: &[f64], w: &[f64]| -> Vec<f64> {
        let s = 1.0 / (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64 + 1e-5).sqrt();
        x.iter().zip(w).map(|(a, b)| a * s * b).collect()
    };
    let rope = |v: &mut [f64], pos: usize| {
        for h in 0..v.len() / HD {
            for i in 0..HD / 2 {
                let th = pos as f64 * 10000f64.powf(-2.0 * i as f64 / HD as f64);
                let (a, b) = (v[h * HD + 2 * i], v[h * HD + 2 * i + 1]);
                v[h * HD + 2 * i] = a * th.cos() - b * th.sin();
                v[h * HD + 2 * i + 1] = a * th.sin() + b * th.cos();
            }
        }
    };
    let emb = get("token_embd.weight");
    let mut ks: Vec<Vec<Vec<f64>>> = vec![Vec::new(); L];
    let mut vs: Vec<Vec<Vec<f64>>> = vec![Vec::new(); L];
    let mut out = Vec::new();
    for (pos, &t) in toks.iter().enumerate() {
        let mut x: Vec<f64> = emb[t as usize * E..(t as usize + 1) * E].to_vec();
        for l in 0..L {
            let n = |s: &str| format!("blk.{l}.{s}");
            let xb = rms(&x, &get(&n("attn_norm.weight")));
            let mut q = matvec(&get(&n("attn_q.weight")), &xb, H * HD);
            let mut k = matvec(&get(&n("attn_k.weight")), &xb, HKV * HD);
            let v = matvec(&get(&n("attn_v.weight")), &xb, HKV * HD);
            rope(&mut q, pos);
            rope(&mut k, pos);
            ks[l].push(k);
            vs[l].push(v);
            let mut att = vec![0f64; H * HD];
            for h in 0..H {
                let g = h / (H / HKV);
                let s: Vec<f64> = (0..=pos)
                    .map(|j| {
                        (0..HD)
                            .map(|d| q[h * HD + d] * ks[l][j][g * HD + d])
                            .sum::<f64>()
                            / (HD as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
                for j in 0..=pos {
                    for d in 0..HD {
                        att[h * HD + d] += (s[j] - m).exp() / z * vs[l][j][g * HD + d];
                    }
                }
            }
            let o = matvec(&get(&n("attn_output.weight")), &att, E);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            let xb = rms(&x, &get(&n("ffn_norm.weight")));
            let gt = matvec(&get(&n("ffn_gate.weight")), &xb, FF);
            let up = matvec(&get(&n("ffn_up.weight")), &xb, FF);
            let act: Vec<f64> = gt
                .iter()
                .zip(&up)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let d = matvec(&get(&n("ffn_down.weight")), &act, E);
            x.iter_mut().zip(&d).for_each(|(a, b)| *a += b);
        }
        let xn = rms(&x, &get("output_norm.weight"));
        out.push(matvec(&emb, &xn, V));
    }
    out
}

#[test]
fn llama_forward_matches_naive_reference() {
    let t = llama_tensors();
    let m = Model::load(build(&llama_kv("llama"), &t), CpuBackend::with_threads(2)).unwrap();
    let toks = [1u32, 7, 39, 22, 4, 4, 18];
    let mut st = m.new_state(16).unwrap();
    let got = m.forward(&mut st, &toks, Logits::All).unwrap().to_vec();
    let want = reference_llama(&t, &toks);
    for (p, row) in want.iter().enumerate() {
        for (i, w) in row.iter().enumerate() {
            let g = f64::from(got[p * V + i]);
            // f16 KV cache and f16 probabilities (ggml's numerics): small absolute errors.
            assert!(
                (g - w).abs() < 2e-2 * (1.0 + w.abs()),
                "pos {p} token {i}: {g} vs {w}"
            );
        }
    }
}
