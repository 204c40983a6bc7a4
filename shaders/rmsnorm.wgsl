// rmsnorm.wgsl — y = x / sqrt(mean(x^2) + eps) * w, row by row.
//
// x: [n_rows, n_cols] f32, w: [n_cols] f32, y: [n_rows, n_cols] f32.
// One workgroup per row; float-float tree reduction of the sum of squares
// and a correctly rounded scale (exact.wgsl), so that the scale is the CPU
// backend's bit for bit (it sums x² in f64).
// Entry `inplace` normalises XY in place (each element is rewritten by the
// invocation that read it, after the reduction); `inplace_add` also adds the
// result into Y. Entry `norm_pack_q8` (one
// row, n_cols a multiple of 32) also writes y quantised to 8 bits into XQ
// (q8.wgsl, prepended), as act_quant.wgsl `pack_q8` would, for matvec_q8.wgsl: one
// dispatch instead of two before each decode projection.
// Loads are vec4 when n_cols is a multiple of 4 (the host checks), and a
// thread's loads are issued before its sums, so that they are in flight
// together (a serial scalar loop took ~10 us for 4096 elements on an H100).

struct Params {
    n_cols: u32,
    n_rows: u32,
    eps: f32,
    mode: u32, // norm_pack_q8: q8.wgsl's rounding mode
}

@group(0) @binding(0) var<storage, read> X: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> Wt: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> Y: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> P: Params;
@group(0) @binding(4) var<storage, read_write> XY: array<f32>;

const WG: u32 = 256u;
// The CPU's RMSNorm scale, 1 / sqrt(f32(Σ f64(x²) / n) + eps), from every
// invocation's float-float partial sum (all invocations call it): the sum
// in float-float (exact.wgsl `wg_ff_sum`), then the mean, sqrt and
// reciprocal correctly rounded, so the scale has the CPU's bits.
fn wg_scale(tid: u32, part: vec2<f32>) -> f32 {
    return rms_scale(wg_ff_sum(tid, part, WG), P.n_cols, P.eps);
}

// Vector rows (n_cols % 4 == 0): vec4 i of the row at t + WG * i.
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    EXACT_Z = u32(P.eps < 0.0);
    let nv = P.n_cols / 4u;
    let base = wid.x * nv;
    var acc = vec2<f32>(0.0);
    var i = tid;
    for (; i + 3u * WG < nv; i += 4u * WG) {
        let a = X[base + i];
        let b = X[base + i + WG];
        let c = X[base + i + 2u * WG];
        let d = X[base + i + 3u * WG];
        acc = sq_add4(sq_add4(sq_add4(sq_add4(acc, a), b), c), d);
    }
    for (; i < nv; i += WG) {
        acc = sq_add4(acc, X[base + i]);
    }
    let scale = wg_scale(tid, acc);
    for (var j = tid; j < nv; j += WG) {
        Y[base + j] = X[base + j] * scale * Wt[j];
    }
}

// Any row length (scalar).
@compute @workgroup_size(WG)
fn main_scalar(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    EXACT_Z = u32(P.eps < 0.0);
    let base = wid.x * P.n_cols;
    var acc = vec2<f32>(0.0);
    for (var i = tid; i < P.n_cols; i += WG) {
        let e = base + i;
        acc = ff_sq_add(acc, X[e >> 2u][e & 3u]);
    }
    let scale = wg_scale(tid, acc);
    for (var i = tid; i < P.n_cols; i += WG) {
        let e = base + i;
        Y[e >> 2u][e & 3u] = X[e >> 2u][e & 3u] * scale * Wt[i >> 2u][i & 3u];
    }
}

// Row wid of XY normalised in place (any row length, scalar); with `add`,
// also added into Y (a post-norm into the residual stream).
fn norm_inplace(wid: u32, tid: u32, add: bool) {
    let base = wid * P.n_cols;
    var acc = vec2<f32>(0.0);
    for (var i = tid; i < P.n_cols; i += WG) {
        acc = ff_sq_add(acc, XY[base + i]);
    }
    let scale = wg_scale(tid, acc);
    for (var i = tid; i < P.n_cols; i += WG) {
        let e = base + i;
        let v = keep(XY[e] * scale * Wt[i >> 2u][i & 3u]);
        XY[e] = v;
        if (add) {
            Y[e >> 2u][e & 3u] += v;
        }
    }
}

@compute @workgroup_size(WG)
fn inplace(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    EXACT_Z = u32(P.eps < 0.0);
    norm_inplace(wid.x, tid, false);
}

@compute @workgroup_size(WG)
fn inplace_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    EXACT_Z = u32(P.eps < 0.0);
    norm_inplace(wid.x, tid, true);
}

// One row (n_cols a multiple of 32; of 256 for Q8_K), workgroup w taking
// its vec4s WG w .. WG (w + 1): every workgroup sums the whole row's squares
// (the same order, so the same scale), then invocation t takes vec4
// WG w + t: y as above, then (8 invocations a 32-element block, q8.wgsl's
// `put_q8_vec4`) the block's 8-bit quants, d and s in q8.wgsl's rounding
// mode `P.mode`. A row of 1024 vec4s is 4 workgroups working side by side
// rather than 4 rounds (each with the pack's barriers) of one.
@compute @workgroup_size(WG)
fn norm_pack_q8(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    EXACT_Z = u32(P.eps < 0.0);
    let nb = P.n_cols / 32u;
    // Σx² over vec4s tid, tid + WG, ... (every invocation busy; the
    // float-float sum is the CPU's f64 one to ~2^-47 in any order).
    let nv = P.n_cols / 4u;
    var acc = vec2<f32>(0.0);
    var i = tid;
    for (; i + WG < nv; i += 2u * WG) {
        let a = X[i];
        let b = X[i + WG];
        acc = sq_add4(sq_add4(acc, a), b);
    }
    if (i < nv) {
        acc = sq_add4(acc, X[i]);
    }
    let scale = wg_scale(tid, acc);
    // This workgroup's vec4s; those past the row end fill whole blocks
    // (n_cols is a multiple of 32, of 256 for Q8_K).
    let iv = WG * wid.x + tid;
    let live = iv < nv;
    let y = X[min(iv, nv - 1u)] * scale * Wt[min(iv, nv - 1u)];
    if (live) {
        Y[iv] = y;
    }
    put_q8_vec4(tid, 0u, iv, live, nb, y, P.mode);
}

// Entry `post_add_norm_pack_q8` (one row; n_cols a multiple of 32, of 256
// for Q8_K): a post-norm into the residual stream followed by the next
// norm and its 8-bit pack (Gemma 3's attention post-norm, then the FFN
// norm), one dispatch instead of two. Phase 1 is `inplace_add` with weight
// W2: XY (the projection) = XY / rms · W2, Y (x) += XY. Phase 2 is
// `norm_pack_q8` of the new Y with weight Wt into XB and XQ. Same
// operation order as those entries, so bit for bit the two dispatches.

@group(0) @binding(5) var<storage, read> W2: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> XB: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn post_add_norm_pack_q8(@builtin(local_invocation_index) tid: u32) {
    EXACT_Z = u32(P.eps < 0.0);
    let n = P.n_cols;
    var acc1 = vec2<f32>(0.0);
    for (var i = tid; i < n; i += WG) {
        acc1 = ff_sq_add(acc1, XY[i]);
    }
    let s1 = wg_scale(tid, acc1);
    for (var i = tid; i < n; i += WG) {
        let v = keep(XY[i] * s1 * W2[i >> 2u][i & 3u]);
        XY[i] = v;
        Y[i >> 2u][i & 3u] += v;
    }
    storageBarrier();
    workgroupBarrier();
    let nb = n / 32u;
    let nv = n / 4u;
    var acc = vec2<f32>(0.0);
    var i = tid;
    for (; i + WG < nv; i += 2u * WG) {
        let a = Y[i];
        let b = Y[i + WG];
        acc = sq_add4(sq_add4(acc, a), b);
    }
    if (i < nv) {
        acc = sq_add4(acc, Y[i]);
    }
    let scale = wg_scale(tid, acc);
    for (var i0 = 0u; i0 < nv; i0 += WG) {
        let i = i0 + tid;
        let live = i < nv;
        let y = Y[min(i, nv - 1u)] * scale * Wt[min(i, nv - 1u)];
        if (live) {
            XB[i] = y;
        }
        put_q8_vec4(tid, 0u, i, live, nb, y, P.mode);
    }
}
