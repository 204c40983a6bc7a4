// matmul_exact_tr.wgsl — entry points `lanes_tr`, `lanes_tr_multi` and
// `lanes_tr_multi_rope` (each group entry also `*_norm`: the RMSNorm and
// 8-bit pack of its input done by every workgroup) of matmul_exact.wgsl
// (appended to it): the `lanes` order (ggml's eight FMA
// chains per row, one term per block per lane, then `hsum_float_8`) for the
// 32-element block types, with each block's terms computed by one
// invocation and handed to the chains through workgroup memory. No
// subgroup operations.
//
// A workgroup of 256 takes 8 rows of one token: 32 producers a row, and 64
// chain invocations (8 a row; they are producers too). Per chunk of 32
// blocks, producer p computes the terms of all eight lanes of block p
// (each word of the block and of the activations read once) into `tr`, and
// issues the loads of its block of the next chunk; after a barrier, chain j
// of a row runs lane j's FMA chain over the chunk's blocks in block order:
// the same FMAs in the same order as the CPU, so the same bits. (`lanes_sg`
// has the invocations of a lane each compute that lane's term of one
// block, 8 times the block's scale and unaligned reads, and moves every term
// to four copies of its chain with subgroup shuffles; H100, llama-8b
// shapes: [14336, 4096] Q4_0 46.6 -> 29.9 us, [4096, 14336] 48.2 -> 31.0.)
//
// The term store `tr` (f32), lane-major: in row slot r (TR_R words), lane
// l's terms of the chunk's 32 blocks at words TR_L l + p, then the blocks'
// a (d_w d_x, the same for every lane) as array 8 and for Q4_1 (LANE_EXTRA:
// lane 0's second chain) their m as array 9; Q4_1's activation s once,
// after the 8 slots. TR_L = 4 and TR_R = 1 (mod 32): the 32 chains of a
// subgroup (4 rows) read 32 banks, the 32 producers of a row write 32
// consecutive words. (Chains reading vec4s of 4 blocks took twice the
// registers — 60 against 29 for Q4_0, half the occupancy: the NVIDIA
// compiler loads the whole chunk's vec4s ahead.)
//
// The activations, `xsh`: 3 vec4s (12 words) a 32-column unit — its 8
// words of quants, d, s (an XQI row's, q8.wgsl) and 2 unused — so that the
// 8 producers of a quarter subgroup read their units' vec4s from distinct
// banks. The `*_norm` entries hold the whole row (`stage_norm`); the others
// the chunk's 32 units, copied from XQI by the workgroup (a word an
// invocation, coalesced) into one of two buffers: the next chunk's words
// load with the block words and are stored while the chains run. (Each
// producer reading its unit's 9 or 10 words from XQI itself, as before,
// cost ~70 L1 requests a row and chunk: the kernel's limit.)

// Bytes per block and the words a block's loads span (from its first byte
// rounded down to a word): Q4_0 18 / 5, Q4_1 20 / 5, Q5_0 22 / 6, Q8_0 34 / 9.
const TR_BB: u32 = TR_BB_Vu;
const TR_NW: u32 = TR_NW_Vu;
// Producers per row, the workgroup (8 rows), a lane's words and a row slot's.
const TR_P: u32 = 32u;
const TR_WG: u32 = 8u * TR_P;
const TR_L: u32 = 36u;
const TR_R0: u32 = select(9u, 10u, LANE_EXTRA != 0u) * TR_L;
const TR_R: u32 = TR_R0 + (33u - TR_R0 % 32u) % 32u;
// Q4_1's activation s of the chunk's blocks, after the row slots.
const TR_S: u32 = 8u * TR_R;

var<workgroup> tr: array<f32, TR_S + select(0u, TR_L, LANE_EXTRA != 0u)>;

// XSH_N vec4s: the `*_norm` entries' whole row (XSH_ROW), else two chunks.
const XSH_N: u32 = XSH_Vu;
const XSH_ROW: bool = XSH_ROW_V;
var<workgroup> xsh: array<vec4<u32>, XSH_N>;

// The first vec4 of unit k in `xsh`.
fn xslot(k: u32) -> u32 {
    if (XSH_ROW) {
        return 3u * k;
    }
    return 3u * (((k / TR_P) & 1u) * TR_P + k % TR_P);
}

// Unit k's activations: quant words, d, s (f32 bits).
struct Act {
    q: array<u32, 8>,
    d: f32,
    s: u32,
}

fn act(k: u32) -> Act {
    let i = xslot(k);
    let a = xsh[i];
    let b = xsh[i + 1u];
    let ds = xsh[i + 2u];
    return Act(array<u32, 8>(a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w), bitcast<f32>(ds.x), ds.y);
}

// An invocation's share of chunk k0's activations in XQI (row at word xb):
// quant word `tid` of the chunk and, for tid < 64, (d, s) word tid.
struct XStage {
    q: u32,
    ds: u32,
}

fn x_load(xb: u32, k0: u32, tid: u32) -> XStage {
    let nb = P.n_units;
    var r: XStage;
    if (k0 + tid / 8u < nb) {
        r.q = XQI[xb + 8u * k0 + tid];
    }
    if (tid < 64u && k0 + tid / 2u < nb) {
        r.ds = XQI[xb + 8u * nb + 2u * k0 + tid];
    }
    return r;
}

fn x_store(k0: u32, tid: u32, r: XStage) {
    xsh[xslot(k0 + tid / 8u) + (tid % 8u) / 4u][tid % 4u] = r.q;
    if (tid < 64u) {
        xsh[xslot(k0 + tid / 2u) + 2u][tid % 2u] = r.ds;
    }
}

// ---- `*_norm` entries (one token): the group's activations are the
// RMSNorm of NX (weight NW, epsilon P.norm_eps) packed to 8 bits, which
// every workgroup computes for itself into `xsh` instead of reading
// a `norm_pack_q8` dispatch's XQI; workgroup 0 also writes the normalised
// row to NY. rmsnorm.wgsl `norm_pack_q8`'s arithmetic (each invocation's
// float-float sum over the same vec4s, the same tree, scale and products)
// and q8.wgsl's packing, so the same bits: one dispatch and one dependent
// step fewer before the Q/K/V and gate/up groups.
var<private> norm_first: bool;

@group(0) @binding(10) var<storage, read> NX: array<vec4<f32>>;
@group(0) @binding(11) var<storage, read> NW: array<vec4<f32>>;
@group(0) @binding(12) var<storage, read_write> NY: array<vec4<f32>>;

// Every invocation calls (barriers); `xsh` is ready when it returns.
fn stage_norm(tid: u32) {
    let nv = P.n_cols / 4u;
    var acc = vec2<f32>(0.0);
    for (var i = tid; i < nv; i += TR_WG) {
        acc = sq_add4(acc, NX[i]);
    }
    let scale = rms_scale(wg_ff_sum(tid, acc, TR_WG), P.n_cols, bitcast<f32>(P.norm_eps));
    // The weight type's activations: Q8_1 for Q4_1 (LANE_EXTRA), else Q8_0.
    let mode = select(0u, 1u, LANE_EXTRA != 0u);
    for (var i0 = 0u; i0 < nv; i0 += TR_WG) {
        let i = i0 + tid;
        let live = i < nv;
        let j = min(i, nv - 1u);
        let y = NX[j] * scale * NW[j];
        let r = q8_vec4(tid, y, mode);
        if (live) {
            if (norm_first) {
                NY[i] = y;
            }
            // Word i % 8 of unit i / 8.
            let s = xslot(i / 8u);
            xsh[s + (i % 8u) / 4u][i % 4u] = r.q;
            if (tid % 8u == 0u) {
                xsh[s + 2u] = vec4<u32>(r.ds, 0u, 0u);
            }
        }
    }
    workgroupBarrier();
}

// ---- block terms: all eight lanes of block u with activations x into
// row slot word i0 of `tr` (`put_terms`), the same values as
// matmul_exact.wgsl's `term_*` for lanes 0..7, from the block's words w
// (`tr_words`; `odd`: the block starts at byte 2 of w[0], else at byte 0).

// The TR_NW words of W holding block u (TR_BB bytes) of the row at byte rb
// (the rest of the array unused).
fn tr_words(rb: u32, u: u32) -> array<u32, 9> {
    let i = (rb + u * TR_BB) >> 2u;
    var w: array<u32, 9>;
    for (var n = 0u; n < TR_NW; n++) {
        w[n] = W[i + n];
    }
    return w;
}

fn tr_odd(rb: u32, u: u32) -> bool {
    return ((rb + u * TR_BB) & 2u) != 0u;
}

fn tr_set(i: u32, v: f32) {
    tr[i] = v;
}

// The lane terms' integer parts (as f32: |v| < 2^24) and the block's a.
fn put_terms(i0: u32, v: array<i32, 8>, a: f32) {
    for (var l = 0u; l < 8u; l++) {
        tr_set(i0 + l * TR_L, f32(v[l]));
    }
    tr_set(i0 + 8u * TR_L, a);
}

// Four unsigned bytes less `off` (8 or 16; each byte below 128 + off) as
// signed bytes, so one packed dot product gives Σ (q - off) x: q + 128 -
// off stays in a byte, and flipping its top bit subtracts 128.
fn sub_bytes(q: u32, off: u32) -> u32 {
    return (q + (0x80u - off) * ONES) ^ 0x80808080u;
}

// Word i of a block at an even byte b read as words of W from b & ~3: the
// 32 bits at byte b + 2 + 4 i (`odd`: b = 2 mod 4, so they are word i + 1;
// else the high half of word i and the low half of word i + 1).
fn wmid(w0: u32, w1: u32, odd: bool) -> u32 {
    return select((w0 >> 16u) | (w1 << 16u), w1, odd);
}

// The f16 at byte b (even) from the word holding it.
fn whalf(w0: u32, odd: bool) -> f32 {
    return f16_to_f32(select(w0 & 0xffffu, w0 >> 16u, odd));
}

// Q4_0 (18 B: d, qs[16]) · Q8_0 (`term_q4_0`).
fn terms8_q4_0(w: array<u32, 9>, odd: bool, x: Act, i0: u32) {
    var v: array<i32, 8>;
    for (var n = 0u; n < 4u; n++) {
        let qs = wmid(w[n], w[n + 1u], odd);
        v[n] = dot4I8Packed(sub_bytes(qs & LO4, 8u), x.q[n]);
        v[n + 4u] = dot4I8Packed(sub_bytes((qs >> 4u) & LO4, 8u), x.q[n + 4u]);
    }
    put_terms(i0, v, whalf(w[0], odd) * x.d);
}

// Q4_1 (20 B: d, m, qs[16]; 4-byte aligned) · Q8_1 (`term_q4_1`).
fn terms8_q4_1(w: array<u32, 9>, odd: bool, x: Act, i0: u32) {
    let dm = w[0];
    var v: array<i32, 8>;
    for (var n = 0u; n < 4u; n++) {
        let qs = w[n + 1u];
        v[n] = dot4I8Packed(qs & LO4, x.q[n]);
        v[n + 4u] = dot4I8Packed((qs >> 4u) & LO4, x.q[n + 4u]);
    }
    put_terms(i0, v, f16_to_f32(dm & 0xffffu) * x.d);
    tr_set(i0 + 9u * TR_L, f16_to_f32(dm >> 16u));
    // Row slot 0's producers (i0 = p) write the chunk's s.
    if (i0 < TR_P) {
        tr_set(TR_S + i0, bitcast<f32>(x.s));
    }
}

// Q5_0 (22 B: d, qh, qs[16]) · Q8_0 (`term_q5_0`).
fn terms8_q5_0(w: array<u32, 9>, odd: bool, x: Act, i0: u32) {
    // qh at byte b + 2 (word 0 of the block), qs at b + 6 (words 1..4).
    let qh = wmid(w[0], w[1], odd);
    var v: array<i32, 8>;
    for (var n = 0u; n < 4u; n++) {
        let qs = wmid(w[n + 1u], w[n + 2u], odd);
        let lo = (qs & LO4) | spread4(qh >> (4u * n));
        let hi = ((qs >> 4u) & LO4) | spread4(qh >> (4u * n + 16u));
        v[n] = dot4I8Packed(sub_bytes(lo, 16u), x.q[n]);
        v[n + 4u] = dot4I8Packed(sub_bytes(hi, 16u), x.q[n + 4u]);
    }
    put_terms(i0, v, whalf(w[0], odd) * x.d);
}

// Q8_0 (34 B: d, qs[32]) · Q8_0 (`term_q8_0`).
fn terms8_q8_0(w: array<u32, 9>, odd: bool, x: Act, i0: u32) {
    var v: array<i32, 8>;
    for (var l = 0u; l < 8u; l++) {
        v[l] = dot4I8Packed(wmid(w[l], w[l + 1u], odd), x.q[l]);
    }
    put_terms(i0, v, whalf(w[0], odd) * x.d);
}

// The chains of one workgroup's 8 rows. Producer p of row slot rp (the
// row at byte rb; `live`: it exists) computes block k0 + p of each chunk of
// TR_P blocks; invocation tid < 64 runs chain j = tid % 8 of row slot
// tid / 8 and gets its (lane chain, second chain); every invocation must
// call.
fn lanes_tr_value(rb: u32, xb: u32, rp: u32, p: u32, live: bool, tid: u32) -> vec2<f32> {
    let nb = P.n_units;
    let rc = tid / 8u;
    let j = tid % 8u;
    var st = vec2<f32>(0.0);
    // This producer's block of the chunk, its words loaded one chunk ahead:
    // the next chunk's loads are in flight while the chains run.
    var w: array<u32, 9>;
    if (live && p < nb) {
        w = tr_words(rb, p);
    }
    // `*_norm` variants: `stage_norm(tid);` (the activations, while the
    // first blocks' loads fly); the others stage the first chunk's
    // activations (`x_store(0u, tid, x_load(xb, 0u, tid));
    // workgroupBarrier();`), so that they do not bind NX, NW and NY.
    STAGE_V
    var xn: XStage;
    for (var k0 = 0u; k0 < nb; k0 += TR_P) {
        let k = k0 + p;
        let more = k0 + TR_P < nb;
        // The next chunk's activations: loaded now, stored after the chains.
        if (!XSH_ROW && more) {
            xn = x_load(xb, k0 + TR_P, tid);
        }
        if (live && k < nb) {
            TERMS8(w, tr_odd(rb, k), act(k), rp * TR_R + p);
        }
        if (live && k + TR_P < nb) {
            w = tr_words(rb, k + TR_P);
        }
        workgroupBarrier();
        if (tid < 64u) {
            let n = min(TR_P, nb - k0);
            let lw = rc * TR_R + j * TR_L;
            let aw = rc * TR_R + 8u * TR_L;
            for (var b = 0u; b < n; b++) {
                st.x = fma_rn(tr[aw + b], tr[lw + b], st.x);
                if (LANE_EXTRA != 0u && j == 0u) {
                    st.y = fma_rn(tr[aw + TR_L + b], tr[TR_S + b], st.y);
                }
            }
        }
        // Into the other buffer (last read by the chunk before this one's
        // producers).
        if (!XSH_ROW && more) {
            x_store(k0 + TR_P, tid, xn);
        }
        workgroupBarrier();
    }
    return st;
}

// `hsum_float_8` of the row's chains (every invocation must call; those
// below 64 pass their chains); invocation 8 r gets row slot r's result.
fn lanes_tr_total(tid: u32, st: vec2<f32>) -> f32 {
    if (tid < 64u) {
        lane_acc[tid] = st;
    }
    workgroupBarrier();
    var a: array<vec2<f32>, 8>;
    let r0 = (tid % 64u) / 8u * 8u;
    for (var j = 0u; j < 8u; j++) {
        a[j] = lane_acc[r0 + j];
    }
    return lanes_total(a);
}

@compute @workgroup_size(TR_WG)
fn lanes_tr(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let row0 = (wid.x + wid.y * P.grid_x) * 8u;
    let rp = tid / TR_P;
    let tok = P.tok0 + wid.z;
    let st = lanes_tr_value((row0 + rp) * P.row_bytes, tok * P.x_stride, rp, tid % TR_P,
        row0 + rp < P.rows, tid);
    let v = lanes_tr_total(tid, st);
    let row = row0 + tid / 8u;
    if (tid < 64u && tid % 8u == 0u && row < P.rows) {
        store(tok, row, v);
    }
}

// The 2 or 3 matrices of a weight group, one token (matmul_exact.wgsl's
// `multi_row`): the workgroup's 8 global rows of the group.
@compute @workgroup_size(TR_WG)
fn lanes_tr_multi(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    tr_multi(wid, tid);
}

// `lanes_tr_multi` of RMSNorm(NX) (`stage_norm`).
@compute @workgroup_size(TR_WG)
fn lanes_tr_multi_norm(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    EXACT_Z = u32(P.n_cols == 0u);
    norm_first = wid.x == 0u && wid.y == 0u;
    tr_multi(wid, tid);
}

fn tr_multi(wid: vec3<u32>, tid: u32) {
    let g0 = tr_group_row0(wid);
    let v = tr_group_value(g0, tid);
    let g = g0 + tid / 8u;
    if (tid < 64u && tid % 8u == 0u && g < P.rows) {
        let mr = multi_row(g);
        store_multi(mr.x, mr.y, v);
    }
}

// The first of the workgroup's 8 global rows of the group.
fn tr_group_row0(wid: vec3<u32>) -> u32 {
    return (wid.x + wid.y * P.grid_x) * 8u;
}

// Row g0 + r's result for invocation 8 r (every invocation must call):
// `lanes_tr_value` over the group row's matrix and bytes, then the total.
fn tr_group_value(g0: u32, tid: u32) -> f32 {
    let rp = tid / TR_P;
    let st = lanes_tr_value(multi_row(g0 + rp).z, 0u, rp, tid % TR_P, g0 + rp < P.rows, tid);
    return lanes_tr_total(tid, st);
}

// ---- `lanes_tr_multi_rope`: the Q/K/V group of one token with the
// layer's RoPE and KV-cache write as its epilogue (matmul_exact.wgsl
// `rope_put`); `lanes_tr_multi_rope_norm` of RMSNorm(NX) (`stage_norm`).

var<workgroup> tr_y: array<f32, 8>;

@compute @workgroup_size(TR_WG)
fn lanes_tr_multi_rope(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    EXACT_Z = u32(P.rope_hd == 0u);
    tr_multi_rope(wid, tid);
}

@compute @workgroup_size(TR_WG)
fn lanes_tr_multi_rope_norm(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    EXACT_Z = u32(P.rope_hd == 0u);
    norm_first = wid.x == 0u && wid.y == 0u;
    tr_multi_rope(wid, tid);
}

fn tr_multi_rope(wid: vec3<u32>, tid: u32) {
    let g0 = tr_group_row0(wid);
    let v = tr_group_value(g0, tid);
    if (tid < 64u && tid % 8u == 0u) {
        tr_y[tid / 8u] = v;
    }
    workgroupBarrier();
    let g = g0 + 2u * tid;
    if (tid < 4u && g < P.rows) {
        let mr = multi_row(g);
        rope_put(mr.x, mr.y, tr_y[2u * tid], tr_y[2u * tid + 1u]);
    }
}
