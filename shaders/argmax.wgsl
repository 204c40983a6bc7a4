// argmax.wgsl — index of the largest logit, written as one u32.
//
// x: [n] f32 (read as their bits), out: [1] u32; ties resolve to the
// smallest index and NaNs are ignored (if every value is NaN the result is
// 0). `main`: one workgroup. For large n (a vocabulary of 262144: 1024
// dependent loads an invocation, ~0.1 ms on the H100) `partial` first: n_wg
// workgroups each write their best (value bits, index) to out[2 g..2 g + 2],
// then `finish` (one workgroup) reduces those n pairs (x = the partial
// buffer). The comparison is a total order on (value, index), so the
// result is the same either way.

struct Params {
    n: u32,
    // `partial`: the number of workgroups (grid stride).
    n_wg: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> X: array<u32>;
@group(0) @binding(1) var<storage, read_write> OUT: array<u32>;
@group(0) @binding(2) var<uniform> P: Params;

const WG: u32 = 256u;
var<workgroup> best_v: array<f32, WG>;
var<workgroup> best_i: array<u32, WG>;

const NONE: u32 = 0xffffffffu;

// NaN test on the bits, so fast-math compilers cannot fold it away.
fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// Is candidate (v, i) better than the best so far (bv, bi)? bi == NONE: no best yet.
fn better(v: f32, i: u32, bv: f32, bi: u32) -> bool {
    if (i == NONE || is_nan(v)) {
        return false;
    }
    if (bi == NONE) {
        return true;
    }
    return v > bv || (v == bv && i < bi);
}

// The workgroup's best of the invocations' (bv, bi): tree in workgroup
// memory; every invocation must call, invocation 0 gets the result.
fn reduce(tid: u32, bv: f32, bi: u32) -> vec2<u32> {
    best_v[tid] = bv;
    best_i[tid] = bi;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (tid < stride) {
            let ov = best_v[tid + stride];
            let oi = best_i[tid + stride];
            if (better(ov, oi, best_v[tid], best_i[tid])) {
                best_v[tid] = ov;
                best_i[tid] = oi;
            }
        }
        workgroupBarrier();
    }
    return vec2<u32>(bitcast<u32>(best_v[0]), best_i[0]);
}

// The invocation's best of X[first], X[first + step], ... below P.n, as
// `reduce`'s (value bits, index).
fn scan(first: u32, step: u32) -> vec2<u32> {
    var bv = 0.0;
    var bi = NONE;
    for (var i = first; i < P.n; i += step) {
        let v = bitcast<f32>(X[i]);
        if (better(v, i, bv, bi)) {
            bv = v;
            bi = i;
        }
    }
    return vec2<u32>(bitcast<u32>(bv), bi);
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) tid: u32) {
    let b = scan(tid, WG);
    let r = reduce(tid, bitcast<f32>(b.x), b.y);
    if (tid == 0u) {
        OUT[0] = select(r.y, 0u, r.y == NONE);
    }
}

@compute @workgroup_size(WG)
fn partial(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let b = scan(wid.x * WG + tid, P.n_wg * WG);
    let r = reduce(tid, bitcast<f32>(b.x), b.y);
    if (tid == 0u) {
        OUT[2u * wid.x] = r.x;
        OUT[2u * wid.x + 1u] = r.y;
    }
}

@compute @workgroup_size(WG)
fn finish(@builtin(local_invocation_index) tid: u32) {
    var bv = 0.0;
    var bi = NONE;
    for (var j = tid; j < P.n; j += WG) {
        let v = bitcast<f32>(X[2u * j]);
        let i = X[2u * j + 1u];
        if (better(v, i, bv, bi)) {
            bv = v;
            bi = i;
        }
    }
    let r = reduce(tid, bv, bi);
    if (tid == 0u) {
        OUT[0] = select(r.y, 0u, r.y == NONE);
    }
}
