// matmul_exact_sg.wgsl — entry points `lanes_sg`, `blocks_sg` (and their
// weight-group forms `*_multi`) of matmul_exact.wgsl (appended to it): the
// `lanes` order (ggml's eight FMA chains per row, one
// term per block per lane, then `hsum_float_8`) with the loads spread over
// more invocations. Devices with SUBGROUP only.
//
// A row takes 8 np invocations of one subgroup, np = clamp(subgroup size / 8,
// 1, NP_MAX) phases of the 8 lanes: phase p loads and computes the terms of
// blocks k + p, k + np + p, ... (UNROLL_SG of them before any FMA); then every
// invocation of lane l fetches the np phases' terms of lane l with
// subgroupShuffle and applies them in block order, so each of the np copies
// of lane l's chain is ggml's chain, bit for bit. A workgroup of 256 takes
// 32 / np rows (the host sizes the grid for the largest np the adapter's
// subgroup sizes allow; surplus rows do nothing). Assumes, as
// matvec_q8_reduce_sg.wgsl, that subgroups are consecutive runs of
// local_invocation_index. Every invocation reaches every shuffle: rows past
// the end read row 0 and store nothing.

const UNROLL_SG: u32 = UNROLL_SG_Vu;
// Largest phase count (the host's choice).
const NP_MAX: u32 = NP_MAX_Vu;


// The subgroup layout of invocation (tid, sid) for subgroup size sgs:
// (np, lane l, phase p, the row's first invocation in the subgroup).
fn sg_layout(tid: u32, sid: u32, sgs: u32) -> vec4<u32> {
    let np = clamp(sgs / 8u, 1u, NP_MAX);
    let rw = 8u * np;
    return vec4<u32>(np, tid % 8u, (tid % rw) / 8u, sid - sid % rw);
}

// Global row of the invocation (32 / np rows per workgroup).
fn sg_row(wid: vec3<u32>, tid: u32, np: u32) -> u32 {
    let rw = 8u * np;
    return (wid.x + wid.y * P.grid_x) * (256u / rw) + tid / rw;
}

// The `lanes` order of the row at byte rb (every invocation of the row
// returns it; all invocations must call). 256-element blocks (X_SRC =
// staged): one block a phase (UNROLL_SG = 1) in chunks of NP_MAX blocks,
// their activations staged (`staged_value`); the rest read them from XQI.
fn lanes_value(rb: u32, xb: u32, sl: vec4<u32>) -> f32 {
    if (UNIT_STEPu > 1u) {
        return lanes_hsum(staged_value(rb, xb, sl, false), sl.w);
    }
    let np = sl.x;
    let l = sl.y;
    let p = sl.z;
    let base = sl.w;
    let nb = P.n_units / UNIT_STEPu;
    let span = np * UNROLL_SG;
    var st = vec2<f32>(0.0);
    var k = 0u;
    for (; k + span <= nb; k += span) {
        var t: array<vec4<f32>, UNROLL_SG>;
        for (var i = 0u; i < UNROLL_SG; i++) {
            t[i] = LANE_TERM(rb, k + i * np + p, l, xb);
        }
        for (var i = 0u; i < UNROLL_SG; i++) {
            for (var q = 0u; q < np; q++) {
                st = apply(subgroupShuffle(t[i], base + 8u * q + l), l, st);
            }
        }
    }
    st = lanes_steps(rb, xb, sl, k, nb, st);
    return lanes_hsum(st, base);
}

// The lane order's blocks k_from.. k_to (a block a phase, np at a time)
// applied to the chains st.
fn lanes_steps(rb: u32, xb: u32, sl: vec4<u32>, k_from: u32, k_to: u32, st_in: vec2<f32>) -> vec2<f32> {
    let np = sl.x;
    let l = sl.y;
    let nb = P.n_units / UNIT_STEPu;
    var st = st_in;
    for (var k = k_from; k < k_to; k += np) {
        // Phases past the last block load it again (unused).
        let t = LANE_TERM(rb, min(k + sl.z, nb - 1u), l, xb);
        for (var q = 0u; q < np; q++) {
            let v = subgroupShuffle(t, sl.w + 8u * q + l);
            if (k + q < nb) {
                st = apply(v, l, st);
            }
        }
    }
    return st;
}

// hsum_float_8 over the row's lanes (chains st; the row's first invocation
// in the subgroup at `base`).
fn lanes_hsum(st: vec2<f32>, base: u32) -> f32 {
    var a: array<vec2<f32>, 8>;
    for (var j = 0u; j < 8u; j++) {
        a[j] = subgroupShuffle(st, base + j);
    }
    return lanes_total(a);
}

// ---- the activations, staged (the block orders; the lane order of
// 256-element blocks): the blocks of a chunk
// (NP_MAX of them, SG_CU units of 32 columns) are the same for every row of
// the workgroup, so the workgroup copies their words from XQI once (a
// coalesced word an invocation, loaded while the chunk before computes)
// into `xsg`, 3 vec4s a unit (8 quant words, d, s, 2 unused; the layout of
// matmul_exact_tr.wgsl's `xsh`), and the parts and packets read them there
// (X_SRC = staged). Each lane reading its unit's words from XQI, the 8 rows
// of a workgroup the same units, was the exact Q4_0 matvec's largest cost
// (gpu-speed-log.md 57).
const SG_CU: u32 = NP_MAX * UNIT_STEPu;
var<workgroup> xsg: array<vec4<u32>, 96>;
// The invocation's local index (set by every entry).
var<private> sg_tid: u32;

fn xq_staged(xb: u32, u: u32, k: u32) -> u32 {
    return xsg[3u * (u % SG_CU) + k / 4u][k % 4u];
}

fn xd_staged(xb: u32, u: u32) -> f32 {
    return bitcast<f32>(xsg[3u * (u % SG_CU) + 2u].x);
}

fn xs_staged(xb: u32, u: u32) -> u32 {
    return xsg[3u * (u % SG_CU) + 2u].y;
}

// An invocation's share of the chunk at unit u0: quant word `sg_tid` and,
// for sg_tid < 2 SG_CU, (d, s) word sg_tid. With SG_F32 (one token of a
// 256-element block type: Q8_K activations) XQI holds the f32 row itself
// and invocation t loads the chunk's vec4 t (`y`), which `sg_store` packs
// (q8.wgsl's `q8_vec4`, the words `pack_q8` would write): the consumer
// packs its input instead of a `pack_q8` dispatch before it.
const SG_F32: bool = SG_F32_V;

struct SgStage {
    q: u32,
    ds: u32,
    y: vec4<f32>,
}

fn sg_load(xb: u32, u0: u32) -> SgStage {
    let t = sg_tid;
    let nu = P.n_units;
    var r: SgStage;
    if (SG_F32) {
        if (t < 8u * SG_CU && u0 + t / 8u < nu) {
            let e = 32u * u0 + 4u * t;
            r.y = bitcast<vec4<f32>>(vec4<u32>(XQI[e], XQI[e + 1u], XQI[e + 2u], XQI[e + 3u]));
        }
        return r;
    }
    if (t < 8u * SG_CU && u0 + t / 8u < nu) {
        r.q = XQI[xb + 8u * u0 + t];
    }
    if (t < 2u * SG_CU && u0 + t / 2u < nu) {
        r.ds = XQI[xb + 8u * nu + 2u * u0 + t];
    }
    return r;
}

// Every invocation of the workgroup must call (SG_F32: barriers).
fn sg_store(r: SgStage) {
    let t = sg_tid;
    if (SG_F32) {
        // Q8_K (mode 2): units past the row end pack zeros, read by no one.
        let p = q8_vec4(t, r.y, 2u);
        if (t < 8u * SG_CU) {
            xsg[3u * (t / 8u) + (t % 8u) / 4u][t % 4u] = p.q;
            if (t % 8u == 0u) {
                xsg[3u * (t / 8u) + 2u] = vec4<u32>(p.ds, 0u, 0u);
            }
        }
        return;
    }
    if (t < 8u * SG_CU) {
        xsg[3u * (t / 8u) + (t % 8u) / 4u][t % 4u] = r.q;
    }
    if (t < 2u * SG_CU) {
        xsg[3u * (t / 2u) + 2u][t % 2u] = r.ds;
    }
}

// The block orders (matmul_exact.wgsl's `blocks`) in the same layout:
// phase p's 8 lanes compute block k + p's parts, add them up (exact
// integers) with subgroupShuffleXor, make the block's BLOCK_NSUB fold
// packets (lane 2j: packet j); then every invocation of the row folds the
// np blocks' packets, fetched with subgroupShuffle, in block order. Chunks
// of NP_MAX blocks (np divides NP_MAX) with their activations staged;
// every invocation of the workgroup must call (barriers).
fn blocks_value(rb: u32, xb: u32, sl: vec4<u32>) -> f32 {
    let st = staged_value(rb, xb, sl, true);
    return st.x - st.y;
}

// The chains of the row over chunks of NP_MAX blocks, each chunk's
// activations staged in `xsg` (the next chunk's loaded while this one
// computes): the block orders (`blocks`) or the lane order. Every
// invocation of the workgroup must call (barriers).
fn staged_value(rb: u32, xb: u32, sl: vec4<u32>, blocks: bool) -> vec2<f32> {
    let nb = P.n_units / UNIT_STEPu;
    var st = vec2<f32>(0.0);
    sg_store(sg_load(xb, 0u));
    workgroupBarrier();
    for (var k0 = 0u; k0 < nb; k0 += NP_MAX) {
        let xn = sg_load(xb, (k0 + NP_MAX) * UNIT_STEPu);
        if (blocks) {
            st = blocks_chunk(rb, xb, sl, k0, st);
        } else {
            st = lanes_steps(rb, xb, sl, k0, min(k0 + NP_MAX, nb), st);
        }
        workgroupBarrier();
        sg_store(xn);
        workgroupBarrier();
    }
    return st;
}

// The folds of chunk k0's blocks into st.
fn blocks_chunk(rb: u32, xb: u32, sl: vec4<u32>, k0: u32, st_in: vec2<f32>) -> vec2<f32> {
    let np = sl.x;
    let l = sl.y;
    let p = sl.z;
    let base = sl.w;
    let nb = P.n_units / UNIT_STEPu;
    var st = st_in;
    for (var k = k0; k < min(k0 + NP_MAX, nb); k += np) {
        // Phases past the last block compute it again (unused).
        let kb = min(k + p, nb - 1u);
        let part = BLOCK_PART(rb, kb, l, xb);
        // Pair sums at even lanes (part_2j + part_2j+1), then the block's sum.
        let pair = part + subgroupShuffleXor(part, 1u);
        let quad = pair + subgroupShuffleXor(pair, 2u);
        let isum = quad + subgroupShuffleXor(quad, 4u);
        let pk = BLOCK_PACKET(rb, kb, xb, select(isum, pair, BLOCK_NSUB == 4u));
        for (var q = 0u; q < np; q++) {
            for (var j = 0u; j < BLOCK_NSUB; j++) {
                let t = subgroupShuffle(pk, base + 8u * q + 2u * j);
                if (k + q < nb) {
                    st = fold(t, st);
                }
            }
        }
    }
    return st;
}

// One row of one token per 8 np invocations (`blocks`: the block orders,
// else the lane order); rows past the end read row 0 and store nothing.
fn sg_row_entry(wid: vec3<u32>, tid: u32, sid: u32, sgs: u32, blocks: bool) {
    sg_tid = tid;
    let sl = sg_layout(tid, sid, sgs);
    let row = sg_row(wid, tid, sl.x);
    let live = row < P.rows;
    let rb = select(0u, row, live) * P.row_bytes;
    let xb = (P.tok0 + wid.z) * P.x_stride;
    var v: f32;
    if (blocks) {
        v = blocks_value(rb, xb, sl);
    } else {
        v = lanes_value(rb, xb, sl);
    }
    if (live && sid == sl.w) {
        store(P.tok0 + wid.z, row, v);
    }
}

@compute @workgroup_size(256)
fn lanes_sg(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
    @builtin(subgroup_invocation_id) sid: u32,
    @builtin(subgroup_size) sgs: u32,
) {
    sg_row_entry(wid, tid, sid, sgs, false);
}

@compute @workgroup_size(256)
fn blocks_sg(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
    @builtin(subgroup_invocation_id) sid: u32,
    @builtin(subgroup_size) sgs: u32,
) {
    sg_row_entry(wid, tid, sid, sgs, true);
}

// ---- `*_multi`: a weight group in one dispatch (matmul_exact.wgsl's
// `multi_row`, `store_multi`).

// The group's row at byte rb (every invocation of the row returns it).
fn sg_multi_value(rb: u32, sl: vec4<u32>, blocks: bool) -> f32 {
    if (blocks) {
        return blocks_value(rb, 0u, sl);
    }
    return lanes_value(rb, 0u, sl);
}

// Global row g of the group (as `sg_row_entry`).
fn sg_multi_entry(wid: vec3<u32>, tid: u32, sid: u32, sgs: u32, blocks: bool) {
    sg_tid = tid;
    let sl = sg_layout(tid, sid, sgs);
    let g = sg_row(wid, tid, sl.x);
    let mr = multi_row(g);
    let v = sg_multi_value(mr.z, sl, blocks);
    if (g < P.rows && sid == sl.w) {
        store_multi(mr.x, mr.y, v);
    }
}

@compute @workgroup_size(256)
fn lanes_sg_multi(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
    @builtin(subgroup_invocation_id) sid: u32,
    @builtin(subgroup_size) sgs: u32,
) {
    sg_multi_entry(wid, tid, sid, sgs, false);
}

@compute @workgroup_size(256)
fn blocks_sg_multi(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
    @builtin(subgroup_invocation_id) sid: u32,
    @builtin(subgroup_size) sgs: u32,
) {
    sg_multi_entry(wid, tid, sid, sgs, true);
}

// `*_multi_rope`: the Q/K/V group with RoPE and the KV-cache write
// (matmul_exact.wgsl `rope_put`): each row's value to workgroup memory,
// then a pair of rows an invocation.
var<workgroup> sg_y: array<f32, 32>;

fn sg_multi_rope_entry(wid: vec3<u32>, tid: u32, sid: u32, sgs: u32, blocks: bool) {
    EXACT_Z = u32(P.rope_hd == 0u);
    sg_tid = tid;
    let sl = sg_layout(tid, sid, sgs);
    let g = sg_row(wid, tid, sl.x);
    let v = sg_multi_value(multi_row(g).z, sl, blocks);
    let rw = 8u * sl.x;
    if (sid == sl.w) {
        sg_y[tid / rw] = v;
    }
    workgroupBarrier();
    let g2 = g - tid / rw + 2u * tid;
    if (tid < 128u / rw && g2 < P.rows) {
        let m = multi_row(g2);
        rope_put(m.x, m.y, sg_y[2u * tid], sg_y[2u * tid + 1u]);
    }
}

@compute @workgroup_size(256)
fn lanes_sg_multi_rope(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
    @builtin(subgroup_invocation_id) sid: u32,
    @builtin(subgroup_size) sgs: u32,
) {
    sg_multi_rope_entry(wid, tid, sid, sgs, false);
}

@compute @workgroup_size(256)
fn blocks_sg_multi_rope(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
    @builtin(subgroup_invocation_id) sid: u32,
    @builtin(subgroup_size) sgs: u32,
) {
    sg_multi_rope_entry(wid, tid, sid, sgs, true);
}
