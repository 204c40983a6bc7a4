#![allow(clippy::unwrap_used)]
use std::sync::Arc;
use zeta_model::{Logits, Model};
use zeta_tensor::CpuBackend;
#[test]
fn gemma_decode() {
    let g = Arc::new(zeta_gguf::Gguf::open("/root/.cache/zeta/models/gemma-3-270m-q4_k_m.gguf").unwrap());
    let m = Model::load(g, CpuBackend::new()).unwrap();
    let nv = m.config().n_vocab;
    let mut st = m.new_state(512).unwrap();
    m.forward(&mut st, &[2, 818, 5279], Logits::Last).unwrap();
    let lg = m.forward(&mut st, &[529], Logits::Last).unwrap().to_vec();
    let mut idx: Vec<usize> = (0..nv).collect();
    idx.sort_by(|&a, &b| lg[b].total_cmp(&lg[a]));
    println!("decode top5 {:?} {:?}", &idx[..5], idx[..5].iter().map(|&i| lg[i]).collect::<Vec<_>>());
}
#[test]
fn gemma_tea() {
    let g = Arc::new(zeta_gguf::Gguf::open("/root/.cache/zeta/models/gemma-3-270m-q4_k_m.gguf").unwrap());
    let m = Model::load(g, CpuBackend::new()).unwrap();
    let nv = m.config().n_vocab;
    let mut st = m.new_state(512).unwrap();
    let lg = m.forward(&mut st, &[2, 59881, 531, 1386, 496, 8578, 529, 11115, 236787, 107, 236772], Logits::Last).unwrap().to_vec();
    let mut idx: Vec<usize> = (0..nv).collect();
    idx.sort_by(|&a, &b| lg[b].total_cmp(&lg[a]));
    println!("tea top5 {:?} {:?}", &idx[..5], idx[..5].iter().map(|&i| lg[i]).collect::<Vec<_>>());
}
