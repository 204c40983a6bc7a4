// argmax.wgsl — index of the largest logit, written as one u32.
//
// x: [n] f32, out: [1] u32. A single workgroup; ties resolve to the smallest
// index and NaNs are ignored (if every value is NaN the result is 0).

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> X: array<f32>;
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

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) tid: u32) {
    var bv = 0.0;
    var bi = NONE;
    for (var i = tid; i < P.n; i += WG) {
        let v = X[i];
        if (better(v, i, bv, bi)) {
            bv = v;
            bi = i;
        }
    }
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
    if (tid == 0u) {
        OUT[0] = select(best_i[0], 0u, best_i[0] == NONE);
    }
}
