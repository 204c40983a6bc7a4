// exact.wgsl — IEEE-exact arithmetic for the kernels that reproduce the CPU
// backend bit for bit (prepended after f16.wgsl, whose `div_rn` it uses).
//
// - `fma_rn(a, b, c)`: a·b + c with one rounding. WGSL's `fma` need not be
//   fused; the host probes the device (`GpuContext::fused_fma`) and
//   substitutes FMA_FUSED_V = true where it is, else the integer emulation
//   `fma_emul` is used (64-bit integers as vec2<u32>(lo, hi)).
// - float-float sums (`two_sum`, `ff_add`): f64-like accumulation where the
//   CPU sums in f64 (RMSNorm's Σx², softmax's Σe); `ff_div_n` and
//   `ff_recip` round the final f32 correctly from them, so the result
//   equals the CPU's f32(f64 ...) except when the exact value lies within
//   ~2^-44 (relative) of a rounding boundary.
// - `sqrt_rn`: a correctly rounded square root (the builtin's precision is
//   not specified that tightly).
// - `ggml_expf`: ggml's vectorised expf (`ggml_v_expf`) with the same fused
//   multiply-adds, so the same bits.
// Zeros, subnormals, infinities and NaN fall back to plain arithmetic where
// noted (results outside the normal range are not reproduced exactly).

// FMA_FUSED: f16.wgsl (prepended).

// A runtime zero, opaque to the compiler: every entry point that uses the
// float-float helpers or `keep` first sets it from its parameters
// (`EXACT_Z = u32(<a condition that is never true>)`). Left unset, it is a
// constant 0 and the guards below fold away.
var<private> EXACT_Z: u32;

// x unchanged, but the compiler cannot see through it: a product passed
// through it is rounded before it is added (no contraction into an fma the
// CPU does not do), and float-float error terms such as (a + b) - a - b are
// not simplified away (lavapipe's compiler does, dropping the low word).
fn keep(x: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(x) | EXACT_Z);
}

// acc + v² (v² rounded to f32, as the CPU's f64::from(v * v)) in float-float.
fn ff_sq_add(acc: vec2<f32>, v: f32) -> vec2<f32> {
    return ff_add(acc, vec2<f32>(keep(v * v), 0.0));
}

// acc + the squares of v's four elements, in float-float.
fn sq_add4(acc: vec2<f32>, v: vec4<f32>) -> vec2<f32> {
    return ff_sq_add(ff_sq_add(ff_sq_add(ff_sq_add(acc, v.x), v.y), v.z), v.w);
}

// The float-float sum of the `part`s of a workgroup's first n invocations
// (n a power of two up to 256; all of them must call), returned to each.
var<workgroup> ff_red: array<vec2<f32>, 256>;

fn wg_ff_sum(tid: u32, part: vec2<f32>, n: u32) -> vec2<f32> {
    ff_red[tid] = part;
    workgroupBarrier();
    for (var stride = n / 2u; stride > 0u; stride >>= 1u) {
        if (tid < stride) {
            ff_red[tid] = ff_add(ff_red[tid], ff_red[tid + stride]);
        }
        workgroupBarrier();
    }
    let s = ff_red[0];
    workgroupBarrier();
    return s;
}

// The CPU's RMSNorm scale 1 / sqrt(f32(Σx² / n) + eps) from the float-float
// sum of squares: mean, sqrt and reciprocal correctly rounded.
fn rms_scale(sum: vec2<f32>, n: u32, eps: f32) -> f32 {
    return div_rn(1.0, sqrt_rn(ff_div_n(sum, f32(n)) + eps));
}

fn u64_add(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let lo = a.x + b.x;
    return vec2<u32>(lo, a.y + b.y + select(0u, 1u, lo < a.x));
}

fn u64_sub(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    return vec2<u32>(a.x - b.x, a.y - b.y - select(0u, 1u, a.x < b.x));
}

fn u64_lt(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.y < b.y || (a.y == b.y && a.x < b.x);
}

// a << s for s < 64.
fn u64_shl(a: vec2<u32>, s: u32) -> vec2<u32> {
    if (s == 0u) {
        return a;
    }
    if (s >= 32u) {
        return vec2<u32>(0u, a.x << (s - 32u));
    }
    return vec2<u32>(a.x << s, (a.y << s) | (a.x >> (32u - s)));
}

// a >> s for s < 64 (bits shifted out are dropped).
fn u64_shr(a: vec2<u32>, s: u32) -> vec2<u32> {
    if (s == 0u) {
        return a;
    }
    if (s >= 32u) {
        return vec2<u32>(a.y >> (s - 32u), 0u);
    }
    return vec2<u32>((a.x >> s) | (a.y << (32u - s)), a.y >> s);
}

// a >> s, any s, with the bits shifted out OR-ed into bit 0 (sticky).
fn u64_shr_sticky(a: vec2<u32>, s: u32) -> vec2<u32> {
    if (s >= 64u) {
        return vec2<u32>(select(0u, 1u, a.x != 0u || a.y != 0u), 0u);
    }
    let r = u64_shr(a, s);
    let back = u64_shl(r, s);
    let lost = back.x != a.x || back.y != a.y;
    return vec2<u32>(r.x | select(0u, 1u, lost), r.y);
}

// a·b + c rounded once (to nearest, ties to even), in integers: the 48-bit
// product and c are aligned in 64 bits (leading bits at bit 61, bits
// shifted out kept as a sticky bit 0), added, normalised and rounded.
fn fma_emul(a: f32, b: f32, c: f32) -> f32 {
    let ua = bitcast<u32>(a);
    let ub = bitcast<u32>(b);
    let uc = bitcast<u32>(c);
    let ea = i32((ua >> 23u) & 0xffu);
    let eb = i32((ub >> 23u) & 0xffu);
    let ec = i32((uc >> 23u) & 0xffu);
    if (ea == 0 || eb == 0 || ea == 255 || eb == 255 || ec == 255) {
        // A zero factor makes a·b exact; the rest (subnormal, inf, NaN) is rare.
        return a * b + c;
    }
    let sp = (ua ^ ub) & 0x80000000u;
    if (ec == 0) {
        if ((uc & 0x7fffffu) == 0u) {
            return a * b; // correctly rounded product
        }
        return a * b + c;
    }
    let ma = (ua & 0x7fffffu) | 0x800000u;
    let mb = (ub & 0x7fffffu) | 0x800000u;
    let al = ma & 0xffffu;
    let ah = ma >> 16u;
    let bl = mb & 0xffffu;
    let bh = mb >> 16u;
    let mid = al * bh + ah * bl; // < 2^25
    var p = u64_add(vec2<u32>(al * bl, ah * bh), vec2<u32>(mid << 16u, mid >> 16u));
    // p < 2^48 with bit 46 or 47 set; value p · 2^ep.
    var ep = ea + eb - 254 - 46;
    if ((p.y & 0x8000u) != 0u) {
        p = u64_shl(p, 14u);
        ep -= 14;
    } else {
        p = u64_shl(p, 15u);
        ep -= 15;
    }
    let mc = (uc & 0x7fffffu) | 0x800000u;
    let cv = vec2<u32>(0u, mc << 6u); // mc · 2^38: leading bit 61
    let ecv = ec - 127 - 23 - 38;
    let sc = uc & 0x80000000u;
    var big = p;
    var small = cv;
    var e = ep;
    var e_small = ecv;
    var sign = sp;
    if (ecv > ep || (ecv == ep && u64_lt(p, cv))) {
        big = cv;
        small = p;
        e = ecv;
        e_small = ep;
        sign = sc;
    }
    small = u64_shr_sticky(small, u32(e - e_small));
    var s: vec2<u32>;
    if (sp == sc) {
        s = u64_add(big, small);
    } else {
        s = u64_sub(big, small);
    }
    if (s.x == 0u && s.y == 0u) {
        return 0.0;
    }
    var lead: u32;
    if (s.y != 0u) {
        lead = 32u + firstLeadingBit(s.y);
    } else {
        lead = firstLeadingBit(s.x);
    }
    var be = e + i32(lead) + 127;
    if (be <= 0 || be >= 255) {
        return a * b + c;
    }
    var m: u32;
    if (lead >= 24u) {
        let sh = lead - 23u;
        let top = u64_shr(s, sh);
        m = top.x;
        let rem = u64_sub(s, u64_shl(top, sh));
        let half = u64_shl(vec2<u32>(1u, 0u), sh - 1u);
        if (u64_lt(half, rem) || (rem.x == half.x && rem.y == half.y && (m & 1u) == 1u)) {
            m += 1u;
            if (m == 0x1000000u) {
                m >>= 1u;
                be += 1;
                if (be >= 255) {
                    return a * b + c;
                }
            }
        }
    } else {
        m = s.x << (23u - lead);
    }
    return bitcast<f32>(sign | (u32(be) << 23u) | (m & 0x7fffffu));
}

// a·b + c with one rounding.
fn fma_rn(a: f32, b: f32, c: f32) -> f32 {
    if (FMA_FUSED) {
        return fma(a, b, c);
    }
    return fma_emul(a, b, c);
}

// (s, e) with s = fl(a + b) and s + e = a + b exactly.
fn two_sum(a: f32, b: f32) -> vec2<f32> {
    let s = keep(a + b);
    let bb = keep(s - a);
    return vec2<f32>(s, (a - keep(s - bb)) + (b - bb));
}

// Float-float sum (non-negative operands: relative error ~2^-47).
fn ff_add(x: vec2<f32>, y: vec2<f32>) -> vec2<f32> {
    let s = two_sum(x.x, y.x);
    let t = s.y + (x.y + y.y);
    let r = keep(s.x + t);
    return vec2<f32>(r, t - keep(r - s.x));
}

// f32 nearest to x / n for a non-negative float-float x and n > 0 (as
// f32(f64 sum / n) on the CPU).
fn ff_div_n(x: vec2<f32>, n: f32) -> f32 {
    if (x.x <= 0.0) {
        return 0.0;
    }
    var q = div_rn(x.x, n);
    for (var i = 0; i < 2; i++) {
        let p = keep(q * n);
        let e = fma_rn(q, n, -p);
        // x - q n (x.x - p is exact: p is within a factor 2 of x.x).
        let r = ((x.x - p) - e) + x.y;
        let nq = settle(q, r / n);
        if (nq == q) {
            break;
        }
        q = nq;
    }
    return q;
}

// f32 nearest to 1 / x for a positive float-float x (as f32(1.0 / f64 sum)).
fn ff_recip(x: vec2<f32>) -> f32 {
    var q = div_rn(1.0, x.x);
    for (var i = 0; i < 2; i++) {
        let p = keep(q * x.x);
        let e = fma_rn(q, x.x, -p);
        // 1 - q x
        let r = ((1.0 - p) - e) - q * x.y;
        let nq = settle(q, r * q);
        if (nq == q) {
            break;
        }
        q = nq;
    }
    return q;
}

// Correctly rounded sqrt of a positive normal x.
fn sqrt_rn(x: f32) -> f32 {
    var s = sqrt(x);
    for (var i = 0; i < 3; i++) {
        let p = keep(s * s);
        let e = fma_rn(s, s, -p);
        // x - s², x - p exact (p within a factor 2 of x); sqrt(x) - s ≈ that / 2s
        let r = (x - p) - e;
        let ns = settle(s, r / (2.0 * s));
        if (ns == s) {
            break;
        }
        s = ns;
    }
    return s;
}

// 2^k for -126 <= k <= 127.
fn pow2i(k: i32) -> f32 {
    return bitcast<f32>(u32(k + 127) << 23u);
}

// ggml_v_expf (ggml-cpu vec.h, AVX-512 variant) lane by lane: the same
// operations, so the same bits (the final j·2^n with one rounding).
fn ggml_expf(x: f32) -> f32 {
    let r = bitcast<f32>(0x4b400000u);
    let z = fma_rn(x, bitcast<f32>(0x3fb8aa3bu), r);
    let n = z - r;
    let b = fma_rn(-n, bitcast<f32>(0x35bfbe8eu), fma_rn(-n, bitcast<f32>(0x3f317200u), x));
    let u = b * b;
    let j = fma_rn(
        fma_rn(
            fma_rn(bitcast<f32>(0x3c072010u), b, bitcast<f32>(0x3d2b9f17u)),
            u,
            fma_rn(bitcast<f32>(0x3e2aaf33u), b, bitcast<f32>(0x3efffedbu)),
        ),
        u,
        fma_rn(bitcast<f32>(0x3f7ffff6u), b, 1.0),
    );
    if (abs(n) > 192.0) {
        return select(bitcast<f32>(0x7f800000u), 0.0, n <= 0.0);
    }
    let k = i32(n);
    // j · 2^k in two exact-or-final steps (|k/2| keeps the first normal).
    let k1 = k / 2;
    return (j * pow2i(k1)) * pow2i(k - k1);
}
