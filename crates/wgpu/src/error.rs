//! [`WgpuError`]: every failure of this crate, typed.
//!
//! wgpu reports most failures asynchronously (validation errors, out of
//! memory, device loss). This crate captures them with error scopes around
//! resource and pipeline creation, with an uncaptured-error handler and a
//! device-lost callback installed on the device, and turns them into these
//! variants instead of panicking.

use zeta_gguf::GgmlType;

/// Errors of the GPU layer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WgpuError {
    /// No adapter (GPU or software device) could be found, or none matched
    /// the requested name.
    #[error("no GPU adapter found{}", match .wanted { Some(w) => format!(" matching {w:?}"), None => String::new() })]
    NoAdapter {
        /// The adapter name substring asked for (`ZETA_ADAPTER`), if any.
        wanted: Option<String>,
    },
    /// `request_device` failed.
    #[error("requesting a device from adapter {adapter:?} failed: {message}")]
    RequestDevice {
        /// Adapter name.
        adapter: String,
        /// wgpu's message.
        message: String,
    },
    /// An allocation failed or would exceed the device's limits.
    #[error("out of GPU memory: {what} needs {needed_bytes} bytes{}", match .limit_bytes { Some(l) => format!(" (limit {l})"), None => String::new() })]
    OutOfMemory {
        /// What was being allocated.
        what: String,
        /// The estimated size needed.
        needed_bytes: u64,
        /// The device limit that was exceeded, when known.
        limit_bytes: Option<u64>,
    },
    /// A shader or pipeline failed validation.
    #[error("shader {shader:?} (entry {entry:?}) failed to compile: {message}")]
    Shader {
        /// Shader name.
        shader: String,
        /// Entry point.
        entry: String,
        /// The validation message.
        message: String,
    },
    /// A GPU validation or internal error reported asynchronously.
    #[error("GPU error: {0}")]
    Gpu(String),
    /// The device was lost (driver reset, removal, destroy).
    #[error("GPU device lost: {0}")]
    DeviceLost(String),
    /// Mapping a buffer for read-back failed.
    #[error("GPU read-back failed: {0}")]
    ReadBack(String),
    /// The weight type has no GPU kernel.
    #[error("type {0} is not supported by the GPU kernels")]
    UnsupportedType(GgmlType),
    /// Shapes or sizes of the arguments do not fit together.
    #[error("shape mismatch in {op}: {detail}")]
    Shape {
        /// The operation.
        op: &'static str,
        /// What does not fit.
        detail: String,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, WgpuError>;

/// Shorthand for a [`WgpuError::Shape`].
pub(crate) fn shape(op: &'static str, detail: impl Into<String>) -> WgpuError {
    WgpuError::Shape {
        op,
        detail: detail.into(),
    }
}
