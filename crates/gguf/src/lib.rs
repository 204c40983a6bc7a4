//! zeta-gguf: the GGUF file format (v2 and v3) and the ggml type table.
//!
//! **Invariant: zeta-gguf knows nothing of tensors' meaning, quantization
//! math, or GPUs.** It parses untrusted bytes into typed metadata and tensor
//! byte ranges, and writes GGUF files.
//!
//! - [`Gguf`] reads a file ([`Gguf::open`] memory-maps it,
//!   [`Gguf::from_bytes`] takes owned bytes), validates it completely up
//!   front, and then hands out metadata ([`Value`], [`Array`]), tensor
//!   descriptions ([`TensorInfo`]) and tensor data as byte slices borrowed
//!   from the file (zero-copy).
//! - [`GgufWriter`] builds a file from metadata and tensors, with tensor
//!   data in memory or streamed.
//! - [`GgmlType`] is the table of ggml element types (ids, block sizes,
//!   bytes per block) every other zeta crate uses.
//! - [`GgufError`] is the one error type; a malformed file never panics,
//!   hangs or allocates more than a small multiple of its own size.
//!
//! ```
//! use zeta_gguf::{Gguf, GgufWriter, GgmlType, Value};
//! let mut w = GgufWriter::new();
//! w.add_kv("general.architecture", Value::String("llama".into()));
//! w.add_tensor("x", &[4, 2], GgmlType::F32, vec![0u8; 32]).unwrap();
//! let mut bytes = Vec::new();
//! w.write_to(&mut bytes).unwrap();
//! let g = Gguf::from_bytes(bytes).unwrap();
//! assert_eq!(g.get_str("general.architecture").unwrap(), "llama");
//! let t = g.tensor("x").unwrap();
//! assert_eq!((t.row_len(), t.n_rows()), (4, 2));
//! assert_eq!(g.tensor_data(t).len(), 32);
//! ```

pub mod error;
pub mod reader;
pub mod types;
pub mod value;
pub mod writer;

pub use error::GgufError;
pub use reader::{
    ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, Gguf, MAX_ALIGNMENT, MAX_ARRAY_DEPTH, MAX_DIMS,
    MAX_TENSOR_NAME_LEN, TensorInfo,
};
pub use types::{GgmlType, QK_K};
pub use value::{Array, Value, ValueType};
pub use writer::{FillFn, GgufWriter};
