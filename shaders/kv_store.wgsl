// kv_store.wgsl — write f32 values into an f16 KV cache (or any f16 tensor).
//
// src: [n] f32, dst: f16 elements packed two per u32 word.
// dst[offset + i] = f16(src[i]) with round-to-nearest-even, overflow to ±inf,
// NaN kept, subnormals exact. One invocation per destination word, so an odd
// `offset` is fine: the neighbouring half of a shared word is preserved.
// The conversion uses integer ops only (pack2x16float needs a capability some
// targets lack).

struct Params {
    n: u32,
    offset: u32,
    first_word: u32,
    n_words: u32,
}

@group(0) @binding(0) var<storage, read> SRC: array<f32>;
@group(0) @binding(1) var<storage, read_write> DST: array<u32>;
@group(0) @binding(2) var<uniform> P: Params;

fn f32_to_f16(f: f32) -> u32 {
    let x = bitcast<u32>(f);
    let sign = (x >> 16u) & 0x8000u;
    let ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) {
        return sign | 0x7e00u; // NaN
    }
    let e = i32(ax >> 23u) - 112; // half biased exponent
    let m = ax & 0x7fffffu;
    if (e >= 31) {
        return sign | 0x7c00u; // overflow and inf
    }
    if (e <= 0) {
        if (e < -10) {
            return sign; // below half the smallest subnormal
        }
        let mm = m | 0x800000u;
        let shift = u32(14 - e);
        var h = mm >> shift;
        let rem = mm & ((1u << shift) - 1u);
        let half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (h & 1u) == 1u)) {
            h += 1u;
        }
        return sign | h;
    }
    var h = (u32(e) << 10u) | (m >> 13u);
    let rem = m & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u) == 1u)) {
        h += 1u; // may carry into the exponent, up to inf: correct
    }
    return sign | h;
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= P.n_words) {
        return;
    }
    let w = P.first_word + gid.x;
    var word = DST[w];
    for (var k = 0u; k < 2u; k++) {
        let e = 2u * w + k;
        if (e >= P.offset && e < P.offset + P.n) {
            let h = f32_to_f16(SRC[e - P.offset]);
            word = (word & ~(0xffffu << (16u * k))) | (h << (16u * k));
        }
    }
    DST[w] = word;
}
