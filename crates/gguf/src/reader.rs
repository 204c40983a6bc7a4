//! The GGUF reader: [`Gguf`] parses a whole file (memory-mapped or owned
//! bytes) into metadata and [`TensorInfo`]s, and hands out tensor data as
//! byte slices borrowed from the file.
//!
//! Everything read from the file is untrusted. Parsing is a single forward
//! pass; every length and count is checked against the bytes that remain
//! before anything is allocated for it, all arithmetic is checked, and array
//! nesting is limited to [`MAX_ARRAY_DEPTH`]. Work and memory are therefore
//! linear in the file size, and a malformed file yields a [`GgufError`]
//! naming the problem and its byte offset or tensor.
//!
//! Rules enforced beyond the raw layout (mostly those of llama.cpp's
//! `gguf.cpp`):
//! - versions 2 and 3 only (v1 used 32-bit counts);
//! - metadata keys non-empty and unique; bools are the bytes 0 or 1;
//!   strings valid UTF-8;
//! - `general.alignment`, if present, is a `u32` power of two in
//!   `1..=`[`MAX_ALIGNMENT`] (default [`DEFAULT_ALIGNMENT`]);
//! - tensor names non-empty, unique, shorter than 64 bytes;
//! - 1 to 4 dimensions, none zero, element count and byte size ≤ `i64::MAX`;
//! - `dims[0]` a multiple of the type's block size;
//! - tensor offsets (relative to the data section, which starts at the first
//!   aligned position after the tensor infos) are multiples of the
//!   alignment, in file order and non-overlapping, and the data lies inside
//!   the file. Unlike ggml, gaps between tensors are accepted.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use crate::error::GgufError;
use crate::types::GgmlType;
use crate::value::{Array, Value, ValueType};

/// The file magic, `GGUF`.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section and tensor offsets when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Largest `general.alignment` accepted (1 MiB).
pub const MAX_ALIGNMENT: u64 = 1 << 20;
/// Deepest array nesting accepted (an array of scalars has depth 1).
pub const MAX_ARRAY_DEPTH: u32 = 8;
/// Most dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// Longest tensor name in bytes (ggml's `GGML_MAX_NAME` minus the NUL).
pub const MAX_TENSOR_NAME_LEN: usize = 63;
/// Key holding the alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";

/// Most elements reserved up front for a count read from the file (counts
/// are already bounded by the remaining bytes; this also bounds the
/// transient reservations of nested arrays). Larger collections grow as
/// their elements are actually parsed.
const MAX_PREALLOC: usize = 1 << 16;

/// Fewest bytes a key/value pair occupies: key length u64 + 1 key byte + type u32 + 1 value byte.
const MIN_KV_SIZE: u64 = 8 + 1 + 4 + 1;
/// Fewest bytes a tensor info occupies: name length u64 + 1 name byte + n_dims u32 + 1 dim u64 + type u32 + offset u64.
const MIN_TENSOR_INFO_SIZE: u64 = 8 + 1 + 4 + 8 + 4 + 8;

/// Description of one tensor: name, shape, type and where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// ggml `ne`: `dims[0]` is the fastest-varying dimension (row length).
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Byte offset of the data, relative to [`Gguf::data_offset`].
    pub offset: u64,
    /// Size of the data in bytes.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Total number of elements (product of `dims`).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Number of rows: product of `dims[1..]` (1 for a vector).
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }

    /// Elements per row: `dims[0]`.
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(0)
    }

    /// Bytes per row (`n_bytes / n_rows`).
    pub fn row_bytes(&self) -> u64 {
        self.ggml_type.row_bytes(self.row_len()).unwrap_or(0)
    }
}

/// 64-byte aligned storage unit for owned bytes, so that tensor data handed
/// out by [`Gguf::from_bytes`] is as aligned as data from a memory map.
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(64))]
struct Chunk([u8; 64]);

enum Storage {
    Map(memmap2::Mmap),
    Bytes(Vec<u8>),
    Aligned { chunks: Vec<Chunk>, len: usize },
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Map(m) => m,
            Storage::Bytes(b) => b,
            Storage::Aligned { chunks, len } => {
                let all: &[u8] = bytemuck::cast_slice(chunks);
                all.get(..*len).unwrap_or(all)
            }
        }
    }
}

/// A parsed GGUF file. Owns the file's bytes (a read-only memory map for
/// [`Gguf::open`], an owned buffer for [`Gguf::from_bytes`]).
pub struct Gguf {
    storage: Storage,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl fmt::Debug for Gguf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gguf")
            .field("len", &self.storage.bytes().len())
            .field("version", &self.version)
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .field("n_metadata", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .finish()
    }
}

impl Gguf {
    /// Memory-maps and parses the file at `path`.
    ///
    /// The map is read-only; as with any memory map, the file must not be
    /// truncated or modified by another process while the `Gguf` lives.
    pub fn open(path: impl AsRef<Path>) -> Result<Gguf, GgufError> {
        let path = path.as_ref();
        let file_err = |source| GgufError::File {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(file_err)?;
        // SAFETY: the map is read-only and private to this value. The file
        // is opened read-only; modifying it from elsewhere while mapped is
        // the documented caller obligation above. All reads go through
        // bounds-checked slices of the map.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(file_err)?;
        Self::from_storage(Storage::Map(map))
    }

    /// Parses a file held in memory. If `bytes` is not 64-byte aligned it is
    /// copied into an aligned buffer, so tensor data is aligned in memory to
    /// `min(alignment, 64)` just as with [`Gguf::open`].
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Gguf, GgufError> {
        if (bytes.as_ptr() as usize).is_multiple_of(64) {
            return Self::from_storage(Storage::Bytes(bytes));
        }
        let len = bytes.len();
        let mut chunks = vec![Chunk([0; 64]); len.div_ceil(64)];
        let dst: &mut [u8] = bytemuck::cast_slice_mut(&mut chunks);
        if let Some(d) = dst.get_mut(..len) {
            d.copy_from_slice(&bytes);
        }
        drop(bytes);
        Self::from_storage(Storage::Aligned { chunks, len })
    }

    fn from_storage(storage: Storage) -> Result<Gguf, GgufError> {
        let p = parse(storage.bytes())?;
        Ok(Gguf {
            storage,
            version: p.version,
            alignment: p.alignment,
            data_offset: p.data_offset,
            metadata: p.metadata,
            key_index: p.key_index,
            tensors: p.tensors,
            tensor_index: p.tensor_index,
        })
    }

    /// The whole file.
    pub fn as_bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of the data section and of tensor offsets.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset of the tensor data section. (With no tensors,
    /// the end of the header, unpadded, as in ggml.)
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// All key/value pairs, in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        let i = *self.key_index.get(key)?;
        self.metadata.get(i).map(|(_, v)| v)
    }

    fn require(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_owned(),
        })
    }

    fn integer(&self, key: &str, expected: &'static str) -> Result<i128, GgufError> {
        let v = self.require(key)?;
        v.as_i128().ok_or_else(|| GgufError::WrongType {
            key: key.to_owned(),
            expected,
            found: v.type_name(),
        })
    }

    /// Any integer value of `key` that fits `u32`.
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        let v = self.integer(key, "u32")?;
        u32::try_from(v).map_err(|_| GgufError::OutOfRange {
            key: key.to_owned(),
            expected: "u32",
            value: v,
        })
    }

    /// Any non-negative integer value of `key`.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.integer(key, "u64")?;
        u64::try_from(v).map_err(|_| GgufError::OutOfRange {
            key: key.to_owned(),
            expected: "u64",
            value: v,
        })
    }

    /// Any integer value of `key` that fits `i64`.
    pub fn get_i64(&self, key: &str) -> Result<i64, GgufError> {
        let v = self.integer(key, "i64")?;
        i64::try_from(v).map_err(|_| GgufError::OutOfRange {
            key: key.to_owned(),
            expected: "i64",
            value: v,
        })
    }

    /// An `F32` value, or an `F64` value rounded to `f32`.
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        let v = self.require(key)?;
        match *v {
            Value::F32(x) => Ok(x),
            Value::F64(x) => Ok(x as f32),
            _ => Err(GgufError::WrongType {
                key: key.to_owned(),
                expected: "f32",
                found: v.type_name(),
            }),
        }
    }

    /// A `Bool` value.
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        let v = self.require(key)?;
        v.as_bool().ok_or_else(|| GgufError::WrongType {
            key: key.to_owned(),
            expected: "bool",
            found: v.type_name(),
        })
    }

    /// A `String` value.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| GgufError::WrongType {
            key: key.to_owned(),
            expected: "string",
            found: v.type_name(),
        })
    }

    /// An `Array` value.
    pub fn get_array(&self, key: &str) -> Result<&Array, GgufError> {
        let v = self.require(key)?;
        v.as_array().ok_or_else(|| GgufError::WrongType {
            key: key.to_owned(),
            expected: "array",
            found: v.type_name(),
        })
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor named `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        let i = *self.tensor_index.get(name)?;
        self.tensors.get(i)
    }

    /// The `t.n_bytes` bytes of tensor `t`, borrowed from the file.
    ///
    /// `t` must be one of this file's [`TensorInfo`]s (those are validated
    /// to lie inside the file). For a foreign `TensorInfo` whose range does
    /// not fit this file, the result is an empty slice, never a panic.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        self.data_range(t.offset, t.n_bytes).unwrap_or(&[])
    }

    /// The data of the tensor named `name`.
    pub fn tensor_data_by_name(&self, name: &str) -> Result<&[u8], GgufError> {
        let t = self.tensor(name).ok_or_else(|| GgufError::MissingTensor {
            name: name.to_owned(),
        })?;
        Ok(self.tensor_data(t))
    }

    fn data_range(&self, offset: u64, n_bytes: u64) -> Option<&[u8]> {
        let start = usize::try_from(self.data_offset.checked_add(offset)?).ok()?;
        let end = start.checked_add(usize::try_from(n_bytes).ok()?)?;
        self.storage.bytes().get(start..end)
    }
}

struct Parsed {
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

/// A bounds-checked forward reader over the file bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn offset(&self) -> u64 {
        self.pos as u64
    }

    fn remaining(&self) -> u64 {
        self.buf.len().saturating_sub(self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8], GgufError> {
        let truncated = || GgufError::Truncated {
            offset: self.pos as u64,
            needed: n,
            available: self.remaining(),
            what,
        };
        let n = usize::try_from(n).map_err(|_| truncated())?;
        let end = self.pos.checked_add(n).ok_or_else(truncated)?;
        let s = self.buf.get(self.pos..end).ok_or_else(truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A GGUF string: u64 length + UTF-8 bytes.
    fn string(&mut self, what: &'static str) -> Result<String, GgufError> {
        let offset = self.offset();
        let len = self.u64(what)?;
        let remaining = self.remaining();
        if len > remaining {
            return Err(GgufError::StringTooLong {
                offset,
                len,
                remaining,
            });
        }
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(GgufError::InvalidUtf8 {
                offset,
                valid_up_to: e.valid_up_to() as u64,
            }),
        }
    }

    fn value_type(&mut self) -> Result<ValueType, GgufError> {
        let offset = self.offset();
        let id = self.u32("value type")?;
        ValueType::from_id(id).ok_or(GgufError::UnknownValueType { offset, id })
    }

    fn value(&mut self, ty: ValueType) -> Result<Value, GgufError> {
        const W: &str = "metadata value";
        Ok(match ty {
            ValueType::U8 => Value::U8(u8::from_le_bytes(self.array(W)?)),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array(W)?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(W)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(W)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(W)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(W)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(W)?)),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(W)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(W)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(W)?)),
            ValueType::Bool => {
                let offset = self.offset();
                let [b] = self.array(W)?;
                Value::Bool(bool_from(b, offset)?)
            }
            ValueType::String => Value::String(self.string("string value")?),
            ValueType::Array => Value::Array(self.array_value(1)?),
        })
    }

    /// An array: element type u32 + count u64 + elements. `depth` is this
    /// array's nesting depth (1 for a top-level array).
    fn array_value(&mut self, depth: u32) -> Result<Array, GgufError> {
        let offset = self.offset();
        if depth > MAX_ARRAY_DEPTH {
            return Err(GgufError::NestingTooDeep {
                offset,
                depth,
                limit: MAX_ARRAY_DEPTH,
            });
        }
        let elem = self.value_type()?;
        let len = self.u64("array length")?;
        let remaining = self.remaining();
        let min_elem_size = elem.min_size();
        if len > remaining / min_elem_size {
            return Err(GgufError::ArrayTooLong {
                offset,
                len,
                elem: elem.name(),
                min_elem_size,
                remaining,
            });
        }
        // len * min_elem_size <= remaining <= buf.len(): fits usize, and
        // every allocation below is bounded by a small multiple of it.
        let n = len as usize;
        const W: &str = "array elements";
        fn fixed<const N: usize, T>(
            c: &mut Cursor<'_>,
            n: usize,
            f: fn([u8; N]) -> T,
        ) -> Result<Vec<T>, GgufError> {
            let bytes = c.take((n * N) as u64, W)?;
            Ok(bytes
                .chunks_exact(N)
                .map(|ch| {
                    let mut a = [0u8; N];
                    a.copy_from_slice(ch);
                    f(a)
                })
                .collect())
        }
        Ok(match elem {
            ValueType::U8 => Array::U8(self.take(n as u64, W)?.to_vec()),
            ValueType::I8 => Array::I8(fixed(self, n, i8::from_le_bytes)?),
            ValueType::U16 => Array::U16(fixed(self, n, u16::from_le_bytes)?),
            ValueType::I16 => Array::I16(fixed(self, n, i16::from_le_bytes)?),
            ValueType::U32 => Array::U32(fixed(self, n, u32::from_le_bytes)?),
            ValueType::I32 => Array::I32(fixed(self, n, i32::from_le_bytes)?),
            ValueType::F32 => Array::F32(fixed(self, n, f32::from_le_bytes)?),
            ValueType::U64 => Array::U64(fixed(self, n, u64::from_le_bytes)?),
            ValueType::I64 => Array::I64(fixed(self, n, i64::from_le_bytes)?),
            ValueType::F64 => Array::F64(fixed(self, n, f64::from_le_bytes)?),
            ValueType::Bool => {
                let start = self.offset();
                let bytes = self.take(n as u64, W)?;
                let mut v = Vec::with_capacity(n.min(MAX_PREALLOC));
                for (i, &b) in bytes.iter().enumerate() {
                    v.push(bool_from(b, start + i as u64)?);
                }
                Array::Bool(v)
            }
            ValueType::String => {
                let mut v = Vec::with_capacity(n.min(MAX_PREALLOC));
                for _ in 0..n {
                    v.push(self.string("string array element")?);
                }
                Array::String(v)
            }
            ValueType::Array => {
                let mut v = Vec::with_capacity(n.min(MAX_PREALLOC));
                for _ in 0..n {
                    v.push(self.array_value(depth + 1)?);
                }
                Array::Array(v)
            }
        })
    }
}

fn bool_from(b: u8, offset: u64) -> Result<bool, GgufError> {
    match b {
        0 => Ok(false),
        1 => Ok(true),
        byte => Err(GgufError::InvalidBool { offset, byte }),
    }
}

/// Validates a tensor's name, shape and type and returns its byte size.
/// Shared by the reader and the writer.
pub(crate) fn check_tensor(name: &str, dims: &[u64], ty: GgmlType) -> Result<u64, GgufError> {
    if name.len() > MAX_TENSOR_NAME_LEN {
        return Err(GgufError::TensorNameTooLong {
            name: name.to_owned(),
            len: name.len() as u64,
            limit: MAX_TENSOR_NAME_LEN as u64,
        });
    }
    if dims.is_empty() || dims.len() > MAX_DIMS {
        return Err(GgufError::BadDims {
            tensor: name.to_owned(),
            n_dims: dims.len() as u64,
        });
    }
    let overflow = || GgufError::DimOverflow {
        tensor: name.to_owned(),
        dims: dims.to_vec(),
    };
    let mut n: u64 = 1;
    for (i, &d) in dims.iter().enumerate() {
        if d == 0 {
            return Err(GgufError::ZeroDim {
                tensor: name.to_owned(),
                index: i as u32,
            });
        }
        n = n
            .checked_mul(d)
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(overflow)?;
    }
    let row_len = dims[0];
    let block_size = ty.block_size() as u64;
    if !row_len.is_multiple_of(block_size) {
        return Err(GgufError::RowNotBlockMultiple {
            tensor: name.to_owned(),
            ty,
            row_len,
            block_size,
        });
    }
    let row_bytes = ty.row_bytes(row_len).ok_or_else(overflow)?;
    row_bytes
        .checked_mul(n / row_len)
        .filter(|&b| b <= i64::MAX as u64)
        .ok_or_else(overflow)
}

/// Checks a `general.alignment` value.
pub(crate) fn check_alignment(v: &Value) -> Result<u64, GgufError> {
    let Value::U32(a) = *v else {
        return Err(GgufError::WrongType {
            key: ALIGNMENT_KEY.to_owned(),
            expected: "u32",
            found: v.type_name(),
        });
    };
    let alignment = u64::from(a);
    let reason = if alignment == 0 {
        "zero"
    } else if !alignment.is_power_of_two() {
        "not a power of two"
    } else if alignment > MAX_ALIGNMENT {
        "larger than 1 MiB"
    } else {
        return Ok(alignment);
    };
    Err(GgufError::BadAlignment { alignment, reason })
}

/// Rounds `x` up to a multiple of the power of two `a`, or `None` on overflow.
pub(crate) fn align_up(x: u64, a: u64) -> Option<u64> {
    Some(x.checked_add(a - 1)? & !(a - 1))
}

fn parse(buf: &[u8]) -> Result<Parsed, GgufError> {
    let mut c = Cursor { buf, pos: 0 };
    let file_len = buf.len() as u64;

    let magic: [u8; 4] = c.array("magic")?;
    if magic != GGUF_MAGIC {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = c.u32("version")?;
    if version != 2 && version != 3 {
        return Err(GgufError::UnsupportedVersion { version });
    }

    let count_offset = c.offset();
    let n_tensors = c.u64("tensor count")?;
    let kv_offset = c.offset();
    let n_kv = c.u64("metadata count")?;
    let remaining = c.remaining();
    for (offset, what, count, min) in [
        (count_offset, "tensor", n_tensors, MIN_TENSOR_INFO_SIZE),
        (kv_offset, "metadata key/value", n_kv, MIN_KV_SIZE),
    ] {
        let max = remaining / min;
        if count > max {
            return Err(GgufError::CountTooLarge {
                offset,
                what,
                count,
                remaining,
                max,
            });
        }
    }
    // Both counts are now bounded by the file size.
    let n_tensors = n_tensors as usize;
    let n_kv = n_kv as usize;

    let mut metadata = Vec::with_capacity(n_kv.min(MAX_PREALLOC));
    let mut key_index = HashMap::with_capacity(n_kv.min(MAX_PREALLOC));
    for i in 0..n_kv {
        let offset = c.offset();
        let key = c.string("metadata key")?;
        if key.is_empty() {
            return Err(GgufError::EmptyKey {
                offset: Some(offset),
            });
        }
        if key_index.contains_key(&key) {
            return Err(GgufError::DuplicateKey { offset, key });
        }
        let ty = c.value_type()?;
        let value = c.value(ty)?;
        key_index.insert(key.clone(), i);
        metadata.push((key, value));
    }

    let alignment = match key_index.get(ALIGNMENT_KEY).and_then(|&i| metadata.get(i)) {
        Some((_, v)) => check_alignment(v)?,
        None => DEFAULT_ALIGNMENT,
    };

    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(n_tensors.min(MAX_PREALLOC));
    let mut tensor_index = HashMap::with_capacity(n_tensors.min(MAX_PREALLOC));
    for i in 0..n_tensors {
        let name_offset = c.offset();
        let name = c.string("tensor name")?;
        if name.is_empty() {
            return Err(GgufError::EmptyTensorName {
                offset: Some(name_offset),
            });
        }
        if name.len() > MAX_TENSOR_NAME_LEN {
            return Err(GgufError::TensorNameTooLong {
                len: name.len() as u64,
                name,
                limit: MAX_TENSOR_NAME_LEN as u64,
            });
        }
        if tensor_index.contains_key(&name) {
            return Err(GgufError::DuplicateTensor { name });
        }
        let n_dims = c.u32("tensor dimension count")?;
        if n_dims == 0 || n_dims as usize > MAX_DIMS {
            return Err(GgufError::BadDims {
                tensor: name,
                n_dims: n_dims.into(),
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64("tensor dimension")?);
        }
        let type_offset = c.offset();
        let type_id = c.u32("tensor type")?;
        let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownGgmlType {
            tensor: name.clone(),
            id: type_id,
            offset: type_offset,
        })?;
        let n_bytes = check_tensor(&name, &dims, ggml_type)?;
        let offset = c.u64("tensor offset")?;
        tensor_index.insert(name.clone(), i);
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            n_bytes,
        });
    }

    let data_offset = if tensors.is_empty() {
        c.offset()
    } else {
        let end = c.offset();
        match align_up(end, alignment).filter(|&d| d <= file_len) {
            Some(d) => d,
            None => {
                return Err(GgufError::Truncated {
                    offset: end,
                    needed: align_up(end, alignment).unwrap_or(u64::MAX) - end,
                    available: file_len - end,
                    what: "padding before tensor data",
                });
            }
        }
    };

    let mut prev: Option<(&str, u64)> = None;
    for t in &tensors {
        if t.offset % alignment != 0 {
            return Err(GgufError::MisalignedOffset {
                tensor: t.name.clone(),
                offset: t.offset,
                alignment,
            });
        }
        if let Some((previous, previous_end)) = prev
            && t.offset < previous_end
        {
            return Err(GgufError::OverlappingTensors {
                tensor: t.name.clone(),
                offset: t.offset,
                previous: previous.to_owned(),
                previous_end,
            });
        }
        let out_of_bounds = || GgufError::TensorOutOfBounds {
            tensor: t.name.clone(),
            start: data_offset.saturating_add(t.offset),
            n_bytes: t.n_bytes,
            file_len,
        };
        let start = data_offset
            .checked_add(t.offset)
            .ok_or_else(out_of_bounds)?;
        let end = start.checked_add(t.n_bytes).ok_or_else(out_of_bounds)?;
        if end > file_len {
            return Err(out_of_bounds());
        }
        // t.offset + n_bytes <= end: cannot overflow.
        prev = Some((&t.name, t.offset + t.n_bytes));
    }

    Ok(Parsed {
        version,
        alignment,
        data_offset,
        metadata,
        key_index,
        tensors,
        tensor_index,
    })
}
