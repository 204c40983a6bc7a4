//! The committed corpus of malformed files (`tests/bad/*.gguf`) and small
//! valid files (`tests/good/*.gguf`, also fuzzing seeds), their generator,
//! and the test that every bad file fails with its specific error.
//!
//! Regenerate both directories after changing a case:
//!
//! ```text
//! ZETA_REGEN_CORPUS=1 cargo test -p zeta-gguf --test bad_corpus
//! ```
//!
//! Without the variable, the test checks that the committed files equal the
//! generator's output byte for byte, and that no unknown file lies in `bad/`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use zeta_gguf::{Array, GgmlType, Gguf, GgufError, GgufWriter, Value};

/// Little builder for raw (possibly malformed) GGUF bytes.
#[derive(Clone, Default)]
struct Raw(Vec<u8>);

const U8: u32 = 0;
const U32: u32 = 4;
const BOOL: u32 = 7;
const STRING: u32 = 8;
const ARRAY: u32 = 9;
const U64: u32 = 10;
const F32_T: u32 = 0; // ggml type id of F32
const Q4_0_T: u32 = 2;

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        Raw(b"GGUF".to_vec()).u32(version).u64(n_tensors).u64(n_kv)
    }
    fn bytes(mut self, b: &[u8]) -> Raw {
        self.0.extend_from_slice(b);
        self
    }
    fn u8(self, v: u8) -> Raw {
        self.bytes(&[v])
    }
    fn u32(self, v: u32) -> Raw {
        self.bytes(&v.to_le_bytes())
    }
    fn u64(self, v: u64) -> Raw {
        self.bytes(&v.to_le_bytes())
    }
    fn str_bytes(self, s: &[u8]) -> Raw {
        self.u64(s.len() as u64).bytes(s)
    }
    fn str(self, s: &str) -> Raw {
        self.str_bytes(s.as_bytes())
    }
    fn kv_u32(self, key: &str, v: u32) -> Raw {
        self.str(key).u32(U32).u32(v)
    }
    fn tensor(self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Raw {
        let mut r = self.str(name).u32(dims.len() as u32);
        for &d in dims {
            r = r.u64(d);
        }
        r.u32(ty).u64(offset)
    }
    fn pad(mut self, align: usize) -> Raw {
        while !self.0.len().is_multiple_of(align) {
            self.0.push(0);
        }
        self
    }
    fn zeros(mut self, n: usize) -> Raw {
        self.0.resize(self.0.len() + n, 0);
        self
    }
}

/// Header + one tensor info per entry (no metadata) + padding + `data` zero bytes.
fn tensors_file(tensors: &[(&str, &[u64], u32, u64)], data: usize) -> Vec<u8> {
    let mut r = Raw::header(3, tensors.len() as u64, 0);
    for &(name, dims, ty, off) in tensors {
        r = r.tensor(name, dims, ty, off);
    }
    r.pad(32).zeros(data).0
}

/// A file with one alignment key and one F32[4] tensor.
fn aligned_file(alignment_kv: Raw) -> Vec<u8> {
    let mut r = Raw::header(3, 1, 1).bytes(&alignment_kv.0);
    r = r.tensor("t", &[4], F32_T, 0);
    r.pad(64).zeros(64).0
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    check: fn(&GgufError) -> bool,
}

macro_rules! case {
    ($name:expr, $bytes:expr, $pat:pat) => {
        Case {
            name: $name,
            bytes: $bytes,
            check: |e| matches!(e, $pat),
        }
    };
}

fn bad_cases() -> Vec<Case> {
    use GgufError::*;
    let deep = {
        let mut r = Raw::header(3, 0, 1).str("deep").u32(ARRAY);
        for _ in 0..9 {
            r = r.u32(ARRAY).u64(1);
        }
        r.u32(U8).u64(0).0
    };
    vec![
        case!(
            "empty",
            vec![],
            Truncated {
                offset: 0,
                what: "magic",
                ..
            }
        ),
        case!(
            "bad_magic",
            Raw(b"GGUG".to_vec()).u32(3).u64(0).u64(0).0,
            BadMagic {
                found: [b'G', b'G', b'U', b'G']
            }
        ),
        case!(
            "magic_only",
            b"GGUF".to_vec(),
            Truncated {
                offset: 4,
                what: "version",
                ..
            }
        ),
        case!(
            "version_0",
            Raw::header(0, 0, 0).0,
            UnsupportedVersion { version: 0 }
        ),
        case!(
            "version_1",
            Raw::header(1, 0, 0).0,
            UnsupportedVersion { version: 1 }
        ),
        case!(
            "version_4",
            Raw::header(4, 0, 0).0,
            UnsupportedVersion { version: 4 }
        ),
        case!(
            "version_big_endian",
            Raw::header(0x0300_0000, 0, 0).0,
            UnsupportedVersion {
                version: 0x0300_0000
            }
        ),
        case!(
            "truncated_counts",
            Raw(b"GGUF".to_vec()).u32(3).u64(0).u32(0).0,
            Truncated {
                offset: 16,
                what: "metadata count",
                ..
            }
        ),
        case!(
            "tensor_count_huge",
            Raw::header(3, u64::MAX, 0).0,
            CountTooLarge {
                offset: 8,
                what: "tensor",
                ..
            }
        ),
        case!(
            "kv_count_huge",
            Raw::header(3, 0, 1 << 40).zeros(100).0,
            CountTooLarge {
                offset: 16,
                what: "metadata key/value",
                ..
            }
        ),
        case!(
            "truncated_kv_value",
            Raw::header(3, 0, 1).str("key").u32(U64).u32(0).0,
            Truncated {
                offset: 39,
                what: "metadata value",
                ..
            }
        ),
        case!(
            "key_len_past_end",
            Raw::header(3, 0, 1).u64(1000).zeros(10).0,
            StringTooLong {
                offset: 24,
                len: 1000,
                remaining: 10
            }
        ),
        case!(
            "key_len_u64_max",
            Raw::header(3, 0, 1).u64(u64::MAX).zeros(10).0,
            StringTooLong { len: u64::MAX, .. }
        ),
        case!(
            "string_value_past_end",
            Raw::header(3, 0, 1)
                .str("k")
                .u32(STRING)
                .u64(500)
                .bytes(b"abc")
                .0,
            StringTooLong {
                offset: 37,
                len: 500,
                remaining: 3
            }
        ),
        case!(
            "array_len_past_end",
            Raw::header(3, 0, 1)
                .str("k")
                .u32(ARRAY)
                .u32(U32)
                .u64(1000)
                .zeros(8)
                .0,
            ArrayTooLong {
                offset: 37,
                len: 1000,
                elem: "u32",
                ..
            }
        ),
        case!(
            "string_array_len_past_end",
            Raw::header(3, 0, 1)
                .str("k")
                .u32(ARRAY)
                .u32(STRING)
                .u64(10)
                .zeros(40)
                .0,
            ArrayTooLong {
                len: 10,
                elem: "string",
                min_elem_size: 8,
                remaining: 40,
                ..
            }
        ),
        case!(
            "array_count_u64_max",
            Raw::header(3, 0, 1)
                .str("k")
                .u32(ARRAY)
                .u32(U8)
                .u64(u64::MAX)
                .zeros(8)
                .0,
            ArrayTooLong { len: u64::MAX, .. }
        ),
        case!(
            "array_of_arrays_len_past_end",
            Raw::header(3, 0, 1)
                .str("k")
                .u32(ARRAY)
                .u32(ARRAY)
                .u64(3)
                .u32(U8)
                .u64(0)
                .0,
            ArrayTooLong {
                elem: "array",
                len: 3,
                ..
            }
        ),
        case!(
            "nesting_too_deep",
            deep,
            NestingTooDeep {
                depth: 9,
                limit: 8,
                ..
            }
        ),
        case!(
            "unknown_value_type",
            Raw::header(3, 0, 1).str("k").u32(13).u32(0).0,
            UnknownValueType { offset: 33, id: 13 }
        ),
        case!(
            "unknown_value_type_max",
            Raw::header(3, 0, 1).str("k").u32(u32::MAX).u32(0).0,
            UnknownValueType { id: u32::MAX, .. }
        ),
        case!(
            "unknown_array_elem_type",
            Raw::header(3, 0, 1)
                .str("k")
                .u32(ARRAY)
                .u32(200)
                .u64(1)
                .zeros(8)
                .0,
            UnknownValueType {
                offset: 37,
                id: 200
            }
        ),
        case!(
            "invalid_bool",
            Raw::header(3, 0, 1).str("k").u32(BOOL).u8(2).0,
            InvalidBool {
                offset: 37,
                byte: 2
            }
        ),
        case!(
            "invalid_bool_in_array",
            Raw::header(3, 0, 1)
                .str("k")
                .u32(ARRAY)
                .u32(BOOL)
                .u64(3)
                .bytes(&[1, 0, 7])
                .0,
            InvalidBool {
                offset: 51,
                byte: 7
            }
        ),
        case!(
            "invalid_utf8_key",
            Raw::header(3, 0, 1)
                .str_bytes(&[b'a', 0xff, 0xfe])
                .u32(U8)
                .u8(0)
                .0,
            InvalidUtf8 {
                offset: 24,
                valid_up_to: 1
            }
        ),
        case!(
            "invalid_utf8_value",
            Raw::header(3, 0, 1)
                .str("k")
                .u32(STRING)
                .str_bytes(b"ab\xc3")
                .0,
            InvalidUtf8 {
                offset: 37,
                valid_up_to: 2
            }
        ),
        case!(
            "invalid_utf8_tensor_name",
            {
                let mut r = Raw::header(3, 1, 0).str_bytes(b"\xc0\x80").u32(1).u64(4);
                r = r.u32(F32_T).u64(0);
                r.pad(32).zeros(16).0
            },
            InvalidUtf8 {
                offset: 24,
                valid_up_to: 0
            }
        ),
        case!(
            "empty_key",
            Raw::header(3, 0, 1).str("").u32(U8).u8(0).zeros(8).0,
            EmptyKey { offset: Some(24) }
        ),
        case!(
            "duplicate_key",
            Raw::header(3, 0, 2).kv_u32("k", 1).kv_u32("k", 2).0,
            DuplicateKey { offset: 41, .. }
        ),
        case!(
            "alignment_zero",
            aligned_file(Raw::default().kv_u32("general.alignment", 0)),
            BadAlignment { alignment: 0, .. }
        ),
        case!(
            "alignment_not_power_of_two",
            aligned_file(Raw::default().kv_u32("general.alignment", 48)),
            BadAlignment { alignment: 48, .. }
        ),
        case!(
            "alignment_too_large",
            aligned_file(Raw::default().kv_u32("general.alignment", 1 << 21)),
            BadAlignment {
                alignment: 2097152,
                ..
            }
        ),
        case!(
            "alignment_wrong_type",
            aligned_file(Raw::default().str("general.alignment").u32(U64).u64(32)),
            WrongType {
                expected: "u32",
                found: "u64",
                ..
            }
        ),
        case!(
            "empty_tensor_name",
            tensors_file(&[("", &[4], F32_T, 0)], 16),
            EmptyTensorName { offset: Some(24) }
        ),
        case!(
            "tensor_name_too_long",
            tensors_file(&[(&"n".repeat(64), &[4], F32_T, 0)], 16),
            TensorNameTooLong {
                len: 64,
                limit: 63,
                ..
            }
        ),
        case!(
            "duplicate_tensor",
            tensors_file(&[("t", &[4], F32_T, 0), ("t", &[4], F32_T, 32)], 64),
            DuplicateTensor { .. }
        ),
        case!(
            "zero_n_dims",
            tensors_file(&[("t", &[], F32_T, 0)], 16),
            BadDims { n_dims: 0, .. }
        ),
        case!(
            "five_dims",
            tensors_file(&[("t", &[1, 1, 1, 1, 1], F32_T, 0)], 16),
            BadDims { n_dims: 5, .. }
        ),
        case!(
            "zero_dim",
            tensors_file(&[("t", &[4, 0, 2], F32_T, 0)], 16),
            ZeroDim { index: 1, .. }
        ),
        case!(
            "dim_product_overflow",
            tensors_file(&[("t", &[1 << 32, 1 << 32], F32_T, 0)], 16),
            DimOverflow { .. }
        ),
        case!(
            "dim_above_i64_max",
            tensors_file(&[("t", &[1 << 63], 24, 0)], 16),
            DimOverflow { .. }
        ),
        case!(
            "bytes_overflow",
            tensors_file(&[("t", &[1 << 62], F32_T, 0)], 16),
            DimOverflow { .. }
        ),
        case!(
            "unknown_ggml_type_removed",
            tensors_file(&[("t", &[32], 4, 0)], 32),
            UnknownGgmlType {
                id: 4,
                offset: 45,
                ..
            }
        ),
        case!(
            "unknown_ggml_type_large",
            tensors_file(&[("t", &[32], 1000, 0)], 32),
            UnknownGgmlType { id: 1000, .. }
        ),
        case!(
            "row_not_block_multiple",
            tensors_file(&[("t", &[33, 2], Q4_0_T, 0)], 64),
            RowNotBlockMultiple {
                row_len: 33,
                block_size: 32,
                ..
            }
        ),
        case!(
            "misaligned_offset",
            tensors_file(&[("a", &[4], F32_T, 0), ("b", &[4], F32_T, 16)], 64),
            MisalignedOffset {
                offset: 16,
                alignment: 32,
                ..
            }
        ),
        case!(
            "overlapping_tensors",
            tensors_file(&[("a", &[16], F32_T, 0), ("b", &[4], F32_T, 32)], 96),
            OverlappingTensors {
                offset: 32,
                previous_end: 64,
                ..
            }
        ),
        case!(
            "out_of_order_tensors",
            tensors_file(&[("a", &[4], F32_T, 32), ("b", &[4], F32_T, 0)], 64),
            OverlappingTensors {
                offset: 0,
                previous_end: 48,
                ..
            }
        ),
        case!(
            "tensor_data_past_end",
            tensors_file(&[("t", &[4], F32_T, 0)], 8),
            TensorOutOfBounds {
                start: 64,
                n_bytes: 16,
                file_len: 72,
                ..
            }
        ),
        case!(
            "tensor_offset_huge",
            tensors_file(&[("t", &[4], F32_T, !31u64)], 16),
            TensorOutOfBounds { .. }
        ),
        case!(
            "truncated_before_data",
            Raw::header(3, 1, 0).tensor("t", &[4], F32_T, 0).0,
            Truncated {
                offset: 57,
                what: "padding before tensor data",
                ..
            }
        ),
        case!(
            "truncated_tensor_info",
            Raw::header(3, 1, 0).str(&"t".repeat(20)).u32(1).u64(4).0,
            Truncated {
                offset: 64,
                what: "tensor type",
                ..
            }
        ),
    ]
}

fn good_cases() -> Vec<(&'static str, Vec<u8>)> {
    fn bytes(w: &GgufWriter) -> Vec<u8> {
        let mut v = Vec::new();
        w.write_to(&mut v).unwrap();
        v
    }
    let mut small = GgufWriter::new();
    small
        .add_kv("general.architecture", Value::String("llama".into()))
        .add_kv("u8", Value::U8(1))
        .add_kv("i8", Value::I8(-1))
        .add_kv("u16", Value::U16(2))
        .add_kv("i16", Value::I16(-2))
        .add_kv("u32", Value::U32(3))
        .add_kv("i32", Value::I32(-3))
        .add_kv("f32", Value::F32(0.5))
        .add_kv("bool", Value::Bool(true))
        .add_kv("u64", Value::U64(4))
        .add_kv("i64", Value::I64(-4))
        .add_kv("f64", Value::F64(-0.5))
        .add_kv(
            "tokens",
            Value::Array(Array::String(vec!["a".into(), "é".into()])),
        )
        .add_kv("scores", Value::Array(Array::F32(vec![0.0, -1.0])))
        .add_kv("types", Value::Array(Array::I32(vec![1, 2])));
    small
        .add_tensor("f32", &[4, 2], GgmlType::F32, (0..32).collect())
        .unwrap();
    small
        .add_tensor("q4_0", &[32], GgmlType::Q4_0, vec![1; 18])
        .unwrap();
    small
        .add_tensor("q4_k", &[256], GgmlType::Q4_K, vec![2; 144])
        .unwrap();

    let mut v2 = small.clone().with_version(2);
    v2.add_kv("general.alignment", Value::U32(64));

    let mut deep = Array::U8(vec![7]);
    for _ in 0..7 {
        deep = Array::Array(vec![deep, Array::Bool(vec![])]);
    }
    let mut nested = GgufWriter::new();
    nested.add_kv("deep", Value::Array(deep));
    nested
        .add_tensor("x", &[1, 1, 1, 1], GgmlType::I8, vec![9])
        .unwrap();

    vec![
        ("minimal", bytes(&GgufWriter::new())),
        ("small_v3", bytes(&small)),
        ("small_v2_align64", bytes(&v2)),
        ("nested_depth8", bytes(&nested)),
    ]
}

fn corpus_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(sub)
}

fn regen() -> bool {
    std::env::var("ZETA_REGEN_CORPUS").as_deref() == Ok("1")
}

fn committed(dir: &Path, name: &str, bytes: &[u8]) -> Vec<u8> {
    let path = dir.join(format!("{name}.gguf"));
    if regen() {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&path, bytes).unwrap();
    }
    let on_disk = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; regenerate with ZETA_REGEN_CORPUS=1",
            path.display()
        )
    });
    assert!(
        on_disk == bytes,
        "{} is stale; regenerate with ZETA_REGEN_CORPUS=1",
        path.display()
    );
    on_disk
}

#[test]
fn bad_files_fail_with_their_specific_error() {
    let dir = corpus_dir("bad");
    let cases = bad_cases();
    assert!(cases.len() >= 25);
    let mut names = BTreeSet::new();
    let mut variants = BTreeSet::new();
    for case in &cases {
        assert!(names.insert(case.name), "duplicate case {}", case.name);
        let bytes = committed(&dir, case.name, &case.bytes);
        let err = Gguf::from_bytes(bytes).expect_err(case.name);
        assert!(
            (case.check)(&err),
            "{}: unexpected error {err:?}",
            case.name
        );
        let msg = err.to_string();
        assert!(!msg.contains('\n') && msg.starts_with("gguf: "), "{msg}");
        // The memory-mapped path reports the same error.
        let err2 = Gguf::open(dir.join(format!("{}.gguf", case.name))).expect_err(case.name);
        assert_eq!(err2.to_string(), msg);
        variants.insert(
            format!("{err:?}")
                .split([' ', '('])
                .next()
                .unwrap_or("")
                .to_owned(),
        );
        // A case must not also match the other cases' patterns by accident
        // (each asserts a distinct condition); at least check it isn't a bare I/O error.
        assert!(!matches!(err, GgufError::Io(_) | GgufError::File { .. }));
    }
    assert!(
        variants.len() >= 25,
        "only {} distinct variants: {variants:?}",
        variants.len()
    );
    // Every committed bad file is a known case.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
        assert!(
            names.contains(stem.as_str()),
            "unknown file in tests/bad: {}",
            p.display()
        );
    }
}

#[test]
fn good_files_parse() {
    let dir = corpus_dir("good");
    for (name, bytes) in good_cases() {
        let bytes = committed(&dir, name, &bytes);
        let g = Gguf::from_bytes(bytes).unwrap();
        for t in g.tensors() {
            assert_eq!(g.tensor_data(t).len() as u64, t.n_bytes);
        }
    }
    let g = Gguf::open(dir.join("small_v2_align64.gguf")).unwrap();
    assert_eq!((g.version(), g.alignment()), (2, 64));
    assert_eq!(g.tensor_data_by_name("q4_k").unwrap(), &[2; 144][..]);
}
