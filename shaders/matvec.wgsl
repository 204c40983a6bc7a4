// matvec.wgsl — fused dequantise + matrix-vector product, y = W x.
//
// W: [n_rows, n_cols] in its GGUF block format (one part of a possibly split
// tensor: rows row_offset .. row_offset + rows), x: [n_cols] f32 (read as
// vec4), y: [n_rows] f32 (overwritten, or added to when `accumulate`).
// One workgroup per row. A 32-element unit is split in quarters of 8
// elements; invocation `tid` takes quarters `tid, tid + WG, ...` of the row
// (`row_dot`), so neighbouring invocations read neighbouring bytes of W and
// of x (coalesced loads: with a whole unit per invocation, one load
// instruction of a subgroup touched 32 cache lines of x). The common weight
// types have a fused quarter dot product (`deq_<type>_dot8`) on the packed
// quants; the others dequantise the unit into `dq` and dot their quarter
// (`unit_dot8`). The host substitutes `DOT8` with one of them. The entry
// point comes from matvec_reduce_wg.wgsl (shared-memory tree reduction) or
// matvec_reduce_sg.wgsl (subgroupAdd, only when the device has SUBGROUP).
// `deq_TYPE` is substituted by the host.

// Stores row `row`'s result.
fn store_row(row: u32, v: f32) {
    let i = P.row_offset + row;
    if (P.accumulate != 0u) {
        Y[i] = Y[i] + v;
    } else {
        Y[i] = v;
    }
}

struct Params {
    n_cols: u32,     // elements per row
    n_units: u32,    // ceil(n_cols / 32)
    row_bytes: u32,  // bytes per row in W
    rows: u32,       // rows in this part
    row_offset: u32, // index of this part's first row in y
    grid_x: u32,     // workgroups along x in the dispatch (2-D grid for > 65535 rows)
    accumulate: u32, // 1: y += W x, 0: y = W x
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> W: array<u32>;
// x as vectors: buffers are allocated in multiples of 16 bytes; elements at
// n_cols and beyond are never used.
@group(0) @binding(1) var<storage, read> X: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
@group(0) @binding(3) var<uniform> P: Params;

const WG: u32 = 64u;
var<private> dq: array<f32, 32>;

// x[i .. i + 4] (i a multiple of 4).
fn x4(i: u32) -> vec4<f32> {
    return X[i >> 2u];
}

// The four bytes of v, as vectors of u32.
fn bytes4(v: u32) -> vec4<u32> {
    return (vec4<u32>(v) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(0xffu);
}

// The four bytes of v as signed 8-bit values.
fn sbytes4(v: u32) -> vec4<f32> {
    let u = vec4<u32>(v) << vec4<u32>(24u, 16u, 8u, 0u);
    return vec4<f32>(bitcast<vec4<i32>>(u) >> vec4<u32>(24u));
}

fn hsum(v: vec4<f32>) -> f32 {
    return v.x + v.y + v.z + v.w;
}

// Quarter q of the dot of `dq` (filled by a deq_* function) with x[xb ..],
// elements past n_cols skipped.
fn dq_dot8(q: u32, xb: u32) -> f32 {
    var s = 0.0;
    for (var c = 0u; c < 8u; c++) {
        let e = xb + 8u * q + c;
        if (e < P.n_cols) {
            s += dq[8u * q + c] * X[e >> 2u][e & 3u];
        }
    }
    return s;
}

// Types without a fused path: dequantise the unit into `dq`, dot one quarter.
fn unit_dot8(rb: u32, u: u32, q: u32, xb: u32) -> f32 {
    deq_TYPE(rb, u, P.n_cols);
    return dq_dot8(q, xb);
}

// ---- fused quarter dot products (block layouts: see quant.wgsl) ----
// 32-element blocks: quarter q is quant byte word q, i.e. elements 4q..4q+3
// (low nibbles) and 16+4q..16+4q+3 (high nibbles); Q8_0: elements 8q..8q+7.

// Q4_0: d Σ (q - 8) x.
fn deq_q4_0_dot8(rb: u32, u: u32, q: u32, xb: u32) -> f32 {
    let b = rb + u * 18u;
    let w = bytes4(rd_u32(b + 2u + 4u * q));
    let s = dot(vec4<f32>(w & vec4<u32>(0xfu)) - 8.0, x4(xb + 4u * q))
        + dot(vec4<f32>(w >> vec4<u32>(4u)) - 8.0, x4(xb + 16u + 4u * q));
    return s * rd_f16(b);
}

// Q4_1: d Σ q x + m Σ x.
fn deq_q4_1_dot8(rb: u32, u: u32, q: u32, xb: u32) -> f32 {
    let b = rb + u * 20u;
    let w = bytes4(rd_u32(b + 4u + 4u * q));
    let xa = x4(xb + 4u * q);
    let xc = x4(xb + 16u + 4u * q);
    let s = dot(vec4<f32>(w & vec4<u32>(0xfu)), xa) + dot(vec4<f32>(w >> vec4<u32>(4u)), xc);
    return s * rd_f16(b) + rd_f16(b + 2u) * hsum(xa + xc);
}

// Fifth bits of Q5_0/Q5_1 elements 4q.. (h0) and 16+4q.. (h1), as 0 or 16.
fn q5_high(qh: u32, q: u32) -> array<vec4<u32>, 2> {
    let i = vec4<u32>(4u * q) + vec4<u32>(0u, 1u, 2u, 3u);
    let h = vec4<u32>(qh);
    return array<vec4<u32>, 2>(
        ((h >> i) << vec4<u32>(4u)) & vec4<u32>(0x10u),
        (h >> (i + vec4<u32>(12u))) & vec4<u32>(0x10u),
    );
}

// Q5_0: d Σ (q - 16) x.
fn deq_q5_0_dot8(rb: u32, u: u32, q: u32, xb: u32) -> f32 {
    let b = rb + u * 22u;
    let h = q5_high(rd_u32(b + 2u), q);
    let w = bytes4(rd_u32(b + 6u + 4u * q));
    let s = dot(vec4<f32>((w & vec4<u32>(0xfu)) | h[0]) - 16.0, x4(xb + 4u * q))
        + dot(vec4<f32>((w >> vec4<u32>(4u)) | h[1]) - 16.0, x4(xb + 16u + 4u * q));
    return s * rd_f16(b);
}

// Q5_1: d Σ q x + m Σ x.
fn deq_q5_1_dot8(rb: u32, u: u32, q: u32, xb: u32) -> f32 {
    let b = rb + u * 24u;
    let h = q5_high(rd_u32(b + 4u), q);
    let w = bytes4(rd_u32(b + 8u + 4u * q));
    let xa = x4(xb + 4u * q);
    let xc = x4(xb + 16u + 4u * q);
    let s = dot(vec4<f32>((w & vec4<u32>(0xfu)) | h[0]), xa)
        + dot(vec4<f32>((w >> vec4<u32>(4u)) | h[1]), xc);
    return s * rd_f16(b) + rd_f16(b + 2u) * hsum(xa + xc);
}

// Q8_0: d Σ q x.
fn deq_q8_0_dot8(rb: u32, u: u32, q: u32, xb: u32) -> f32 {
    let b = rb + u * 34u;
    let o = b + 2u + 8u * q;
    let s = dot(sbytes4(rd_u32(o)), x4(xb + 8u * q)) + dot(sbytes4(rd_u32(o + 4u)), x4(xb + 8u * q + 4u));
    return s * rd_f16(b);
}

// 256-element super-blocks: unit s (u % 8) as in quant.wgsl; quarter q is
// the unit's elements 8q..8q+7.

// Q4_K: d·sc Σ q x - dmin·m Σ x.
fn deq_q4_k_dot8(rb: u32, u: u32, q: u32, xb: u32) -> f32 {
    let b = rb + (u / 8u) * 144u;
    let s = u % 8u;
    let sm = scale_min_k4(b + 4u, s);
    let shift = vec4<u32>((s & 1u) * 4u);
    let o = b + 16u + 32u * (s / 2u) + 8u * q;
    let xa = x4(xb + 8u * q);
    let xc = x4(xb + 8u * q + 4u);
    let w0 = (bytes4(W[o >> 2u]) >> shift) & vec4<u32>(0xfu);
    let w1 = (bytes4(W[(o >> 2u) + 1u]) >> shift) & vec4<u32>(0xfu);
    let acc = dot(vec4<f32>(w0), xa) + dot(vec4<f32>(w1), xc);
    return rd_f16(b) * sm.x * acc - rd_f16(b + 2u) * sm.y * hsum(xa + xc);
}

// Q5_K: as Q4_K with the fifth bit s of qh[l].
fn deq_q5_k_dot8(rb: u32, u: u32, q: u32, xb: u32) -> f32 {
    let b = rb + (u / 8u) * 176u;
    let s = u % 8u;
    let sm = scale_min_k4(b + 4u, s);
    let shift = vec4<u32>((s & 1u) * 4u);
    let o = b + 48u + 32u * (s / 2u) + 8u * q;
    let ho = b + 16u + 8u * q;
    let xa = x4(xb + 8u * q);
    let xc = x4(xb + 8u * q + 4u);
    let hs = vec4<u32>(s);
    let w0 = ((bytes4(W[o >> 2u]) >> shift) & vec4<u32>(0xfu))
        | (((bytes4(W[ho >> 2u]) >> hs) & vec4<u32>(1u)) << vec4<u32>(4u));
    let w1 = ((bytes4(W[(o >> 2u) + 1u]) >> shift) & vec4<u32>(0xfu))
        | (((bytes4(W[(ho >> 2u) + 1u]) >> hs) & vec4<u32>(1u)) << vec4<u32>(4u));
    let acc = dot(vec4<f32>(w0), xa) + dot(vec4<f32>(w1), xc);
    return rd_f16(b) * sm.x * acc - rd_f16(b + 2u) * sm.y * hsum(xa + xc);
}

// Q6_K: d·sc (q - 32) x; scale sc[h*8 + 2r] for quarters 0-1, the next after.
fn deq_q6_k_dot8(rb: u32, u: u32, q: u32, xb: u32) -> f32 {
    let b = rb + (u / 8u) * 210u;
    let s = u % 8u;
    let h = s / 4u;
    let r = s % 4u;
    let ql = b + h * 64u + 32u * (r & 1u) + 8u * q;
    let qh = b + 128u + h * 32u + 8u * q;
    let nshift = vec4<u32>(select(0u, 4u, r >= 2u));
    let hshift = vec4<u32>(2u * r);
    let l0 = (bytes4(rd_u32(ql)) >> nshift) & vec4<u32>(0xfu);
    let l1 = (bytes4(rd_u32(ql + 4u)) >> nshift) & vec4<u32>(0xfu);
    let h0 = (bytes4(rd_u32(qh)) >> hshift) & vec4<u32>(3u);
    let h1 = (bytes4(rd_u32(qh + 4u)) >> hshift) & vec4<u32>(3u);
    let v0 = vec4<f32>(l0 | (h0 << vec4<u32>(4u))) - 32.0;
    let v1 = vec4<f32>(l1 | (h1 << vec4<u32>(4u))) - 32.0;
    let p = dot(v0, x4(xb + 8u * q)) + dot(v1, x4(xb + 8u * q + 4u));
    let sc = f32(bitcast<i32>(rd_u8(b + 192u + h * 8u + 2u * r + q / 2u) << 24u) >> 24u);
    return rd_f16(b + 208u) * sc * p;
}

// Partial dot product of row `row` (of this part) with x, over the quarter
// units tid, tid + WG, ...; four of them per step, independent, so that
// their loads are in flight together (measured on the H100: +2-4% over one
// at a time).
fn row_dot(row: u32, tid: u32) -> f32 {
    let row_base = row * P.row_bytes;
    var acc = vec4<f32>(0.0);
    let n = P.n_units * 4u;
    var i = tid;
    for (; i + 3u * WG < n; i += 4u * WG) {
        let i1 = i + WG;
        let i2 = i + 2u * WG;
        let i3 = i + 3u * WG;
        acc += vec4<f32>(
            DOT8(row_base, i >> 2u, i & 3u, (i >> 2u) * 32u),
            DOT8(row_base, i1 >> 2u, i1 & 3u, (i1 >> 2u) * 32u),
            DOT8(row_base, i2 >> 2u, i2 & 3u, (i2 >> 2u) * 32u),
            DOT8(row_base, i3 >> 2u, i3 & 3u, (i3 >> 2u) * 32u));
    }
    for (; i < n; i += WG) {
        acc.x += DOT8(row_base, i >> 2u, i & 3u, (i >> 2u) * 32u);
    }
    return hsum(acc);
}
