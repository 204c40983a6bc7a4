//! Prompt-processing GEMM for quantized weights on AVX-512 VNNI, the way
//! llama.cpp's repacked x86 kernels work.
//!
//! The weight is cut into panels of 16 rows. A thread decodes one panel at a
//! time into a scratch buffer of u8 values laid out so that one 512-bit
//! register holds the same four columns of all 16 rows (`[quad][row][4]`);
//! one `vpdpbusd` with a token's four activation bytes broadcast then adds
//! 64 products into 16 per-row integer sums. The panel is reused for every
//! token of the batch, so the decoding costs a few percent, and each token's
//! sums of a block are exact integers before any float step:
//!
//! - Q4_0 / Q5_0 / Q8_0 (Q8_0 activations): weights stored as `q + 8`,
//!   `q + 16`, `q + 128` (non-negative), the offset taken back in integers as
//!   `-offset · Σa` per token and block. Then per block
//!   `acc = fma(float(sum), d_w · d_a, acc)`: for Q4_0 exactly what ggml's
//!   repacked `gemm_q4_0_8x8_q8_0` computes for every (row, token).
//! - Q4_K (Q8_K activations): per 64-column sub-block pair
//!   `acc = fma(float(sc_l·Σ_l + sc_h·Σ_h), d_w·d_a, acc)` and
//!   `acc_min = fma(float(m_l·bsums_l + m_h·bsums_h), dmin_w·d_a, acc_min)`,
//!   result `acc - acc_min`: the order of ggml's repacked Q4_K gemm (and of
//!   [`super::kernels::kernel_for`]'s gemm kernel). The last `n % 4` tokens
//!   take the gemv order (one FMA per 256 columns), as there.
//! - Q6_K (Q8_K activations): per 256 columns the integer
//!   `Σ_g sc_g·Σ_g(q·a) - 32·Σ_g sc_g·bsum_g`, then
//!   `acc = fma(d_w · float(isum), d_a, acc)`: ggml's tiled K-quant order,
//!   which [`super::kernels::kernel_for`] uses for batches of ≥ 8 tokens.
//!
//! So every result is bit-identical to the kernel the matmul would otherwise
//! use for that weight type and batch, except Q5_0 / Q8_0, whose per-lane
//! float sums (ggml's `vec_dot` order) become one exact integer sum per block
//! (the order of ggml's repacked kernels). Tests compare against the
//! reference `vec_dot` and the per-token kernels.

use zeta_gguf::GgmlType;

use super::CpuWeight;
use super::kernels::{has_avx512_vnni, is_repacked, scale_min_k4};

/// Rows per panel: one 512-bit register of i32/f32 lanes.
const PANEL: usize = 16;

/// The batches that take the GEMM: at least this many tokens (below, decoding
/// a panel per call costs more than the per-token kernels lose).
pub(crate) const MIN_TOKENS: usize = 16;

/// How a supported weight type is decoded and summed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Q4_0,
    Q4_1,
    Q5_0,
    Q8_0,
    Q4K,
    Q6K,
}

impl Kind {
    fn of(ty: GgmlType) -> Option<Kind> {
        Some(match ty {
            GgmlType::Q4_0 => Kind::Q4_0,
            GgmlType::Q4_1 => Kind::Q4_1,
            GgmlType::Q5_0 => Kind::Q5_0,
            GgmlType::Q8_0 => Kind::Q8_0,
            GgmlType::Q4_K => Kind::Q4K,
            GgmlType::Q6_K => Kind::Q6K,
            _ => return None,
        })
    }

    /// Columns per block.
    fn block(self) -> usize {
        match self {
            Kind::Q4_0 | Kind::Q4_1 | Kind::Q5_0 | Kind::Q8_0 => 32,
            Kind::Q4K | Kind::Q6K => 256,
        }
    }

    /// Bytes of one weight block in the GGUF file.
    fn weight_bytes(self) -> usize {
        match self {
            Kind::Q4_0 => 18,
            Kind::Q4_1 => 20,
            Kind::Q5_0 => 22,
            Kind::Q8_0 => 34,
            Kind::Q4K => 144,
            Kind::Q6K => 210,
        }
    }

    /// Bytes of one activation block (Q8_0 or Q8_K).
    fn act_bytes(self) -> usize {
        match self {
            Kind::Q4_0 | Kind::Q5_0 | Kind::Q8_0 => 34,
            Kind::Q4_1 => 36,
            Kind::Q4K | Kind::Q6K => 292,
        }
    }

    /// Bytes of one block of a decoded 16-row panel (see the `pack_*` functions).
    fn panel_bytes(self) -> usize {
        match self {
            Kind::Q4_0 | Kind::Q5_0 | Kind::Q8_0 => Q32_PANEL,
            Kind::Q4_1 => Q41_PANEL,
            Kind::Q4K => Q4K_PANEL,
            Kind::Q6K => Q6K_PANEL,
        }
    }

    /// What is added to the signed 32-column weights to make them u8.
    fn offset(self) -> i32 {
        match self {
            Kind::Q4_0 => 8,
            Kind::Q5_0 => 16,
            Kind::Q4_1 => 0,
            _ => 128,
        }
    }
}

/// A Q4_0/Q5_0/Q8_0 panel block: `qs[8 quads][16 rows][4]` u8, `d[16]` f32.
const Q32_PANEL: usize = 512 + 64;
/// A Q4_1 panel block: a [`Q32_PANEL`] block, then `m[16]` f32.
const Q41_PANEL: usize = Q32_PANEL + 64;
/// A Q4_K panel block: `qs[64][16][4]` u8 nibbles, `sc[8][16]` i32,
/// `mins[8][16]` i32 (the i16 pair `(m, m)`), `d[16]`, `dmin[16]` f32.
const Q4K_PANEL: usize = 4096 + 512 + 512 + 128;
/// A Q6_K panel block: `qs[64][16][4]` u8 (0..63), `sc[16][16]` i32,
/// `scp[8][16]` i32 (the i16 pair `(sc_2k, sc_2k+1)`), `d[16]` f32.
const Q6K_PANEL: usize = 4096 + 1024 + 512 + 64;

/// Whether a batch of `n_tokens` against `w` takes the GEMM on this CPU.
/// Q4_K only where llama.cpp repacks it (rows in groups of eight): elsewhere
/// its order is `vec_dot`'s, which the per-token kernels reproduce.
pub(crate) fn applies(w: &CpuWeight, n_tokens: usize) -> bool {
    n_tokens >= MIN_TOKENS
        && Kind::of(w.ty).is_some_and(|k| {
            w.cols.is_multiple_of(k.block()) && (k != Kind::Q4K || is_repacked(w.ty, w.rows))
        })
        && has_avx512_vnni()
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// Writes the 4-byte group `q` of panel row `r` (`r < 16`).
#[inline(always)]
fn put_quads(qs: &mut [u8], r: usize, vals: &[u8]) {
    for (q, v) in vals.chunks_exact(4).enumerate() {
        let o = q * 64 + r * 4;
        qs[o..o + 4].copy_from_slice(v);
    }
}

fn put_i32(dst: &mut [u8], i: usize, v: i32) {
    dst[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_f32(dst: &mut [u8], i: usize, v: f32) {
    dst[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
}

/// Decodes block `b` of rows `r0..r0+16` of a K-quant `w` (`rows` rows of
/// `rb` bytes) into `dst` (one panel block). Rows past the end decode as zeros.
fn pack_block(kind: Kind, w: &[u8], rb: usize, rows: usize, r0: usize, b: usize, dst: &mut [u8]) {
    dst.fill(0);
    let wb = kind.weight_bytes();
    for r in 0..PANEL.min(rows.saturating_sub(r0)) {
        let o = (r0 + r) * rb + b * wb;
        let blk = &w[o..o + wb];
        match kind {
            // The 32-column kinds: `x86::pack_q32`.
            Kind::Q4_0 | Kind::Q4_1 | Kind::Q5_0 | Kind::Q8_0 => {}
            Kind::Q4K => {
                let mut v = [0u8; 256];
                for j in 0..4 {
                    for i in 0..32 {
                        let q = blk[16 + 32 * j + i];
                        v[64 * j + i] = q & 0xF;
                        v[64 * j + 32 + i] = q >> 4;
                    }
                }
                put_quads(&mut dst[..4096], r, &v);
                for k in 0..8 {
                    let (sc, m) = scale_min_k4(k, &blk[4..16]);
                    put_i32(&mut dst[4096..], k * 16 + r, sc);
                    put_i32(&mut dst[4608..], k * 16 + r, m | (m << 16));
                }
                put_f32(&mut dst[5120..], r, f16_at(blk, 0));
                put_f32(&mut dst[5184..], r, f16_at(blk, 2));
            }
            Kind::Q6K => {
                let mut v = [0u8; 256];
                for n in 0..2 {
                    let (ql, qh) = (&blk[64 * n..], &blk[128 + 32 * n..]);
                    for l in 0..32 {
                        let e = 128 * n + l;
                        v[e] = (ql[l] & 0xF) | ((qh[l] & 3) << 4);
                        v[e + 32] = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
                        v[e + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                        v[e + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
                    }
                }
                put_quads(&mut dst[..4096], r, &v);
                let sc = |g: usize| i32::from(blk[192 + g] as i8);
                for g in 0..16 {
                    put_i32(&mut dst[4096..], g * 16 + r, sc(g));
                }
                for k in 0..8 {
                    let pair = (sc(2 * k) & 0xFFFF) | (sc(2 * k + 1) << 16);
                    put_i32(&mut dst[5120..], k * 16 + r, pair);
                }
                put_f32(&mut dst[5632..], r, f16_at(blk, 208));
            }
        }
    }
}

/// A batch's activations as the tiles read them: `bytes` (`stride` bytes a
/// token) in the `vec_dot_type` blocks, and for the 32-column kinds per token
/// and block (index `t * nb + b`) `d` = `d_a` (f32), `s` = Q8_1's `s_a`
/// (Q4_1), `corr` = `-offset · Σa` per block or, in the lane order, per
/// group of four columns (index `8 * (t * nb + b) + q`).
#[derive(Clone, Copy)]
struct Act<'a> {
    bytes: &'a [u8],
    stride: usize,
    d: &'a [f32],
    s: &'a [f32],
    corr: &'a [i32],
}

/// The per-block terms of [`Act`] for a 32-column kind.
fn q32_act_terms(
    kind: Kind,
    act: &[u8],
    arb: usize,
    n_tokens: usize,
    nb: usize,
    per_quad: bool,
) -> (Vec<f32>, Vec<f32>, Vec<i32>) {
    let ab = kind.act_bytes();
    let min = kind == Kind::Q4_1;
    let mut d = Vec::with_capacity(n_tokens * nb);
    let mut s = Vec::with_capacity(if min { n_tokens * nb } else { 0 });
    let mut corr = Vec::with_capacity(if min {
        0
    } else {
        n_tokens * nb * if per_quad { 8 } else { 1 }
    });
    let off = kind.offset();
    for t in 0..n_tokens {
        let row = &act[t * arb..t * arb + nb * ab];
        for blk in row.chunks_exact(ab) {
            d.push(f16_at(blk, 0));
            if min {
                s.push(f16_at(blk, 2));
                continue;
            }
            let quads = blk[2..34]
                .chunks_exact(4)
                .map(|q| q.iter().map(|&x| i32::from(x as i8)).sum::<i32>());
            if per_quad {
                corr.extend(quads.map(|v| -off * v));
            } else {
                corr.push(-off * quads.sum::<i32>());
            }
        }
    }
    (d, s, corr)
}

/// Where the results go: `out[t * m + r]`, written by several threads at once
/// (each only in its own rows).
#[derive(Clone, Copy)]
struct Out {
    ptr: *mut f32,
    m: usize,
    n_tokens: usize,
}

// SAFETY: `gemm` hands each pool thread a disjoint range of panels, so no two
// threads write the same element, and `Pool::run` returns only after every
// thread is done with the pointer (the borrowed `out` outlives it).
unsafe impl Sync for Out {}

/// `out[t*m + r] = w[r] · act[t]` for `t < n_tokens` through the panel GEMM;
/// `act` holds the activations in the weight's `vec_dot_type` (`arb` bytes a
/// row). The caller checked [`applies`] and the buffer sizes.
pub(crate) fn gemm(
    be: &super::CpuBackend,
    w: &CpuWeight,
    act: &[u8],
    arb: usize,
    out: &mut [f32],
    n_tokens: usize,
) {
    let Some(kind) = Kind::of(w.ty) else { return };
    let (m, k) = (w.rows, w.cols);
    let nb = k / kind.block();
    debug_assert!(arb >= nb * kind.act_bytes());
    assert!(out.len() >= m * n_tokens && act.len() >= arb * n_tokens);
    // Q4_0 where llama.cpp repacks it (rows in groups of eight) in its
    // repacked kernels' block order, the other 32-column cases in `vec_dot`'s
    // per-lane order.
    let lanes = !(kind == Kind::Q4_0 && m.is_multiple_of(8));
    let (d, s, corr) = match kind {
        Kind::Q4K | Kind::Q6K => (Vec::new(), Vec::new(), Vec::new()),
        _ => q32_act_terms(kind, act, arb, n_tokens, nb, lanes),
    };
    let acts = Act {
        bytes: act,
        stride: arb,
        d: &d,
        s: &s,
        corr: &corr,
    };
    let wb = w.bytes();
    let rb = w.row_bytes;
    let panels = m.div_ceil(PANEL);
    let threads = be.threads().min(panels).max(1);
    let per = panels.div_ceil(threads);
    let dst = Out {
        ptr: out.as_mut_ptr(),
        m,
        n_tokens,
    };
    let job = |i: usize| {
        let mut panel = vec![0u8; nb * kind.panel_bytes()];
        for p in i * per..((i + 1) * per).min(panels) {
            let r0 = p * PANEL;
            match kind {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `applies` checked AVX-512 F/BW/VNNI; rows `r0..`
                // (at least one) of `rb` bytes with `nb` blocks each are in `wb`.
                Kind::Q4_0 | Kind::Q4_1 | Kind::Q5_0 | Kind::Q8_0 => unsafe {
                    x86::pack_q32(kind, wb, rb, m, r0, nb, &mut panel)
                },
                _ => {
                    for (b, blk) in panel.chunks_exact_mut(kind.panel_bytes()).enumerate() {
                        pack_block(kind, wb, rb, m, r0, b, blk);
                    }
                }
            }
            let nrows = PANEL.min(m - r0);
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `applies` checked AVX-512 F/BW/VNNI; the panel holds
            // `nb` blocks, `act` `n_tokens` rows of `arb` bytes with `nb`
            // blocks each, `acts` the terms `Act` lists (32-column
            // kinds), and `dst` has room for rows `r0..r0+nrows` of every token.
            unsafe {
                x86::panel_tokens(kind, lanes, &panel, nb, acts, dst, r0, nrows)
            };
        }
    };
    if threads == 1 {
        job(0);
    } else {
        be.pool.run(&job);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Act, Kind, Out, Q4K_PANEL, Q6K_PANEL, Q32_PANEL, Q41_PANEL};

    /// Four activation bytes at `p`, broadcast to all 16 lanes (a macro so
    /// that it inlines into the AVX-512 functions; callers guarantee 4
    /// readable bytes at `p`).
    macro_rules! bcast {
        ($p:expr) => {
            _mm512_set1_epi32($p.cast::<i32>().read_unaligned())
        };
    }

    /// Decodes all `nb` blocks of the 32-column panel at rows `r0..`: each
    /// 4-byte group of the 16 rows' blocks is one gather. Weights become u8
    /// `q + offset` (Q4_1: the nibbles), the f16 scales (and Q4_1's mins) f32. Rows past `rows` repeat the last row (their outputs are not
    /// stored).
    ///
    /// # Safety
    /// AVX-512 F/BW/VNNI present; `r0 < rows`, `w` holds `rows` rows of `rb`
    /// bytes with `nb` blocks of the kind each, `panel` `nb` panel blocks.
    // SAFETY: an unsafe fn for its target features and raw accesses; callers
    // check the CPU features and the sizes stated above.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn pack_q32(
        kind: Kind,
        w: &[u8],
        rb: usize,
        rows: usize,
        r0: usize,
        nb: usize,
        panel: &mut [u8],
    ) {
        let bw = kind.weight_bytes();
        let pbytes = if kind == Kind::Q4_1 {
            Q41_PANEL
        } else {
            Q32_PANEL
        };
        debug_assert!(r0 < rows && w.len() >= rows * rb && panel.len() >= nb * pbytes);
        debug_assert!(16 * rb < i32::MAX as usize);
        let last = rows - r0 - 1;
        let offs: [i32; 16] = std::array::from_fn(|r| (r.min(last) * rb) as i32);
        // SAFETY: (all gathers and stores) every gathered dword lies inside a
        // block of a row `< rows` (offsets 0..4 for the scale, then the
        // 4-byte groups of the quants, which end at the block's end), and
        // every store inside panel block `b < nb`.
        unsafe {
            let base = w.as_ptr().add(r0 * rb);
            let offs = _mm512_loadu_si512(offs.as_ptr().cast());
            let m4 = _mm512_set1_epi32(0x0F0F_0F0F);
            let gather = |o: __m512i, at: usize| {
                _mm512_i32gather_epi32::<1>(
                    _mm512_add_epi32(o, _mm512_set1_epi32(at as i32)),
                    base.cast(),
                )
            };
            // Bits 0..3 of `h` to bit 4 of bytes 0..3 (the disjoint shifted
            // copies add without carries).
            let spread = |h: __m512i| {
                let x = _mm512_mullo_epi32(
                    _mm512_and_si512(h, _mm512_set1_epi32(0xF)),
                    _mm512_set1_epi32(0x0020_4081),
                );
                _mm512_slli_epi32::<4>(_mm512_and_si512(x, _mm512_set1_epi32(0x0101_0101)))
            };
            for b in 0..nb {
                let o = _mm512_add_epi32(offs, _mm512_set1_epi32((b * bw) as i32));
                let dst = panel.as_mut_ptr().add(b * pbytes);
                let put = |q: usize, v: __m512i| _mm512_storeu_si512(dst.add(64 * q).cast(), v);
                let dm = gather(o, 0);
                let d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dm));
                _mm512_storeu_ps(dst.add(512).cast(), d);
                match kind {
                    Kind::Q4_1 => {
                        let m = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(dm)));
                        _mm512_storeu_ps(dst.add(576).cast(), m);
                        for j in 0..4 {
                            let v = gather(o, 4 + 4 * j);
                            put(j, _mm512_and_si512(v, m4));
                            put(4 + j, _mm512_and_si512(_mm512_srli_epi32::<4>(v), m4));
                        }
                    }
                    Kind::Q4_0 => {
                        for j in 0..4 {
                            let v = gather(o, 2 + 4 * j);
                            put(j, _mm512_and_si512(v, m4));
                            put(4 + j, _mm512_and_si512(_mm512_srli_epi32::<4>(v), m4));
                        }
                    }
                    Kind::Q5_0 => {
                        let qh = gather(o, 2);
                        for j in 0..4 {
                            let v = gather(o, 6 + 4 * j);
                            let hl = spread(_mm512_srlv_epi32(qh, _mm512_set1_epi32(4 * j as i32)));
                            let hh =
                                spread(_mm512_srlv_epi32(qh, _mm512_set1_epi32(16 + 4 * j as i32)));
                            put(j, _mm512_or_si512(_mm512_and_si512(v, m4), hl));
                            put(
                                4 + j,
                                _mm512_or_si512(
                                    _mm512_and_si512(_mm512_srli_epi32::<4>(v), m4),
                                    hh,
                                ),
                            );
                        }
                    }
                    _ => {
                        let flip = _mm512_set1_epi32(0x8080_8080u32 as i32);
                        for j in 0..8 {
                            put(j, _mm512_xor_si512(gather(o, 2 + 4 * j), flip));
                        }
                    }
                }
            }
        }
    }

    /// Runs every token of the batch against one decoded panel (rows
    /// `r0..r0+nrows` of the output).
    ///
    /// # Safety
    /// AVX-512 F/BW/VNNI present; sizes as `gemm` states.
    // SAFETY: an unsafe fn for its target features and raw accesses; callers
    // check the CPU features and the sizes stated above.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn panel_tokens(
        kind: Kind,
        lanes: bool,
        panel: &[u8],
        nb: usize,
        a: Act<'_>,
        out: Out,
        r0: usize,
        nrows: usize,
    ) {
        let n = out.n_tokens;
        let mask: __mmask16 = if nrows >= 16 {
            0xFFFF
        } else {
            (1u16 << nrows) - 1
        };
        macro_rules! tiles {
            ($f:ident, $t:expr, $lo:expr, $hi:expr $(, $c:expr)?) => {{
                let (lo, hi): (usize, usize) = ($lo, $hi);
                let mut t0 = lo;
                while t0 + $t <= hi {
                    // SAFETY: as this function's contract; `t0 + T <= n`.
                    unsafe { $f::<$t $(, $c)?>(Tile { panel, nb, a, out, r0, mask, t0 }) };
                    t0 += $t;
                }
                // SAFETY: as this function's contract; `hi <= n`.
                unsafe {
                    match hi - t0 {
                        0 => {}
                        1 => $f::<1 $(, $c)?>(Tile { panel, nb, a, out, r0, mask, t0 }),
                        2 => $f::<2 $(, $c)?>(Tile { panel, nb, a, out, r0, mask, t0 }),
                        3 => $f::<3 $(, $c)?>(Tile { panel, nb, a, out, r0, mask, t0 }),
                        4 => $f::<4 $(, $c)?>(Tile { panel, nb, a, out, r0, mask, t0 }),
                        5 => $f::<5 $(, $c)?>(Tile { panel, nb, a, out, r0, mask, t0 }),
                        6 => $f::<6 $(, $c)?>(Tile { panel, nb, a, out, r0, mask, t0 }),
                        _ => $f::<7 $(, $c)?>(Tile { panel, nb, a, out, r0, mask, t0 }),
                    }
                }
            }};
        }
        match kind {
            Kind::Q4_0 | Kind::Q5_0 | Kind::Q8_0 if lanes => tiles!(q32_lanes_tile, 2, 0, n, false),
            Kind::Q4_1 => tiles!(q32_lanes_tile, 2, 0, n, true),
            Kind::Q4_0 | Kind::Q5_0 | Kind::Q8_0 => tiles!(q32_tile, 8, 0, n),
            Kind::Q6K => tiles!(q6k_tile, 8, 0, n),
            Kind::Q4K => {
                // Complete groups of four in the gemm order, the rest in the gemv order.
                let main = n - n % 4;
                tiles!(q4k_tile, 4, 0, main, true);
                tiles!(q4k_tile, 4, main, n, false);
            }
        }
    }

    /// One tile's inputs: a decoded panel of `nb` blocks, the batch's
    /// activations, where the panel's rows `r0..` (lanes in `mask`) go, and
    /// the first token `t0`.
    #[derive(Clone, Copy)]
    struct Tile<'a> {
        panel: &'a [u8],
        nb: usize,
        a: Act<'a>,
        out: Out,
        r0: usize,
        mask: __mmask16,
        t0: usize,
    }

    /// Stores the 16 lanes of `v` (masked to the panel's rows) as token `t`'s
    /// outputs for rows `r0..`.
    // SAFETY: an unsafe fn for its target features and raw accesses; callers
    // check the CPU features and the sizes stated above.
    #[inline(always)]
    unsafe fn store(out: Out, t: usize, r0: usize, mask: __mmask16, v: __m512) {
        // SAFETY: `t < n_tokens` and rows `r0 + lane` for the set mask bits
        // are `< m`, so every written element is inside `out`.
        unsafe { _mm512_mask_storeu_ps(out.ptr.add(t * out.m + r0), mask, v) };
    }

    /// Q4_0/Q5_0/Q8_0 × Q8_0, `T` tokens from `t0`.
    // SAFETY: an unsafe fn for its target features and raw accesses; callers
    // check the CPU features and the sizes stated above.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn q32_tile<const T: usize>(tile: Tile<'_>) {
        let Tile {
            panel,
            nb,
            a,
            out,
            r0,
            mask,
            t0,
        } = tile;
        let mut acc = [_mm512_setzero_ps(); T];
        let pp = panel.as_ptr();
        let ap = a.bytes.as_ptr();
        for b in 0..nb {
            // SAFETY: (all loads) block `b < nb` of the panel and of each
            // token's activation row, terms `(t0 + t) * nb + b` exist.
            unsafe {
                let pb = pp.add(b * Q32_PANEL);
                let w: [__m512i; 8] =
                    std::array::from_fn(|q| _mm512_loadu_si512(pb.add(64 * q).cast()));
                let dw = _mm512_loadu_ps(pb.add(512).cast());
                for (t, acc) in acc.iter_mut().enumerate() {
                    let i = (t0 + t) * nb + b;
                    let x = ap.add((t0 + t) * a.stride + b * 34 + 2);
                    let mut s = _mm512_set1_epi32(*a.corr.get_unchecked(i));
                    for (q, wq) in w.iter().enumerate() {
                        s = _mm512_dpbusd_epi32(s, *wq, bcast!(x.add(4 * q)));
                    }
                    let d = _mm512_mul_ps(dw, _mm512_set1_ps(*a.d.get_unchecked(i)));
                    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), d, *acc);
                }
            }
        }
        for (t, v) in acc.into_iter().enumerate() {
            // SAFETY: as `store` requires.
            unsafe { store(out, t0 + t, r0, mask, v) };
        }
    }

    /// Q4_0/Q5_0/Q8_0 × Q8_0 (`MIN = false`) or Q4_1 × Q8_1 (`MIN = true`)
    /// in `vec_dot`'s order, `T` tokens from `t0`: eight float accumulators
    /// per (row, token), lane `q` taking the exact sum of columns `4q..4q+4`
    /// of each block times `d_w · d_a` by one FMA, added up at the end in
    /// `hsum_float_8`'s tree; `a.corr` holds the offset terms per group of
    /// four columns. Q4_1's `m_w · s_a` terms go to a separate sum (one FMA
    /// per block) added last, as in ggml.
    // SAFETY: an unsafe fn for its target features and raw accesses; callers
    // check the CPU features and the sizes stated above.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn q32_lanes_tile<const T: usize, const MIN: bool>(tile: Tile<'_>) {
        let Tile {
            panel,
            nb,
            a,
            out,
            r0,
            mask,
            t0,
        } = tile;
        let (pbytes, abytes, qoff) = if MIN {
            (Q41_PANEL, 36, 4)
        } else {
            (Q32_PANEL, 34, 2)
        };
        let mut acc = [[_mm512_setzero_ps(); 8]; T];
        let mut accm = [_mm512_setzero_ps(); T];
        let pp = panel.as_ptr();
        let ap = a.bytes.as_ptr();
        for b in 0..nb {
            // SAFETY: (all loads) block `b < nb` of the panel and of each
            // token's activation row, terms `(t0 + t) * nb + b` exist (eight
            // offset terms each without `MIN`).
            unsafe {
                let pb = pp.add(b * pbytes);
                let w: [__m512i; 8] =
                    std::array::from_fn(|q| _mm512_loadu_si512(pb.add(64 * q).cast()));
                let dw = _mm512_loadu_ps(pb.add(512).cast());
                for (t, acc) in acc.iter_mut().enumerate() {
                    let i = (t0 + t) * nb + b;
                    let x = ap.add((t0 + t) * a.stride + b * abytes + qoff);
                    let d = _mm512_mul_ps(dw, _mm512_set1_ps(*a.d.get_unchecked(i)));
                    for (q, (wq, acc)) in w.iter().zip(acc.iter_mut()).enumerate() {
                        let c = if MIN {
                            _mm512_setzero_si512()
                        } else {
                            _mm512_set1_epi32(*a.corr.get_unchecked(8 * i + q))
                        };
                        let s = _mm512_dpbusd_epi32(c, *wq, bcast!(x.add(4 * q)));
                        *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), d, *acc);
                    }
                    if MIN {
                        let mw = _mm512_loadu_ps(pb.add(576).cast());
                        accm[t] =
                            _mm512_fmadd_ps(mw, _mm512_set1_ps(*a.s.get_unchecked(i)), accm[t]);
                    }
                }
            }
        }
        for (t, v) in acc.iter().enumerate() {
            let mut v = _mm512_add_ps(
                _mm512_add_ps(_mm512_add_ps(v[0], v[4]), _mm512_add_ps(v[2], v[6])),
                _mm512_add_ps(_mm512_add_ps(v[1], v[5]), _mm512_add_ps(v[3], v[7])),
            );
            if MIN {
                v = _mm512_add_ps(v, accm[t]);
            }
            // SAFETY: as `store` requires.
            unsafe { store(out, t0 + t, r0, mask, v) };
        }
    }

    /// Q4_K × Q8_K, `T` tokens from `t0`; `PER_SB`: one FMA per 64-column
    /// sub-block pair (gemm order), else one per 256 columns (gemv order).
    // SAFETY: an unsafe fn for its target features and raw accesses; callers
    // check the CPU features and the sizes stated above.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn q4k_tile<const T: usize, const PER_SB: bool>(tile: Tile<'_>) {
        let Tile {
            panel,
            nb,
            a,
            out,
            r0,
            mask,
            t0,
        } = tile;
        let mut acc = [_mm512_setzero_ps(); T];
        let mut accm = [_mm512_setzero_ps(); T];
        let pp = panel.as_ptr();
        let ap = a.bytes.as_ptr();
        for b in 0..nb {
            // SAFETY: (all loads) block `b < nb` of the panel and of each
            // token's activation row (292 bytes: d, 256 qs, 16 i16 bsums).
            unsafe {
                let pb = pp.add(b * Q4K_PANEL);
                let dw = _mm512_loadu_ps(pb.add(5120).cast());
                let dmw = _mm512_loadu_ps(pb.add(5184).cast());
                let ab: [*const u8; T] =
                    std::array::from_fn(|t| ap.add((t0 + t) * a.stride + b * 292));
                let yd: [__m512; T] =
                    std::array::from_fn(|t| _mm512_set1_ps(ab[t].cast::<f32>().read_unaligned()));
                let mut isum = [_mm512_setzero_si512(); T];
                let mut msum = [_mm512_setzero_si512(); T];
                for j in 0..4 {
                    let mut ij = [_mm512_setzero_si512(); T];
                    for h in 0..2 {
                        let kk = 2 * j + h;
                        let w: [__m512i; 8] = std::array::from_fn(|q| {
                            _mm512_loadu_si512(pb.add(64 * (8 * kk + q)).cast())
                        });
                        let sc = _mm512_loadu_si512(pb.add(4096 + 64 * kk).cast());
                        for t in 0..T {
                            let x = ab[t].add(4 + 32 * kk);
                            let mut s = _mm512_setzero_si512();
                            for (q, wq) in w.iter().enumerate() {
                                s = _mm512_dpbusd_epi32(s, *wq, bcast!(x.add(4 * q)));
                            }
                            ij[t] = _mm512_add_epi32(ij[t], _mm512_mullo_epi32(s, sc));
                        }
                    }
                    let m0 = _mm512_loadu_si512(pb.add(4608 + 64 * (2 * j)).cast());
                    let m1 = _mm512_loadu_si512(pb.add(4608 + 64 * (2 * j + 1)).cast());
                    for t in 0..T {
                        let bs = ab[t].add(260);
                        let mj =
                            _mm512_dpwssd_epi32(_mm512_setzero_si512(), m0, bcast!(bs.add(8 * j)));
                        let mj = _mm512_dpwssd_epi32(mj, m1, bcast!(bs.add(8 * j + 4)));
                        if PER_SB {
                            let d = _mm512_mul_ps(dw, yd[t]);
                            let dm = _mm512_mul_ps(dmw, yd[t]);
                            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ij[t]), d, acc[t]);
                            accm[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(mj), dm, accm[t]);
                        } else {
                            isum[t] = _mm512_add_epi32(isum[t], ij[t]);
                            msum[t] = _mm512_add_epi32(msum[t], mj);
                        }
                    }
                }
                if !PER_SB {
                    for t in 0..T {
                        let d = _mm512_mul_ps(dw, yd[t]);
                        let dm = _mm512_mul_ps(dmw, yd[t]);
                        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), d, acc[t]);
                        accm[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(msum[t]), dm, accm[t]);
                    }
                }
            }
        }
        for t in 0..T {
            // SAFETY: as `store` requires.
            unsafe { store(out, t0 + t, r0, mask, _mm512_sub_ps(acc[t], accm[t])) };
        }
    }

    /// Q6_K × Q8_K (ggml's tiled order), `T` tokens from `t0`.
    // SAFETY: an unsafe fn for its target features and raw accesses; callers
    // check the CPU features and the sizes stated above.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn q6k_tile<const T: usize>(tile: Tile<'_>) {
        let Tile {
            panel,
            nb,
            a,
            out,
            r0,
            mask,
            t0,
        } = tile;
        let mut acc = [_mm512_setzero_ps(); T];
        let pp = panel.as_ptr();
        let ap = a.bytes.as_ptr();
        for b in 0..nb {
            // SAFETY: (all loads) block `b < nb` of the panel and of each
            // token's activation row (292 bytes: d, 256 qs, 16 i16 bsums).
            unsafe {
                let pb = pp.add(b * Q6K_PANEL);
                let ab: [*const u8; T] =
                    std::array::from_fn(|t| ap.add((t0 + t) * a.stride + b * 292));
                let mut isum = [_mm512_setzero_si512(); T];
                for g in 0..16 {
                    let w: [__m512i; 4] = std::array::from_fn(|q| {
                        _mm512_loadu_si512(pb.add(64 * (4 * g + q)).cast())
                    });
                    let sc = _mm512_loadu_si512(pb.add(4096 + 64 * g).cast());
                    for t in 0..T {
                        let x = ab[t].add(4 + 16 * g);
                        let mut s = _mm512_setzero_si512();
                        for (q, wq) in w.iter().enumerate() {
                            s = _mm512_dpbusd_epi32(s, *wq, bcast!(x.add(4 * q)));
                        }
                        isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(s, sc));
                    }
                }
                let dw = _mm512_loadu_ps(pb.add(5632).cast());
                for t in 0..T {
                    let bs = ab[t].add(260);
                    let mut c = _mm512_setzero_si512();
                    for kk in 0..8 {
                        let scp = _mm512_loadu_si512(pb.add(5120 + 64 * kk).cast());
                        c = _mm512_dpwssd_epi32(c, scp, bcast!(bs.add(4 * kk)));
                    }
                    let s = _mm512_sub_epi32(isum[t], _mm512_slli_epi32::<5>(c));
                    let yd = _mm512_set1_ps(ab[t].cast::<f32>().read_unaligned());
                    acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_cvtepi32_ps(s)), yd, acc[t]);
                }
            }
        }
        for (t, v) in acc.into_iter().enumerate() {
            // SAFETY: as `store` requires.
            unsafe { store(out, t0 + t, r0, mask, v) };
        }
    }
}
