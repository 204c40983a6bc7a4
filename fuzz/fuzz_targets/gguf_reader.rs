//! Fuzz target: `Gguf::from_bytes` on arbitrary bytes must return Ok or Err,
//! never panic, abort, hang or over-allocate. On success every metadata value
//! and every tensor's data is touched, every typed accessor is exercised, and
//! the parsed file is rewritten with `GgufWriter` and re-read: the rewrite
//! must succeed and be a fixed point (writing the re-read file again gives
//! the same bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use zeta_gguf::{Array, Gguf, GgufWriter, Value};

fn touch_array(a: &Array) -> u64 {
    let mut acc = a.len() as u64 ^ a.type_name().len() as u64;
    match a {
        Array::String(v) => acc += v.iter().map(|s| s.len() as u64).sum::<u64>(),
        Array::Array(v) => acc += v.iter().map(touch_array).sum::<u64>(),
        Array::U8(v) => acc += v.iter().map(|&x| u64::from(x)).sum::<u64>(),
        Array::F32(v) => acc += v.iter().map(|x| u64::from(x.to_bits())).sum::<u64>(),
        Array::Bool(v) => acc += v.iter().filter(|&&b| b).count() as u64,
        _ => {}
    }
    acc
}

fn touch(v: &Value) -> u64 {
    let mut acc = v.type_name().len() as u64;
    acc ^= v.as_u64().unwrap_or(0) ^ v.as_i64().unwrap_or(0) as u64;
    acc ^= v.as_f64().map(f64::to_bits).unwrap_or(0);
    acc ^= v.as_str().map(|s| s.len() as u64).unwrap_or(0);
    acc ^= u64::from(v.as_bool().unwrap_or(false));
    if let Some(a) = v.as_array() {
        acc ^= touch_array(a);
    }
    acc
}

fn rewrite(g: &Gguf) -> Vec<u8> {
    let mut w = GgufWriter::new().with_version(g.version());
    for (k, v) in g.metadata() {
        w.add_kv(k.clone(), v.clone());
    }
    for t in g.tensors() {
        w.add_tensor(&t.name, &t.dims, t.ggml_type, g.tensor_data(t).to_vec())
            .expect("a parsed tensor must be writable");
    }
    let mut out = Vec::new();
    w.write_to(&mut out)
        .expect("a parsed file must be writable");
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(g) = Gguf::from_bytes(data.to_vec()) else {
        return;
    };
    let mut acc = g.version() as u64 ^ g.alignment() ^ g.data_offset();
    for (k, v) in g.metadata() {
        acc ^= touch(v);
        assert!(g.get(k).is_some());
        acc ^= g.get_u32(k).map(u64::from).unwrap_or(1);
        acc ^= g.get_u64(k).unwrap_or(2);
        acc ^= g.get_i64(k).unwrap_or(3) as u64;
        acc ^= g.get_f32(k).map(|f| u64::from(f.to_bits())).unwrap_or(4);
        acc ^= u64::from(g.get_bool(k).unwrap_or(false));
        acc ^= g.get_str(k).map(|s| s.len() as u64).unwrap_or(5);
        acc ^= g.get_array(k).map(|a| a.len() as u64).unwrap_or(6);
    }
    for t in g.tensors() {
        let d = g.tensor_data(t);
        assert_eq!(d.len() as u64, t.n_bytes);
        assert_eq!(t.row_bytes() * t.n_rows(), t.n_bytes);
        acc ^= t.n_elements() ^ t.row_len();
        acc ^= d.iter().map(|&b| u64::from(b)).sum::<u64>();
        assert!(g.tensor(&t.name).is_some());
        assert_eq!(
            g.tensor_data_by_name(&t.name).map(<[u8]>::len).ok(),
            Some(d.len())
        );
    }
    std::hint::black_box(acc);

    let once = rewrite(&g);
    let g2 = Gguf::from_bytes(once.clone()).expect("the rewrite must parse");
    assert_eq!(g2.tensors().len(), g.tensors().len());
    for (a, b) in g.tensors().iter().zip(g2.tensors()) {
        assert_eq!(g.tensor_data(a), g2.tensor_data(b));
    }
    assert!(rewrite(&g2) == once, "rewrite is not a fixed point");
});
