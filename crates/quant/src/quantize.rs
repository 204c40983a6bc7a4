//! Reference quantizers f32 → blocks, with the semantics of ggml's
//! `quantize_row_*_ref` (ggml-quants.c): the same scale search
//! (`make_qkx2_quants` for Q2_K/Q4_K/Q5_K, `make_qx_quants` for Q6_K,
//! `make_q3_quants` for Q3_K, `quantize_row_iq4_nl_impl` without importance
//! weights for IQ4_NL/IQ4_XS), the same rounding (`roundf`, truncating casts,
//! and `nearest_int`'s add-1.5·2²³ trick) and the same float operation order,
//! so that the output bytes match ggml's for finite inputs.
//!
//! F32, F16 and BF16 "quantize" by conversion (round-to-nearest-even, ggml's
//! `GGML_FP32_TO_FP16` / `GGML_FP32_TO_BF16`).

// The loops mirror ggml's index arithmetic one to one, which keeps them
// checkable against the C reference; iterator rewrites would obscure that.
#![allow(clippy::needless_range_loop)]

use crate::QuantError;
use crate::blocks::*;
use crate::dequant::check_len;
use bytemuck::Pod;
use half::f16;
use zeta_gguf::GgmlType;

/// Below this a group's max |x| counts as zero (ggml's `GROUP_MAX_EPS`).
const GROUP_MAX_EPS: f32 = 1e-15;

/// Whether [`quantize`] supports `ty`.
pub fn can_quantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16
            | BF16
            | Q4_0
            | Q4_1
            | Q5_0
            | Q5_1
            | Q8_0
            | Q8_1
            | Q2_K
            | Q3_K
            | Q4_K
            | Q5_K
            | Q6_K
            | Q8_K
            | IQ4_NL
            | IQ4_XS
    )
}

/// Quantizes `src` (a whole number of blocks of `ty`) into `dst`
/// (`dst.len() == ty.row_bytes(src.len())`, any alignment) with ggml's
/// reference quantizer for `ty`.
pub fn quantize(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    if !can_quantize(ty) {
        return Err(QuantError::Unsupported { ty, op: "quantize" });
    }
    check_len(ty, src.len(), dst.len())?;
    use GgmlType::*;
    match ty {
        F32 => {
            for (o, v) in dst.chunks_exact_mut(4).zip(src) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        F16 => {
            for (o, v) in dst.chunks_exact_mut(2).zip(src) {
                o.copy_from_slice(&f16::from_f32(*v).to_bits().to_le_bytes());
            }
        }
        BF16 => {
            for (o, v) in dst.chunks_exact_mut(2).zip(src) {
                o.copy_from_slice(&f32_to_bf16(*v).to_le_bytes());
            }
        }
        Q4_0 => run(src, dst, quantize_block_q4_0),
        Q4_1 => run(src, dst, quantize_block_q4_1),
        Q5_0 => run(src, dst, quantize_block_q5_0),
        Q5_1 => run(src, dst, quantize_block_q5_1),
        Q8_0 => run(src, dst, quantize_block_q8_0),
        Q8_1 => run(src, dst, quantize_block_q8_1),
        Q2_K => run(src, dst, quantize_block_q2_k),
        Q3_K => run(src, dst, quantize_block_q3_k),
        Q4_K => run(src, dst, quantize_block_q4_k),
        Q5_K => run(src, dst, quantize_block_q5_k),
        Q6_K => run(src, dst, quantize_block_q6_k),
        Q8_K => run(src, dst, quantize_block_q8_k),
        IQ4_NL => run(src, dst, quantize_block_iq4_nl),
        IQ4_XS => run(src, dst, quantize_block_iq4_xs),
        _ => return Err(QuantError::Unsupported { ty, op: "quantize" }),
    }
    Ok(())
}

/// Quantizes one row of activations to Q8_0 (ggml's `quantize_row_q8_0`);
/// same as `quantize(GgmlType::Q8_0, x, y)`.
pub fn quantize_row_q8_0(x: &[f32], y: &mut [u8]) -> Result<(), QuantError> {
    quantize(GgmlType::Q8_0, x, y)
}

/// Quantizes one row of activations to Q8_1; same as `quantize(GgmlType::Q8_1, x, y)`.
pub fn quantize_row_q8_1(x: &[f32], y: &mut [u8]) -> Result<(), QuantError> {
    quantize(GgmlType::Q8_1, x, y)
}

/// Quantizes one row of activations to Q8_K; same as `quantize(GgmlType::Q8_K, x, y)`.
pub fn quantize_row_q8_k(x: &[f32], y: &mut [u8]) -> Result<(), QuantError> {
    quantize(GgmlType::Q8_K, x, y)
}

/// ggml's `GGML_FP32_TO_BF16`: round to nearest even; NaN stays a quiet NaN.
#[inline]
pub fn f32_to_bf16(v: f32) -> u16 {
    let u = v.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// Runs a per-block quantizer over all blocks (lengths already checked).
fn run<B: Pod, const N: usize>(src: &[f32], dst: &mut [u8], f: fn(&[f32; N]) -> B) {
    let size = std::mem::size_of::<B>();
    for (x, out) in src.chunks_exact(N).zip(dst.chunks_exact_mut(size)) {
        if let Ok(x) = <&[f32; N]>::try_from(x) {
            out.copy_from_slice(bytemuck::bytes_of(&f(x)));
        }
    }
}

/// ggml's `nearest_int`: round to nearest (ties to even) via the float
/// representation of `fval + 1.5·2²³`; exact for |fval| ≤ 4194303.
#[inline]
pub(crate) fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12_582_912.0f32;
    (val.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// C's `(int)f` conversion as x86 `cvttss2si` does it (out of range and NaN
/// give `i32::MIN`), so that out-of-range inputs behave like the reference.
#[inline]
fn c_trunc(f: f32) -> i32 {
    if !(-2_147_483_648.0..2_147_483_648.0).contains(&f) {
        i32::MIN
    } else {
        f as i32
    }
}

/// `argmax |x|` returning (amax, x at that position), first occurrence wins.
#[inline]
fn abs_max(x: &[f32]) -> (f32, f32) {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    (amax, max)
}

/// ggml's `quantize_row_q4_0_ref` for one block.
pub fn quantize_block_q4_0(x: &[f32; 32]) -> BlockQ4_0 {
    let (_, max) = abs_max(x);
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0u8; 16];
    for j in 0..16 {
        let x0 = x[j] * id;
        let x1 = x[j + 16] * id;
        let xi0 = (c_trunc(x0 + 8.5) as i8).min(15) as u8;
        let xi1 = (c_trunc(x1 + 8.5) as i8).min(15) as u8;
        qs[j] = xi0 | (xi1 << 4);
    }
    BlockQ4_0 {
        d: f16::from_f32(d),
        qs,
    }
}

/// (min, max) of a block as ggml's `_1` quantizers compute it.
#[inline]
fn min_max(x: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// ggml's `quantize_row_q4_1_ref` for one block.
pub fn quantize_block_q4_1(x: &[f32; 32]) -> BlockQ4_1 {
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0u8; 16];
    for j in 0..16 {
        let x0 = (x[j] - min) * id;
        let x1 = (x[j + 16] - min) * id;
        let xi0 = (c_trunc(x0 + 0.5) as i8).min(15) as u8;
        let xi1 = (c_trunc(x1 + 0.5) as i8).min(15) as u8;
        qs[j] = xi0 | (xi1 << 4);
    }
    BlockQ4_1 {
        d: f16::from_f32(d),
        m: f16::from_f32(min),
        qs,
    }
}

/// ggml's `quantize_row_q5_0_ref` for one block.
pub fn quantize_block_q5_0(x: &[f32; 32]) -> BlockQ5_0 {
    let (_, max) = abs_max(x);
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0u8; 16];
    let mut qh = 0u32;
    for j in 0..16 {
        let x0 = x[j] * id;
        let x1 = x[j + 16] * id;
        let xi0 = (c_trunc(x0 + 16.5) as i8).min(31) as u8;
        let xi1 = (c_trunc(x1 + 16.5) as i8).min(31) as u8;
        qs[j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
        qh |= (((xi0 & 0x10) >> 4) as u32) << j;
        qh |= (((xi1 & 0x10) >> 4) as u32) << (j + 16);
    }
    BlockQ5_0 {
        d: f16::from_f32(d),
        qh: qh.to_le_bytes(),
        qs,
    }
}

/// ggml's `quantize_row_q5_1_ref` for one block.
pub fn quantize_block_q5_1(x: &[f32; 32]) -> BlockQ5_1 {
    let (min, max) = min_max(x);
    let d = (max - min) / 31.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0u8; 16];
    let mut qh = 0u32;
    for j in 0..16 {
        let x0 = (x[j] - min) * id;
        let x1 = (x[j + 16] - min) * id;
        let xi0 = c_trunc(x0 + 0.5) as u8;
        let xi1 = c_trunc(x1 + 0.5) as u8;
        qs[j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
        qh |= (((xi0 & 0x10) >> 4) as u32) << j;
        qh |= (((xi1 & 0x10) >> 4) as u32) << (j + 16);
    }
    BlockQ5_1 {
        d: f16::from_f32(d),
        m: f16::from_f32(min),
        qh: qh.to_le_bytes(),
        qs,
    }
}

/// Scale and quants of a Q8_0/Q8_1 block (`d = amax/127`, `q = roundf(x/d)`).
#[inline]
fn q8_32(x: &[f32; 32]) -> (f32, [i8; 32]) {
    // C's MAX(amax, fabsf(v)) = amax > |v| ? amax : |v|.
    let amax = x
        .iter()
        .fold(0.0f32, |a, v| if a > v.abs() { a } else { v.abs() });
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; 32];
    for (q, v) in qs.iter_mut().zip(x) {
        // roundf: half away from zero, like f32::round.
        *q = c_trunc((v * id).round()) as i8;
    }
    (d, qs)
}

/// ggml's `quantize_row_q8_0_ref` for one block.
pub fn quantize_block_q8_0(x: &[f32; 32]) -> BlockQ8_0 {
    let (d, qs) = q8_32(x);
    BlockQ8_0 {
        d: f16::from_f32(d),
        qs,
    }
}

/// ggml's `quantize_row_q8_1_ref` for one block (`s = fp16(sum(qs) * d)`).
pub fn quantize_block_q8_1(x: &[f32; 32]) -> BlockQ8_1 {
    let (d, qs) = q8_32(x);
    let sum: i32 = qs.iter().map(|&q| q as i32).sum();
    BlockQ8_1 {
        d: f16::from_f32(d),
        s: f16::from_f32(sum as f32 * d),
        qs,
    }
}

/// ggml's `quantize_row_q8_K_ref` for one block.
pub fn quantize_block_q8_k(x: &[f32; QK_K]) -> BlockQ8K {
    let (amax, max) = abs_max(x);
    let mut y = BlockQ8K {
        d: 0.0,
        qs: [0; QK_K],
        bsums: [0; QK_K / 16],
    };
    if amax == 0.0 {
        return y;
    }
    let iscale = -127.0f32 / max;
    for (q, v) in y.qs.iter_mut().zip(x) {
        *q = nearest_int(iscale * v).min(127) as i8;
    }
    for (s, g) in y.bsums.iter_mut().zip(y.qs.chunks_exact(16)) {
        *s = g.iter().map(|&q| q as i32).sum::<i32>() as i16;
    }
    y.d = 1.0 / iscale;
    y
}

/// ggml's `make_qkx2_quants`: asymmetric quantization of `x` to 0..=nmax
/// with a weighted least-squares search over `nstep+1` candidate scales.
/// Writes the levels to `l` and returns (scale, -min).
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out.iter_mut().for_each(|v| *v = 0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min));
        l_out[i] = l.clamp(0, nmax) as u8;
        let mut diff = scale * l_out[i] as f32 + min - x[i];
        diff = if use_mad { diff.abs() } else { diff * diff };
        best_error += weights[i] * diff;
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let mut sum_l = 0.0f32;
        let mut sum_l2 = 0.0f32;
        let mut sum_xl = 0.0f32;
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = l as u8;
            let w = weights[i];
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let mut diff = this_scale * laux[i] as f32 + this_min - x[i];
                diff = if use_mad { diff.abs() } else { diff * diff };
                cur_error += weights[i] * diff;
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml's `make_qx_quants` with `qw = NULL`: symmetric quantization of `x` to
/// -nmax..nmax-1 (stored +nmax in `l_out`), returns the scale.
fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [i8], rmse_type: i32) -> f32 {
    let n = x.len();
    let (amax, max) = abs_max(x);
    if amax < GROUP_MAX_EPS {
        l_out.iter_mut().for_each(|v| *v = 0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let mut iscale = -nmaxf / max;
    if rmse_type == 0 {
        for i in 0..n {
            let l = nearest_int(iscale * x[i]);
            l_out[i] = (nmax + l.clamp(-nmax, nmax - 1)) as i8;
        }
        return 1.0 / iscale;
    }
    let mut rmse_type = rmse_type;
    let mut return_early = false;
    if rmse_type < 0 {
        rmse_type = -rmse_type;
        return_early = true;
    }
    let weight = |v: f32| -> f32 {
        match rmse_type {
            1 => v * v,
            2 => 1.0,
            3 => v.abs(),
            _ => v.abs().sqrt(),
        }
    };
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l_out[i] = (l + nmax) as i8;
        let w = weight(x[i]);
        let lf = l as f32;
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    if return_early {
        return if suml2 > 0.0 {
            0.5 * (scale + 1.0 / iscale)
        } else {
            1.0 / iscale
        };
    }
    let mut best = scale * sumlx;
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmaxf + 0.1f32 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &xi in x {
            let l = nearest_int(iscale * xi).clamp(-nmax, nmax - 1);
            let w = weight(xi);
            let lf = l as f32;
            sumlx += w * xi * lf;
            suml2 += w * lf * lf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..n {
                let l = nearest_int(iscale * x[i]);
                l_out[i] = (nmax + l.clamp(-nmax, nmax - 1)) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// ggml's `make_q3_quants`: symmetric quantization to -nmax..nmax-1 with an
/// iterative per-element refinement (`do_rmse`), levels stored +nmax.
fn make_q3_quants(nmax: i32, x: &[f32], l_out: &mut [i8], do_rmse: bool) -> f32 {
    let n = x.len();
    let (amax, max) = abs_max(x);
    if amax < GROUP_MAX_EPS {
        l_out.iter_mut().for_each(|v| *v = 0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    if do_rmse {
        let mut sumlx = 0.0f32;
        let mut suml2 = 0.0f32;
        for i in 0..n {
            let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
            l_out[i] = l as i8;
            let w = x[i] * x[i];
            let lf = l as f32;
            sumlx += w * x[i] * lf;
            suml2 += w * lf * lf;
        }
        for _ in 0..5 {
            let mut n_changed = 0;
            for i in 0..n {
                let w = x[i] * x[i];
                let li = l_out[i] as f32;
                let mut slx = sumlx - w * x[i] * li;
                if slx > 0.0 {
                    let mut sl2 = suml2 - w * li * li;
                    let new_l = nearest_int(x[i] * sl2 / slx).clamp(-nmax, nmax - 1);
                    if new_l != l_out[i] as i32 {
                        let nl = new_l as f32;
                        slx += w * x[i] * nl;
                        sl2 += w * nl * nl;
                        if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                            l_out[i] = new_l as i8;
                            sumlx = slx;
                            suml2 = sl2;
                            n_changed += 1;
                        }
                    }
                }
            }
            if n_changed == 0 {
                break;
            }
        }
        for v in l_out.iter_mut().take(n) {
            *v = v.wrapping_add(nmax as i8);
        }
        return if suml2 > 0.0 { sumlx / suml2 } else { 0.0 };
    }
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l_out[i] = (l + nmax) as i8;
    }
    1.0 / iscale
}

/// ggml's `quantize_row_q2_K_ref` for one block.
pub fn quantize_block_q2_k(x: &[f32; QK_K]) -> BlockQ2K {
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 16];
    let mut weights = [0f32; 16];
    let mut mins = [0f32; QK_K / 16];
    let mut scales = [0f32; QK_K / 16];
    const Q4SCALE: f32 = 15.0;

    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..QK_K / 16 {
        let xs = &x[16 * j..16 * j + 16];
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = v.abs();
        }
        let (s, m) = make_qkx2_quants(
            3,
            xs,
            &weights,
            &mut l[16 * j..16 * j + 16],
            &mut laux,
            -0.5,
            0.1,
            15,
            true,
        );
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let mut y = BlockQ2K {
        scales: [0; 16],
        qs: [0; 64],
        d: f16::ZERO,
        dmin: f16::ZERO,
    };
    if max_scale > 0.0 {
        let iscale = Q4SCALE / max_scale;
        for j in 0..QK_K / 16 {
            y.scales[j] = nearest_int(iscale * scales[j]) as u8;
        }
        y.d = f16::from_f32(max_scale / Q4SCALE);
    }
    if max_min > 0.0 {
        let iscale = Q4SCALE / max_min;
        for j in 0..QK_K / 16 {
            let li = nearest_int(iscale * mins[j]);
            y.scales[j] |= (li << 4) as u8;
        }
        y.dmin = f16::from_f32(max_min / Q4SCALE);
    }
    for j in 0..QK_K / 16 {
        let d = y.d.to_f32() * (y.scales[j] & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let dm = y.dmin.to_f32() * (y.scales[j] >> 4) as f32;
        for ii in 0..16 {
            let li = nearest_int((x[16 * j + ii] + dm) / d).clamp(0, 3);
            l[16 * j + ii] = li as u8;
        }
    }
    for j in (0..QK_K).step_by(128) {
        for k in 0..32 {
            y.qs[j / 4 + k] =
                l[j + k] | (l[j + k + 32] << 2) | (l[j + k + 64] << 4) | (l[j + k + 96] << 6);
        }
    }
    y
}

/// ggml's `quantize_row_q3_K_ref` for one block.
pub fn quantize_block_q3_k(x: &[f32; QK_K]) -> BlockQ3K {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    let mut max_scale = 0.0f32;
    let mut amax = 0.0f32;
    for j in 0..QK_K / 16 {
        scales[j] = make_q3_quants(
            4,
            &x[16 * j..16 * j + 16],
            &mut l[16 * j..16 * j + 16],
            true,
        );
        let scale = scales[j].abs();
        if scale > amax {
            amax = scale;
            max_scale = scales[j];
        }
    }
    let mut y = BlockQ3K {
        hmask: [0; 32],
        qs: [0; 64],
        scales: [0; 12],
        d: f16::ZERO,
    };
    if max_scale != 0.0 {
        let iscale = -32.0f32 / max_scale;
        for j in 0..QK_K / 16 {
            let mut li = nearest_int(iscale * scales[j]) as i8;
            li = li.clamp(-32, 31) + 32;
            if j < 8 {
                y.scales[j] = (li & 0xF) as u8;
            } else {
                y.scales[j - 8] |= ((li & 0xF) << 4) as u8;
            }
            li >>= 4;
            y.scales[j % 4 + 8] |= (li << (2 * (j / 4))) as u8;
        }
        y.d = f16::from_f32(1.0 / iscale);
    }
    for j in 0..QK_K / 16 {
        let lo = if j < 8 {
            y.scales[j] & 0xF
        } else {
            y.scales[j - 8] >> 4
        };
        let sc =
            ((lo | (((y.scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) as i8).wrapping_sub(32);
        let d = y.d.to_f32() * sc as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let li = nearest_int(x[16 * j + ii] / d).clamp(-4, 3);
            l[16 * j + ii] = (li + 4) as i8;
        }
    }
    let mut m = 0;
    let mut hm: u8 = 1;
    for v in l.iter_mut() {
        if *v > 3 {
            y.hmask[m] |= hm;
            *v -= 4;
        }
        m += 1;
        if m == QK_K / 8 {
            m = 0;
            hm = hm.wrapping_shl(1);
        }
    }
    for j in (0..QK_K).step_by(128) {
        for k in 0..32 {
            y.qs[j / 4 + k] =
                (l[j + k] | (l[j + k + 32] << 2) | (l[j + k + 64] << 4) | (l[j + k + 96] << 6))
                    as u8;
        }
    }
    y
}

/// The shared part of Q4_K/Q5_K: per-group (scale, min) search, 6-bit
/// packing of scales/mins, final levels. Returns (d, dmin, scales, levels).
fn qk_scales_mins(
    x: &[f32; QK_K],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f16, f16, [u8; 12], [u8; QK_K]) {
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 32];
    let mut weights = [0f32; 32];
    let mut mins = [0f32; QK_K / 32];
    let mut scales = [0f32; QK_K / 32];
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..QK_K / 32 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx2_quants(
            nmax,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            &mut laux,
            rmin,
            rdelta,
            nstep,
            false,
        );
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut sc = [0u8; 12];
    for j in 0..QK_K / 32 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            sc[j - 4] |= (ls >> 4) << 6;
            sc[j] |= (lm >> 4) << 6;
        }
    }
    let d = f16::from_f32(max_scale / 63.0);
    let dmin = f16::from_f32(max_min / 63.0);
    for j in 0..QK_K / 32 {
        let (s, m) = scale_min_k4(j, &sc);
        let dd = d.to_f32() * s as f32;
        if dd == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * m as f32;
        for ii in 0..32 {
            let li = nearest_int((x[32 * j + ii] + dm) / dd).clamp(0, nmax);
            l[32 * j + ii] = li as u8;
        }
    }
    (d, dmin, sc, l)
}

/// ggml's `quantize_row_q4_K_ref` for one block.
pub fn quantize_block_q4_k(x: &[f32; QK_K]) -> BlockQ4K {
    let (d, dmin, scales, l) = qk_scales_mins(x, 15, -1.0, 0.1, 20);
    let mut qs = [0u8; QK_K / 2];
    for j in 0..QK_K / 64 {
        for k in 0..32 {
            qs[32 * j + k] = l[64 * j + k] | (l[64 * j + k + 32] << 4);
        }
    }
    BlockQ4K {
        d,
        dmin,
        scales,
        qs,
    }
}

/// ggml's `quantize_row_q5_K_ref` for one block.
pub fn quantize_block_q5_k(x: &[f32; QK_K]) -> BlockQ5K {
    let (d, dmin, scales, l) = qk_scales_mins(x, 31, -0.5, 0.1, 15);
    let mut qh = [0u8; QK_K / 8];
    let mut qs = [0u8; QK_K / 2];
    let mut m1: u8 = 1;
    let mut m2: u8 = 2;
    for n in 0..QK_K / 64 {
        for j in 0..32 {
            let mut l1 = l[64 * n + j];
            if l1 > 15 {
                l1 -= 16;
                qh[j] |= m1;
            }
            let mut l2 = l[64 * n + j + 32];
            if l2 > 15 {
                l2 -= 16;
                qh[j] |= m2;
            }
            qs[32 * n + j] = l1 | (l2 << 4);
        }
        m1 = m1.wrapping_shl(2);
        m2 = m2.wrapping_shl(2);
    }
    BlockQ5K {
        d,
        dmin,
        scales,
        qh,
        qs,
    }
}

/// ggml's `quantize_row_q6_K_ref` for one block.
pub fn quantize_block_q6_k(x: &[f32; QK_K]) -> BlockQ6K {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    let mut max_scale = 0.0f32;
    let mut max_abs_scale = 0.0f32;
    for ib in 0..QK_K / 16 {
        let s = make_qx_quants(
            32,
            &x[16 * ib..16 * ib + 16],
            &mut l[16 * ib..16 * ib + 16],
            1,
        );
        scales[ib] = s;
        if s.abs() > max_abs_scale {
            max_abs_scale = s.abs();
            max_scale = s;
        }
    }
    let mut y = BlockQ6K {
        ql: [0; QK_K / 2],
        qh: [0; QK_K / 4],
        scales: [0; QK_K / 16],
        d: f16::ZERO,
    };
    if max_abs_scale < GROUP_MAX_EPS {
        return y;
    }
    let iscale = -128.0f32 / max_scale;
    y.d = f16::from_f32(1.0 / iscale);
    for ib in 0..QK_K / 16 {
        y.scales[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
    }
    for j in 0..QK_K / 16 {
        let d = y.d.to_f32() * y.scales[j] as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let li = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
            l[16 * j + ii] = (li + 32) as i8;
        }
    }
    for (n, j) in (0..QK_K).step_by(128).enumerate() {
        let ql = &mut y.ql[64 * n..64 * n + 64];
        let qh = &mut y.qh[32 * n..32 * n + 32];
        for k in 0..32 {
            let q1 = (l[j + k] & 0xF) as u8;
            let q2 = (l[j + k + 32] & 0xF) as u8;
            let q3 = (l[j + k + 64] & 0xF) as u8;
            let q4 = (l[j + k + 96] & 0xF) as u8;
            ql[k] = q1 | (q3 << 4);
            ql[k + 32] = q2 | (q4 << 4);
            qh[k] = ((l[j + k] >> 4)
                | ((l[j + k + 32] >> 4) << 2)
                | ((l[j + k + 64] >> 4) << 4)
                | ((l[j + k + 96] >> 4) << 6)) as u8;
        }
    }
    y
}

/// ggml's `best_index_int8`: index of the level in `values` (ascending) closest to `x`.
#[inline]
fn best_index_int8(values: &[i8; 16], x: f32) -> usize {
    if x <= values[0] as f32 {
        return 0;
    }
    if x >= values[15] as f32 {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < values[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (values[mu - 1] as f32) < values[mu] as f32 - x {
        mu - 1
    } else {
        mu
    }
}

/// The per-32-element search of ggml's `quantize_row_iq4_nl_impl` (no
/// importance weights: weight = x²). Writes level indices to `lb` and returns
/// the group scale, or `None` for an all-zero group (levels left untouched).
fn iq4_group(xb: &[f32], ntry: i32, lb: &mut [u8]) -> Option<f32> {
    let values = &KVALUES_IQ4NL;
    let (amax, max) = abs_max(xb);
    if amax < GROUP_MAX_EPS {
        return None;
    }
    let v0 = values[0] as f32;
    let mut d = if ntry > 0 { -max / v0 } else { max / v0 };
    let mut id = 1.0 / d;
    let mut sumqx = 0.0f32;
    let mut sumq2 = 0.0f32;
    for (j, &xj) in xb.iter().enumerate() {
        let l = best_index_int8(values, id * xj);
        lb[j] = l as u8;
        let q = values[l] as f32;
        let w = xj * xj;
        sumqx += w * q * xj;
        sumq2 += w * q * q;
    }
    d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -ntry..=ntry {
        id = (itry + values[0] as i32) as f32 / max;
        sumqx = 0.0;
        sumq2 = 0.0;
        for &xj in xb {
            let l = best_index_int8(values, id * xj);
            let q = values[l] as f32;
            let w = xj * xj;
            sumqx += w * q * xj;
            sumq2 += w * q * q;
        }
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    Some(d)
}

/// ggml's `quantize_row_iq4_nl_ref` for one block. (For an all-zero block ggml
/// packs stale levels from the previous block under a zero scale; here the
/// levels are index 0. Both dequantize to zeros.)
pub fn quantize_block_iq4_nl(x: &[f32; 32]) -> BlockIQ4NL {
    let mut l = [0u8; 32];
    let d = iq4_group(x, -1, &mut l).unwrap_or(0.0);
    let mut qs = [0u8; 16];
    for j in 0..16 {
        qs[j] = l[j] | (l[16 + j] << 4);
    }
    BlockIQ4NL {
        d: f16::from_f32(d),
        qs,
    }
}

/// ggml's `quantize_row_iq4_xs_ref` for one block (no importance weights).
pub fn quantize_block_iq4_xs(x: &[f32; QK_K]) -> BlockIQ4XS {
    let values = &KVALUES_IQ4NL;
    let mut l = [0u8; QK_K];
    let mut scales = [0f32; QK_K / 32];
    let mut max_scale = 0.0f32;
    let mut amax_scale = 0.0f32;
    for ib in 0..QK_K / 32 {
        let xb = &x[32 * ib..32 * ib + 32];
        match iq4_group(xb, 7, &mut l[32 * ib..32 * ib + 32]) {
            None => scales[ib] = 0.0,
            Some(d) => {
                scales[ib] = d;
                if d.abs() > amax_scale {
                    amax_scale = d.abs();
                    max_scale = d;
                }
            }
        }
    }
    let d = -max_scale / 32.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut scales_h = 0u16;
    let mut scales_l = [0u8; QK_K / 64];
    for ib in 0..QK_K / 32 {
        let li = nearest_int(id * scales[ib]).clamp(-32, 31);
        let dl = d * li as f32;
        let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
        for j in 0..32 {
            l[32 * ib + j] = best_index_int8(values, idl * x[32 * ib + j]) as u8;
        }
        let li = (li + 32) as u8;
        let (l_l, l_h) = (li & 0xF, li >> 4);
        if ib % 2 == 0 {
            scales_l[ib / 2] = l_l;
        } else {
            scales_l[ib / 2] |= l_l << 4;
        }
        scales_h |= (l_h as u16) << (2 * (ib % 8));
    }
    let mut qs = [0u8; QK_K / 2];
    for i in 0..QK_K / 32 {
        for j in 0..16 {
            qs[16 * i + j] = l[32 * i + j] | (l[32 * i + 16 + j] << 4);
        }
    }
    BlockIQ4XS {
        d: f16::from_f32(d),
        scales_h,
        scales_l,
        qs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even_like_ggml() {
        for (x, want) in [
            (0.5f32, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (3.49, 3),
            (-3.51, -4),
            (4_194_303.0, 4_194_303),
            (-4_194_303.0, -4_194_303),
        ] {
            assert_eq!(nearest_int(x), want, "{x}");
        }
    }

    #[test]
    fn c_trunc_truncates_toward_zero_and_saturates_like_cvttss2si() {
        assert_eq!(c_trunc(8.99), 8);
        assert_eq!(c_trunc(-8.99), -8);
        assert_eq!(c_trunc(f32::NAN), i32::MIN);
        assert_eq!(c_trunc(3e9), i32::MIN);
    }

    #[test]
    fn bf16_rounding_matches_ggml() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is a tie between 0x3f80 and 0x3f81: round to even.
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(f32_to_bf16(f32::from_bits(0x7f80_0001)), 0x7fc0);
        assert_eq!(f32_to_bf16(f32::INFINITY), 0x7f80);
    }

    #[test]
    fn best_index_picks_nearest_level() {
        let v = &KVALUES_IQ4NL;
        assert_eq!(best_index_int8(v, -200.0), 0);
        assert_eq!(best_index_int8(v, 200.0), 15);
        assert_eq!(best_index_int8(v, 0.0), 8);
        assert_eq!(best_index_int8(v, -4.6), 7);
        assert_eq!(best_index_int8(v, 112.0), 15);
    }

    #[test]
    fn q4k_scale_packing_round_trips() {
        let mut rng = 12345u32;
        for _ in 0..100 {
            let mut sc = [0u8; 12];
            let mut want = [(0u8, 0u8); 8];
            for (j, w) in want.iter_mut().enumerate() {
                rng = rng.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let ls = ((rng >> 8) & 63) as u8;
                let lm = ((rng >> 16) & 63) as u8;
                *w = (ls, lm);
                if j < 4 {
                    sc[j] = ls;
                    sc[j + 4] = lm;
                } else {
                    sc[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
                    sc[j - 4] |= (ls >> 4) << 6;
                    sc[j] |= (lm >> 4) << 6;
                }
            }
            for (j, w) in want.iter().enumerate() {
                assert_eq!(scale_min_k4(j, &sc), *w);
            }
        }
    }
}
