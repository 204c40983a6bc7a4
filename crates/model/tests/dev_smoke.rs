#![allow(clippy::unwrap_used)]
use std::sync::Arc;
use zeta_model::{Logits, Model};
use zeta_tensor::CpuBackend;

fn run(file: &str, ids: &[u32]) {
    let path = format!("/root/.cache/zeta/models/{file}");
    let g = Arc::new(zeta_gguf::Gguf::open(&path).unwrap());
    let m = Model::load(g, CpuBackend::new()).unwrap();
    println!("{:?}", m.config());
    let mut st = m.new_state(512).unwrap();
    let t = std::time::Instant::now();
    let lg = m.forward(&mut st, ids, Logits::All).unwrap().to_vec();
    println!("time {:?}", t.elapsed());
    let nv = m.config().n_vocab;
    let am: Vec<usize> = lg.chunks(nv).map(|r| (0..nv).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap()).collect();
    println!("argmax {am:?}");
    let last = &lg[lg.len() - nv..];
    let mut idx: Vec<usize> = (0..nv).collect();
    idx.sort_by(|&a, &b| last[b].total_cmp(&last[a]));
    println!("top5 {:?} {:?}", &idx[..5], idx[..5].iter().map(|&i| last[i]).collect::<Vec<_>>());
    let r0 = &lg[..nv];
    idx.sort_by(|&a, &b| r0[b].total_cmp(&r0[a]));
    println!("row0 top3 {:?} {:?}", &idx[..3], idx[..3].iter().map(|&i| r0[i]).collect::<Vec<_>>());
}

#[test]
fn smol() {
    run("SmolLM2-135M-Instruct.Q4_1.gguf", &[504, 3575, 282, 4649, 314, 7042, 30, 378, 3575, 282, 4521, 314]);
}
#[test]
fn gemma() {
    run("gemma-3-270m-q4_k_m.gguf", &[2, 818, 5279, 529, 7001, 563, 9079, 236761, 669, 5279, 529, 9405, 563]);
}
#[test]
fn smol1() {
    run("SmolLM2-135M-Instruct.Q4_1.gguf", &[504]);
}
#[test]
fn smol3() {
    run("SmolLM2-135M-Instruct.Q4_1.gguf", &[504, 3575, 282]);
}
