// q8.wgsl — writing 8-bit activations for matvec_q8.wgsl / matmul_q8.wgsl
// (prepended after f16.wgsl to the kernels that produce them: act_quant
// `pack_q8`, rmsnorm `norm_pack_q8` / `post_add_norm_pack_q8`, glu
// `*_assign_q8` through `q8_coop`; attn_decode `*_pack` through `q8_block`).
// XQ layout of one row of n_blocks 32-element blocks (rows `q8_stride` words
// apart): words 8b .. 8b + 8 the packed int8 quants of block b (element
// order), then per block two words at n_blocks * 8 + 2b: d (f32) and s.
// The rounding mirrors the CPU backend's activations for the consuming
// weight type (its ggml vec_dot_type), `mode`:
//   0 Q8_0 (Q4_0, Q5_0, Q8_0 weights): d = f16(amax/127),
//     q = round(y·(127/amax)) (ties to even), s = Σq (i32 bits);
//   1 Q8_1 (Q4_1): d and q as Q8_0, s = f16((amax/127)·Σq) (f32 bits);
//   2 Q8_K (K-quants; blocks of 256): kmax = the signed value of the first
//     element with the largest |y| in the 256, iscale = -127/kmax,
//     q = min(round(iscale·y), 127), d = 1/iscale (f32), s = Σq (i32 bits).
// Divisions are rounded correctly (f16.wgsl `div_rn`) as the CPU's are.

@group(0) @binding(9) var<storage, read_write> XQ: array<u32>;

// (amax, the signed value of the first element with |y| = amax).
fn q8_stats(y: array<vec4<f32>, 8>) -> vec2<f32> {
    var st = vec2<f32>(0.0);
    for (var k = 0u; k < 8u; k++) {
        for (var c = 0u; c < 4u; c++) {
            let v = y[k][c];
            if (abs(v) > st.x) {
                st = vec2<f32>(abs(v), v);
            }
        }
    }
    return st;
}

// One 32-element block y in `mode` 0 or 1 (Q8_0 / Q8_1; one invocation
// per block): words 0..8 the packed quants, 8: d, 9: s.
fn q8_block(y: array<vec4<f32>, 8>, mode: u32) -> array<u32, 10> {
    var out: array<u32, 10>;
    var sum = vec4<i32>(0);
    let amax = q8_stats(y).x;
    var d = 0.0;
    var id = 0.0;
    if (amax > 0.0) {
        d = div_rn(amax, 127.0);
        id = div_rn(127.0, amax);
    }
    for (var k = 0u; k < 8u; k++) {
        let q = vec4<i32>(clamp(round(y[k] * id), vec4<f32>(-128.0), vec4<f32>(127.0)));
        sum += q;
        out[k] = pack4xI8(q);
    }
    let isum = sum.x + sum.y + sum.z + sum.w;
    out[8] = bitcast<u32>(round_f16(d));
    if (mode == 1u) {
        out[9] = bitcast<u32>(round_f16(d * f32(isum)));
    } else {
        out[9] = bitcast<u32>(isum);
    }
    return out;
}

// Stores block b's words (q8_block) into the XQ row at word `base`.
fn put_q8(base: u32, b: u32, n_blocks: u32, w: array<u32, 10>) {
    for (var k = 0u; k < 8u; k++) {
        XQ[base + 8u * b + k] = w[k];
    }
    XQ[base + n_blocks * 8u + 2u * b] = w[8];
    XQ[base + n_blocks * 8u + 2u * b + 1u] = w[9];
}

// ---- Cooperative packing: 8 invocations per 32-element block, 4 elements
// (one vec4, element order) each; the 8 blocks of a Q8_K block are 64
// consecutive invocations, aligned to 64 in the workgroup (workgroups of 64
// to 256). The same values as q8_block, with the per-invocation serial work
// cut 8-fold. ----

var<workgroup> q8_lane: array<vec2<f32>, 256>;
var<workgroup> q8_lsum: array<i32, 256>;

// (amax, signed max) of lanes first .. first + n in element order.
fn q8_lanes_max(first: u32, n: u32) -> vec2<f32> {
    var m = q8_lane[first];
    for (var j = 1u; j < n; j++) {
        let o = q8_lane[first + j];
        if (o.x > m.x) {
            m = o;
        }
    }
    return m;
}

// Invocation `lid` holds y, elements 4 (lid % 8) .. of block `b`
// (`live`: b exists); writes its quant word and, from the block's first
// lane, d and s into the XQ row at word `base` of n_blocks blocks. Every
// invocation of the workgroup calls it (barriers).
fn q8_coop(lid: u32, y: vec4<f32>, mode: u32, live: bool, base: u32, b: u32, n_blocks: u32) {
    var st = vec2<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
        if (abs(y[c]) > st.x) {
            st = vec2<f32>(abs(y[c]), y[c]);
        }
    }
    q8_lane[lid] = st;
    workgroupBarrier();
    var q: vec4<i32>;
    var d = 0.0;
    var d32 = 0.0;
    if (mode == 2u) {
        let kmax = q8_lanes_max(lid & ~63u, 64u).y;
        var iscale = 0.0;
        if (kmax != 0.0) {
            iscale = div_rn(-127.0, kmax);
            d = div_rn(1.0, iscale);
        }
        q = vec4<i32>(min(round(y * iscale), vec4<f32>(127.0)));
    } else {
        let amax = q8_lanes_max(lid & ~7u, 8u).x;
        var id = 0.0;
        if (amax > 0.0) {
            d32 = div_rn(amax, 127.0);
            id = div_rn(127.0, amax);
        }
        d = round_f16(d32);
        q = vec4<i32>(clamp(round(y * id), vec4<f32>(-128.0), vec4<f32>(127.0)));
    }
    q8_lsum[lid] = q.x + q.y + q.z + q.w;
    workgroupBarrier();
    if (live) {
        XQ[base + 8u * b + (lid & 7u)] = pack4xI8(q);
        if ((lid & 7u) == 0u) {
            var isum = 0;
            for (var j = 0u; j < 8u; j++) {
                isum += q8_lsum[lid + j];
            }
            XQ[base + n_blocks * 8u + 2u * b] = bitcast<u32>(d);
            if (mode == 1u) {
                XQ[base + n_blocks * 8u + 2u * b + 1u] = bitcast<u32>(round_f16(d32 * f32(isum)));
            } else {
                XQ[base + n_blocks * 8u + 2u * b + 1u] = bitcast<u32>(isum);
            }
        }
    }
    workgroupBarrier();
}
