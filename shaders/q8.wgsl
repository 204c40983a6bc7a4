// q8.wgsl — writing 8-bit activations for matvec_q8.wgsl (prepended after
// f16.wgsl to the kernels that produce them: act_quant `pack_q8`, rmsnorm
// `norm_pack_q8`, glu `*_assign_q8`).
// XQ layout for n_blocks 32-element blocks: words 8b .. 8b + 8 the packed
// int8 quants of block b (element order), then per block two f32 words at
// n_blocks * 8 + 2b: d and d·Σq.

@group(0) @binding(9) var<storage, read_write> XQ: array<u32>;

// One 32-element block y as 8-bit activations for matvec_q8.wgsl: words
// 0..8 the packed quants (element order), 8: d, 9: d·Σq (f32 bits), with
// d = f16(amax / 127) and q = round(y · 127 / amax) (ties to even), as the
// CPU's x86 Q8_0 activations.
fn q8_block(y: array<vec4<f32>, 8>) -> array<u32, 10> {
    var m = vec4<f32>(0.0);
    for (var k = 0u; k < 8u; k++) {
        m = max(m, abs(y[k]));
    }
    let amax = max(max(m.x, m.y), max(m.z, m.w));
    var d = 0.0;
    var id = 0.0;
    if (amax > 0.0) {
        d = round_f16(amax / 127.0);
        id = 127.0 / amax;
    }
    var out: array<u32, 10>;
    var sum = vec4<i32>(0);
    for (var k = 0u; k < 8u; k++) {
        let q = vec4<i32>(clamp(round(y[k] * id), vec4<f32>(-128.0), vec4<f32>(127.0)));
        sum += q;
        out[k] = pack4xI8(q);
    }
    out[8] = bitcast<u32>(d);
    out[9] = bitcast<u32>(d * f32(sum.x + sum.y + sum.z + sum.w));
    return out;
}

// Stores block b's words (q8_block) into XQ.
fn put_q8(b: u32, n_blocks: u32, w: array<u32, 10>) {
    for (var k = 0u; k < 8u; k++) {
        XQ[8u * b + k] = w[k];
    }
    XQ[n_blocks * 8u + 2u * b] = w[8];
    XQ[n_blocks * 8u + 2u * b + 1u] = w[9];
}
