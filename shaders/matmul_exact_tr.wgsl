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
// (each word of the block read once, the activations from the chunk's
// workgroup copy `xsh`) into `tr`, and issues the loads of its block and its
// word of the next chunk's activations; after a barrier, chain j
// of a row runs lane j's FMA chain over the chunk's blocks in block order:
// the same FMAs in the same order as the CPU, so the same bits. (`lanes_sg`
// has the invocations of a lane each compute that lane's term of one
// block, 8 times the block's scale and unaligned reads, and moves every term
// to four copies of its chain with subgroup shuffles; H100, llama-8b
// shapes: [14336, 4096] Q4_0 46.6 -> 29.9 us, [4096, 14336] 48.2 -> 31.0.)
//
// A block's slot in `tr` (TR_SB words): its lane terms' integer b
// components, as 16-bit pairs (TR_PACK: lane 2i low, 2i + 1 high in word i;
// |b| < 2^15 for Q4_0, Q4_1, Q5_0) or one word each (Q8_0), then the
// block's a (the same for every lane), then for Q4_1 (LANE_EXTRA: lane 0's
// second chain) its c and d. TERMS8, the type's `terms8_*`, writes a slot.
// A row's 32 slots take TR_R words, TR_R = 8 (mod 32), and TR_SB is odd (5,
// 7 or 9), so the 32 producers of a subgroup (one row) write to 32 banks
// and the 32 chains of a subgroup (4 rows) read from distinct words' banks.

// Bytes per block and the words a block's loads span (from its first byte
// rounded down to a word): Q4_0 18 / 5, Q4_1 20 / 5, Q5_0 22 / 6, Q8_0 34 / 9.
const TR_BB: u32 = TR_BB_Vu;
const TR_NW: u32 = TR_NW_Vu;
const TR_PACK: bool = TR_PACK_V;
const TR_NY: u32 = select(8u, 4u, TR_PACK);
const TR_SB: u32 = TR_NY + select(1u, 3u, LANE_EXTRA != 0u);
// Producers per row, the workgroup (8 rows) and a row's slots.
const TR_P: u32 = 32u;
const TR_WG: u32 = 8u * TR_P;
const TR_SLOTS: u32 = TR_P * TR_SB;
const TR_R: u32 = TR_SLOTS + (40u - TR_SLOTS % 32u) % 32u;

var<workgroup> tr: array<u32, 8u * TR_R>;

// ---- the activations in workgroup memory, `xsh`: 3 vec4s (12 words) a
// 32-column unit — its 8 quant words, d, s (an XQI row's, q8.wgsl) and 2
// unused — so that the 8 producers of a quarter subgroup read their units'
// vec4s from distinct banks. XSH_N vec4s: the `*_norm` entries (XSH) hold
// the whole row (`stage_norm`), the others the chunk's 32 units, staged
// from XQI: every invocation loads one word of the next chunk (coalesced;
// the first 64 also a (d, s) word) with its block words, and stores it after
// the chains of this chunk: the chunk's terms were read before the barrier
// that starts the chains, the next chunk's are read after the one that
// ends them. (Each producer reading its unit's 9 or 10 words from XQI
// itself, 8 rows a workgroup doing so for the same units, cost ~20% of
// llama-8b's exact matvec time on the H100.)
//
// `*_norm` entries (one token): the group's activations are the RMSNorm of
// NX (weight NW, epsilon P.norm_eps) packed to 8 bits, which every
// workgroup computes for itself instead of reading a `norm_pack_q8`
// dispatch's XQI; workgroup 0 also writes the normalised row to NY.
// rmsnorm.wgsl `norm_pack_q8`'s arithmetic (each invocation's float-float
// sum over the same vec4s, the same tree, scale and products) and q8.wgsl's
// packing, so the same bits: one dispatch and one dependent step fewer
// before the Q/K/V and gate/up groups.
const XSH_N: u32 = XSH_Vu;
const XSH: bool = XSH_ROW_V;
var<workgroup> xsh: array<vec4<u32>, XSH_N>;
var<private> norm_first: bool;

// The first vec4 of unit u in `xsh`.
fn xslot(u: u32) -> u32 {
    if (XSH) {
        return 3u * u;
    }
    return 3u * (u % TR_P);
}

// An invocation's share of the chunk at unit k0: quant word `tid` of the
// chunk and, for tid < 64, its (d, s) word tid.
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

fn x_store(tid: u32, r: XStage) {
    xsh[3u * (tid / 8u) + (tid % 8u) / 4u][tid % 4u] = r.q;
    if (tid < 64u) {
        xsh[3u * (tid / 2u) + 2u][tid % 2u] = r.ds;
    }
}

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
            // Quant word i % 8 of unit i / 8.
            let s = xslot(i / 8u);
            xsh[s + (i % 8u) / 4u][i % 4u] = r.q;
            if (tid % 8u == 0u) {
                xsh[s + 2u] = vec4<u32>(r.ds, 0u, 0u);
            }
        }
    }
    workgroupBarrier();
}

// ---- block terms: all eight lanes of block u into the slot at word s of
// `tr`, the same values as matmul_exact.wgsl's `term_*` for lanes 0..7,
// from the block's words w (`tr_words`; `odd`: the block starts at byte 2
// of w[0], else at byte 0).

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

// Lane terms' integer parts into the slot (packed or not).
fn put8(s: u32, v: array<i32, 8>) {
    if (TR_PACK) {
        for (var i = 0u; i < 4u; i++) {
            tr[s + i] = (bitcast<u32>(v[2u * i]) & 0xffffu) | (bitcast<u32>(v[2u * i + 1u]) << 16u);
        }
    } else {
        for (var l = 0u; l < 8u; l++) {
            tr[s + l] = bitcast<u32>(v[l]);
        }
    }
}

// Lane l's integer part from the slot at s.
fn get1(s: u32, l: u32) -> i32 {
    if (TR_PACK) {
        let w = bitcast<i32>(tr[s + l / 2u]);
        return select((w << 16u) >> 16u, w >> 16u, (l & 1u) == 1u);
    }
    return bitcast<i32>(tr[s + l]);
}

// Four unsigned bytes less `off` (8 for Q4_0, 16 for Q5_0; each byte below
// 128 + off) as signed bytes, so one packed dot product gives Σ (q - off) x:
// q + 128 - off stays in its byte, and flipping its top bit subtracts 128.
fn sub_bytes(q: u32, off: u32) -> u32 {
    return (q + (128u - off) * ONES) ^ 0x80808080u;
}

// Word i of a block at an even byte b read as words of W from b & ~3: the
// 32 bits at byte b + 2 + 4 i (`odd`: b = 2 mod 4, so they are word i + 1;
// else the high half of word i and the low half of word i + 1).
fn wmid(w0: u32, w1: u32, odd: bool) -> u32 {
    return select((w0 >> 16u) | (w1 << 16u), w1, odd);
}

// The f16 at byte b (even) from the word holding it.
fn whalf(w0: u32, odd: bool) -> f32 {
    if (F16_UNPACK) {
        let h = halves(w0);
        return select(h.x, h.y, odd);
    }
    return f16_to_f32(select(w0 & 0xffffu, w0 >> 16u, odd));
}

// The eight activation words of unit u, its d and s words (`xsh`).
fn ax8(xb: u32, u: u32) -> array<u32, 8> {
    let i = xslot(u);
    let a = xsh[i];
    let b = xsh[i + 1u];
    return array<u32, 8>(a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w);
}

fn axd(xb: u32, u: u32) -> f32 {
    return bitcast<f32>(xsh[xslot(u) + 2u].x);
}

fn axs(xb: u32, u: u32) -> u32 {
    return xsh[xslot(u) + 2u].y;
}

// Q4_0 (18 B: d, qs[16]) · Q8_0 (`term_q4_0`).
fn terms8_q4_0(w: array<u32, 9>, odd: bool, u: u32, xb: u32, s: u32) {
    var qs: array<u32, 4>;
    for (var n = 0u; n < 4u; n++) {
        qs[n] = wmid(w[n], w[n + 1u], odd);
    }
    let x = ax8(xb, u);
    var v: array<i32, 8>;
    for (var l = 0u; l < 8u; l++) {
        v[l] = dot4I8Packed(sub_bytes(nib_of(qs[l & 3u], l), 8u), x[l]);
    }
    put8(s, v);
    tr[s + TR_NY] = bitcast<u32>(whalf(w[0], odd) * axd(xb, u));
}

// Q4_1 (20 B: d, m, qs[16]; 4-byte aligned) · Q8_1 (`term_q4_1`).
fn terms8_q4_1(w: array<u32, 9>, odd: bool, u: u32, xb: u32, s: u32) {
    let dm = w[0];
    var qs: array<u32, 4>;
    for (var n = 0u; n < 4u; n++) {
        qs[n] = w[n + 1u];
    }
    let x = ax8(xb, u);
    var v: array<i32, 8>;
    for (var l = 0u; l < 8u; l++) {
        v[l] = dot4I8Packed(nib_of(qs[l & 3u], l), x[l]);
    }
    put8(s, v);
    let h = halves(dm);
    tr[s + TR_NY] = bitcast<u32>(h.x * axd(xb, u));
    tr[s + TR_NY + 1u] = bitcast<u32>(h.y);
    tr[s + TR_NY + 2u] = axs(xb, u);
}

// Q5_0 (22 B: d, qh, qs[16]) · Q8_0 (`term_q5_0`).
fn terms8_q5_0(w: array<u32, 9>, odd: bool, u: u32, xb: u32, s: u32) {
    // qh at byte b + 2 (word 0 of the block), qs at b + 6 (words 1..4).
    let qh = wmid(w[0], w[1], odd);
    var qs: array<u32, 4>;
    for (var n = 0u; n < 4u; n++) {
        qs[n] = wmid(w[n + 1u], w[n + 2u], odd);
    }
    let x = ax8(xb, u);
    var v: array<i32, 8>;
    for (var l = 0u; l < 8u; l++) {
        let q = nib_of(qs[l & 3u], l) | spread4(qh >> (4u * l));
        v[l] = dot4I8Packed(sub_bytes(q, 16u), x[l]);
    }
    put8(s, v);
    tr[s + TR_NY] = bitcast<u32>(whalf(w[0], odd) * axd(xb, u));
}

// Q8_0 (34 B: d, qs[32]) · Q8_0 (`term_q8_0`).
fn terms8_q8_0(w: array<u32, 9>, odd: bool, u: u32, xb: u32, s: u32) {
    let x = ax8(xb, u);
    var v: array<i32, 8>;
    for (var l = 0u; l < 8u; l++) {
        v[l] = dot4I8Packed(wmid(w[l], w[l + 1u], odd), x[l]);
    }
    put8(s, v);
    tr[s + TR_NY] = bitcast<u32>(whalf(w[0], odd) * axd(xb, u));
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
    // first blocks' loads fly); nothing in the others, so that they do not
    // bind NX, NW and NY.
    STAGE_NORM_V
    var xn: XStage;
    if (!XSH) {
        x_store(tid, x_load(xb, 0u, tid));
        workgroupBarrier();
    }
    for (var k0 = 0u; k0 < nb; k0 += TR_P) {
        let k = k0 + p;
        if (live && k < nb) {
            TERMS8(w, tr_odd(rb, k), k, xb, rp * TR_R + p * TR_SB);
        }
        if (live && k + TR_P < nb) {
            w = tr_words(rb, k + TR_P);
        }
        if (!XSH) {
            xn = x_load(xb, k0 + TR_P, tid);
        }
        workgroupBarrier();
        if (tid < 64u) {
            let n = min(TR_P, nb - k0);
            for (var b = 0u; b < n; b++) {
                let s = rc * TR_R + b * TR_SB;
                var t = vec4<f32>(bitcast<f32>(tr[s + TR_NY]), f32(get1(s, j)), 0.0, 0.0);
                if (LANE_EXTRA != 0u) {
                    t.z = bitcast<f32>(tr[s + TR_NY + 1u]);
                    t.w = bitcast<f32>(tr[s + TR_NY + 2u]);
                }
                st = apply(t, j, st);
            }
        }
        if (!XSH) {
            x_store(tid, xn);
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
