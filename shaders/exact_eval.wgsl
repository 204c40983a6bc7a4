// exact_eval.wgsl — evaluates one helper of exact.wgsl (prepended after
// f16.wgsl) on every input vec4, for tests and for the device probe
// (`GpuContext` checks whether WGSL's `fma` is fused with `which` = 0).
//   which 0: fma(a, b, c) (the builtin)   1: fma_emul(a, b, c)
//         2: fma_rn(a, b, c)              3: ff_div_n((a, b), c)
//         4: ff_recip((a, b))             5: sqrt_rn(a)
//         6: ggml_expf(a)                 7: div_rn(a, b)

struct Params {
    n: u32,
    which: u32,
}

@group(0) @binding(0) var<storage, read> X: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> Y: array<f32>;
@group(0) @binding(2) var<uniform> P: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    EXACT_Z = u32(P.n == 0u);
    let i = gid.x;
    if (i >= P.n) {
        return;
    }
    let v = X[i];
    var r = 0.0;
    switch P.which {
        case 0u: { r = fma(v.x, v.y, v.z); }
        case 1u: { r = fma_emul(v.x, v.y, v.z); }
        case 2u: { r = fma_rn(v.x, v.y, v.z); }
        case 3u: { r = ff_div_n(v.xy, v.z); }
        case 4u: { r = ff_recip(v.xy); }
        case 5u: { r = sqrt_rn(v.x); }
        case 6u: { r = ggml_expf(v.x); }
        default: { r = div_rn(v.x, v.y); }
    }
    Y[i] = r;
}
