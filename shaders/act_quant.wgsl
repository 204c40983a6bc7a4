// act_quant.wgsl — round activations the way ggml's CPU backend quantizes
// them before a matmul (to the weight's vec_dot_type), so that the GPU's f32
// dot products see the same values as the CPU's integer ones.
//
// x, y: [n] f32 (n a multiple of `block`); one invocation per block.
// kind 0: Q8_0/Q8_1 (block 32): d = amax/127, q = clamp(round(x*127/amax)),
//         y = q * f16(d)                      (ggml's x86 quantize_row_q8_0/1)
// kind 1: Q8_K (block 256): max = signed value of largest |x|,
//         iscale = -127/max, q = min(round(iscale*x), 127), y = q / iscale
// kind 2: F16 (y = f16(x)), kind 3: BF16 (y = bf16(x)); round to nearest even.
// round() is round-half-to-even, like the CPU paths.
// x and y are read and written as vec4 (blocks are multiples of 4 elements):
// a quarter of the dependent loads of a scalar loop.

struct Params {
    n_blocks: u32,
    block: u32,
    kind: u32,
    stride: u32,    // invocations per grid row (gx * 64; pack_q8: gx * 256)
    // pack_q8 only:
    n_rows: u32,    // rows of n_blocks 32-element blocks each
    row_words: u32, // XQ words per row (q8_stride)
    mode: u32,      // q8.wgsl's rounding mode
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> X: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> Y: array<vec4<f32>>;
@group(0) @binding(2) var<uniform> P: Params;

fn round_bf16(x: f32) -> f32 {
    let u = bitcast<u32>(x);
    return bitcast<f32>((u + 0x7fffu + ((u >> 16u) & 1u)) & 0xffff0000u);
}

fn round_f16_4(v: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(round_f16(v.x), round_f16(v.y), round_f16(v.z), round_f16(v.w));
}

fn round_bf16_4(v: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(round_bf16(v.x), round_bf16(v.y), round_bf16(v.z), round_bf16(v.w));
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = gid.x + gid.y * P.stride;
    if (b >= P.n_blocks) {
        return;
    }
    // Vector indices of the block.
    let base = b * (P.block / 4u);
    let end = base + P.block / 4u;
    if (P.kind == 2u) {
        for (var i = base; i < end; i++) {
            Y[i] = round_f16_4(X[i]);
        }
        return;
    }
    if (P.kind == 3u) {
        for (var i = base; i < end; i++) {
            Y[i] = round_bf16_4(X[i]);
        }
        return;
    }
    // Largest |x| and its signed value (the first one on ties, like the CPU).
    var amax = 0.0;
    var smax = 0.0;
    for (var i = base; i < end; i++) {
        let v = X[i];
        for (var c = 0u; c < 4u; c++) {
            if (abs(v[c]) > amax) {
                amax = abs(v[c]);
                smax = v[c];
            }
        }
    }
    if (amax == 0.0) {
        for (var i = base; i < end; i++) {
            Y[i] = vec4<f32>(0.0);
        }
        return;
    }
    if (P.kind == 0u) {
        let d = round_f16(amax / 127.0);
        let id = 127.0 / amax;
        for (var i = base; i < end; i++) {
            Y[i] = clamp(round(X[i] * id), vec4<f32>(-128.0), vec4<f32>(127.0)) * d;
        }
    } else {
        let iscale = -127.0 / smax;
        let d = 1.0 / iscale;
        for (var i = base; i < end; i++) {
            Y[i] = min(round(iscale * X[i]), vec4<f32>(127.0)) * d;
        }
    }
}

// ---- pack_q8: x [n_rows, 32 n_blocks] → 8-bit activations for
// matvec_q8.wgsl / matmul_q8.wgsl (q8.wgsl's layout and rounding modes);
// one invocation per vec4, 8 a 32-element block (q8.wgsl `put_q8_vec4`: a
// block's quants are one round of the workgroup, not 32 serial elements of
// one invocation). Rows hold 8 n_blocks vec4s, a multiple of 64 for mode 2
// (n_blocks % 8 == 0, which the host checks), and workgroups start at
// multiples of 256, so a block (a Q8_K block) never straddles workgroups or
// rows; the vec4s past the end are whole blocks of their own ----

@compute @workgroup_size(256)
fn pack_q8(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let nv = 8u * P.n_blocks;
    let total = nv * P.n_rows;
    let g = gid.x + gid.y * P.stride;
    let live = g < total;
    let i = min(g, total - 1u);
    put_q8_vec4(lid, (i / nv) * P.row_words, i % nv, live, P.n_blocks, X[i], P.mode);
}
