//! Byte layouts of ggml's quantization blocks (`block_q4_0`, `block_q4_K`, …
//! in ggml-common.h), as `#[repr(C)]` structs that are [`bytemuck::Pod`].
//!
//! Every block is a fixed number of bytes (asserted at compile time) holding
//! `block_size` elements. All multi-byte fields are little-endian, as in GGUF
//! files; this crate only builds for little-endian targets. Tensor data inside
//! a GGUF map is not aligned for these structs, so readers go through
//! [`blocks_of`], which casts in place when the bytes happen to be aligned
//! and copies each block out otherwise.

use bytemuck::{Pod, Zeroable};
use half::f16;

#[cfg(target_endian = "big")]
compile_error!(
    "zeta-quant reads little-endian GGUF blocks in place and supports little-endian targets only"
);

/// Elements per block of Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q8_1/IQ4_NL.
pub const QK32: usize = 32;
/// Elements per super-block of the k-quants and IQ4_XS.
pub const QK_K: usize = zeta_gguf::QK_K;

/// The 16 non-linear levels of IQ4_NL / IQ4_XS (`kvalues_iq4nl`).
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// Q4_0: 32 weights `w = d * (q - 8)`, q in 0..16.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct BlockQ4_0 {
    /// Scale.
    pub d: f16,
    /// Nibbles: element j in the low nibble of `qs[j]`, element j+16 in the high nibble.
    pub qs: [u8; QK32 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);

/// Q4_1: 32 weights `w = d * q + m`, q in 0..16.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct BlockQ4_1 {
    /// Scale.
    pub d: f16,
    /// Minimum (offset).
    pub m: f16,
    /// Nibbles, laid out as in [`BlockQ4_0`].
    pub qs: [u8; QK32 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

/// Q5_0: 32 weights `w = d * (q - 16)`, q in 0..32.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct BlockQ5_0 {
    /// Scale.
    pub d: f16,
    /// Fifth bits: bit j (of the little-endian u32) is the high bit of element j.
    pub qh: [u8; 4],
    /// Low nibbles, laid out as in [`BlockQ4_0`].
    pub qs: [u8; QK32 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);

/// Q5_1: 32 weights `w = d * q + m`, q in 0..32.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct BlockQ5_1 {
    /// Scale.
    pub d: f16,
    /// Minimum (offset).
    pub m: f16,
    /// Fifth bits, as in [`BlockQ5_0`].
    pub qh: [u8; 4],
    /// Low nibbles.
    pub qs: [u8; QK32 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);

/// Q8_0: 32 weights `w = d * q`, q in -128..128.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct BlockQ8_0 {
    /// Scale.
    pub d: f16,
    /// Quants.
    pub qs: [i8; QK32],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

/// Q8_1: like Q8_0 plus `s = d * sum(qs)` (used by the Q4_1/Q5_1 dot products).
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct BlockQ8_1 {
    /// Scale.
    pub d: f16,
    /// `d * sum(qs)`.
    pub s: f16,
    /// Quants.
    pub qs: [i8; QK32],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);

/// Q2_K: 256 weights in 16 groups of 16; `w = d*sc*q - dmin*m`, q in 0..4.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct BlockQ2K {
    /// Per group: low nibble = scale, high nibble = min.
    pub scales: [u8; QK_K / 16],
    /// 2-bit quants, four per byte.
    pub qs: [u8; QK_K / 4],
    /// Super-block scale of the scales.
    pub d: f16,
    /// Super-block scale of the mins.
    pub dmin: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ2K>() == 84);

/// Q3_K: 256 weights in 16 groups of 16; `w = d*(sc-32)*(q-4·!hbit)`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct BlockQ3K {
    /// High bits of the quants.
    pub hmask: [u8; QK_K / 8],
    /// Low 2 bits of the quants.
    pub qs: [u8; QK_K / 4],
    /// Sixteen 6-bit scales, packed.
    pub scales: [u8; 12],
    /// Super-block scale.
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ3K>() == 110);

/// Q4_K: 256 weights in 8 groups of 32; `w = d*sc*q - dmin*m`, q in 0..16.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct BlockQ4K {
    /// Super-block scale of the scales.
    pub d: f16,
    /// Super-block scale of the mins.
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit mins, packed (see [`scale_min_k4`]).
    pub scales: [u8; 12],
    /// 4-bit quants: per 64 elements, 32 bytes (low nibbles first 32, high nibbles next 32).
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);

/// Q5_K: like Q4_K with a fifth bit per weight in `qh`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct BlockQ5K {
    /// Super-block scale of the scales.
    pub d: f16,
    /// Super-block scale of the mins.
    pub dmin: f16,
    /// Scales and mins, packed as in [`BlockQ4K`].
    pub scales: [u8; 12],
    /// Fifth bits.
    pub qh: [u8; QK_K / 8],
    /// Low nibbles.
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);

/// Q6_K: 256 weights in 16 groups of 16; `w = d*sc*(q-32)`, q in 0..64.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct BlockQ6K {
    /// Low 4 bits.
    pub ql: [u8; QK_K / 2],
    /// High 2 bits.
    pub qh: [u8; QK_K / 4],
    /// 8-bit signed group scales.
    pub scales: [i8; QK_K / 16],
    /// Super-block scale.
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);

/// Q8_K: the activation type of the k-quant dot products. Note `d` is f32.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct BlockQ8K {
    /// Scale (f32, not f16).
    pub d: f32,
    /// Quants.
    pub qs: [i8; QK_K],
    /// Sums of each group of 16 quants.
    pub bsums: [i16; QK_K / 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);

/// IQ4_NL: 32 weights `w = d * KVALUES_IQ4NL[q]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct BlockIQ4NL {
    /// Scale.
    pub d: f16,
    /// Nibble indices into [`KVALUES_IQ4NL`], laid out as in [`BlockQ4_0`].
    pub qs: [u8; QK32 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockIQ4NL>() == 18);

/// IQ4_XS: 256 weights in 8 groups of 32 with 6-bit group scales; `w = d*(ls-32)*KVALUES_IQ4NL[q]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct BlockIQ4XS {
    /// Super-block scale.
    pub d: f16,
    /// High 2 bits of the 8 group scales.
    pub scales_h: u16,
    /// Low 4 bits of the 8 group scales.
    pub scales_l: [u8; QK_K / 64],
    /// Nibble indices, per 32 elements 16 bytes laid out as in [`BlockQ4_0`].
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockIQ4XS>() == 136);

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of group `j` (0..8) of a
/// Q4_K/Q5_K block.
#[inline]
pub fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The sixteen 6-bit Q3_K group scales, unpacked (still biased by +32).
#[inline]
pub fn q3k_scales(scales: &[u8; 12]) -> [i8; 16] {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let a0 = u32::from_le_bytes([scales[0], scales[1], scales[2], scales[3]]);
    let a1 = u32::from_le_bytes([scales[4], scales[5], scales[6], scales[7]]);
    let tmp = u32::from_le_bytes([scales[8], scales[9], scales[10], scales[11]]);
    let aux = [
        (a0 & KMASK2) | ((tmp & KMASK1) << 4),
        (a1 & KMASK2) | (((tmp >> 2) & KMASK1) << 4),
        ((a0 >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4),
        ((a1 >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4),
    ];
    let mut out = [0i8; 16];
    for (k, word) in aux.iter().enumerate() {
        for (b, byte) in word.to_le_bytes().iter().enumerate() {
            out[4 * k + b] = *byte as i8;
        }
    }
    out
}

/// Calls `f` with each block of `src` (which must hold a whole number of
/// `B`-sized blocks; extra trailing bytes are ignored by the caller's length
/// checks). Casts in place when `src` is aligned for `B`, copies otherwise.
#[inline]
pub fn blocks_of<B: Pod>(src: &[u8], mut f: impl FnMut(usize, &B)) {
    let size = std::mem::size_of::<B>();
    let whole = src.len() / size * size;
    let src = &src[..whole];
    match bytemuck::try_cast_slice::<u8, B>(src) {
        Ok(blocks) => blocks.iter().enumerate().for_each(|(i, b)| f(i, b)),
        Err(_) => {
            for (i, chunk) in src.chunks_exact(size).enumerate() {
                let b: B = bytemuck::pod_read_unaligned(chunk);
                f(i, &b);
            }
        }
    }
}

/// Writes `blocks` into `dst` as bytes (`dst.len()` must equal the blocks' byte size).
#[inline]
pub fn write_blocks<B: Pod>(blocks: &[B], dst: &mut [u8]) {
    dst.copy_from_slice(bytemuck::cast_slice(blocks));
}
