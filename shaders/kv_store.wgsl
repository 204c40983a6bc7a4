// kv_store.wgsl — write f32 values into an f16 KV cache (or any f16 tensor).
//
// src: [n] f32, dst: f16 elements packed two per u32 word.
// dst[offset + i] = f16(src[i]) with round-to-nearest-even, overflow to ±inf,
// NaN kept, subnormals exact. One invocation per destination word, so an odd
// `offset` is fine: the neighbouring half of a shared word is preserved.
// The conversion is f16.wgsl's `f32_to_f16` (prepended).

struct Params {
    n: u32,
    offset: u32,
    first_word: u32,
    n_words: u32,
}

@group(0) @binding(0) var<storage, read> SRC: array<f32>;
@group(0) @binding(1) var<storage, read_write> DST: array<u32>;
@group(0) @binding(2) var<uniform> P: Params;

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
