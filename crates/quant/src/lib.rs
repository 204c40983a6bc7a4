//! zeta-quant: ggml's block quantization formats.
//!
//! - [`blocks`]: `#[repr(C)]` layouts of every supported block type.
//! - [`dequantize`]: blocks → f32, bit-exact with ggml's `dequantize_row_*`.
//! - [`quantize`]: f32 → blocks with ggml's `quantize_row_*_ref` semantics.
//! - [`vec_dot`]: reference dot products weight-blocks · activation-blocks
//!   (activations quantized to [`vec_dot_type`]), like ggml's generic C path.
//!
//! Invariant: every entry point takes plain byte slices at any alignment,
//! checks all lengths up front and returns [`QuantError`] instead of
//! panicking on bad input. Nothing here allocates more than O(input).

pub mod blocks;
mod dequant;
mod dot;
mod quantize;

pub use dequant::{bf16_to_f32, can_dequantize, dequantize};
pub use dot::{can_vec_dot, vec_dot, vec_dot_type};
pub use quantize::{
    can_quantize, f32_to_bf16, quantize, quantize_block_iq4_nl, quantize_block_iq4_xs,
    quantize_block_q2_k, quantize_block_q3_k, quantize_block_q4_0, quantize_block_q4_1,
    quantize_block_q4_k, quantize_block_q5_0, quantize_block_q5_1, quantize_block_q5_k,
    quantize_block_q6_k, quantize_block_q8_0, quantize_block_q8_1, quantize_block_q8_k,
    quantize_row_q8_0, quantize_row_q8_1, quantize_row_q8_k,
};
pub use zeta_gguf::{GgmlType, QK_K};

/// Errors of this crate: unsupported types and inconsistent lengths.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    /// The operation is not implemented for this type.
    #[error("{op} is not supported for type {ty}")]
    Unsupported {
        /// The type asked for.
        ty: GgmlType,
        /// The operation ("dequantize", "quantize", "vec_dot").
        op: &'static str,
    },
    /// The element count is not a multiple of the type's block size.
    #[error("{n} elements is not a whole number of {ty} blocks of {block_size}")]
    PartialBlock {
        /// The type.
        ty: GgmlType,
        /// The element count given.
        n: usize,
        /// The type's block size.
        block_size: usize,
    },
    /// The byte buffer does not hold exactly the blocks for the element count.
    #[error("{n} elements of {ty} take {expected} bytes, got {found}")]
    ByteLength {
        /// The type.
        ty: GgmlType,
        /// The element count.
        n: usize,
        /// Bytes required.
        expected: usize,
        /// Bytes given.
        found: usize,
    },
    /// The byte size of `n` elements overflows.
    #[error("{n} elements of {ty} overflow the address space")]
    TooLarge {
        /// The type.
        ty: GgmlType,
        /// The element count.
        n: usize,
    },
}
