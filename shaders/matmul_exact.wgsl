// matmul_exact.wgsl — Y[t, r] (+)= W[r] · x_t with x quantised to 8 bits
// (act_quant.wgsl / q8.wgsl), summed in exactly the CPU backend's float
// order (zeta_tensor `DotOrder`), so every output has the CPU's bits.
// Prepended: quant.wgsl, f16.wgsl, exact.wgsl (`fma_rn`).
//
// W: [n_rows, n_cols] GGUF blocks (one part), XQ: per token row x_stride
// words (q8.wgsl layout: 8 words of packed quants per 32-element unit, then
// per unit (d, s)), Y: [n_tok, y_stride] f32.
// A workgroup of 256 takes ROWS rows of one token (workgroup_id.z = token -
// tok0); lane l = 0..8 of a row is SIMD lane l of ggml's AVX2 kernels
// (columns 4l..4l+3 of every 32). All 256 invocations compute the exact
// terms of a chunk of blocks into workgroup memory (many loads in flight);
// then the chains consume them in the CPU's order.
// Entry `lanes`: every lane keeps its own FMA chain over the blocks (ggml's
// `vec_dot` order), the eight are added by `hsum_float_8`. LANE_TERM is the
// weight type's per-lane term (substituted by the host).
// Entry `blocks`: the lanes compute the exact integer parts of eight blocks
// at a time into workgroup memory, then lane 0 folds them in block order
// (BLOCK_FOLD: Q4_0's repacked gemm, Q4_K's repacked gemv/gemm, Q6_K's
// tiled order).

struct Params {
    n_cols: u32,     // elements per row
    n_units: u32,    // n_cols / 32
    row_bytes: u32,  // bytes per row in W
    rows: u32,       // rows in this part
    row_offset: u32, // index of this part's first row in Y's rows
    grid_x: u32,     // workgroups along x (2-D grid over row groups)
    accumulate: u32, // 1: Y += W x
    tok0: u32,       // first token of this dispatch
    y_stride: u32,   // elements per token row of Y
    x_stride: u32,   // u32 words per token row of XQ
}

@group(0) @binding(0) var<storage, read> W: array<u32>;
@group(0) @binding(1) var<storage, read> XQ: array<u32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
@group(0) @binding(3) var<uniform> P: Params;

// Required by quant.wgsl's dequantisers (unused here).
var<private> dq: array<f32, 32>;

const LO4: u32 = 0x0f0f0f0fu;
const ONES: u32 = 0x01010101u;

var<workgroup> lane_acc: array<vec2<f32>, 16>; // [row ROWS][lane 8]

// Word k (0..8) of unit u's activation quants; unit u's d and s words.
fn xq(xb: u32, u: u32, k: u32) -> u32 {
    return XQ[xb + 8u * u + k];
}

fn xd(xb: u32, u: u32) -> f32 {
    return bitcast<f32>(XQ[xb + 8u * P.n_units + 2u * u]);
}

fn xs(xb: u32, u: u32) -> u32 {
    return XQ[xb + 8u * P.n_units + 2u * u + 1u];
}

// Σ of the four signed bytes of x.
fn bsum4(x: u32) -> i32 {
    return dot4I8Packed(ONES, x);
}

// Lane l's nibbles of the 16 quant bytes at byte `qs`: low nibbles of word
// l (columns 4l..4l+3) for l < 4, high nibbles of word l - 4 for l >= 4.
fn nib_lane(qs: u32, l: u32) -> u32 {
    let w = rd_u32(qs + 4u * (l & 3u));
    return select(w & LO4, (w >> 4u) & LO4, l >= 4u);
}

// Four fifth bits (t & 0xf) moved to bit 4 of four bytes.
fn spread4(t: u32) -> u32 {
    return ((t & 1u) << 4u) | ((t & 2u) << 11u) | ((t & 4u) << 18u) | ((t & 8u) << 25u);
}

// ---- per block: PART_FN (a lane's exact integers), SCALE_FN (the block's f32
// factors, read once per block); per chunk of blocks, FOLD in the CPU's
// order: LANE_FOLD per lane chain (entry `lanes`) or BLOCK_FOLD per row
// (entry `blocks`). A step is one unit (32 columns) or, for the k-quants
// (UNIT_STEP 8), one 256-block.

// Q4_0 · Q8_0: lane part Σ (q - 8) x of its 4 columns; scale d_w d_x.
fn part_q4_0(rb: u32, u: u32, l: u32, xb: u32) -> vec2<i32> {
    let b = rb + u * 18u;
    let x = xq(xb, u, l);
    return vec2<i32>(dot4I8Packed(nib_lane(b + 2u, l), x) - 8 * bsum4(x), 0);
}

fn scale_q4_0(rb: u32, u: u32, xb: u32) -> vec4<f32> {
    return vec4<f32>(rd_f16(rb + u * 18u) * xd(xb, u), 0.0, 0.0, 0.0);
}

// Q4_1 · Q8_1: lane Σ q x; scales d_w d_x and (m_w, s_x) for the second
// accumulator Σ m_w s_x.
fn part_q4_1(rb: u32, u: u32, l: u32, xb: u32) -> vec2<i32> {
    let b = rb + u * 20u;
    return vec2<i32>(dot4I8Packed(nib_lane(b + 4u, l), xq(xb, u, l)), 0);
}

fn scale_q4_1(rb: u32, u: u32, xb: u32) -> vec4<f32> {
    let b = rb + u * 20u;
    return vec4<f32>(rd_f16(b) * xd(xb, u), rd_f16(b + 2u), bitcast<f32>(xs(xb, u)), 0.0);
}

// Q5_0 · Q8_0: lane Σ (q - 16) x; scale d_w d_x.
fn part_q5_0(rb: u32, u: u32, l: u32, xb: u32) -> vec2<i32> {
    let b = rb + u * 22u;
    let qh = rd_u32(b + 2u);
    let x = xq(xb, u, l);
    let q = nib_lane(b + 6u, l) | spread4(qh >> (4u * l));
    return vec2<i32>(dot4I8Packed(q, x) - 16 * bsum4(x), 0);
}

fn scale_q5_0(rb: u32, u: u32, xb: u32) -> vec4<f32> {
    return vec4<f32>(rd_f16(rb + u * 22u) * xd(xb, u), 0.0, 0.0, 0.0);
}

// Q8_0 · Q8_0.
fn part_q8_0(rb: u32, u: u32, l: u32, xb: u32) -> vec2<i32> {
    let b = rb + u * 34u;
    return vec2<i32>(dot4I8Packed(rd_u32(b + 2u + 4u * l), xq(xb, u, l)), 0);
}

fn scale_q8_0(rb: u32, u: u32, xb: u32) -> vec4<f32> {
    return vec4<f32>(rd_f16(rb + u * 34u) * xd(xb, u), 0.0, 0.0, 0.0);
}

// Q6_K lane l of 256-block k: Σ_{j<2,c<4} sc(8j+2c+l/4) · Σ q x over
// columns 128j + 32c + 4l.. (q unsigned 0..63), minus 32 Σ_{g=2l,2l+1}
// sc(g) · bsum_g (bsum_g: the activation quants of columns 16g..16g+15).
fn q6k_lane(rb: u32, k: u32, l: u32, xb: u32) -> i32 {
    let b = rb + k * 210u;
    let u0 = 8u * k;
    var s = 0;
    for (var j = 0u; j < 2u; j++) {
        let qhw = rd_u32(b + 128u + 32u * j + 4u * l);
        for (var c = 0u; c < 4u; c++) {
            let qlw = rd_u32(b + 64u * j + 32u * (c & 1u) + 4u * l);
            let q = ((qlw >> (4u * (c >> 1u))) & LO4) | (((qhw >> (2u * c)) & 0x03030303u) << 4u);
            let sc = bitcast<i32>(rd_u8(b + 192u + 8u * j + 2u * c + l / 4u) << 24u) >> 24;
            s += sc * dot4I8Packed(q, xq(xb, u0 + 4u * j + c, l));
        }
    }
    for (var h = 0u; h < 2u; h++) {
        let g = 2u * l + h;
        let u = u0 + g / 2u;
        let w0 = 4u * (g % 2u);
        let bs = bsum4(xq(xb, u, w0)) + bsum4(xq(xb, u, w0 + 1u)) + bsum4(xq(xb, u, w0 + 2u))
            + bsum4(xq(xb, u, w0 + 3u));
        let sc = bitcast<i32>(rd_u8(b + 192u + g) << 24u) >> 24;
        s -= 32 * bs * sc;
    }
    return s;
}

fn part_q6_k(rb: u32, k: u32, l: u32, xb: u32) -> vec2<i32> {
    return vec2<i32>(q6k_lane(rb, k, l, xb), 0);
}

// (d_w, d_x)
fn scale_q6_k(rb: u32, k: u32, xb: u32) -> vec4<f32> {
    return vec4<f32>(rd_f16(rb + k * 210u + 208u), xd(xb, 8u * k), 0.0, 0.0);
}

// Q4_K unit s (0..8) of 256-block k: (sc_s Σ q x over its 32 columns, m_s Σ x)
// for lane = -1, or lane l's 4 columns (sc_s Σ q x only) for lane = l.
fn q4k_unit_lane(b: u32, k: u32, s: u32, l: u32, xb: u32) -> i32 {
    let w = rd_u32(b + 16u + 32u * (s / 2u) + 4u * l);
    let q = (w >> (4u * (s & 1u))) & LO4;
    return dot4I8Packed(q, xq(xb, 8u * k + s, l));
}

fn q4k_sm(b: u32, s: u32) -> vec2<i32> {
    let sm = scale_min_k4(b + 4u, s);
    return vec2<i32>(i32(sm.x), i32(sm.y));
}

// Q4_K, lane l = unit l of the 256-block (the repacked orders): (sc_l Σ q x,
// m_l Σ x).
fn part_q4_k(rb: u32, k: u32, l: u32, xb: u32) -> vec2<i32> {
    let b = rb + k * 144u;
    let sm = q4k_sm(b, l);
    var p = 0;
    for (var w = 0u; w < 8u; w++) {
        p += q4k_unit_lane(b, k, l, w, xb);
    }
    return vec2<i32>(sm.x * p, sm.y * bitcast<i32>(xs(xb, 8u * k + l)));
}

// Q4_K in ggml's AVX2 lane order (weights not repacked): lane l's
// Σ_s sc_s Σ_lane q x, and for lanes 0..3 the min part of sub-block pair l,
// m_2l s_2l + m_2l+1 s_2l+1.
fn part_q4_k_lane(rb: u32, k: u32, l: u32, xb: u32) -> vec2<i32> {
    let b = rb + k * 144u;
    var s = 0;
    for (var u = 0u; u < 8u; u++) {
        s += q4k_sm(b, u).x * q4k_unit_lane(b, k, u, l, xb);
    }
    var p = 0;
    if (l < 4u) {
        p = q4k_sm(b, 2u * l).y * bitcast<i32>(xs(xb, 8u * k + 2u * l))
            + q4k_sm(b, 2u * l + 1u).y * bitcast<i32>(xs(xb, 8u * k + 2u * l + 1u));
    }
    return vec2<i32>(s, p);
}

// (d_w d_x, dmin_w d_x)
fn scale_q4_k(rb: u32, k: u32, xb: u32) -> vec4<f32> {
    let b = rb + k * 144u;
    let yd = xd(xb, 8u * k);
    return vec4<f32>(rd_f16(b) * yd, rd_f16(b + 2u) * yd, 0.0, 0.0);
}

// ---- lane folds: st = (lane accumulator, second accumulator) -------------

fn lfold_d(p: vec2<i32>, sc: vec4<f32>, st: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(fma_rn(sc.x, f32(p.x), st.x), st.y);
}

fn lfold_q4_1(p: vec2<i32>, sc: vec4<f32>, st: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(fma_rn(sc.x, f32(p.x), st.x), fma_rn(sc.y, sc.z, st.y));
}

// acc2 = fma(-d_x dmin_w, min part, acc2) (only lanes 0..3's are used).
fn lfold_q4_k(p: vec2<i32>, sc: vec4<f32>, st: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(fma_rn(sc.x, f32(p.x), st.x), fma_rn(-sc.y, f32(p.y), st.y));
}

// fma(d_x d_w, lane part, acc)
fn lfold_q6_k(p: vec2<i32>, sc: vec4<f32>, st: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(fma_rn(sc.y * sc.x, f32(p.x), st.x), st.y);
}

// ---- block folds (from the sum and the four lane-pair sums of one block) --

// Q4_0 repacked gemm: one FMA per 32 columns.
fn fold_q4_0(isum: vec2<i32>, pr: array<vec2<i32>, 4>, sc: vec4<f32>, st: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(fma_rn(f32(isum.x), sc.x, st.x), st.y);
}

// Repacked Q4_K gemv: one FMA per block on Σ of all parts.
fn fold_q4_k_gemv(isum: vec2<i32>, pr: array<vec2<i32>, 4>, sc: vec4<f32>, st: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(fma_rn(f32(isum.x), sc.x, st.x), fma_rn(f32(isum.y), sc.y, st.y));
}

// Repacked Q4_K gemm: one FMA per 64 columns (unit pairs).
fn fold_q4_k_gemm(isum: vec2<i32>, pr: array<vec2<i32>, 4>, sc: vec4<f32>, st: vec2<f32>) -> vec2<f32> {
    var r = st;
    for (var j = 0u; j < 4u; j++) {
        r = vec2<f32>(fma_rn(f32(pr[j].x), sc.x, r.x), fma_rn(f32(pr[j].y), sc.y, r.y));
    }
    return r;
}

// Q6_K tiled: fma(d_w · isum, d_x, acc).
fn fold_q6_k(isum: vec2<i32>, pr: array<vec2<i32>, 4>, sc: vec4<f32>, st: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(fma_rn(sc.x * f32(isum.x), sc.y, st.x), st.y);
}

fn store(tok: u32, row: u32, v: f32) {
    let i = tok * P.y_stride + P.row_offset + row;
    if (P.accumulate != 0u) {
        Y[i] = Y[i] + v;
    } else {
        Y[i] = v;
    }
}

// Parts and scales of ROWS rows x CHUNK steps, computed by all 256
// invocations at once (many blocks' loads in flight), then folded in step
// order. Few rows per workgroup: many workgroups per multiprocessor, so that
// one's loads overlap another's serial folds (decode is latency-bound).
// 12 KiB + 3 KiB + 128 B of workgroup memory (Metal: within 16 KiB).
const ROWS: u32 = 2u; // the host's EXACT_ROWS
const CHUNK: u32 = 96u;
var<workgroup> parts: array<vec2<i32>, 1536>; // [row ROWS][step CHUNK][lane 8]
var<workgroup> scales: array<vec4<f32>, 192>; // [row ROWS][step CHUNK]

// Fills parts/scales for steps c0.. of rows row0..row0 + ROWS: invocation
// t < ROWS CHUNK takes one (row, step), its eight lanes and its scale (the
// block's address, scale and shared words computed once).
fn fill(row0: u32, c0: u32, n_steps: u32, xb: u32, tid: u32) {
    if (tid >= ROWS * CHUNK) {
        return;
    }
    let r = row0 + tid / CHUNK;
    let c = c0 + tid % CHUNK;
    // Past the last row or step: zeros, whose fold adds exactly nothing
    // (fma(0, 0, acc) = acc; the accumulators are never -0).
    var sc = vec4<f32>(0.0);
    var v: array<vec2<i32>, 8>;
    if (r < P.rows && c < n_steps) {
        let rb = r * P.row_bytes;
        sc = SCALE_FN(rb, c, xb);
        for (var l = 0u; l < 8u; l++) {
            v[l] = PART_FN(rb, c, l, xb);
        }
    }
    scales[tid] = sc;
    for (var l = 0u; l < 8u; l++) {
        parts[tid * 8u + l] = v[l];
    }
}

@compute @workgroup_size(256)
fn lanes(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let row0 = (wid.x + wid.y * P.grid_x) * ROWS;
    let tok = P.tok0 + wid.z;
    let xb = tok * P.x_stride;
    let n_steps = P.n_units / UNIT_STEPu;
    // Chains (tid < 8 ROWS): row row0 + tid / 8, lane tid % 8.
    let l = tid % 8u;
    let rl = tid / 8u;
    let row = row0 + rl;
    var st = vec2<f32>(0.0);
    for (var c0 = 0u; c0 < n_steps; c0 += CHUNK) {
        fill(row0, c0, n_steps, xb, tid);
        workgroupBarrier();
        if (tid < 8u * ROWS) {
            // Eight steps at a time, their loads first: the chain waits on
            // its FMAs only (the steps past n are zeros).
            let n = min(CHUNK, n_steps - c0);
            for (var c = 0u; c < n; c += 8u) {
                let e = rl * CHUNK + c;
                var pv: array<vec2<i32>, 8>;
                var sv: array<vec4<f32>, 8>;
                for (var k = 0u; k < 8u; k++) {
                    pv[k] = parts[(e + k) * 8u + l];
                    sv[k] = scales[e + k];
                }
                for (var k = 0u; k < 8u; k++) {
                    st = LANE_FOLD(pv[k], sv[k], st);
                }
            }
        }
        workgroupBarrier();
    }
    if (tid < 8u * ROWS) {
        lane_acc[tid] = st;
    }
    workgroupBarrier();
    if (tid < 8u * ROWS && l == 0u && row < P.rows) {
        // ggml's hsum_float_8 of the lane accumulators.
        let a = rl * 8u;
        let r0 = lane_acc[a].x + lane_acc[a + 4u].x;
        let r1 = lane_acc[a + 1u].x + lane_acc[a + 5u].x;
        let r2 = lane_acc[a + 2u].x + lane_acc[a + 6u].x;
        let r3 = lane_acc[a + 3u].x + lane_acc[a + 7u].x;
        let h = (r0 + r2) + (r1 + r3);
        var v = h;
        if (LANE_EXTRA == 1u) {
            // Q4_1: + Σ m s
            v = h + st.y;
        } else if (LANE_EXTRA == 2u) {
            // Q4_K: + ((m0 + m2) + (m1 + m3)) of lanes 0..3
            v = h + ((lane_acc[a].y + lane_acc[a + 2u].y) + (lane_acc[a + 1u].y + lane_acc[a + 3u].y));
        }
        store(tok, row, v);
    }
}

@compute @workgroup_size(256)
fn blocks(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let row0 = (wid.x + wid.y * P.grid_x) * ROWS;
    let tok = P.tok0 + wid.z;
    let xb = tok * P.x_stride;
    let n_steps = P.n_units / UNIT_STEPu;
    // Folds (tid < ROWS): row row0 + tid.
    let row = row0 + tid;
    var st = vec2<f32>(0.0);
    for (var c0 = 0u; c0 < n_steps; c0 += CHUNK) {
        fill(row0, c0, n_steps, xb, tid);
        workgroupBarrier();
        // Lane pairs summed in parallel (integers: exact in any order),
        // pair j of (row, step) e moved to parts[4 e + j].
        var pair: array<vec2<i32>, 3>;
        for (var k = 0u; k < 3u; k++) {
            let i = k * 256u + tid;
            pair[k] = parts[2u * i] + parts[2u * i + 1u];
        }
        workgroupBarrier();
        for (var k = 0u; k < 3u; k++) {
            parts[k * 256u + tid] = pair[k];
        }
        workgroupBarrier();
        if (tid < ROWS && row < P.rows) {
            let n = min(CHUNK, n_steps - c0);
            for (var c = 0u; c < n; c++) {
                let e = tid * CHUNK + c;
                var pr: array<vec2<i32>, 4>;
                for (var q = 0u; q < 4u; q++) {
                    pr[q] = parts[e * 4u + q];
                }
                let isum = (pr[0] + pr[1]) + (pr[2] + pr[3]);
                st = BLOCK_FOLD(isum, pr, scales[e], st);
            }
        }
        workgroupBarrier();
    }
    if (tid < ROWS && row < P.rows) {
        store(tok, row, st.x - st.y);
    }
}
