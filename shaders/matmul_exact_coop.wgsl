// matmul_exact_coop.wgsl — appended to matmul_exact.wgsl: the prompt
// matmul's one-chain orders (Q4_0's repacked gemm, Q4_K's repacked gemm,
// Q6_K's tiled order) with each chunk's exact integer dot products from
// cooperative matrices (tensor cores), then folded in the CPU's float order.
// Used where the adapter has wgpu's 16x16x16 f16 x f16 -> f32 cooperative
// matrices and subgroups of 32 (GpuContext::use_coop; Vulkan/SPIR-V only).
//
// Why the sums are exact: the weight quants (Q4_0 q - 8, Q4_K q, Q6_K q - 32)
// and the 8-bit activation quants are small integers, exact in f16; their
// products are exact in f32 and every partial sum of a chunk is an integer
// below 2^16 (32 x 15 x 127 at most), so any summation order inside the
// tensor core gives the same f32: the integer the CPU computes.
//
// A workgroup (256 invocations, 8 subgroups) owns 64 rows x 64 tokens. Per
// chunk of COOP_CK columns (32; Q6_K 16, one scale group): the invocations
// stage the chunk's weight and activation quants as f16 (cws [64 rows][CK],
// cxs [64 tokens][CK], rows padded) and each row's / token's scales (cri /
// cti, double buffered); subgroup s multiplies its 16 tokens x 32 rows
// (token tile s / 2, row tiles 2 (s % 2), + 1) into the integer sums ccs
// [64 tokens][64 rows]; then invocation i folds its 16 outputs (rows i % 32,
// + 32, tokens i / 32 + 8b) with COOP_STEP, exactly as matmul_exact.wgsl's
// `blocks` does. Two barriers a chunk; the next two chunks' global reads
// are in flight while the current one is multiplied and folded. Workgroup
// memory: 5 + 5 + 17 + 2 + 1 KiB (matmul_exact.wgsl's arrays are unused).

enable f16;
enable wgpu_cooperative_matrix;

const COOP_CK: u32 = COOP_CK_Vu;

// Row strides padded against bank conflicts of the matrix loads / stores.
const WS_STRIDE: u32 = COOP_CK + 8u;
const CS_STRIDE: u32 = 68u;
var<workgroup> cws: array<f16, 2560>; // [64 rows][WS_STRIDE] weight quants
var<workgroup> cxs: array<f16, 2560>; // [64 tokens][WS_STRIDE] activation quants
var<workgroup> ccs: array<f32, 4352>; // [64 tokens][CS_STRIDE] chunk sums
var<workgroup> cri: array<vec4<f32>, 128>; // [2][64 rows] COOP_RI
var<workgroup> cti: array<vec2<f32>, 128>; // [2][64 tokens] COOP_TI

// Four signed bytes as integer-valued f32.
fn i8x4(w: u32) -> vec4<f32> {
    return vec4<f32>(unpack4xI8(w));
}

// ---- per type: COOP_WR (invocation i's (0..4) share of a row's chunk q as
// raw words), COOP_W (those words' 4 or 8 weight quants, at the columns
// COOP_COLS(i)), COOP_RI (row scales of chunk q), COOP_TI (token scales),
// COOP_STEP (one chunk's sum s into the output's state u: the fold state
// (u.x, u.y) and, as bits in (u.z, u.w), exact integers carried between
// chunks) -------------------------------------------------------------------

// Columns of an invocation's two quads of 4 (the second unused for 16).
fn coop_cols(i: u32) -> vec2<u32> {
    return vec2<u32>(i * (COOP_CK / 4u), i * (COOP_CK / 4u) + 4u);
}

// The integers carried in a state's (z, w).
fn pend_of(u: vec4<f32>) -> vec2<i32> {
    return bitcast<vec2<i32>>(u.zw);
}

// Q4_0 (repacked gemm): chunk = block; one FMA per block on its isum.
// Invocation i reads quant bytes 4i..4i+3 once: low nibbles are columns
// 4i.., high ones 16 + 4i...
fn cols_q4_0(i: u32) -> vec2<u32> {
    return vec2<u32>(4u * i, 16u + 4u * i);
}

fn cwr_q4_0(rb: u32, q: u32, i: u32) -> vec2<u32> {
    return vec2<u32>(rd_u32(rb + q * 18u + 2u + 4u * i), 0u);
}

fn cw_q4_0(q: u32, r: vec2<u32>) -> mat2x4<f32> {
    return mat2x4<f32>(vec4<f32>(unpack4xU8(r.x & LO4)) - 8.0, vec4<f32>(unpack4xU8((r.x >> 4u) & LO4)) - 8.0);
}

fn cri_q4_0(rb: u32, q: u32) -> vec4<f32> {
    return vec4<f32>(rd_f16(rb + q * 18u), 0.0, 0.0, 0.0);
}

fn cti_q4_0(xb: u32, q: u32) -> vec2<f32> {
    return vec2<f32>(xd(xb, q), 0.0);
}

fn cstep_q4_0(q: u32, s: f32, ri: vec4<f32>, ti: vec2<f32>, u: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(fold(vec4<f32>(s, ri.x * ti.x, 0.0, 0.0), u.xy), u.zw);
}

// Q4_K (repacked gemm): chunk = unit s = q % 8 of block q / 8; one fold per
// unit pair (sums sc Σ q x, mins m Σ x) = packet_q4_k.
fn cwr_q4_k(rb: u32, q: u32, i: u32) -> vec2<u32> {
    let b = rb + (q / 8u) * 144u + 16u + 32u * ((q % 8u) / 2u) + 8u * i;
    return vec2<u32>(rd_u32(b), rd_u32(b + 4u));
}

fn cw_q4_k(q: u32, r: vec2<u32>) -> mat2x4<f32> {
    let sh = 4u * (q & 1u);
    return mat2x4<f32>(vec4<f32>(unpack4xU8((r.x >> sh) & LO4)), vec4<f32>(unpack4xU8((r.y >> sh) & LO4)));
}

fn cri_q4_k(rb: u32, q: u32) -> vec4<f32> {
    let b = rb + (q / 8u) * 144u;
    return vec4<f32>(rd_f16(b), rd_f16(b + 2u), scale_min_k4(b + 4u, q % 8u));
}

fn cti_q4_k(xb: u32, q: u32) -> vec2<f32> {
    return vec2<f32>(xd(xb, q & ~7u), bitcast<f32>(xs(xb, q)));
}

fn cstep_q4_k(q: u32, s: f32, ri: vec4<f32>, ti: vec2<f32>, u: vec4<f32>) -> vec4<f32> {
    let v = vec2<i32>(i32(ri.z) * i32(s), i32(ri.w) * bitcast<i32>(ti.y));
    if (q % 2u == 0u) {
        return vec4<f32>(u.xy, bitcast<vec2<f32>>(v));
    }
    let p = pend_of(u) + v;
    return vec4<f32>(fold(vec4<f32>(f32(p.x), ri.x * ti.x, f32(p.y), ri.y * ti.x), u.xy), 0.0, 0.0);
}

// Q6_K (tiled): chunk = 16-column scale group g = q % 16 of block q / 16;
// isum = Σ_g sc_g Σ (q - 32) x, then fma(d_w · isum, d_x, acc) = packet_q6_k.
// Column cc = 16 (q % 16) + 4i of the block = 128n + 32m + l: low bits in
// ql byte 64n + 32 (m & 1) + l (nibble m >> 1), high in qh byte 32n + l
// (bits 2m).
fn cwr_q6_k(rb: u32, q: u32, i: u32) -> vec2<u32> {
    let b = rb + (q / 16u) * 210u;
    let cc = 16u * (q % 16u) + 4u * i;
    let n = cc / 128u;
    let m = (cc % 128u) / 32u;
    let l = cc % 32u;
    return vec2<u32>(rd_u32(b + 64u * n + 32u * (m & 1u) + l), rd_u32(b + 128u + 32u * n + l));
}

fn cw_q6_k(q: u32, r: vec2<u32>) -> mat2x4<f32> {
    let m = (q % 8u) / 2u; // (16 (q % 16) % 128) / 32
    let ql = (r.x >> (4u * (m >> 1u))) & LO4;
    let qh = (r.y >> (2u * m)) & 0x03030303u;
    return mat2x4<f32>(vec4<f32>(unpack4xU8(ql | (qh << 4u))) - 32.0, vec4<f32>(0.0));
}

fn cri_q6_k(rb: u32, q: u32) -> vec4<f32> {
    let b = rb + (q / 16u) * 210u;
    let sc = bitcast<i32>(rd_u8(b + 192u + q % 16u) << 24u) >> 24;
    return vec4<f32>(rd_f16(b + 208u), f32(sc), 0.0, 0.0);
}

fn cti_q6_k(xb: u32, q: u32) -> vec2<f32> {
    return vec2<f32>(xd(xb, (q / 16u) * 8u), 0.0);
}

fn cstep_q6_k(q: u32, s: f32, ri: vec4<f32>, ti: vec2<f32>, u: vec4<f32>) -> vec4<f32> {
    let p = pend_of(u).x + i32(ri.y) * i32(s);
    if (q % 16u != 15u) {
        return vec4<f32>(u.xy, bitcast<f32>(p), 0.0);
    }
    return vec4<f32>(fold(vec4<f32>(ri.x * f32(p), ti.x, 0.0, 0.0), u.xy), 0.0, 0.0);
}

// One chunk's global reads by one invocation: its weight quants' words
// (COOP_WR), activation quant words (COOP_COLS) and its row's or token's
// scales (invocations 0..63 / 64..127).
struct Staged {
    w: vec2<u32>,
    x: vec2<u32>,
    ri: vec4<f32>,
    ti: vec2<f32>,
}

// Invocation `tid`'s reads of chunk q (rows from row0, tokens from tok0).
fn stage_load(tid: u32, row0: u32, tok0: u32, q: u32) -> Staged {
    var g: Staged;
    let sr = tid / 4u;
    let cols = COOP_COLS(tid % 4u);
    let row = row0 + sr;
    let tok = tok0 + sr;
    g.w = vec2<u32>(0u);
    g.x = vec2<u32>(0u);
    g.ri = vec4<f32>(0.0);
    g.ti = vec2<f32>(0.0);
    if (row < P.rows) {
        g.w = COOP_WR(row * P.row_bytes, q, tid % 4u);
    }
    if (tok < P.n_tok) {
        let xw = (P.tok0 + tok) * P.x_stride + q * (COOP_CK / 4u);
        g.x.x = XQI[xw + cols.x / 4u];
        if (COOP_CK == 32u) {
            g.x.y = XQI[xw + cols.y / 4u];
        }
    }
    if (tid < 64u && row0 + tid < P.rows) {
        g.ri = COOP_RI((row0 + tid) * P.row_bytes, q);
    } else if (tid >= 64u && tid < 128u && tok0 + tid - 64u < P.n_tok) {
        g.ti = COOP_TI((P.tok0 + tok0 + tid - 64u) * P.x_stride, q);
    }
    return g;
}

fn put4(i: u32, v: vec4<f32>, x: vec4<f32>) {
    cws[i] = f16(v.x);
    cws[i + 1u] = f16(v.y);
    cws[i + 2u] = f16(v.z);
    cws[i + 3u] = f16(v.w);
    cxs[i] = f16(x.x);
    cxs[i + 1u] = f16(x.y);
    cxs[i + 2u] = f16(x.z);
    cxs[i + 3u] = f16(x.w);
}

@compute @workgroup_size(256)
fn coop_blocks(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let row0 = (wid.x + wid.y * P.grid_x) * 64u;
    let tok0 = wid.z * 64u; // within this dispatch's tokens
    let sgi = tid / 32u;
    let tq = 16u * (sgi / 2u); // this subgroup's token tile
    let rq = 32u * (sgi % 2u); // and its two row tiles
    // Where this invocation's staged quants go.
    let cols = COOP_COLS(tid % 4u);
    let si = (tid / 4u) * WS_STRIDE;
    // Per output (rows tid % 32 + 32a, tokens tid / 32 + 8b; o = 2b + a):
    // fold state and carried integers (COOP_STEP); 0.0 has the bits of 0.
    var st: array<vec4<f32>, 16>;
    for (var o = 0u; o < 16u; o++) {
        st[o] = vec4<f32>(0.0);
    }
    let nq = P.n_cols / COOP_CK;
    // Chunks q + 1 and q + 2's global reads are in flight while chunk q is
    // multiplied and folded (g: chunk q, gn: q + 1).
    var g = stage_load(tid, row0, tok0, 0u);
    var gn = g;
    if (nq > 1u) {
        gn = stage_load(tid, row0, tok0, 1u);
    }
    for (var q = 0u; q < nq; q++) {
        let w = COOP_W(q, g.w);
        put4(si + cols.x, w[0], i8x4(g.x.x));
        if (COOP_CK == 32u) {
            put4(si + cols.y, w[1], i8x4(g.x.y));
        }
        let buf = 64u * (q % 2u);
        if (tid < 64u) {
            cri[buf + tid] = g.ri;
        } else if (tid < 128u) {
            cti[buf + tid - 64u] = g.ti;
        }
        workgroupBarrier();
        g = gn;
        if (q + 2u < nq) {
            gn = stage_load(tid, row0, tok0, q + 2u);
        }
        var c0 = coop_mat16x16<f32, C>();
        var c1 = coop_mat16x16<f32, C>();
        for (var kk = 0u; kk < COOP_CK; kk += 16u) {
            let a = coopLoadT<coop_mat16x16<f16, A>>(&cxs[tq * WS_STRIDE + kk], WS_STRIDE);
            let b0 = coopLoad<coop_mat16x16<f16, B>>(&cws[rq * WS_STRIDE + kk], WS_STRIDE);
            let b1 = coopLoad<coop_mat16x16<f16, B>>(&cws[(rq + 16u) * WS_STRIDE + kk], WS_STRIDE);
            c0 = coopMultiplyAdd(a, b0, c0);
            c1 = coopMultiplyAdd(a, b1, c1);
        }
        coopStoreT(c0, &ccs[tq * CS_STRIDE + rq], CS_STRIDE);
        coopStoreT(c1, &ccs[tq * CS_STRIDE + rq + 16u], CS_STRIDE);
        workgroupBarrier();
        // A subgroup reads 32 consecutive sums of one token at a time.
        let ri0 = cri[buf + tid % 32u];
        let ri1 = cri[buf + tid % 32u + 32u];
        for (var b = 0u; b < 8u; b++) {
            let t = tid / 32u + 8u * b;
            let ti = cti[buf + t];
            let o = 2u * b;
            st[o] = COOP_STEP(q, ccs[t * CS_STRIDE + tid % 32u], ri0, ti, st[o]);
            st[o + 1u] = COOP_STEP(q, ccs[t * CS_STRIDE + tid % 32u + 32u], ri1, ti, st[o + 1u]);
        }
    }
    for (var o = 0u; o < 16u; o++) {
        let row = row0 + tid % 32u + 32u * (o % 2u);
        let t = tok0 + tid / 32u + 8u * (o / 2u);
        if (row < P.rows && t < P.n_tok) {
            store(P.tok0 + t, row, st[o].x - st[o].y);
        }
    }
}
