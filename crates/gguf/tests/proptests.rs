//! Property tests: reader∘writer round-trips arbitrary metadata (every value
//! type, nested arrays, unicode strings) and tensors (random shapes, types
//! and data), and random mutations/truncations of valid files never panic.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use proptest::prelude::*;
use zeta_gguf::{Array, GgmlType, Gguf, GgufWriter, MAX_TENSOR_NAME_LEN, Value};

fn f32_bits() -> impl Strategy<Value = f32> {
    prop_oneof![any::<f32>(), any::<u32>().prop_map(f32::from_bits)]
}

fn f64_bits() -> impl Strategy<Value = f64> {
    prop_oneof![any::<f64>(), any::<u64>().prop_map(f64::from_bits)]
}

fn arb_array() -> impl Strategy<Value = Array> {
    use prop::collection::vec;
    let leaf = prop_oneof![
        vec(any::<u8>(), 0..6).prop_map(Array::U8),
        vec(any::<i8>(), 0..6).prop_map(Array::I8),
        vec(any::<u16>(), 0..6).prop_map(Array::U16),
        vec(any::<i16>(), 0..6).prop_map(Array::I16),
        vec(any::<u32>(), 0..6).prop_map(Array::U32),
        vec(any::<i32>(), 0..6).prop_map(Array::I32),
        vec(f32_bits(), 0..6).prop_map(Array::F32),
        vec(any::<bool>(), 0..6).prop_map(Array::Bool),
        vec(any::<String>(), 0..6).prop_map(Array::String),
        vec(any::<u64>(), 0..6).prop_map(Array::U64),
        vec(any::<i64>(), 0..6).prop_map(Array::I64),
        vec(f64_bits(), 0..6).prop_map(Array::F64),
    ];
    // Nesting depth at most 1 + 4 levels, under MAX_ARRAY_DEPTH.
    leaf.prop_recursive(4, 48, 4, |inner| vec(inner, 0..4).prop_map(Array::Array))
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<i8>().prop_map(Value::I8),
        any::<u16>().prop_map(Value::U16),
        any::<i16>().prop_map(Value::I16),
        any::<u32>().prop_map(Value::U32),
        any::<i32>().prop_map(Value::I32),
        f32_bits().prop_map(Value::F32),
        any::<bool>().prop_map(Value::Bool),
        any::<String>().prop_map(Value::String),
        arb_array().prop_map(Value::Array),
        any::<u64>().prop_map(Value::U64),
        any::<i64>().prop_map(Value::I64),
        f64_bits().prop_map(Value::F64),
    ]
}

#[derive(Debug, Clone)]
struct TensorSpec {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    seed: u64,
}

fn arb_tensor() -> impl Strategy<Value = TensorSpec> {
    (
        "\\PC{0,12}",
        prop::sample::select(GgmlType::ALL.to_vec()),
        1u64..4,
        prop::collection::vec(1u64..4, 0..4),
        any::<u64>(),
    )
        .prop_map(|(name, ty, blocks, rest, seed)| {
            let mut dims = vec![blocks * ty.block_size() as u64];
            dims.extend(rest);
            TensorSpec {
                name,
                dims,
                ty,
                seed,
            }
        })
}

fn data_for(n: u64, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[derive(Debug, Clone)]
struct FileSpec {
    version: u32,
    alignment: Option<u32>,
    kvs: Vec<(String, Value)>,
    tensors: Vec<TensorSpec>,
}

fn arb_file(max_kvs: usize, max_tensors: usize) -> impl Strategy<Value = FileSpec> {
    (
        prop::sample::select(vec![2u32, 3]),
        prop::option::of(prop::sample::select(vec![1u32, 2, 8, 32, 64, 256, 4096])),
        prop::collection::vec(("\\PC{1,16}", arb_value()), 0..max_kvs),
        prop::collection::vec(arb_tensor(), 0..max_tensors),
    )
        .prop_map(|(version, alignment, kvs, tensors)| {
            // Keys unique and not the alignment key (set separately).
            let mut seen = HashSet::new();
            let kvs = kvs
                .into_iter()
                .filter(|(k, _)| k != "general.alignment" && seen.insert(k.clone()))
                .collect();
            // Tensor names unique, non-empty and at most 63 bytes.
            let tensors = tensors
                .into_iter()
                .enumerate()
                .map(|(i, mut t)| {
                    let mut name = format!("{i}.{}", t.name);
                    while name.len() > MAX_TENSOR_NAME_LEN {
                        name.pop();
                    }
                    t.name = name;
                    t
                })
                .collect();
            FileSpec {
                version,
                alignment,
                kvs,
                tensors,
            }
        })
}

fn build(spec: &FileSpec) -> (GgufWriter, Vec<Vec<u8>>) {
    let mut w = GgufWriter::new().with_version(spec.version);
    for (k, v) in &spec.kvs {
        w.add_kv(k.clone(), v.clone());
    }
    if let Some(a) = spec.alignment {
        w.add_kv("general.alignment", Value::U32(a));
    }
    let mut datas = Vec::new();
    for t in &spec.tensors {
        let n = t.ty.row_bytes(t.dims[0]).unwrap() * t.dims[1..].iter().product::<u64>();
        let data = data_for(n, t.seed);
        w.add_tensor(&t.name, &t.dims, t.ty, data.clone()).unwrap();
        datas.push(data);
    }
    (w, datas)
}

fn to_bytes(w: &GgufWriter) -> Vec<u8> {
    let mut out = Vec::new();
    w.write_to(&mut out).unwrap();
    out
}

fn rewrite(g: &Gguf) -> Vec<u8> {
    let mut w = GgufWriter::new().with_version(g.version());
    for (k, v) in g.metadata() {
        w.add_kv(k.clone(), v.clone());
    }
    for t in g.tensors() {
        w.add_tensor(&t.name, &t.dims, t.ggml_type, g.tensor_data(t).to_vec())
            .unwrap();
    }
    to_bytes(&w)
}

/// Touches everything a consumer could read; must never panic.
fn touch_all(g: &Gguf) -> u64 {
    let mut acc = 0u64;
    for (k, v) in g.metadata() {
        acc ^= format!("{v:?}").len() as u64;
        acc ^= g.get_u64(k).unwrap_or(0) ^ g.get_str(k).map(str::len).unwrap_or(0) as u64;
    }
    for t in g.tensors() {
        let d = g.tensor_data(t);
        assert_eq!(d.len() as u64, t.n_bytes);
        acc ^= d.iter().map(|&b| u64::from(b)).sum::<u64>() ^ t.n_elements() ^ t.n_rows();
    }
    acc
}

#[derive(Debug, Clone)]
enum Mutation {
    SetByte(usize, u8),
    SetU64(usize, u64),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    // Positions: biased towards the header, where the structure lives.
    let pos = prop_oneof![0usize..128, any::<usize>()];
    let big = prop_oneof![
        Just(0u64),
        Just(1u64),
        Just(u64::from(u32::MAX)),
        Just(u64::MAX),
        Just(1u64 << 63),
        any::<u64>(),
    ];
    prop_oneof![
        4 => (pos.clone(), any::<u8>()).prop_map(|(p, b)| Mutation::SetByte(p, b)),
        2 => (pos.clone(), big).prop_map(|(p, v)| Mutation::SetU64(p, v)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => (pos.clone(), prop::collection::vec(any::<u8>(), 1..9))
            .prop_map(|(p, b)| Mutation::Insert(p, b)),
        1 => (pos, 1usize..9).prop_map(|(p, n)| Mutation::Remove(p, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    if len == 0 {
        return;
    }
    match *m {
        Mutation::SetByte(p, b) => bytes[p % len] = b,
        Mutation::SetU64(p, v) => {
            let p = p % len;
            for (i, b) in v.to_le_bytes().iter().enumerate() {
                if let Some(x) = bytes.get_mut(p + i) {
                    *x = *b;
                }
            }
        }
        Mutation::Truncate(n) => bytes.truncate(n % len),
        Mutation::Insert(p, ref b) => {
            let p = p % len;
            bytes.splice(p..p, b.iter().copied());
        }
        Mutation::Remove(p, n) => {
            let p = p % len;
            bytes.drain(p..(p + n).min(len));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn writer_then_reader_round_trips(spec in arb_file(12, 6)) {
        let (w, datas) = build(&spec);
        let bytes = to_bytes(&w);
        let g = Gguf::from_bytes(bytes.clone()).unwrap();
        prop_assert_eq!(g.version(), spec.version);
        prop_assert_eq!(g.alignment(), u64::from(spec.alignment.unwrap_or(32)));
        // Metadata: same keys, order and values (Debug compares NaNs too;
        // the byte-identical rewrite below pins NaN payloads).
        let mut expected: Vec<(String, Value)> = spec.kvs.clone();
        if let Some(a) = spec.alignment {
            expected.push(("general.alignment".into(), Value::U32(a)));
        }
        prop_assert_eq!(format!("{:?}", g.metadata()), format!("{expected:?}"));
        for (k, v) in &expected {
            prop_assert_eq!(format!("{:?}", g.get(k)), format!("{:?}", Some(v)));
        }
        prop_assert_eq!(g.tensors().len(), spec.tensors.len());
        for ((t, s), data) in g.tensors().iter().zip(&spec.tensors).zip(&datas) {
            prop_assert_eq!(&t.name, &s.name);
            prop_assert_eq!(&t.dims, &s.dims);
            prop_assert_eq!(t.ggml_type, s.ty);
            prop_assert_eq!(t.offset % g.alignment(), 0);
            prop_assert_eq!(g.tensor_data(t), &data[..]);
            prop_assert_eq!(g.tensor(&t.name), Some(t));
        }
        prop_assert!(rewrite(&g) == bytes, "rewrite differs");
    }

    #[test]
    fn every_truncation_fails_cleanly(spec in arb_file(5, 3)) {
        let (w, _) = build(&spec);
        let bytes = to_bytes(&w);
        let g = Gguf::from_bytes(bytes.clone()).unwrap();
        // Any cut before the end of the last tensor's data is an error.
        let needed = g
            .tensors()
            .last()
            .map(|t| g.data_offset() + t.offset + t.n_bytes)
            .unwrap_or(g.data_offset()) as usize;
        // Every cut through the header and the first data bytes, then a
        // sample through the data, and the last bytes.
        let dense = (g.data_offset() as usize + 64).min(needed);
        let cuts = (0..dense)
            .chain((dense..needed).step_by(61))
            .chain(needed.saturating_sub(3)..needed);
        for cut in cuts {
            prop_assert!(Gguf::from_bytes(bytes[..cut].to_vec()).is_err(), "cut {}", cut);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_files_never_panic(
        spec in arb_file(6, 3),
        mutations in prop::collection::vec(arb_mutation(), 1..6),
    ) {
        let (w, _) = build(&spec);
        let mut bytes = to_bytes(&w);
        for m in &mutations {
            apply(&mut bytes, m);
        }
        match Gguf::from_bytes(bytes) {
            Ok(g) => {
                std::hint::black_box(touch_all(&g));
                // Whatever parses can be written back and parses again.
                let again = Gguf::from_bytes(rewrite(&g)).unwrap();
                prop_assert_eq!(again.tensors().len(), g.tensors().len());
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(!msg.contains('\n') && msg.starts_with("gguf: "), "{}", msg);
            }
        }
    }
}
