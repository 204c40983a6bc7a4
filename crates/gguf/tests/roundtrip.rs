//! Writer → reader round trips, typed accessors, alignment, streaming and
//! atomic file writes.
#![allow(clippy::unwrap_used)]

use zeta_gguf::{Array, GgmlType, Gguf, GgufError, GgufWriter, TensorInfo, Value};

fn write(w: &GgufWriter) -> Vec<u8> {
    let mut out = Vec::new();
    w.write_to(&mut out).unwrap();
    out
}

fn sample_writer() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", Value::String("llama".into()))
        .add_kv("a.u8", Value::U8(200))
        .add_kv("a.i8", Value::I8(-5))
        .add_kv("a.u16", Value::U16(60000))
        .add_kv("a.i16", Value::I16(-30000))
        .add_kv("a.u32", Value::U32(4_000_000_000))
        .add_kv("a.i32", Value::I32(-7))
        .add_kv("a.f32", Value::F32(1.5))
        .add_kv("a.bool", Value::Bool(true))
        .add_kv("a.u64", Value::U64(u64::MAX))
        .add_kv("a.i64", Value::I64(i64::MIN))
        .add_kv("a.f64", Value::F64(0.25))
        .add_kv(
            "a.strings",
            Value::Array(Array::String(vec![
                "héllo".into(),
                String::new(),
                "🦀".into(),
            ])),
        )
        .add_kv(
            "a.nested",
            Value::Array(Array::Array(vec![
                Array::I32(vec![1, 2, 3]),
                Array::String(vec!["x".into()]),
                Array::Array(vec![Array::Bool(vec![true, false])]),
                Array::F64(vec![]),
            ])),
        );
    w.add_tensor("t.f32", &[3, 2], GgmlType::F32, (0..24).collect())
        .unwrap();
    w.add_tensor("t.q4_0", &[64], GgmlType::Q4_0, vec![7; 36])
        .unwrap();
    w.add_tensor("t.q6_k", &[256, 1, 2], GgmlType::Q6_K, vec![9; 420])
        .unwrap();
    w
}

#[test]
fn round_trip_metadata_and_tensors() {
    for version in [2, 3] {
        let w = sample_writer().with_version(version);
        let bytes = write(&w);
        let g = Gguf::from_bytes(bytes.clone()).unwrap();
        assert_eq!(g.version(), version);
        assert_eq!(g.alignment(), 32);
        assert_eq!(g.data_offset() % 32, 0);
        assert_eq!(g.metadata().len(), 14);
        assert_eq!(g.metadata()[0].0, "general.architecture");
        assert_eq!(g.get_str("general.architecture").unwrap(), "llama");
        assert_eq!(g.get_u32("a.u8").unwrap(), 200);
        assert_eq!(g.get_i64("a.i8").unwrap(), -5);
        assert_eq!(g.get_u32("a.u32").unwrap(), 4_000_000_000);
        assert_eq!(g.get_u64("a.u64").unwrap(), u64::MAX);
        assert_eq!(g.get_i64("a.i64").unwrap(), i64::MIN);
        assert_eq!(g.get_f32("a.f32").unwrap(), 1.5);
        assert_eq!(g.get_f32("a.f64").unwrap(), 0.25);
        assert!(g.get_bool("a.bool").unwrap());
        let s = g.get_array("a.strings").unwrap();
        assert_eq!(s.type_name(), "string");
        assert_eq!(s.as_strings().unwrap()[2], "🦀");
        let n = g.get_array("a.nested").unwrap().as_arrays().unwrap();
        assert_eq!(n[0].as_i32().unwrap(), &[1, 2, 3]);
        assert_eq!(
            n[2].as_arrays().unwrap()[0].as_bools().unwrap(),
            &[true, false]
        );
        assert!(n[3].is_empty());

        let ts = g.tensors();
        assert_eq!(ts.len(), 3);
        assert_eq!(ts[0].name, "t.f32");
        assert_eq!(ts[0].offset, 0);
        assert_eq!(
            (ts[0].n_elements(), ts[0].n_rows(), ts[0].row_len()),
            (6, 2, 3)
        );
        assert_eq!(ts[1].offset, 32);
        assert_eq!(ts[1].n_bytes, 36);
        assert_eq!(ts[2].offset, 96);
        assert_eq!(ts[2].n_rows(), 2);
        assert_eq!(ts[2].row_bytes(), 210);
        assert_eq!(g.tensor_data(&ts[0]), (0..24).collect::<Vec<u8>>());
        assert_eq!(g.tensor_data_by_name("t.q4_0").unwrap(), &[7; 36][..]);
        assert_eq!(g.tensor_data(g.tensor("t.q6_k").unwrap()), &[9; 420][..]);
        // In-memory data is aligned like a memory map.
        assert_eq!(g.tensor_data(&ts[2]).as_ptr() as usize % 32, 0);

        // Rewriting the parsed file reproduces it byte for byte.
        let mut w2 = GgufWriter::new().with_version(version);
        for (k, v) in g.metadata() {
            w2.add_kv(k.clone(), v.clone());
        }
        for t in g.tensors() {
            w2.add_tensor(&t.name, &t.dims, t.ggml_type, g.tensor_data(t).to_vec())
                .unwrap();
        }
        assert_eq!(write(&w2), bytes);
    }
}

#[test]
fn accessor_errors() {
    let g = Gguf::from_bytes(write(&sample_writer())).unwrap();
    assert!(matches!(g.get_u32("nope"), Err(GgufError::MissingKey { key }) if key == "nope"));
    assert!(matches!(
        g.get_u32("general.architecture"),
        Err(GgufError::WrongType {
            expected: "u32",
            found: "string",
            ..
        })
    ));
    assert!(matches!(
        g.get_u32("a.u64"),
        Err(GgufError::OutOfRange { .. })
    ));
    assert!(matches!(
        g.get_u64("a.i8"),
        Err(GgufError::OutOfRange { value: -5, .. })
    ));
    assert!(matches!(
        g.get_i64("a.u64"),
        Err(GgufError::OutOfRange { .. })
    ));
    assert!(matches!(
        g.get_f32("a.u8"),
        Err(GgufError::WrongType { .. })
    ));
    assert!(matches!(
        g.get_bool("a.u8"),
        Err(GgufError::WrongType { .. })
    ));
    assert!(matches!(
        g.get_str("a.bool"),
        Err(GgufError::WrongType { .. })
    ));
    assert!(matches!(
        g.get_array("a.f32"),
        Err(GgufError::WrongType { .. })
    ));
    assert!(matches!(
        g.tensor_data_by_name("missing"),
        Err(GgufError::MissingTensor { .. })
    ));
    assert!(g.tensor("missing").is_none());
    // A foreign TensorInfo that does not fit yields an empty slice, not a panic.
    let foreign = TensorInfo {
        name: "x".into(),
        dims: vec![4],
        ggml_type: GgmlType::F32,
        offset: u64::MAX - 3,
        n_bytes: 16,
    };
    assert!(g.tensor_data(&foreign).is_empty());
    // Every error message is one line.
    let e = g.get_u32("a.u64").unwrap_err().to_string();
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn value_helpers() {
    assert_eq!(Value::I32(-1).as_u64(), None);
    assert_eq!(Value::I32(7).as_u64(), Some(7));
    assert_eq!(Value::U64(u64::MAX).as_i64(), None);
    assert_eq!(Value::F32(2.0).as_f64(), Some(2.0));
    assert_eq!(Value::U8(1).as_f64(), None);
    assert_eq!(Value::Bool(true).as_bool(), Some(true));
    assert_eq!(Value::String("s".into()).as_str(), Some("s"));
    assert_eq!(Value::Array(Array::U8(vec![])).type_name(), "array");
    assert_eq!(Array::U16(vec![1, 2]).len(), 2);
    assert_eq!(Array::U16(vec![1, 2]).type_name(), "u16");
    assert!(Array::U16(vec![1]).as_u32().is_none());
}

#[test]
fn custom_alignment_is_honoured() {
    let mut w = GgufWriter::new();
    w.add_tensor("a", &[3], GgmlType::F32, vec![1; 12]).unwrap();
    w.add_tensor("b", &[5], GgmlType::I8, vec![2; 5]).unwrap();
    // Set after the tensors: offsets follow the final alignment.
    w.add_kv("general.alignment", Value::U32(256));
    let infos = w.tensor_infos().unwrap();
    assert_eq!(infos[1].offset, 256);
    let bytes = write(&w);
    let g = Gguf::from_bytes(bytes.clone()).unwrap();
    assert_eq!(g.alignment(), 256);
    assert_eq!(g.data_offset() % 256, 0);
    assert_eq!(g.tensors()[1].offset, 256);
    assert_eq!(g.tensor_data(&g.tensors()[1]), &[2; 5][..]);
    // ggml pads after the last tensor too.
    assert_eq!(bytes.len() as u64, g.data_offset() + 512);

    let mut bad = GgufWriter::new();
    bad.add_kv("general.alignment", Value::U32(3));
    assert!(matches!(
        bad.write_to(&mut Vec::new()),
        Err(GgufError::BadAlignment { alignment: 3, .. })
    ));
    bad.add_kv("general.alignment", Value::U64(32));
    assert!(matches!(
        bad.write_to(&mut Vec::new()),
        Err(GgufError::WrongType { .. })
    ));
}

#[test]
fn no_tensors_and_no_metadata() {
    let g = Gguf::from_bytes(write(&GgufWriter::new())).unwrap();
    assert!(g.metadata().is_empty());
    assert!(g.tensors().is_empty());
    assert_eq!(g.data_offset(), 24);
}

#[test]
fn writer_rejects_bad_input() {
    let mut w = GgufWriter::new();
    assert!(matches!(
        w.add_tensor("", &[4], GgmlType::F32, vec![0; 16]),
        Err(GgufError::EmptyTensorName { offset: None })
    ));
    assert!(matches!(
        w.add_tensor("x", &[4], GgmlType::F32, vec![0; 15]),
        Err(GgufError::DataSizeMismatch {
            expected: 16,
            got: 15,
            ..
        })
    ));
    assert!(matches!(
        w.add_tensor("x", &[], GgmlType::F32, vec![]),
        Err(GgufError::BadDims { n_dims: 0, .. })
    ));
    assert!(matches!(
        w.add_tensor("x", &[1, 1, 1, 1, 1], GgmlType::F32, vec![0; 4]),
        Err(GgufError::BadDims { n_dims: 5, .. })
    ));
    assert!(matches!(
        w.add_tensor_info("x", &[4, 0], GgmlType::F32),
        Err(GgufError::ZeroDim { index: 1, .. })
    ));
    assert!(matches!(
        w.add_tensor_info("x", &[33], GgmlType::Q4_0),
        Err(GgufError::RowNotBlockMultiple { .. })
    ));
    assert!(matches!(
        w.add_tensor_info("x", &[1 << 62, 4], GgmlType::F32),
        Err(GgufError::DimOverflow { .. })
    ));
    assert!(matches!(
        w.add_tensor_info("x".repeat(64), &[1], GgmlType::F32),
        Err(GgufError::TensorNameTooLong { len: 64, .. })
    ));
    w.add_tensor_info("x".repeat(63), &[1], GgmlType::F32)
        .unwrap();
    assert!(matches!(
        w.add_tensor_info("x".repeat(63), &[1], GgmlType::F32),
        Err(GgufError::DuplicateTensor { .. })
    ));
    assert!(matches!(
        w.write_to(&mut Vec::new()),
        Err(GgufError::MissingTensorData { .. })
    ));
    assert!(matches!(
        GgufWriter::new().with_version(1).write_to(&mut Vec::new()),
        Err(GgufError::UnsupportedVersion { version: 1 })
    ));
    let mut e = GgufWriter::new();
    e.add_kv("", Value::U8(0));
    assert!(matches!(
        e.write_to(&mut Vec::new()),
        Err(GgufError::EmptyKey { offset: None })
    ));
    let mut deep = Array::U8(vec![1]);
    for _ in 0..8 {
        deep = Array::Array(vec![deep]);
    }
    let mut d = GgufWriter::new();
    d.add_kv("deep", Value::Array(deep));
    assert!(matches!(
        d.write_to(&mut Vec::new()),
        Err(GgufError::NestingTooDeep { .. })
    ));
}

#[test]
fn add_kv_replaces_in_place() {
    let mut w = GgufWriter::new();
    w.add_kv("a", Value::U8(1))
        .add_kv("b", Value::U8(2))
        .add_kv("a", Value::U8(3));
    let g = Gguf::from_bytes(write(&w)).unwrap();
    assert_eq!(g.metadata().len(), 2);
    assert_eq!(g.metadata()[0], ("a".to_string(), Value::U8(3)));
}

#[test]
fn streaming_write() {
    let mut w = GgufWriter::new();
    w.add_tensor_info("big", &[1024, 300], GgmlType::F16)
        .unwrap();
    w.add_tensor("small", &[2], GgmlType::F32, vec![5; 8])
        .unwrap();
    w.add_tensor_info("q", &[512, 3], GgmlType::Q8_0).unwrap();
    let mut calls = Vec::new();
    let mut out = Vec::new();
    w.write_streaming(&mut out, &mut |i, info, sink| {
        calls.push(i);
        // Write in uneven chunks, content derived from the tensor index.
        let mut left = info.n_bytes as usize;
        while left > 0 {
            let n = left.min(1000);
            sink.write_all(&vec![i as u8 + 1; n])?;
            left -= n;
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(calls, vec![0, 2]);
    let g = Gguf::from_bytes(out).unwrap();
    let big = g.tensor_data_by_name("big").unwrap();
    assert_eq!(big.len(), 1024 * 300 * 2);
    assert!(big.iter().all(|&b| b == 1));
    assert_eq!(g.tensor_data_by_name("small").unwrap(), &[5; 8][..]);
    let q = g.tensor_data_by_name("q").unwrap();
    assert_eq!(q.len(), 16 * 34 * 3);
    assert!(q.iter().all(|&b| b == 3));

    // Too little and too much data are both errors.
    for delta in [-1i64, 1] {
        let r = w.write_streaming(&mut Vec::new(), &mut |_, info, sink| {
            sink.write_all(&vec![0; (info.n_bytes as i64 + delta) as usize])
        });
        assert!(
            matches!(r, Err(GgufError::DataSizeMismatch { ref tensor, .. }) if tensor == "big"),
            "{r:?}"
        );
    }
    // Callback I/O errors propagate.
    let r = w.write_streaming(&mut Vec::new(), &mut |_, _, _| {
        Err(std::io::Error::other("boom"))
    });
    assert!(matches!(r, Err(GgufError::Io(e)) if e.to_string() == "boom"));
}

#[test]
fn write_file_is_atomic_and_readable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    std::fs::write(&path, b"old contents").unwrap();
    let w = sample_writer();
    w.write_file(&path).unwrap();
    let g = Gguf::open(&path).unwrap();
    assert_eq!(g.tensors().len(), 3);
    assert_eq!(g.as_bytes(), &write(&w)[..]);
    // A failing write leaves the old file and no temporary behind.
    let mut s = GgufWriter::new();
    s.add_tensor_info("x", &[4], GgmlType::F32).unwrap();
    let r = s.write_file_streaming(&path, &mut |_, _, sink| sink.write_all(&[0; 3]));
    assert!(r.is_err());
    assert!(Gguf::open(&path).is_ok());
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("m.gguf")]);
    // Streaming to a file.
    s.write_file_streaming(&path, &mut |_, _, sink| sink.write_all(&[1; 16]))
        .unwrap();
    assert_eq!(
        Gguf::open(&path).unwrap().tensor_data_by_name("x").unwrap(),
        &[1; 16][..]
    );
    assert!(matches!(
        Gguf::open(dir.path().join("missing.gguf")),
        Err(GgufError::File { .. })
    ));
    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        Gguf::open(&empty),
        Err(GgufError::Truncated { .. })
    ));
}
