//! [`GgufError`]: every way reading or writing a GGUF file can fail.
//!
//! Reader errors name what is wrong and where: `offset` fields are absolute
//! byte offsets into the file, `tensor` fields are tensor names. Every
//! `Display` message is a single line.

use std::path::PathBuf;

use crate::types::GgmlType;

/// Errors from reading, querying or writing GGUF files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// An I/O error while reading or writing a stream.
    #[error("gguf: I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// An I/O error on a named file (open, map, create, rename).
    #[error("gguf: I/O error on {}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The first four bytes are not `GGUF`.
    #[error(
        "gguf: bad magic {} at offset 0 (expected \"GGUF\")",
        show_magic(found)
    )]
    BadMagic { found: [u8; 4] },

    /// A version other than 2 or 3 (v1 used 32-bit counts and is not supported).
    #[error("gguf: unsupported GGUF version {version} at offset 4 (supported: 2, 3)")]
    UnsupportedVersion { version: u32 },

    /// The file ends before a field it must contain.
    #[error(
        "gguf: truncated: {what} at offset {offset} needs {needed} bytes but only {available} remain"
    )]
    Truncated {
        offset: u64,
        needed: u64,
        available: u64,
        what: &'static str,
    },

    /// A tensor or key/value count that the remaining bytes cannot possibly hold.
    #[error(
        "gguf: {what} count {count} at offset {offset} is impossible: the {remaining} remaining bytes hold at most {max}"
    )]
    CountTooLarge {
        offset: u64,
        what: &'static str,
        count: u64,
        remaining: u64,
        max: u64,
    },

    /// A string whose length runs past the end of the file.
    #[error("gguf: string at offset {offset} has length {len} but only {remaining} bytes remain")]
    StringTooLong {
        offset: u64,
        len: u64,
        remaining: u64,
    },

    /// An array whose element count runs past the end of the file.
    #[error(
        "gguf: array at offset {offset} has {len} elements of type {elem} (at least {min_elem_size} bytes each) but only {remaining} bytes remain"
    )]
    ArrayTooLong {
        offset: u64,
        len: u64,
        elem: &'static str,
        min_elem_size: u64,
        remaining: u64,
    },

    /// Arrays nested deeper than [`crate::MAX_ARRAY_DEPTH`].
    #[error("gguf: array at offset {offset} is nested {depth} deep (limit {limit})")]
    NestingTooDeep { offset: u64, depth: u32, limit: u32 },

    /// A metadata value type id outside 0..=12.
    #[error("gguf: unknown metadata value type {id} at offset {offset}")]
    UnknownValueType { offset: u64, id: u32 },

    /// A bool byte other than 0 or 1.
    #[error("gguf: invalid bool byte {byte} at offset {offset} (expected 0 or 1)")]
    InvalidBool { offset: u64, byte: u8 },

    /// A string (key, value or tensor name) that is not valid UTF-8.
    #[error(
        "gguf: string at offset {offset} is not valid UTF-8 (first bad byte at string index {valid_up_to})"
    )]
    InvalidUtf8 { offset: u64, valid_up_to: u64 },

    /// A metadata key of length zero (`offset` is `None` when it came from the writer).
    #[error("gguf: empty metadata key{}", at(offset))]
    EmptyKey { offset: Option<u64> },

    /// The same metadata key twice.
    #[error("gguf: duplicate metadata key {key:?} at offset {offset}")]
    DuplicateKey { offset: u64, key: String },

    /// A tensor name of length zero (`offset` is `None` when it came from the writer).
    #[error("gguf: empty tensor name{}", at(offset))]
    EmptyTensorName { offset: Option<u64> },

    /// A tensor name of 64 bytes or more (ggml's `GGML_MAX_NAME` limit).
    #[error("gguf: tensor name {name:?} is {len} bytes long (limit {limit})")]
    TensorNameTooLong { name: String, len: u64, limit: u64 },

    /// The same tensor name twice.
    #[error("gguf: duplicate tensor name {name:?}")]
    DuplicateTensor { name: String },

    /// A dimension count outside 1..=4.
    #[error("gguf: tensor {tensor:?} has {n_dims} dimensions (must be 1 to 4)")]
    BadDims { tensor: String, n_dims: u64 },

    /// A dimension of size zero.
    #[error("gguf: tensor {tensor:?} dimension {index} is zero")]
    ZeroDim { tensor: String, index: u32 },

    /// A shape whose element count (or byte size) exceeds `i64::MAX`.
    #[error("gguf: tensor {tensor:?} shape {dims:?} overflows (elements or bytes exceed i64::MAX)")]
    DimOverflow { tensor: String, dims: Vec<u64> },

    /// A ggml type id that is unknown or removed.
    #[error("gguf: tensor {tensor:?} has unknown ggml type id {id} at offset {offset}")]
    UnknownGgmlType {
        tensor: String,
        id: u32,
        offset: u64,
    },

    /// A row length (`dims[0]`) that is not a multiple of the type's block size.
    #[error(
        "gguf: tensor {tensor:?} of type {ty} has row length {row_len}, not a multiple of the block size {block_size}"
    )]
    RowNotBlockMultiple {
        tensor: String,
        ty: GgmlType,
        row_len: u64,
        block_size: u64,
    },

    /// `general.alignment` is zero, not a power of two, or larger than [`crate::MAX_ALIGNMENT`].
    #[error("gguf: bad general.alignment {alignment}: {reason}")]
    BadAlignment {
        alignment: u64,
        reason: &'static str,
    },

    /// A tensor offset that is not a multiple of the alignment.
    #[error(
        "gguf: tensor {tensor:?} offset {offset} is not a multiple of the alignment {alignment}"
    )]
    MisalignedOffset {
        tensor: String,
        offset: u64,
        alignment: u64,
    },

    /// A tensor that starts before the previous one ends (overlap or out of order).
    #[error(
        "gguf: tensor {tensor:?} at data offset {offset} overlaps or precedes tensor {previous:?} which ends at {previous_end}"
    )]
    OverlappingTensors {
        tensor: String,
        offset: u64,
        previous: String,
        previous_end: u64,
    },

    /// Tensor data that extends past the end of the file.
    #[error(
        "gguf: tensor {tensor:?} data [{start}, {start}+{n_bytes}) lies past the end of the file ({file_len} bytes)"
    )]
    TensorOutOfBounds {
        tensor: String,
        start: u64,
        n_bytes: u64,
        file_len: u64,
    },

    /// A key the caller asked for is absent.
    #[error("gguf: missing metadata key {key:?}")]
    MissingKey { key: String },

    /// A key holds a value of another type than the caller asked for.
    #[error("gguf: metadata key {key:?} has type {found}, expected {expected}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: &'static str,
    },

    /// An integer key whose value does not fit the requested type.
    #[error("gguf: metadata key {key:?} value {value} does not fit {expected}")]
    OutOfRange {
        key: String,
        expected: &'static str,
        value: i128,
    },

    /// A tensor the caller asked for is absent.
    #[error("gguf: missing tensor {name:?}")]
    MissingTensor { name: String },

    /// Writer: tensor data whose length does not match its shape and type.
    #[error("gguf: tensor {tensor:?} needs {expected} bytes of data but got {got}")]
    DataSizeMismatch {
        tensor: String,
        expected: u64,
        got: u64,
    },

    /// Writer: `write_to`/`write_file` on a tensor added with `add_tensor_info` (no data).
    #[error(
        "gguf: tensor {tensor:?} has no data (added with add_tensor_info; use write_streaming)"
    )]
    MissingTensorData { tensor: String },

    /// Writer: a file too large for this platform's address space.
    #[error("gguf: {what} does not fit in memory on this platform")]
    TooLarge { what: &'static str },
}

fn show_magic(m: &[u8; 4]) -> String {
    m.iter()
        .map(|&b| {
            if b.is_ascii_graphic() {
                (b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect::<String>()
}

fn at(offset: &Option<u64>) -> String {
    match offset {
        Some(o) => format!(" at offset {o}"),
        None => String::new(),
    }
}
