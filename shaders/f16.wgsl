// f16.wgsl — f32 to IEEE half conversions with integer ops only, exactly
// (round to nearest even; WGSL's pack2x16float leaves the rounding to the
// implementation). Prepended to the shaders that need them.

// The f16 bit pattern of f: overflow to ±inf, NaN kept, subnormals exact.
fn f32_to_f16(f: f32) -> u32 {
    let x = bitcast<u32>(f);
    let sign = (x >> 16u) & 0x8000u;
    let ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) {
        return sign | 0x7e00u; // NaN
    }
    let e = i32(ax >> 23u) - 112; // half biased exponent
    let m = ax & 0x7fffffu;
    if (e >= 31) {
        return sign | 0x7c00u; // overflow and inf
    }
    if (e <= 0) {
        if (e < -10) {
            return sign; // below half the smallest subnormal
        }
        let mm = m | 0x800000u;
        let shift = u32(14 - e);
        var h = mm >> shift;
        let rem = mm & ((1u << shift) - 1u);
        let half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (h & 1u) == 1u)) {
            h += 1u;
        }
        return sign | h;
    }
    var h = (u32(e) << 10u) | (m >> 13u);
    let rem = m & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u) == 1u)) {
        h += 1u; // may carry into the exponent, up to inf: correct
    }
    return sign | h;
}

// f → the nearest f16 value, as f32 (ties to even; |f| beyond the f16 range
// is not handled: used for quantisation scales).
fn round_f16(x: f32) -> f32 {
    if (abs(x) < 6.103515625e-5) {
        // half subnormals: multiples of 2^-24
        return round(x * 16777216.0) / 16777216.0;
    }
    let u = bitcast<u32>(x);
    return bitcast<f32>((u + 0xfffu + ((u >> 13u) & 1u)) & 0xffffe000u);
}
