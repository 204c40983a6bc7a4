// f16.wgsl — exact float helpers, prepended to the shaders that need them:
// f32 to IEEE half conversions with integer ops only (round to nearest even;
// WGSL's pack2x16float leaves the rounding to the implementation), a
// correctly rounded division, and sin/cos accurate to about an ulp (the
// builtins may be far less accurate: NVIDIA's hardware sine loses digits
// as the argument grows).

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

// Whether WGSL's `fma` is fused on this device (the host substitutes its
// probe's result; exact.wgsl's `fma_rn` uses it too).
const FMA_FUSED: bool = FMA_FUSED_V;

// Whether WGSL's f16 pair unpacking builtin was found to give every f16's
// exact f32 on this device, subnormals included (`GpuContext::f16_unpack`,
// f16_probe.wgsl; the host substitutes its result): the exact matvecs then
// convert block scales with it (matmul_exact_tr.wgsl `halves`: the host
// substitutes the builtin's name there, else quant.wgsl's integer
// `f16_halves`, so that the builtin, which needs a capability GL lacks,
// appears only where the probe said yes).
const F16_UNPACK: bool = F16_UNPACK_V;

// The next f32 above / below a positive finite x.
fn next_up(x: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(x) + 1u);
}

fn next_down(x: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(x) - 1u);
}

// q moved by one ulp towards q + t where |t| exceeds half an ulp (q > 0).
fn settle(q: f32, t: f32) -> f32 {
    if (t > 0.0 && t > 0.5 * (next_up(q) - q)) {
        return next_up(q);
    }
    if (t < 0.0 && -t > 0.5 * (q - next_down(q))) {
        return next_down(q);
    }
    return q;
}

// a / b rounded to nearest, ties to even, as IEEE division (WGSL's may be
// off by 2.5 ulp). With a fused fma: WGSL's quotient of |a| and |b| moved
// ulp by ulp while the exact remainder fma(-q, b, a) says it is more than
// half an ulp off (a quotient of floats is never a midpoint, so no ties).
// Otherwise long division of the 24-bit significands. Zeros, subnormals,
// infinities, NaN and results outside the normal range fall back to `a / b`.
fn div_rn(a: f32, b: f32) -> f32 {
    let ua = bitcast<u32>(a);
    let ub = bitcast<u32>(b);
    let ea = i32((ua >> 23u) & 0xffu);
    let eb = i32((ub >> 23u) & 0xffu);
    if (ea == 0 || eb == 0 || ea == 255 || eb == 255) {
        return a / b;
    }
    if (FMA_FUSED && abs(ea - eb) < 120) {
        let x = abs(a);
        let y = abs(b);
        var q = x / y;
        for (var i = 0; i < 4; i++) {
            let nq = settle(q, fma(-q, y, x) / y);
            if (nq == q) {
                break;
            }
            q = nq;
        }
        return bitcast<f32>(((ua ^ ub) & 0x80000000u) | bitcast<u32>(q));
    }
    let ma = (ua & 0x7fffffu) | 0x800000u;
    let mb = (ub & 0x7fffffu) | 0x800000u;
    var e = ea - eb + 127;
    var r = ma;
    if (ma < mb) {
        r = ma << 1u;
        e -= 1;
    }
    // r in [mb, 2 mb): 24 quotient bits, the first one set.
    var q = 0u;
    for (var i = 0u; i < 24u; i++) {
        q <<= 1u;
        if (r >= mb) {
            r -= mb;
            q |= 1u;
        }
        r <<= 1u;
    }
    // r = 2 · remainder: above mb rounds up, equal is a tie.
    if (r > mb || (r == mb && (q & 1u) == 1u)) {
        q += 1u;
    }
    if (q == 0x1000000u) {
        q >>= 1u;
        e += 1;
    }
    if (e <= 0 || e >= 255) {
        return a / b;
    }
    return bitcast<f32>(((ua ^ ub) & 0x80000000u) | (u32(e) << 23u) | (q & 0x7fffffu));
}

// (cos x, sin x) to about an ulp for |x| < 65536: Cody-Waite reduction by
// pi/4 with a three-part constant, then Cephes' single-precision
// polynomials (sinf/cosf); the CPU backend uses libm's.
fn sincos_f32(x: f32) -> vec2<f32> {
    let ax = abs(x);
    var j = u32(ax * 1.27323954473516);
    if ((j & 1u) == 1u) {
        j += 1u;
    }
    let y = f32(j);
    let z = ((ax - y * 0.78515625) - y * 2.4187564849853515625e-4) - y * 3.77489497744594108e-8;
    j = j & 7u;
    var neg_s = x < 0.0;
    var neg_c = false;
    if (j > 3u) {
        j -= 4u;
        neg_s = !neg_s;
        neg_c = !neg_c;
    }
    if (j > 1u) {
        neg_c = !neg_c;
    }
    let zz = z * z;
    let pc = ((2.443315711809948e-5 * zz - 1.388731625493765e-3) * zz + 4.166664568298827e-2) * zz * zz
        - 0.5 * zz + 1.0;
    let ps = ((-1.9515295891e-4 * zz + 8.3321608736e-3) * zz - 1.6666654611e-1) * zz * z + z;
    let swap = j == 1u || j == 2u;
    var s = select(ps, pc, swap);
    var c = select(pc, ps, swap);
    if (neg_s) {
        s = -s;
    }
    if (neg_c) {
        c = -c;
    }
    return vec2<f32>(c, s);
}
