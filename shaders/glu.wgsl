// glu.wgsl — fused gated activations, out = act(gate) * up, elementwise.
//
// gate, up, out: [n] f32. Entry points: `swiglu` (act = silu) and `geglu`
// (act = gelu, tanh approximation, through ggml's f16 table like its CPU
// backend), both with the CPU backend's bits (SiLU: ggml's vector path, so
// rows whose length is not a multiple of 16 differ in their scalar tail),
// and in-place `swiglu_assign` / `geglu_assign` (out = act(out) * up).
// 2-D grid: index = gid.x + gid.y * row_len, for n > 65535 * 256.

struct Params {
    n: u32,
    row_len: u32,    // invocations per grid row (grid_x * 256)
    mode: u32,       // *_assign_q8: q8.wgsl's rounding mode
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> GATE: array<f32>;
@group(0) @binding(1) var<storage, read> UP: array<f32>;
@group(0) @binding(2) var<storage, read_write> OUT: array<f32>;
@group(0) @binding(3) var<uniform> P: Params;

// ggml's f16 GELU table (`ggml_table_gelu_f16`, from the CPU backend: the
// GELU of every f16 value, rounded to f16), 65536 entries.
@group(0) @binding(4) var<storage, read> GELU: array<f32>;

// SiLU as ggml's vector path computes it: x / (1 + ggml_expf(0 - x)),
// with exact.wgsl's expf and a correctly rounded division (prepended).
fn silu(x: f32) -> f32 {
    return div_rn(x, 1.0 + ggml_expf(0.0 - x));
}

// GELU (tanh approximation) as ggml's CPU backend computes it
// (GGML_GELU_FP16): inputs in (-10, 10) rounded to f16 and looked up in
// its f16 table.
fn gelu_tanh(x: f32) -> f32 {
    if (x <= -10.0) {
        return 0.0;
    }
    if (x >= 10.0) {
        return x;
    }
    return GELU[f32_to_f16(x)];
}

@compute @workgroup_size(256)
fn swiglu(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * P.row_len;
    if (i < P.n) {
        OUT[i] = silu(GATE[i]) * UP[i];
    }
}

@compute @workgroup_size(256)
fn geglu(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * P.row_len;
    if (i < P.n) {
        OUT[i] = gelu_tanh(GATE[i]) * UP[i];
    }
}

@compute @workgroup_size(256)
fn swiglu_assign(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * P.row_len;
    if (i < P.n) {
        OUT[i] = silu(OUT[i]) * UP[i];
    }
}

@compute @workgroup_size(256)
fn geglu_assign(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * P.row_len;
    if (i < P.n) {
        OUT[i] = gelu_tanh(OUT[i]) * UP[i];
    }
}

// ---- in place, one token, fused with the 8-bit pack of the result ----
// `swiglu_assign_q8` / `geglu_assign_q8`: OUT = act(OUT) * UP as above, and
// the result quantised into XQ (q8.wgsl, prepended) for matvec_q8.wgsl, as
// act_quant.wgsl `pack_q8` would; a workgroup per 8 blocks (256 elements),
// n a multiple of 32 (of 256 for Q8_K), row_len: workgroups per grid row.

fn act(gelu: bool, x: f32) -> f32 {
    if (gelu) {
        return gelu_tanh(x);
    }
    return silu(x);
}

var<workgroup> gy: array<f32, 256>;

// Workgroup wg: blocks 8 wg .. 8 wg + 7. Each invocation computes one
// element (the exact activation is costly: all 256 in parallel), then
// invocations 0..64 quantise a vec4 each (q8.wgsl `put_q8_vec4`).
fn assign_q8(wg: u32, lid: u32, gelu: bool) {
    let nb = P.n / 32u;
    let e = 256u * wg + lid;
    if (e < P.n) {
        let v = act(gelu, OUT[e]) * UP[e];
        OUT[e] = v;
        gy[lid] = v;
    }
    workgroupBarrier();
    let i = 64u * wg + lid;
    let live = lid < 64u && i < P.n / 4u;
    var y = vec4<f32>(0.0);
    if (live) {
        y = vec4<f32>(gy[4u * lid], gy[4u * lid + 1u], gy[4u * lid + 2u], gy[4u * lid + 3u]);
    }
    put_q8_vec4(lid, 0u, i, live, nb, y, P.mode);
}

@compute @workgroup_size(256)
fn swiglu_assign_q8(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    assign_q8(wid.x + wid.y * P.row_len, lid, false);
}

@compute @workgroup_size(256)
fn geglu_assign_q8(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    assign_q8(wid.x + wid.y * P.row_len, lid, true);
}
