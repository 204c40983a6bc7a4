//! [`TensorError`]: every way a backend op can fail (bad shapes, unsupported
//! weight types, failed allocations, device failures of a GPU backend). Ops
//! validate sizes before touching data, so a wrong call is an error, never a
//! panic.

use zeta_gguf::GgmlType;

/// Errors from backend ops.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TensorError {
    /// The weight type has no implementation for this op.
    #[error("tensor: {op} does not support weight type {ty}")]
    UnsupportedType { op: &'static str, ty: GgmlType },

    /// Operand shapes do not fit together.
    #[error("tensor: shape mismatch in {op}: {msg}")]
    Shape { op: &'static str, msg: String },

    /// A buffer holds fewer elements than the op needs.
    #[error("tensor: buffer too small in {op}: need {need} elements, have {have}")]
    BufferTooSmall {
        op: &'static str,
        need: usize,
        have: usize,
    },

    /// An index (token id, row) is outside the table.
    #[error("tensor: {op}: row {row} out of range (tensor has {n_rows} rows)")]
    RowOutOfRange {
        op: &'static str,
        row: u64,
        n_rows: u64,
    },

    /// A buffer could not be allocated.
    #[error("tensor: cannot allocate {bytes} bytes")]
    Alloc { bytes: u128 },

    /// The device ran out of memory (or an allocation would exceed its
    /// limits) while running `op`.
    #[error("tensor: {op}: out of device memory: {what} needs {needed_bytes} bytes{}", match .limit_bytes { Some(l) => format!(" (limit {l})"), None => String::new() })]
    DeviceOutOfMemory {
        op: &'static str,
        /// What was being allocated.
        what: String,
        /// The estimated size needed (0 when the device did not say).
        needed_bytes: u64,
        /// The device limit that was exceeded, when known.
        limit_bytes: Option<u64>,
    },

    /// The device failed while running `op` (validation error, lost device,
    /// failed read-back, shader compilation).
    #[error("tensor: device failure in {op}: {message}")]
    Device { op: &'static str, message: String },

    /// The named tensor is not in the GGUF file.
    #[error("tensor: tensor {name:?} not found")]
    MissingTensor { name: String },

    /// A (de)quantization routine failed.
    #[error("tensor: {0}")]
    Quant(#[from] zeta_quant::QuantError),
}

impl TensorError {
    pub(crate) fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        Self::Shape {
            op,
            msg: msg.into(),
        }
    }
}

/// Checks that a buffer of `have` elements holds at least `need`.
pub(crate) fn need(op: &'static str, need: usize, have: usize) -> Result<(), TensorError> {
    if have < need {
        Err(TensorError::BufferTooSmall { op, need, have })
    } else {
        Ok(())
    }
}
